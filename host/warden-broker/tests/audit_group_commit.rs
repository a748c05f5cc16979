//! The broker's side of the trail's group commit: an allowed call is on record (with every
//! refusal queued before it) when it is sent; a run's end writes all of its lines before it
//! returns; a failing trail refuses allowed calls and fails the run's end.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_audit::{AuditKey, AuditTrail, verify};
use warden_broker::{Broker, RunEnd};
use warden_exchange::{CmdletRunner, Invocation, Page, PageStream};
use warden_policy::{Policy, Principal};

const POLICY: &str = r#"
version = 1

[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName"]

[[grant]]
id = "test"
plugin = "test"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["reader"]
"#;

fn key() -> AuditKey {
    AuditKey::from_bytes([5; 32])
}

fn principal() -> Principal {
    Principal::Plugin {
        name: "test".into(),
        sha256: "0".repeat(64),
        signature: None,
    }
}

/// A line of the trail as these tests read it: its rule (or kind) and whether it allowed.
type Line = (String, Option<bool>);

/// The (rule, allowed) of every line of the trail, in order.
fn lines(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            let rule = line["rule"]
                .as_str()
                .unwrap_or(line["kind"].as_str().unwrap());
            (rule.to_owned(), line["allowed"].as_bool())
        })
        .collect()
}

/// Runs every call with one empty page; when a call is sent, notes what the trail held.
#[derive(Debug)]
struct Witness {
    trail: PathBuf,
    /// The trail's lines at each call's sending.
    seen: Mutex<Vec<Vec<Line>>>,
    sent: AtomicUsize,
}

#[derive(Debug)]
struct OnePage(bool);

#[async_trait]
impl PageStream for OnePage {
    async fn next_page(&mut self) -> warden_exchange::Result<Option<Page>> {
        Ok(std::mem::take(&mut self.0).then(|| Page {
            objects: vec![Map::new()],
            ..Page::default()
        }))
    }
}

impl CmdletRunner for Witness {
    fn start(&self, _invocation: Invocation) -> Box<dyn PageStream> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(lines(&self.trail));
        Box::new(OnePage(true))
    }
}

fn broker(trail: Arc<AuditTrail>, witness: Arc<Witness>) -> Broker {
    let policy = Policy::parse(POLICY, Path::new("test-policy.toml")).unwrap();
    Broker::new(Arc::new(policy), witness, trail, Duration::from_secs(30))
}

fn witness(trail: &Path) -> Arc<Witness> {
    Arc::new(Witness {
        trail: trail.to_owned(),
        seen: Mutex::new(Vec::new()),
        sent: AtomicUsize::new(0),
    })
}

#[tokio::test]
async fn an_allowed_call_is_on_record_with_the_refusals_before_it_when_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let witness = witness(&path);
    let broker = broker(
        Arc::new(AuditTrail::open(&path, key()).unwrap()),
        witness.clone(),
    );
    let run = broker.begin(principal(), None).unwrap();
    for _ in 0..3 {
        let refused = broker
            .invoke(&run, "Set-Mailbox", r#"{"Identity":"x"}"#)
            .await;
        assert_eq!(refused.unwrap_err().kind(), "denied");
    }
    broker.invoke(&run, "Get-Mailbox", "{}").await.unwrap();
    let seen = witness.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let at_send = &seen[0];
    // The run's begin, the three refusals (queued, written with the decision), the decision.
    assert_eq!(at_send.len(), 5, "{at_send:?}");
    assert!(
        at_send[1..4]
            .iter()
            .all(|(_, allowed)| *allowed == Some(false))
    );
    assert_eq!(at_send[4].1, Some(true), "{at_send:?}");
    assert!(at_send[4].0.contains("Get-Mailbox"), "{at_send:?}");
}

#[tokio::test]
async fn a_run_ends_only_after_its_lines_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let broker = broker(
        Arc::new(AuditTrail::open(&path, key()).unwrap()),
        witness(&path),
    );
    let run = broker.begin(principal(), None).unwrap();
    broker.invoke(&run, "Get-Mailbox", "{}").await.unwrap();
    let refused = broker.invoke(&run, "Set-Mailbox", "{}").await;
    assert_eq!(refused.unwrap_err().kind(), "denied");
    broker
        .end(&run, &RunEnd::Completed { output_bytes: 2 })
        .unwrap();
    // Read at once: the call's closing line and the refusal (both queued) are in the file,
    // before the run's end.
    let written = lines(&path);
    let rules: Vec<&str> = written.iter().map(|(rule, _)| rule.as_str()).collect();
    assert_eq!(rules.len(), 5, "{written:?}");
    assert!(rules[0].starts_with("grant:"), "{written:?}");
    assert_eq!(
        written[1].1,
        Some(true),
        "the allowed decision: {written:?}"
    );
    assert_eq!(written[3].1, Some(false), "the refusal: {written:?}");
    assert_eq!(rules[4], "run-end:completed", "{written:?}");
    let call: Value = serde_json::from_str(
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .nth(2)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(call["kind"], "call");
    assert!(verify(&path, &key()).unwrap().ok());
}

/// A trail on /dev/full, which opens and fails every write with ENOSPC (a full disk). Its
/// lock is held by any other test (or process) using it: wait for it.
#[cfg(target_os = "linux")]
fn full_disk() -> AuditTrail {
    let started = Instant::now();
    loop {
        match AuditTrail::open(Path::new("/dev/full"), key()) {
            Ok(trail) => return trail,
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// A run begun with a working trail, then decided by a broker whose trail is a full disk.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failing_trail_refuses_allowed_calls_and_fails_the_runs_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let good = broker(
        Arc::new(AuditTrail::open(&path, key()).unwrap()),
        witness(&path),
    );
    let run = good.begin(principal(), None).unwrap();
    let full = Arc::new(full_disk());
    let witness = witness(&path);
    let broken = broker(full.clone(), witness.clone());
    // A refusal is queued: the guest gets its refusal, as with a working trail.
    let refused = broken.invoke(&run, "Set-Mailbox", "{}").await;
    assert_eq!(refused.unwrap_err().kind(), "denied");
    // An allowed call writes (the queue with its decision), fails, and is never sent.
    let error = broken.invoke(&run, "Get-Mailbox", "{}").await.unwrap_err();
    assert_eq!(error.kind(), "unavailable", "{error}");
    assert_eq!(
        witness.sent.load(Ordering::SeqCst),
        0,
        "fail closed: nothing ran"
    );
    // From then on every record fails, a refusal's too, and so does the run's end.
    let error = broken.invoke(&run, "Set-Mailbox", "{}").await.unwrap_err();
    assert_eq!(error.kind(), "unavailable", "{error}");
    assert!(
        broken
            .end(&run, &RunEnd::Completed { output_bytes: 0 })
            .is_err()
    );
}

/// A granted run's begin is queued, so it begins on a full disk too; but its first allowed
/// call writes that queue, fails, and is never sent, and the run cannot end.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_run_begun_on_a_failing_trail_sends_nothing_and_cannot_end() {
    let dir = tempfile::tempdir().unwrap();
    let witness = witness(&dir.path().join("unused.jsonl"));
    let broken = broker(Arc::new(full_disk()), witness.clone());
    let run = broken.begin(principal(), None).unwrap();
    let error = broken.invoke(&run, "Get-Mailbox", "{}").await.unwrap_err();
    assert_eq!(error.kind(), "unavailable", "{error}");
    assert_eq!(
        witness.sent.load(Ordering::SeqCst),
        0,
        "fail closed: nothing ran"
    );
    assert!(
        broken
            .end(&run, &RunEnd::Completed { output_bytes: 0 })
            .is_err()
    );
    // A failed trail refuses even a begin from then on.
    let refused = broken
        .begin(principal(), None)
        .expect_err("a begin on a failed trail");
    assert_eq!(refused.kind(), "unavailable", "{refused}");
}

/// A trivial run (no call) puts its begin and end in the file, in order, by the time `end`
/// returns.
#[tokio::test]
async fn a_run_without_calls_has_its_begin_and_end_on_record_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let broker = broker(
        Arc::new(AuditTrail::open(&path, key()).unwrap()),
        witness(&path),
    );
    let run = broker.begin(principal(), None).unwrap();
    broker
        .end(&run, &RunEnd::Completed { output_bytes: 0 })
        .unwrap();
    let written = lines(&path);
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written[0].0.starts_with("grant:"), "{written:?}");
    assert_eq!(written[1].0, "run-end:completed", "{written:?}");
    assert!(verify(&path, &key()).unwrap().ok());
}

/// The writer thread's failed batch (nobody waiting on it) stops the next call too.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_batch_the_writer_fails_stops_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let good = broker(
        Arc::new(AuditTrail::open(&path, key()).unwrap()),
        witness(&path),
    );
    let run = good.begin(principal(), None).unwrap();
    let full = Arc::new(full_disk());
    let witness = witness(&path);
    let broken = broker(full.clone(), witness.clone());
    let refused = broken.invoke(&run, "Set-Mailbox", "{}").await;
    assert_eq!(refused.unwrap_err().kind(), "denied");
    // Wait for the writer to try (and fail) the queued refusal.
    let started = Instant::now();
    while full
        .record_later(warden_audit::Event::fleet(
            "f",
            &principal(),
            warden_audit::FleetAction::Cancelled { by: "t".into() },
        ))
        .is_ok()
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the writer never failed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let error = broken.invoke(&run, "Set-Mailbox", "{}").await.unwrap_err();
    assert_eq!(error.kind(), "unavailable", "{error}");
    let error = broken.invoke(&run, "Get-Mailbox", "{}").await.unwrap_err();
    assert_eq!(error.kind(), "unavailable", "{error}");
    assert_eq!(witness.sent.load(Ordering::SeqCst), 0);
}
