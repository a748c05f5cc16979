//! Fault injection on a private emulator: queued 503/429/500 responses in order with their
//! headers and bodies, added latency, runtime lifetime changes, and the HTTP control plane.

use std::time::{Duration, Instant};

use exosim::{ExosimOptions, TenantsConfig, TokenFault};
use serde_json::json;

use crate::support::{EXO_SCOPE, Env, run};

const SECRET: &str = "faults~test.secret";

fn small_config() -> TenantsConfig {
    TenantsConfig::from_toml_str(&format!(
        r#"
[[tenant]]
tenant_id = "22222222-3333-4444-8555-666666666666"
domain = "faults.example"

[[tenant.app]]
name = "faults"
client_id = "33333333-4444-4555-8666-777777777777"

[[tenant.app.secret]]
value = "{SECRET}"
"#
    ))
    .unwrap()
}

#[test]
fn queued_faults_are_served_in_order_then_service_resumes() {
    run(async {
        let env = Env::start(|dir| ExosimOptions {
            tenants: small_config(),
            ..ExosimOptions::demo(dir)
        })
        .await;
        let cid = env.app().client_id.clone();
        let faults = env.exosim.faults();
        faults.push(TokenFault::ServiceUnavailable {
            retry_after_secs: Some(2),
        });
        faults.push(TokenFault::TooManyRequests {
            retry_after_secs: 1,
        });
        faults.push(TokenFault::InternalServerError);
        faults.push_n(
            2,
            TokenFault::ServiceUnavailable {
                retry_after_secs: None,
            },
        );
        assert_eq!(faults.pending(), 5);

        let expected = [
            (503, Some("2"), 90033),
            (429, Some("1"), 90055),
            (500, None, 50000),
            (503, None, 90033),
            (503, None, 90033),
        ];
        for (status, retry_after, code) in expected {
            let resp = env.secret_token(&cid, SECRET, EXO_SCOPE).await;
            resp.assert_aadsts(status, "temporarily_unavailable", code);
            assert_eq!(
                resp.headers.get("retry-after").map(|v| v.to_str().unwrap()),
                retry_after,
                "Retry-After of the {status}"
            );
        }
        assert_eq!(faults.pending(), 0);
        let resp = env.secret_token(&cid, SECRET, EXO_SCOPE).await;
        assert_eq!(resp.status, 200, "{}", resp.text);

        let counters = env.exosim.counters();
        assert_eq!(counters.token_requests, 6);
        assert_eq!(counters.tokens_issued, 1);
        assert_eq!(counters.faults_injected, 5);
        assert_eq!(
            (
                counters.aadsts(90033),
                counters.aadsts(90055),
                counters.aadsts(50000)
            ),
            (3, 1, 1)
        );

        // Latency applies to every token response.
        faults.set_latency(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(env.secret_token(&cid, SECRET, EXO_SCOPE).await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        faults.clear();

        // Lifetime and refresh_in change at runtime.
        faults.set_token_lifetime(Duration::from_secs(7));
        faults.set_refresh_in(Some(Duration::from_secs(3)));
        let resp = env.secret_token(&cid, SECRET, EXO_SCOPE).await;
        assert_eq!(
            (
                resp.json["expires_in"].clone(),
                resp.json["refresh_in"].clone()
            ),
            (json!(7), json!(3))
        );
        env.exosim.shutdown().await;
    });
}

#[test]
fn faults_and_counters_over_http() {
    run(async {
        let env = Env::start(|dir| ExosimOptions {
            tenants: small_config(),
            ..ExosimOptions::demo(dir)
        })
        .await;
        let cid = env.app().client_id.clone();
        let control = env.ready.control.clone();
        let snapshot: serde_json::Value = env
            .client
            .post(&control.faults)
            .json(
                &json!({"push": [{"kind": "too_many_requests", "retry_after_secs": 4, "count": 2}],
                          "token_lifetime_secs": 9, "refresh_in_secs": 0}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(snapshot["queue"].as_array().unwrap().len(), 2);
        assert_eq!(snapshot["token_lifetime_secs"], 9);

        for _ in 0..2 {
            let resp = env.secret_token(&cid, SECRET, EXO_SCOPE).await;
            assert_eq!(resp.status, 429);
            assert_eq!(resp.headers["retry-after"], "4");
        }
        let resp = env.secret_token(&cid, SECRET, EXO_SCOPE).await;
        assert_eq!(resp.json["expires_in"], 9);

        let bad = env
            .client
            .post(&control.faults)
            .json(&json!({"nonsense": true}))
            .send()
            .await
            .unwrap();
        assert!(bad.status().is_client_error(), "unknown fields are refused");

        let counters: exosim::Counters = env
            .client
            .get(&control.counters)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(counters.token_requests, 3);
        assert_eq!(counters.faults_injected, 2);
        assert_eq!(counters.aadsts(90055), 2);

        let log: Vec<exosim::LoggedRequest> = env
            .client
            .get(&control.requests)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(log.len(), 3, "control-plane requests are not logged");
        assert_eq!(log[0].error.as_deref(), Some("AADSTS90055"));
        env.client.delete(&control.requests).send().await.unwrap();
        assert!(env.exosim.request_log().is_empty());
        env.exosim.shutdown().await;
    });
}
