//! P4 of BENCHMARKS.md without a guest: one call the policy refuses, through
//! `Broker::invoke_json` (the entry both guest runtimes use), its audit line written to a real
//! trail file in a temp dir. Each sample writes to a fresh trail; a run is begun every
//! `REFUSALS_PER_RUN` refusals outside the timed part, so every timed refusal writes its whole
//! line. The refusal's line is queued (group commit): its run's end, which writes what is still
//! queued, is timed with the refusals; what the trail's writer thread writes meanwhile runs on
//! another thread (its instructions: `bench/callgrind/refusal.sh`, `writer`).
//! Run: `cargo bench -p warden-broker --bench refusal`.

mod setup;

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn refusal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail.jsonl");
    let mut group = c.benchmark_group("broker refusal");
    let cases = [
        ("cmdlet not granted (Set-Mailbox)", setup::REFUSED),
        (
            "unknown cmdlet (Frobnicate-Widget)",
            ("Frobnicate-Widget", r#"{"Identity":"x"}"#),
        ),
        (
            "granted cmdlet, parameter not listed",
            ("Get-Mailbox", r#"{"Filter":"Name -eq 'x'"}"#),
        ),
    ];
    for (name, (cmdlet, parameters)) in cases {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (broker, _trail) = setup::broker(&trail);
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(setup::REFUSALS_PER_RUN);
                    let run = setup::begin(&broker);
                    let started = Instant::now();
                    for _ in 0..n {
                        setup::refuse(&broker, &run, black_box(cmdlet), black_box(parameters));
                    }
                    // Timed too: the run's end writes the refusals' lines still queued.
                    setup::end(&broker, &run);
                    elapsed += started.elapsed();
                    left -= n;
                }
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, refusal);
criterion_main!(benches);
