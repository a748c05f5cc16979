//! The hostile-guest corpus: the `probe` wasm guest and Rhai scripts that try to escape the
//! sandbox, slip a call past the policy, or exhaust the host, against exosim over HTTPS. Every
//! case is refused or stopped with the documented error, leaves its audit line, and exosim's
//! request log (the witness) shows that nothing the policy forbids reached it. Where a call can
//! be written in both runtimes, one table drives it through both and they must agree.

use crate::guests::{GuestHost, Recorder, output_json};
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_policy::{Policy, Principal};
use warden_runtime::{
    PluginHost, RunOutcome, RunReport, RuntimeError, RuntimeLimits, ScriptHost, StopReason,
};

/// What every hostile test grants, to the probe and to each script alike.
const ROLES: &str = r#"
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

[roles.editor]
[[roles.editor.cmdlet]]
name = "Set-Mailbox"
[roles.editor.cmdlet.parameters]
Identity = { length = [1, 256] }
DisplayName = { length = [1, 256] }
HiddenFromAddressListsEnabled = { boolean = true }

[roles.scoped]
[[roles.scoped.cmdlet]]
name = "Add-MailboxPermission"
target = { parameter = "Identity", domains = ["elsewhere.example"] }
[roles.scoped.cmdlet.parameters]
Identity = { length = [1, 256] }
User = { length = [1, 256] }
AccessRights = { one_of = ["FullAccess"] }

[[deny]]
cmdlet = "Remove-Mailbox"
reason = "no automation removes mailboxes"
"#;

/// A host whose probe and `scripts` share [`ROLES`] and `budgets`.
async fn hostile_host(budgets: &str, limits: RuntimeLimits, scripts: &[String]) -> GuestHost {
    let emu = Emulator::start().await;
    let grant =
        format!("roles = [\"reader\", \"editor\", \"scoped\"]\n[grant.budgets]\n{budgets}\n");
    granted_host(emu, limits, ROLES, &grant, scripts)
}

/// A host over `emu` whose policy is `roles` (roles and deny rules) plus one grant for the
/// probe and one per inline script in `scripts`, each ending in `grant` (its `roles = …` and
/// budgets), with the broker, audit trail and both runtimes ready.
pub(crate) fn granted_host(
    emu: Emulator,
    limits: RuntimeLimits,
    roles: &str,
    grant: &str,
    scripts: &[String],
) -> GuestHost {
    let session = Arc::new(admin_session(&emu));
    granted_host_over(emu, session, limits, roles, grant, scripts)
}

/// [`granted_host`] with the broker calling Exchange through `session` (either transport).
pub(crate) fn granted_host_over(
    emu: Emulator,
    session: Arc<dyn warden_exchange::CmdletRunner>,
    limits: RuntimeLimits,
    roles: &str,
    grant: &str,
    scripts: &[String],
) -> GuestHost {
    let plugins = PluginHost::new(limits.clone(), Some(emu.dir.path().join("cache")))
        .expect("the plugin host starts");
    let probe = plugins
        .load(&guest("tests/guests", "probe"))
        .expect("the probe loads");
    let probe_pin = format!(
        "plugin = \"{}\"\nsha256 = \"{}\"",
        probe.name(),
        probe.sha256()
    );
    let script_pins = scripts.iter().enumerate().map(|(i, script)| {
        (
            format!("script-{i}"),
            format!(
                "script_inline_sha256 = \"{}\"",
                Principal::inline_script(script).sha256()
            ),
        )
    });
    let mut policy = format!("version = 1\n{roles}");
    for (id, pin) in std::iter::once(("probe".to_owned(), probe_pin)).chain(script_pins) {
        policy.push_str(&format!("\n[[grant]]\nid = \"{id}\"\n{pin}\n{grant}"));
    }
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let policy = Arc::new(Policy::load(&policy_path).unwrap());
    let key_bytes: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
    let audit_path = emu.dir.path().join("audit.jsonl");
    let audit = Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes(key_bytes)).unwrap());
    let broker = Broker::new(policy, session, audit, Duration::from_secs(30));
    GuestHost {
        emu,
        broker,
        audit_path,
        key: AuditKey::from_bytes(key_bytes),
        plugins,
        scripts: ScriptHost::new(limits),
        probe,
    }
}

/// A Rust string as a Rhai string literal (non-ASCII and control characters escaped).
pub(crate) fn rhai_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A JSON value as a Rhai literal (maps as `#{"k": v}`, null as `()`).
pub(crate) fn rhai_literal(value: &Value) -> String {
    match value {
        Value::Null => "()".into(),
        Value::String(s) => rhai_string(s),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(rhai_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "#{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", rhai_string(k), rhai_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A script making one call whose cmdlet and parameters are Rhai expressions; it returns
/// `#{ok: results}` or `#{error: the thrown map}`, like the probe's `invoke`.
pub(crate) fn call_script(cmdlet: &str, parameters: &str) -> String {
    format!(
        "let c = {cmdlet}; let p = {parameters}; let r = (); \
         try {{ r = #{{ok: exo::invoke(c, p)}}; }} catch (e) {{ r = #{{error: e}}; }} r"
    )
}

/// The error's reason as either runtime words it (wasm `invalid` carries it as `message`).
pub(crate) fn reason_of(error: &Value) -> &str {
    error["reason"]
        .as_str()
        .or_else(|| error["message"].as_str())
        .unwrap_or_default()
}

/// How a call ended, in terms both runtimes share.
pub(crate) fn summary(answer: &Value) -> Value {
    match answer.get("ok") {
        Some(ok) => json!({"ok": ok.as_array().map(Vec::len)}),
        None => json!({"kind": answer["error"]["kind"], "rule": answer["error"]["rule"]}),
    }
}

fn stop_reason(report: &RunReport) -> &StopReason {
    match &report.outcome {
        RunOutcome::Stopped { reason } => reason,
        other => panic!("the run was not stopped: {other:?}"),
    }
}

/// The audit lines of one run.
pub(crate) fn run_lines(host: &GuestHost, run_id: &str) -> Vec<Value> {
    host.audit()
        .into_iter()
        .filter(|l| l["run_id"] == run_id)
        .collect()
}

/// The run's closing rule (`run-end:completed`, …); panics when the run has none.
pub(crate) fn run_end(host: &GuestHost, run_id: &str) -> String {
    run_lines(host, run_id)
        .iter()
        .rev()
        .find_map(|l| l["rule"].as_str().filter(|r| r.starts_with("run-end:")))
        .unwrap_or_else(|| panic!("run {run_id} has no run-end line"))
        .to_owned()
}

/// The decision lines of a run's calls (not the run's own start and end).
pub(crate) fn call_decisions(host: &GuestHost, run_id: &str) -> Vec<Value> {
    run_lines(host, run_id)
        .into_iter()
        .filter(|l| l["kind"] == "decision" && l["cmdlet"] != "(run)")
        .collect()
}

/// What the call should come to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// Reached exosim as the canonical cmdlet with exactly these parameter names; `answer` is
    /// `ok` or the error kind exosim's answer became.
    Reached {
        sent: &'static [&'static str],
        answer: &'static str,
    },
    /// Refused before the network with this kind and rule; the reason contains `says`.
    Refused {
        kind: &'static str,
        rule: &'static str,
        says: &'static str,
    },
}

use Expect::{Reached, Refused};

pub(crate) const fn invalid(rule: &'static str, says: &'static str) -> Expect {
    Refused {
        kind: "invalid",
        rule,
        says,
    }
}

pub(crate) const fn denied(rule: &'static str, says: &'static str) -> Expect {
    Refused {
        kind: "denied",
        rule,
        says,
    }
}

/// One policy-bypass attempt: the cmdlet, the parameter JSON exactly as the probe sends it, and
/// the same parameters as a Rhai expression (`None` where Rhai cannot write them, say so).
struct Trick {
    cmdlet: &'static str,
    wasm: String,
    rhai: Option<String>,
    expect: Expect,
}

fn trick(cmdlet: &'static str, params: Value, expect: Expect) -> Trick {
    Trick {
        cmdlet,
        wasm: params.to_string(),
        rhai: Some(rhai_literal(&params)),
        expect,
    }
}

fn raw(cmdlet: &'static str, wasm: &str, rhai: Option<&str>, expect: Expect) -> Trick {
    Trick {
        cmdlet,
        wasm: wasm.to_owned(),
        rhai: rhai.map(str::to_owned),
        expect,
    }
}

fn bypass_tricks() -> Vec<Trick> {
    let name = |says| invalid("invalid-name", says);
    let params = |says| invalid("invalid-parameters", says);
    vec![
        // The honest call, and case differences PowerShell ignores: allowed, sent canonical.
        trick(
            "Get-Mailbox",
            json!({"ResultSize": 2}),
            Reached {
                sent: &["ResultSize"],
                answer: "ok",
            },
        ),
        trick(
            "get-MAILBOX",
            json!({"rEsUlTsIzE": 2, "recipienttypedetails": "UserMailbox"}),
            Reached {
                sent: &["RecipientTypeDetails", "ResultSize"],
                answer: "ok",
            },
        ),
        // Cmdlet names: whitespace, control characters, lookalikes, pipelines, modules.
        trick("Get-Mailbox ", json!({}), name("U+0020")),
        trick(" Get-Mailbox", json!({}), name("U+0020")),
        trick("Get-Mailbox\t", json!({}), name("U+0009")),
        trick("Get-Mailbox\n", json!({}), name("U+000A")),
        trick("Get-Mailbox\0", json!({}), name("U+0000")),
        trick("Get -Mailbox", json!({}), name("U+0020")),
        trick("Get-M\u{0430}ilbox", json!({}), name("U+0430")),
        trick("\u{ff27}et-Mailbox", json!({}), name("U+FF27")),
        trick("Get-Mailbox\u{200b}", json!({}), name("U+200B")),
        trick("Get\u{2010}Mailbox", json!({}), name("U+2010")),
        trick("Get\u{2013}Mailbox", json!({}), name("U+2013")),
        trick("Get-\u{00ad}Mailbox", json!({}), name("U+00AD")),
        trick("Get-Mailbo\u{0078}\u{0301}", json!({}), name("U+0301")),
        trick("Get-Mailbox; Remove-Mailbox x", json!({}), name("';'")),
        trick("Get-Mailbox | Remove-Mailbox", json!({}), name("U+0020")),
        trick("Microsoft.Exchange\\Get-Mailbox", json!({}), name("'.'")),
        trick("&(\"Remove-Mailbox\")", json!({}), name("'&'")),
        trick("", json!({}), name("empty")),
        // Cmdlet aliases and abbreviations are other names, which no role grants.
        trick("Get-Mbx", json!({}), denied("default-deny", "no role")),
        trick("Get-Mail", json!({}), denied("default-deny", "no role")),
        trick("gmbx", json!({}), name("Verb-Noun")),
        trick(
            "Get-EXOMailbox",
            json!({}),
            denied("default-deny", "no role"),
        ),
        // The deny rule holds in any case.
        trick(
            "Remove-Mailbox",
            json!({"Identity": "x"}),
            denied("deny[0]", "no automation"),
        ),
        trick(
            "rEmOvE-mAiLbOx",
            json!({"Identity": "x"}),
            denied("deny[0]", "no automation"),
        ),
        // Parameter abbreviations and aliases (PowerShell's own, and guessed ones).
        trick(
            "Get-Mailbox",
            json!({"Ident": "x"}),
            denied("role:reader/Get-Mailbox/Ident", "no abbreviations"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Id": "x"}),
            denied("role:reader/Get-Mailbox/Id", "no aliases"),
        ),
        trick(
            "Get-Mailbox",
            json!({"RecipientType": "UserMailbox"}),
            denied("role:reader/Get-Mailbox/RecipientType", "not listed"),
        ),
        trick(
            "Get-Mailbox",
            json!({"ea": "SilentlyContinue"}),
            denied("role:reader/Get-Mailbox/ea", "not listed"),
        ),
        trick(
            "Get-Mailbox",
            json!({"cf": false}),
            denied("role:reader/Get-Mailbox/cf", "not listed"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Confirm": false}),
            denied("role:reader/Get-Mailbox/Confirm", "common parameter"),
        ),
        trick(
            "Get-Mailbox",
            json!({"ErrorAction": "Stop"}),
            denied("role:reader/Get-Mailbox/ErrorAction", "common parameter"),
        ),
        trick(
            "Get-Mailbox",
            json!({"OutVariable": "x"}),
            denied("role:reader/Get-Mailbox/OutVariable", "common parameter"),
        ),
        // Parameter names with whitespace, dashes, lookalikes, annotations.
        trick("Get-Mailbox", json!({"Identity ": "x"}), name("U+0020")),
        trick("Get-Mailbox", json!({"-Identity": "x"}), name("'-'")),
        trick(
            "Get-Mailbox",
            json!({"Identit\u{0443}": "x"}),
            name("U+0443"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Ident\u{200b}ity": "x"}),
            name("U+200B"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity@odata.type": "x"}),
            name("'@'"),
        ),
        trick("Get-Mailbox", json!({"": "x"}), name("empty")),
        // Duplicate keys: never last-wins, also when only the case differs, at any depth.
        raw(
            "Get-Mailbox",
            r#"{"Identity":"a","Identity":"b"}"#,
            None, // Rhai refuses a duplicate property at compile time.
            params("duplicate key"),
        ),
        raw(
            "Get-Mailbox",
            r#"{"RecipientTypeDetails":"UserMailbox","recipienttypedetails":"RoomMailbox"}"#,
            Some(
                r#"#{"RecipientTypeDetails": "UserMailbox", "recipienttypedetails": "RoomMailbox"}"#,
            ),
            params("case-insensitive"),
        ),
        raw(
            "Set-Mailbox",
            r#"{"Type":"Shared","type":"Room"}"#,
            Some(r#"#{"Type": "Shared", "type": "Room"}"#),
            params("case-insensitive"),
        ),
        raw(
            "Get-Mailbox",
            r#"{"Identity":{"Add":"a","ADD":"b"}}"#,
            Some(r#"#{"Identity": #{"Add": "a", "ADD": "b"}}"#),
            params("duplicate key"),
        ),
        // Type confusion: lists, hashtables, booleans, numbers and null for a string.
        trick(
            "Get-Mailbox",
            json!({"Identity": ["a", "b"]}),
            denied("role:reader/Get-Mailbox/Identity", "a list is not accepted"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity": {"Add": "x"}}),
            denied("role:reader/Get-Mailbox/Identity", "hashtable"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity": {"A": {"B": {"C": 1}}}}),
            denied("role:reader/Get-Mailbox/Identity", "hashtable"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity": true}),
            denied("role:reader/Get-Mailbox/Identity", "a string is expected"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity": 5}),
            denied("role:reader/Get-Mailbox/Identity", "a string is expected"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity": null}),
            denied("role:reader/Get-Mailbox/Identity", "a string is expected"),
        ),
        trick(
            "Set-Mailbox",
            json!({"Identity": "x", "HiddenFromAddressListsEnabled": "true"}),
            denied(
                "role:editor/Set-Mailbox/HiddenFromAddressListsEnabled",
                "true or false",
            ),
        ),
        // Values PowerShell would widen: a flags enum from a comma list, case, padding.
        trick(
            "Get-Mailbox",
            json!({"RecipientTypeDetails": "UserMailbox,RoomMailbox"}),
            denied("role:reader/Get-Mailbox/RecipientTypeDetails", "not one of"),
        ),
        trick(
            "Get-Mailbox",
            json!({"RecipientTypeDetails": ["UserMailbox", "RoomMailbox"]}),
            denied("role:reader/Get-Mailbox/RecipientTypeDetails", "a list"),
        ),
        // Padding Exchange would trim is refused before any rule judges the value.
        trick(
            "Get-Mailbox",
            json!({"RecipientTypeDetails": "UserMailbox "}),
            params("U+0020"),
        ),
        // Numbers: strings, floats, booleans, out of range, beyond 64 bits, infinite.
        trick(
            "Get-Mailbox",
            json!({"ResultSize": "Unlimited"}),
            denied("role:reader/Get-Mailbox/ResultSize", "integer"),
        ),
        trick(
            "Get-Mailbox",
            json!({"ResultSize": "2"}),
            denied("role:reader/Get-Mailbox/ResultSize", "integer"),
        ),
        trick(
            "Get-Mailbox",
            json!({"ResultSize": 2.5}),
            denied(
                "role:reader/Get-Mailbox/ResultSize",
                "an integer is expected",
            ),
        ),
        trick(
            "Get-Mailbox",
            json!({"ResultSize": true}),
            denied(
                "role:reader/Get-Mailbox/ResultSize",
                "an integer is expected",
            ),
        ),
        trick(
            "Get-Mailbox",
            json!({"ResultSize": 5000}),
            denied("role:reader/Get-Mailbox/ResultSize", "1..=1000"),
        ),
        trick(
            "Get-Mailbox",
            json!({"ResultSize": -1}),
            denied("role:reader/Get-Mailbox/ResultSize", "1..=1000"),
        ),
        trick(
            "Get-Mailbox",
            json!({"ResultSize": i64::MAX}),
            denied("role:reader/Get-Mailbox/ResultSize", "1..=1000"),
        ),
        raw(
            "Get-Mailbox",
            r#"{"ResultSize":2.0}"#,
            Some("#{ResultSize: 2.0}"),
            denied(
                "role:reader/Get-Mailbox/ResultSize",
                "an integer is expected",
            ),
        ),
        raw(
            "Get-Mailbox",
            r#"{"ResultSize":18446744073709551616}"#,
            Some("#{ResultSize: 18446744073709551616.0}"),
            params("out of range"),
        ),
        raw(
            "Get-Mailbox",
            r#"{"ResultSize":18446744073709551615}"#,
            None, // Rhai integers are 64-bit signed: it cannot write 2^64 - 1.
            params("out of range"),
        ),
        raw(
            "Get-Mailbox",
            r#"{"ResultSize":1e400}"#,
            Some("#{ResultSize: 1e308 * 10.0}"),
            params("number"),
        ),
        raw(
            "Get-Mailbox",
            r#"{"ResultSize":-1e400}"#,
            Some("#{ResultSize: -1e308 * 10.0}"),
            params("number"),
        ),
        // Deep nesting: refused by the policy's depth limit, the same from both runtimes.
        raw(
            "Get-Mailbox",
            &format!(r#"{{"Identity":{}1{}}}"#, "[".repeat(40), "]".repeat(40)),
            Some("{ let x = 1; for i in 0..40 { x = [x]; } #{Identity: x} }"),
            params("at most 32"),
        ),
        raw(
            "Get-Mailbox",
            &format!(r#"{{"Identity":{}1{}}}"#, "[".repeat(100), "]".repeat(100)),
            Some("{ let x = 1; for i in 0..100 { x = [x]; } #{Identity: x} }"),
            params(""),
        ),
        // Not an object, or not JSON at all (Rhai's `invoke` takes a map, nothing else).
        raw("Get-Mailbox", r#"["Identity"]"#, None, params("object")),
        raw(
            "Get-Mailbox",
            r#"{"Identity":"x"} {}"#,
            None,
            params("trailing"),
        ),
        raw("Get-Mailbox", r#"{"Identity":"#, None, params("malformed")),
        // Parameters smuggled inside a value stay one literal value of the named parameter.
        trick(
            "Get-Mailbox",
            json!({"Identity": "bob -RecipientTypeDetails RoomMailbox"}),
            Reached {
                sent: &["Identity", "ResultSize"],
                answer: "remote",
            },
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity": "bob'; Remove-Mailbox x; '"}),
            Reached {
                sent: &["Identity", "ResultSize"],
                answer: "remote",
            },
        ),
        // Control characters never reach Exchange (see hostile_policy for the rest).
        trick(
            "Get-Mailbox",
            json!({"Identity": "bob\n-ResultSize Unlimited\0"}),
            params("U+000A"),
        ),
        trick(
            "Get-Mailbox",
            json!({"Identity": "bob -RecipientTypeDetails RoomMailbox", "ResultSize": 1}),
            Reached {
                sent: &["Identity", "ResultSize"],
                answer: "remote",
            },
        ),
    ]
}

/// Checks one runtime's answer to a call against what was expected: its error, its audit
/// decision, and what exosim received (`new`: the requests that arrived during the call).
pub(crate) fn check_call(
    host: &GuestHost,
    what: &str,
    report: &RunReport,
    new: &[exosim::ExchangeRequestRecord],
    expect: Expect,
) -> Value {
    let answer = output_json(report);
    let decisions = call_decisions(host, &report.run_id);
    assert_eq!(
        decisions.len(),
        1,
        "{what}: one decision line: {:?}; answer {answer}",
        run_lines(host, &report.run_id)
    );
    let decision = &decisions[0];
    match expect {
        Reached { sent, answer: kind } => {
            assert_eq!(new.len(), 1, "{what}: one request reached exosim");
            let request = &new[0];
            assert_eq!(request.cmdlet.as_deref(), Some("Get-Mailbox"), "{what}");
            assert_eq!(
                request.header("x-cmdletname"),
                Some("Get-Mailbox"),
                "{what}: sent under the policy's spelling"
            );
            let mut names = request.parameter_names.clone();
            names.sort();
            assert_eq!(names, sent, "{what}: exactly the allowed parameters");
            let got = if answer.get("ok").is_some() {
                "ok"
            } else {
                answer["error"]["kind"].as_str().unwrap_or("?")
            };
            assert_eq!(got, kind, "{what}: {answer}");
            assert_eq!(decision["allowed"], true, "{what}");
        }
        Refused { kind, rule, says } => {
            assert!(new.is_empty(), "{what}: a refused call reached exosim");
            let error = &answer["error"];
            assert_eq!(error["kind"], kind, "{what}: {answer}");
            if kind == "denied" {
                assert_eq!(error["rule"], rule, "{what}: {answer}");
            }
            assert!(
                reason_of(error).contains(says),
                "{what}: the reason should say {says:?}: {answer}"
            );
            assert_eq!(decision["allowed"], false, "{what}");
            assert_eq!(decision["rule"], rule, "{what}: audited with its rule");
        }
    }
    assert_eq!(run_end(host, &report.run_id), "run-end:completed", "{what}");
    answer
}

/// Runs `call` and returns its report with the exosim requests that arrived meanwhile.
pub(crate) async fn witnessed<F: std::future::Future<Output = (RunReport, Arc<Recorder>)>>(
    host: &GuestHost,
    call: F,
) -> (RunReport, Vec<exosim::ExchangeRequestRecord>) {
    let before = host.emu.exosim.exchange_log().len();
    let (report, _) = call.await;
    let new = host.emu.exosim.exchange_log().split_off(before);
    (report, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_bypass_tricks_are_decided_alike_and_only_allowed_calls_reach_exosim() {
    let tricks = bypass_tricks();
    let scripts: Vec<Option<String>> = tricks
        .iter()
        .map(|t| {
            t.rhai
                .as_ref()
                .map(|p| call_script(&rhai_string(t.cmdlet), p))
        })
        .collect();
    let host = hostile_host(
        "calls = 1000\nwrites = 0",
        RuntimeLimits::default(),
        &scripts.iter().flatten().cloned().collect::<Vec<_>>(),
    )
    .await;
    for (t, script) in tricks.iter().zip(&scripts) {
        let what = format!("{:?} {}", t.cmdlet, t.wasm);
        let (report, new) = witnessed(&host, host.probe(&["invoke", t.cmdlet, &t.wasm])).await;
        let wasm = check_call(&host, &format!("wasm {what}"), &report, &new, t.expect);
        if let Some(script) = script {
            let (report, new) = witnessed(&host, host.script(script, &[])).await;
            let rhai = check_call(&host, &format!("Rhai {what}"), &report, &new, t.expect);
            assert_eq!(
                summary(&wasm),
                summary(&rhai),
                "{what}: wasm and Rhai decided differently"
            );
        }
    }
    // Of everything refused, nothing reached exosim; no write or removal at all.
    let reached = tricks
        .iter()
        .zip(&scripts)
        .filter(|(t, _)| matches!(t.expect, Reached { .. }))
        .map(|(_, s)| 1 + usize::from(s.is_some()))
        .sum::<usize>();
    assert_eq!(host.emu.exosim.exchange_log().len(), reached);
    assert_eq!(host.exosim_calls("Remove-Mailbox"), 0);
    assert_eq!(host.exosim_calls("Set-Mailbox"), 0);
    assert!(
        warden_audit::verify(&host.audit_path, &host.key)
            .unwrap()
            .ok()
    );
}

/// The value the Rhai run writes: another one than the wasm run's, so each write changes the
/// mailbox (exosim does not apply a write that changes nothing).
fn rhai_value(value: &str) -> String {
    format!("{value} (Rhai)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_smuggling_parameters_arrive_as_one_literal_value() {
    // Written as DisplayName through Set-Mailbox, so exosim's state shows what it bound.
    let smuggled = [
        "bob -Type Room",
        "bob'; Remove-Mailbox x; '",
        "bob\"; Remove-Mailbox x",
        "$(Remove-Mailbox x)",
        "@{Type='Room'}",
        "`n-Type Room",
        "{\"Type\":\"Room\"}",
    ];
    let scripts: Vec<String> = smuggled
        .iter()
        .map(|v| {
            call_script(
                "\"Set-Mailbox\"",
                &format!(
                    "#{{Identity: ARGS[0], DisplayName: {}}}",
                    rhai_string(&rhai_value(v))
                ),
            )
        })
        .collect();
    let host = hostile_host("writes = 100", RuntimeLimits::default(), &scripts).await;
    let tenant = host.emu.tenant_id();
    let target = operator_invoke(&host.emu, "Get-Mailbox", json!({"ResultSize": 1})).await[0]
        ["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let mailboxes = host.emu.exosim.mailbox_count(&tenant);
    let baseline = host.emu.exosim.exchange_log().len();
    for (value, script) in smuggled.iter().zip(&scripts) {
        let params = json!({"Identity": target, "DisplayName": value}).to_string();
        for (runtime, value) in [("wasm", value.to_string()), ("Rhai", rhai_value(value))] {
            let (report, new) = if runtime == "wasm" {
                witnessed(&host, host.probe(&["invoke", "Set-Mailbox", &params])).await
            } else {
                witnessed(&host, host.script(script, &[&target])).await
            };
            let what = format!("{runtime} {value:?}");
            let answer = output_json(&report);
            assert!(answer.get("ok").is_some(), "{what}: {answer}");
            assert_eq!(new.len(), 1, "{what}: one request");
            assert_eq!(new[0].cmdlet.as_deref(), Some("Set-Mailbox"), "{what}");
            assert!(new[0].applied, "{what}: the write applied");
            let mut names = new[0].parameter_names.clone();
            names.sort();
            assert_eq!(
                names,
                ["DisplayName", "Identity"],
                "{what}: no other parameter"
            );
            let mailbox = host.emu.exosim.mailbox(&tenant, &target).unwrap();
            assert_eq!(
                mailbox["DisplayName"], value,
                "{what}: exosim holds the value as one literal string"
            );
            assert_eq!(
                mailbox["RecipientTypeDetails"], "UserMailbox",
                "{what}: the mailbox type is untouched"
            );
            // The audit line records the value as sent (DisplayName is not sensitive).
            let decisions = call_decisions(&host, &report.run_id);
            assert_eq!(decisions.len(), 1, "{what}");
            assert_eq!(decisions[0]["parameters"]["DisplayName"], value, "{what}");
        }
    }
    assert_eq!(
        host.emu.exosim.exchange_log().len() - baseline,
        smuggled.len() * 2,
        "nothing but the writes themselves"
    );
    assert_eq!(host.exosim_calls("Remove-Mailbox"), 0);
    assert_eq!(host.emu.exosim.mailbox_count(&tenant), mailboxes);
}

/// Builds an oversized call in Rhai: `cmdlet` and `parameters` are Rhai expressions using `N`.
fn rhai_big(n: usize, cmdlet: &str, parameters: &str) -> String {
    format!("const N = {n};\n{}", call_script(cmdlet, parameters))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inputs_are_refused_as_invalid_naming_the_limit_before_the_network() {
    const MIB: usize = 1024 * 1024;
    // `pad` grows a string or array in place to N items.
    let value = "{ let v = \"\"; v.pad(N, 'v'); #{Identity: v} }";
    let array = "{ let a = []; a.pad(N, 1); #{Identity: a} }";
    let keys = "{ let m = #{}; for i in 0..N { m[`P${i}`] = 1; } m }";
    let key = "{ let k = \"\"; k.pad(N, 'K'); let m = #{}; m[k] = 1; m }";
    let get = "\"Get-Mailbox\"";
    let cmdlet = "{ let c = \"Get-\"; c.pad(N + 4, 'M'); c }";
    // (what the probe builds, n, Rhai cmdlet, Rhai parameters, rule, the reason says)
    let cases: &[(&str, usize, &str, &str, &str, &str)] = &[
        (
            "value",
            4 * MIB,
            get,
            value,
            "invalid-parameters",
            "at most 65536",
        ),
        (
            "array",
            500_000,
            get,
            array,
            "invalid-parameters",
            "at most 65536",
        ),
        (
            "keys",
            20_000,
            get,
            keys,
            "invalid-parameters",
            "at most 65536",
        ),
        (
            "key",
            100_000,
            get,
            key,
            "invalid-parameters",
            "at most 65536",
        ),
        ("key", 200, get, key, "invalid-name", "at most 128"),
        ("cmdlet", MIB, cmdlet, "#{}", "invalid-name", "at most 128"),
        ("cmdlet", 200, cmdlet, "#{}", "invalid-name", "at most 128"),
    ];
    let scripts: Vec<String> = cases
        .iter()
        .map(|(_, n, c, p, ..)| rhai_big(*n, c, p))
        .collect();
    let host = hostile_host("memory_mib = 256", RuntimeLimits::default(), &scripts).await;
    for ((what, n, _, _, rule, says), script) in cases.iter().zip(&scripts) {
        let n_text = n.to_string();
        let wasm = witnessed(&host, host.probe(&["big-call", what, &n_text])).await;
        let rhai = witnessed(&host, host.script(script, &[])).await;
        for (runtime, (report, new)) in [("wasm", wasm), ("Rhai", rhai)] {
            let what = format!("{runtime} {what} {n}");
            check_call(
                &host,
                &what,
                &report,
                &new,
                Refused {
                    kind: "invalid",
                    rule,
                    says,
                },
            );
            // The refusal's audit line does not carry the oversized input.
            let line = serde_json::to_string(&call_decisions(&host, &report.run_id)[0]).unwrap();
            assert!(
                line.len() < 2048,
                "{what}: a {}-byte audit line",
                line.len()
            );
        }
    }
    assert!(host.emu.exosim.exchange_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_finds_no_environment_files_processes_or_stdin() {
    let host = hostile_host("calls = 10", RuntimeLimits::default(), &[]).await;
    let (report, _) = host.probe(&["env"]).await;
    let out = output_json(&report);
    assert_eq!(out["vars"], json!({}), "no environment: {out}");
    assert_eq!(out["args"], json!([]), "no process arguments: {out}");
    let (report, _) = host.probe(&["files"]).await;
    let out = output_json(&report);
    for (what, result) in out.as_object().unwrap() {
        assert!(
            result.as_str().is_some_and(|r| r.starts_with("error")),
            "{what} should fail inside the sandbox: {result}"
        );
    }
    let (report, _) = host.probe(&["escape"]).await;
    let out = output_json(&report);
    let expected = [
        ("env_client_secret", "error"),
        ("env_vars", "ok: 0"),
        ("args", "ok: 0"),
        ("read_dir_root", "error"),
        ("read_dir_dot", "error"),
        ("read_proc_environ", "error"),
        ("read_audit_key", "error"),
        ("read_etc_hosts", "error"),
        ("create_file", "error"),
        ("stdin", "ok: \"0 bytes\""),
        ("spawn_thread", "error"),
        ("spawn_process", "error"),
    ];
    for (attempt, expected) in expected {
        let result = out[attempt].as_str().unwrap_or_default();
        let matches = if expected == "error" {
            result.starts_with("error")
        } else {
            result == expected
        };
        assert!(matches, "{attempt}: expected {expected:?}, got {result:?}");
    }
    assert_eq!(run_end(&host, &report.run_id), "run-end:completed");
    assert!(call_decisions(&host, &report.run_id).is_empty());
    assert!(host.emu.exosim.exchange_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_finds_no_eval_import_time_sleep_files_or_environment() {
    // Refused when compiled: the script never runs.
    for source in [
        "import \"fs\" as fs; 1",
        "eval(\"40 + 2\")",
        "let f = || eval(\"1\"); f.call()",
    ] {
        let host = ScriptHost::new(RuntimeLimits::default());
        let error = host.compile("inline script", source).unwrap_err();
        assert!(
            matches!(&error, RuntimeError::Load { problem, .. } if problem.contains("syntax error")),
            "{source}: {error}"
        );
    }
    // Refused when run: each throws, the script catches it and returns what it caught.
    let attempts = [
        "sleep(1)",
        "sleep(0.5)",
        "timestamp()",
        "Fn(\"eval\").call(\"40 + 2\")",
        "call(Fn(\"ev\" + \"al\"), \"40 + 2\")",
        "Fn(\"sleep\").call(1)",
        "env(\"AZURE_CLIENT_SECRET\")",
        "open_file(\"/etc/passwd\")",
        "read_file(\"/etc/passwd\")",
        "exo::token()",
        "exo::session()",
        "system(\"id\")",
    ];
    let scripts: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "let r = (); try {{ r = #{{escaped: {a}}}; }} catch (e) {{ r = #{{refused: e}}; }} r"
            )
        })
        .collect();
    let host = hostile_host("calls = 10", RuntimeLimits::default(), &scripts).await;
    for (attempt, script) in attempts.iter().zip(&scripts) {
        if let Err(error) = host.scripts.compile("inline script", script) {
            // Refused before it runs: just as closed.
            assert!(
                matches!(error, RuntimeError::Load { .. }),
                "{attempt}: {error}"
            );
            continue;
        }
        let (report, _) = host.script(script, &[]).await;
        // Caught as an error, or an error `try` cannot catch (`eval` is refused even when
        // named at run time): never a value.
        match &report.outcome {
            RunOutcome::Failed { message } => {
                assert!(message.contains("eval"), "{attempt}: {message}");
                assert_eq!(run_end(&host, &report.run_id), "run-end:failed");
            }
            _ => {
                let out = output_json(&report);
                assert!(
                    out.get("refused").is_some(),
                    "{attempt}: the script got something: {out}"
                );
                assert_eq!(run_end(&host, &report.run_id), "run-end:completed");
            }
        }
    }
    assert!(host.emu.exosim.exchange_log().is_empty());
}

/// A component that exports a working `run` (it returns `ok("hi")`) and imports one interface
/// (an instance with `exports`), so that import is the only thing wrong with it.
fn importing(name: &str, exports: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (import "{name}" (instance {exports}))
  (core module $m
    (memory (export "mem") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (data (i32.const 16) "\00\00\00\00\64\00\00\00\02\00\00\00")
    (data (i32.const 100) "hi")
    (func (export "run") (param i32 i32) (result i32) (i32.const 16)))
  (core instance $i (instantiate $m))
  (type $r (result string (error string)))
  (func (export "run") (param "args" (list string)) (result $r)
    (canon lift (core func $i "run") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc")))))"#
    );
    wat::parse_str(text).expect("valid WAT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_outside_the_world_are_refused_at_load() {
    let host = hostile_host("calls = 10", RuntimeLimits::default(), &[]).await;
    let func = r#"(export "get-token" (func (result string)))"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "sockets guest",
            std::fs::read(guest("tests/guests", "sockets")).unwrap(),
            "wasi:sockets",
        ),
        (
            "future WIT guest",
            std::fs::read(guest("tests/guests", "future-wit")).unwrap(),
            "warden:plugin@0.2.0",
        ),
        (
            "tcp",
            importing("wasi:sockets/tcp@0.2.0", ""),
            "wasi:sockets/tcp@0.2.0",
        ),
        (
            "name lookup",
            importing("wasi:sockets/ip-name-lookup@0.2.0", ""),
            "wasi:sockets/ip-name-lookup@0.2.0",
        ),
        (
            "http",
            importing("wasi:http/outgoing-handler@0.2.0", ""),
            "wasi:http/outgoing-handler@0.2.0",
        ),
        (
            "timezone",
            importing("wasi:clocks/timezone@0.2.0", ""),
            "wasi:clocks/timezone@0.2.0",
        ),
        (
            "an interface our package does not have",
            importing("warden:plugin/secrets@0.1.0", ""),
            "warden:plugin/secrets@0.1.0",
        ),
        (
            "a function our exchange interface does not have",
            importing("warden:plugin/exchange@0.1.0", func),
            "get-token",
        ),
        (
            "a function WASI's environment does not have",
            importing("wasi:cli/environment@0.2.0", func),
            "get-token",
        ),
        (
            "a newer minor version with a new function",
            importing("warden:plugin/exchange@0.1.9", func),
            "get-token",
        ),
        (
            "a future major version",
            importing("warden:plugin/exchange@0.2.0", ""),
            "warden:plugin@0.2.0",
        ),
    ];
    for (what, bytes, names) in cases {
        // `what` names the file, whose stem is the plugin's name: a valid one, so each case
        // reaches the import check it is about.
        let file: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(60)
            .collect();
        match host.plugins.load_bytes(&format!("{file}.wasm"), bytes) {
            Err(RuntimeError::Load { problem, fix, .. }) => {
                assert!(problem.contains(names), "{what}: {problem}");
                assert!(!fix.is_empty(), "{what}: a fix is named");
            }
            other => panic!("{what}: loaded or failed otherwise: {other:?}"),
        }
    }
    // The control: the same component importing what the world has loads, so each refusal
    // above is its import's doing.
    let legit = importing(
        "wasi:cli/environment@0.2.0",
        r#"(export "get-environment" (func (result (list (tuple string string)))))"#,
    );
    host.plugins
        .load_bytes("control", legit)
        .expect("the control component loads");
    // Nothing ran: no run began, nothing reached exosim.
    assert!(host.audit().is_empty());
    assert!(host.emu.exosim.exchange_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_tell_the_time_but_never_outwait_a_limit() {
    let host = hostile_host(
        "cpu_secs = 1\nwall_clock_secs = 2",
        RuntimeLimits::default(),
        &[],
    )
    .await;
    // A guest gets the host's wall clock and a monotonic clock (wasi:clocks wall-clock and
    // monotonic-clock; no timezone) — real time, as SECURITY.md says.
    let (report, _) = host.probe(&["clock"]).await;
    let out = output_json(&report);
    let host_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let guest_secs: u64 = out["system_time"]
        .as_str()
        .and_then(|t| t.strip_prefix("ok: "))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the guest read no wall clock: {out}"));
    assert!(
        host_secs.abs_diff(guest_secs) < 300,
        "the guest's wall clock is the host's: {out}"
    );
    assert!(out["instant_elapsed_nanos"].as_u64().unwrap() > 0, "{out}");
    // Waiting on the clock is still time: a guest asleep in a host call is stopped at the
    // wall clock (the CPU budget cannot see it), and its run is closed.
    let (report, _) = host.probe(&["sleep", "60000"]).await;
    assert!(
        matches!(stop_reason(&report), StopReason::WallClock { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(run_end(&host, &report.run_id), "run-end:stopped");
    // A short sleep within the limits completes.
    let (report, _) = host.probe(&["sleep", "50"]).await;
    assert_eq!(output_json(&report)["slept_ms"], 50);
    assert_eq!(run_end(&host, &report.run_id), "run-end:completed");
}

/// A guest of either kind: probe arguments or a Rhai script.
#[derive(Debug, Clone, Copy)]
enum Guest {
    Wasm(&'static [&'static str]),
    Rhai(&'static str),
}

impl Guest {
    fn script(self) -> Option<String> {
        match self {
            Guest::Wasm(_) => None,
            Guest::Rhai(source) => Some(source.to_owned()),
        }
    }

    async fn run(self, host: &GuestHost) -> (RunReport, Arc<Recorder>) {
        match self {
            Guest::Wasm(args) => host.probe(args).await,
            Guest::Rhai(source) => host.script(source, &[]).await,
        }
    }

    fn is_flood(self) -> bool {
        match self {
            Guest::Wasm(args) => args[0].ends_with("flood"),
            Guest::Rhai(source) => source.contains("flood"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_guests_are_stopped_at_their_limits() {
    use Guest::{Rhai, Wasm};
    let limits = RuntimeLimits {
        max_output_bytes: 1024 * 1024,
        max_log_bytes: 64 * 1024,
        ..Default::default()
    };
    type Expect = fn(&StopReason) -> bool;
    let cases: Vec<(Guest, Expect)> = vec![
        // Busy loops.
        (Wasm(&["spin"]), |r| matches!(r, StopReason::Cpu { .. })),
        (Rhai("loop { }"), |r| {
            matches!(r, StopReason::Cpu { .. })
                || matches!(r, StopReason::ScriptLimit { what } if what == "operations")
        }),
        // Memory growth: at the grant's 32 MiB.
        (
            Wasm(&["alloc"]),
            |r| matches!(r, StopReason::Memory { limit_bytes } if *limit_bytes == 32 * 1024 * 1024),
        ),
        (
            Rhai("let s = \"x\"; loop { s += s; }"),
            |r| matches!(r, StopReason::ScriptLimit { what } if what == "string size"),
        ),
        (Rhai("let a = []; loop { a.push(a.len()); }"), |r| {
            matches!(r, StopReason::Cpu { .. })
                || matches!(r, StopReason::ScriptLimit { what } if what == "array size")
        }),
        // Deep recursion.
        (Wasm(&["recurse"]), |r| matches!(r, StopReason::Trap { .. })),
        (
            Rhai("fn f(n) { f(n + 1) } f(0)"),
            |r| matches!(r, StopReason::ScriptLimit { what } if what == "call depth"),
        ),
        (Wasm(&["panic"]), |r| matches!(r, StopReason::Trap { .. })),
        // Output floods: a result over the host's cap.
        (Wasm(&["big-output", "2000000"]), |r| {
            matches!(r, StopReason::Output { .. })
        }),
        (Rhai("let s = \"\"; s.pad(2000000, 'x'); s"), |r| {
            matches!(r, StopReason::Output { .. })
        }),
        // Log and stdout floods: capped, then stopped by the CPU budget or the wall clock.
        (Wasm(&["stdout-flood"]), |r| {
            matches!(r, StopReason::Cpu { .. } | StopReason::WallClock { .. })
        }),
        (Wasm(&["log-flood"]), |r| {
            matches!(r, StopReason::Cpu { .. } | StopReason::WallClock { .. })
        }),
        (Rhai("loop { log::info(\"log flood\"); }"), |r| {
            matches!(r, StopReason::Cpu { .. } | StopReason::WallClock { .. })
                || matches!(r, StopReason::ScriptLimit { what } if what == "operations")
        }),
        (Rhai("loop { print(\"print flood\"); }"), |r| {
            matches!(r, StopReason::Cpu { .. } | StopReason::WallClock { .. })
                || matches!(r, StopReason::ScriptLimit { what } if what == "operations")
        }),
    ];
    let scripts: Vec<String> = cases.iter().filter_map(|(g, _)| g.script()).collect();
    let host = hostile_host(
        "cpu_secs = 1\nmemory_mib = 32\nwall_clock_secs = 20",
        limits.clone(),
        &scripts,
    )
    .await;
    for (guest, expected) in cases {
        let (report, recorder) = guest.run(&host).await;
        let reason = stop_reason(&report);
        assert!(
            expected(reason),
            "{guest:?}: stopped for the wrong reason: {reason:?}"
        );
        assert_eq!(
            run_end(&host, &report.run_id),
            "run-end:stopped",
            "{guest:?}"
        );
        // Floods are capped on the host side: what reached the operator is bounded.
        assert!(
            recorder.bytes() <= limits.max_log_bytes,
            "{guest:?}: {} log bytes passed the cap",
            recorder.bytes()
        );
        if guest.is_flood() {
            assert!(
                report.log_bytes_dropped > 0,
                "{guest:?}: the flood was dropped and counted"
            );
        }
    }
    assert!(host.emu.exosim.exchange_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_against_call_spam() {
    const SPAM: &str = r#"let ok = 0; let first = ();
        for i in 0..20 {
            try { exo::invoke("Get-Mailbox", #{ResultSize: 1}); ok += 1; }
            catch (e) { if type_of(first) == "()" { first = e; } }
        }
        #{succeeded: ok, first_error: first}"#;
    let host = hostile_host("calls = 5", RuntimeLimits::default(), &[SPAM.to_owned()]).await;
    let wasm = host
        .probe(&["call-spam", "20", "Get-Mailbox", r#"{"ResultSize":1}"#])
        .await;
    let rhai = host.script(SPAM, &[]).await;
    for (runtime, (report, _)) in [("wasm", wasm), ("Rhai", rhai)] {
        let out = output_json(&report);
        assert_eq!(out["succeeded"], 5, "{runtime}: {out}");
        assert_eq!(out["first_error"]["kind"], "budget", "{runtime}: {out}");
        assert_eq!(out["first_error"]["budget"], "calls", "{runtime}: {out}");
        assert_eq!(out["first_error"]["limit"], 5, "{runtime}: {out}");
        assert_eq!(report.usage.calls, 5, "{runtime}");
        let rules: Vec<String> = call_decisions(&host, &report.run_id)
            .iter()
            .map(|l| l["rule"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            rules.iter().filter(|r| *r == "budget:calls").count(),
            15,
            "{runtime}: every spent call is on record: {rules:?}"
        );
        assert_eq!(run_end(&host, &report.run_id), "run-end:completed");
    }
    assert_eq!(host.exosim_calls("Get-Mailbox"), 10, "5 per run, no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_runs_each_end_cleanly_with_their_audit_line() {
    // More wasm runs than the 32 instance slots of the pool, and Rhai runs on their own
    // threads, at once; a few of each spin until their CPU budget stops them.
    const WASM_RUNS: usize = 48;
    const RHAI_RUNS: usize = 16;
    const CALL: &str = r#"exo::invoke("Get-Mailbox", #{ResultSize: 1}).len()"#;
    const SPIN: &str = "loop { }";
    let call: &[&str] = &["invoke", "Get-Mailbox", r#"{"ResultSize":1}"#];
    let spin: &[&str] = &["spin"];
    let host = hostile_host(
        "cpu_secs = 2\nwall_clock_secs = 120",
        RuntimeLimits::default(),
        &[CALL.to_owned(), SPIN.to_owned()],
    )
    .await;
    let wasm = (0..WASM_RUNS).map(|i| host.probe(if i % 12 == 0 { spin } else { call }));
    let rhai = (0..RHAI_RUNS).map(|i| host.script(if i % 8 == 0 { SPIN } else { CALL }, &[]));
    let (wasm, rhai) = tokio::join!(
        futures::future::join_all(wasm),
        futures::future::join_all(rhai)
    );
    let mut run_ids = std::collections::HashSet::new();
    let mut calls = 0;
    for (i, (report, _)) in wasm.iter().enumerate() {
        if i % 12 == 0 {
            assert!(
                matches!(stop_reason(report), StopReason::Cpu { .. }),
                "wasm {i}: {:?}",
                report.outcome
            );
        } else {
            let out = output_json(report);
            assert_eq!(
                out["ok"].as_array().map(Vec::len),
                Some(1),
                "wasm {i}: {out}"
            );
            calls += 1;
        }
        assert!(run_ids.insert(report.run_id.clone()));
    }
    for (i, (report, _)) in rhai.iter().enumerate() {
        if i % 8 == 0 {
            let reason = stop_reason(report);
            assert!(
                matches!(reason, StopReason::Cpu { .. })
                    || matches!(reason, StopReason::ScriptLimit { what } if what == "operations"),
                "Rhai {i}: {reason:?}"
            );
        } else {
            assert_eq!(output_json(report), json!(1), "Rhai {i}");
            calls += 1;
        }
        assert!(run_ids.insert(report.run_id.clone()));
    }
    // Every run has exactly one start and one end line, and the trail is intact.
    let audit = host.audit();
    for run_id in &run_ids {
        let lines: Vec<&Value> = audit.iter().filter(|l| l["run_id"] == **run_id).collect();
        let starts = lines
            .iter()
            .filter(|l| l["rule"].as_str().is_some_and(|r| r.starts_with("grant:")))
            .count();
        let ends = lines
            .iter()
            .filter(|l| {
                l["rule"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("run-end:"))
            })
            .count();
        assert_eq!((starts, ends), (1, 1), "run {run_id}: {lines:?}");
    }
    assert_eq!(run_ids.len(), WASM_RUNS + RHAI_RUNS);
    assert_eq!(host.exosim_calls("Get-Mailbox"), calls);
    assert!(
        warden_audit::verify(&host.audit_path, &host.key)
            .unwrap()
            .ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_call_spam_is_slowed_so_the_trail_and_exchange_stay_bounded() {
    // Refusals spend no budget and (being host time) no CPU budget; unslowed, a guest makes
    // about ten thousand a second, each an audit line. Past the grant's `calls` of them each
    // is answered REFUSAL_DELAY late, so the wall clock bounds them.
    const CALLS: u64 = 10;
    const WALL_CLOCK_SECS: u64 = 2;
    const RHAI: &str = r#"let n = 0; loop { try { exo::invoke("Remove-Mailbox", #{Identity: "x"}); } catch (e) { n += 1; } }"#;
    let bound = CALLS + (WALL_CLOCK_SECS * 1000) / warden_broker::REFUSAL_DELAY.as_millis() as u64;
    let host = hostile_host(
        &format!("calls = {CALLS}\nwrites = 1\nwall_clock_secs = {WALL_CLOCK_SECS}"),
        RuntimeLimits::default(),
        &[RHAI.to_owned()],
    )
    .await;
    let target = operator_invoke(&host.emu, "Get-Mailbox", json!({"ResultSize": 1})).await[0]
        ["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    // Out of the grant's target scope: each attempt needs a lookup in Exchange before it can be
    // refused, paid from the calls budget, so the spam cannot flood the tenant with reads.
    let scoped = json!({"Identity": target, "User": "x", "AccessRights": "FullAccess"}).to_string();
    let spam = [
        (
            "denied (wasm)",
            vec![
                "call-spam",
                "1000000",
                "Remove-Mailbox",
                r#"{"Identity":"x"}"#,
            ],
        ),
        (
            "invalid (wasm)",
            vec!["call-spam", "1000000", "Get-Mailbox", "{"],
        ),
        (
            "out of scope (wasm)",
            vec!["call-spam", "1000000", "Add-MailboxPermission", &scoped],
        ),
    ];
    let mut reports = Vec::new();
    for (what, args) in &spam {
        reports.push((*what, host.probe(args).await.0));
    }
    reports.push(("denied (Rhai)", host.script(RHAI, &[]).await.0));
    for (what, report) in &reports {
        assert!(
            matches!(stop_reason(report), StopReason::WallClock { .. }),
            "{what}: {:?}",
            report.outcome
        );
        assert_eq!(run_end(&host, &report.run_id), "run-end:stopped", "{what}");
        let refused = call_decisions(&host, &report.run_id)
            .iter()
            .filter(|l| l["allowed"] == false)
            .count() as u64;
        assert!(refused > CALLS, "{what}: the spam was refused and audited");
        assert!(
            refused <= bound,
            "{what}: {refused} refusals, more than the {bound} the wall clock allows"
        );
    }
    assert_eq!(host.exosim_calls("Remove-Mailbox"), 0);
    assert_eq!(host.exosim_calls("Add-MailboxPermission"), 0);
    // Each target lookup is paid from the calls budget, so the spam makes at most CALLS.
    let lookups = host.exosim_calls("Get-Recipient") as u64;
    assert!(
        lookups > 0 && lookups <= CALLS,
        "{lookups} target lookups reached exosim"
    );
}
