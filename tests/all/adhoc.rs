//! Ad hoc one-liners (issue 19): a grant that admits any inline script its principal types
//! (`principal = "operator"`, `script_inline = "any"`) runs arbitrary one-liners within its
//! roles and budgets and nothing else, the hostile Rhai corpus included; every ad hoc run's
//! text and principal are in the trail; the README's one-liners run as written against exosim;
//! a session keeps its variables between lines under one run's budgets; and `warden invoke …
//! --output json | warden eval '…'` feeds the results to the script as `input`.

use crate::guests::{ROLES, Recorder, output_json};
use crate::support::*;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_policy::{OPERATOR, Policy, Principal};
use warden_runtime::{RunOutcome, RunReport, RunRequest, RuntimeLimits, ScriptHost, StopReason};

/// exosim, a broker whose policy gives the operator an ad hoc grant of `ROLES`' reader role
/// (plus a write role it does NOT hold), and a script host.
struct AdHoc {
    emu: Emulator,
    broker: Broker,
    audit_path: std::path::PathBuf,
    scripts: ScriptHost,
}

impl AdHoc {
    async fn start(budgets: &str) -> Self {
        let emu = tenant().await;
        let policy = format!(
            "version = 1\n{ROLES}\n[roles.writer]\n[[roles.writer.cmdlet]]\nname = \"Set-Mailbox\"\n\
             parameters.Identity = {{ length = [1, 256] }}\nparameters.DisplayName = {{ length = [1, 64] }}\n\
             [[grant]]\nid = \"pinned-writer\"\nscript_inline_sha256 = \"{}\"\nroles = [\"writer\"]\n[grant.budgets]\nwrites = 1\n\
             [[grant]]\nid = \"operator-ad-hoc\"\nprincipal = \"operator\"\nscript_inline = \"any\"\nroles = [\"reader\"]\n[grant.budgets]\n{budgets}\n",
            warden_policy::sha256_hex(b"0")
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
            emu,
            broker,
            audit_path,
            scripts: ScriptHost::new(RuntimeLimits::default()),
        }
    }

    /// Runs `source` as `warden eval` would: under the pinned grant if its text has one, else
    /// the operator's ad hoc grant.
    async fn eval(&self, source: &str) -> RunReport {
        let compiled = self.scripts.compile("inline script", source).unwrap();
        let principal = self.broker.policy().inline_principal(OPERATOR, source);
        let request = RunRequest {
            args: Vec::new(),
            observer: Arc::new(Recorder::default()),
            interrupt: Default::default(),
            delegation: None,
        };
        self.scripts
            .run(&compiled, principal, &self.broker, request)
            .await
            .unwrap_or_else(|e| panic!("{source}: the run should start: {e}"))
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn lines_of(&self, run_id: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|l| l["run_id"] == run_id)
            .collect()
    }

    /// The text the trail holds for a run (its `script` parts, joined).
    fn script_text(&self, run_id: &str) -> String {
        self.lines_of(run_id)
            .iter()
            .filter(|l| l["kind"] == "script")
            .map(|l| l["script"]["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn refused_kind(report: &RunReport) -> String {
    match &report.outcome {
        RunOutcome::Failed { message } => message.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_hoc_grant_runs_any_one_liner_within_its_roles_and_budgets_and_nothing_else() {
    let host = AdHoc::start("calls = 3\nobjects = 1000").await;

    // Arbitrary one-liners nobody pinned run, with the helpers.
    for (source, expected) in [
        ("exo::count(\"Get-Mailbox\")", Value::from(MAILBOXES)),
        (
            "let n = 0; for m in exo::stream(\"Get-Mailbox\") { n += 1 } n",
            Value::from(MAILBOXES),
        ),
        (
            "exo::first(\"Get-Mailbox\", #{RecipientTypeDetails: \"SharedMailbox\"}).RecipientTypeDetails",
            Value::from("SharedMailbox"),
        ),
    ] {
        let report = host.eval(source).await;
        assert_eq!(output_json(&report), expected, "{source}");
        assert_eq!(report.grant_id, "operator-ad-hoc");
        // The run's text and who typed it are in the trail, before its first call.
        let lines = host.lines_of(&report.run_id);
        assert_eq!(host.script_text(&report.run_id), source);
        let script_at = lines.iter().position(|l| l["kind"] == "script").unwrap();
        let first_call = lines
            .iter()
            .position(|l| l["cmdlet"] == "Get-Mailbox")
            .unwrap();
        assert!(
            script_at < first_call,
            "the text is recorded before any call"
        );
        for line in &lines {
            assert_eq!(line["principal"]["kind"], "ad-hoc", "{line}");
            assert_eq!(line["principal"]["name"], OPERATOR, "{line}");
            assert_eq!(
                line["principal"]["sha256"],
                warden_policy::sha256_hex(source.as_bytes()),
                "{line}"
            );
        }
    }

    // Outside its roles: a write and an ungranted cmdlet are refused and never reach exosim.
    let before = host.emu.requests_for("Set-Mailbox");
    let report = host
        .eval("exo::invoke(\"Set-Mailbox\", #{Identity: \"a@contoso.onmicrosoft.com\", DisplayName: \"x\"})")
        .await;
    assert!(refused_kind(&report).contains("no role of grant operator-ad-hoc allows Set-Mailbox"));
    assert_eq!(host.emu.requests_for("Set-Mailbox"), before);
    let report = host
        .eval("exo::invoke(\"Get-MailboxPermission\", #{Identity: \"x\"})")
        .await;
    assert!(refused_kind(&report).contains("no role"), "{report:?}");
    assert_eq!(host.emu.requests_for("Get-MailboxPermission"), 0);

    // Its budgets hold: the fourth call of a run is refused.
    let report = host
        .eval("for i in 0..4 { exo::invoke(\"Get-Mailbox\", #{ResultSize: 1}) }")
        .await;
    assert!(refused_kind(&report).contains("calls"), "{report:?}");
    assert_eq!(report.usage.calls, 3);

    // A pinned grant still wins for its exact text; the ad hoc grant does not widen it.
    let pinned = Principal::inline_script("0");
    assert_eq!(host.broker.policy().inline_principal(OPERATOR, "0"), pinned);
    let report = host.eval("0").await;
    assert_eq!(report.grant_id, "pinned-writer");
    assert!(
        host.script_text(&report.run_id).is_empty(),
        "a pinned run records no text"
    );

    // A hostile text (control characters, quotes, 40 KB) is recorded whole and the trail verifies.
    let hostile = format!(
        "let s = \"\\u001b[2J\\\"{}\"; s.len()",
        "\u{202e}x".repeat(10_000)
    );
    let report = host.eval(&hostile).await;
    assert!(
        matches!(report.outcome, RunOutcome::Completed { .. }),
        "{report:?}"
    );
    assert_eq!(host.script_text(&report.run_id), hostile);
    for line in std::fs::read_to_string(&host.audit_path).unwrap().lines() {
        assert!(line.len() < warden_audit::MAX_LINE_BYTES);
    }
    let key = AuditKey::from_bytes([3; 32]);
    assert!(warden_audit::verify(&host.audit_path, &key).unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_rhai_corpus_is_stopped_under_an_ad_hoc_grant_too() {
    let host = AdHoc::start("memory_mib = 16\ncalls = 1000\ncpu_secs = 2").await;
    let mut failures = Vec::new();
    for (name, source) in crate::hostile_rhai::shapes() {
        let report = host.eval(&source).await;
        assert_eq!(report.grant_id, "operator-ad-hoc");
        if !matches!(&report.outcome, RunOutcome::Stopped { reason: StopReason::Memory { limit_bytes } } if *limit_bytes == 16 * 1024 * 1024)
        {
            failures.push(format!("{name}: {:?}", report.outcome));
        }
        if host.script_text(&report.run_id) != source {
            failures.push(format!("{name}: the trail does not hold its text"));
        }
    }
    // An endless loop stops at a limit: the CPU budget, or on a fast idle machine the cap on
    // operations first (both bound it; which comes first is the machine's speed).
    let report = host.eval("loop { }").await;
    if !matches!(
        &report.outcome,
        RunOutcome::Stopped {
            reason: StopReason::Cpu { .. }
        } | RunOutcome::Stopped {
            reason: StopReason::ScriptLimit { .. }
        }
    ) {
        failures.push(format!("endless loop: {:?}", report.outcome));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each helper does its work inside one native call, where Rhai checks no limit: hostile
/// inputs must be measured and refused before the work, a clean memory stop and not a hang or
/// an out-of-memory abort. (The time bound is only a safety net for the old behaviour.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_to_the_one_liner_helpers_stop_at_the_limits_before_the_work() {
    // The CPU budget counts the script's time, which a loaded 2-core machine stretches many
    // times over: it is a safety net here, wide enough never to be what stops a shape.
    let host =
        AdHoc::start("memory_mib = 16\ncalls = 1000\ncpu_secs = 240\nwall_clock_secs = 300").await;
    // 20,000 rows, each with its own key: within the 16 MiB run's array and map limits.
    let wide = "let rows = []; for i in 0..20000 { let m = #{}; m[`k${i}`] = i; rows.push(m); } ";
    let shapes = [
        // 20,000 × 20,000 entries built in one call.
        (
            "select rows × keys",
            "let rows = []; for i in 0..20000 { rows.push(#{}); } \
             let keys = []; for i in 0..20000 { keys.push(`k${i}`); } rows.select(keys).len()"
                .to_owned(),
        ),
        // Quadratic column discovery, then rows × columns cells.
        (
            "table of 20,000 columns",
            format!("{wide} table(rows).len()"),
        ),
        ("csv of 20,000 columns", format!("{wide} csv(rows).len()")),
    ];
    let mut failures = Vec::new();
    for (name, source) in shapes {
        let report = tokio::time::timeout(Duration::from_secs(400), host.eval(&source))
            .await
            .unwrap_or_else(|_| panic!("{name}: the helper ran on past its limits"));
        // A limit stop, or (only the CSV, whose columns are capped, fits) a result: a helper
        // that did the whole quadratic work within the wide CPU budget still fails here.
        let limit_stop = matches!(
            &report.outcome,
            RunOutcome::Stopped {
                reason: StopReason::Memory { .. } | StopReason::ScriptLimit { .. }
            }
        );
        let fits =
            name.starts_with("csv") && matches!(&report.outcome, RunOutcome::Completed { .. });
        if !(limit_stop || fits) {
            failures.push(format!("{name}: {:?}", report.outcome));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `table` shows at most 16 columns and `csv` 64, as `--output table|csv` do; a cell's text is
/// read only as far as the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_and_csv_cap_their_columns() {
    let host = AdHoc::start("memory_mib = 16\ncalls = 1000\ncpu_secs = 5").await;
    let value = |report: RunReport| match report.outcome {
        RunOutcome::Completed {
            output: warden_runtime::GuestOutput::Json(v),
        } => v,
        other => panic!("{other:?}"),
    };
    let row = "let m = #{}; for i in 0..100 { m[`k${i}`] = i; } ";
    let header = value(
        host.eval(&format!("{row} table([m]).split(\"\\n\")[0]"))
            .await,
    );
    assert_eq!(header.as_str().unwrap().split_whitespace().count(), 16);
    let header = value(
        host.eval(&format!("{row} csv([m]).split(\"\\n\")[0]"))
            .await,
    );
    assert_eq!(header.as_str().unwrap().split(',').count(), 64);
    let cell = value(
        host.eval("let s = \"\"; s.pad(100000, 'x'); table([#{ v: s }]).split(\"\\n\")[2]")
            .await,
    );
    assert_eq!(cell.as_str().unwrap().chars().count(), 48);
}

/// Sorting orders numbers by exact value: an integer above 2^53 is not equal to the float it
/// rounds to (the old comparison went through `f64`, which made the order inconsistent, and a
/// sort given an inconsistent order may panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_by_orders_integers_and_floats_by_exact_value() {
    let host = AdHoc::start("memory_mib = 16\ncalls = 1000\ncpu_secs = 5").await;
    let report = host
        .eval(
            "let rows = [#{ k: 9007199254740993, n: \"big\" }, #{ k: 9007199254740992.0, n: \"float\" }, \
             #{ k: 9007199254740992, n: \"int\" }, #{ k: \"B\", n: \"B\" }, #{ k: 'a', n: \"a\" }, #{ n: \"none\" }]; \
             let up = rows.sort_by(\"k\").map(|r| r.n); let down = rows.sort_by(\"k\", true).map(|r| r.n); \
             [up, down, rows.top(\"k\", 1)[0].n]",
        )
        .await;
    let RunOutcome::Completed {
        output: warden_runtime::GuestOutput::Json(v),
    } = report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(
        v,
        serde_json::json!([
            ["float", "int", "big", "a", "B", "none"],
            ["B", "a", "big", "float", "int", "none"],
            "B"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_variables_and_functions_between_lines_under_one_runs_budgets() {
    let host = AdHoc::start("calls = 2").await;
    let session = host
        .scripts
        .open(
            Principal::ad_hoc(OPERATOR, ""),
            &host.broker,
            RunRequest {
                args: Vec::new(),
                observer: Arc::new(Recorder::default()),
                interrupt: Default::default(),
                delegation: None,
            },
            Vec::new(),
            Vec::new(),
        )
        .await
        .unwrap();
    let value = |outcome: RunOutcome| match outcome {
        RunOutcome::Completed {
            output: warden_runtime::GuestOutput::Json(v),
        } => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        value(session.eval("let n = exo::count(\"Get-Mailbox\");").await),
        Value::Null
    );
    assert_eq!(
        value(session.eval("fn twice(x) { x * 2 }").await),
        Value::Null
    );
    assert_eq!(
        value(session.eval("twice(n)").await),
        Value::from(2 * MAILBOXES)
    );
    assert!(session.variables().contains(&"n".to_owned()));
    // A failing line does not end the session; the budget spans the lines.
    assert!(matches!(
        session.eval("throw \"no\"").await,
        RunOutcome::Failed { .. }
    ));
    assert!(matches!(
        session.eval("exo::count(\"Get-Mailbox\")").await,
        RunOutcome::Completed { .. }
    ));
    match session.eval("exo::count(\"Get-Mailbox\")").await {
        RunOutcome::Failed { message } => assert!(message.contains("calls"), "{message}"),
        other => panic!("the third call should be over the budget: {other:?}"),
    }
    let run_id = session.run_id().to_owned();
    let report = session.close().await;
    assert_eq!(report.usage.calls, 2);
    // Every line is in the trail, in order, before its calls.
    let texts: Vec<String> = host
        .lines_of(&run_id)
        .iter()
        .filter(|l| l["kind"] == "script")
        .map(|l| l["script"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 6, "{texts:?}");
    assert_eq!(texts[2], "twice(n)");
    assert!(
        host.lines_of(&run_id).last().unwrap()["rule"]
            .as_str()
            .unwrap()
            .starts_with("run-end:")
    );
}

/// exosim with a tenant of [`MAILBOXES`] (enough for shared and room mailboxes to be seeded).
async fn tenant() -> Emulator {
    Emulator::start_with(|o| o.mailboxes = MAILBOXES).await
}

const MAILBOXES: usize = 100;

/// The `warden eval` one-liners of scripts/README.md, as written.
fn readme_one_liners() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("scripts/README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("warden eval "))
        .map(|l| {
            let start = l.find('\'').expect("a quoted one-liner") + 1;
            let end = l.rfind('\'').expect("a quoted one-liner");
            l[start..end].to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_one_liners_run_under_the_ad_hoc_grant() {
    let emu = tenant().await;
    let env = operator_env(&emu);
    let policy = repo_root()
        .join("scripts/policy.toml")
        .display()
        .to_string();
    let one_liners = readme_one_liners();
    assert!(one_liners.len() >= 10, "{one_liners:?}");
    let mut results = Vec::new();
    for source in &one_liners {
        let out = warden(
            &[
                "eval", "--policy", &policy, source, "--output", "json", "--quiet",
            ],
            &env,
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{source}\n{stderr}");
        let value: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{source}: {e}\n{stdout}"));
        results.push(value);
    }
    // A few answers checked against the tenant: every mailbox counted; the largest first; CSV and a table
    // as text.
    assert_eq!(results[0], Value::from(MAILBOXES));
    let largest = results[2].as_array().unwrap();
    assert_eq!(largest.len(), 10);
    let sizes: Vec<i64> = largest
        .iter()
        .map(|r| r["Bytes"].as_i64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    let full_access = results[3].as_array().unwrap();
    assert!(
        !full_access.is_empty(),
        "the demo tenant delegates each shared mailbox"
    );
    assert!(results.iter().any(|r| {
        r.as_str()
            .is_some_and(|t| t.starts_with("DisplayName,PrimarySmtpAddress\n"))
    }));
    assert!(
        results
            .iter()
            .any(|r| r.as_str().is_some_and(|t| t.starts_with("Group")))
    );
    // Each ran as the operator's ad hoc run, its text in the trail.
    let trail: Vec<Value> = std::fs::read_to_string(emu.dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for source in &one_liners {
        let recorded = trail.iter().any(|l| {
            l["kind"] == "script"
                && l["principal"]["kind"] == "ad-hoc"
                && l["principal"]["name"] == OPERATOR
                && l["script"]["text"] == source.as_str()
        });
        assert!(recorded, "{source} is not in the trail");
    }
}

// stdin is read only by a text that names `input`: a one-liner run with an open pipe that
// never closes (`ssh host warden eval …`, a `while read` loop) neither waits nor eats it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_leaves_stdin_alone_when_the_text_does_not_name_input() {
    let emu = tenant().await;
    let env = operator_env(&emu);
    let policy = repo_root()
        .join("scripts/policy.toml")
        .display()
        .to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "eval", "--policy", &policy, "1 + 1", "--output", "json", "--quiet",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Held open (never written, never closed) until the run has ended.
    let pipe = child.stdin.take().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("eval waited for stdin although its text never names input")
        .unwrap();
    drop(pipe);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0.trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_json_piped_into_eval_is_its_input() {
    let emu = tenant().await;
    let env = operator_env(&emu);
    let policy = repo_root()
        .join("scripts/policy.toml")
        .display()
        .to_string();
    let invoke = warden(&["invoke", "Get-Mailbox", "--output", "json"], &env).await;
    assert!(invoke.status.success(), "{}", text(&invoke).1);

    let eval = |stdin: Vec<u8>, source: &'static str, output: &'static str| {
        let env = env.clone();
        let policy = policy.clone();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
            command
                .args([
                    "eval", "--policy", &policy, source, "--output", output, "--quiet",
                ])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", "/nonexistent")
                .envs(env)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = command.spawn().unwrap();
            let mut pipe = child.stdin.take().unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut pipe, &stdin)
                .await
                .unwrap();
            drop(pipe);
            tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let out = eval(
        invoke.stdout.clone(),
        "input.filter(|m| m.RecipientTypeDetails == \"SharedMailbox\").len()",
        "json",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let shared = String::from_utf8_lossy(&invoke.stdout)
        .lines()
        .filter(|l| l.contains("\"RecipientTypeDetails\":\"SharedMailbox\""))
        .count();
    assert!(shared > 0);
    assert_eq!(text(&out).0.trim(), shared.to_string());

    // Results as CSV, like the other commands.
    let out = eval(
        invoke.stdout.clone(),
        "input.map(|m| #{Name: m.DisplayName, Kind: m.RecipientTypeDetails})",
        "csv",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let csv = text(&out).0;
    assert_eq!(csv.lines().count(), MAILBOXES + 1, "{csv}");

    // Not JSON, or over the cap: refused with the fix, nothing run.
    let out = eval(b"{\"a\":1}\nnot json\n".to_vec(), "input.len()", "json").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("stdin line 2: not JSON"),
        "{}",
        text(&out).1
    );
    let out = eval(vec![b' '; 16 * 1024 * 1024 + 1], "input.len()", "json").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("more than 16777216 bytes"),
        "{}",
        text(&out).1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repl_completes_keeps_history_and_variables_explains_and_survives_ctrl_c() {
    let emu = tenant().await;
    let env = operator_env(&emu);
    let policy = repo_root()
        .join("scripts/policy.toml")
        .display()
        .to_string();
    let history = emu.dir.path().join("repl_history");
    let history_arg = history.display().to_string();
    let transcript = tokio::task::spawn_blocking(move || {
        use expectrl::{ControlCode, Expect, Session};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
        command
            .args(["repl", "--policy", &policy, "--history", &history_arg])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("TERM", "xterm")
            .envs(env);
        let mut repl = Session::spawn(command).expect("the repl starts in a pty");
        // Generous: on a loaded 2-core machine a first line can wait on a cold compile.
        repl.set_expect_timeout(Some(Duration::from_secs(180)));
        let mut seen = String::new();
        // Each line waits for its output, then for the next prompt (the first `warden> ` after
        // the output): a line sent before its prompt is typed ahead, tested on purpose below.
        let mut step = |repl: &mut expectrl::session::OsSession, send: &str, expect: &str| {
            step_to(repl, &mut seen, send, expect);
        };
        step(&mut repl, "", "warden> ");
        // Variables are kept between lines, under the one run.
        // Each step waits for the line's own output, on a line of its own: the prompt is
        // redrawn while typing, and the terminal's escape codes hold digits (`?2004h`).
        step(
            &mut repl,
            "let n = exo::count(\"Get-Mailbox\"); n\r",
            "\r\n100\r\n",
        );
        step(&mut repl, "", "warden> ");
        step(&mut repl, "n * 2\r", "\r\n200\r\n");
        step(&mut repl, "", "warden> ");
        // Type-ahead: two lines in one write reach the editor in one read; the second is
        // kept for the next prompt, not dropped with the first line's read buffer.
        step(&mut repl, "n * 3\rn * 4\r", "\r\n300\r\n");
        step(&mut repl, "", "\r\n400\r\n");
        step(&mut repl, "", "warden> ");
        // Tab completes the exo:: helpers and the grant's cmdlets.
        // (the output is digits then `!`, which the echoed line is not)
        step(
            &mut repl,
            "exo::cou\t\"Get-AcceptedD\t\").to_string() + \"!\"\r",
            "[0-9]!",
        );
        step(&mut repl, "", "warden> ");
        // History: Up brings the last line back.
        step(&mut repl, "\x1b[A\r", "[0-9]!");
        step(&mut repl, "", "warden> ");
        // :json prints the value as JSON (it prints nothing itself: the next prompt says done).
        step(&mut repl, ":json\r", LINE_TAKEN_THEN_PROMPT);
        step(&mut repl, "#{twice: n + n}\r", "\"twice\": ?200");
        step(&mut repl, "", "warden> ");
        // :explain gives the policy's decision without running anything.
        step(
            &mut repl,
            ":explain Set-Mailbox Identity=x\r",
            "no role of grant operator-ad-hoc allows Set-Mailbox",
        );
        step(&mut repl, "", "warden> ");
        step(&mut repl, ":explain Get-Mailbox ResultSize=7\r", "ALLOWED");
        step(&mut repl, "", "warden> ");
        step(&mut repl, ":grants\r", "Get-AcceptedDomain");
        step(&mut repl, "", "warden> ");
        // Ctrl-C stops a line that would run to its CPU budget; the shell and n survive.
        // The line says when it runs (the echo of what was typed holds no `go!`), so Ctrl-C is
        // sent while it runs, not while the editor still holds the terminal in raw mode.
        step(&mut repl, "print(\"g\" + \"o!\"); loop { }\r", "go!");
        repl.send(ControlCode::EndOfText).unwrap();
        step(&mut repl, "", "interrupted");
        step(&mut repl, "", "begins with n");
        step(&mut repl, "", "warden> ");
        step(&mut repl, "n + 1\r", "101");
        step(&mut repl, "", "warden> ");
        repl.send(ControlCode::EndOfTransmission).unwrap();
        step(&mut repl, "", "audit:");
        seen
    })
    .await
    .unwrap();
    assert!(!transcript.contains("panicked"), "{transcript}");

    let history = std::fs::read_to_string(&history).unwrap();
    assert!(
        history.contains("let n = exo::count(\"Get-Mailbox\");"),
        "{history}"
    );
    assert!(
        history.contains("print(\"g\" + \"o!\"); loop { }"),
        "{history}"
    );

    // Every line is on record under the operator, the interrupted run ended stopped, and the
    // trail verifies.
    let trail: Vec<Value> = std::fs::read_to_string(emu.dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let typed: Vec<&str> = trail
        .iter()
        .filter(|l| l["kind"] == "script")
        .map(|l| l["script"]["text"].as_str().unwrap())
        .collect();
    for line in [
        "let n = exo::count(\"Get-Mailbox\"); n",
        "n * 2",
        "n * 4",
        "print(\"g\" + \"o!\"); loop { }",
        "n + 1",
    ] {
        assert!(typed.contains(&line), "{line} not in {typed:?}");
    }
    assert!(
        trail
            .iter()
            .filter(|l| l["kind"] == "script")
            .all(|l| l["principal"]["kind"] == "ad-hoc" && l["principal"]["name"] == OPERATOR)
    );
    assert!(trail.iter().any(|l| {
        l["rule"] == "run-end:stopped"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("interrupted"))
    }));
}

/// The prompt after a line that prints nothing: the editor takes a line by turning bracketed
/// paste off (`?2004l`); prompts redrawn while the line was typed come before that.
const LINE_TAKEN_THEN_PROMPT: &str = r"\?2004l[\s\S]*?warden> ";

/// Sends `send` to the REPL and waits for the regex `expect`, keeping what was seen for the
/// failure message.
fn step_to(repl: &mut expectrl::session::OsSession, seen: &mut String, send: &str, expect: &str) {
    use expectrl::Expect;
    repl.send(send).unwrap();
    let found = repl
        .expect(expectrl::Regex(expect))
        .unwrap_or_else(|e| panic!("after {send:?}, no {expect:?}: {e}\n{seen}"));
    seen.push_str(&String::from_utf8_lossy(found.before()));
    seen.push_str(&String::from_utf8_lossy(&found[0]));
}
