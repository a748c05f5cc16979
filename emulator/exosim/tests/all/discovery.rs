//! OIDC discovery (v2, v1, aliases, unknown tenants), the key sets, and the federation issuer's
//! metadata.

use serde_json::Value;

use crate::support::{demo, run};

fn assert_https_endpoint(doc: &Value, key: &str, url: &str) {
    let value = doc[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing: {doc}"));
    assert!(
        value.starts_with(&format!("{url}/")),
        "{key} = {value} is an absolute https URL under {url}"
    );
}

#[test]
fn v2_discovery_has_the_fields_msal_reads_with_tenant_guid_endpoints() {
    let env = demo();
    let url = env.url();
    let tid = env.tenant_id().to_owned();
    run(async {
        let before = env.exosim.counters().discovery_requests;
        for segment in [
            tid.as_str(),
            "contoso.onmicrosoft.com",
            "CONTOSO.onmicrosoft.com",
        ] {
            let resp = env
                .get(
                    &format!("/{segment}/v2.0/.well-known/openid-configuration"),
                    &[],
                )
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text);
            let doc = &resp.json;
            assert_eq!(doc["issuer"], format!("{url}/{tid}/v2.0"));
            assert_eq!(
                doc["token_endpoint"],
                format!("{url}/{tid}/oauth2/v2.0/token")
            );
            assert_eq!(doc["jwks_uri"], format!("{url}/{tid}/discovery/v2.0/keys"));
            for key in [
                "authorization_endpoint",
                "token_endpoint",
                "jwks_uri",
                "end_session_endpoint",
            ] {
                assert_https_endpoint(doc, key, &url);
            }
            // Only what exosim implements is advertised (no device code, Kerberos, userinfo,
            // fragment or implicit flow).
            for key in [
                "device_authorization_endpoint",
                "kerberos_endpoint",
                "userinfo_endpoint",
            ] {
                assert!(doc.get(key).is_none(), "{key} is advertised: {doc}");
            }
            assert_eq!(
                doc["response_modes_supported"],
                serde_json::json!(["query", "form_post"])
            );
            assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
            assert_eq!(
                doc["code_challenge_methods_supported"],
                serde_json::json!(["S256"])
            );
            // What every grant accepts: private_key_jwt works for client credentials only.
            assert_eq!(
                doc["token_endpoint_auth_methods_supported"],
                serde_json::json!(["client_secret_post", "client_secret_basic"])
            );
            assert_eq!(doc["id_token_signing_alg_values_supported"][0], "RS256");
        }
        assert!(env.exosim.counters().discovery_requests >= before + 3);
    });
}

#[test]
fn v1_discovery_and_the_common_alias() {
    let env = demo();
    let url = env.url();
    let tid = env.tenant_id().to_owned();
    run(async {
        let resp = env
            .get(&format!("/{tid}/.well-known/openid-configuration"), &[])
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.json["issuer"],
            format!("https://sts.windows.net/{tid}/")
        );
        assert_eq!(
            resp.json["token_endpoint"],
            format!("{url}/{tid}/oauth2/token")
        );
        assert_eq!(
            resp.json["jwks_uri"],
            format!("{url}/common/discovery/keys")
        );
        // REQUIRED members (OIDC Discovery 1.0 §3); the v1.0 authorize path answers an error
        // that names the v2.0 one (user sign-in is v2.0 only).
        assert_eq!(resp.json["response_types_supported"][0], "code");
        assert_eq!(
            resp.json["authorization_endpoint"],
            format!("{url}/{tid}/oauth2/authorize")
        );
        let resp = env.get(&format!("/{tid}/oauth2/authorize"), &[]).await;
        assert_eq!(resp.status, 400);
        assert_eq!(resp.json["error"], "invalid_request");
        assert!(
            resp.json["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("oauth2/v2.0/authorize")),
            "{}",
            resp.json
        );

        let resp = env
            .get("/common/v2.0/.well-known/openid-configuration", &[])
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json["issuer"], format!("{url}/{{tenantid}}/v2.0"));
        assert_eq!(
            resp.json["token_endpoint"],
            format!("{url}/common/oauth2/v2.0/token")
        );
    });
}

#[test]
fn discovery_for_unknown_or_malformed_tenants_is_an_entra_error() {
    let env = demo();
    run(async {
        let resp = env
            .get(
                "/0f0f0f0f-1111-4222-8333-444444444444/v2.0/.well-known/openid-configuration",
                &[],
            )
            .await;
        resp.assert_aadsts(400, "invalid_tenant", 90002);
        let resp = env
            .get("/fabrikam.example/.well-known/openid-configuration", &[])
            .await;
        resp.assert_aadsts(400, "invalid_tenant", 90002);
        let resp = env
            .get("/not_a_tenant/v2.0/.well-known/openid-configuration", &[])
            .await;
        resp.assert_aadsts(400, "invalid_request", 900023);
    });
}

#[test]
fn key_sets_publish_the_rs256_signing_key() {
    let env = demo();
    let tid = env.tenant_id().to_owned();
    run(async {
        let v2 = env.get(&format!("/{tid}/discovery/v2.0/keys"), &[]).await;
        let v1 = env.get("/common/discovery/keys", &[]).await;
        let common_v2 = env.get("/common/discovery/v2.0/keys", &[]).await;
        for resp in [&v2, &v1, &common_v2] {
            assert_eq!(resp.status, 200, "{}", resp.text);
            let key = &resp.json["keys"][0];
            assert_eq!(key["kty"], "RSA");
            assert_eq!(key["use"], "sig");
            assert_eq!(key["kid"], key["x5t"]);
            assert_eq!(key["e"], "AQAB");
            assert!(key["n"].as_str().unwrap().len() >= 342, "2048-bit modulus");
            assert!(key["x5c"][0].is_string());
        }
        assert_eq!(
            v2.json["keys"][0]["issuer"],
            format!("{}/{tid}/v2.0", env.url())
        );
        assert_eq!(v1.json["keys"][0]["kid"], v2.json["keys"][0]["kid"]);
    });
}

#[test]
fn federation_issuer_metadata_and_keys_verify_minted_tokens() {
    let env = demo();
    run(async {
        let issuer = &env.ready.federation_issuer;
        assert_eq!(issuer, &format!("{}/_federation", env.url()));
        let doc = env
            .get(&format!("{issuer}/.well-known/openid-configuration"), &[])
            .await;
        assert_eq!(doc.status, 200);
        assert_eq!(doc.json["issuer"], issuer.as_str());
        let jwks = env.get(doc.json["jwks_uri"].as_str().unwrap(), &[]).await;
        assert_eq!(jwks.status, 200);

        let token = env.exosim.mint_federated_token(
            "system:serviceaccount:x:y",
            "api://AzureADTokenExchange",
            std::time::Duration::from_secs(60),
        );
        let (header, claims) = crate::support::decode_jwt(&token);
        assert_eq!(header["kid"], jwks.json["keys"][0]["kid"]);
        assert_eq!(claims["iss"], issuer.as_str());
        assert_eq!(claims["sub"], "system:serviceaccount:x:y");
        assert_eq!(claims["aud"], "api://AzureADTokenExchange");
        // The signing-key set of the tenant is a different key.
        let tenant_keys = env
            .get(&format!("/{}/discovery/v2.0/keys", env.tenant_id()), &[])
            .await;
        assert_ne!(tenant_keys.json["keys"][0]["kid"], header["kid"]);
    });
}
