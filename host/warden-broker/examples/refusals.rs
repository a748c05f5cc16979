//! A fixed number of refused calls (or of their policy checks, or of their audit lines), for
//! `valgrind --tool=callgrind`, whose instruction counts repeat on a busy machine.
//! `bench/callgrind/refusal.sh` runs it; `bench/callgrind/README.md` has the numbers.
//!
//! ```sh
//! cargo build --profile bench --example refusals -p warden-broker
//! target/release/examples/refusals refuse|check|line|grant N [unknown]
//! ```
//!
//! - `refuse`: one refused call through `Broker::invoke_json`, its audit line included;
//! - `check`: its policy decision alone (`Grant::check`);
//! - `line`: an audit line written inline (`Event::decision` + `AuditTrail::record`: what an
//!   allowed call's decision line costs; a refusal's line is queued with
//!   `AuditTrail::record_later`, and its writing is counted apart, by `write_through`'s name,
//!   as refusal.sh's `writer`);
//! - `grant`: a run's grant (`Policy::grant_for`, once per run: it builds the grant's
//!   entries table; the deny rules' index is the policy's, built at parse).
//!
//! The call is `Set-Mailbox` (a known cmdlet the grant leaves out); with `unknown`, a cmdlet
//! nobody knows (`Frobnicate-Widget`, whose refusal looks for a "did you mean").
//!
//! Only `measured` is meant to be counted (`--toggle-collect=*measured*`); the difference of
//! two counts with different N, over the difference of N, is the cost of one: setup and
//! first-use costs cancel.

#[path = "../benches/setup/mod.rs"]
mod setup;

use std::hint::black_box;
use warden_audit::{AuditTrail, Event};
use warden_broker::{Broker, Run};
use warden_policy::Decision;

/// The unknown cmdlet's call.
const UNKNOWN: (&str, &str) = ("Frobnicate-Widget", r#"{"Identity":"x"}"#);

#[inline(never)]
fn measured(
    what: &str,
    call: (&str, &str),
    broker: &Broker,
    trail: &AuditTrail,
    run: &Run,
    refused: &Decision,
) {
    let (cmdlet, parameters) = call;
    match what {
        "refuse" => setup::refuse(broker, run, black_box(cmdlet), black_box(parameters)),
        "check" => {
            black_box(run.grant().check(black_box(cmdlet), black_box(parameters)));
        }
        "line" => {
            let event = Event::decision(run.id(), run.principal(), black_box(refused));
            trail.record(&event).unwrap();
        }
        "grant" => {
            black_box(broker.policy().grant_for(run.principal(), None).unwrap());
        }
        other => panic!("unknown mode {other}: refuse, check, line or grant"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "refuse".into());
    let n: u64 = args.next().map_or(1000, |n| n.parse().expect("N"));
    let call = match args.next().as_deref() {
        None => setup::REFUSED,
        Some("unknown") => UNKNOWN,
        Some(other) => panic!("unknown call {other}: leave it out, or say unknown"),
    };
    let dir = tempfile::tempdir().unwrap();
    let (broker, trail) = setup::broker(&dir.path().join("trail.jsonl"));
    let mut left = n;
    while left > 0 {
        let run = setup::begin(&broker);
        let refused = run.grant().check(call.0, call.1);
        let batch = left.min(setup::REFUSALS_PER_RUN);
        for _ in 0..batch {
            measured(&what, call, &broker, &trail, &run, &refused);
        }
        setup::end(&broker, &run);
        left -= batch;
    }
}
