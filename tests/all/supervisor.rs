//! One run supervisor for both runtimes: each limit case is written once, as steps, and run as
//! a real compiled wasm guest (`tests/guests/supervisor-cases`, which plays the steps) and as a
//! real Rhai script made from the same steps, against exosim. The two reports must be
//! identical — how the run ended and why, every log line kept, what was dropped, what was used,
//! and the run's closing audit line — and then match what the case expects.
//!
//! What may differ, and is left out of the comparison: times (elapsed, CPU), Rhai's memory
//! peak (wasm counts memory in its limiter, not in the report), the output's kind (a plugin's
//! text, a script's JSON; compared as text), and the position Rhai adds to an uncaught error
//! (`(line L, column C)`), which is stripped.

use crate::guests::{ROLES, Recorder};
use crate::support::*;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::{Broker, Usage};
use warden_policy::{Policy, Principal};
use warden_runtime::{
    GuestOutput, Interrupt, LOG_LINE_OVERHEAD, LoadedPlugin, LogLevel, LogSource, PluginHost,
    RunObserver, RunOutcome, RunReport, RunRequest, RuntimeLimits, ScriptHost, StopReason,
};

/// One step of a case, played by the wasm guest and written into the Rhai script alike.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A `log` line (`log::info`) of this many `x`.
    Log(usize),
    /// A stdout line (`print`) of this many `y`.
    Print(usize),
    /// Lines (the second number) of this many `y`, in one stdout write (one `print`).
    PrintLines(usize, usize),
    /// `Get-Mailbox` this many times; the first refusal ends the run failed.
    Calls(u64),
    /// A busy loop that never returns.
    Spin,
    /// Ends the run with the guest's own error.
    Fail(&'static str),
    /// A stdout line of this text (`print`).
    Say(&'static str),
}

impl Step {
    fn wasm_args(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .flat_map(|step| match step {
                Step::Log(n) => vec!["log".to_owned(), n.to_string()],
                Step::Print(n) => vec!["print".to_owned(), n.to_string()],
                Step::PrintLines(n, k) => {
                    vec!["print-lines".to_owned(), n.to_string(), k.to_string()]
                }
                Step::Calls(n) => vec!["calls".to_owned(), n.to_string()],
                Step::Spin => vec!["spin".to_owned()],
                Step::Fail(message) => vec!["fail".to_owned(), (*message).to_owned()],
                Step::Say(text) => vec!["say".to_owned(), (*text).to_owned()],
            })
            .collect()
    }

    fn rhai_source(steps: &[Step]) -> String {
        let mut source = String::new();
        for step in steps {
            source.push_str(&match step {
                Step::Log(n) => format!("log::info(\"{}\");\n", "x".repeat(*n)),
                Step::Print(n) => format!("print(\"{}\");\n", "y".repeat(*n)),
                // `print` ends the text with a line break, as the guest's last `\n` does.
                Step::PrintLines(n, k) => {
                    format!("print(\"{}\");\n", vec!["y".repeat(*n); *k].join("\\n"))
                }
                Step::Calls(n) => format!(
                    "for i in 1..={n} {{ try {{ exo::invoke(\"Get-Mailbox\"); }} catch (e) {{ throw `call ${{i}} refused: ${{e.kind}}`; }} }}\n"
                ),
                // Slow operations (a 200 KB scan each), so a clock, not the operation count,
                // is what ends it.
                Step::Spin => "let s = \"\"; for i in 0..20000 { s += \"xxxxxxxxxx\"; } loop { s.contains(\"y\"); }\n".to_owned(),
                Step::Fail(message) => format!("throw \"{message}\";\n"),
                Step::Say(text) => format!("print(\"{text}\");\n"),
            });
        }
        source.push_str("\"done\"\n");
        source
    }
}

/// A limit case: its steps, the grant's budgets, the host's limits, and whether the caller
/// interrupts the run (from the observer's thread, when it sees the run's first log line).
struct Case {
    steps: &'static [Step],
    budgets: &'static str,
    limits: RuntimeLimits,
    interrupt_on_first_line: bool,
}

impl Case {
    fn new(steps: &'static [Step]) -> Self {
        Self {
            steps,
            budgets: "calls = 100",
            limits: RuntimeLimits::default(),
            interrupt_on_first_line: false,
        }
    }

    fn budgets(mut self, budgets: &'static str) -> Self {
        self.budgets = budgets;
        self
    }

    fn limits(mut self, limits: RuntimeLimits) -> Self {
        self.limits = limits;
        self
    }

    fn interrupted_at_first_line(mut self) -> Self {
        self.interrupt_on_first_line = true;
        self
    }
}

/// Records what a guest reports and triggers the run's interrupt when it sees a line: the
/// caller's interrupt, from the thread the line arrives on, at a point of the run's own.
#[derive(Debug)]
struct InterruptAtFirstLine {
    recorder: Arc<Recorder>,
    interrupt: Interrupt,
}

impl RunObserver for InterruptAtFirstLine {
    fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        self.recorder.log(source, level, message);
        self.interrupt.interrupt();
    }
    fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        self.recorder.progress(done, total, label);
    }
}

/// What a run's report and trail say, in the terms both runtimes must agree on.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: &'static str,
    stop: Option<StopReason>,
    failure: Option<String>,
    output: Option<String>,
    lines: Vec<(LogSource, LogLevel, String)>,
    log_bytes_dropped: u64,
    log_lines_dropped: u64,
    usage: Usage,
    /// The closing audit line's rule and its detail.
    run_end: (String, String),
}

/// The wasm guest and the script of one case, granted alike, in front of one broker.
struct Stage {
    _emu: Emulator,
    broker: Broker,
    audit_path: std::path::PathBuf,
    plugins: PluginHost,
    scripts: ScriptHost,
    guest: LoadedPlugin,
}

impl Stage {
    async fn new(case: &Case, script: &str) -> Self {
        let emu = Emulator::start().await;
        let plugins = PluginHost::new(case.limits.clone(), Some(emu.dir.path().join("cache")))
            .expect("the plugin host starts");
        let guest = plugins
            .load(&guest("tests/guests", "supervisor-cases"))
            .expect("the supervisor-cases guest loads");
        let grant = |id: &str, pin: String| {
            format!(
                "\n[[grant]]\nid = \"{id}\"\n{pin}\nroles = [\"reader\"]\n[grant.budgets]\n{}\n",
                case.budgets
            )
        };
        let policy = format!(
            "version = 1\n{ROLES}{}{}",
            grant(
                "wasm",
                format!(
                    "plugin = \"{}\"\nsha256 = \"{}\"",
                    guest.name(),
                    guest.sha256()
                )
            ),
            grant(
                "rhai",
                format!(
                    "script_inline_sha256 = \"{}\"",
                    Principal::inline_script(script).sha256()
                )
            ),
        );
        let policy_path = emu.dir.path().join("policy.toml");
        std::fs::write(&policy_path, policy).unwrap();
        let policy = Arc::new(Policy::load(&policy_path).unwrap());
        let audit_path = emu.dir.path().join("audit.jsonl");
        let audit = Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes([3; 32])).unwrap());
        let broker = Broker::new(
            policy,
            Arc::new(admin_session(&emu)),
            audit,
            Duration::from_secs(30),
        );
        Self {
            _emu: emu,
            broker,
            audit_path,
            scripts: ScriptHost::new(case.limits.clone()),
            plugins,
            guest,
        }
    }

    /// A request whose interrupt (if the case has one) fires from the observer.
    fn request(case: &Case, args: Vec<String>, recorder: Arc<Recorder>) -> RunRequest {
        let interrupt = Interrupt::new();
        let observer: Arc<dyn RunObserver> = if case.interrupt_on_first_line {
            Arc::new(InterruptAtFirstLine {
                recorder,
                interrupt: interrupt.clone(),
            })
        } else {
            recorder
        };
        RunRequest {
            args,
            observer,
            interrupt,
            delegation: None,
        }
    }

    async fn wasm(&self, case: &Case) -> Seen {
        let recorder = Arc::new(Recorder::default());
        let request = Self::request(case, Step::wasm_args(case.steps), recorder.clone());
        let report = self
            .plugins
            .run(&self.guest, &self.broker, request)
            .await
            .expect("the wasm run starts");
        self.seen(&report, &recorder)
    }

    async fn rhai(&self, case: &Case, source: &str) -> Seen {
        let recorder = Arc::new(Recorder::default());
        let script = self.scripts.compile("inline script", source).unwrap();
        let request = Self::request(case, Vec::new(), recorder.clone());
        let report = self
            .scripts
            .run(
                &script,
                Principal::inline_script(source),
                &self.broker,
                request,
            )
            .await
            .expect("the script run starts");
        self.seen(&report, &recorder)
    }

    fn seen(&self, report: &RunReport, recorder: &Recorder) -> Seen {
        let (stop, failure, output) = match &report.outcome {
            RunOutcome::Stopped { reason } => (Some(reason.clone()), None, None),
            RunOutcome::Failed { message } => (None, Some(without_position(message)), None),
            RunOutcome::Completed { output } => {
                let text = match output {
                    GuestOutput::Text(text) => text.clone(),
                    GuestOutput::Json(Value::String(text)) => text.clone(),
                    GuestOutput::Json(value) => value.to_string(),
                };
                (None, None, Some(text))
            }
        };
        let audit = std::fs::read_to_string(&self.audit_path).unwrap();
        let end: Value = audit
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["run_id"] == report.run_id.as_str())
            .rfind(|l| {
                l["rule"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("run-end:"))
            })
            .unwrap_or_else(|| panic!("run {} has no run-end line", report.run_id));
        let rule = end["rule"].as_str().unwrap().to_owned();
        let detail = without_position(end["reason"].as_str().unwrap());
        Seen {
            status: report.outcome.status(),
            stop,
            failure,
            output,
            lines: recorder.lines.lock().unwrap().clone(),
            log_bytes_dropped: report.log_bytes_dropped,
            log_lines_dropped: report.log_lines_dropped,
            usage: report.usage,
            run_end: (rule, detail),
        }
    }
}

/// An uncaught Rhai error's message without the position Rhai adds at its end.
fn without_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(at) if message.ends_with(')') && message[at..].contains(", column ") => {
            message[..at].to_owned()
        }
        _ => message.to_owned(),
    }
}

/// Runs `case` over both runtimes, asserts their reports are identical, and returns it.
async fn alike(case: Case) -> Seen {
    let source = Step::rhai_source(case.steps);
    let stage = Stage::new(&case, &source).await;
    let wasm = stage.wasm(&case).await;
    let rhai = stage.rhai(&case, &source).await;
    assert_eq!(
        wasm, rhai,
        "the wasm guest (left) and the Rhai script (right) were reported differently"
    );
    wasm
}

/// Runs each `NAME: CASE => |seen| CHECKS;` as one test: the case over both runtimes, the
/// reports identical, then the checks on that one report.
macro_rules! over_both_runtimes {
    ($($name:ident: $case:expr => $check:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let seen = alike($case).await;
            let check: fn(&Seen) = $check;
            check(&seen);
        }
    )*};
}

fn line(source: LogSource, text: String) -> (LogSource, LogLevel, String) {
    (source, LogLevel::Info, text)
}

fn xs(n: usize) -> (LogSource, LogLevel, String) {
    line(LogSource::Guest, "x".repeat(n))
}

fn ys(n: usize) -> (LogSource, LogLevel, String) {
    line(LogSource::Stdout, "y".repeat(n))
}

fn short_lines(max_line: usize) -> RuntimeLimits {
    RuntimeLimits {
        max_log_line_bytes: max_line,
        ..RuntimeLimits::default()
    }
}

use Step::{Calls, Fail, Log, Print, PrintLines, Say, Spin};

fn max_lines(lines: usize) -> RuntimeLimits {
    RuntimeLimits {
        max_log_lines: lines,
        ..RuntimeLimits::default()
    }
}

over_both_runtimes! {
    an_over_long_line_is_cut_and_the_short_lines_after_it_are_kept:
        Case::new(&[Log(300), Log(5), Print(300), Print(5)]).limits(short_lines(100))
        => |seen| {
            assert_eq!(seen.output.as_deref(), Some("done"));
            // A string is counted by its text in both runtimes (not Rhai's quoted form).
            assert_eq!(
                seen.run_end,
                ("run-end:completed".to_owned(), "returned 4 bytes".to_owned())
            );
            assert_eq!(seen.lines, vec![xs(100), xs(5), ys(100), ys(5)]);
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (400, 0));
        };

    text_with_line_breaks_is_cut_into_lines_alike:
        // Before the supervisor, Rhai kept `print("a\nb")` as one line; wasm split it.
        Case::new(&[PrintLines(3, 3), Log(1)]).limits(RuntimeLimits {
            max_log_lines: 3,
            ..RuntimeLimits::default()
        })
        => |seen| {
            assert_eq!(seen.lines, vec![ys(3), ys(3), ys(3)]);
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (1, 1));
        };

    the_log_byte_budget_drops_the_first_line_past_it_and_all_after:
        // Three 10-byte lines fit, with 35 bytes to spare: the fourth (42 with its framing)
        // does not, and the 1-byte line after it (33) would, but the log stays a prefix.
        Case::new(&[Log(10), Log(10), Print(10), Log(10), Log(1)]).limits(RuntimeLimits {
            max_log_bytes: 3 * (10 + LOG_LINE_OVERHEAD) + 35,
            ..RuntimeLimits::default()
        })
        => |seen| {
            assert_eq!(seen.output.as_deref(), Some("done"));
            assert_eq!(seen.lines, vec![xs(10), xs(10), ys(10)]);
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (11, 2));
        };

    the_log_line_budget_drops_the_lines_past_it:
        Case::new(&[Log(5), Print(5), Log(5), Print(5), Log(5)]).limits(RuntimeLimits {
            max_log_lines: 3,
            ..RuntimeLimits::default()
        })
        => |seen| {
            assert_eq!(seen.output.as_deref(), Some("done"));
            assert_eq!(seen.lines, vec![xs(5), ys(5), xs(5)]);
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (10, 2));
        };

    the_deadline_stops_a_busy_guest:
        Case::new(&[Log(3), Spin]).budgets("cpu_secs = 60\nwall_clock_secs = 1")
        => |seen| {
            assert_eq!(seen.stop, Some(StopReason::WallClock { limit: Duration::from_secs(1) }));
            assert_eq!(seen.lines, vec![xs(3)]);
            assert_eq!(seen.run_end.0, "run-end:stopped");
        };

    the_cpu_budget_stops_a_busy_guest:
        Case::new(&[Spin]).budgets("cpu_secs = 1\nwall_clock_secs = 30")
        => |seen| {
            assert_eq!(seen.stop, Some(StopReason::Cpu { limit: Duration::from_secs(1) }));
            assert_eq!(seen.run_end.0, "run-end:stopped");
        };

    the_call_budget_refuses_the_call_past_it:
        Case::new(&[Calls(3)]).budgets("calls = 2")
        => |seen| {
            assert_eq!(seen.failure.as_deref(), Some("call 3 refused: budget"));
            assert_eq!(seen.usage.calls, 2);
            assert!(seen.usage.objects > 0, "{seen:?}");
            assert_eq!(
                seen.run_end,
                ("run-end:failed".to_owned(), seen.failure.clone().unwrap())
            );
        };

    an_interrupt_from_another_thread_stops_the_run:
        Case::new(&[Log(4), Spin])
            .budgets("cpu_secs = 60\nwall_clock_secs = 60")
            .interrupted_at_first_line()
        => |seen| {
            assert_eq!(seen.stop, Some(StopReason::Interrupted));
            assert_eq!(seen.lines, vec![xs(4)]);
            assert_eq!(
                seen.run_end,
                ("run-end:stopped".to_owned(), "stopped: interrupted".to_owned())
            );
        };

    a_guest_error_ends_the_run_failed_with_its_message:
        Case::new(&[Log(2), Fail("no such mailbox")])
        => |seen| {
            assert_eq!(seen.failure.as_deref(), Some("no such mailbox"));
            assert_eq!(seen.lines, vec![xs(2)]);
            assert_eq!(
                seen.run_end,
                ("run-end:failed".to_owned(), "no such mailbox".to_owned())
            );
        };

    a_line_past_the_line_cap_is_dropped_once_whoever_ends_it:
        // Rhai's `print` writes its text, then the line break: the last line is ended by a
        // second write after the cap is spent, and must be counted once, as in wasm.
        Case::new(&[PrintLines(3, 4)]).limits(max_lines(3))
        => |seen| {
            assert_eq!(seen.lines, vec![ys(3), ys(3), ys(3)]);
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (3, 1));
        };

    lines_past_the_line_cap_are_each_dropped_once:
        Case::new(&[PrintLines(3, 4), Print(2), PrintLines(1, 2), Log(1)]).limits(max_lines(3))
        => |seen| {
            assert_eq!(seen.lines, vec![ys(3), ys(3), ys(3)]);
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (3 + 2 + 2 + 1, 5));
        };

    a_line_past_the_byte_cap_is_dropped_once_whoever_ends_it:
        Case::new(&[PrintLines(3, 4)]).limits(RuntimeLimits {
            max_log_bytes: 3 * (3 + LOG_LINE_OVERHEAD) + 2,
            ..RuntimeLimits::default()
        })
        => |seen| {
            assert_eq!(seen.lines, vec![ys(3), ys(3), ys(3)]);
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (3, 1));
        };

    a_long_line_is_cut_before_a_character_it_would_split:
        // "yyy" and a 4-byte character, at a 4-byte line limit: the character is dropped
        // whole (4 bytes), never kept as a broken byte or counted twice.
        Case::new(&[Say("yyy\u{1F600}"), Say("\u{1F600}y"), Log(1)]).limits(short_lines(4))
        => |seen| {
            assert_eq!(
                seen.lines,
                vec![ys(3), line(LogSource::Stdout, "\u{1F600}".to_owned()), xs(1)]
            );
            assert_eq!((seen.log_bytes_dropped, seen.log_lines_dropped), (5, 0));
        };
}

/// Who may rename mailboxes: the interrupted-write drill's grant.
const WRITER: &str = r#"
[roles.writer]
[[roles.writer.cmdlet]]
name = "Set-Mailbox"
[roles.writer.cmdlet.parameters]
Identity = { length = [1, 256] }
DisplayName = { length = [1, 64] }
"#;

/// Renames `ARGS[0]` to `ARGS[1]`, catching nothing.
const RENAME: &str =
    r#"exo::invoke("Set-Mailbox", #{Identity: ARGS[0], DisplayName: ARGS[1]}); "done""#;

/// An interrupt that comes while a write is in flight (sent, its answer held back by exosim)
/// does not cut the write: the call runs to the broker's own timeout (the run's deadline),
/// which records it as `outcome-unknown`; the report and the run's closing line say a write's
/// outcome is unknown, the run stands stopped by the interrupt, and the write was sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_never_cuts_a_write_in_flight_and_its_outcome_is_reported_unknown() {
    for (runtime, report, calls, end) in interrupted_write(120_000, 3).await {
        assert_eq!(
            (report.usage.writes, report.usage.writes_unknown),
            (1, 1),
            "{runtime}: {:?}",
            report.usage
        );
        assert_eq!(
            calls,
            [("Set-Mailbox".to_owned(), "outcome-unknown".to_owned())],
            "{runtime}: the write's line says its outcome is unknown"
        );
        assert_eq!(
            end,
            "1 write(s) of unknown outcome (sent, never answered: check before re-running); stopped: interrupted",
            "{runtime}"
        );
    }
}

/// The same interrupt, with an answer that comes well before the deadline: the write is let
/// finish, so its outcome is known (`ok`), not guessed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_interrupted_in_flight_is_let_finish_and_its_answer_recorded() {
    for (runtime, report, calls, end) in interrupted_write(1_500, 120).await {
        assert_eq!(
            (report.usage.writes, report.usage.writes_unknown),
            (1, 0),
            "{runtime}: {:?}",
            report.usage
        );
        assert_eq!(
            calls,
            [("Set-Mailbox".to_owned(), "ok".to_owned())],
            "{runtime}: the write was not cut, its answer is on record"
        );
        assert_eq!(end, "stopped: interrupted", "{runtime}");
    }
}

/// Runs a rename in each runtime, with exosim holding the answer back `delay_ms` and the run
/// interrupted once exosim has the write; asserts the run stands stopped by the interrupt
/// and the write was sent once, and returns each runtime's report, its calls as the trail
/// has them (cmdlet, `ok` or error kind) and its closing line's detail.
async fn interrupted_write(
    delay_ms: u64,
    wall_clock_secs: u64,
) -> Vec<(&'static str, RunReport, Vec<(String, String)>, String)> {
    use exosim::{ExchangeFault, QueuedExchangeFault};
    let emu = Emulator::start().await;
    let target = operator_invoke(
        &emu,
        "Get-Mailbox",
        serde_json::json!({"RecipientTypeDetails": "UserMailbox"}),
    )
    .await
    .iter()
    .filter_map(|m| m["PrimarySmtpAddress"].as_str())
    .find(|a| !a.starts_with("admin"))
    .expect("the demo tenant has user mailboxes")
    .to_owned();
    let plugins = PluginHost::new(RuntimeLimits::default(), Some(emu.dir.path().join("cache")))
        .expect("the plugin host starts");
    let probe = plugins
        .load(&guest("tests/guests", "probe"))
        .expect("the probe loads");
    let budgets = format!("calls = 10\nwrites = 5\nwall_clock_secs = {wall_clock_secs}");
    let policy = format!(
        "version = 1\n{WRITER}\n[[grant]]\nid = \"wasm\"\nplugin = \"{}\"\nsha256 = \"{}\"\nroles = [\"writer\"]\n[grant.budgets]\n{budgets}\n\n[[grant]]\nid = \"rhai\"\nscript_inline_sha256 = \"{}\"\nroles = [\"writer\"]\n[grant.budgets]\n{budgets}\n",
        probe.name(),
        probe.sha256(),
        Principal::inline_script(RENAME).sha256(),
    );
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let audit_path = emu.dir.path().join("audit.jsonl");
    let broker = Broker::new(
        Arc::new(Policy::load(&policy_path).unwrap()),
        Arc::new(admin_session(&emu)),
        Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes([3; 32])).unwrap()),
        Duration::from_secs(30),
    );
    let scripts = ScriptHost::new(RuntimeLimits::default());

    let mut seen = Vec::new();
    for runtime in ["wasm", "rhai"] {
        let name = format!("Interrupted {runtime}");
        emu.exosim.clear_exchange_log();
        emu.exosim
            .exchange_faults()
            .queue(&QueuedExchangeFault::for_cmdlet(
                "Set-Mailbox",
                0,
                ExchangeFault::SlowAnswer { delay_ms },
            ));
        let interrupt = Interrupt::new();
        // The interrupt comes once exosim has the write (and holds back its answer).
        let trigger = async {
            let logged = async {
                while !emu
                    .exosim
                    .exchange_log()
                    .iter()
                    .any(|r| r.fault.as_deref() == Some("slow_answer"))
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(120), logged)
                .await
                .expect("exosim got the write");
            interrupt.interrupt();
        };
        let request = |args: Vec<String>| RunRequest {
            args,
            observer: Arc::new(Recorder::default()),
            interrupt: interrupt.clone(),
            delegation: None,
        };
        let run = async {
            if runtime == "wasm" {
                let params = serde_json::json!({"Identity": target, "DisplayName": name});
                let args = vec!["invoke".into(), "Set-Mailbox".into(), params.to_string()];
                plugins.run(&probe, &broker, request(args)).await
            } else {
                let script = scripts.compile("inline script", RENAME).unwrap();
                let args = vec![target.clone(), name.clone()];
                scripts
                    .run(
                        &script,
                        Principal::inline_script(RENAME),
                        &broker,
                        request(args),
                    )
                    .await
            }
        };
        let (report, ()) = tokio::join!(run, trigger);
        let report = report.expect("the run starts");

        assert_eq!(
            report.outcome,
            RunOutcome::Stopped {
                reason: StopReason::Interrupted
            },
            "{runtime}"
        );
        let lines: Vec<Value> = std::fs::read_to_string(&audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|l: &Value| l["run_id"] == report.run_id.as_str())
            .collect();
        let calls: Vec<(String, String)> = lines
            .iter()
            .filter(|l| l["kind"] == "call")
            .map(|l| {
                (
                    l["cmdlet"].as_str().unwrap().to_owned(),
                    l["outcome"]["kind"].as_str().unwrap_or("ok").to_owned(),
                )
            })
            .collect();
        let end = lines.last().unwrap();
        assert_eq!(end["rule"], "run-end:stopped", "{runtime}");
        let sent = emu
            .exosim
            .exchange_log()
            .iter()
            .filter(|r| r.cmdlet.as_deref() == Some("Set-Mailbox"))
            .count();
        assert_eq!(sent, 1, "{runtime}: the write was sent once, never again");
        let end = end["reason"].as_str().unwrap().to_owned();
        seen.push((runtime, report, calls, end));
    }
    seen
}

/// Ctrl-C (SIGINT) on `warden eval` interrupts the run through its `Interrupt`: the run ends
/// stopped, with its closing audit line, and the command exits as stopped (4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_interrupts_a_cli_run_and_its_end_is_recorded() {
    use tokio::io::AsyncBufReadExt;
    let emu = Emulator::start().await;
    let audit = emu.dir.path().join("audit.jsonl");
    let env = with(
        emu.env_for(0),
        &[
            ("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret")),
            ("WARDEN_AUDIT", &audit.display().to_string()),
            (
                "WARDEN_AUDIT_KEY",
                &emu.dir.path().join("audit.key").display().to_string(),
            ),
        ],
    );
    let source = r#"log::info("started"); loop { }"#;
    let policy = emu.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n{ROLES}\n[[grant]]\nid = \"spin\"\nscript_inline_sha256 = \"{}\"\nroles = [\"reader\"]\n[grant.budgets]\ncpu_secs = 60\nwall_clock_secs = 60\n",
            Principal::inline_script(source).sha256()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["eval", source, "--policy", &policy.display().to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(env)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("warden runs");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Ctrl-C once the guest is running (its first line is shown).
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            let started = line.contains("started");
            seen.push(line);
            if started {
                break;
            }
        }
    })
    .await
    .expect("the script starts");
    assert!(
        seen.iter().any(|l| l.contains("started")),
        "the script never logged: {seen:?}"
    );
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest = async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), rest)
        .await
        .expect("warden ends after Ctrl-C");
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(4), "stopped: {seen:?}");
    let text = std::fs::read_to_string(&audit).unwrap();
    let end: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(end["rule"], "run-end:stopped", "{text}");
    assert_eq!(end["reason"], "stopped: interrupted", "{text}");
}

/// The broker's own rule under the supervisor's: a write stream dropped after its page was
/// asked for (the write may have been sent) is closed `outcome-unknown` and counted so; one
/// dropped before is `abandoned` (never sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stream_dropped_after_its_page_was_asked_for_is_outcome_unknown() {
    use exosim::{ExchangeFault, QueuedExchangeFault};
    let emu = Emulator::start().await;
    let principal = Principal::inline_script(RENAME);
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "version = 1\n{WRITER}\n[[grant]]\nid = \"w\"\nscript_inline_sha256 = \"{}\"\nroles = [\"writer\"]\n[grant.budgets]\nwrites = 5\n",
            principal.sha256()
        ),
    )
    .unwrap();
    let audit_path = emu.dir.path().join("audit.jsonl");
    let audit = Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes([3; 32])).unwrap());
    let broker = Broker::new(
        Arc::new(Policy::load(&policy_path).unwrap()),
        Arc::new(admin_session(&emu)),
        audit.clone(),
        Duration::from_secs(30),
    );
    emu.exosim
        .exchange_faults()
        .queue(&QueuedExchangeFault::for_cmdlet(
            "Set-Mailbox",
            0,
            ExchangeFault::SlowAnswer { delay_ms: 120_000 },
        ));
    let run = broker.begin(principal, None).unwrap();
    let params = r#"{"Identity":"nobody@example.com","DisplayName":"Dropped"}"#;
    let last_outcome = || {
        // Mid-run: write whatever is queued before reading the last line.
        audit.flush().unwrap();
        let text = std::fs::read_to_string(&audit_path).unwrap();
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        last["outcome"]["kind"].as_str().unwrap_or("ok").to_owned()
    };

    let never_asked = broker.stream(&run, "Set-Mailbox", params).await.unwrap();
    drop(never_asked);
    assert_eq!(last_outcome(), "abandoned");
    assert_eq!(run.usage().writes_unknown, 0);

    let mut asked = broker.stream(&run, "Set-Mailbox", params).await.unwrap();
    assert!(!run.write_in_flight());
    // The page is asked for, then the wait is given up from outside (as a caller would).
    let page = broker.next_page(&run, &mut asked);
    let _ = tokio::time::timeout(Duration::from_millis(500), page).await;
    assert!(
        !run.write_in_flight(),
        "the in-flight mark goes with the wait"
    );
    drop(asked);
    assert_eq!(last_outcome(), "outcome-unknown");
    assert_eq!(run.usage().writes_unknown, 1);
}
