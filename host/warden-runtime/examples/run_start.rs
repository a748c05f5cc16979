//! The per-run start cost of BENCHMARKS.md section 3, warden side only, without exosim: the
//! probe's `echo-args` (no host call) run through `PluginHost::run` — broker `begin` (grant
//! lookup, audit line), a fresh store, instantiate, `run`, the run's end (audit line), report.
//!
//! ```sh
//! cargo run --example run_start -p warden-runtime -- target/guests/wasm32-wasip2/release/probe.wasm [runs]
//! ```
//!
//! Prints the median and the 10th/90th percentiles in µs.

use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{CmdletRunner, Invocation, PageStream};
use warden_policy::Policy;
use warden_runtime::{GuestOutput, PluginHost, RunOutcome, RunRequest, RuntimeLimits};

/// `echo-args` makes no call: a runner that is never asked.
#[derive(Debug)]
struct NoCalls;

impl CmdletRunner for NoCalls {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        unreachable!("echo-args made a call: {}", invocation.cmdlet)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let probe = args.next().expect("give the path of probe.wasm");
    let runs: usize = args.next().map_or(2000, |n| n.parse().expect("runs"));
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(RuntimeLimits::default(), None).unwrap();
    let plugin = host
        .load_bytes("probe.wasm", std::fs::read(&probe).unwrap())
        .unwrap();
    let policy = format!(
        "version = 1\n[roles.none]\n[[roles.none.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"probe\"\nplugin = \"{}\"\nsha256 = \"{}\"\nroles = [\"none\"]\n",
        plugin.name(),
        plugin.sha256()
    );
    let policy = Policy::parse(&policy, &dir.path().join("policy.toml")).unwrap();
    let audit = AuditTrail::open(
        &dir.path().join("audit.jsonl"),
        AuditKey::from_bytes([1; 32]),
    )
    .unwrap();
    let broker = Broker::new(
        Arc::new(policy),
        Arc::new(NoCalls),
        Arc::new(audit),
        Duration::from_secs(30),
    );
    let once = || async {
        let started = Instant::now();
        let report = host
            .run(&plugin, &broker, RunRequest::new(vec!["echo-args".into()]))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(
            report.outcome,
            RunOutcome::Completed {
                output: GuestOutput::Text("[]".into())
            }
        );
        elapsed
    };
    for _ in 0..100 {
        once().await;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(once().await);
    }
    times.sort();
    let at = |p: usize| times[(times.len() - 1) * p / 100].as_secs_f64() * 1e6;
    println!(
        "per-run start over {runs} runs: median {:.1} µs (p10 {:.1}, p90 {:.1})",
        at(50),
        at(10),
        at(90)
    );
}
