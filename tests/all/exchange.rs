//! The REST session against exosim over HTTPS: what is particular to `InvokeCommand` (headers,
//! `@odata.nextLink` paging, `$select`, annotations, 429 `Retry-After`, 100,000-mailbox
//! streaming). What both transports share (typed errors, writes, token re-mint, write safety
//! under resets, 401/403) is in `transports.rs`, run over each.

use crate::support::*;
use std::sync::Arc;
use std::time::Duration;
use warden_auth::TokenProvider;
use warden_auth::config::Overrides;
use warden_exchange::{
    ExchangeError, ExchangeSession, Invocation, ParamValue, Parameters, SessionConfig,
};

fn session_for(
    emu: &Emulator,
    app: usize,
    configure: impl FnOnce(&mut SessionConfig),
) -> ExchangeSession {
    let env = with(
        emu.env_for(app),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(app, "client_secret"))],
    );
    let settings = settings(&env, &Overrides::default()).unwrap();
    let tokens = provider(&settings).unwrap();
    session_with(emu, &settings, tokens, configure)
}

fn session_with(
    emu: &Emulator,
    settings: &warden_auth::config::AuthSettings,
    tokens: TokenProvider,
    configure: impl FnOnce(&mut SessionConfig),
) -> ExchangeSession {
    let mut config =
        SessionConfig::for_settings(settings, Some(&emu.exosim.exchange_url())).unwrap();
    config.base_delay = Duration::from_millis(10);
    configure(&mut config);
    let http = Arc::new(warden_auth::ReqwestTransport::new(Some(emu.exosim.ca_file())).unwrap());
    ExchangeSession::new(config, tokens, http).unwrap()
}

fn params(pairs: &[(&str, ParamValue)]) -> Parameters {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(value: &str) -> ParamValue {
    ParamValue::String(value.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_the_module_sends_reaches_exchange() {
    let emu = Emulator::start().await;
    let session = session_for(&emu, 0, |_| {});
    session
        .invoke(Invocation::new(
            "Get-Mailbox",
            params(&[("ResultSize", ParamValue::ResultSize(Some(2)))]),
        ))
        .await
        .unwrap();
    session
        .invoke(Invocation::new("Get-AcceptedDomain", Parameters::new()))
        .await
        .unwrap();
    let first = &calls_of(&emu, "Get-Mailbox")[0];
    let second = &calls_of(&emu, "Get-AcceptedDomain")[0];
    let tenant = emu.tenant_id();
    assert_eq!(first.path, format!("/adminapi/beta/{tenant}/InvokeCommand"));
    for (name, expected) in [
        (
            "x-anchormailbox",
            format!("APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"),
        ),
        ("x-cmdletname", "Get-Mailbox".into()),
        ("prefer", "odata.maxpagesize=2".into()),
        ("x-responseformat", "json".into()),
        ("accept", "application/json".into()),
        ("content-type", "application/json".into()),
    ] {
        assert_eq!(first.header(name), Some(expected.as_str()), "{name}");
    }
    assert!(
        first
            .header("user-agent")
            .unwrap()
            .starts_with("exo-warden/")
    );
    assert!(uuid::Uuid::parse_str(first.header("client-request-id").unwrap()).is_ok());
    assert_ne!(
        first.header("client-request-id"),
        second.header("client-request-id"),
        "one request id per invocation"
    );
    assert_eq!(
        first.header("connection-id"),
        second.header("connection-id"),
        "one connection id per session"
    );
    assert_eq!(first.header("connection-id"), Some(session.connection_id()));
    let auth = first.header("authorization").unwrap_or("");
    assert!(
        !auth.contains("eyJ"),
        "exosim's log must not keep the token: {auth}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_page_through_with_a_small_page_size_each_object_once() {
    let emu = Emulator::start().await;
    let total = emu.exosim.mailbox_count(&emu.tenant_id());
    assert!(total >= 20, "the demo tenant has mailboxes: {total}");
    let session = session_for(&emu, 0, |c| c.page_size = 7);
    let mut stream = session.stream(Invocation::new(
        "Get-Mailbox",
        params(&[("ResultSize", ParamValue::ResultSize(None))]),
    ));
    let mut seen = std::collections::HashSet::new();
    while let Some(page) = stream.next_page().await.unwrap() {
        assert!(page.objects.len() <= 7);
        for object in page.objects {
            assert!(
                object.keys().all(|k| !k.contains('@')),
                "annotations are stripped by default: {object:?}"
            );
            assert!(
                seen.insert(
                    object["ExchangeGuid"]
                        .as_str()
                        .or(object["Guid"].as_str())
                        .unwrap()
                        .to_owned()
                ),
                "an object came twice"
            );
        }
    }
    assert_eq!(seen.len(), total);
    assert_eq!(stream.pages() as usize, total.div_ceil(7));
    let records = calls_of(&emu, "Get-Mailbox");
    assert_eq!(records.len(), total.div_ceil(7));
    assert!(
        records
            .iter()
            .all(|r| r.header("client-request-id") == records[0].header("client-request-id")),
        "the same request id on every page"
    );
    assert!(
        records[1..]
            .iter()
            .all(|r| r.query.as_deref().is_some_and(|q| !q.is_empty())),
        "later pages follow the nextLink"
    );
}

/// Waits until exosim has seen `n` Get-Mailbox requests, or two seconds.
async fn until_exosim_saw(emu: &Emulator, n: usize) -> usize {
    for _ in 0..200 {
        if emu.requests_for("Get-Mailbox") >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    emu.requests_for("Get-Mailbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_a_reads_next_page_is_asked_for_before_it_is_wanted() {
    let emu = Emulator::start().await;
    let total = emu.exosim.mailbox_count(&emu.tenant_id());
    let read = || {
        Invocation::new(
            "Get-Mailbox",
            params(&[("ResultSize", ParamValue::ResultSize(None))]),
        )
    };
    let session = session_for(&emu, 0, |c| c.page_size = 7);
    let mut stream = session.stream(read());
    let mut count = stream.next_page().await.unwrap().unwrap().objects.len();
    assert_eq!(until_exosim_saw(&emu, 2).await, 2, "page 2 asked for ahead");
    while let Some(page) = stream.next_page().await.unwrap() {
        count += page.objects.len();
    }
    assert_eq!(count, total);
    assert_eq!(
        emu.requests_for("Get-Mailbox"),
        total.div_ceil(7),
        "each page asked for once"
    );
    // Off, a page is asked for only when wanted.
    emu.exosim.clear_exchange_log();
    let session = session_for(&emu, 0, |c| {
        c.page_size = 7;
        c.read_ahead = false;
    });
    let mut stream = session.stream(read());
    stream.next_page().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(emu.requests_for("Get-Mailbox"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_100000_mailboxes_page_by_page() {
    let emu = Emulator::start_with(|o| o.mailboxes = 100_000).await;
    let session = session_for(&emu, 0, |c| c.page_size = 1000);
    let mut stream = session.stream(Invocation::new(
        "Get-Mailbox",
        params(&[("ResultSize", ParamValue::ResultSize(None))]),
    ));
    let (mut count, mut largest_page) = (0usize, 0usize);
    while let Some(page) = stream.next_page().await.unwrap() {
        largest_page = largest_page.max(page.objects.len());
        count += page.objects.len();
        // The page is dropped here: memory stays bounded by this page and the one asked for
        // ahead, whatever the total.
    }
    assert_eq!(count, 100_000);
    assert_eq!(largest_page, 1000);
    assert_eq!(stream.pages(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_projects_and_annotations_are_kept_on_request() {
    let emu = Emulator::start().await;
    let session = session_for(&emu, 0, |c| c.keep_annotations = true);
    let mut invocation = Invocation::new(
        "Get-Mailbox",
        params(&[("ResultSize", ParamValue::ResultSize(Some(1)))]),
    );
    let annotated = session.invoke(invocation.clone()).await.unwrap();
    assert!(
        annotated[0]
            .keys()
            .any(|k| k.ends_with("@odata.type") || k.ends_with("@data.type")),
        "{:?}",
        annotated[0]
    );
    invocation.select = vec!["DisplayName".into(), "PrimarySmtpAddress".into()];
    let plain = session_for(&emu, 0, |_| {});
    let projected = plain.invoke(invocation).await.unwrap();
    let keys: std::collections::BTreeSet<&str> = projected[0].keys().map(String::as_str).collect();
    assert!(
        keys.contains("DisplayName")
            && keys.contains("PrimarySmtpAddress")
            && !keys.contains("ExchangeGuid"),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_then_the_call_succeeds() {
    let emu = Emulator::start().await;
    emu.exosim
        .exchange_faults()
        .push(exosim::ExchangeFault::TooManyRequests {
            retry_after_secs: 0.6,
        });
    let session = session_for(&emu, 0, |_| {});
    let started = std::time::Instant::now();
    let results = session
        .invoke(Invocation::new("Get-AcceptedDomain", Parameters::new()))
        .await
        .unwrap();
    assert!(!results.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "Retry-After 0.6 was honoured: {:?}",
        started.elapsed()
    );
    let records = calls_of(&emu, "Get-AcceptedDomain");
    assert_eq!(
        records.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_invoke_streams_json_lines_projected_by_select() {
    // The failing-call half (exit 1, the exception named) runs over both transports in
    // transports.rs::warden_invoke_gives_the_same_json_lines.
    let emu = Emulator::start().await;
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let output = warden(
        &[
            "invoke",
            "Get-Mailbox",
            "-p",
            "ResultSize=3",
            "--select",
            "DisplayName,PrimarySmtpAddress",
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["DisplayName", "PrimarySmtpAddress"], "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_past_the_budget_and_timeouts_are_typed_errors() {
    let emu = Emulator::start().await;
    emu.exosim.exchange_faults().push_n(
        5,
        exosim::ExchangeFault::TooManyRequests {
            retry_after_secs: 0.05,
        },
    );
    let session = session_for(&emu, 0, |c| c.max_attempts = 3);
    match session
        .invoke(Invocation::new("Get-AcceptedDomain", Parameters::new()))
        .await
        .unwrap_err()
    {
        ExchangeError::Throttled {
            status: 429,
            attempts: 3,
            retry_after,
            ..
        } => assert_eq!(retry_after, Some(Duration::from_millis(50))),
        other => panic!("{other}"),
    }
    emu.exosim.exchange_faults().clear();

    emu.exosim
        .exchange_faults()
        .set_latency(Duration::from_secs(10));
    // A timeout long enough for a fresh connection to reach exosim on a loaded machine, and
    // far below the latency: every attempt arrives and every attempt times out.
    let session = session_for(&emu, 0, |c| {
        c.max_attempts = 2;
        c.request_timeout = Duration::from_secs(2);
    });
    // exosim counts a request when it arrives (its log entry is written only once it answers,
    // and the client has hung up by then).
    let arrived = || emu.exosim.counters().invoke_requests;
    let before = arrived();
    let read = session
        .invoke(Invocation::new("Get-AcceptedDomain", Parameters::new()))
        .await
        .unwrap_err();
    assert!(matches!(read, ExchangeError::Timeout { .. }), "{read}");
    assert_eq!(arrived() - before, 2, "the read was tried twice");
    let before = arrived();
    let write = session
        .invoke(Invocation::new(
            "Set-Mailbox",
            params(&[("Identity", s("nobody")), ("DisplayName", s("x"))]),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(write, ExchangeError::OutcomeUnknown { .. }),
        "a timed-out write is reported unknown: {write}"
    );
    assert_eq!(arrived() - before, 1, "and sent once");
}
