//! Hostile Rhai scripts against the memory and CPU budgets, through the broker and exosim:
//! memory held where Rhai's size limits do not look (closure captures, map keys, values set
//! by index, call frames, host-call results) is counted by the allocator and stops the run at
//! its limit, and a few slow operations cannot carry a run far past its CPU budget. The
//! allocator's own count is the witness (`RunReport::peak_memory_bytes`), not timing.

use crate::guests::{GuestHost, Options, guest_host, output_json};
use serde_json::json;
use std::time::Duration;
use warden_runtime::{RunOutcome, RunReport, StopReason};

const MIB: u64 = 1024 * 1024;

/// Each script holds ~1 MiB strings, 200 at most (so an engine that does not count them ends
/// the script, not the machine, and the test fails on the outcome).
fn holding(shape: &str) -> String {
    format!(
        r#"let s = ""; s.pad(1000000, 'x');
           let keep = []; let m = #{{}}; let slots = []; slots.pad(200, ());
           for i in 0..200 {{ {shape} }}
           "survived""#
    )
}

pub(crate) fn shapes() -> Vec<(&'static str, String)> {
    vec![
        (
            "closure captures",
            holding("let t = s + i; keep.push(|| t);"),
        ),
        ("map keys", holding("m[s + i] = i;")),
        (
            "nested arrays set by index",
            holding("slots[i] = [[s + i]];"),
        ),
        (
            "a string grown in a loop, kept by a closure",
            holding(
                "let t = \"\"; for j in 0..10 { t += s.sub_string(0, 100000); } keep.push(|| t);",
            ),
        ),
        (
            "shared copies of a captured array",
            holding("let t = [s + i]; let f = || t; keep.push(f); keep.push(f.curry(t));"),
        ),
        (
            "host-call results kept by closures",
            holding(
                "let r = exo::invoke(\"Get-Mailbox\"); \
                 let t = s + r.len() + i; keep.push(|| [r, t]);",
            ),
        ),
    ]
}

async fn host(budgets: &'static str, scripts: Vec<String>) -> GuestHost {
    guest_host(Options {
        budgets,
        scripts,
        ..Default::default()
    })
    .await
}

fn stopped(report: &RunReport) -> &StopReason {
    match &report.outcome {
        RunOutcome::Stopped { reason } => reason,
        other => panic!("the run was not stopped: {other:?}"),
    }
}

fn run_end(host: &GuestHost, run_id: &str) -> String {
    host.audit()
        .into_iter()
        .filter(|l| l["run_id"] == run_id)
        .filter_map(|l| l["rule"].as_str().map(str::to_owned))
        .rfind(|r| r.starts_with("run-end:"))
        .unwrap_or_else(|| panic!("run {run_id} has no run-end line"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_held_in_any_shape_is_stopped_at_the_limit() {
    let shapes = shapes();
    let scripts = shapes.iter().map(|(_, s)| s.clone()).collect();
    let host = host("memory_mib = 16\ncalls = 1000", scripts).await;
    let mut failures = Vec::new();
    for (name, source) in &shapes {
        let (report, _) = host.script(source, &[]).await;
        let peak = report
            .peak_memory_bytes
            .expect("a script run reports its peak");
        eprintln!(
            "{name}: peak {:.2} MiB, {:?}",
            peak as f64 / MIB as f64,
            report.outcome
        );
        if !matches!(stopped(&report), StopReason::Memory { limit_bytes } if *limit_bytes == 16 * MIB)
        {
            failures.push(format!("{name}: {:?}", report.outcome));
        }
        // At most one operation past the limit: here a ~1 MiB string and its copy.
        if peak > 16 * MIB + 4 * MIB {
            failures.push(format!("{name}: peaked at {peak} bytes"));
        }
        if run_end(&host, &report.run_id) != "run-end:stopped" {
            failures.push(format!("{name}: the trail does not say stopped"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_script_is_not_troubled_by_the_limits() {
    let source = r#"let names = [];
        exo::for_each("Get-Mailbox", |m| names.push(m.DisplayName));
        let index = #{}; for n in names { index[n] = n.len(); }
        let s = ""; s.pad(10000, 'x');
        [names.len(), index.len(), s.split("x").len()]"#;
    let host = host(
        "memory_mib = 16\ncpu_secs = 5\ncalls = 10",
        vec![source.to_owned()],
    )
    .await;
    let (report, _) = host.script(source, &[]).await;
    assert_eq!(output_json(&report), json!([25, 25, 10001]));
    let peak = report.peak_memory_bytes.unwrap();
    assert!(peak < 8 * MIB, "peak {peak}");
    assert!(report.cpu_used.unwrap() < Duration::from_secs(5));
}

/// One slow operation at a time: a 16 MB `pad`, an 8 MB `replace` (250,000 matches), a sort of
/// a large array.
/// Each takes milliseconds to tens of milliseconds; together they run far past the budget
/// unless the clock is read between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_operations_stop_close_to_the_cpu_budget() {
    let scripts = vec![
        r#"loop { let t = ""; t.pad(16000000, 'x'); }"#.to_owned(),
        r#"let s = ""; s.pad(8000000, "xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); loop { let t = s; t.replace("x", "yy"); }"#
            .to_owned(),
        r#"let a = []; a.pad(300000, 0); for i in 0..300000 { a[i] = (i * 7919) % 100003; }
           loop { let b = a; b.sort(); }"#
            .to_owned(),
    ];
    let host = host("cpu_secs = 1\nmemory_mib = 512", scripts.clone()).await;
    for source in &scripts {
        let (report, _) = host.script(source, &[]).await;
        assert!(
            matches!(stopped(&report), StopReason::Cpu { limit } if *limit == Duration::from_secs(1)),
            "{source}: {:?}",
            report.outcome
        );
        let used = report.cpu_used.expect("a script run reports its CPU time");
        eprintln!("{source}: CPU {used:?}");
        // The goal is 100 ms past the budget (the larger of 100 ms and 10 %); measured here:
        // 1.00–1.12 s. The CPU clock is the script's time outside host calls, so on a loaded
        // 2-core runner a descheduled script thread adds to it: the assertion keeps a wide
        // margin for that and still fails the old code, which used > 5 s (one clock read per
        // 1024 operations).
        assert!(used <= Duration::from_secs(2), "{source}: {used:?}");
        assert_eq!(run_end(&host, &report.run_id), "run-end:stopped");
    }
}

/// Built-ins that Rhai measures only after building their result are refused before: a
/// `replace` that would make gigabytes, a `split` into millions of boxed strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explosive_builtins_are_refused_before_they_allocate() {
    let scripts = vec![
        r#"let s = ""; s.pad(100000, 'x'); let t = s; t.replace("x", s); t.len()"#.to_owned(),
        r#"let s = ""; s.pad(1500000, 'x'); s.split("").len()"#.to_owned(),
    ];
    let host = host("memory_mib = 16", scripts.clone()).await;
    for source in &scripts {
        let (report, _) = host.script(source, &[]).await;
        assert!(
            matches!(stopped(&report), StopReason::ScriptLimit { what } if what == "number of replacements" || what == "array size"),
            "{source}: {:?}",
            report.outcome
        );
        let peak = report.peak_memory_bytes.unwrap();
        assert!(peak < 8 * MIB, "{source}: peak {peak}");
    }
}

/// `parse_json` builds its whole result in one call, so it must go through the engine's own
/// parser and its size limits: with Rhai's `metadata` feature it goes straight through serde,
/// and a 2 MB text of a million numbers becomes a 16 MB array before any limit looks (a build of the
/// product engine with that feature fails here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_json_is_bounded_by_the_engine_limits() {
    let source = r#"let z = "0,"; for i in 0..20 { z += z; }
                    let m = parse_json("{\"a\":[" + z + "0]}"); "survived""#
        .to_owned();
    let host = host("memory_mib = 64", vec![source.clone()]).await;
    let (report, _) = host.script(&source, &[]).await;
    assert!(
        !matches!(report.outcome, RunOutcome::Completed { .. }),
        "{:?}",
        report.outcome
    );
    let peak = report.peak_memory_bytes.unwrap();
    // The engine's parser refuses the literal at ~9 MiB; serde's 1M-value array alone is 16.
    assert!(peak < 16 * MIB, "peak {peak}");
}

/// A `///` doc comment is an ordinary comment where no `fn` follows (Rhai's `metadata`
/// feature makes it a syntax error there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doc_comments_not_before_a_function_compile() {
    let source = "/// the answer\nlet x = 42;\n/// done\nx".to_owned();
    let host = host("", vec![source.clone()]).await;
    let (report, _) = host.script(&source, &[]).await;
    assert!(
        matches!(report.outcome, RunOutcome::Completed { .. }),
        "{:?}",
        report.outcome
    );
}
