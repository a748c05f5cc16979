//! A dry run sends no write by any path: every entry point a guest runtime uses (`invoke`,
//! `invoke_json`, `stream` + `next_page`/`next_page_json`, `invoke_batch`,
//! `invoke_batch_json`) with a read, a write, and cmdlets whose verb is not known to be a read
//! (`Search-`, an unknown verb). A runner that records every invocation it is given is the
//! witness: under dry run it sees reads only; the same calls without dry run reach it.

use async_trait::async_trait;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::{Broker, DRY_RUN_RULE, GuestError, PlannedWrites, Run};
use warden_exchange::rest::batch::{BatchOutput, BatchResult};
use warden_exchange::{CmdletRunner, Invocation, Page, PageStream};
use warden_policy::{Policy, Principal};

const POLICY: &str = r#"
version = 1

[roles.all]
[[roles.all.cmdlet]]
name = "Get-Mailbox"
[roles.all.cmdlet.parameters]
Identity = { length = [1, 64] }
[[roles.all.cmdlet]]
name = "Set-Mailbox"
[roles.all.cmdlet.parameters]
Identity = { length = [1, 64] }
DisplayName = { length = [1, 64] }
[[roles.all.cmdlet]]
name = "Search-Mailbox"
[roles.all.cmdlet.parameters]
Identity = { length = [1, 64] }
[[roles.all.cmdlet]]
name = "Frobnicate-Widget"
[roles.all.cmdlet.parameters]
Identity = { length = [1, 64] }

[[grant]]
id = "dry"
plugin = "dry"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["all"]
budgets = { calls = 1000, writes = 1000 }
"#;

/// Records the cmdlet of every invocation it is given, by `start` or `run_batch`.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<String>>);

impl Recording {
    fn sent(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Debug)]
struct NoPages;

#[async_trait]
impl PageStream for NoPages {
    async fn next_page(&mut self) -> warden_exchange::Result<Option<Page>> {
        Ok(None)
    }
}

#[async_trait]
impl CmdletRunner for Recording {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        self.0.lock().unwrap().push(invocation.cmdlet);
        Box::new(NoPages)
    }

    async fn run_batch(
        &self,
        invocations: Vec<Invocation>,
        _patience: Duration,
    ) -> Vec<BatchResult> {
        invocations
            .into_iter()
            .map(|invocation| {
                self.0.lock().unwrap().push(invocation.cmdlet);
                Ok(BatchOutput::default())
            })
            .collect()
    }
}

const READ: (&str, &str) = ("Get-Mailbox", r#"{"Identity":"alex"}"#);
const WRITES: [(&str, &str); 3] = [
    ("Set-Mailbox", r#"{"Identity":"alex","DisplayName":"Alex"}"#),
    ("Search-Mailbox", r#"{"Identity":"alex"}"#),
    ("Frobnicate-Widget", r#"{"Identity":"alex"}"#),
];

fn is_dry_run_refusal<T>(result: Result<T, GuestError>) -> bool {
    matches!(result, Err(GuestError::Denied { rule, .. }) if rule == DRY_RUN_RULE)
}

/// Every entry point with the read and each write; returns whether each write was refused as
/// a dry run's (`true` for all, under dry run).
async fn every_entry_point(broker: &Broker, run: &Run) -> Vec<bool> {
    let mut refused = Vec::new();
    for (cmdlet, parameters) in [READ].into_iter().chain(WRITES) {
        let write = cmdlet != READ.0;
        let outcomes = [
            is_dry_run_refusal(broker.invoke(run, cmdlet, parameters).await),
            is_dry_run_refusal(broker.invoke_json(run, cmdlet, parameters).await),
            match broker.stream(run, cmdlet, parameters).await {
                Ok(mut stream) => {
                    assert!(broker.next_page(run, &mut stream).await.is_ok());
                    false
                }
                Err(error) => is_dry_run_refusal::<()>(Err(error)),
            },
            match broker.stream(run, cmdlet, parameters).await {
                Ok(mut stream) => {
                    assert!(broker.next_page_json(run, &mut stream).await.is_ok());
                    false
                }
                Err(error) => is_dry_run_refusal::<()>(Err(error)),
            },
        ];
        if write {
            refused.extend(outcomes);
        } else {
            assert_eq!(outcomes, [false; 4], "the read was refused");
        }
    }
    // A batch of the read and every write, both ways a guest sends one.
    let batch: Vec<(String, String)> = [READ]
        .into_iter()
        .chain(WRITES)
        .map(|(c, p)| (c.to_owned(), p.to_owned()))
        .collect();
    let results = broker.invoke_batch(run, &batch).await.unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    refused.extend(results.into_iter().skip(1).map(is_dry_run_refusal));
    let results = broker.invoke_batch_json(run, &batch).await.unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    refused.extend(results.into_iter().skip(1).map(is_dry_run_refusal));
    refused
}

fn principal() -> Principal {
    Principal::Plugin {
        name: "dry".into(),
        sha256: "0".repeat(64),
        signature: None,
    }
}

fn broker(dir: &Path, runner: Arc<Recording>) -> Broker {
    let policy = Policy::parse(POLICY, Path::new("dry-policy.toml")).unwrap();
    let audit = AuditTrail::open(&dir.join("trail.jsonl"), AuditKey::from_bytes([7; 32])).unwrap();
    Broker::new(
        Arc::new(policy),
        runner,
        Arc::new(audit),
        Duration::from_secs(30),
    )
}

#[tokio::test]
async fn a_dry_run_sends_no_write_through_any_entry_point() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Recording::default());
    let planned = Arc::new(PlannedWrites::default());
    let broker = broker(dir.path(), runner.clone()).dry_run(planned.clone());
    let run = broker.begin(principal(), None).unwrap();
    let refused = every_entry_point(&broker, &run).await;
    assert!(refused.iter().all(|r| *r), "{refused:?}");
    let sent = runner.sent();
    // The reads went out (so the runner is on the path), and nothing else did.
    assert_eq!(sent.iter().filter(|c| *c == READ.0).count(), 6, "{sent:?}");
    for cmdlet in &sent {
        assert!(
            !warden_vocab::CmdletKind::of(cmdlet).is_write(),
            "a write reached the runner: {sent:?}"
        );
    }
    // Each refused write was planned: 4 single-call entry points and 2 batches, 3 writes each.
    let planned = planned.list();
    assert_eq!(planned.len(), 18, "{planned:?}");
    for (write, _) in WRITES {
        assert_eq!(planned.iter().filter(|p| p.cmdlet == write).count(), 6);
    }
}

/// The control: the same calls without dry run reach the runner, writes included.
#[tokio::test]
async fn without_dry_run_the_same_writes_reach_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(Recording::default());
    let broker = broker(dir.path(), runner.clone());
    let run = broker.begin(principal(), None).unwrap();
    let refused = every_entry_point(&broker, &run).await;
    assert!(refused.iter().all(|r| !*r), "{refused:?}");
    let sent = runner.sent();
    for (write, _) in WRITES {
        assert_eq!(sent.iter().filter(|c| *c == write).count(), 6, "{sent:?}");
    }
}
