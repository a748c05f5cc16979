//! The component host: load-time checks on hand-written components (WAT), and runs against a
//! real broker, policy and audit trail over a fake cmdlet runner — a busy loop, a memory hog
//! and a guest that never returns are each stopped with the right reason, and every run
//! leaves its closing audit line.
//!
//! `WARDEN_TEST_GUEST=/path/to/guest.wasm` additionally runs a wit-bindgen guest (built for
//! `wasm32-wasip2`, exporting the modes used below) through the whole host API.

use async_trait::async_trait;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{CmdletRunner, Invocation, Page, PageStream};
use warden_policy::Policy;
use warden_runtime::{
    GuestMemory, GuestOutput, HostLimit, LogLevel, LogSource, PluginHost, RunObserver, RunOutcome,
    RunReport, RunRequest, RuntimeError, RuntimeLimits, StopReason,
};

// ---------------------------------------------------------------------------------------------
// Load-time checks
// ---------------------------------------------------------------------------------------------

/// `run: func(args: list<string>) -> result<string, string>` over a core function `body`
/// (params: args ptr, args len; result: pointer to the result record), with `ok("hi")` laid out
/// at 16 for bodies that return it.
fn run_component(body: &str, extra: &str) -> String {
    format!(
        r#"(component
  (core module $m
    (memory (export "mem") 1)
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $heap))
      (global.set $heap (i32.add (global.get $heap) (local.get 3)))
      (local.get $p))
    (data (i32.const 16) "\00\00\00\00\64\00\00\00\02\00\00\00")
    (data (i32.const 100) "hi")
    (func (export "run") (param i32 i32) (result i32)
      {body})
    {extra}
  )
  (core instance $i (instantiate $m))
  (type $r (result string (error string)))
  (func (export "run") (param "args" (list string)) (result $r)
    (canon lift (core func $i "run") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc"))))
)"#
    )
}

fn ok_component() -> Vec<u8> {
    wat::parse_str(run_component("(i32.const 16)", "")).unwrap()
}

fn host() -> PluginHost {
    PluginHost::new(RuntimeLimits::default(), None).unwrap()
}

fn load_problem(what: &str, bytes: Vec<u8>) -> (String, String) {
    // `what` names the file, and a file stem is the plugin's name unless its manifest gives
    // one: a valid name, so each case reaches the check it is about.
    match host().load_bytes(&format!("{}.wasm", what.replace(' ', "-")), bytes) {
        Err(RuntimeError::Load { problem, fix, .. }) => (problem, fix),
        other => panic!("{what}: expected a load error, got {other:?}"),
    }
}

#[test]
fn loading_and_inspecting_apply_one_name_rule_to_file_stems() {
    // A component without a manifest name is named by its file stem; `run` accepted stems that
    // `plugin inspect` refused, so a plugin could run under a name no inspect could show.
    let inspected = match PluginHost::inspect("my plugin.wasm", &ok_component()) {
        Err(RuntimeError::Load { problem, .. }) => problem,
        other => panic!("expected a load error, got {other:?}"),
    };
    let (loaded, fix) = match host().load_bytes("my plugin.wasm", ok_component()) {
        Err(RuntimeError::Load { problem, fix, .. }) => (problem, fix),
        other => panic!("expected a load error, got {other:?}"),
    };
    assert_eq!(inspected, loaded);
    assert!(
        loaded.contains("\"my plugin\", which is not 1 to 64"),
        "{loaded}"
    );
    assert!(fix.contains("rename the file"), "{fix}");
}

#[test]
fn load_refuses_what_it_cannot_run_and_says_why() {
    let valid = ok_component();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "not wasm",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "not a WebAssembly file",
            "wasm32-wasip2",
        ),
        (
            "core module",
            wat::parse_str("(module (func (export \"run\")))").unwrap(),
            "built for wasm32-wasip1 or as a core module",
            "cargo build --target wasm32-wasip2",
        ),
        (
            "truncated",
            valid[..valid.len() / 2].to_vec(),
            "truncated or corrupt",
            "rebuild",
        ),
        (
            "sockets",
            wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#).unwrap(),
            "imports `wasi:sockets/tcp@0.2.0`, which this warden does not provide (plugins get no network",
            "remove",
        ),
        (
            "http",
            wat::parse_str(r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#)
                .unwrap(),
            "imports `wasi:http/outgoing-handler@0.2.0`",
            "remove",
        ),
        (
            "unknown interface",
            wat::parse_str(r#"(component (import "acme:evil/backdoor@1.0.0" (instance)))"#).unwrap(),
            "imports `acme:evil/backdoor@1.0.0`, which this warden does not provide",
            "remove",
        ),
        (
            "future wit",
            wat::parse_str(r#"(component (import "warden:plugin/exchange@0.2.0" (instance)))"#)
                .unwrap(),
            "built against warden:plugin@0.2.0; this warden provides warden:plugin@0.1.0",
            "rebuild it with warden-sdk 0.1 or upgrade warden",
        ),
        (
            "wit 1.x",
            wat::parse_str(r#"(component (import "warden:plugin/log@1.0.0" (instance)))"#).unwrap(),
            "built against warden:plugin@1.0.0",
            "upgrade warden",
        ),
        (
            "bad manifest",
            wat::parse_str(r#"(component (core module (@custom "warden:manifest" "name = [")))"#)
                .unwrap(),
            "its plugin manifest is not valid",
            "fix the manifest",
        ),
        (
            "bad cmdlet name",
            wat::parse_str(
                r#"(component (core module (@custom "warden:manifest" "[cmdlets]\n\"Get Mailbox\" = []")))"#,
            )
            .unwrap(),
            "its plugin manifest is not valid",
            "fix the manifest",
        ),
        (
            "bad plugin name",
            wat::parse_str(
                r#"(component (core module (@custom "warden:manifest" "name = \"../etc\"")))"#,
            )
            .unwrap(),
            "manifest name",
            "fix the manifest",
        ),
        (
            "no run",
            wat::parse_str("(component)").unwrap(),
            "does not export `run`",
            "export `run`",
        ),
        (
            "run of the wrong type",
            wat::parse_str(
                r#"(component
                     (core module $m (func (export "f")))
                     (core instance $i (instantiate $m))
                     (func (export "run") (canon lift (core func $i "f"))))"#,
            )
            .unwrap(),
            "does not export `run: func(args: list<string>) -> result<string, string>`",
            "warden-sdk",
        ),
    ];
    for (what, bytes, problem, fix) in cases {
        let (got_problem, got_fix) = load_problem(what, bytes);
        assert!(
            got_problem.contains(problem),
            "{what}: problem {got_problem:?} lacks {problem:?}"
        );
        assert!(
            got_fix.contains(fix),
            "{what}: fix {got_fix:?} lacks {fix:?}"
        );
    }
}

#[test]
fn load_error_names_the_file() {
    let err = host()
        .load(Path::new("/nonexistent/plugin.wasm"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/plugin.wasm: cannot read it"),
        "{text}"
    );
}

#[test]
fn inspect_reads_the_manifest_and_the_interface() {
    let manifest = r#"name = "mailbox-report"
version = "0.3.1"
description = "Counts mailboxes"
[cmdlets]
Get-Mailbox = ["ResultSize", "Identity"]
"#;
    let escaped = manifest.replace('"', "\\\"").replace('\n', "\\n");
    let text = run_component(
        "(i32.const 16)",
        &format!(r#"(@custom "warden:manifest" "{escaped}")"#),
    );
    let bytes = wat::parse_str(text).unwrap();
    let info = PluginHost::inspect("/plugins/whatever.wasm", &bytes).unwrap();
    assert_eq!(info.name, "mailbox-report");
    assert_eq!(info.version.as_deref(), Some("0.3.1"));
    assert_eq!(info.description.as_deref(), Some("Counts mailboxes"));
    assert_eq!(info.size_bytes, bytes.len() as u64);
    assert_eq!(info.sha256, warden_policy::sha256_hex(&bytes));
    assert_eq!(info.exports, vec!["run"]);
    assert!(info.imports.is_empty());
    assert_eq!(info.wit_package, None);
    let declared = info.declared.clone().unwrap();
    assert_eq!(declared["Get-Mailbox"], vec!["ResultSize", "Identity"]);
    let declaration = info.declaration().unwrap();
    assert!(declaration.declares("get-mailbox", "identity"));
    assert!(!declaration.declares("Get-Mailbox", "Filter"));

    // No manifest: named after the file, declares nothing (the run gets the whole grant).
    let info = PluginHost::inspect("/plugins/bare-plugin.wasm", &ok_component()).unwrap();
    assert_eq!(info.name, "bare-plugin");
    assert!(info.declared.is_none() && info.declaration().is_none());

    let imports = wat::parse_str(
        r#"(component (import "warden:plugin/log@0.1.0" (instance)) (import "wasi:cli/stdout@0.2.6" (instance)))"#,
    )
    .unwrap();
    let info = PluginHost::inspect("x.wasm", &imports).unwrap();
    assert_eq!(info.wit_package.as_deref(), Some("warden:plugin@0.1.0"));
    assert_eq!(
        info.imports,
        vec!["warden:plugin/log@0.1.0", "wasi:cli/stdout@0.2.6"]
    );
}

#[test]
fn compiled_code_is_cached_and_a_tampered_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = ok_component();
    let host = PluginHost::new(RuntimeLimits::default(), Some(cache.clone())).unwrap();
    let first = host.load_bytes("p.wasm", bytes.clone()).unwrap();
    assert!(!first.loaded_from_cache());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let second = host.load_bytes("p.wasm", bytes.clone()).unwrap();
    assert!(second.loaded_from_cache());
    assert_eq!(second.sha256(), first.sha256());

    // Corrupt the compiled file: its tag no longer verifies, so it is compiled again.
    let cwasm = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    assert!(
        cwasm
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(first.sha256())
    );
    let mut tampered = std::fs::read(&cwasm).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(&cwasm, tampered).unwrap();
    let third = host.load_bytes("p.wasm", bytes.clone()).unwrap();
    assert!(!third.loaded_from_cache());
    let fourth = host.load_bytes("p.wasm", bytes).unwrap();
    assert!(fourth.loaded_from_cache());
}

#[test]
fn instrumented_and_normal_code_never_share_a_cache_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = ok_component();
    let cwasm_files = || {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        files.sort();
        files
    };
    let normal = PluginHost::new(RuntimeLimits::default(), Some(cache.clone())).unwrap();
    let inspecting = PluginHost::builder(RuntimeLimits::default())
        .cache_dir(Some(cache.clone()))
        .inspect_guest_memory(true)
        .build()
        .unwrap();
    assert!(
        !normal
            .load_bytes("p.wasm", bytes.clone())
            .unwrap()
            .loaded_from_cache()
    );
    let normal_entry = cwasm_files();
    assert_eq!(normal_entry.len(), 1);
    assert!(
        !inspecting
            .load_bytes("p.wasm", bytes.clone())
            .unwrap()
            .loaded_from_cache(),
        "the normal entry was not handed to the inspecting host"
    );
    let both = cwasm_files();
    assert_eq!(
        both.len(),
        2,
        "each kind of code has its own entry: {both:?}"
    );
    assert!(
        inspecting
            .load_bytes("p.wasm", bytes.clone())
            .unwrap()
            .loaded_from_cache()
    );
    assert!(
        normal
            .load_bytes("p.wasm", bytes.clone())
            .unwrap()
            .loaded_from_cache()
    );

    // Even an instrumented entry put under the normal name is not run by the normal host:
    // its tag binds it to the other engine hash, and the host compiles afresh.
    let instrumented = both.iter().find(|p| !normal_entry.contains(p)).unwrap();
    std::fs::copy(instrumented, &normal_entry[0]).unwrap();
    assert!(
        !normal
            .load_bytes("p.wasm", bytes)
            .unwrap()
            .loaded_from_cache()
    );
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

const SLOW_CMDLET: &str = "Get-MailboxStatistics";

#[derive(Debug, Default)]
struct FakeRunner {
    calls: Mutex<Vec<String>>,
}

impl CmdletRunner for FakeRunner {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        let slow = invocation.cmdlet.eq_ignore_ascii_case(SLOW_CMDLET);
        self.calls.lock().unwrap().push(invocation.cmdlet);
        Box::new(FakePages { next: 0, slow })
    }
}

#[derive(Debug)]
struct FakePages {
    next: usize,
    slow: bool,
}

#[async_trait]
impl PageStream for FakePages {
    async fn next_page(&mut self) -> warden_exchange::Result<Option<Page>> {
        if self.slow {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        if self.next == 3 {
            return Ok(None);
        }
        let page = self.next;
        self.next += 1;
        let objects = (0..2)
            .map(
                |i| match json!({"Name": format!("mb{page}-{i}"), "Secret": "x"}) {
                    Value::Object(map) => map,
                    _ => unreachable!(),
                },
            )
            .collect();
        Ok(Some(Page {
            objects,
            ..Page::default()
        }))
    }
}

#[derive(Debug, Default)]
struct Recorder {
    lines: Mutex<Vec<(LogSource, LogLevel, String)>>,
    progress: Mutex<Vec<(u64, Option<u64>, String)>>,
}

impl RunObserver for Recorder {
    fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        self.lines
            .lock()
            .unwrap()
            .push((source, level, message.to_owned()));
    }
    fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        self.progress
            .lock()
            .unwrap()
            .push((done, total, label.to_owned()));
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    broker: Broker,
    runner: Arc<FakeRunner>,
    audit_path: PathBuf,
}

fn fixture(name: &str, sha256: &str, budgets: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        r#"version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
output = ["Name"]
[roles.reader.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
ResultSize = {{ any = true }}
[[roles.reader.cmdlet]]
name = "{SLOW_CMDLET}"
[roles.reader.cmdlet.parameters]
Identity = {{ length = [1, 256] }}

[[grant]]
id = "test-plugin"
plugin = "{name}"
sha256 = "{sha256}"
roles = ["reader"]
[grant.budgets]
{budgets}
"#
    );
    let policy = Policy::parse(&policy, &dir.path().join("policy.toml")).unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let audit = AuditTrail::open(&audit_path, AuditKey::from_bytes([9; 32])).unwrap();
    let runner = Arc::new(FakeRunner::default());
    let broker = Broker::new(
        Arc::new(policy),
        runner.clone(),
        Arc::new(audit),
        Duration::from_secs(30),
    );
    Fixture {
        _dir: dir,
        broker,
        runner,
        audit_path,
    }
}

impl Fixture {
    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The run's closing audit line, as text.
    fn last_line(&self) -> String {
        self.audit().last().unwrap().to_string()
    }
}

async fn run_wat(
    body: &str,
    extra: &str,
    budgets: &str,
    limits: RuntimeLimits,
) -> (RunReport, Fixture) {
    let bytes = wat::parse_str(run_component(body, extra)).unwrap();
    let host = PluginHost::new(limits, None).unwrap();
    let plugin = host.load_bytes("wat-plugin.wasm", bytes).unwrap();
    let fx = fixture(plugin.name(), plugin.sha256(), budgets);
    let report = host
        .run(&plugin, &fx.broker, RunRequest::new(vec!["a".into()]))
        .await
        .unwrap();
    (report, fx)
}

fn stopped(report: &RunReport) -> &StopReason {
    match &report.outcome {
        RunOutcome::Stopped { reason } => reason,
        other => panic!("expected a stop, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_run_completes_and_is_audited() {
    let (report, fx) = run_wat("(i32.const 16)", "", "", RuntimeLimits::default()).await;
    assert_eq!(
        report.outcome,
        RunOutcome::Completed {
            output: GuestOutput::Text("hi".into())
        }
    );
    assert_eq!(report.grant_id, "test-plugin");
    let last = fx.last_line();
    assert!(
        last.contains("run-end:completed") && last.contains("returned 2 bytes"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_plugin_is_refused_before_it_runs() {
    let host = host();
    let plugin = host.load_bytes("p.wasm", ok_component()).unwrap();
    let fx = fixture(plugin.name(), &"0".repeat(64), "");
    let err = host
        .run(&plugin, &fx.broker, RunRequest::new(vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Refused(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_dies_at_its_cpu_budget() {
    let started = Instant::now();
    let (report, fx) = run_wat(
        "(loop $l (br $l)) (i32.const 16)",
        "",
        "cpu_secs = 1\nwall_clock_secs = 30",
        RuntimeLimits::default(),
    )
    .await;
    assert_eq!(
        stopped(&report),
        &StopReason::Cpu {
            limit: Duration::from_secs(1)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(fx.last_line().contains("run-end:stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_dies_at_its_wall_clock() {
    let started = Instant::now();
    let (report, _fx) = run_wat(
        "(loop $l (br $l)) (i32.const 16)",
        "",
        "cpu_secs = 60\nwall_clock_secs = 1",
        RuntimeLimits::default(),
    )
    .await;
    assert_eq!(
        stopped(&report),
        &StopReason::WallClock {
            limit: Duration::from_secs(1)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_stops_when_interrupted_from_another_thread() {
    let bytes = wat::parse_str(run_component("(loop $l (br $l)) (i32.const 16)", "")).unwrap();
    let host = PluginHost::new(RuntimeLimits::default(), None).unwrap();
    let plugin = host.load_bytes("wat-plugin.wasm", bytes).unwrap();
    let fx = fixture(
        plugin.name(),
        plugin.sha256(),
        "cpu_secs = 60\nwall_clock_secs = 60",
    );
    let interrupt = warden_runtime::Interrupt::new();
    let trigger = interrupt.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        trigger.interrupt();
    });
    let started = Instant::now();
    let request = RunRequest::new(vec![]).with_interrupt(interrupt);
    let report = host.run(&plugin, &fx.broker, request).await.unwrap();
    assert_eq!(stopped(&report), &StopReason::Interrupted);
    assert!(started.elapsed() < Duration::from_secs(5));
    let last = fx.last_line();
    assert!(
        last.contains("run-end:stopped") && last.contains("interrupted"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_stops_at_the_smaller_limit() {
    // 64 MiB of grant, 32 MiB of host: growing by 40 MiB fails at the host's.
    let limits = RuntimeLimits {
        max_memory_bytes: 32 * 1024 * 1024,
        ..RuntimeLimits::default()
    };
    let (report, _fx) = run_wat(
        "(drop (memory.grow (i32.const 640))) (i32.const 16)",
        "",
        "memory_mib = 64",
        limits,
    )
    .await;
    assert_eq!(
        stopped(&report),
        &StopReason::Memory {
            limit_bytes: 32 * 1024 * 1024
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_and_oversized_output_stop_the_run() {
    let (report, _fx) = run_wat("(unreachable)", "", "", RuntimeLimits::default()).await;
    match stopped(&report) {
        StopReason::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("{other:?}"),
    }
    let limits = RuntimeLimits {
        max_output_bytes: 1,
        ..RuntimeLimits::default()
    };
    let (report, _fx) = run_wat("(i32.const 16)", "", "", limits).await;
    assert_eq!(
        stopped(&report),
        &StopReason::Output {
            size_bytes: 2,
            limit_bytes: 1
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_runs_share_one_host() {
    // Each run spins for a few epoch ticks, yielding between them, so more runs are in flight
    // than the pool has slots: the extra ones wait for a slot instead of failing.
    let spin = "(local $n i32) (local.set $n (i32.const 50000000))
        (loop $l (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n)))
        (i32.const 16)";
    let bytes = wat::parse_str(run_component(spin, "")).unwrap();
    let host = Arc::new(host());
    eprintln!("{host:?}");
    let plugin = host.load_bytes("p.wasm", bytes).unwrap();
    let fx = Arc::new(fixture(plugin.name(), plugin.sha256(), ""));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (host, plugin, fx) = (host.clone(), plugin.clone(), fx.clone());
        tasks.push(tokio::spawn(async move {
            host.run(&plugin, &fx.broker, RunRequest::new(vec![]))
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        let report = task.await.unwrap();
        assert_eq!(report.outcome.status(), "completed", "{:?}", report.outcome);
    }
}

/// Keeps what an inspecting host hands over: how many times, and a copy of each memory.
#[derive(Debug, Default)]
struct MemoryRecorder {
    handed_over: Mutex<Vec<Vec<Vec<u8>>>>,
}

impl RunObserver for MemoryRecorder {
    fn log(&self, _: LogSource, _: LogLevel, _: &str) {}
    fn progress(&self, _: u64, _: Option<u64>, _: &str) {}
    fn guest_memory(&self, memories: &[GuestMemory<'_>]) {
        self.handed_over
            .lock()
            .unwrap()
            .push(memories.iter().map(|m| m.data.to_vec()).collect());
    }
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspecting_host_hands_over_guest_memory_however_the_run_ends() {
    // The argument is written into guest memory by the canonical ABI at run time (not a data
    // segment), so finding it shows the host reads the live memory of this very run.
    const MARKER: &str = "arg-marker-5c1e0b7d";
    let spin = "(loop $l (br $l)) (i32.const 16)";
    type Expect = fn(&RunOutcome) -> bool;
    let cases: &[(&str, &str, &str, Expect)] = &[
        ("(i32.const 16)", "", "completed", |o| {
            matches!(o, RunOutcome::Completed { .. })
        }),
        ("(unreachable)", "", "trapped", |o| {
            matches!(
                o,
                RunOutcome::Stopped {
                    reason: StopReason::Trap { .. }
                }
            )
        }),
        (spin, "cpu_secs = 1\nwall_clock_secs = 30", "CPU", |o| {
            matches!(
                o,
                RunOutcome::Stopped {
                    reason: StopReason::Cpu { .. }
                }
            )
        }),
        // The wall clock cancels the call mid-flight; the store is still read afterwards.
        (
            spin,
            "cpu_secs = 60\nwall_clock_secs = 1",
            "wall clock",
            |o| {
                matches!(
                    o,
                    RunOutcome::Stopped {
                        reason: StopReason::WallClock { .. }
                    }
                )
            },
        ),
        (
            "(drop (memory.grow (i32.const 640))) (i32.const 16)",
            "memory_mib = 32",
            "memory",
            |o| {
                matches!(
                    o,
                    RunOutcome::Stopped {
                        reason: StopReason::Memory { .. }
                    }
                )
            },
        ),
    ];
    let normal = host();
    let inspecting = PluginHost::builder(RuntimeLimits::default())
        .inspect_guest_memory(true)
        .build()
        .unwrap();
    assert_eq!(
        inspecting.pooling(),
        normal.pooling(),
        "inspection works with whichever allocator the machine allows"
    );
    for (body, budgets, what, expected) in cases {
        let bytes = wat::parse_str(run_component(body, "")).unwrap();
        for (host, inspects) in [(&inspecting, true), (&normal, false)] {
            let plugin = host.load_bytes("wat-plugin.wasm", bytes.clone()).unwrap();
            let fx = fixture(plugin.name(), plugin.sha256(), budgets);
            let recorder = Arc::new(MemoryRecorder::default());
            let request = RunRequest {
                args: vec![MARKER.to_owned()],
                observer: recorder.clone(),
                interrupt: Default::default(),
                delegation: None,
            };
            let report = host.run(&plugin, &fx.broker, request).await.unwrap();
            assert!(expected(&report.outcome), "{what}: {:?}", report.outcome);
            let handed_over = recorder.handed_over.lock().unwrap();
            if !inspects {
                assert!(
                    handed_over.is_empty(),
                    "{what}: a normal host hands nothing over"
                );
                continue;
            }
            assert_eq!(handed_over.len(), 1, "{what}: once per run");
            let memories = &handed_over[0];
            assert_eq!(memories.len(), 1, "{what}: the guest's one memory");
            assert!(
                holds(&memories[0], MARKER.as_bytes()),
                "{what}: the live argument"
            );
            assert!(holds(&memories[0], b"hi"), "{what}: the data segment");
            assert!(
                fx.last_line().contains("run-end:"),
                "{what}: the run was closed"
            );
        }
    }
}

#[test]
fn hosts_and_plugins_are_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PluginHost>();
    shareable::<warden_runtime::LoadedPlugin>();
}

// ---------------------------------------------------------------------------------------------
// A real wit-bindgen guest (opt-in)
// ---------------------------------------------------------------------------------------------

fn test_guest() -> Option<Vec<u8>> {
    let path = std::env::var_os("WARDEN_TEST_GUEST")?;
    Some(std::fs::read(path).expect("WARDEN_TEST_GUEST names a readable file"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_guest_uses_the_whole_api() {
    let Some(bytes) = test_guest() else {
        eprintln!("WARDEN_TEST_GUEST not set; skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let limits = RuntimeLimits {
        max_log_bytes: 64 * 1024,
        max_log_line_bytes: 100,
        ..RuntimeLimits::default()
    };
    let host = PluginHost::new(limits, Some(dir.path().join("cache"))).unwrap();
    let loaded = Instant::now();
    let plugin = host.load_bytes("guest.wasm", bytes.clone()).unwrap();
    eprintln!(
        "load (compile): {:?}, imports {:?}",
        loaded.elapsed(),
        plugin.info().imports
    );
    let loaded = Instant::now();
    let cached = host.load_bytes("guest.wasm", bytes).unwrap();
    eprintln!("load (cache): {:?}", loaded.elapsed());
    assert!(cached.loaded_from_cache());
    let fx = fixture(
        plugin.name(),
        plugin.sha256(),
        "cpu_secs = 1\nwall_clock_secs = 3\nmemory_mib = 64",
    );

    let run = |args: &[&str]| {
        let recorder = Arc::new(Recorder::default());
        let request = RunRequest {
            args: args.iter().map(|s| s.to_string()).collect(),
            observer: recorder.clone(),
            interrupt: Default::default(),
            delegation: None,
        };
        let (host, plugin, broker) = (&host, &plugin, &fx.broker);
        async move {
            let report = host.run(plugin, broker, request).await.unwrap();
            (report, recorder)
        }
    };
    let text = |report: &RunReport| match &report.outcome {
        RunOutcome::Completed {
            output: GuestOutput::Text(t),
        } => t.clone(),
        other => panic!("expected output, got {other:?}"),
    };

    let (report, _) = run(&["hello", "x"]).await;
    assert_eq!(text(&report), r#"hello ["x"]"#);

    // Timing: instantiate + call, warm.
    let timed = Instant::now();
    for _ in 0..20 {
        run(&["hello"]).await;
    }
    eprintln!("run (hello) avg: {:?}", timed.elapsed() / 20);
    let timed = Instant::now();
    for _ in 0..20 {
        let principal = warden_policy::Principal::Plugin {
            name: plugin.name().to_owned(),
            sha256: plugin.sha256().to_owned(),
            signature: None,
        };
        let r = fx.broker.begin(principal, None).unwrap();
        fx.broker
            .end(&r, &warden_broker::RunEnd::Completed { output_bytes: 1 })
            .unwrap();
    }
    eprintln!(
        "of which broker begin + end avg: {:?}",
        timed.elapsed() / 20
    );

    let (report, _) = run(&["invoke"]).await;
    let objects: Value = serde_json::from_str(&text(&report)).unwrap();
    // Shaped: only Name survives.
    assert_eq!(objects.as_array().unwrap().len(), 6);
    assert_eq!(objects[0], json!({"Name": "mb0-0"}));
    assert_eq!(report.usage.calls, 1);

    let (report, _) = run(&["stream"]).await;
    assert!(text(&report).starts_with("pages=3"), "{}", text(&report));

    let (report, _) = run(&["abandon"]).await;
    assert_eq!(text(&report), "first=true");
    let abandoned = fx
        .audit()
        .iter()
        .any(|l| l.to_string().contains("abandoned"));
    assert!(abandoned);

    let (report, _) = run(&["denied"]).await;
    match &report.outcome {
        RunOutcome::Failed { message } => assert!(message.contains("Denied"), "{message}"),
        other => panic!("{other:?}"),
    }

    let (report, _) = run(&["grants"]).await;
    assert!(text(&report).contains("Get-Mailbox"), "{}", text(&report));

    let (report, _) = run(&["usage"]).await;
    assert_eq!(text(&report), "calls=1 objects=6 bytes=96");

    let (report, recorder) = run(&["log"]).await;
    assert_eq!(text(&report), "logged");
    let lines = recorder.lines.lock().unwrap().clone();
    assert!(lines.contains(&(LogSource::Guest, LogLevel::Info, "hello from log".into())));
    assert!(lines.contains(&(LogSource::Stdout, LogLevel::Info, "line one".into())));
    assert!(lines.contains(&(LogSource::Stdout, LogLevel::Info, "line two".into())));
    assert!(lines.contains(&(LogSource::Stderr, LogLevel::Warn, "to stderr".into())));
    // (A trailing `print!` without a newline stays in the guest's own line buffer: std does
    // not flush stdout when `run` returns, so it never reaches the host.)
    assert_eq!(
        recorder.progress.lock().unwrap().clone(),
        vec![(1, Some(2), "half".to_owned())]
    );

    let (report, recorder) = run(&["flood"]).await;
    assert_eq!(text(&report), "flooded");
    let kept: usize = recorder
        .lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.2.len())
        .sum();
    assert!(kept <= 64 * 1024);
    assert!(
        report.log_bytes_dropped > 20_000_000,
        "{}",
        report.log_bytes_dropped
    );

    let (report, _) = run(&["env"]).await;
    assert_eq!(
        text(&report),
        r#"env=[] dir=Err(NotFound) args=[]"#,
        "no environment, files or arguments"
    );

    let (report, _) = run(&["busy"]).await;
    assert_eq!(
        stopped(&report),
        &StopReason::Cpu {
            limit: Duration::from_secs(1)
        }
    );

    let (report, _) = run(&["memory"]).await;
    assert_eq!(
        stopped(&report),
        &StopReason::Memory {
            limit_bytes: 64 * 1024 * 1024
        }
    );

    let (report, _) = run(&["panic"]).await;
    match stopped(&report) {
        StopReason::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("{other:?}"),
    }

    let (report, _) = run(&["recurse"]).await;
    match stopped(&report) {
        StopReason::Trap { message } => assert!(message.contains("stack"), "{message}"),
        other => panic!("{other:?}"),
    }

    let (report, _) = run(&["fail"]).await;
    assert_eq!(
        report.outcome,
        RunOutcome::Failed {
            message: "the guest failed on purpose".into()
        }
    );

    // Blocked in a host call that never answers in time: the wall clock still ends the run.
    let started = Instant::now();
    let (report, _) = run(&["call", SLOW_CMDLET, r#"{"Identity": "a"}"#]).await;
    assert!(matches!(stopped(&report), StopReason::WallClock { .. }));
    assert!(started.elapsed() < Duration::from_secs(6));
    let calls = fx.runner.calls.lock().unwrap().clone();
    assert!(calls.iter().any(|c| c == SLOW_CMDLET));
}

// ---------------------------------------------------------------------------------------------
// The compiled-code cache is inside the trust boundary
// ---------------------------------------------------------------------------------------------

fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn cached_host(cache: &Path, key: &Path) -> PluginHost {
    PluginHost::builder(RuntimeLimits::default())
        .cache_dir(Some(cache.to_owned()))
        .cache_key(Some(key.to_owned()))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_cache_entry_is_recompiled_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, key) = (dir.path().join("cache"), dir.path().join("state/cache.key"));
    let pinned = ok_component();
    // Another component, whose code says something else.
    let other = wat::parse_str(run_component(
        "(i32.store8 (i32.const 100) (i32.const 0x21)) (i32.const 16)",
        "",
    ))
    .unwrap();
    let host = cached_host(&cache, &key);
    let pinned_sha = host.load_bytes("p.wasm", pinned.clone()).unwrap();
    host.load_bytes("o.wasm", other).unwrap();
    let files = cwasm_files(&cache);
    assert_eq!(files.len(), 2);
    let pinned_file = files
        .iter()
        .find(|p| p.to_string_lossy().contains(pinned_sha.sha256()))
        .unwrap();
    let other_file = files.iter().find(|p| *p != pinned_file).unwrap();
    // Whoever can write the directory puts the other component's code under the pinned one's
    // name, with whatever else lies beside it (the old digest sidecar made this pass).
    std::fs::copy(other_file, pinned_file).unwrap();
    for f in [other_file, pinned_file] {
        let digest = warden_policy::sha256_hex(&std::fs::read(f).unwrap());
        std::fs::write(format!("{}.sha256", f.display()), format!("{digest}\n")).unwrap();
    }
    let plugin = host.load_bytes("p.wasm", pinned.clone()).unwrap();
    assert!(
        !plugin.loaded_from_cache(),
        "the swapped entry was not loaded"
    );
    let fx = fixture(plugin.name(), plugin.sha256(), "");
    let report = host
        .run(&plugin, &fx.broker, RunRequest::new(vec![]))
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        RunOutcome::Completed {
            output: GuestOutput::Text("hi".into())
        },
        "the pinned component's own code ran"
    );
    // The entry was rewritten with the right code: the next load takes it.
    assert!(
        host.load_bytes("p.wasm", pinned.clone())
            .unwrap()
            .loaded_from_cache()
    );
    // Another install's key does not verify this install's entries.
    let elsewhere = cached_host(&cache, &dir.path().join("other.key"));
    assert!(
        !elsewhere
            .load_bytes("p.wasm", pinned)
            .unwrap()
            .loaded_from_cache()
    );
    // The key is private and never printed.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(!format!("{host:?}").contains(secret.trim()));
}

#[cfg(unix)]
#[test]
fn a_cache_directory_or_key_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (cache, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
    drop(cached_host(&cache, &key));
    let refused = |what: &str, needles: &[&str]| {
        let error = PluginHost::builder(RuntimeLimits::default())
            .cache_dir(Some(cache.clone()))
            .cache_key(Some(key.clone()))
            .build()
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, RuntimeError::Setup(_)), "{what}: {error:?}");
        for needle in needles {
            assert!(text.contains(needle), "{what}: {text:?} lacks {needle:?}");
        }
    };
    for mode in [0o770, 0o777, 0o702] {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).unwrap();
        refused(
            "a group- or world-writable directory",
            &["writable by group or others", "chmod 700", "--no-cache"],
        );
    }
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    for mode in [0o640, 0o606, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        refused(
            "a key others can read or write",
            &[
                "cache.key",
                "readable or writable by group or others",
                "chmod 600",
            ],
        );
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(cached_host(&cache, &key));
}

/// `f` on another thread, failing the test if it has not returned within a minute (a FIFO
/// read blocks forever).
#[cfg(unix)]
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: still waiting after a minute"))
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn a_cached_file_that_is_a_symlink_a_fifo_or_huge_is_recompiled_never_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
    let host = Arc::new(cached_host(&cache, &key));
    let bytes = ok_component();
    host.load_bytes("p.wasm", bytes.clone()).unwrap();
    let entry = cwasm_files(&cache).pop().unwrap();
    // A valid entry reached through a symlink is not followed.
    let elsewhere = dir.path().join("elsewhere.cwasm");
    std::fs::rename(&entry, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    let replace = |make: &dyn Fn(&Path)| {
        std::fs::remove_file(&entry).unwrap();
        make(&entry);
    };
    let load = |what: &'static str| {
        let (host, bytes) = (host.clone(), bytes.clone());
        within_a_minute(what, move || {
            host.load_bytes("p.wasm", bytes)
                .unwrap()
                .loaded_from_cache()
        })
    };
    assert!(!load("a symlinked entry"), "the symlink was followed");
    assert!(load("the rewritten entry"), "the entry was rewritten");
    replace(&|path| mkfifo(path));
    assert!(!load("a FIFO entry"));
    assert!(load("the rewritten entry"));
    // Over the cap: refused from its size, not read.
    replace(&|path| {
        let file = std::fs::File::create(path).unwrap();
        file.set_len(512 * 1024 * 1024 + 1).unwrap();
    });
    assert!(!load("a huge entry"));
    assert!(load("the rewritten entry"));
}

#[cfg(unix)]
#[test]
fn a_cache_key_that_is_a_symlink_or_fifo_or_in_an_open_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (cache, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
    drop(cached_host(&cache, &key));
    let build = move |cache: PathBuf, key: PathBuf| {
        within_a_minute("opening the key", move || {
            PluginHost::builder(RuntimeLimits::default())
                .cache_dir(Some(cache))
                .cache_key(Some(key))
                .build()
                .map(drop)
        })
    };
    // A symlink to a valid key of this user's.
    let real = dir.path().join("real.key");
    std::fs::rename(&key, &real).unwrap();
    std::os::unix::fs::symlink(&real, &key).unwrap();
    let error = build(cache.clone(), key.clone()).unwrap_err().to_string();
    assert!(error.contains("symbolic link"), "{error}");
    std::fs::remove_file(&key).unwrap();
    mkfifo(&key);
    let error = build(cache.clone(), key.clone()).unwrap_err().to_string();
    assert!(error.contains("not a regular file"), "{error}");
    std::fs::remove_file(&key).unwrap();
    // A key in a directory others can write (they could swap it).
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = build(cache.clone(), open.join("cache.key"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("writable by group or others"), "{error}");
    build(cache, key).unwrap();
}

#[test]
fn hosts_creating_one_key_at_once_all_read_the_same_whole_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
    let start = Arc::new(std::sync::Barrier::new(4));
    let hosts: Vec<_> = (0..4)
        .map(|_| {
            let (cache, key, start) = (cache.clone(), key.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                PluginHost::builder(RuntimeLimits::default())
                    .cache_dir(Some(cache))
                    .cache_key(Some(key))
                    .build()
            })
        })
        .collect();
    let hosts: Vec<PluginHost> = hosts
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    // One key: what one host cached, every other verifies.
    hosts[0].load_bytes("p.wasm", ok_component()).unwrap();
    for host in &hosts[1..] {
        assert!(
            host.load_bytes("p.wasm", ok_component())
                .unwrap()
                .loaded_from_cache()
        );
    }
}

#[test]
fn the_default_cache_key_lives_beside_the_cache_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    drop(PluginHost::new(RuntimeLimits::default(), Some(cache.clone())).unwrap());
    assert!(dir.path().join("compiled.key").is_file());
    assert!(!cache.join("cache.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_the_policy_refuses_is_never_compiled_or_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let host = cached_host(&cache, &dir.path().join("cache.key"));
    let checked = PluginHost::check_bytes("p.wasm", ok_component()).unwrap();
    // The grant pins another hash.
    let fx = fixture(&checked.info().name, &"0".repeat(64), "");
    let error = host
        .run_checked(&checked, &fx.broker, RunRequest::new(vec![]))
        .await
        .unwrap_err();
    assert!(matches!(error, RuntimeError::Refused(_)), "{error:?}");
    assert!(
        cwasm_files(&cache).is_empty(),
        "nothing was compiled into the cache"
    );
    assert!(
        fx.last_line().contains("\"allowed\":false"),
        "{}",
        fx.last_line()
    );
    // Granted, it is compiled, cached and run.
    let fx = fixture(&checked.info().name, &checked.info().sha256, "");
    let report = host
        .run_checked(&checked, &fx.broker, RunRequest::new(vec![]))
        .await
        .unwrap();
    assert_eq!(report.outcome.status(), "completed");
    assert_eq!(cwasm_files(&cache).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Limits per run, not per memory; every host-side stop says which limit
// ---------------------------------------------------------------------------------------------

/// `run_component` with `n` more core instances of `module` before the run module's.
fn with_instances(n: usize, module: &str, body: &str) -> Vec<u8> {
    let mut extra = format!("(core module $extra {module})\n");
    for _ in 0..n {
        extra.push_str("  (core instance (instantiate $extra))\n");
    }
    let text = run_component(body, "").replacen("(component\n", &format!("(component\n{extra}"), 1);
    wat::parse_str(text).unwrap()
}

async fn run_bytes(bytes: Vec<u8>, budgets: &str) -> (RunReport, Fixture) {
    let host = host();
    let plugin = host.load_bytes("hostile.wasm", bytes).unwrap();
    let fx = fixture(plugin.name(), plugin.sha256(), budgets);
    let report = host
        .run(&plugin, &fx.broker, RunRequest::new(vec![]))
        .await
        .unwrap();
    (report, fx)
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_limited_per_run_not_per_memory() {
    // Two memories, each under the 32 MiB grant (a 20 MiB one in another instance, and the
    // run module's own grown by 16 MiB), together over it.
    let bytes = with_instances(
        1,
        "(memory 320)",
        "(drop (memory.grow (i32.const 256))) (i32.const 16)",
    );
    let (report, fx) = run_bytes(bytes, "memory_mib = 32").await;
    assert_eq!(
        stopped(&report),
        &StopReason::Memory {
            limit_bytes: 32 * MIB
        }
    );
    assert!(
        fx.last_line().contains("memory limit of 33554432 bytes"),
        "{}",
        fx.last_line()
    );
    // Memory created at instantiation counts as well as grown memory.
    let bytes = with_instances(1, "(memory 600)", "(i32.const 16)");
    let (report, _fx) = run_bytes(bytes, "memory_mib = 32").await;
    assert_eq!(
        stopped(&report),
        &StopReason::Memory {
            limit_bytes: 32 * MIB
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_count_against_the_run_and_their_size_is_capped() {
    // Seven instances' tables of 19,000 elements: each within the table cap, together more
    // than the 1 MiB run.
    let bytes = with_instances(7, "(table 19000 funcref)", "(i32.const 16)");
    let (report, _fx) = run_bytes(bytes, "memory_mib = 1").await;
    assert_eq!(stopped(&report), &StopReason::Memory { limit_bytes: MIB });
    // One table grown past the table cap: the stop names it (it used to be a bare trap).
    let (report, fx) = run_wat(
        "(drop (table.grow $t (ref.null func) (i32.const 100000))) (i32.const 16)",
        "(table $t 1 funcref)",
        "",
        RuntimeLimits::default(),
    )
    .await;
    assert_eq!(
        stopped(&report),
        &StopReason::HostLimit {
            which: HostLimit::TableElements,
            max: 20_000
        }
    );
    assert!(fx.last_line().contains("table-size"), "{}", fx.last_line());
}

/// A hundred core instances, each with a memory at the grant's limit: past the per-run count
/// (64, room for an interpreter's 38).
fn a_hundred_instances() -> Vec<u8> {
    with_instances(100, "(memory 512)", "(i32.const 16)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_with_a_hundred_instances_is_refused_naming_the_limit() {
    let host = host();
    match host.load_bytes("hundred.wasm", a_hundred_instances()) {
        Err(RuntimeError::Load { problem, fix, .. }) => {
            assert!(host.pooling());
            assert!(
                problem.contains("more than this warden allows one run")
                    && problem.contains("101 core module instances")
                    && problem.contains("maximum of 64"),
                "{problem}"
            );
            assert!(fix.contains("warden-sdk"), "{fix}");
        }
        Ok(plugin) => {
            // The on-demand allocator: the run's own counts stop it at instantiation.
            assert!(!host.pooling());
            let fx = fixture(plugin.name(), plugin.sha256(), "memory_mib = 32");
            let report = host
                .run(&plugin, &fx.broker, RunRequest::new(vec![]))
                .await
                .unwrap();
            assert_eq!(
                stopped(&report),
                &StopReason::HostLimit {
                    which: HostLimit::CoreInstances,
                    max: 64
                }
            );
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_get_their_full_limit_while_an_over_asking_guest_is_refused() {
    // Each well-behaved run grows to 31 MiB of its 32 MiB, then works a while so the runs
    // overlap.
    let body = "(local $n i32)
        (if (i32.eq (memory.grow (i32.const 495)) (i32.const -1)) (then (unreachable)))
        (i32.store (i32.const 32505852) (i32.const 7))
        (local.set $n (i32.const 100000000))
        (loop $l (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n)))
        (i32.const 16)";
    let host = Arc::new(host());
    let good = host
        .load_bytes(
            "good.wasm",
            wat::parse_str(run_component(body, "")).unwrap(),
        )
        .unwrap();
    let fx = Arc::new(fixture(
        good.name(),
        good.sha256(),
        "memory_mib = 32\ncpu_secs = 30",
    ));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (host, good, fx) = (host.clone(), good.clone(), fx.clone());
            tokio::spawn(async move {
                host.run(&good, &fx.broker, RunRequest::new(vec![]))
                    .await
                    .unwrap()
            })
        })
        .collect();
    // Meanwhile the over-asking guests: a hundred instances is refused outright, and memory
    // spread over two instances stops at the run's limit.
    let refused = host.load_bytes("hundred.wasm", a_hundred_instances());
    let spread = with_instances(
        1,
        "(memory 320)",
        "(drop (memory.grow (i32.const 256))) (i32.const 16)",
    );
    let spread = host.load_bytes("spread.wasm", spread).unwrap();
    let spread_fx = fixture(spread.name(), spread.sha256(), "memory_mib = 32");
    let spread_report = host
        .run(&spread, &spread_fx.broker, RunRequest::new(vec![]))
        .await
        .unwrap();
    for run in runs {
        let report = run.await.unwrap();
        assert_eq!(
            report.outcome,
            RunOutcome::Completed {
                output: GuestOutput::Text("hi".into())
            }
        );
    }
    if host.pooling() {
        assert!(
            matches!(&refused, Err(RuntimeError::Load { problem, .. }) if problem.contains("core module instances")),
            "{refused:?}"
        );
    }
    assert!(matches!(stopped(&spread_report), StopReason::Memory { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_handles_past_the_limit_stop_the_run_naming_it() {
    // `resource.new` in a loop: handles the host keeps for the guest, with no host code in
    // the loop.
    let text = r#"(component
  (type $r (resource (rep i32)))
  (core func $new (canon resource.new $r))
  (core module $m
    (import "env" "new" (func $new (param i32) (result i32)))
    (memory (export "mem") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
    (data (i32.const 16) "\00\00\00\00\64\00\00\00\02\00\00\00")
    (data (i32.const 100) "hi")
    (func (export "run") (param i32 i32) (result i32)
      (local $n i32)
      (loop $l
        (drop (call $new (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $n) (i32.const 20000))))
      (i32.const 16)))
  (core instance $i (instantiate $m (with "env" (instance (export "new" (func $new))))))
  (type $res (result string (error string)))
  (func (export "run") (param "args" (list string)) (result $res)
    (canon lift (core func $i "run") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc"))))
)"#;
    let (report, fx) = run_bytes(wat::parse_str(text).unwrap(), "").await;
    assert_eq!(
        stopped(&report),
        &StopReason::HostLimit {
            which: HostLimit::ResourceHandles,
            max: 4096
        }
    );
    assert!(
        fx.last_line().contains("resource-handle"),
        "{}",
        fx.last_line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_past_the_limit_stop_the_run_naming_it() {
    // `get-random-bytes(2 MiB)`: the host would allocate it before copying it over.
    let text = r#"(component
  (import "wasi:random/random@0.2.0" (instance $random
    (export "get-random-bytes" (func (param "len" u64) (result (list u8))))))
  (core module $mm
    (memory (export "mem") 1)
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $heap))
      (global.set $heap (i32.add (global.get $heap) (local.get 3)))
      (local.get $p))
    (data (i32.const 16) "\00\00\00\00\64\00\00\00\02\00\00\00")
    (data (i32.const 100) "hi"))
  (core instance $mi (instantiate $mm))
  (core func $bytes (canon lower (func $random "get-random-bytes")
    (memory (core memory $mi "mem")) (realloc (core func $mi "realloc"))))
  (core module $m
    (import "env" "bytes" (func $bytes (param i64 i32)))
    (func (export "run") (param i32 i32) (result i32)
      (call $bytes (i64.const 2097152) (i32.const 200))
      (i32.const 16)))
  (core instance $i (instantiate $m (with "env" (instance (export "bytes" (func $bytes))))))
  (type $res (result string (error string)))
  (func (export "run") (param "args" (list string)) (result $res)
    (canon lift (core func $i "run") (memory (core memory $mi "mem"))
      (realloc (core func $mi "realloc"))))
)"#;
    let (report, fx) = run_bytes(wat::parse_str(text).unwrap(), "").await;
    assert_eq!(
        stopped(&report),
        &StopReason::HostLimit {
            which: HostLimit::RandomBytes,
            max: 1024 * 1024
        }
    );
    assert!(
        fx.last_line().contains("random-bytes"),
        "{}",
        fx.last_line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_is_cut_like_a_log_line() {
    // `err` of 40 MB (zeros in a grown memory): cut to max_log_line_bytes, in the report and
    // in the trail.
    let body = "(drop (memory.grow (i32.const 640))) (i32.const 200)";
    let extra = r#"(data (i32.const 200) "\01\00\00\00\00\00\01\00\00\5a\62\02")"#;
    let (report, fx) = run_wat(body, extra, "memory_mib = 64", RuntimeLimits::default()).await;
    let RunOutcome::Failed { message } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    let max = RuntimeLimits::default().max_log_line_bytes;
    assert!(message.len() < max + 100, "{} bytes", message.len());
    assert!(
        message.ends_with(&format!("[{} more bytes cut]", 40_000_000 - max)),
        "{}",
        &message[max..]
    );
    let line = fx.last_line();
    assert!(
        line.len() < 4096 && line.contains("run-end:failed"),
        "{} bytes",
        line.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_resources_past_the_limit_stop_the_run_naming_it() {
    // `get-stdout` in a loop, never dropping the streams: each one an entry in the host's
    // resource table.
    let text = r#"(component
  (import "wasi:io/streams@0.2.0" (instance $streams
    (export "output-stream" (type (sub resource)))))
  (alias export $streams "output-stream" (type $os))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer 1 $os (type $os2))
    (export "output-stream" (type $os3 (eq $os2)))
    (export "get-stdout" (func (result (own $os3))))))
  (core func $get (canon lower (func $stdout "get-stdout")))
  (core module $m
    (import "env" "get" (func $get (result i32)))
    (memory (export "mem") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
    (data (i32.const 16) "\00\00\00\00\64\00\00\00\02\00\00\00")
    (data (i32.const 100) "hi")
    (func (export "run") (param i32 i32) (result i32)
      (local $n i32)
      (loop $l
        (drop (call $get))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $n) (i32.const 3000))))
      (i32.const 16)))
  (core instance $i (instantiate $m (with "env" (instance (export "get" (func $get))))))
  (type $res (result string (error string)))
  (func (export "run") (param "args" (list string)) (result $res)
    (canon lift (core func $i "run") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc"))))
)"#;
    let (report, fx) = run_bytes(wat::parse_str(text).unwrap(), "").await;
    assert_eq!(
        stopped(&report),
        &StopReason::HostLimit {
            which: HostLimit::HostResources,
            max: 1024
        }
    );
    assert!(
        fx.last_line().contains("open host resources"),
        "{}",
        fx.last_line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rhai_empty_log_lines_and_a_huge_error_are_bounded_too() {
    // The same caps through the other runtime: empty lines cost their framing and the line
    // count is capped; a thrown string is cut like a log line.
    let source = r#"for i in 0..50000 { log::info(""); print(""); } let e = "eeeeeeeeee"; for i in 0..16 { e += e; } throw e;"#;
    let dir = tempfile::tempdir().unwrap();
    let hash = warden_policy::Principal::inline_script(source)
        .sha256()
        .to_owned();
    let policy = format!(
        "version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\n[[grant]]\nid = \"s\"\nscript_inline_sha256 = \"{hash}\"\nroles = [\"r\"]\n"
    );
    let policy = Policy::parse(&policy, &dir.path().join("policy.toml")).unwrap();
    let audit =
        AuditTrail::open(&dir.path().join("a.jsonl"), AuditKey::from_bytes([3; 32])).unwrap();
    let broker = Broker::new(
        Arc::new(policy),
        Arc::new(FakeRunner::default()),
        Arc::new(audit),
        Duration::from_secs(30),
    );
    let scripts = warden_runtime::ScriptHost::new(RuntimeLimits::default());
    let compiled = scripts.compile("inline script", source).unwrap();
    let recorder = Arc::new(Recorder::default());
    let request = RunRequest {
        args: vec![],
        observer: recorder.clone(),
        interrupt: Default::default(),
        delegation: None,
    };
    let report = scripts
        .run(
            &compiled,
            warden_policy::Principal::inline_script(source),
            &broker,
            request,
        )
        .await
        .unwrap();
    let kept = recorder.lines.lock().unwrap().len() as u64;
    let max_lines = RuntimeLimits::default().max_log_lines as u64;
    assert_eq!(kept, max_lines);
    assert_eq!(report.log_lines_dropped, 100_000 - max_lines);
    let RunOutcome::Failed { message } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert!(
        message.len() < 9 * 1024 && message.contains("more bytes cut"),
        "{message}"
    );
}
