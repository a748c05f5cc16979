//! Each AADSTS error a client-credentials caller can meet reaches the user with its code, its
//! meaning, the fix, and Entra's trace and correlation ids — produced by exosim for real, not
//! by a mock.

use crate::support::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use warden_auth::clock::ManualClock;
use warden_auth::config::Overrides;
use warden_auth::{RetryPolicy, TokenProvider};

fn assert_entra_error(name: &str, error: &warden_auth::AuthError, code: u32) {
    assert_eq!(error.aadsts_code(), Some(code), "{name}: {error}");
    let text = error.to_string();
    assert!(text.contains(&format!("AADSTS{code}")), "{name}: {text}");
    assert!(
        text.contains("meaning:") && text.contains("fix:"),
        "{name} has no hint: {text}"
    );
    assert!(
        !text.contains("trace_id: -") && !text.contains("correlation_id: -"),
        "{name} lost Entra's ids: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_aadsts_error_surfaces_with_code_hint_and_ids() {
    let emu = Emulator::start().await;
    let secret = emu.app_str(0, "client_secret");
    let unknown_guid = "0badc0de-0000-4000-8000-000000000000";
    let federated_garbage = emu.dir.path().join("garbage.jwt");
    std::fs::write(&federated_garbage, "eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.c2ln").unwrap();
    let stranger = emu.dir.path().join("stranger.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=not-registered",
        "-days",
        "2",
        "-keyout",
        stranger.to_str().unwrap(),
        "-out",
        emu.dir.path().join("stranger-cert.pem").to_str().unwrap(),
    ]);
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&stranger).unwrap(),
        std::fs::read_to_string(emu.dir.path().join("stranger-cert.pem")).unwrap()
    );
    std::fs::write(&stranger, bundle).unwrap();
    let expired_secret = emu.app(0)["expired_client_secret"]
        .as_str()
        .map(str::to_owned);

    let mut cases: Vec<(&str, Env, Overrides, &str, u32)> = vec![
        (
            "wrong secret",
            with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", "not-the-secret")]),
            Overrides::default(),
            EXCHANGE_SCOPE,
            7000215,
        ),
        (
            "unknown client",
            with(
                with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", &secret)]),
                &[("AZURE_CLIENT_ID", unknown_guid)],
            ),
            Overrides::default(),
            EXCHANGE_SCOPE,
            700016,
        ),
        (
            "unknown tenant",
            with(
                with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", &secret)]),
                &[("AZURE_TENANT_ID", unknown_guid)],
            ),
            Overrides::default(),
            EXCHANGE_SCOPE,
            90002,
        ),
        (
            "scope without /.default",
            with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", &secret)]),
            Overrides::default(),
            "https://outlook.office365.com",
            1002012,
        ),
        (
            "unknown resource",
            with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", &secret)]),
            Overrides::default(),
            "https://unknown.example.com/.default",
            500011,
        ),
        (
            "unregistered certificate",
            emu.env_for(0),
            Overrides {
                certificate: Some(stranger.clone()),
                ..Default::default()
            },
            EXCHANGE_SCOPE,
            700027,
        ),
        (
            "malformed federated token",
            with(
                emu.env_for(0),
                &[(
                    "AZURE_FEDERATED_TOKEN_FILE",
                    federated_garbage.to_str().unwrap(),
                )],
            ),
            Overrides::default(),
            EXCHANGE_SCOPE,
            50027,
        ),
    ];
    if let Some(expired) = &expired_secret {
        cases.push((
            "expired secret",
            with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", expired)]),
            Overrides::default(),
            EXCHANGE_SCOPE,
            7000222,
        ));
    }
    // env_for() entries come first, so later duplicates must win: rebuild maps in order.
    for (name, env, overrides, scope, code) in cases {
        let mut dedup: Vec<(String, String)> = Vec::new();
        for (k, v) in env {
            dedup.retain(|(n, _)| *n != k);
            dedup.push((k, v));
        }
        let before = emu.exosim.counters().aadsts(code);
        let settings = settings(&dedup, &overrides).unwrap_or_else(|e| panic!("{name}: {e}"));
        let provider = provider(&settings).unwrap_or_else(|e| panic!("{name}: {e}"));
        let requests = emu.token_requests();
        let error = provider.get_token(scope).await.expect_err(name);
        assert_entra_error(name, &error, code);
        assert_eq!(
            emu.exosim.counters().aadsts(code),
            before + 1,
            "{name}: exosim answered it once"
        );
        assert_eq!(
            emu.token_requests(),
            requests + 1,
            "{name}: configuration errors are not retried"
        );
    }
    assert!(
        expired_secret.is_some(),
        "the demo app registers an expired secret for the 7000222 case"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_signed_with_a_wrong_clock_is_700024() {
    let emu = Emulator::start().await;
    let settings = settings(
        &emu.env_for(0),
        &Overrides {
            certificate: Some(emu.key_and_cert_pem(0)),
            ..Default::default()
        },
    )
    .unwrap();
    let transport =
        Arc::new(warden_auth::ReqwestTransport::new(settings.ca_file.as_deref()).unwrap());
    // This machine's clock is an hour behind: the assertion expired before it was sent.
    let clock = Arc::new(ManualClock::at(
        SystemTime::now() - Duration::from_secs(3600),
    ));
    let provider = TokenProvider::with_options(
        settings.load_credential().unwrap(),
        transport,
        clock,
        RetryPolicy::default(),
    );
    let error = provider.get_token(EXCHANGE_SCOPE).await.unwrap_err();
    assert_entra_error("clock skew", &error, 700024);
    assert!(error.to_string().contains("clock"), "{error}");
}
