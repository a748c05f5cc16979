//! What the refusal bench and the `refusals` example (run under callgrind) share: a broker
//! whose policy grants `Get-Mailbox` only, a real audit trail file, and one refused call
//! driven to completion without a runtime (a refusal never waits on anything).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::{Broker, Run, RunEnd};
use warden_exchange::{CmdletRunner, Invocation, PageStream};
use warden_policy::{Policy, Principal};

/// Refusals per run: under the broker's `REFUSAL_LINES_PER_RUN`, so every one writes its line.
pub const REFUSALS_PER_RUN: u64 = 200;

/// The cmdlet and parameters of the refused call (granted: `Get-Mailbox` only).
pub const REFUSED: (&str, &str) = (
    "Set-Mailbox",
    r#"{"Identity":"alex@contoso.com","DisplayName":"Alex"}"#,
);

const POLICY: &str = r#"
version = 1

[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]
[roles.reader.cmdlet.parameters]
Identity = { length = [1, 256] }

[[grant]]
id = "bench"
plugin = "bench"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["reader"]
budgets = { calls = 1000000000 }
"#;

/// A refused call never reaches the runner.
#[derive(Debug)]
struct NoCalls;

impl CmdletRunner for NoCalls {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        unreachable!("a refused call reached the runner: {}", invocation.cmdlet)
    }
}

/// A broker recording to a fresh trail at `trail` (removed first), and that trail.
pub fn broker(trail: &Path) -> (Broker, Arc<AuditTrail>) {
    let _ = std::fs::remove_file(trail);
    let policy = Policy::parse(POLICY, Path::new("bench-policy.toml")).unwrap();
    let audit = Arc::new(AuditTrail::open(trail, AuditKey::from_bytes([7; 32])).unwrap());
    let broker = Broker::new(
        Arc::new(policy),
        Arc::new(NoCalls),
        audit.clone(),
        Duration::from_secs(30),
    );
    (broker, audit)
}

/// The principal the policy grants.
pub fn principal() -> Principal {
    Principal::Plugin {
        name: "bench".into(),
        sha256: "0".repeat(64),
        signature: None,
    }
}

/// Begins a run (its first audit line).
pub fn begin(broker: &Broker) -> Run {
    broker.begin(principal(), None).unwrap()
}

/// Ends a run (its last audit line).
pub fn end(broker: &Broker, run: &Run) {
    broker
        .end(run, &RunEnd::Completed { output_bytes: 0 })
        .unwrap();
}

/// One refused call through `Broker::invoke_json`, as both guest runtimes make it.
#[inline(never)]
pub fn refuse(broker: &Broker, run: &Run, cmdlet: &str, parameters: &str) {
    let call = std::pin::pin!(broker.invoke_json(run, cmdlet, parameters));
    let Poll::Ready(result) = call.poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("a refusal waited");
    };
    assert!(result.is_err(), "the call was not refused");
}
