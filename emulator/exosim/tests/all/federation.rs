//! Workload identity federation: the demo app trusts the emulator's own issuer for
//! `system:serviceaccount:warden:demo`. (Refusals are in the errors table.)

use std::time::Duration;

use crate::support::{demo, run};

#[test]
fn federated_token_is_exchanged_for_an_app_token() {
    let env = demo();
    let app = env.app();
    run(async {
        let assertion = env.exosim.mint_federated_token(
            exosim::DEMO_FEDERATED_SUBJECT,
            exosim::TOKEN_EXCHANGE_AUDIENCE,
            Duration::from_secs(300),
        );
        let path = format!("/{}/oauth2/v2.0/token", env.tenant_id());
        let resp = env.assertion_token(&path, &app.client_id, &assertion).await;
        let claims = resp.claims();
        assert_eq!(claims["appid"], app.client_id.as_str());
        assert_eq!(claims["appidacr"], "2");
        assert_eq!(claims["aud"], "https://outlook.office365.com");

        // Workload identity reuses the projected token file for a while: the same token again
        // must work.
        let resp = env.assertion_token(&path, &app.client_id, &assertion).await;
        assert_eq!(resp.status, 200, "{}", resp.text);

        // Out-of-process: the control endpoint mints the same kind of token.
        let minted: serde_json::Value = env
            .client
            .post(&env.ready.control.federated_token)
            .json(&serde_json::json!({"subject": exosim::DEMO_FEDERATED_SUBJECT}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let resp = env
            .assertion_token(&path, &app.client_id, minted["token"].as_str().unwrap())
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
    });
}
