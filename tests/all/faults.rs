//! Fault drills against the whole product: a real wasm guest (the `probe`, or the
//! `shared-mailbox` plugin) or a Rhai script, through the broker with its policy and audit
//! trail, to exosim misbehaving on purpose — 429 bursts, 503 runs, connections reset before and
//! after a write applies, answers slower than the host-call timeout, a token that expires in the
//! middle of a paged read, and exosim going down and coming back mid-run.
//!
//! Each drill shows three things: a read completes or fails with a typed error; no write is lost
//! silently or applied twice (exosim's state and its request log are the witnesses); and the
//! audit trail has a line for every call saying how it ended. Faults are made deterministic with
//! exosim's queued faults (`after` picks the page) and with a Rhai script held at a known point
//! between two calls, never with races against the clock.

use crate::guests::output_json;
use crate::support::*;
use exosim::{ExchangeFault, ExchangeRequestRecord, QueuedExchangeFault, TokenFault};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{ExchangeSession, Invocation, Parameters, SessionConfig};
use warden_policy::{Policy, Principal};
use warden_runtime::{
    LoadedPlugin, LogLevel, LogSource, PluginHost, RunObserver, RunOutcome, RunReport, RunRequest,
    RuntimeLimits, ScriptHost, TracingObserver,
};

/// What every drill's guest may do: read mailboxes (paged) and rename one.
const ROLES: &str = r#"
[roles.operator]
[[roles.operator.cmdlet]]
name = "Get-Mailbox"
max_result_size = 5000
[roles.operator.cmdlet.parameters]
Identity = { length = [1, 256] }

[[roles.operator.cmdlet]]
name = "Set-Mailbox"
[roles.operator.cmdlet.parameters]
Identity = { length = [1, 256] }
DisplayName = { length = [1, 64] }
"#;

const BUDGETS: &str = "calls = 200\nwrites = 50\nobjects = 100000\nwall_clock_secs = 120";

/// A Rhai twin of the probe's `invoke`: `read ADDRESS` or `write ADDRESS NAME`; returns
/// `#{ok: n}` or `#{error: kind}`.
const CALL_SCRIPT: &str = r#"
let r = #{};
try {
    if ARGS[0] == "read" {
        r.ok = exo::invoke("Get-Mailbox", #{Identity: ARGS[1]}).len();
    } else {
        r.ok = exo::invoke("Set-Mailbox", #{Identity: ARGS[1], DisplayName: ARGS[2]}).len();
    }
} catch (e) {
    r.error = e.kind;
}
r
"#;

/// Renames, waits at the pause, reads the name back, renames again.
const RESTART_SCRIPT: &str = r#"
exo::invoke("Set-Mailbox", #{Identity: ARGS[0], DisplayName: "Before The Restart"});
log::info("pause");
let seen = exo::invoke("Get-Mailbox", #{Identity: ARGS[0]});
exo::invoke("Set-Mailbox", #{Identity: ARGS[0], DisplayName: "After The Restart"});
#{seen: seen[0].DisplayName}
"#;

/// Reads, waits at the pause, then reads and writes (each caught).
const DOWN_SCRIPT: &str = r#"
exo::invoke("Get-Mailbox", #{Identity: ARGS[0]});
log::info("pause");
let r = #{};
try { exo::invoke("Get-Mailbox", #{Identity: ARGS[0]}); r.read = "ok"; } catch (e) { r.read = e.kind; }
try { exo::invoke("Set-Mailbox", #{Identity: ARGS[0], DisplayName: ARGS[1]}); r.write = "ok"; } catch (e) { r.write = e.kind; }
r
"#;

const SCRIPTS: &[&str] = &[CALL_SCRIPT, RESTART_SCRIPT, DOWN_SCRIPT];

struct Setup {
    /// A state file and a port that survives a restart ([`Emulator::start_restartable`]).
    restartable: bool,
    mailboxes: usize,
    page_size: u32,
    /// The broker's limit on one host call.
    call_timeout: Duration,
    /// The session's first back-off (it doubles per attempt).
    base_delay: Duration,
    max_attempts: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            restartable: false,
            mailboxes: 25,
            page_size: 1000,
            call_timeout: Duration::from_secs(30),
            base_delay: Duration::from_millis(20),
            max_attempts: 6,
        }
    }
}

/// exosim, a session tuned for drills, a broker over it with an audit trail, and the runtimes.
struct Drill {
    emu: Emulator,
    session: ExchangeSession,
    call_timeout: Duration,
    broker: Broker,
    audit_path: PathBuf,
    plugins: PluginHost,
    scripts: ScriptHost,
    probe: LoadedPlugin,
    /// A mailbox the drills read and rename.
    target: String,
}

impl Drill {
    async fn start(setup: Setup) -> Self {
        let mailboxes = setup.mailboxes;
        let emu = if setup.restartable {
            Emulator::start_restartable(|o| o.mailboxes = mailboxes).await
        } else {
            Emulator::start_with(|o| o.mailboxes = mailboxes).await
        };
        let env = with(
            emu.env_for(0),
            &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
        );
        let settings = settings(&env, &Default::default()).unwrap();
        let mut config =
            SessionConfig::for_settings(&settings, Some(&emu.exosim.exchange_url())).unwrap();
        config.page_size = setup.page_size;
        config.base_delay = setup.base_delay;
        config.max_attempts = setup.max_attempts;
        let session = ExchangeSession::new(
            config,
            provider(&settings).unwrap(),
            Arc::new(warden_auth::ReqwestTransport::new(Some(emu.exosim.ca_file())).unwrap()),
        )
        .unwrap();
        let probe_path = guest("tests/guests", "probe");
        // One code cache beside the built guests: the drills share the compiled probe.
        let cache = probe_path.with_file_name("faults-code-cache");
        let plugins =
            PluginHost::new(RuntimeLimits::default(), Some(cache)).expect("the plugin host starts");
        let probe = plugins.load(&probe_path).expect("the probe loads");
        let mut policy = format!(
            "version = 1\n{ROLES}\n[[grant]]\nid = \"probe\"\nplugin = \"{}\"\nsha256 = \"{}\"\nroles = [\"operator\"]\n[grant.budgets]\n{BUDGETS}\n",
            probe.name(),
            probe.sha256(),
        );
        for (i, script) in SCRIPTS.iter().enumerate() {
            policy.push_str(&format!(
                "\n[[grant]]\nid = \"script-{i}\"\nscript_inline_sha256 = \"{}\"\nroles = [\"operator\"]\n[grant.budgets]\n{BUDGETS}\n",
                Principal::inline_script(script).sha256(),
            ));
        }
        let audit_path = emu.dir.path().join("audit.jsonl");
        let broker = Self::broker_for(
            &session,
            &policy,
            &emu.dir.path().join("policy.toml"),
            &audit_path,
            setup.call_timeout,
        );
        let target = first_user_mailbox(&emu).await;
        // Warm the session's token cache, so drills count only the tokens their faults cost.
        session
            .invoke(Invocation::new("Get-AcceptedDomain", Parameters::new()))
            .await
            .expect("exosim answers");
        emu.exosim.clear_exchange_log();
        Drill {
            emu,
            session,
            call_timeout: setup.call_timeout,
            broker,
            audit_path,
            plugins,
            scripts: ScriptHost::new(RuntimeLimits::default()),
            probe,
            target,
        }
    }

    fn broker_for(
        session: &ExchangeSession,
        policy: &str,
        policy_path: &std::path::Path,
        audit_path: &std::path::Path,
        call_timeout: Duration,
    ) -> Broker {
        let policy = Policy::parse(policy, policy_path).unwrap();
        let audit = AuditTrail::open(audit_path, AuditKey::from_bytes([0x5a; 32])).unwrap();
        Broker::new(
            Arc::new(policy),
            Arc::new(session.clone()),
            Arc::new(audit),
            call_timeout,
        )
    }

    /// Runs the probe and returns its output JSON and run id. The arguments are copied before
    /// the future starts, so callers can pass temporaries and still run it beside another.
    fn probe<'a>(&'a self, args: &[&str]) -> impl Future<Output = (Value, String)> + use<'a> {
        let args = owned(args);
        async move {
            let report = self
                .plugins
                .run(&self.probe, &self.broker, RunRequest::new(args.clone()))
                .await
                .unwrap_or_else(|e| panic!("{args:?}: the run should start: {e}"));
            (output_json(&report), report.run_id)
        }
    }

    /// The probe's `invoke`, reduced to `ok` or the error's kind.
    async fn probe_call(&self, cmdlet: &str, params: Value) -> (String, String) {
        let (out, run) = self.probe(&["invoke", cmdlet, &params.to_string()]).await;
        (outcome_of(&out), run)
    }

    fn script<'a>(
        &'a self,
        source: &'static str,
        args: &[&str],
        observer: Arc<dyn RunObserver>,
    ) -> impl Future<Output = RunReport> + use<'a> {
        let args = owned(args);
        async move {
            let compiled = self.scripts.compile("inline script", source).unwrap();
            self.scripts
                .run(
                    &compiled,
                    Principal::inline_script(source),
                    &self.broker,
                    RunRequest {
                        args,
                        observer,
                        interrupt: Default::default(),
                        delegation: None,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("the script should start: {e}"))
        }
    }

    /// [`CALL_SCRIPT`], reduced to `ok` or the error's kind.
    async fn script_call(&self, args: &[&str]) -> (String, String) {
        let report = self
            .script(CALL_SCRIPT, args, Arc::new(TracingObserver))
            .await;
        (outcome_of(&output_json(&report)), report.run_id)
    }

    /// How each call of `run` ended, from its audit lines: (cmdlet, `ok` or error kind).
    fn audited_calls(&self, run: &str) -> Vec<(String, String)> {
        audited_calls(&self.audit_path, run)
    }

    /// The requests for `cmdlet` that reached exosim, oldest first.
    fn records(&self, cmdlet: &str) -> Vec<ExchangeRequestRecord> {
        self.emu
            .exosim
            .exchange_log()
            .into_iter()
            .filter(|r| r.cmdlet.as_deref() == Some(cmdlet))
            .collect()
    }

    fn display_name(&self) -> Value {
        self.emu
            .exosim
            .mailbox(&self.emu.tenant_id(), &self.target)
            .expect("the target mailbox exists")["DisplayName"]
            .clone()
    }

    fn queue(&self, cmdlet: &str, after: usize, fault: ExchangeFault) {
        self.emu
            .exosim
            .exchange_faults()
            .queue(&QueuedExchangeFault::for_cmdlet(cmdlet, after, fault));
    }
}

async fn first_user_mailbox(emu: &Emulator) -> String {
    operator_invoke(
        emu,
        "Get-Mailbox",
        json!({"RecipientTypeDetails": "UserMailbox"}),
    )
    .await
    .iter()
    .filter_map(|m| m["PrimarySmtpAddress"].as_str())
    .find(|a| !a.starts_with("admin"))
    .expect("the demo tenant has user mailboxes")
    .to_owned()
}

/// `ok`, or the kind of the error a guest got (probe or [`CALL_SCRIPT`] shape).
fn outcome_of(out: &Value) -> String {
    match &out["error"] {
        Value::Null => "ok".to_owned(),
        Value::String(kind) => kind.clone(),
        error => error["kind"].as_str().unwrap_or("?").to_owned(),
    }
}

/// How each call of `run` ended, from the audit lines in `path`: (cmdlet, `ok` or error kind).
fn audited_calls(path: &std::path::Path, run: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["run_id"] == run && l["kind"] == "call")
        .map(|l| {
            let outcome = if l["outcome"]["status"] == "ok" {
                "ok".to_owned()
            } else {
                l["outcome"]["kind"].as_str().unwrap_or("?").to_owned()
            };
            (l["cmdlet"].as_str().unwrap_or("?").to_owned(), outcome)
        })
        .collect()
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn statuses(records: &[ExchangeRequestRecord]) -> Vec<u16> {
    records.iter().map(|r| r.status).collect()
}

fn applied(records: &[ExchangeRequestRecord]) -> usize {
    records.iter().filter(|r| r.applied).count()
}

/// Holds a Rhai script at `log::info("pause")` until the test lets it go: a guest stopped
/// between two calls, at a known point, whatever the machine's load.
#[derive(Debug)]
struct Gate {
    paused: tokio::sync::mpsc::UnboundedSender<()>,
    resume: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Gate {
    /// The observer to give the run (keep no other handle on it, so that a run that ends
    /// before its pause closes the channel), the pause signal and the release.
    fn new() -> (
        Arc<Gate>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (paused, paused_rx) = tokio::sync::mpsc::unbounded_channel();
        let (resume_tx, resume) = std::sync::mpsc::channel();
        let gate = Gate {
            paused,
            resume: Mutex::new(resume),
        };
        (Arc::new(gate), paused_rx, resume_tx)
    }
}

impl RunObserver for Gate {
    fn log(&self, _source: LogSource, _level: LogLevel, message: &str) {
        if message == "pause" {
            let _ = self.paused.send(());
            // Blocks the script's own thread, not the runtime's.
            let _ = self.resume.lock().unwrap().recv();
        }
    }
    fn progress(&self, _done: u64, _total: Option<u64>, _label: &str) {}
}

/// Waits until exosim has logged a request that got `fault` (polling its log; the fault
/// itself decides when that happens, so this only waits, it never races).
async fn until_fault_logged(emu: &Emulator, fault: &str) {
    tokio::time::timeout(Duration::from_secs(120), async {
        while !emu
            .exosim
            .exchange_log()
            .iter()
            .any(|r| r.fault.as_deref() == Some(fault))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no request got {fault}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_bursts_and_unavailable_runs_are_waited_out_or_surface_typed() {
    let drill = Drill::start(Setup::default()).await;
    let retry = ExchangeFault::TooManyRequests {
        retry_after_secs: 0.2,
    };
    let unavailable = ExchangeFault::ServiceUnavailable;
    // (what, fault, how many in a row, write?, what the guest gets, statuses exosim logs).
    // The session makes 6 attempts: a run of 6 is one too many.
    type Case<'a> = (&'a str, ExchangeFault, usize, bool, &'a str, &'a [u16]);
    let cases: &[Case] = &[
        (
            "429 burst, read",
            retry,
            3,
            false,
            "ok",
            &[429, 429, 429, 200],
        ),
        (
            "429 burst, write",
            retry,
            3,
            true,
            "ok",
            &[429, 429, 429, 200],
        ),
        (
            "429 past the retries, read",
            retry,
            6,
            false,
            "throttled",
            &[429; 6],
        ),
        (
            "429 past the retries, write",
            retry,
            6,
            true,
            "throttled",
            &[429; 6],
        ),
        (
            "503 run, read",
            unavailable,
            3,
            false,
            "ok",
            &[503, 503, 503, 200],
        ),
        (
            "503 run, write",
            unavailable,
            3,
            true,
            "ok",
            &[503, 503, 503, 200],
        ),
        (
            "503 past the retries, read",
            unavailable,
            6,
            false,
            "throttled",
            &[503; 6],
        ),
        (
            "503 past the retries, write",
            unavailable,
            6,
            true,
            "throttled",
            &[503; 6],
        ),
    ];
    for (i, (what, fault, count, write, expected, expected_statuses)) in cases.iter().enumerate() {
        drill.emu.exosim.clear_exchange_log();
        let cmdlet = if *write { "Set-Mailbox" } else { "Get-Mailbox" };
        drill
            .emu
            .exosim
            .exchange_faults()
            .queue(&QueuedExchangeFault {
                count: *count,
                ..QueuedExchangeFault::for_cmdlet(cmdlet, 0, *fault)
            });
        let name_before = drill.display_name();
        let new_name = format!("Drill {i}");
        let params = if *write {
            json!({"Identity": drill.target, "DisplayName": new_name})
        } else {
            json!({"Identity": drill.target})
        };
        let (out, run) = drill.probe(&["invoke", cmdlet, &params.to_string()]).await;
        assert_eq!(outcome_of(&out), *expected, "{what}: {out}");
        let records = drill.records(cmdlet);
        assert_eq!(statuses(&records), *expected_statuses, "{what}");
        assert_eq!(
            applied(&records),
            usize::from(*write && *expected == "ok"),
            "{what}: a write applies exactly once, and only when it was answered"
        );
        if *write {
            let name_now = drill.display_name();
            if *expected == "ok" {
                assert_eq!(name_now, json!(new_name), "{what}");
            } else {
                assert_eq!(
                    name_now, name_before,
                    "{what}: a refused write changed nothing"
                );
            }
        }
        if matches!(fault, ExchangeFault::TooManyRequests { .. }) {
            // Retry-After honoured: each retry arrived at least 200 ms after the 429 before it
            // (1 ms of slack for the log's millisecond truncation).
            for pair in records.windows(2) {
                assert!(
                    pair[1].unix_ms + 1 >= pair[0].unix_ms + 200,
                    "{what}: retried after {} ms",
                    pair[1].unix_ms - pair[0].unix_ms
                );
            }
            if *expected == "throttled" {
                assert_eq!(out["error"]["retry_after_ms"], 200, "{what}: {out}");
            }
        }
        assert_eq!(
            drill.audited_calls(&run),
            [(cmdlet.to_owned(), (*expected).to_owned())],
            "{what}: one audit line saying how the call ended"
        );
        assert_eq!(drill.emu.exosim.exchange_faults().pending(), 0, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_and_gateway_errors_never_double_a_write() {
    let drill = Drill::start(Setup::default()).await;
    // (runtime, write?, fault, what the guest gets, requests exosim saw, applications).
    // A read is retried after any reset. A write reset before it applied cannot be told from
    // one reset after: both are reported unknown and neither is sent again. A gateway timeout
    // is as ambiguous; a transient 500 is the cmdlet's own error, retried for reads only.
    let cases = [
        ("wasm", false, ExchangeFault::GatewayTimeout, "ok", 2, 0),
        (
            "wasm",
            true,
            ExchangeFault::GatewayTimeout,
            "outcome-unknown",
            1,
            0,
        ),
        (
            "wasm",
            false,
            ExchangeFault::TransientServerError,
            "ok",
            2,
            0,
        ),
        (
            "wasm",
            true,
            ExchangeFault::TransientServerError,
            "remote",
            1,
            0,
        ),
        ("wasm", false, ExchangeFault::ResetBeforeApply, "ok", 2, 0),
        ("wasm", false, ExchangeFault::ResetAfterApply, "ok", 2, 0),
        (
            "wasm",
            true,
            ExchangeFault::ResetBeforeApply,
            "outcome-unknown",
            1,
            0,
        ),
        (
            "wasm",
            true,
            ExchangeFault::ResetAfterApply,
            "outcome-unknown",
            1,
            1,
        ),
        ("rhai", false, ExchangeFault::ResetBeforeApply, "ok", 2, 0),
        (
            "rhai",
            true,
            ExchangeFault::ResetBeforeApply,
            "outcome-unknown",
            1,
            0,
        ),
        (
            "rhai",
            true,
            ExchangeFault::ResetAfterApply,
            "outcome-unknown",
            1,
            1,
        ),
    ];
    for (i, (runtime, write, fault, expected, requests, applications)) in
        cases.into_iter().enumerate()
    {
        let what = format!(
            "{runtime} {} {}",
            if write { "write" } else { "read" },
            fault.name()
        );
        drill.emu.exosim.clear_exchange_log();
        let cmdlet = if write { "Set-Mailbox" } else { "Get-Mailbox" };
        drill.queue(cmdlet, 0, fault);
        let name_before = drill.display_name();
        let new_name = format!("Reset Drill {i}");
        let (got, run) = match (runtime, write) {
            ("wasm", true) => {
                drill
                    .probe_call(
                        cmdlet,
                        json!({"Identity": drill.target, "DisplayName": new_name}),
                    )
                    .await
            }
            ("wasm", false) => {
                drill
                    .probe_call(cmdlet, json!({"Identity": drill.target}))
                    .await
            }
            (_, true) => {
                drill
                    .script_call(&["write", &drill.target, &new_name])
                    .await
            }
            (_, false) => drill.script_call(&["read", &drill.target]).await,
        };
        assert_eq!(got, expected, "{what}");
        let records = drill.records(cmdlet);
        assert_eq!(records.len(), requests, "{what}: requests sent");
        assert_eq!(
            records[0].fault.as_deref(),
            Some(fault.name()),
            "{what}: the first request got the fault"
        );
        assert_eq!(applied(&records), applications, "{what}");
        if write {
            let expected_name = if applications == 1 {
                json!(new_name)
            } else {
                name_before
            };
            assert_eq!(drill.display_name(), expected_name, "{what}");
        }
        assert_eq!(
            drill.audited_calls(&run),
            [(cmdlet.to_owned(), expected.to_owned())],
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_in_the_middle_of_a_paged_read_costs_that_page_one_retry() {
    let drill = Drill::start(Setup {
        mailboxes: 60,
        page_size: 10,
        ..Default::default()
    })
    .await;
    let total = drill.emu.exosim.mailbox_count(&drill.emu.tenant_id());
    let pages = total.div_ceil(10);
    for fault in [
        ExchangeFault::TooManyRequests {
            retry_after_secs: 0.1,
        },
        ExchangeFault::ServiceUnavailable,
        ExchangeFault::GatewayTimeout,
        ExchangeFault::TransientServerError,
        ExchangeFault::ResetBeforeApply,
        ExchangeFault::ResetAfterApply,
        ExchangeFault::TokenExpired,
    ] {
        let what = fault.name();
        drill.emu.exosim.clear_exchange_log();
        // The fourth page request gets the fault.
        drill.queue("Get-Mailbox", 3, fault);
        let (out, run) = drill
            .probe(&[
                "stream",
                "Get-Mailbox",
                &json!({"ResultSize": 5000}).to_string(),
            ])
            .await;
        assert_eq!(
            out,
            json!({"pages": pages, "objects": total}),
            "{what}: every object once"
        );
        let records = drill.records("Get-Mailbox");
        assert_eq!(records.len(), pages + 1, "{what}: one request more");
        assert_eq!(records[3].fault.as_deref(), Some(what));
        assert!(
            records[3].query.is_some() && records[3].query == records[4].query,
            "{what}: the same page asked again, not the read restarted"
        );
        assert_eq!(
            drill.audited_calls(&run),
            [("Get-Mailbox".to_owned(), "ok".to_owned())],
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_stops_at_an_unknown_outcome_and_its_rerun_does_not_create_twice() {
    let drill = Drill::start(Setup::default()).await;
    let plugin = drill
        .plugins
        .load(&guest("plugins", "shared-mailbox"))
        .unwrap();
    let policy_file = repo_root().join("plugins/shared-mailbox/policy.toml");
    let policy = std::fs::read_to_string(&policy_file).unwrap().replace(
        "0000000000000000000000000000000000000000000000000000000000000000",
        plugin.sha256(),
    );
    let audit_path = drill.emu.dir.path().join("shared-mailbox-audit.jsonl");
    let broker = Drill::broker_for(
        &drill.session,
        &policy,
        &policy_file,
        &audit_path,
        drill.call_timeout,
    );
    let address = "drill-queue@contoso.onmicrosoft.com";
    let args: Vec<String> = [
        "--name",
        "Drill Queue",
        "--address",
        address,
        "--full-access",
        &drill.target,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    drill.queue("New-Mailbox", 0, ExchangeFault::ResetAfterApply);
    let first = drill
        .plugins
        .run(&plugin, &broker, RunRequest::new(args.clone()))
        .await
        .unwrap();
    let RunOutcome::Failed { message } = &first.outcome else {
        panic!("the plugin should stop: {:?}", first.outcome);
    };
    assert!(
        message.contains("outcome is unknown") && message.contains("New-Mailbox"),
        "it says which write to check: {message}"
    );
    assert!(
        drill
            .emu
            .exosim
            .mailbox(&drill.emu.tenant_id(), address)
            .is_some(),
        "the reset came after the mailbox was created"
    );
    assert!(
        audited_calls(&audit_path, &first.run_id)
            .contains(&("New-Mailbox".to_owned(), "outcome-unknown".to_owned())),
        "{:?}",
        audited_calls(&audit_path, &first.run_id)
    );

    let second = drill
        .plugins
        .run(&plugin, &broker, RunRequest::new(args))
        .await
        .unwrap();
    let out = output_json(&second);
    assert_eq!(
        out["steps"][0],
        json!({"step": "mailbox", "status": "exists"}),
        "{out}"
    );
    assert_eq!(out["steps"][1]["status"], "added", "{out}");
    let created = drill.records("New-Mailbox");
    assert_eq!(
        (created.len(), applied(&created)),
        (1, 1),
        "one New-Mailbox in all, applied once"
    );
    assert_eq!(
        audited_calls(&audit_path, &second.run_id),
        [
            ("Get-Recipient", "ok"),
            ("Get-Mailbox", "ok"),
            ("Get-Recipient", "ok"),
            ("Get-MailboxPermission", "ok"),
            ("Get-Recipient", "ok"),
            ("Get-Recipient", "ok"),
            ("Add-MailboxPermission", "ok"),
        ]
        .map(|(c, o)| (c.to_owned(), o.to_owned())),
        "the rerun's calls, each preceded by the broker's lookups of the identities its policy \
         judges (a domain-constrained Identity, the target, the deny-checked User)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_call_timeout_are_timeouts_and_writes_are_not_repeated() {
    let drill = Drill::start(Setup {
        call_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // Far slower than the call timeout, so the timeout fires first however loaded the machine.
    let slow = ExchangeFault::SlowAnswer { delay_ms: 60_000 };

    drill.queue("Get-Mailbox", 0, slow);
    let (got, read_run) = drill
        .probe_call("Get-Mailbox", json!({"Identity": drill.target}))
        .await;
    assert_eq!(got, "timeout");
    // The next call is answered (on a new connection: the timed-out one was dropped).
    let (got, next_run) = drill
        .probe_call("Get-Mailbox", json!({"Identity": drill.target}))
        .await;
    assert_eq!(got, "ok");
    let reads = drill.records("Get-Mailbox");
    assert_eq!(
        reads.iter().filter(|r| r.fault.is_some()).count(),
        1,
        "the timed-out read was not sent again: {reads:?}"
    );

    for (runtime, name) in [("wasm", "Slow Drill Wasm"), ("rhai", "Slow Drill Rhai")] {
        drill.emu.exosim.clear_exchange_log();
        drill.queue("Set-Mailbox", 0, slow);
        let (got, run) = if runtime == "wasm" {
            drill
                .probe_call(
                    "Set-Mailbox",
                    json!({"Identity": drill.target, "DisplayName": name}),
                )
                .await
        } else {
            drill.script_call(&["write", &drill.target, name]).await
        };
        assert_eq!(got, "outcome-unknown", "{runtime}");
        let writes = drill.records("Set-Mailbox");
        assert_eq!(
            (writes.len(), applied(&writes)),
            (1, 1),
            "{runtime}: sent once, applied once"
        );
        assert_eq!(drill.display_name(), json!(name), "{runtime}");
        assert_eq!(
            drill.audited_calls(&run),
            [("Set-Mailbox".to_owned(), "outcome-unknown".to_owned())],
            "{runtime}"
        );
    }
    assert_eq!(
        drill.audited_calls(&read_run),
        [("Get-Mailbox".to_owned(), "timeout".to_owned())]
    );
    assert_eq!(
        drill.audited_calls(&next_run),
        [("Get-Mailbox".to_owned(), "ok".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_paged_read_is_re_minted_once_or_the_read_fails_cleanly() {
    let drill = Drill::start(Setup {
        mailboxes: 120,
        page_size: 10,
        ..Default::default()
    })
    .await;
    let total = drill.emu.exosim.mailbox_count(&drill.emu.tenant_id());
    let stream = || {
        drill.probe(&[
            "stream",
            "Get-Mailbox",
            &json!({"ResultSize": 5000}).to_string(),
        ])
    };

    // The token expires after three pages.
    drill.emu.exosim.clear_exchange_log();
    let tokens_before = drill.emu.token_requests();
    drill.queue("Get-Mailbox", 3, ExchangeFault::TokenExpired);
    let (out, run) = stream().await;
    assert_eq!(out, json!({"pages": total.div_ceil(10), "objects": total}));
    assert_eq!(
        drill.emu.token_requests() - tokens_before,
        1,
        "one re-mint, not one per page"
    );
    let pages = drill.records("Get-Mailbox");
    let mut expected = vec![200; total.div_ceil(10) + 1];
    expected[3] = 401;
    assert_eq!(statuses(&pages), expected);
    assert!(
        pages[3].query.is_some() && pages[3].query == pages[4].query,
        "the refused page was asked again, not the read restarted"
    );
    assert_eq!(
        drill.audited_calls(&run),
        [("Get-Mailbox".to_owned(), "ok".to_owned())]
    );

    // The same, while the token endpoint is unavailable: the re-mint fails (after the
    // provider's four attempts) and the read ends with what it had, typed.
    drill.emu.exosim.clear_exchange_log();
    let tokens_before = drill.emu.token_requests();
    drill.queue("Get-Mailbox", 3, ExchangeFault::TokenExpired);
    drill.emu.exosim.faults().push_n(
        8,
        TokenFault::ServiceUnavailable {
            retry_after_secs: None,
        },
    );
    let (out, run) = stream().await;
    drill.emu.exosim.faults().clear();
    assert_eq!(out["pages"], 3, "{out}");
    assert_eq!(out["objects"], 30, "{out}");
    assert_eq!(out["error"]["kind"], "unavailable", "{out}");
    assert_eq!(drill.emu.token_requests() - tokens_before, 4);
    assert_eq!(
        statuses(&drill.records("Get-Mailbox")),
        [200, 200, 200, 401]
    );
    assert_eq!(
        drill.audited_calls(&run),
        [("Get-Mailbox".to_owned(), "unavailable".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_restarted_between_calls_serves_the_same_tenant_and_no_write_is_doubled() {
    let drill = Drill::start(Setup {
        restartable: true,
        ..Default::default()
    })
    .await;
    let tokens_before = drill.emu.token_requests();
    let state_file = drill.emu.dir.path().join("exosim-state.json");
    let (gate, mut paused, resume) = Gate::new();
    let run = drill.script(RESTART_SCRIPT, &[&drill.target], gate);
    let restart = async {
        paused.recv().await.expect("the script reached its pause");
        drill.emu.exosim.stop().await;
        let saved = std::fs::read_to_string(&state_file).unwrap();
        assert!(
            saved.contains("Before The Restart"),
            "the write before the stop is in the state file"
        );
        drill.emu.exosim.restart().await.expect("exosim restarts");
        resume.send(()).unwrap();
    };
    let (report, ()) = tokio::join!(run, restart);
    assert_eq!(
        output_json(&report),
        json!({"seen": "Before The Restart"}),
        "the restarted exosim reloaded the tenant the first write changed"
    );
    assert_eq!(drill.display_name(), json!("After The Restart"));
    let writes = drill.records("Set-Mailbox");
    assert_eq!((writes.len(), applied(&writes)), (2, 2), "each write once");
    assert!(
        drill
            .emu
            .exosim
            .exchange_log()
            .iter()
            .all(|r| r.status == 200),
        "the same signing key: the cached token still works after the restart"
    );
    assert_eq!(drill.emu.token_requests(), tokens_before);
    assert_eq!(
        drill.audited_calls(&report.run_id),
        [
            ("Set-Mailbox".to_owned(), "ok".to_owned()),
            ("Get-Mailbox".to_owned(), "ok".to_owned()),
            ("Set-Mailbox".to_owned(), "ok".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_while_exosim_is_down_fail_as_unavailable_and_are_not_applied_later() {
    let drill = Drill::start(Setup {
        restartable: true,
        max_attempts: 3,
        ..Default::default()
    })
    .await;
    let name_before = drill.display_name();
    let (gate, mut paused, resume) = Gate::new();
    let run = drill.script(DOWN_SCRIPT, &[&drill.target, "Renamed While Down"], gate);
    let stop = async {
        paused.recv().await.expect("the script reached its pause");
        drill.emu.exosim.stop().await;
        resume.send(()).unwrap();
    };
    let (report, ()) = tokio::join!(run, stop);
    assert_eq!(
        output_json(&report),
        json!({"read": "unavailable", "write": "unavailable"})
    );
    assert_eq!(
        drill.audited_calls(&report.run_id),
        [
            ("Get-Mailbox".to_owned(), "ok".to_owned()),
            ("Get-Mailbox".to_owned(), "unavailable".to_owned()),
            ("Set-Mailbox".to_owned(), "unavailable".to_owned()),
        ]
    );

    drill.emu.exosim.restart().await.expect("exosim restarts");
    assert!(
        drill.records("Set-Mailbox").is_empty(),
        "the write never reached exosim"
    );
    assert_eq!(
        drill.display_name(),
        name_before,
        "nor was it applied later"
    );
    // After the restart the same script gets through.
    let (gate, mut paused, resume) = Gate::new();
    let run = drill.script(DOWN_SCRIPT, &[&drill.target, "Renamed After"], gate);
    let release = async {
        paused.recv().await.expect("the script reached its pause");
        resume.send(()).unwrap();
    };
    let (report, ()) = tokio::join!(run, release);
    assert_eq!(output_json(&report), json!({"read": "ok", "write": "ok"}));
    let writes = drill.records("Set-Mailbox");
    assert_eq!((writes.len(), applied(&writes)), (1, 1));
    assert_eq!(drill.display_name(), json!("Renamed After"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_by_a_restart_resume_on_a_new_connection_and_a_write_is_not_repeated() {
    // Back-off from 0.5 s: the retries of the cut read outlast the restart.
    let drill = Drill::start(Setup {
        restartable: true,
        mailboxes: 60,
        page_size: 10,
        base_delay: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let total = drill.emu.exosim.mailbox_count(&drill.emu.tenant_id());
    let tokens_before = drill.emu.token_requests();
    drill.emu.exosim.clear_exchange_log();

    // The third page is answered slowly; exosim goes down while it is in flight.
    let slow = ExchangeFault::SlowAnswer { delay_ms: 120_000 };
    drill.queue("Get-Mailbox", 2, slow);
    let restart = async {
        until_fault_logged(&drill.emu, "slow_answer").await;
        drill.emu.exosim.stop().await;
        drill.emu.exosim.restart().await.expect("exosim restarts");
    };
    let read = drill.probe(&[
        "stream",
        "Get-Mailbox",
        &json!({"ResultSize": 5000}).to_string(),
    ]);
    let ((out, run), ()) = tokio::join!(read, restart);
    assert_eq!(out, json!({"pages": total.div_ceil(10), "objects": total}));
    let pages = drill.records("Get-Mailbox");
    assert_eq!(pages.len(), total.div_ceil(10) + 1, "one page asked twice");
    assert_eq!(pages[2].fault.as_deref(), Some("slow_answer"));
    assert!(
        pages[2].query.is_some() && pages[2].query == pages[3].query,
        "the cut page was asked again"
    );
    assert_eq!(
        drill.audited_calls(&run),
        [("Get-Mailbox".to_owned(), "ok".to_owned())]
    );

    // A write in flight when exosim goes down: it had applied (and was saved), so after the
    // restart the tenant has it, once; the guest is told the outcome is unknown.
    drill.emu.exosim.clear_exchange_log();
    drill.queue("Set-Mailbox", 0, slow);
    let restart = async {
        until_fault_logged(&drill.emu, "slow_answer").await;
        drill.emu.exosim.stop().await;
        drill.emu.exosim.restart().await.expect("exosim restarts");
    };
    let write = drill.probe_call(
        "Set-Mailbox",
        json!({"Identity": drill.target, "DisplayName": "Cut By A Restart"}),
    );
    let ((got, run), ()) = tokio::join!(write, restart);
    assert_eq!(got, "outcome-unknown");
    let writes = drill.records("Set-Mailbox");
    assert_eq!((writes.len(), applied(&writes)), (1, 1), "sent once");
    assert_eq!(drill.display_name(), json!("Cut By A Restart"));
    assert_eq!(
        drill.audited_calls(&run),
        [("Set-Mailbox".to_owned(), "outcome-unknown".to_owned())]
    );
    assert_eq!(
        drill.emu.token_requests(),
        tokens_before,
        "the cached token outlived both restarts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_session_would_have_to_wait_for_past_the_call_timeout_is_reported_not_run() {
    // The production back-off (2 s, doubling) and a call timeout shorter than the waits: the
    // broker would give up while the session sleeps before a retry or waits for a token. A
    // write that was refused (401, 429, 503) or never sent (connection refused) did not run,
    // and must be reported so — `throttled` or `unavailable` — not as of unknown outcome.
    let drill = Drill::start(Setup {
        restartable: true,
        call_timeout: Duration::from_secs(1),
        base_delay: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let rename = |name: &str| json!({"Identity": drill.target, "DisplayName": name});
    let name_before = drill.display_name();

    // exosim is down: the connection is refused, and the first back-off is already 1–2 s.
    drill.emu.exosim.stop().await;
    let (got, down_run) = drill.probe_call("Set-Mailbox", rename("While Down")).await;
    drill.emu.exosim.restart().await.expect("exosim restarts");
    assert_eq!(
        got, "unavailable",
        "a write that never left is not of unknown outcome"
    );

    // The token expired, and the token endpoint answers only after 5 s: the write, refused
    // with 401 and not run, would wait for a token it cannot have in time.
    drill
        .emu
        .exosim
        .faults()
        .set_latency(Duration::from_secs(5));
    drill.queue("Set-Mailbox", 0, ExchangeFault::TokenExpired);
    let (got, token_run) = drill
        .probe_call("Set-Mailbox", rename("After A Token"))
        .await;
    drill.emu.exosim.faults().clear();
    assert_eq!(
        got, "unavailable",
        "no token in time: the write was not sent again"
    );

    // A 503 without Retry-After: the back-off before the retry is past the call timeout.
    drill.queue("Set-Mailbox", 0, ExchangeFault::ServiceUnavailable);
    let (got, unavailable_run) = drill.probe_call("Set-Mailbox", rename("After A 503")).await;
    assert_eq!(got, "throttled");
    // The session holds every caller back for the back-off it chose (at most 2 s).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A 429 asking for 10 s.
    drill.queue(
        "Set-Mailbox",
        0,
        ExchangeFault::TooManyRequests {
            retry_after_secs: 10.0,
        },
    );
    let (out, throttled_run) = drill
        .probe(&["invoke", "Set-Mailbox", &rename("After A 429").to_string()])
        .await;
    assert_eq!(outcome_of(&out), "throttled", "{out}");
    assert_eq!(out["error"]["retry_after_ms"], 10_000, "{out}");
    // Every caller of the session now waits out those 10 s; one that cannot wait that long
    // is told so at once, and nothing reaches exosim.
    let (got, paused_run) = drill
        .probe_call("Get-Mailbox", json!({"Identity": drill.target}))
        .await;
    assert_eq!(got, "throttled");

    let writes = drill.records("Set-Mailbox");
    assert_eq!(
        statuses(&writes),
        [401, 503, 429],
        "each refused write was sent once"
    );
    assert_eq!(applied(&writes), 0);
    assert_eq!(drill.display_name(), name_before, "no write ran");
    assert!(
        drill.records("Get-Mailbox").is_empty(),
        "the paused read was not sent"
    );
    for (run, cmdlet, kind) in [
        (&down_run, "Set-Mailbox", "unavailable"),
        (&token_run, "Set-Mailbox", "unavailable"),
        (&unavailable_run, "Set-Mailbox", "throttled"),
        (&throttled_run, "Set-Mailbox", "throttled"),
        (&paused_run, "Get-Mailbox", "throttled"),
    ] {
        assert_eq!(
            drill.audited_calls(run),
            [(cmdlet.to_owned(), kind.to_owned())],
            "{cmdlet} {kind}"
        );
    }
}
