//! Real compiled guests (tests/guests, built for wasm32-wasip2 by plain `cargo build`) and Rhai
//! scripts, in the real runtimes, against exosim over HTTPS. Each test states a promise of the
//! sandbox and would fail if it broke: an allowed call returns exosim's data, a refused one
//! never reaches exosim, a call blocked in the host is cut off, a changed plugin gets nothing.
//! The attacks (escapes, policy bypasses, resource abuse) are in `hostile.rs`; its fixture is
//! this module's [`GuestHost`].

use crate::support::*;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_policy::{Policy, Principal};
use warden_runtime::{
    GuestOutput, LoadedPlugin, LogLevel, LogSource, PluginHost, RunObserver, RunOutcome, RunReport,
    RunRequest, RuntimeError, RuntimeLimits, ScriptHost, StopReason,
};

/// Collects what a guest reports.
#[derive(Debug, Default)]
pub struct Recorder {
    pub lines: Mutex<Vec<(LogSource, LogLevel, String)>>,
    pub progress: Mutex<Vec<(u64, Option<u64>, String)>>,
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

impl Recorder {
    pub fn bytes(&self) -> usize {
        self.lines.lock().unwrap().iter().map(|l| l.2.len()).sum()
    }
}

/// The roles every guest test grants (to the probe plugin and to inline scripts alike).
pub(crate) const ROLES: &str = r#"
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]
[roles.reader.cmdlet.parameters]
Identity = { length = [1, 256] }
RecipientTypeDetails = { one_of = ["UserMailbox", "SharedMailbox"] }

[[roles.reader.cmdlet]]
name = "Get-Recipient"
output = ["PrimarySmtpAddress"]
[roles.reader.cmdlet.parameters]
ResultSize = { one_of = ["Unlimited"] }

[[deny]]
cmdlet = "Remove-Mailbox"
reason = "no automation removes mailboxes"
"#;

pub struct GuestHost {
    pub emu: Emulator,
    pub broker: Broker,
    pub audit_path: std::path::PathBuf,
    pub key: AuditKey,
    pub plugins: PluginHost,
    pub scripts: ScriptHost,
    pub probe: LoadedPlugin,
}

pub struct Options {
    pub budgets: &'static str,
    pub call_timeout: Duration,
    pub limits: RuntimeLimits,
    pub mailboxes: usize,
    /// Inline scripts to grant the same roles.
    pub scripts: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            budgets: "calls = 100",
            call_timeout: Duration::from_secs(30),
            limits: RuntimeLimits::default(),
            mailboxes: 25,
            scripts: Vec::new(),
        }
    }
}

pub async fn guest_host(options: Options) -> GuestHost {
    let mailboxes = options.mailboxes;
    let emu = Emulator::start_with(|o| o.mailboxes = mailboxes).await;
    let session = admin_session(&emu);
    let plugins = PluginHost::new(options.limits.clone(), Some(emu.dir.path().join("cache")))
        .expect("the plugin host starts");
    let probe = plugins
        .load(&guest("tests/guests", "probe"))
        .expect("the probe loads");
    let mut policy = format!(
        "version = 1\n{ROLES}\n[[grant]]\nid = \"probe\"\nplugin = \"{}\"\nsha256 = \"{}\"\nroles = [\"reader\"]\n[grant.budgets]\n{}\n",
        probe.name(),
        probe.sha256(),
        options.budgets
    );
    for (i, script) in options.scripts.iter().enumerate() {
        policy.push_str(&format!(
            "\n[[grant]]\nid = \"script-{i}\"\nscript_inline_sha256 = \"{}\"\nroles = [\"reader\"]\n[grant.budgets]\n{}\n",
            Principal::inline_script(script).sha256(),
            options.budgets
        ));
    }
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let policy = Arc::new(Policy::load(&policy_path).unwrap());
    let key_bytes: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0xa5);
    let audit_path = emu.dir.path().join("audit.jsonl");
    let audit = Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes(key_bytes)).unwrap());
    let broker = Broker::new(policy, Arc::new(session), audit, options.call_timeout);
    GuestHost {
        emu,
        broker,
        audit_path,
        key: AuditKey::from_bytes(key_bytes),
        plugins,
        scripts: ScriptHost::new(options.limits),
        probe,
    }
}

impl GuestHost {
    pub async fn probe(&self, args: &[&str]) -> (RunReport, Arc<Recorder>) {
        self.run_plugin(&self.probe, args).await
    }

    pub async fn run_plugin(
        &self,
        plugin: &LoadedPlugin,
        args: &[&str],
    ) -> (RunReport, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let request = RunRequest {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            observer: recorder.clone(),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self
            .plugins
            .run(plugin, &self.broker, request)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: the run should start: {e}"));
        (report, recorder)
    }

    pub async fn script(&self, source: &str, args: &[&str]) -> (RunReport, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let compiled = self.scripts.compile("inline script", source).unwrap();
        let request = RunRequest {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            observer: recorder.clone(),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self
            .scripts
            .run(
                &compiled,
                Principal::inline_script(source),
                &self.broker,
                request,
            )
            .await
            .unwrap_or_else(|e| panic!("{source}: the run should start: {e}"));
        (report, recorder)
    }

    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Requests for `cmdlet` that reached exosim.
    pub fn exosim_calls(&self, cmdlet: &str) -> usize {
        self.emu.requests_for(cmdlet)
    }
}

/// The JSON a completed run returned.
pub fn output_json(report: &RunReport) -> Value {
    match &report.outcome {
        RunOutcome::Completed {
            output: GuestOutput::Text(text),
        } => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        RunOutcome::Completed {
            output: GuestOutput::Json(value),
        } => value.clone(),
        other => panic!("the run did not complete: {other:?}"),
    }
}

fn run_end(host: &GuestHost, run_id: &str) -> Value {
    host.audit()
        .into_iter()
        .rfind(|l| {
            l["run_id"] == run_id
                && l["rule"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("run-end:"))
        })
        .unwrap_or_else(|| panic!("run {run_id} has no run-end line"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_exosim_data_when_allowed_and_nothing_reaches_exosim_when_refused() {
    let host = guest_host(Options::default()).await;
    let (report, _) = host
        .probe(&["invoke", "Get-Mailbox", r#"{"ResultSize":3}"#])
        .await;
    let out = output_json(&report);
    let objects = out["ok"].as_array().unwrap_or_else(|| panic!("{out}"));
    assert_eq!(objects.len(), 3);
    for object in objects {
        let mut keys: Vec<&str> = object
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]
        );
        let address = object["PrimarySmtpAddress"].as_str().unwrap();
        assert!(
            host.emu
                .exosim
                .mailbox(&host.emu.tenant_id(), address)
                .is_some(),
            "{address} is exosim's"
        );
    }
    assert_eq!(run_end(&host, &report.run_id)["rule"], "run-end:completed");

    let before = host.emu.exosim.counters().invoke_requests;
    for (cmdlet, params, rule) in [
        (
            "Set-Mailbox",
            r#"{"Identity":"x","DisplayName":"y"}"#,
            "default-deny",
        ),
        ("Remove-Mailbox", r#"{"Identity":"x"}"#, "deny[0]"),
    ] {
        let (report, _) = host.probe(&["invoke", cmdlet, params]).await;
        let out = output_json(&report);
        assert_eq!(out["error"]["kind"], "denied", "{cmdlet}: {out}");
        assert_eq!(out["error"]["rule"], rule, "{cmdlet}: {out}");
    }
    assert_eq!(
        host.emu.exosim.counters().invoke_requests,
        before,
        "no refused call reached exosim"
    );
    assert_eq!(
        host.exosim_calls("Set-Mailbox") + host.exosim_calls("Remove-Mailbox"),
        0
    );
    let refusals = host
        .audit()
        .into_iter()
        .filter(|l| l["kind"] == "decision" && l["allowed"] == false && l["cmdlet"] != "(run)")
        .count();
    assert_eq!(refusals, 2, "each refusal has its audit line");
    assert!(
        warden_audit::verify(&host.audit_path, &host.key)
            .unwrap()
            .ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_streams_results_page_by_page() {
    let host = guest_host(Options {
        mailboxes: 2500,
        budgets: "calls = 10\nobjects = 100000\noutput_bytes = 67108864",
        ..Default::default()
    })
    .await;
    let (report, _) = host
        .probe(&["stream", "Get-Recipient", r#"{"ResultSize":"Unlimited"}"#])
        .await;
    let out = output_json(&report);
    assert!(out["objects"].as_u64().unwrap_or(0) >= 2500, "{out}");
    assert!(
        out["pages"].as_u64().unwrap_or(0) >= 3,
        "several pages: {out}"
    );
    assert_eq!(report.usage.objects, out["objects"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_blocked_in_a_host_call_is_stopped() {
    // Exosim answers after 5 s; the broker gives a call 500 ms.
    const SCRIPT: &str = r#"exo::invoke("Get-Mailbox", #{ResultSize: 1})"#;
    let host = guest_host(Options {
        call_timeout: Duration::from_millis(500),
        scripts: vec![SCRIPT.to_owned()],
        ..Default::default()
    })
    .await;
    host.emu
        .exosim
        .exchange_faults()
        .set_latency(Duration::from_secs(5));
    let (report, _) = host
        .probe(&["invoke", "Get-Mailbox", r#"{"ResultSize":1}"#])
        .await;
    let out = output_json(&report);
    assert_eq!(out["error"]["kind"], "timeout", "{out}");
    let started = std::time::Instant::now();
    let (report, _) = host.script(SCRIPT, &[]).await;
    assert!(
        matches!(&report.outcome, RunOutcome::Failed { message } if message.contains("timed out")),
        "{:?}",
        report.outcome
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the script did not wait for exosim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_clock_covers_time_spent_in_host_calls() {
    let host = guest_host(Options {
        budgets: "wall_clock_secs = 1",
        ..Default::default()
    })
    .await;
    host.emu
        .exosim
        .exchange_faults()
        .set_latency(Duration::from_secs(4));
    let (report, _) = host
        .probe(&["call-spam", "5", "Get-Mailbox", r#"{"ResultSize":1}"#])
        .await;
    // Either the broker's per-call bound (the run's remaining time) answered the guest with a
    // timeout, or the runtime stopped the run: never four seconds of waiting per call.
    match &report.outcome {
        RunOutcome::Stopped { reason } => {
            assert!(matches!(reason, StopReason::WallClock { .. }), "{reason:?}")
        }
        RunOutcome::Completed { .. } => {
            let out = output_json(&report);
            assert_eq!(out["succeeded"], 0, "{out}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        report.elapsed < Duration::from_secs(4),
        "{:?}",
        report.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloadable_plugins_are_refused_with_the_fix() {
    let host = guest_host(Options::default()).await;
    let probe = std::fs::read(guest("tests/guests", "probe")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "text",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "not a WebAssembly",
        ),
        ("core module", b"\0asm\x01\0\0\0".to_vec(), "core module"),
        ("truncated", probe[..probe.len() / 2].to_vec(), ""),
    ];
    for (what, bytes, expected) in cases {
        let error = host.plugins.load_bytes(what, bytes).unwrap_err();
        let RuntimeError::Load { problem, fix, .. } = &error else {
            panic!("{what}: {error}");
        };
        assert!(problem.contains(expected), "{what}: {problem}");
        assert!(!fix.is_empty(), "{what}: a fix is named");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_gets_nothing() {
    let host = guest_host(Options::default()).await;
    let mut bytes = std::fs::read(guest("tests/guests", "probe")).unwrap();
    // A custom section appended: still a valid component, but not the one the grant pins.
    bytes.extend_from_slice(&[0, 5, 4, b'n', b'o', b't', b'e']);
    let changed = host.plugins.load_bytes("probe", bytes).unwrap();
    assert_ne!(changed.sha256(), host.probe.sha256());
    let error = host
        .plugins
        .run(
            &changed,
            &host.broker,
            RunRequest::new(vec!["grants".into()]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Refused(e) if e.to_string().contains(changed.sha256())),
        "{error}"
    );
}
