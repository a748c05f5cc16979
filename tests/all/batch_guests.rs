//! A guest's batch (`exchange.invoke-batch` from a wasm guest, `exo::batch` from a Rhai script)
//! against exosim: each call judged as if made alone, the allowed ones sent together as
//! `$batch` POSTs of ten, refused ones answered in their slot and never sent. exosim's request
//! log and the audit trail are the witnesses: a batch must never do what the same calls one by
//! one could not.

use crate::guests::{Recorder, output_json};
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_policy::{Policy, Principal};
use warden_runtime::{LoadedPlugin, PluginHost, RunReport, RunRequest, RuntimeLimits, ScriptHost};

struct BatchHost {
    emu: Emulator,
    broker: Broker,
    audit_path: std::path::PathBuf,
    plugins: PluginHost,
    scripts: ScriptHost,
    caller: LoadedPlugin,
    /// Mailboxes the writer role may act on, and one it may not.
    in_scope: Vec<String>,
    outside: String,
    /// Each of those mailboxes' address and `Guid`.
    guids: Vec<(String, String)>,
}

/// exosim with 25 mailboxes; the batch-caller plugin and `scripts` granted a reader role and a
/// writer role whose target scope holds the first two mailboxes, under `budgets`.
async fn batch_host(budgets: &str, scripts: &[&str]) -> BatchHost {
    let emu = Emulator::start_with(|o| o.mailboxes = 25).await;
    let listed = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 3})).await;
    let address = |n: usize| listed[n]["PrimarySmtpAddress"].as_str().unwrap().to_owned();
    let in_scope = vec![address(0), address(1)];
    let outside = address(2);
    let guids = (0..3)
        .map(|n| (address(n), listed[n]["Guid"].as_str().unwrap().to_owned()))
        .collect();
    let plugins = PluginHost::new(RuntimeLimits::default(), Some(emu.dir.path().join("cache")))
        .expect("the plugin host starts");
    let caller = plugins
        .load(&guest("tests/guests", "batch-caller"))
        .expect("the batch caller loads");
    let scope = in_scope
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut policy = format!(
        r#"version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
output = ["DisplayName", "PrimarySmtpAddress"]
[roles.reader.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
ResultSize = {{ range = [1, 1000] }}

[roles.writer]
[[roles.writer.cmdlet]]
name = "Set-Mailbox"
target = {{ parameter = "Identity", domains = [], identities = [{scope}] }}
[roles.writer.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
DisplayName = {{ length = [1, 64] }}

[[grant]]
id = "caller"
plugin = "{}"
sha256 = "{}"
roles = ["reader", "writer"]
[grant.budgets]
{budgets}
"#,
        caller.name(),
        caller.sha256(),
    );
    for (i, script) in scripts.iter().enumerate() {
        policy.push_str(&format!(
            "\n[[grant]]\nid = \"script-{i}\"\nscript_inline_sha256 = \"{}\"\nroles = [\"reader\", \"writer\"]\n[grant.budgets]\n{budgets}\n",
            Principal::inline_script(script).sha256(),
        ));
    }
    let policy_path = emu.dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let policy = Arc::new(Policy::load(&policy_path).unwrap());
    let audit_path = emu.dir.path().join("audit.jsonl");
    let audit = Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes([9; 32])).unwrap());
    let broker = Broker::new(
        policy,
        Arc::new(admin_session(&emu)),
        audit,
        Duration::from_secs(30),
    );
    BatchHost {
        emu,
        broker,
        audit_path,
        plugins,
        scripts: ScriptHost::new(RuntimeLimits::default()),
        caller,
        in_scope,
        outside,
        guids,
    }
}

impl BatchHost {
    /// The wasm guest's one batch of `calls` (cmdlet, parameters).
    async fn wasm_batch(&self, calls: &[(&str, Value)]) -> (RunReport, Value) {
        let calls: Vec<(String, String)> = calls
            .iter()
            .map(|(c, p)| ((*c).to_owned(), p.to_string()))
            .collect();
        let calls = serde_json::to_string(&calls).unwrap();
        self.wasm(&["batch", &calls]).await
    }

    async fn wasm(&self, args: &[&str]) -> (RunReport, Value) {
        let request = RunRequest {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            observer: Arc::new(Recorder::default()),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self
            .plugins
            .run(&self.caller, &self.broker, request)
            .await
            .expect("the run starts");
        let output = output_json(&report);
        (report, output)
    }

    async fn script(&self, source: &str) -> (RunReport, Value) {
        let compiled = self.scripts.compile("inline script", source).unwrap();
        let report = self
            .scripts
            .run(
                &compiled,
                Principal::inline_script(source),
                &self.broker,
                RunRequest::new(Vec::new()),
            )
            .await
            .expect("the run starts");
        let output = output_json(&report);
        (report, output)
    }

    fn audit(&self, run_id: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["run_id"] == run_id)
            .collect()
    }

    fn display_name(&self, address: &str) -> String {
        let guid = &self.guids.iter().find(|(a, _)| a == address).unwrap().1;
        self.emu
            .exosim
            .mailbox(&self.emu.tenant_id(), guid)
            .unwrap()["DisplayName"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// exosim's records of `cmdlet` that came as a `$batch` part (their `Prefer` asks to go on
/// after an error, which a single call's never does).
fn batched(emu: &Emulator, cmdlet: &str) -> Vec<exosim::ExchangeRequestRecord> {
    calls_of(emu, cmdlet)
        .into_iter()
        .filter(|r| {
            r.header("prefer")
                .is_some_and(|p| p.contains("continue-on-error"))
        })
        .collect()
}

/// The slots of a batch's answer: `Ok(objects)` or `Err(error)`, from either runtime's shape.
fn slots(output: &Value) -> Vec<Result<Vec<Value>, Value>> {
    output["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {output}"))
        .iter()
        .map(
            |slot| match (slot.get("ok"), slot.get("objects"), slot.get("error")) {
                (Some(Value::Array(objects)), _, _) | (_, Some(Value::Array(objects)), _) => {
                    Ok(objects.clone())
                }
                (_, _, Some(error)) => Err(error.clone()),
                _ => panic!("a slot neither ok nor error: {slot}"),
            },
        )
        .collect()
}

/// Fails before: guests had no batch call (the WIT had no `invoke-batch`, Rhai no
/// `exo::batch`). One `$batch` carries the three allowed reads; the denied call is answered in
/// its slot and never sent; every line of the batch carries one batch id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_batch_is_one_dollar_batch_and_its_refused_call_is_not_sent() {
    let host = batch_host("calls = 50", &[]).await;
    let [a, b] = [&host.in_scope[0], &host.in_scope[1]];
    let (report, output) = host
        .wasm_batch(&[
            ("Get-Mailbox", json!({"Identity": a})),
            ("Get-Mailbox", json!({"Identity": b})),
            ("Remove-Mailbox", json!({"Identity": a})),
            ("Get-Mailbox", json!({"Identity": &host.outside})),
        ])
        .await;
    let slots = slots(&output);
    assert_eq!(slots.len(), 4, "{output}");
    assert_eq!(
        slots[0].as_ref().unwrap()[0]["PrimarySmtpAddress"],
        a.as_str()
    );
    assert_eq!(
        slots[1].as_ref().unwrap()[0]["PrimarySmtpAddress"],
        b.as_str()
    );
    assert_eq!(slots[2].as_ref().unwrap_err()["kind"], "denied", "{output}");
    assert_eq!(
        slots[3].as_ref().unwrap()[0]["PrimarySmtpAddress"],
        host.outside.as_str()
    );
    // Shaped as a single call's results are.
    let shown = slots[0].as_ref().unwrap()[0].as_object().unwrap().clone();
    assert!(
        shown
            .keys()
            .all(|k| k == "DisplayName" || k == "PrimarySmtpAddress"),
        "{shown:?}"
    );
    assert_eq!(calls_of(&host.emu, "$batch").len(), 1);
    assert_eq!(batched(&host.emu, "Get-Mailbox").len(), 3);
    assert_eq!(
        calls_of(&host.emu, "Get-Mailbox").len(),
        3 + 1,
        "the fixture's own listing"
    );
    assert!(calls_of(&host.emu, "Remove-Mailbox").is_empty());
    assert_eq!(output["usage"]["calls"], 3);
    let lines = host.audit(&report.run_id);
    let batch_lines: Vec<&Value> = lines.iter().filter(|l| l.get("batch").is_some()).collect();
    // Four decisions (one refused) and three call lines.
    assert_eq!(batch_lines.len(), 7, "{lines:#?}");
    assert!(
        batch_lines
            .iter()
            .all(|l| l["batch"] == batch_lines[0]["batch"])
    );
    let refused = batch_lines
        .iter()
        .find(|l| l["cmdlet"] == "Remove-Mailbox")
        .unwrap();
    assert_eq!(refused["allowed"], false);
    let calls: Vec<&&Value> = batch_lines.iter().filter(|l| l["kind"] == "call").collect();
    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .iter()
            .all(|l| l["outcome"]["status"] == "ok" && l["objects"] == 1),
        "{calls:#?}"
    );
}

/// Fails before: Rhai had no `exo::batch`. The same promise from a script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rhai_batch_is_one_dollar_batch_and_its_refused_call_is_not_sent() {
    let source = r#"
        let a = ARGS;
        let found = exo::invoke("Get-Mailbox", #{ResultSize: 2});
        let calls = [];
        for m in found { calls.push(#{cmdlet: "Get-Mailbox", parameters: #{Identity: m.PrimarySmtpAddress}}); }
        calls.push(#{cmdlet: "Remove-Mailbox", parameters: #{Identity: found[0].PrimarySmtpAddress}});
        calls.push(#{cmdlet: "Get-Mailbox", parameters: #{Identity: found[1].PrimarySmtpAddress, Bad: || 1}});
        #{results: exo::batch(calls), usage: exo::usage()}
    "#;
    let host = batch_host("calls = 50", &[source]).await;
    let (report, output) = host.script(source).await;
    let slots = slots(&output);
    assert_eq!(slots.len(), 4, "{output}");
    assert!(slots[0].is_ok() && slots[1].is_ok(), "{output}");
    assert_eq!(slots[2].as_ref().unwrap_err()["kind"], "denied", "{output}");
    // A value with no JSON form is refused in its slot, audited like exo::invoke's.
    assert_eq!(
        slots[3].as_ref().unwrap_err()["kind"],
        "invalid",
        "{output}"
    );
    assert_eq!(calls_of(&host.emu, "$batch").len(), 1);
    assert_eq!(batched(&host.emu, "Get-Mailbox").len(), 2);
    assert!(calls_of(&host.emu, "Remove-Mailbox").is_empty());
    let lines = host.audit(&report.run_id);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.get("batch").is_some() && l["kind"] == "call")
            .count(),
        2,
        "{lines:#?}"
    );
}

/// Budgets are charged call by call: with 3 calls left, the 4th and 5th calls of a batch are
/// refused as `budget` and never sent, exactly as they would be one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_runs_out_in_the_middle_of_a_batch() {
    let host = batch_host("calls = 3", &[]).await;
    let a = host.in_scope[0].clone();
    let (_, output) = host
        .wasm(&[
            "repeat",
            "5",
            "Get-Mailbox",
            &json!({"Identity": a}).to_string(),
        ])
        .await;
    let slots = slots(&output);
    assert!(slots[..3].iter().all(Result::is_ok), "{output}");
    for slot in &slots[3..] {
        let error = slot.as_ref().unwrap_err();
        assert_eq!(error["kind"], "budget", "{output}");
        assert_eq!(error["budget"], "calls", "{output}");
    }
    assert_eq!(batched(&host.emu, "Get-Mailbox").len(), 3);
    assert_eq!(output["usage"]["calls"], 3);
}

/// A write whose target resolves outside the grant's scope is refused in its slot (and never
/// sent), while the in-scope write and the read beside it run: the batch cannot write where
/// the same call alone could not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_outside_the_target_scope_is_refused_while_its_siblings_run() {
    let host = batch_host("calls = 50\nwrites = 5", &[]).await;
    let (a, outside) = (host.in_scope[0].clone(), host.outside.clone());
    let before_outside = host.display_name(&outside);
    let (report, output) = host
        .wasm_batch(&[
            (
                "Set-Mailbox",
                json!({"Identity": a, "DisplayName": "Batched In Scope"}),
            ),
            (
                "Set-Mailbox",
                json!({"Identity": outside, "DisplayName": "Batched Outside"}),
            ),
            ("Get-Mailbox", json!({"Identity": outside})),
        ])
        .await;
    let slots = slots(&output);
    assert!(slots[0].is_ok(), "{output}");
    let refused = slots[1].as_ref().unwrap_err();
    assert_eq!(refused["kind"], "denied", "{output}");
    assert!(
        refused["rule"].as_str().unwrap().starts_with("resolve:"),
        "{output}"
    );
    assert!(slots[2].is_ok(), "{output}");
    assert_eq!(host.display_name(&a), "Batched In Scope");
    assert_eq!(host.display_name(&outside), before_outside);
    let sets = calls_of(&host.emu, "Set-Mailbox");
    assert_eq!(sets.len(), 1, "only the in-scope write was sent");
    assert!(
        sets[0]
            .header("prefer")
            .unwrap()
            .contains("continue-on-error")
    );
    assert_eq!(output["usage"]["writes"], 1);
    let lines = host.audit(&report.run_id);
    assert!(
        lines.iter().any(|l| l["cmdlet"] == "Set-Mailbox"
            && l["allowed"] == false
            && l.get("batch").is_some()),
        "{lines:#?}"
    );
}

/// More calls than one `$batch` carries go in several: 25 calls are three POSTs (10, 10, 5),
/// the service's cap of ten (see `rest/batch.rs` for the source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_twenty_five_is_split_into_posts_of_ten() {
    let host = batch_host("calls = 50", &[]).await;
    let a = host.in_scope[0].clone();
    let (_, output) = host
        .wasm(&[
            "repeat",
            "25",
            "Get-Mailbox",
            &json!({"Identity": a}).to_string(),
        ])
        .await;
    let slots = slots(&output);
    assert_eq!(slots.len(), 25);
    assert!(slots.iter().all(Result::is_ok), "{output}");
    assert_eq!(calls_of(&host.emu, "$batch").len(), 3);
    assert_eq!(batched(&host.emu, "Get-Mailbox").len(), 25);
}

/// A batch of more calls than the host takes at once is refused whole, before any is judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_the_hosts_cap_is_refused_whole() {
    let host = batch_host("calls = 500", &[]).await;
    let a = host.in_scope[0].clone();
    let (_, output) = host
        .wasm(&[
            "repeat",
            "101",
            "Get-Mailbox",
            &json!({"Identity": a}).to_string(),
        ])
        .await;
    assert_eq!(output["error"]["kind"], "invalid", "{output}");
    assert!(calls_of(&host.emu, "$batch").is_empty());
    assert_eq!(output.get("usage"), None);
}
