//! The audit line every guest call waits on (twice: the decision, then the call):
//! `AuditTrail::record` — serialise, keyed-hash sensitive values, MAC chained to the previous
//! line, one `write` to the trail file (no fsync); and what each durability setting costs per
//! line, alone or in a group commit's batch. Each sample writes to a fresh trail that is
//! deleted afterwards, so millions of iterations do not fill the disk.
//! Run: `cargo bench -p warden-audit --bench record`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use warden_audit::{AuditKey, AuditTrail, Durability, Event, Outcome};
use warden_policy::{Decision, Principal};

fn decision(parameters: Value, sensitive: Vec<String>) -> Decision {
    let parameters: Map<String, Value> = parameters.as_object().unwrap().clone();
    Decision {
        allowed: true,
        rule: "role:reader/Get-Mailbox".into(),
        reason: "allowed by role reader".into(),
        cmdlet: "Get-Mailbox".into(),
        parameters,
        sensitive,
        write: false,
    }
}

/// Times `iters` records of `make()`'s event into a fresh trail at `path`, then deletes it.
fn timed(path: &Path, iters: u64, make: impl Fn() -> Event) -> Duration {
    let _ = std::fs::remove_file(path);
    let trail = AuditTrail::open(path, AuditKey::from_bytes([7; 32])).unwrap();
    let started = Instant::now();
    for _ in 0..iters {
        trail.record(black_box(&make())).unwrap();
    }
    let elapsed = started.elapsed();
    drop(trail);
    let _ = std::fs::remove_file(path);
    elapsed
}

fn record(c: &mut Criterion) {
    // Beside the bench executable (the build's disk), not in /tmp, which may be a tmpfs where
    // fsync is free.
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
    let path = dir.path().join("trail.jsonl");
    let principal = Principal::Plugin {
        name: "mailbox-report".into(),
        sha256: "c87d07610b712fa8ee4d50492f8be8bd75d1a1ab56d8fd606e1d6a8e9cecdfa9".into(),
        signature: None,
    };
    let run = "34b4f15a-9a4c-4c1e-8d0e-2f1d2b7c9e11";
    let read = decision(json!({"ResultSize": 10}), Vec::new());
    let secret = decision(
        json!({"Identity": "alex@contoso.com", "Password": "Correct-Horse-Battery-9"}),
        vec!["Password".into()],
    );

    let mut group = c.benchmark_group("audit record");
    group.bench_function("decision line (Get-Mailbox ResultSize)", |b| {
        b.iter_custom(|iters| timed(&path, iters, || Event::decision(run, &principal, &read)))
    });
    group.bench_function("call line (outcome, duration, counts)", |b| {
        b.iter_custom(|iters| {
            timed(&path, iters, || {
                Event::call(
                    run,
                    &principal,
                    &read,
                    Outcome::Ok,
                    Duration::from_millis(3),
                    10,
                    14_000,
                )
            })
        })
    });
    group.bench_function("decision line with a keyed-hashed sensitive value", |b| {
        b.iter_custom(|iters| timed(&path, iters, || Event::decision(run, &principal, &secret)))
    });
    group.finish();

    // What durability costs per line. The default writes each line (or each batch) to the file
    // before the record that made it returns (it survives the process, not a power cut) and
    // fsyncs nothing; `Durability::Sync` fsyncs every write, so it survives a power cut too.
    // A batch is what group commit writes: queued lines (`record_later`) and the `record` that
    // takes them along, in one `write` (and one fsync).
    let mut group = c.benchmark_group("audit durability");
    group.bench_function("write per line, no fsync (default)", |b| {
        b.iter_custom(|iters| timed(&path, iters, || Event::decision(run, &principal, &read)))
    });
    for (batch, durability) in [
        (1u64, Durability::Sync),
        (16, Durability::Write),
        (16, Durability::Sync),
        (256, Durability::Write),
        (256, Durability::Sync),
    ] {
        let name = match (batch, durability) {
            (1, _) => "write + fsync per line".to_owned(),
            (n, Durability::Write) => format!("batch of {n} lines, one write, no fsync"),
            (n, Durability::Sync) => format!("batch of {n} lines, one write + fsync"),
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let _ = std::fs::remove_file(&path);
                let trail = AuditTrail::open(&path, AuditKey::from_bytes([7; 32]))
                    .unwrap()
                    .with_durability(durability);
                let started = Instant::now();
                for i in 1..=iters {
                    let event = Event::decision(run, &principal, &read);
                    if i % batch == 0 {
                        trail.record(black_box(&event)).unwrap();
                    } else {
                        trail.record_later(black_box(event)).unwrap();
                    }
                }
                trail.flush().unwrap();
                let elapsed = started.elapsed();
                drop(trail);
                let _ = std::fs::remove_file(&path);
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
