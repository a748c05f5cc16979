//! The example plugins (plugins/, built by plain `cargo build --target wasm32-wasip2`) and the
//! example scripts (scripts/) under the policies committed beside them, against exosim: each
//! does its job, its writes really change the tenant, running it again changes nothing, and
//! its policy refuses what it should — over REST and over RPS alike.

use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_policy::{Policy, Principal};
use warden_runtime::{
    GuestOutput, LoadedPlugin, PluginHost, RunOutcome, RunReport, RunRequest, RuntimeLimits,
    ScriptHost,
};

const UNPINNED: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Example {
    emu: Emulator,
    plugins: PluginHost,
    transport: Transport,
}

impl Example {
    async fn start(transport: Transport) -> Self {
        let emu = Emulator::start().await;
        let plugins = PluginHost::new(RuntimeLimits::default(), None).unwrap();
        Self {
            emu,
            plugins,
            transport,
        }
    }

    /// A broker under `policy_file`, with the zeros of an unpinned grant replaced by `pin`.
    fn broker(&self, policy_file: &Path, pin: Option<&str>) -> Broker {
        let mut text = std::fs::read_to_string(policy_file).unwrap();
        if let Some(pin) = pin {
            assert!(
                text.contains(UNPINNED),
                "{} has an unpinned grant",
                policy_file.display()
            );
            text = text.replace(UNPINNED, pin);
        }
        // Parsed with the file's own path as origin, so script paths resolve beside it.
        let policy = Policy::parse(&text, policy_file).unwrap();
        let audit = AuditTrail::open(
            &self.emu.dir.path().join("audit.jsonl"),
            AuditKey::from_bytes([7; 32]),
        )
        .unwrap();
        Broker::new(
            Arc::new(policy),
            runner_for(&self.emu, 0, self.transport).0,
            Arc::new(audit),
            Duration::from_secs(30),
        )
    }

    fn plugin(&self, name: &str) -> LoadedPlugin {
        self.plugins.load(&guest("plugins", name)).unwrap()
    }

    async fn run(&self, name: &str, args: &[&str]) -> (RunReport, LoadedPlugin) {
        let plugin = self.plugin(name);
        let broker = self.broker(
            &repo_root().join("plugins").join(name).join("policy.toml"),
            Some(plugin.sha256()),
        );
        let report = self
            .plugins
            .run(
                &plugin,
                &broker,
                RunRequest::new(args.iter().map(|a| (*a).to_owned()).collect()),
            )
            .await
            .unwrap();
        (report, plugin)
    }
}

fn text_of(report: &RunReport) -> String {
    match &report.outcome {
        RunOutcome::Completed {
            output: GuestOutput::Text(text),
        } => text.clone(),
        other => panic!("did not complete: {other:?}"),
    }
}

fn json_of(report: &RunReport) -> Value {
    serde_json::from_str(&text_of(report)).unwrap()
}

// A plugin runs unchanged over either transport: the same component, policy and assertions.
over_both_transports!(
    mailbox_report_lists_every_mailbox_with_exosims_sizes,
    shared_mailbox_provisioning_changes_the_tenant_once,
    permission_audit_and_its_script_twin_agree,
    example_scripts_run_under_their_pinned_policy,
);

async fn addresses(emu: &Emulator, kind: &str) -> Vec<String> {
    operator_invoke(emu, "Get-Mailbox", json!({"RecipientTypeDetails": kind}))
        .await
        .iter()
        .map(|m| m["PrimarySmtpAddress"].as_str().unwrap().to_owned())
        .collect()
}

async fn mailbox_report_lists_every_mailbox_with_exosims_sizes(transport: Transport) {
    let example = Example::start(transport).await;
    let (report, plugin) = example.run("mailbox-report", &[]).await;
    assert_eq!(
        plugin.name(),
        "mailbox-report",
        "the name comes from the plugin's manifest"
    );
    let rows = json_of(&report);
    let rows = rows.as_array().unwrap();
    let all = operator_invoke(&example.emu, "Get-Mailbox", json!({})).await;
    assert_eq!(rows.len(), all.len());
    let first = rows[0]["PrimarySmtpAddress"].as_str().unwrap();
    let stats = operator_invoke(
        &example.emu,
        "Get-MailboxStatistics",
        json!({"Identity": first}),
    )
    .await;
    assert_eq!(rows[0]["TotalItemSize"], stats[0]["TotalItemSize"]);
    assert_eq!(rows[0]["ItemCount"], stats[0]["ItemCount"]);
    assert_eq!(
        report.usage.calls,
        1 + all.len() as u64,
        "one Get-Mailbox, then one statistics call each"
    );

    let (report, _) = example
        .run("mailbox-report", &["--format", "csv", "--limit", "3"])
        .await;
    let csv = text_of(&report);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "DisplayName,PrimarySmtpAddress,RecipientTypeDetails,TotalItemSize,ItemCount"
    );
    assert_eq!(lines.len(), 4, "{csv}");
}

async fn shared_mailbox_provisioning_changes_the_tenant_once(transport: Transport) {
    let example = Example::start(transport).await;
    let users = addresses(&example.emu, "UserMailbox").await;
    let (alice, bob) = (&users[0], &users[1]);
    let address = "sales-team@contoso.onmicrosoft.com";
    let args = [
        "--name",
        "Sales Team",
        "--address",
        address,
        "--full-access",
        alice,
        "--full-access",
        bob,
        "--send-as",
        bob,
    ];
    let (report, _) = example.run("shared-mailbox", &args).await;
    assert!(
        matches!(report.outcome, RunOutcome::Completed { .. }),
        "{:?}",
        report.outcome
    );
    let created = example
        .emu
        .exosim
        .mailbox(&example.emu.tenant_id(), address)
        .expect("created");
    assert_eq!(created["RecipientTypeDetails"], "SharedMailbox");
    let full: Vec<String> = operator_invoke(
        &example.emu,
        "Get-MailboxPermission",
        json!({"Identity": address}),
    )
    .await
    .iter()
    .filter(|p| p["AccessRights"].to_string().contains("FullAccess") && p["IsInherited"] == false)
    .map(|p| p["User"].as_str().unwrap().to_lowercase())
    .collect();
    for user in [alice, bob] {
        let local = user.split('@').next().unwrap().to_lowercase();
        assert!(
            full.iter().any(|f| f.contains(&local)),
            "{user} has FullAccess: {full:?}"
        );
    }
    let send_as = operator_invoke(
        &example.emu,
        "Get-RecipientPermission",
        json!({"Identity": address}),
    )
    .await;
    assert_eq!(
        send_as
            .iter()
            .filter(|p| p["Trustee"].as_str().is_some_and(|t| !t.contains("SELF")))
            .count(),
        1,
        "{send_as:?}"
    );
    assert_eq!(
        report.usage.writes, 4,
        "New-Mailbox, two FullAccess, one SendAs"
    );

    // Again: everything exists, so nothing is written.
    let writes = || {
        example
            .emu
            .cmdlet_requests(|c| c.starts_with("Add-") || c.starts_with("New-"))
    };
    let writes_before = writes();
    let (report, _) = example.run("shared-mailbox", &args).await;
    assert!(
        matches!(report.outcome, RunOutcome::Completed { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.usage.writes, 0);
    let writes_after = writes();
    assert_eq!(writes_before, writes_after);

    // Outside the policy's domain: refused before anything is written.
    let (report, _) = example
        .run(
            "shared-mailbox",
            &["--name", "X", "--address", "x@fabrikam.com"],
        )
        .await;
    assert!(
        matches!(report.outcome, RunOutcome::Failed { .. }),
        "{:?}",
        report.outcome
    );
    assert!(
        example
            .emu
            .exosim
            .mailbox(&example.emu.tenant_id(), "x@fabrikam.com")
            .is_none()
    );
}

async fn permission_audit_and_its_script_twin_agree(transport: Transport) {
    let example = Example::start(transport).await;
    // Delegates to find: provisioned by the other plugin through the same kind of broker.
    let users = addresses(&example.emu, "UserMailbox").await;
    let address = "helpdesk-queue@contoso.onmicrosoft.com";
    let (report, _) = example
        .run(
            "shared-mailbox",
            &[
                "--name",
                "Helpdesk Queue",
                "--address",
                address,
                "--full-access",
                &users[0],
                "--send-as",
                &users[1],
            ],
        )
        .await;
    assert!(
        matches!(report.outcome, RunOutcome::Completed { .. }),
        "{:?}",
        report.outcome
    );
    let (report, _) = example.run("permission-audit", &[]).await;
    let rows = json_of(&report);
    let rows = rows.as_array().unwrap();
    let local = |user: &str| user.split('@').next().unwrap().to_lowercase();
    let found = |right: &str, user: &str| {
        rows.iter().any(|r| {
            r["Right"] == right
                && r["Mailbox"].as_str().unwrap().eq_ignore_ascii_case(address)
                && r["Trustee"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains(&local(user))
        })
    };
    assert!(found("FullAccess", &users[0]), "{rows:?}");
    assert!(found("SendAs", &users[1]), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| !r["Trustee"].as_str().unwrap().contains("SELF"))
    );

    // The Rhai example reports the same FullAccess grants through the same broker.
    let scripts = ScriptHost::new(RuntimeLimits::default());
    let file = repo_root().join("scripts/shared-mailbox-access.rhai");
    let source = std::fs::read_to_string(&file).unwrap();
    let broker = example.broker(&repo_root().join("scripts/policy.toml"), None);
    let compiled = scripts
        .compile(&file.display().to_string(), &source)
        .unwrap();
    let report = scripts
        .run(
            &compiled,
            Principal::script_file(&file, source.as_bytes()),
            &broker,
            RunRequest::new(vec![]),
        )
        .await
        .unwrap();
    let RunOutcome::Completed {
        output: GuestOutput::Json(script_rows),
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    let key = |r: &Value| {
        format!(
            "{}|{}",
            r["Mailbox"].as_str().unwrap().to_lowercase(),
            r["Trustee"].as_str().unwrap().to_lowercase()
        )
    };
    let mut from_plugin: Vec<String> = rows
        .iter()
        .filter(|r| r["Right"] == "FullAccess")
        .map(key)
        .collect();
    let mut from_script: Vec<String> = script_rows.as_array().unwrap().iter().map(key).collect();
    from_plugin.sort();
    from_script.sort();
    assert_eq!(from_plugin, from_script);
}

async fn example_scripts_run_under_their_pinned_policy(transport: Transport) {
    let example = Example::start(transport).await;
    let scripts = ScriptHost::new(RuntimeLimits::default());
    let broker = example.broker(&repo_root().join("scripts/policy.toml"), None);
    let users = addresses(&example.emu, "UserMailbox").await;
    let run = |name: &'static str, args: Vec<String>| {
        let file = repo_root().join("scripts").join(name);
        let source = std::fs::read_to_string(&file).unwrap();
        let compiled = scripts
            .compile(&file.display().to_string(), &source)
            .unwrap();
        let principal = Principal::script_file(&file, source.as_bytes());
        let broker = broker.clone();
        let scripts = &scripts;
        async move {
            scripts
                .run(&compiled, principal, &broker, RunRequest::new(args))
                .await
                .unwrap_or_else(|e| {
                    panic!("{name}: {e} (re-pin scripts/policy.toml if the script changed)")
                })
        }
    };
    let report = run("largest-mailboxes.rhai", vec![]).await;
    let RunOutcome::Completed {
        output: GuestOutput::Json(rows),
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 10);
    let items: Vec<i64> = rows.iter().map(|r| r["Items"].as_i64().unwrap()).collect();
    assert!(
        items.windows(2).all(|w| w[0] >= w[1]),
        "sorted by items: {items:?}"
    );

    let report = run(
        "rename-mailbox.rhai",
        vec![users[2].clone(), "Renamed By Script".into()],
    )
    .await;
    let RunOutcome::Completed {
        output: GuestOutput::Json(result),
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(result["Renamed"], true, "{result}");
    assert_eq!(
        example
            .emu
            .exosim
            .mailbox(&example.emu.tenant_id(), &users[2])
            .unwrap()["DisplayName"],
        "Renamed By Script"
    );
    let report = run(
        "rename-mailbox.rhai",
        vec![users[3].clone(), "Bad <name>".into()],
    )
    .await;
    let RunOutcome::Completed {
        output: GuestOutput::Json(result),
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(
        result["Renamed"], false,
        "the policy's name pattern refuses it: {result}"
    );
    let report = run("rename-mailbox.rhai", vec![]).await;
    assert!(
        matches!(&report.outcome, RunOutcome::Failed { message } if message.contains("usage")),
        "{:?}",
        report.outcome
    );
}
