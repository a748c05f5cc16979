//! The token cache against a real endpoint: single-flight under load, refresh before expiry,
//! retries through injected faults.

use crate::support::*;
use std::time::Duration;
use warden_auth::config::Overrides;

async fn secret_provider(emu: &Emulator) -> warden_auth::TokenProvider {
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    provider(&settings(&env, &Overrides::default()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_callers_cause_one_token_request() {
    let emu = Emulator::start().await;
    emu.exosim.faults().set_latency(Duration::from_millis(100));
    let provider = secret_provider(&emu).await;
    let before = emu.token_requests();
    let calls = (0..200).map(|_| {
        let provider = provider.clone();
        tokio::spawn(async move { provider.get_token(EXCHANGE_SCOPE).await })
    });
    let tokens: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(
        emu.token_requests() - before,
        1,
        "exosim saw exactly one token request"
    );
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_near_expiry_is_refreshed_before_use() {
    // Entra's lifetimes are an hour; exosim's is shortened to 3 s so expiry happens in the test.
    let emu = Emulator::start_with(|o| o.token_lifetime = Duration::from_secs(3)).await;
    let provider = secret_provider(&emu).await;
    let first = provider.get_token(EXCHANGE_SCOPE).await.unwrap();
    let first_exp = claims(first.expose())["exp"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // Within the last quarter of its life the cached token is not handed out.
    let second = provider.get_token(EXCHANGE_SCOPE).await.unwrap();
    assert!(
        !second.same_as(&first),
        "a fresh token replaced the nearly expired one"
    );
    assert!(claims(second.expose())["exp"].as_u64().unwrap() > first_exp);
    assert!(second.expires_on > std::time::SystemTime::now() + Duration::from_secs(1));
    assert_eq!(emu.exosim.counters().tokens_issued, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_burst_is_retried_and_a_429_retry_after_is_waited_out() {
    let emu = Emulator::start().await;
    emu.exosim.faults().push_n(
        2,
        exosim::TokenFault::ServiceUnavailable {
            retry_after_secs: None,
        },
    );
    emu.exosim
        .faults()
        .push(exosim::TokenFault::TooManyRequests {
            retry_after_secs: 1,
        });
    let provider = secret_provider(&emu).await;
    let started = std::time::Instant::now();
    provider.get_token(EXCHANGE_SCOPE).await.unwrap();
    assert_eq!(emu.token_requests(), 4, "three faults, then success");
    assert_eq!(emu.exosim.counters().faults_injected, 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_outage_fails_cleanly_and_is_not_hammered() {
    let emu = Emulator::start().await;
    emu.exosim.faults().push_n(
        50,
        exosim::TokenFault::TooManyRequests {
            retry_after_secs: 90,
        },
    );
    let provider = secret_provider(&emu).await;
    let error = provider.get_token(EXCHANGE_SCOPE).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("429") || message.contains("AADSTS90055"),
        "{message}"
    );
    let after_first = emu.token_requests();
    assert_eq!(
        after_first, 1,
        "Retry-After 90 s is past the 60 s retry budget: no second attempt"
    );
    assert!(provider.get_token(EXCHANGE_SCOPE).await.is_err());
    assert_eq!(
        emu.token_requests(),
        after_first,
        "the negative cache answered the repeat"
    );
}
