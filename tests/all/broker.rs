//! The broker against exosim over HTTPS, with a real policy file and a real audit trail: a
//! refused call reaches neither the network nor exosim, an allowed one is shaped and audited,
//! budgets and target scopes hold, and the trail verifies.

use crate::support::*;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::{Broker, GuestError};
use warden_exchange::{ExchangeSession, SessionConfig};
use warden_policy::{Policy, Principal};

const SCRIPT: &str = r#"exo::invoke("Get-Mailbox", #{ResultSize: 3})"#;

struct Setup {
    emu: Emulator,
    broker: Broker,
    audit: Arc<AuditTrail>,
    audit_path: std::path::PathBuf,
    key: AuditKey,
    target: String,
    other: String,
}

/// The admin app's REST session against `emu`, over HTTPS; `page_size` when given.
fn rest_session(emu: &Emulator, page_size: Option<u32>) -> ExchangeSession {
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let settings = settings(&env, &Default::default()).unwrap();
    let mut config =
        SessionConfig::for_settings(&settings, Some(&emu.exosim.exchange_url())).unwrap();
    if let Some(size) = page_size {
        config.page_size = size;
    }
    ExchangeSession::new(
        config,
        provider(&settings).unwrap(),
        Arc::new(warden_auth::ReqwestTransport::new(Some(emu.exosim.ca_file())).unwrap()),
    )
    .unwrap()
}

async fn setup(budgets: &str) -> Setup {
    let emu = Emulator::start().await;
    let session = rest_session(&emu, None);
    let mailboxes = session
        .invoke(warden_exchange::Invocation::new(
            "Get-Mailbox",
            Default::default(),
        ))
        .await
        .unwrap();
    let address = |i: usize| {
        mailboxes[i]["PrimarySmtpAddress"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (target, other) = (address(0), address(1));
    let policy_text = format!(
        r#"version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 5
output = ["DisplayName", "PrimarySmtpAddress"]
[roles.reader.cmdlet.parameters]
Identity = {{ length = [1, 256] }}

[roles.renamer]
[[roles.renamer.cmdlet]]
name = "Set-Mailbox"
target = {{ parameter = "Identity", domains = [], identities = ["{target}"] }}
[roles.renamer.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
DisplayName = {{ length = [1, 64] }}

[[grant]]
id = "test-script"
script_inline_sha256 = "{hash}"
roles = ["reader", "renamer"]
[grant.budgets]
{budgets}
"#,
        hash = Principal::inline_script(SCRIPT).sha256()
    );
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy_text).unwrap();
    let policy = Arc::new(Policy::load(&policy_path).unwrap());
    // The same key twice: one for the trail, one for the test to verify with.
    let key_bytes: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
    let key = AuditKey::from_bytes(key_bytes);
    let audit_path = emu.dir.path().join("audit.jsonl");
    let audit = Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes(key_bytes)).unwrap());
    let broker = Broker::new(
        policy,
        Arc::new(session),
        audit.clone(),
        Duration::from_secs(30),
    );
    Setup {
        emu,
        broker,
        audit,
        audit_path,
        key,
        target,
        other,
    }
}

fn audit_lines(setup: &Setup) -> Vec<Value> {
    // Refusals and calls' closing lines are queued (group commit): a reader in the middle of a
    // run writes them first, as the run's end would.
    setup.audit.flush().unwrap();
    std::fs::read_to_string(&setup.audit_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn exosim_calls(setup: &Setup, cmdlet: &str) -> usize {
    setup.emu.requests_for(cmdlet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_reach_neither_the_network_nor_exosim() {
    let s = setup("calls = 50\nwrites = 5").await;
    let run = s
        .broker
        .begin(Principal::inline_script(SCRIPT), None)
        .unwrap();
    let before = s.emu.exosim.counters().invoke_requests;
    let cases: &[(&str, &str, &str)] = &[
        ("Remove-Mailbox", r#"{"Identity":"x"}"#, "denied"),
        ("Get-Mailbox", r#"{"ResultSize":"Unlimited"}"#, "denied"),
        ("Get-Mailbox", r#"{"Ident":"x"}"#, "denied"),
        (
            "Get-Mailbox",
            r#"{"Identity":"a","identity":"b"}"#,
            "invalid",
        ),
        (
            "Get-Mailbox",
            r#"{"Identity":"x","Confirm":false}"#,
            "denied",
        ),
        ("Get-Mаilbox", r#"{}"#, "invalid"),
        (
            "Set-Mailbox",
            &format!(
                r#"{{"Identity":"{}","DisplayName":"x","HiddenFromAddressListsEnabled":true}}"#,
                s.target
            ),
            "denied",
        ),
    ];
    for (cmdlet, json, kind) in cases {
        let error = s.broker.invoke(&run, cmdlet, *json).await.unwrap_err();
        assert_eq!(error.kind(), *kind, "{cmdlet} {json}: {error}");
    }
    assert_eq!(
        s.emu.exosim.counters().invoke_requests,
        before,
        "nothing refused reached exosim"
    );
    let lines = audit_lines(&s);
    let refusals = lines
        .iter()
        .filter(|l| l["kind"] == "decision" && l["allowed"] == false)
        .count();
    assert_eq!(refusals, cases.len(), "every refusal is on record");
    assert!(warden_audit::verify(&s.audit_path, &s.key).unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_calls_are_shaped_scoped_audited_and_budgeted() {
    let s = setup("calls = 5\nwrites = 1\nobjects = 7").await;
    let run = s
        .broker
        .begin(Principal::inline_script(SCRIPT), None)
        .unwrap();

    let results = s
        .broker
        .invoke(&run, "get-mailbox", r#"{"ResultSize":3}"#)
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    for object in &results {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["DisplayName", "PrimarySmtpAddress"],
            "output shaping"
        );
    }

    // Target scoping: the broker resolves Identity first; only the listed mailbox may change.
    let rename =
        |who: &str| format!(r#"{{"Identity":"{who}","DisplayName":"Renamed by broker test"}}"#);
    let refused = s
        .broker
        .invoke(&run, "Set-Mailbox", &rename(&s.other))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, GuestError::Denied { rule, .. } if rule.starts_with("resolve:")),
        "{refused}"
    );
    assert_eq!(
        exosim_calls(&s, "Set-Mailbox"),
        0,
        "an out-of-scope write never reached exosim"
    );
    s.broker
        .invoke(&run, "Set-Mailbox", &rename(&s.target))
        .await
        .unwrap();
    assert_eq!(
        s.emu.exosim.mailbox(&s.emu.tenant_id(), &s.target).unwrap()["DisplayName"],
        "Renamed by broker test"
    );

    // The writes budget (1) is spent. Each target lookup was a call of the budget (the refused
    // rename's too): four calls of five are used.
    let error = s
        .broker
        .invoke(&run, "Set-Mailbox", &rename(&s.target))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        GuestError::BudgetExhausted {
            budget: "writes".into(),
            limit: 1
        }
    );
    assert_eq!((run.usage().calls, run.usage().writes), (4, 1));
    // 3 objects delivered; a page of 5 more would pass the objects budget (7): withheld whole.
    let error = s
        .broker
        .invoke(&run, "Get-Mailbox", r#"{"ResultSize":5}"#)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        GuestError::BudgetExhausted {
            budget: "objects".into(),
            limit: 7
        }
    );
    assert_eq!(run.usage().objects, 3, "only delivered objects count");
    let error = s
        .broker
        .invoke(&run, "Get-Mailbox", r#"{"ResultSize":1}"#)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        GuestError::BudgetExhausted {
            budget: "calls".into(),
            limit: 5
        }
    );
    assert_eq!(
        exosim_calls(&s, "Get-Mailbox"),
        3,
        "setup's read and the two brokered reads; the over-budget call never left"
    );
    assert_eq!(
        exosim_calls(&s, "Get-Recipient"),
        2,
        "the broker resolved both Set-Mailbox targets"
    );

    let report = warden_audit::verify(&s.audit_path, &s.key).unwrap();
    assert!(report.ok(), "{:?}", report.first_broken);
    let lines = audit_lines(&s);
    let calls: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "call").collect();
    assert!(
        calls.iter().any(|l| l["cmdlet"] == "Get-Mailbox"
            && l["objects"] == 3
            && l["outcome"]["status"] == "ok"),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|l| l["cmdlet"] == "Set-Mailbox" && l["outcome"]["status"] == "ok"),
        "{calls:?}"
    );
    assert!(
        lines.iter().all(|l| l["run_id"] == run.id()),
        "every line names the run"
    );
    let lookups = lines
        .iter()
        .filter(|l| {
            l["cmdlet"] == "Get-Recipient"
                && l["rule"].as_str().is_some_and(|r| r.starts_with("lookup:"))
        })
        .count();
    assert_eq!(
        lookups, 4,
        "each of the two target lookups has a decision line and a call line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_principal_gets_nothing_and_a_remote_error_arrives_typed() {
    let s = setup("calls = 10").await;
    let stranger = s
        .broker
        .begin(
            Principal::inline_script("exo::invoke(\"Remove-Mailbox\", #{})"),
            None,
        )
        .unwrap_err();
    assert_eq!(stranger.kind(), "denied");
    let run = s
        .broker
        .begin(Principal::inline_script(SCRIPT), None)
        .unwrap();
    match s
        .broker
        .invoke(
            &run,
            "Get-Mailbox",
            r#"{"Identity":"nobody-at-all@contoso.onmicrosoft.com"}"#,
        )
        .await
        .unwrap_err()
    {
        GuestError::Remote {
            exception,
            request_id,
            ..
        } => {
            assert_eq!(exception, "ManagementObjectNotFoundException");
            assert!(!request_id.is_empty());
        }
        other => panic!("{other}"),
    }
    let calls = audit_lines(&s);
    assert!(
        calls
            .iter()
            .any(|l| l["kind"] == "call" && l["outcome"]["kind"] == "remote"),
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_when_the_audit_trail_cannot_be_written() {
    let s = setup("calls = 10").await;
    let run = s
        .broker
        .begin(Principal::inline_script(SCRIPT), None)
        .unwrap();
    // Replace the trail with a broker whose trail writes to a full device.
    // /dev/full opens and reads as empty, and every write fails with ENOSPC: a full disk.
    // Its exclusive lock is held by any other test or process using it: wait, boundedly.
    let started = std::time::Instant::now();
    let full = loop {
        match AuditTrail::open(std::path::Path::new("/dev/full"), AuditKey::generate()) {
            Ok(full) => break full,
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                assert!(error.to_string().contains("cannot lock"), "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("/dev/full opens: {error}"),
        }
    };
    let session = rest_session(&s.emu, None);
    let policy = Arc::new(Policy::load(&s.emu.dir.path().join("policy.toml")).unwrap());
    let broken = Broker::new(
        policy,
        Arc::new(session),
        Arc::new(full),
        Duration::from_secs(30),
    );
    let before = s.emu.exosim.counters().invoke_requests;
    let error = broken
        .invoke(&run, "Get-Mailbox", r#"{"ResultSize":1}"#)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "unavailable", "{error}");
    assert_eq!(
        s.emu.exosim.counters().invoke_requests,
        before,
        "fail closed: nothing ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_guest_abandons_still_closes_its_audit_record() {
    let s = setup("calls = 10").await;
    let run = s
        .broker
        .begin(Principal::inline_script(SCRIPT), None)
        .unwrap();
    let mut stream = s
        .broker
        .stream(&run, "Get-Mailbox", r#"{"ResultSize":5}"#)
        .await
        .unwrap();
    let first = s
        .broker
        .next_page(&run, &mut stream)
        .await
        .unwrap()
        .unwrap();
    assert!(!first.is_empty());
    drop(stream);
    let lines = audit_lines(&s);
    let last = lines.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["outcome"]["kind"].as_str()),
        (Some("call"), Some("abandoned")),
        "{last}"
    );
    assert!(warden_audit::verify(&s.audit_path, &s.key).unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_handed_over_as_json_weigh_what_the_objects_weigh() {
    // The wasm path serializes each page once (`invoke_json`) and counts the budget from that
    // text; it must charge exactly what the object path charges, and hand over the same objects.
    let s = setup("calls = 10").await;
    let principal = || Principal::inline_script(SCRIPT);
    let params = r#"{"ResultSize":5}"#;
    let run = s.broker.begin(principal(), None).unwrap();
    let objects = s.broker.invoke(&run, "Get-Mailbox", params).await.unwrap();
    let weight: u64 = objects
        .iter()
        .map(|o| serde_json::to_vec(o).unwrap().len() as u64)
        .sum();
    assert_eq!(run.usage().output_bytes, weight);

    let run = s.broker.begin(principal(), None).unwrap();
    let json = s
        .broker
        .invoke_json(&run, "Get-Mailbox", params)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Map<String, Value>>>(&json).unwrap(),
        objects
    );
    assert_eq!(run.usage().output_bytes, weight, "{json}");

    // A budget one byte short refuses the page on both paths.
    let s = setup(&format!("calls = 10\noutput_bytes = {}", weight - 1)).await;
    let run = s.broker.begin(principal(), None).unwrap();
    let by_objects = s.broker.invoke(&run, "Get-Mailbox", params).await;
    let run = s.broker.begin(principal(), None).unwrap();
    let by_json = s.broker.invoke_json(&run, "Get-Mailbox", params).await;
    for refused in [by_objects.map(|_| ()), by_json.map(|_| ())] {
        assert!(
            matches!(&refused, Err(GuestError::BudgetExhausted { budget, .. }) if budget == "output_bytes"),
            "{refused:?}"
        );
    }
}

/// A wasm guest's pages come from the session as text when nothing shapes them
/// (`Broker::stream_json`): over several pages, the last one cut by `ResultSize`, the guest gets
/// exactly the JSON of the objects a Rhai script gets, annotations stripped, and the run is
/// charged the same objects and bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_as_text_are_the_objects_a_script_gets_and_cost_the_same() {
    let emu = Emulator::start().await;
    let session = rest_session(&emu, Some(7));
    let policy_text = format!(
        r#"version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
[roles.reader.cmdlet.parameters]
ResultSize = {{ range = [1, 100] }}

[[grant]]
id = "test-script"
script_inline_sha256 = "{hash}"
roles = ["reader"]
"#,
        hash = Principal::inline_script(SCRIPT).sha256()
    );
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy_text).unwrap();
    let audit_path = emu.dir.path().join("audit.jsonl");
    let spy = Arc::new(TextSpy {
        session,
        text_pages: Default::default(),
    });
    let broker = Broker::new(
        Arc::new(Policy::load(&policy_path).unwrap()),
        spy.clone(),
        Arc::new(AuditTrail::open(&audit_path, AuditKey::generate()).unwrap()),
        Duration::from_secs(30),
    );
    let call = r#"{"ResultSize":17}"#;

    let as_text = broker
        .begin(Principal::inline_script(SCRIPT), None)
        .unwrap();
    let mut stream = broker
        .stream_json(&as_text, "Get-Mailbox", call)
        .await
        .unwrap();
    let mut pages = Vec::new();
    while let Some(page) = broker.next_page_json(&as_text, &mut stream).await.unwrap() {
        pages.push(page);
    }
    drop(stream);
    assert_eq!(
        spy.text_pages.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "the session's pages came as text"
    );

    let as_objects = broker
        .begin(Principal::inline_script(SCRIPT), None)
        .unwrap();
    let mut stream = broker
        .stream(&as_objects, "Get-Mailbox", call)
        .await
        .unwrap();
    let mut objects = Vec::new();
    while let Some(page) = broker.next_page(&as_objects, &mut stream).await.unwrap() {
        objects.push(page);
    }
    drop(stream);
    assert_eq!(
        spy.text_pages.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "a script's pages came as text"
    );

    assert_eq!(pages.len(), 3, "7 + 7 + 3 objects");
    let expected: Vec<String> = objects
        .iter()
        .map(|page| serde_json::to_string(page).unwrap())
        .collect();
    assert_eq!(pages, expected);
    let all = pages.concat();
    assert!(
        !all.contains("@odata.") && !all.contains("@data."),
        "an annotation reached the guest"
    );
    let (text, objects) = (as_text.usage(), as_objects.usage());
    assert_eq!(
        (text.objects, text.output_bytes),
        (17, objects.output_bytes)
    );
    assert_eq!(objects.objects, 17);
}

/// The REST session, counting the pages it answers as text.
#[derive(Debug)]
struct TextSpy {
    session: ExchangeSession,
    text_pages: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug)]
struct SpiedPages {
    pages: Box<dyn warden_exchange::PageStream>,
    text_pages: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl warden_exchange::PageStream for SpiedPages {
    async fn next_page(&mut self) -> warden_exchange::Result<Option<warden_exchange::Page>> {
        let page = self.pages.next_page().await?;
        if page.as_ref().is_some_and(|page| page.text.is_some()) {
            self.text_pages
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(page)
    }
}

impl warden_exchange::CmdletRunner for TextSpy {
    fn start(
        &self,
        invocation: warden_exchange::Invocation,
    ) -> Box<dyn warden_exchange::PageStream> {
        Box::new(SpiedPages {
            pages: warden_exchange::CmdletRunner::start(&self.session, invocation),
            text_pages: self.text_pages.clone(),
        })
    }
}
