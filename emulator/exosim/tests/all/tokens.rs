//! Issued access tokens: claims, signature against the JWKS, per-app roles/wids, resources and
//! aliases, the v1 string-number shape, and the lifetime/refresh_in options (with an app whose
//! certificate is registered from a PEM file).

use std::time::Duration;

use exosim::{ExosimOptions, TenantsConfig};
use serde_json::{Value, json};

use crate::support::{EXO_SCOPE, Env, Signer, demo, now, run, verify_with_jwks};

#[test]
fn exchange_token_has_realistic_claims_and_verifies_against_jwks() {
    let env = demo();
    let app = env.app();
    run(async {
        let resp = env
            .secret_token(
                &app.client_id,
                app.client_secret.as_deref().unwrap(),
                EXO_SCOPE,
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let body = resp.json.as_object().unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599, "v2 numbers are numbers");
        assert_eq!(body["ext_expires_in"], 3599);
        assert!(!body.contains_key("refresh_in"), "not configured");
        assert!(!body.contains_key("refresh_token"));

        let token = body["access_token"].as_str().unwrap();
        let (header, claims) = crate::support::decode_jwt(token);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        let tid = env.tenant_id();
        assert_eq!(claims["aud"], "https://outlook.office365.com");
        assert_eq!(claims["iss"], format!("https://sts.windows.net/{tid}/"));
        assert_eq!(claims["tid"], tid);
        assert_eq!(claims["appid"], app.client_id.as_str());
        assert_eq!(claims["appidacr"], "1", "secret ⇒ appidacr 1");
        assert_eq!(claims["roles"], json!([exosim::EXCHANGE_MANAGE_AS_APP]));
        assert_eq!(claims["wids"], json!([exosim::EXCHANGE_ADMINISTRATOR_ROLE]));
        assert_eq!(claims["idtyp"], "app");
        assert_eq!(claims["oid"], app.service_principal_id.as_str());
        assert_eq!(claims["sub"], claims["oid"]);
        assert_eq!(claims["ver"], "1.0");
        assert_eq!(claims["app_displayname"], "warden-demo");
        assert!(claims.get("scp").is_none(), "app-only tokens have no scp");
        let exp = claims["exp"].as_i64().unwrap();
        assert!((exp - now() - 3599).abs() <= 2, "exp is now + lifetime");
        assert!(claims["nbf"].as_i64().unwrap() <= now());
        assert!(claims["iat"].as_i64().unwrap() <= now());

        verify_with_jwks(env, token).await;
    });
}

#[test]
fn roles_and_wids_appear_only_when_granted() {
    let env = demo();
    run(async {
        let no_role = env.app_by_id(exosim::DEMO_NO_ROLE_CLIENT_ID);
        let claims = env
            .secret_token(
                &no_role.client_id,
                no_role.client_secret.as_deref().unwrap(),
                EXO_SCOPE,
            )
            .await
            .claims();
        assert!(claims.get("roles").is_none(), "{claims}");
        assert_eq!(claims["wids"], json!([exosim::EXCHANGE_ADMINISTRATOR_ROLE]));

        let no_wids = env.app_by_id(exosim::DEMO_NO_WIDS_CLIENT_ID);
        let claims = env
            .secret_token(
                &no_wids.client_id,
                no_wids.client_secret.as_deref().unwrap(),
                EXO_SCOPE,
            )
            .await
            .claims();
        assert_eq!(claims["roles"], json!([exosim::EXCHANGE_MANAGE_AS_APP]));
        assert!(claims.get("wids").is_none(), "{claims}");
    });
}

#[test]
fn resources_sovereign_clouds_aliases_and_graph() {
    let env = demo();
    let app = env.app();
    let secret = app.client_secret.as_deref().unwrap();
    run(async {
        for (scope, aud, exchange) in [
            (
                "https://outlook.office365.us/.default",
                "https://outlook.office365.us",
                true,
            ),
            (
                "https://outlook-dod.office365.us/.default",
                "https://outlook-dod.office365.us",
                true,
            ),
            (
                "https://partner.outlook.cn/.default",
                "https://partner.outlook.cn",
                true,
            ),
            (
                "00000002-0000-0ff1-ce00-000000000000/.default",
                "00000002-0000-0ff1-ce00-000000000000",
                true,
            ),
            (
                "https://graph.microsoft.com/.default",
                "https://graph.microsoft.com",
                false,
            ),
            (
                "api://AzureADTokenExchange/.default",
                "api://AzureADTokenExchange",
                false,
            ),
        ] {
            let claims = env
                .secret_token(&app.client_id, secret, scope)
                .await
                .claims();
            assert_eq!(claims["aud"], aud, "{scope}");
            assert_eq!(
                claims.get("roles").is_some(),
                exchange,
                "Exchange roles only on Exchange: {scope}"
            );
        }
        // OIDC scopes next to the resource are ignored, as for confidential clients.
        let claims = env
            .secret_token(
                &app.client_id,
                secret,
                &format!("openid profile offline_access {EXO_SCOPE}"),
            )
            .await
            .claims();
        assert_eq!(claims["aud"], "https://outlook.office365.com");
    });
}

#[test]
fn v1_endpoint_returns_numbers_as_strings() {
    let env = demo();
    let app = env.app();
    run(async {
        let resp = env
            .post(
                &format!("/{}/oauth2/token", env.ready.tenant().domain),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &app.client_id),
                    ("client_secret", app.client_secret.as_deref().unwrap()),
                    ("resource", "https://outlook.office365.com/"),
                ],
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let body = &resp.json;
        for key in ["expires_in", "ext_expires_in", "expires_on", "not_before"] {
            let text = body[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} is a string: {body}"));
            text.parse::<i64>()
                .unwrap_or_else(|_| panic!("{key} is a decimal string"));
        }
        assert_eq!(body["expires_in"], "3599");
        assert_eq!(body["resource"], "https://outlook.office365.com/");
        assert_eq!(body["token_type"], "Bearer");
        let claims = resp.claims();
        assert_eq!(
            claims["aud"], "https://outlook.office365.com/",
            "v1 aud is the resource as requested"
        );
        assert_eq!(
            body["expires_on"].as_str().unwrap().parse::<i64>().unwrap(),
            claims["exp"].as_i64().unwrap()
        );
        assert_eq!(
            body["not_before"].as_str().unwrap().parse::<i64>().unwrap(),
            claims["nbf"].as_i64().unwrap()
        );
    });
}

/// A private emulator with a 5 s token lifetime and refresh_in 2 s, whose only app registers the
/// demo app's certificate from its PEM file (so no key of its own is generated).
#[test]
fn lifetime_and_refresh_in_options_and_pem_registered_certificate() {
    let shared = demo();
    let demo_app = shared.app().clone();
    let toml = format!(
        r#"
[[tenant]]
tenant_id = "11111111-2222-4333-8444-555555555555"
domain = "fabrikam.onmicrosoft.com"

[[tenant.app]]
name = "pem-registered"
client_id = "{cid}"
roles = ["Exchange.ManageAsApp"]

[[tenant.app.secret]]
value = "fixed~secret.for-tests"

[[tenant.app.certificate]]
cert_pem = "{pem}"
"#,
        cid = demo_app.client_id,
        pem = demo_app.certificate_pem.as_ref().unwrap().display()
    );
    let tenants = TenantsConfig::from_toml_str(&toml).unwrap();
    run(async {
        let env = Env::start(|dir| ExosimOptions {
            tenants,
            token_lifetime: Duration::from_secs(5),
            refresh_in: Some(Duration::from_secs(2)),
            ..ExosimOptions::demo(dir)
        })
        .await;
        let app = env.app().clone();
        assert_eq!(app.client_secret.as_deref(), Some("fixed~secret.for-tests"));
        assert!(
            app.certificate_pfx.is_none() && app.key_pem.is_none(),
            "we do not hold this key"
        );
        assert_eq!(app.thumbprint_sha1, demo_app.thumbprint_sha1);

        let resp = env
            .secret_token(&app.client_id, "fixed~secret.for-tests", EXO_SCOPE)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(resp.json["expires_in"], 5);
        assert_eq!(resp.json["refresh_in"], 2);
        let claims = resp.claims();
        let remaining = claims["exp"].as_i64().unwrap() - now();
        assert!(
            (4..=6).contains(&remaining),
            "expires in about 5 s, got {remaining}"
        );

        // The client holding the PEM-registered certificate's key authenticates with it.
        let signer = Signer::for_app(&demo_app);
        let assertion = signer.assertion(&app.client_id, &env.token_url());
        let resp = env
            .assertion_token(
                &format!("/{}/oauth2/v2.0/token", env.tenant_id()),
                &app.client_id,
                &assertion,
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(resp.claims()["tid"], "11111111-2222-4333-8444-555555555555");

        // v1 sends refresh_in as a string too.
        let resp = env
            .post(
                &format!("/{}/oauth2/token", env.tenant_id()),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &app.client_id),
                    ("client_secret", "fixed~secret.for-tests"),
                    ("resource", "https://outlook.office365.com"),
                ],
            )
            .await;
        assert_eq!(resp.json["refresh_in"], "2");
        assert_eq!(resp.json["expires_in"], "5");

        // Tokens of one emulator do not verify against another's keys.
        let (header, _) = crate::support::decode_jwt(resp.json["access_token"].as_str().unwrap());
        let other_keys = shared
            .get(&format!("/{}/discovery/v2.0/keys", shared.tenant_id()), &[])
            .await;
        assert!(
            other_keys.json["keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k["kid"] != header["kid"])
        );
        let _: &Value = &resp.json;
        env.exosim.shutdown().await;
    });
}
