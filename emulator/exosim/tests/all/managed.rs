//! Managed identity: IMDS (`Metadata: true`) and App Service (`X-IDENTITY-HEADER`).

use serde_json::json;

use crate::support::{decode_jwt, demo, now, run};

#[test]
fn imds_requires_the_metadata_header_and_answers_with_strings() {
    let env = demo();
    let endpoint = env.ready.imds_endpoint.clone();
    let first = env.ready.managed_identities[0].clone();
    let second = env.ready.managed_identities[1].clone();
    run(async {
        let query = "?api-version=2018-02-01&resource=https://outlook.office365.com";
        let resp = env.get(&format!("{endpoint}{query}"), &[]).await;
        assert_eq!(resp.status, 400);
        assert_eq!(
            resp.json,
            json!({"error": "bad_request_102", "error_description": "Required metadata header not specified"})
        );
        let resp = env
            .get(&format!("{endpoint}{query}"), &[("Metadata", "True")])
            .await;
        assert_eq!(
            resp.json["error"], "bad_request_102",
            "the header value must be lower-case true"
        );

        let resp = env
            .get(&format!("{endpoint}{query}"), &[("Metadata", "true")])
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let body = &resp.json;
        for key in ["expires_in", "expires_on", "ext_expires_in", "not_before"] {
            assert!(
                body[key].as_str().is_some_and(|v| v.parse::<i64>().is_ok()),
                "{key} is a decimal string: {body}"
            );
        }
        assert_eq!(body["resource"], "https://outlook.office365.com");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["client_id"], first.client_id.as_str());
        let (_, claims) = decode_jwt(body["access_token"].as_str().unwrap());
        assert_eq!(claims["appid"], first.client_id.as_str());
        assert_eq!(claims["oid"], first.object_id.as_str());
        assert_eq!(claims["tid"], env.tenant_id());
        assert_eq!(claims["roles"], json!([exosim::EXCHANGE_MANAGE_AS_APP]));
        assert_eq!(claims["xms_mirid"], first.resource_id.as_deref().unwrap());
        assert!((claims["exp"].as_i64().unwrap() - now() - 3599).abs() <= 2);

        // A user-assigned identity by client_id, object_id or msi_res_id.
        for selector in [
            format!("client_id={}", second.client_id),
            format!("object_id={}", second.object_id),
            format!("msi_res_id={}", second.resource_id.as_deref().unwrap()),
        ] {
            let resp = env
                .get(
                    &format!("{endpoint}{query}&{selector}"),
                    &[("Metadata", "true")],
                )
                .await;
            assert_eq!(resp.status, 200, "{selector}: {}", resp.text);
            let (_, claims) = decode_jwt(resp.json["access_token"].as_str().unwrap());
            assert_eq!(claims["appid"], second.client_id.as_str(), "{selector}");
            assert!(claims.get("roles").is_none());
        }

        let resp = env
            .get(
                &format!("{endpoint}{query}&client_id=0f0f0f0f-0000-4000-8000-000000000000"),
                &[("Metadata", "true")],
            )
            .await;
        assert_eq!(
            (resp.status, resp.json["error"].as_str()),
            (400, Some("invalid_request")),
            "{}",
            resp.text
        );
        let resp = env
            .get(
                &format!("{endpoint}?api-version=2018-02-01"),
                &[("Metadata", "true")],
            )
            .await;
        assert_eq!(resp.status, 400, "resource is required");
        let resp = env
            .get(
                &format!("{endpoint}?api-version=2018-02-01&resource=https://contoso.example"),
                &[("Metadata", "true")],
            )
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (400, Some(500011)),
            "{}",
            resp.text
        );
        assert!(
            env.exosim
                .counters()
                .errors
                .get("bad_request_102")
                .copied()
                .unwrap_or(0)
                >= 2
        );
    });
}

#[test]
fn app_service_requires_the_identity_header_and_sends_no_expires_in() {
    let env = demo();
    let endpoint = env.ready.identity_endpoint.clone();
    let header = env.ready.identity_header.clone();
    let first = env.ready.managed_identities[0].clone();
    let second = env.ready.managed_identities[1].clone();
    run(async {
        let query = "?api-version=2019-08-01&resource=https://outlook.office365.com";
        let resp = env.get(&format!("{endpoint}{query}"), &[]).await;
        assert_eq!(resp.status, 401, "no header");
        let resp = env
            .get(
                &format!("{endpoint}{query}"),
                &[("X-IDENTITY-HEADER", "wrong")],
            )
            .await;
        assert_eq!(resp.status, 401, "wrong header");

        let before = env.exosim.counters().app_service_requests;
        let resp = env
            .get(
                &format!("{endpoint}{query}"),
                &[("X-IDENTITY-HEADER", &header)],
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let body = resp.json.as_object().unwrap();
        assert!(
            !body.contains_key("expires_in"),
            "App Service sends no expires_in: {body:?}"
        );
        assert!(
            body["expires_on"]
                .as_str()
                .is_some_and(|v| v.parse::<i64>().is_ok())
        );
        assert_eq!(body["client_id"], first.client_id.as_str());
        assert_eq!(body["resource"], "https://outlook.office365.com");
        assert!(env.exosim.counters().app_service_requests > before);

        let resp = env
            .get(
                &format!("{endpoint}{query}&principal_id={}", second.object_id),
                &[("X-IDENTITY-HEADER", &header)],
            )
            .await;
        assert_eq!(resp.json["client_id"], second.client_id.as_str());

        // The header value never reaches the request log.
        let dump = serde_json::to_string(&env.exosim.request_log()).unwrap();
        assert!(!dump.contains(&header));
    });
}
