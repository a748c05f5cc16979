//! The script host against a real broker, policy and audit trail over a fake cmdlet runner:
//! the script API makes the same broker calls a plugin would, refusals are catchable maps, and
//! every limit ends a run with the right outcome.

use super::*;
use crate::{LogLevel, LogSource, RunObserver};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;
use warden_audit::{AuditKey, AuditTrail};
use warden_exchange::{CmdletRunner, Invocation, Page, PageStream, ParamValue};
use warden_policy::Policy;

/// Pages every cmdlet returns: 3 pages of 2 objects.
const PAGES: usize = 3;
const PER_PAGE: usize = 2;
/// The cmdlet the fake answers only after this long.
const SLOW_CMDLET: &str = "Get-MailboxStatistics";
const SLOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct FakeRunner {
    calls: Mutex<Vec<Invocation>>,
}

impl FakeRunner {
    fn calls(&self) -> Vec<Invocation> {
        self.calls.lock().unwrap().clone()
    }
}

impl CmdletRunner for FakeRunner {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        let slow = invocation.cmdlet.eq_ignore_ascii_case(SLOW_CMDLET);
        self.calls.lock().unwrap().push(invocation);
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
            tokio::time::sleep(SLOW).await;
        }
        if self.next == PAGES {
            return Ok(None);
        }
        let page = self.next;
        self.next += 1;
        let objects = (0..PER_PAGE)
            .map(|i| {
                let object = json!({
                    "Name": format!("mb{page}-{i}"),
                    "PrimarySmtpAddress": format!("mb{page}-{i}@contoso.com"),
                });
                match object {
                    Value::Object(map) => map,
                    _ => unreachable!(),
                }
            })
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
    runner: Arc<FakeRunner>,
    broker: Broker,
    audit_path: PathBuf,
    host: ScriptHost,
    source: String,
}

fn policy(hash: &str, budgets: &str) -> String {
    format!(
        r#"version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
[roles.reader.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
ResultSize = {{ any = true }}

[[roles.reader.cmdlet]]
name = "{SLOW_CMDLET}"
[roles.reader.cmdlet.parameters]
Identity = {{ length = [1, 256] }}

[roles.writer]
[[roles.writer.cmdlet]]
name = "Set-Mailbox"
[roles.writer.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
EmailAddresses = {{ keys = ["Add", "Remove"], each = {{ items = [1, 10], each = {{ length = [1, 100] }} }} }}
HiddenFromAddressListsEnabled = {{ boolean = true }}
IssueWarningQuota = {{ range = [1, 50000] }}

[[grant]]
id = "test-script"
script_inline_sha256 = "{hash}"
roles = ["reader", "writer"]
[grant.budgets]
writes = 5
{budgets}
"#
    )
}

fn fixture(source: &str, budgets: &str, limits: RuntimeLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let hash = Principal::inline_script(source).sha256().to_owned();
    let policy = Policy::parse(&policy(&hash, budgets), &dir.path().join("policy.toml")).unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let audit = AuditTrail::open(&audit_path, AuditKey::from_bytes([7; 32])).unwrap();
    let runner = Arc::new(FakeRunner::default());
    let broker = Broker::new(
        Arc::new(policy),
        runner.clone(),
        Arc::new(audit),
        Duration::from_secs(30),
    );
    Fixture {
        _dir: dir,
        runner,
        broker,
        audit_path,
        host: ScriptHost::new(limits),
        source: source.to_owned(),
    }
}

impl Fixture {
    async fn run(&self, args: &[&str]) -> (RunReport, Arc<Recorder>) {
        let script = self.host.compile("inline script", &self.source).unwrap();
        let recorder = Arc::new(Recorder::default());
        let request = RunRequest {
            args: args.iter().map(|a| a.to_string()).collect(),
            observer: recorder.clone(),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self
            .host
            .run(
                &script,
                Principal::inline_script(&self.source),
                &self.broker,
                request,
            )
            .await
            .unwrap();
        (report, recorder)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

async fn run_script(source: &str) -> (RunReport, Fixture) {
    let f = fixture(source, "", RuntimeLimits::default());
    let (report, _) = f.run(&[]).await;
    (report, f)
}

fn completed(report: &RunReport) -> &Value {
    match &report.outcome {
        RunOutcome::Completed {
            output: GuestOutput::Json(value),
        } => value,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

fn limit(what: &str) -> StopReason {
    StopReason::ScriptLimit { what: what.into() }
}

/// What a case must end with.
#[derive(Debug)]
enum Expect {
    Output(Value),
    /// A failure whose message contains this.
    Failed(&'static str),
    Stopped(StopReason),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_end_as_expected() {
    let small_memory = "memory_mib = 1";
    let cases: Vec<(&str, &str, &str, Expect)> = vec![
        (
            "invoke returns every object",
            r#"exo::invoke("Get-Mailbox", #{ResultSize: 3}).len()"#,
            "",
            Expect::Output(json!(PAGES * PER_PAGE)),
        ),
        (
            "invoke results are maps",
            r#"exo::invoke("Get-Mailbox")[0].PrimarySmtpAddress"#,
            "",
            Expect::Output(json!("mb0-0@contoso.com")),
        ),
        (
            "stream pages with next",
            r#"let r = exo::stream("Get-Mailbox", #{ResultSize: "Unlimited"});
               let pages = 0; let objects = 0;
               loop { let page = r.next(); if page == () { break; } pages += 1; objects += page.len(); }
               [pages, objects, r.next() == ()]"#,
            "",
            Expect::Output(json!([PAGES, PAGES * PER_PAGE, true])),
        ),
        (
            "for_each calls the closure per object",
            r#"let names = [];
               let n = exo::for_each("Get-Mailbox", #{}, |m| names.push(m.Name));
               [n, names[0], names[5]]"#,
            "",
            Expect::Output(json!([PAGES * PER_PAGE, "mb0-0", "mb2-1"])),
        ),
        (
            "grants and usage",
            r#"exo::invoke("Get-Mailbox");
               let g = exo::grants();
               [g.len(), g.filter(|c| c.cmdlet == "Set-Mailbox")[0].write, exo::usage()]"#,
            "",
            Expect::Output(
                json!([3, true, {"calls": 1, "writes": 0, "objects": 6, "output_bytes": 342, "writes_unknown": 0}]),
            ),
        ),
        (
            "a refusal is a catchable map",
            r#"let out = "not refused";
               try { exo::invoke("Remove-Mailbox", #{Identity: "x"}); }
               catch (e) { out = [e.kind, e.rule != "", e.message.starts_with("denied by ")]; }
               out"#,
            "",
            Expect::Output(json!(["denied", true, true])),
        ),
        (
            "a refusal repeated is the same map, each catch its own copy",
            r#"let first = ();
               try { exo::invoke("Remove-Mailbox", #{Identity: "x"}); } catch (e) { first = e; }
               let kept = first.reason;
               first.reason = "changed by the script"; first.extra = 1;
               let second = ();
               try { exo::invoke("Remove-Mailbox", #{Identity: "y"}); } catch (e) { second = e; }
               let other = ();
               try { exo::invoke("New-Mailbox", #{Name: "y"}); } catch (e) { other = e; }
               [second.reason == kept, second.extra == (), second.message.contains(kept),
                other.reason != kept, other.reason.contains("New-Mailbox")]"#,
            "",
            Expect::Output(json!([true, true, true, true, true])),
        ),
        (
            "a spent budget is a catchable map",
            r#"exo::invoke("Get-Mailbox");
               let out = ();
               try { exo::invoke("Get-Mailbox"); } catch (e) { out = [e.kind, e.budget, e.limit]; }
               out"#,
            "calls = 1",
            Expect::Output(json!(["budget", "calls", 1])),
        ),
        (
            "an uncaught refusal fails with its message and position",
            "let x = 1;\n  exo::invoke(\"Remove-Mailbox\");",
            "",
            Expect::Failed("(line 2, column 8)"),
        ),
        (
            "an uncaught throw fails with its position",
            "let x = 1;\n  throw \"boom\";",
            "",
            Expect::Failed("boom (line 2, column 3)"),
        ),
        (
            "a throw in a function names the function",
            "fn check(n) { if n > 1 { throw `too many: ${n}`; } }\ncheck(2);",
            "",
            Expect::Failed("too many: 2 (line 1, column 26) in function check"),
        ),
        (
            "values without JSON form are invalid parameters",
            r#"let out = ();
               try { exo::invoke("Get-Mailbox", #{Identity: || 1}); } catch (e) { out = [e.kind, e.reason]; }
               out"#,
            "",
            Expect::Output(json!([
                "invalid",
                "parameters: Identity: a value of type Fn has no JSON form"
            ])),
        ),
        ("ARGS", "ARGS", "", Expect::Output(json!(["a", "b c"]))),
        (
            "ARGS is a constant",
            r#"ARGS.push("x")"#,
            "",
            Expect::Failed("constant"),
        ),
        (
            "exit sets the output",
            "exit(42); 1",
            "",
            Expect::Output(json!(42)),
        ),
        (
            "the final value becomes JSON",
            r#"#{a: 1, b: [true, (), 1.5, "s", 'c'], c: #{d: -2}}"#,
            "",
            Expect::Output(json!({"a": 1, "b": [true, null, 1.5, "s", "c"], "c": {"d": -2}})),
        ),
        (
            "a result without JSON form fails",
            r#"exo::stream("Get-Mailbox")"#,
            "",
            Expect::Failed("cannot be output as JSON"),
        ),
        (
            "sleep is not available",
            "sleep(100)",
            "",
            Expect::Failed("sleep is not available"),
        ),
        (
            "an endless loop is stopped",
            // Slow iterations (see below), so the CPU budget, not the operation limit, ends it.
            r#"let s = ""; for i in 0..20000 { s += "xxxxxxxxxx"; } loop { s.contains("y"); }"#,
            "cpu_secs = 1",
            Expect::Stopped(StopReason::Cpu {
                limit: Duration::from_secs(1),
            }),
        ),
        (
            "a busy loop past the deadline is stopped",
            // Each iteration scans 200 KB in one operation, so the wall clock (not the
            // operation limit, however fast the machine) is what ends it.
            r#"let s = ""; for i in 0..20000 { s += "xxxxxxxxxx"; } loop { s.contains("y"); }"#,
            "wall_clock_secs = 1",
            Expect::Stopped(StopReason::WallClock {
                limit: Duration::from_secs(1),
            }),
        ),
        (
            "sleep with a float is not available either",
            "sleep(0.5)",
            "",
            Expect::Failed("sleep is not available"),
        ),
        (
            "a host call past the deadline is stopped",
            r#"exo::invoke("Get-MailboxStatistics")"#,
            "wall_clock_secs = 1",
            Expect::Stopped(StopReason::WallClock {
                limit: Duration::from_secs(1),
            }),
        ),
        (
            "a doubling string hits the string size",
            r#"let s = "x"; loop { s += s; }"#,
            small_memory,
            Expect::Stopped(limit("string size")),
        ),
        (
            "a growing array hits the array size",
            "let a = []; loop { a.push(1); }",
            small_memory,
            Expect::Stopped(limit("array size")),
        ),
        (
            "a growing map hits the map size",
            // `m[key] = value` escapes the check in Rhai 1.27 (only the new item is measured);
            // merging is measured like any function result.
            "let m = #{}; let i = 0; loop { let n = #{}; n[`k${i}`] = i; m += n; i += 1; }",
            small_memory,
            Expect::Stopped(limit("map size")),
        ),
        (
            "deep recursion hits the call depth",
            "fn f(n) { f(n + 1) } f(0)",
            "",
            Expect::Stopped(limit("call depth")),
        ),
        (
            "a throw inside a closure is caught like any other",
            r#"let n = 0; let out = ();
               try { exo::for_each("Get-Mailbox", |m| { n += 1; if n == 3 { throw "stop"; } }); }
               catch (e) { out = [e, n]; }
               out"#,
            "",
            Expect::Output(json!(["stop", 3])),
        ),
    ];
    let mut failures = Vec::new();
    for (name, source, budgets, expect) in cases {
        let f = fixture(source, budgets, RuntimeLimits::default());
        let started = Instant::now();
        let (report, _) = f.run(&["a", "b c"]).await;
        let took = started.elapsed();
        let ok = match (&expect, &report.outcome) {
            (
                Expect::Output(want),
                RunOutcome::Completed {
                    output: GuestOutput::Json(got),
                },
            ) => want == got,
            (Expect::Failed(want), RunOutcome::Failed { message }) => message.contains(want),
            (Expect::Stopped(want), RunOutcome::Stopped { reason }) => want == reason,
            _ => false,
        };
        eprintln!("{name}: {took:?} {:?}", report.outcome);
        if !ok {
            failures.push(format!("{name}: want {expect:?}, got {:?}", report.outcome));
        }
        // Limits stop a run promptly (the slow cmdlet would take 10 s).
        if took > Duration::from_secs(5) {
            failures.push(format!("{name}: took {took:?}"));
        }
        let end = f.audit().into_iter().last().unwrap();
        if end["rule"] != format!("run-end:{}", report.outcome.status()) {
            failures.push(format!("{name}: the trail ends with {end}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_never_reaches_the_runner() {
    let (report, f) = run_script(
        r#"let rule = ();
           try { exo::invoke("Set-Mailbox", #{Identity: "x", Confirm: false}); } catch (e) { rule = e.rule; }
           rule"#,
    )
    .await;
    assert!(completed(&report).is_string());
    assert!(f.runner.calls().is_empty());
    let refusals = f
        .audit()
        .into_iter()
        .filter(|l| l["kind"] == "decision" && l["allowed"] == false)
        .count();
    assert_eq!(refusals, 1, "the refusal is on record");
}

/// The script API and a plugin's `invoke(cmdlet, json)` give the runner the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reach_the_runner_as_a_plugin_would_send_them() {
    let source = r#"exo::invoke("Set-Mailbox", #{
        Identity: "a@contoso.com",
        EmailAddresses: #{Add: ["smtp:x@contoso.com", "smtp:y@contoso.com"], Remove: ["smtp:z@contoso.com"]},
        IssueWarningQuota: 100,
        HiddenFromAddressListsEnabled: true,
    }); 1"#;
    let f = fixture(source, "", RuntimeLimits::default());
    let (report, _) = f.run(&[]).await;
    assert_eq!(completed(&report), &json!(1));
    let calls = f.runner.calls();
    assert_eq!(calls.len(), 1);
    let strings = |items: &[&str]| {
        ParamValue::Array(
            items
                .iter()
                .map(|s| ParamValue::String((*s).into()))
                .collect(),
        )
    };
    let expected = BTreeMap::from([
        (
            "EmailAddresses".to_owned(),
            ParamValue::HashTable(BTreeMap::from([
                (
                    "Add".to_owned(),
                    strings(&["smtp:x@contoso.com", "smtp:y@contoso.com"]),
                ),
                ("Remove".to_owned(), strings(&["smtp:z@contoso.com"])),
            ])),
        ),
        (
            "HiddenFromAddressListsEnabled".to_owned(),
            ParamValue::Bool(true),
        ),
        (
            "Identity".to_owned(),
            ParamValue::String("a@contoso.com".into()),
        ),
        ("IssueWarningQuota".to_owned(), ParamValue::Int(100)),
    ]);
    assert_eq!(calls[0].cmdlet, "Set-Mailbox");
    assert_eq!(calls[0].parameters, expected);

    // The same call as a plugin would make it, with hand-written JSON.
    let run = f
        .broker
        .begin(Principal::inline_script(source), None)
        .unwrap();
    let plugin_json = r#"{"Identity":"a@contoso.com","EmailAddresses":{"Add":["smtp:x@contoso.com","smtp:y@contoso.com"],"Remove":["smtp:z@contoso.com"]},"IssueWarningQuota":100,"HiddenFromAddressListsEnabled":true}"#;
    f.broker
        .invoke(&run, "Set-Mailbox", plugin_json)
        .await
        .unwrap();
    let calls = f.runner.calls();
    assert_eq!(calls[1].cmdlet, calls[0].cmdlet);
    assert_eq!(calls[1].parameters, calls[0].parameters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_result_size_reaches_the_runner() {
    let (report, f) =
        run_script(r#"exo::stream("Get-Mailbox", #{ResultSize: "Unlimited"}).next().len()"#).await;
    assert_eq!(completed(&report), &json!(PER_PAGE));
    assert_eq!(
        f.runner.calls()[0].parameters["ResultSize"],
        ParamValue::ResultSize(None)
    );
    // The stream was dropped before its end: the trail says so before the run's end.
    let lines = f.audit();
    assert!(
        lines.iter().any(|l| l.to_string().contains("abandoned")),
        "{lines:?}"
    );
}

#[test]
fn eval_and_import_are_refused_at_compile_time() {
    let host = ScriptHost::new(RuntimeLimits::default());
    for source in [
        r#"eval("1")"#,
        r#"import "x" as y;"#,
        "let x = 1;\nlet y = eval;",
    ] {
        match host.compile("inline script", source) {
            Err(RuntimeError::Load { problem, fix, .. }) => {
                assert!(problem.starts_with("syntax error at line "), "{problem}");
                assert!(fix.contains("import modules or evaluate code"), "{fix}");
            }
            other => panic!("{source}: {other:?}"),
        }
    }
}

#[test]
fn syntax_errors_say_where() {
    let host = ScriptHost::new(RuntimeLimits::default());
    let cases = [
        ("let x = ;", "syntax error at line 1, column 9: "),
        (
            "let x = 1;\nundefined_variable",
            "syntax error at line 2, column 1: ",
        ),
        ("unknown::f()", "syntax error at line 1, column 1: "),
    ];
    for (source, want) in cases {
        match host.compile("s.rhai", source) {
            Err(RuntimeError::Load { what, problem, .. }) => {
                assert_eq!(what, "s.rhai");
                assert!(problem.starts_with(want), "{source}: {problem}");
            }
            other => panic!("{source}: {other:?}"),
        }
    }
    let script = host.compile("s.rhai", "1 + 1").unwrap();
    assert_eq!(
        script.source_sha256(),
        warden_policy::sha256_hex("1 + 1".as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_progress_reach_the_observer_within_the_caps() {
    let source = r#"
        log::info("0123456789012345678901234");
        log::warn(42);
        progress(1, 10, "mailboxes");
        progress(2, (), "mailboxes");
        debug("d");
        for i in 0..10 { print("abcdefghij"); }
        1"#;
    // Room for the five lines below, each charged its framing.
    let limits = RuntimeLimits {
        max_log_bytes: 45 + 5 * crate::LOG_LINE_OVERHEAD,
        max_log_line_bytes: 20,
        ..RuntimeLimits::default()
    };
    let f = fixture(source, "", limits);
    let (report, recorder) = f.run(&[]).await;
    assert_eq!(completed(&report), &json!(1));
    let lines = recorder.lines.lock().unwrap().clone();
    let expected: Vec<(LogSource, LogLevel, String)> = vec![
        (
            LogSource::Guest,
            LogLevel::Info,
            "01234567890123456789".into(),
        ),
        (LogSource::Guest, LogLevel::Warn, "42".into()),
        (LogSource::Stderr, LogLevel::Debug, "\"d\"".into()),
        (LogSource::Stdout, LogLevel::Info, "abcdefghij".into()),
        (LogSource::Stdout, LogLevel::Info, "abcdefghij".into()),
    ];
    assert_eq!(lines, expected);
    // 5 bytes cut from the first line; 8 of the 10 prints did not fit.
    assert_eq!(report.log_bytes_dropped, 5 + 8 * 10);
    assert_eq!(
        recorder.progress.lock().unwrap().clone(),
        vec![
            (1, Some(10), "mailboxes".to_owned()),
            (2, None, "mailboxes".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_is_stopped() {
    let source = r#"let s = ""; for i in 0..200 { s += "x"; } s"#;
    let limits = RuntimeLimits {
        max_output_bytes: 100,
        ..RuntimeLimits::default()
    };
    let f = fixture(source, "", limits);
    let (report, _) = f.run(&[]).await;
    assert_eq!(
        report.outcome,
        RunOutcome::Stopped {
            reason: StopReason::Output {
                size_bytes: 202,
                limit_bytes: 100
            }
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_a_grant_is_refused() {
    let f = fixture("1", "", RuntimeLimits::default());
    let other = "2";
    let script = f.host.compile("inline script", other).unwrap();
    let refused = f
        .host
        .run(
            &script,
            Principal::inline_script(other),
            &f.broker,
            RunRequest::new(Vec::new()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, RuntimeError::Refused(GuestError::Denied { .. })),
        "{refused:?}"
    );
    // A principal that is not the script's is refused before the broker is asked.
    let script = f.host.compile("inline script", "1").unwrap();
    let refused = f
        .host
        .run(
            &script,
            Principal::inline_script(other),
            &f.broker,
            RunRequest::new(Vec::new()),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, RuntimeError::Refused(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_records_the_run_from_start_to_end() {
    let (report, f) = run_script(r#"exo::invoke("Get-Mailbox").len()"#).await;
    assert_eq!(report.grant_id, "test-script");
    assert_eq!(report.usage.calls, 1);
    let lines = f.audit();
    assert!(lines.iter().all(|l| l["run_id"] == report.run_id.as_str()));
    assert_eq!(lines.first().unwrap()["rule"], "grant:test-script");
    assert_eq!(lines.last().unwrap()["rule"], "run-end:completed");
}

/// A current-thread runtime (what a small CLI might use) drives the host calls too.
#[tokio::test(flavor = "current_thread")]
async fn runs_on_a_current_thread_runtime() {
    let (report, _) = run_script(r#"exo::invoke("Get-Mailbox").len()"#).await;
    assert_eq!(completed(&report), &json!(PAGES * PER_PAGE));
}

#[test]
fn sizes_follow_the_memory_budget() {
    // A value takes at most an eighth of the budget: a string in bytes, an array or map at
    // 64 bytes an item.
    let small = Sizes::for_memory(1024 * 1024);
    assert_eq!(small.string_bytes, 128 * 1024);
    assert_eq!(small.array_items, 2 * 1024);
    assert_eq!(small.map_entries, 2 * 1024);
    let large = Sizes::for_memory(512 * 1024 * 1024);
    assert_eq!(large.string_bytes, 16 * 1024 * 1024);
    assert_eq!(large.array_items, 1_000_000);
    assert_eq!(large.map_entries, 100_000);
}

#[test]
fn expression_depth_is_bounded_at_compile_time() {
    let host = ScriptHost::new(RuntimeLimits::default());
    let nested = |depth: usize| format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
    // Each parenthesis is two levels of the parser's count.
    host.compile("inline script", &nested(25)).unwrap();
    match host.compile("inline script", &nested(10_000)) {
        Err(RuntimeError::Load { problem, .. }) => assert!(problem.contains("syntax error")),
        other => panic!("{other:?}"),
    }
}

/// The CLI shares one host between tasks and may spawn a run.
#[test]
fn the_host_and_its_runs_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let f = fixture("1", "", RuntimeLimits::default());
    let script = f.host.compile("inline script", "1").unwrap();
    send_sync(&f.host);
    send_sync(&script);
    let run = f.host.run(
        &script,
        Principal::inline_script("1"),
        &f.broker,
        RunRequest::new(Vec::new()),
    );
    send(&run);
}

const MIB: u64 = 1024 * 1024;

/// A script under `memory_mib = 16` that holds ~1 MiB strings in `shape`, at most `rounds`
/// of them (so the old, uncounted engine ends the script instead of the machine).
fn holding(shape: &str) -> String {
    format!(
        r#"let s = ""; s.pad(1000000, 'x');
           let keep = []; let m = #{{}}; let slots = []; slots.pad(200, ());
           for i in 0..200 {{ {shape} }}
           "survived""#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_counted_whatever_value_holds_it() {
    let cases = [
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
            "strings down the call stack",
            r#"fn hold(n, s) { let mine = s + n; if n > 0 { hold(n - 1, s) } else { 0 } }
               let s = ""; s.pad(1000000, 'x'); hold(60, s); "survived""#
                .to_owned(),
        ),
        (
            "copies of a captured array",
            holding("let t = [s + i]; let f = || t; keep.push(f); keep.push(f.curry(t));"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, source) in cases {
        let f = fixture(&source, "memory_mib = 16", RuntimeLimits::default());
        let (report, _) = f.run(&[]).await;
        let peak = report.peak_memory_bytes.unwrap();
        eprintln!(
            "{name}: peak {:.1} MiB, {:?}",
            peak as f64 / MIB as f64,
            report.outcome
        );
        if report.outcome
            != (RunOutcome::Stopped {
                reason: StopReason::Memory {
                    limit_bytes: 16 * MIB,
                },
            })
        {
            failures.push(format!("{name}: {:?}", report.outcome));
        }
        // One operation past the limit at most: a ~1 MiB string and its copy.
        if peak > 16 * MIB + 4 * MIB {
            failures.push(format!("{name}: peaked at {peak} bytes"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_script_runs_well_within_its_memory() {
    let source = r#"let out = []; for m in exo::invoke("Get-Mailbox") { out.push(m); }
                    let keys = #{}; for i in 0..1000 { keys[`k${i}`] = i; } [out.len(), keys.len()]"#;
    let f = fixture(source, "memory_mib = 16", RuntimeLimits::default());
    let (report, _) = f.run(&[]).await;
    assert_eq!(completed(&report), &json!([PAGES * PER_PAGE, 1000]));
    let peak = report.peak_memory_bytes.unwrap();
    assert!(peak > 0 && peak < 4 * MIB, "peak {peak}");
}

#[test]
fn an_account_counts_its_threads_allocations_until_they_are_freed_anywhere() {
    memory::self_test().unwrap();
    let mut account = memory::Account::open().unwrap();
    let meter = account.meter();
    let held = {
        let _inside = account.enter();
        vec![0u8; 1 << 20]
    };
    let live = meter.live();
    assert!((1 << 20..(1 << 20) + 4096).contains(&live), "{live}");
    // Allocations outside the account are not its own.
    let other = vec![0u8; 1 << 20];
    assert_eq!(meter.live(), live);
    // A free on another thread gives the bytes back to the run that allocated them.
    std::thread::spawn(move || drop(held)).join().unwrap();
    assert!(meter.live() < 4096, "{}", meter.live());
    assert!(meter.peak() >= 1 << 20);
    drop(other);
    // Once the account is closed, its late frees count for no one.
    let late = {
        let _inside = account.enter();
        vec![0u8; 1 << 16]
    };
    let closed_meter = account.meter();
    drop(account);
    // The account that takes the closed one's slot: ids map to slots in turn, so open (and
    // close) accounts until one lands there.
    let mut next = (0..memory::SLOTS * 4)
        .map(|_| memory::Account::open().unwrap())
        .find(|next| next.meter().shares_slot_with(&closed_meter))
        .expect("an account reuses the closed account's slot");
    let next_meter = next.meter();
    let (before, _held) = {
        let _inside = next.enter();
        let held = std::hint::black_box(vec![1u8; 1 << 17]);
        (next_meter.live(), held)
    };
    assert!(before >= 1 << 17, "{before}");
    drop(late);
    assert_eq!(next_meter.live(), before);
}

#[test]
fn a_block_grown_inside_an_account_is_charged_to_it() {
    memory::self_test().unwrap();
    // Made outside any run (as a value handed in would be), then grown by the run.
    let mut outside: Vec<u8> = Vec::with_capacity(16);
    let mut account = memory::Account::open().unwrap();
    let meter = account.meter();
    {
        let _inside = account.enter();
        outside.reserve(1 << 20);
    }
    let live = meter.live();
    assert!(live >= 1 << 20, "growth was not charged: {live}");
    // Freeing it (anywhere) gives it back to the run it was moved to.
    drop(outside);
    assert!(meter.live() < 4096, "{}", meter.live());
    // A block of one run grown by another moves to the other.
    let mut first = memory::Account::open().unwrap();
    let first_meter = first.meter();
    let mut block: Vec<u8> = {
        let _inside = first.enter();
        Vec::with_capacity(1 << 16)
    };
    assert!(first_meter.live() >= 1 << 16);
    {
        let _inside = account.enter();
        block.reserve(1 << 20);
    }
    assert!(first_meter.live() < 4096, "{}", first_meter.live());
    assert!(meter.live() >= 1 << 20, "{}", meter.live());
    drop(block);
    assert!(meter.live() < 4096, "{}", meter.live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_builtins_refuse_results_over_the_limits_before_building_them() {
    let cases = [
        // 100 KB times 100 KB would be 10 GB; 100,000 replacements are more than 32,768.
        (
            r#"let s = ""; s.pad(100000, 'x'); let t = s; t.replace("x", s); t.len()"#,
            "number of replacements",
        ),
        (
            r#"let s = ""; s.pad(100000, "x1234567"); let t = s; t.replace("x", s); t.len()"#,
            "string size",
        ),
        (
            r#"let s = ""; s.pad(100000, "x1234567"); s.replace('x', s); s.len()"#,
            "string size",
        ),
        // 1.5 MiB split into characters: ~100 MB of boxed strings.
        (
            r#"let s = ""; s.pad(1500000, 'x'); s.split("").len()"#,
            "array size",
        ),
        (
            r#"let s = ""; s.pad(1500000, 'x'); s.to_chars().len()"#,
            "array size",
        ),
        (
            r#"let s = ""; s.pad(1500000, "x "); s.split().len()"#,
            "array size",
        ),
        (
            r#"let s = ""; s.pad(1500000, 'x'); s.split_rev("x").len()"#,
            "array size",
        ),
    ];
    for (source, what) in cases {
        let f = fixture(source, "memory_mib = 16", RuntimeLimits::default());
        let (report, _) = f.run(&[]).await;
        assert_eq!(
            report.outcome,
            RunOutcome::Stopped {
                reason: limit(what)
            },
            "{source}"
        );
        // Refused before anything past the input was built.
        let peak = report.peak_memory_bytes.unwrap();
        assert!(peak < 8 * MIB, "{source}: peak {peak}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_builtins_answer_as_rhai_does() {
    let (report, _) = run_script(
        r#"let a = "a,b,,c"; let w = " x  y "; let e = "";
           let r1 = "aXbXc"; r1.replace("X", "--"); let r2 = "aXb"; r2.replace('X', 'y');
           let r3 = "aXb"; r3.replace("X", 'z'); let r4 = "aXb"; r4.replace('X', "zz");
           let p1 = "ab"; p1.pad(5, 'é'); let p2 = "ab"; p2.pad(7, "xyz"); let p3 = "abc";
           p3.pad(2, 'x'); let p4 = "ab"; p4.pad(9, "");
           [a.split(","), a.split(','), a.split(",", 2), a.split(',', 0), a.split_rev(","),
            a.split_rev(',', 2), w.split(), e.split(), e.split(","), "ab".split(""),
            "héllo".to_chars(), e.to_chars(), r1, r2, r3, r4, p1, p2, p3, p4]"#,
    )
    .await;
    assert_eq!(
        completed(&report),
        &json!([
            ["a", "b", "", "c"],
            ["a", "b", "", "c"],
            ["a", "b,,c"],
            ["a,b,,c"],
            ["c", "", "b", "a"],
            ["c", "a,b,"],
            ["x", "y"],
            [""],
            [""],
            ["", "a", "b", ""],
            ["h", "é", "l", "l", "o"],
            [],
            "a--b--c",
            "ayb",
            "azb",
            "azzb",
            "abééé",
            "abxyzxy",
            "abc",
            "ab"
        ])
    );
}

/// A script's parameters are written as JSON inside the host call, when the policy reads them,
/// and booked as the script's work: calls whose maps take long to write stop at the CPU budget
/// (booked as host time, this loop ran into a wall clock ten times the budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_a_scripts_parameters_is_booked_to_its_cpu_budget() {
    let source = r#"let m = #{};
        for i in 0..50000 { m["P" + i] = "a value of a few dozen bytes, written as JSON"; }
        loop { try { exo::invoke("Get-Mailbox", m) } catch {} }"#;
    let f = fixture(
        source,
        "cpu_secs = 1\nwall_clock_secs = 10\nmemory_mib = 512",
        RuntimeLimits::default(),
    );
    let (report, _) = f.run(&[]).await;
    assert_eq!(
        report.outcome,
        RunOutcome::Stopped {
            reason: StopReason::Cpu {
                limit: Duration::from_secs(1)
            }
        },
    );
}

/// Slow operations, each far under the budget but together far past it: the clock is read
/// between them however few operations pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn few_slow_operations_are_stopped_at_the_cpu_budget() {
    let cases = [
        r#"loop { let t = ""; t.pad(16000000, 'x'); }"#,
        r#"let s = ""; s.pad(8000000, "xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); loop { let t = s; t.replace("x", "yy"); }"#,
        r#"let a = []; a.pad(300000, 0); for i in 0..300000 { a[i] = (i * 7919) % 100003; }
           loop { let b = a; b.sort(); }"#,
    ];
    for source in cases {
        let f = fixture(
            source,
            "cpu_secs = 1\nmemory_mib = 512",
            RuntimeLimits::default(),
        );
        let (report, _) = f.run(&[]).await;
        assert_eq!(
            report.outcome,
            RunOutcome::Stopped {
                reason: StopReason::Cpu {
                    limit: Duration::from_secs(1)
                }
            },
            "{source}"
        );
        let used = report.cpu_used.unwrap();
        eprintln!("{source}: CPU {used:?}");
        // The goal is the larger of 100 ms and 10 % past the budget (measured: 1.00–1.12 s);
        // a descheduled script thread adds to its "CPU" time on a loaded runner, so the
        // assertion keeps a wide margin and still fails the old code (> 5 s).
        assert!(used <= Duration::from_secs(2), "{source}: {used:?}");
    }
}

/// Runs `source` with an interrupt triggered from another thread after `after`.
async fn run_interrupted(source: &str, after: Duration) -> (RunReport, Fixture, Duration) {
    let f = fixture(
        source,
        "cpu_secs = 60\nwall_clock_secs = 60",
        RuntimeLimits::default(),
    );
    let script = f.host.compile("inline script", source).unwrap();
    let interrupt = crate::Interrupt::new();
    let trigger = interrupt.clone();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        trigger.interrupt();
    });
    let started = Instant::now();
    let request = RunRequest::new(vec![]).with_interrupt(interrupt);
    let report = f
        .host
        .run(
            &script,
            Principal::inline_script(source),
            &f.broker,
            request,
        )
        .await
        .unwrap();
    (report, f, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_stops_when_interrupted() {
    let (report, f, took) =
        run_interrupted("let i = 0; loop { i += 1; }", Duration::from_millis(200)).await;
    assert_eq!(
        report.outcome,
        RunOutcome::Stopped {
            reason: StopReason::Interrupted
        }
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let last = f.audit().last().unwrap().to_string();
    assert!(
        last.contains("run-end:stopped") && last.contains("interrupted"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_call_is_cut_short_when_interrupted() {
    // The slow cmdlet answers after 10 s; the interrupt must not wait for it (a read).
    let source = format!(r#"try {{ exo::invoke("{SLOW_CMDLET}") }} catch (e) {{ "caught" }}"#);
    let f = fixture(
        &source,
        "cpu_secs = 60\nwall_clock_secs = 60",
        RuntimeLimits::default(),
    );
    let script = f.host.compile("inline script", &source).unwrap();
    let interrupt = crate::Interrupt::new();
    // The interrupt comes once the call has reached the runner, so it cuts a call in flight.
    let (trigger, runner) = (interrupt.clone(), f.runner.clone());
    let reached = std::thread::spawn(move || {
        let started = Instant::now();
        while !runner
            .calls()
            .iter()
            .any(|c| c.cmdlet.eq_ignore_ascii_case(SLOW_CMDLET))
        {
            assert!(
                started.elapsed() < SLOW,
                "the call never reached the runner"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        trigger.interrupt();
    });
    let started = Instant::now();
    let request = RunRequest::new(vec![]).with_interrupt(interrupt);
    let report = f
        .host
        .run(
            &script,
            Principal::inline_script(&source),
            &f.broker,
            request,
        )
        .await
        .unwrap();
    let took = started.elapsed();
    reached.join().expect("the call reached the runner");
    assert_eq!(
        report.outcome,
        RunOutcome::Stopped {
            reason: StopReason::Interrupted
        }
    );
    assert!(took < SLOW / 2, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_counts_its_cpu_budget() {
    // A session line that never ends is stopped by the CPU budget, as a script run is: the
    // session starts the guest's clocks (before, its CPU time stayed 0 and only the 60 s wall
    // clock stopped it).
    let source =
        r#"let s = ""; for i in 0..20000 { s += "xxxxxxxxxx"; } loop { s.contains("y"); }"#;
    let f = fixture(
        source,
        "cpu_secs = 1\nwall_clock_secs = 60",
        RuntimeLimits::default(),
    );
    let started = Instant::now();
    let session = f
        .host
        .open(
            Principal::inline_script(source),
            &f.broker,
            RunRequest::new(vec![]),
            Vec::new(),
            Vec::new(),
        )
        .await
        .unwrap();
    let outcome = session.eval(source).await;
    assert_eq!(
        outcome,
        RunOutcome::Stopped {
            reason: StopReason::Cpu {
                limit: Duration::from_secs(1),
            }
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let report = session.close().await;
    assert!(
        report.cpu_used.unwrap() >= Duration::from_secs(1),
        "{report:?}"
    );
}
