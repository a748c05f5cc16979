//! The hostile corpus for "decide on the object, send the object" (issue 13 items 1, 5, 9, 10):
//! the probe wasm guest and a Rhai script name mailboxes in every spelling Exchange resolves,
//! against exosim (whose one resolver accepts them all) with its state and request log as the
//! witness. A deny rule holds for every name of the object, the call that is allowed reaches
//! exosim with the object's immutable id, what the guest learns does not depend on whether an
//! object exists, lookups are paid for, and a sensitive identity stays hashed in the trail.

use crate::guests::{GuestHost, output_json};
use crate::hostile::{
    call_decisions, call_script, granted_host_over, reason_of, run_lines, witnessed,
};
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use warden_runtime::RuntimeLimits;

/// The Rhai twin of the probe's `invoke`: cmdlet and parameters from its arguments.
const RENAME: &str = "#{Identity: ARGS[0], DisplayName: ARGS[1]}";

/// Mailboxes of the fixture, by what the tests use them for.
struct Fixture {
    /// Requests per cmdlet the fixture itself made, as the operator.
    set_up: Vec<(String, usize)>,
    domain: String,
    /// "Tenant Admin", alias `admin`, with a second address `root@…`.
    admin: Value,
    /// In the target scope, not an administrator.
    victim: Value,
    /// Outside the target scope.
    outsider: Value,
}

fn text<'a>(object: &'a Value, key: &str) -> &'a str {
    object[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {object}"))
}

async fn recipient(emu: &Emulator, identity: &str) -> Value {
    Value::Object(
        operator_invoke(emu, "Get-Recipient", json!({ "Identity": identity }))
            .await
            .remove(0),
    )
}

/// exosim with an admin mailbox (and a proxy address), two mailboxes one identity names both
/// of, and a policy whose renamer role is target-scoped to the admin, the victim and the twins
/// and carries `scripts/policy.toml`'s deny rule for admin mailboxes.
async fn resolve_host(budgets: &str, scripts: &[String]) -> (GuestHost, Fixture) {
    resolve_host_over(Transport::Rest, budgets, scripts).await
}

/// [`resolve_host`] with the broker reaching exosim over `transport`.
async fn resolve_host_over(
    transport: Transport,
    budgets: &str,
    scripts: &[String],
) -> (GuestHost, Fixture) {
    let emu = Emulator::start().await;
    let listed = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 2})).await;
    let domain = text(&Value::Object(listed[0].clone()), "PrimarySmtpAddress")
        .split_once('@')
        .unwrap()
        .1
        .to_owned();
    operator_invoke(
        &emu,
        "New-Mailbox",
        json!({"Name": "Tenant Admin", "Alias": "admin", "DisplayName": "Tenant Administrator"}),
    )
    .await;
    operator_invoke(
        &emu,
        "Set-Mailbox",
        json!({"Identity": "admin", "EmailAddresses": {"Add": [format!("smtp:root@{domain}")]}}),
    )
    .await;
    operator_invoke(
        &emu,
        "New-Mailbox",
        json!({"Name": "Twin", "Alias": "twin1"}),
    )
    .await;
    operator_invoke(
        &emu,
        "New-Mailbox",
        json!({"Name": "Twin Two", "Alias": "twin2", "DisplayName": "Twin"}),
    )
    .await;
    let admin = recipient(&emu, "admin").await;
    let victim = recipient(
        &emu,
        text(&Value::Object(listed[0].clone()), "PrimarySmtpAddress"),
    )
    .await;
    let outsider = recipient(
        &emu,
        text(&Value::Object(listed[1].clone()), "PrimarySmtpAddress"),
    )
    .await;
    let scope = [
        text(&admin, "PrimarySmtpAddress").to_owned(),
        text(&victim, "PrimarySmtpAddress").to_owned(),
        format!("twin1@{domain}"),
        format!("twin2@{domain}"),
    ]
    .map(|a| format!("\"{a}\""))
    .join(", ");
    let roles = format!(
        r#"
[roles.renamer]
[[roles.renamer.cmdlet]]
name = "Set-Mailbox"
target = {{ parameter = "Identity", domains = [], identities = [{scope}] }}
[roles.renamer.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
DisplayName = {{ length = [1, 64] }}
GrantSendOnBehalfTo = {{ keys = ["Add"], each = {{ items = [1, 1], each = {{ length = [1, 256] }} }} }}

[roles.statistics]
[[roles.statistics.cmdlet]]
name = "Get-MailboxStatistics"
target = {{ parameter = "Identity", domains = [], identities = [{scope}] }}
[roles.statistics.cmdlet.parameters]
Identity = {{ length = [1, 256], sensitive = true }}

# scripts/policy.toml's deny rule, verbatim.
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = {{ pattern = "(?i)admin.*@.*" }}
reason = "administrator mailboxes are renamed by hand only"

[[deny]]
cmdlet = "Set-Mailbox"
parameter = "GrantSendOnBehalfTo"
when_any = {{ pattern = "(?i)admin.*@.*" }}
reason = "no automation makes an administrator a delegate"
"#
    );
    let grant = format!("roles = [\"renamer\", \"statistics\"]\n[grant.budgets]\n{budgets}\n");
    let session = match transport {
        Transport::Rest => Arc::new(admin_session(&emu)) as Arc<dyn warden_exchange::CmdletRunner>,
        Transport::Rps => runner_for(&emu, 0, Transport::Rps).0,
    };
    let host = granted_host_over(
        emu,
        session,
        RuntimeLimits::default(),
        &roles,
        &grant,
        scripts,
    );
    let set_up = ["Get-Recipient", "Set-Mailbox"]
        .map(|c| (c.to_owned(), host.exosim_calls(c)))
        .to_vec();
    (
        host,
        Fixture {
            set_up,
            domain,
            admin,
            victim,
            outsider,
        },
    )
}

// Deciding on the object holds over both transports: the broker's lookup and the call with
// the object's id go through the same runner, REST or Remote PowerShell.
over_both_transports!(
    every_spelling_of_the_admin_mailbox_is_refused_by_the_deny_rule_and_nothing_applies,
    an_allowed_call_reaches_exosim_with_the_objects_immutable_id,
);

/// One call through both runtimes: (runtime, the guest's answer, the run id, what reached
/// exosim during the run).
async fn both(
    host: &GuestHost,
    script: &str,
    cmdlet: &str,
    params: Value,
    args: &[&str],
) -> Vec<(
    &'static str,
    Value,
    String,
    Vec<exosim::ExchangeRequestRecord>,
)> {
    let (wasm, wasm_new) =
        witnessed(host, host.probe(&["invoke", cmdlet, &params.to_string()])).await;
    let (rhai, rhai_new) = witnessed(host, host.script(script, args)).await;
    vec![
        ("wasm", output_json(&wasm), wasm.run_id.clone(), wasm_new),
        ("Rhai", output_json(&rhai), rhai.run_id.clone(), rhai_new),
    ]
}

/// Requests for `cmdlet` that guests' runs made (the fixture's own left out).
fn guest_calls(host: &GuestHost, f: &Fixture, cmdlet: &str) -> usize {
    let before = f
        .set_up
        .iter()
        .find(|(c, _)| c == cmdlet)
        .map_or(0, |(_, n)| *n);
    host.exosim_calls(cmdlet) - before
}

fn display_name(host: &GuestHost, mailbox: &Value) -> String {
    host.emu
        .exosim
        .mailbox(&host.emu.tenant_id(), text(mailbox, "Guid"))
        .unwrap()["DisplayName"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn every_spelling_of_the_admin_mailbox_is_refused_by_the_deny_rule_and_nothing_applies(
    transport: Transport,
) {
    let script = call_script("\"Set-Mailbox\"", RENAME);
    let (host, f) = resolve_host_over(
        transport,
        "calls = 10\nwrites = 1",
        std::slice::from_ref(&script),
    )
    .await;
    let primary = text(&f.admin, "PrimarySmtpAddress").to_owned();
    let spellings = [
        format!(" {primary}"),
        format!("\t{primary}"),
        format!("\u{3000}{primary}"),
        format!("smtp:{primary}"),
        format!("SMTP:{primary}"),
        format!("root@{}", f.domain),
        "admin".to_owned(),
        text(&f.admin, "Guid").to_owned(),
        text(&f.admin, "DistinguishedName").to_owned(),
        text(&f.admin, "LegacyExchangeDN").to_owned(),
        "NAMPR00A001\\admin".to_owned(),
        "Tenant Admin".to_owned(),
    ];
    let before = display_name(&host, &f.admin);
    for spelling in &spellings {
        let params = json!({"Identity": spelling, "DisplayName": "Pwned"});
        for (runtime, answer, run_id, _) in
            both(&host, &script, "Set-Mailbox", params, &[spelling, "Pwned"]).await
        {
            let what = format!("{runtime} {spelling:?}");
            // A padded value never gets as far as a lookup: the policy refuses it as given
            // (Exchange would trim it), so what is judged is always what would be sent.
            let padded = spelling.trim() != spelling;
            let (kind, rule) = if padded {
                ("invalid", "invalid-parameters")
            } else {
                ("denied", "deny[0]")
            };
            assert_eq!(answer["error"]["kind"], kind, "{what}: {answer}");
            let refused = call_decisions(&host, &run_id)
                .into_iter()
                .find(|l| l["allowed"] == false)
                .unwrap_or_else(|| panic!("{what}: no refusal line"));
            assert_eq!(refused["rule"], rule, "{what}: {refused}");
            assert_eq!(display_name(&host, &f.admin), before, "{what}: renamed");
        }
    }
    assert_eq!(
        guest_calls(&host, &f, "Set-Mailbox"),
        0,
        "no rename reached exosim"
    );
    assert!(
        warden_audit::verify(&host.audit_path, &host.key)
            .unwrap()
            .ok()
    );
}

async fn an_allowed_call_reaches_exosim_with_the_objects_immutable_id(transport: Transport) {
    let script = call_script("\"Set-Mailbox\"", RENAME);
    let (host, f) = resolve_host_over(
        transport,
        "calls = 10\nwrites = 1",
        std::slice::from_ref(&script),
    )
    .await;
    let alias = text(&f.victim, "Alias").to_uppercase();
    let spelled = alias;
    let id = text(&f.victim, "ExchangeObjectId").to_owned();
    for (runtime, answer, _, new) in both(
        &host,
        &script,
        "Set-Mailbox",
        json!({"Identity": spelled, "DisplayName": "Renamed wasm"}),
        &[&spelled, "Renamed Rhai"],
    )
    .await
    {
        assert!(answer.get("ok").is_some(), "{runtime}: {answer}");
        // Remote PowerShell also logs its Receive and Signal requests, which name no cmdlet.
        let calls: Vec<_> = new.iter().filter(|r| r.cmdlet.is_some()).collect();
        let cmdlets: Vec<_> = calls.iter().map(|r| r.cmdlet.as_deref().unwrap()).collect();
        assert_eq!(cmdlets, ["Get-Recipient", "Set-Mailbox"], "{runtime}");
        assert_eq!(
            calls[1].identity.as_deref(),
            Some(id.as_str()),
            "{runtime}: Exchange was told the object, not the spelling"
        );
        assert!(calls[1].applied, "{runtime}");
    }
    assert_eq!(display_name(&host, &f.victim), "Renamed Rhai");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ambiguous_and_out_of_scope_identities_read_alike_to_the_guest() {
    let script = call_script("\"Set-Mailbox\"", RENAME);
    let (host, f) = resolve_host("calls = 10\nwrites = 1", std::slice::from_ref(&script)).await;
    let cases = [
        ("unknown", format!("nobody-here@{}", f.domain)),
        ("ambiguous", "Twin".to_owned()),
        ("out of scope", text(&f.outsider, "Alias").to_owned()),
        (
            "out of scope",
            text(&f.outsider, "PrimarySmtpAddress").to_owned(),
        ),
    ];
    let mut answers = Vec::new();
    for (what, identity) in &cases {
        let params = json!({"Identity": identity, "DisplayName": "x"});
        for (runtime, answer, run_id, _) in
            both(&host, &script, "Set-Mailbox", params, &[identity, "x"]).await
        {
            let error = &answer["error"];
            assert_eq!(error["kind"], "denied", "{runtime} {what}: {answer}");
            let told = (error["rule"].clone(), reason_of(error).to_owned());
            assert!(
                !told.1.contains(identity.as_str())
                    && !told.1.contains(text(&f.outsider, "PrimarySmtpAddress")),
                "{runtime} {what}: the guest is told no name: {told:?}"
            );
            // The operator's trail keeps what happened.
            let refused = call_decisions(&host, &run_id)
                .into_iter()
                .find(|l| l["allowed"] == false)
                .unwrap();
            assert!(refused["reason"].as_str().is_some(), "{refused}");
            answers.push((runtime, *what, told));
        }
    }
    for (runtime, what, told) in &answers {
        assert_eq!(
            told, &answers[0].2,
            "{runtime} {what} reads differently from {} {}",
            answers[0].0, answers[0].1
        );
    }
    assert_eq!(guest_calls(&host, &f, "Set-Mailbox"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_list_is_decided_item_by_item_on_the_objects() {
    let script = call_script(
        "\"Set-Mailbox\"",
        "#{Identity: ARGS[0], GrantSendOnBehalfTo: #{Add: [ARGS[1]]}}",
    );
    let (host, f) = resolve_host("calls = 20\nwrites = 2", std::slice::from_ref(&script)).await;
    let victim = text(&f.victim, "PrimarySmtpAddress").to_owned();
    // The admin's second address is not an admin address to the text-only rule.
    let root = format!("root@{}", f.domain);
    for (runtime, answer, run_id, _) in both(
        &host,
        &script,
        "Set-Mailbox",
        json!({"Identity": victim, "GrantSendOnBehalfTo": {"Add": [root]}}),
        &[&victim, &root],
    )
    .await
    {
        assert_eq!(answer["error"]["kind"], "denied", "{runtime}: {answer}");
        let refused = call_decisions(&host, &run_id)
            .into_iter()
            .find(|l| l["allowed"] == false)
            .unwrap();
        assert_eq!(refused["rule"], "deny[1]", "{runtime}: {refused}");
    }
    assert_eq!(
        guest_calls(&host, &f, "Set-Mailbox"),
        0,
        "no delegate was added"
    );
    // Another delegate is added, by its id.
    let outsider = text(&f.outsider, "Alias").to_owned();
    for (runtime, answer, _, new) in both(
        &host,
        &script,
        "Set-Mailbox",
        json!({"Identity": victim, "GrantSendOnBehalfTo": {"Add": [outsider]}}),
        &[&victim, &outsider],
    )
    .await
    {
        assert!(answer.get("ok").is_some(), "{runtime}: {answer}");
        assert_eq!(new.len(), 3, "{runtime}: two lookups and the call");
    }
    let mailbox = host
        .emu
        .exosim
        .mailbox(&host.emu.tenant_id(), &victim)
        .unwrap();
    assert_eq!(
        mailbox["GrantSendOnBehalfTo"],
        json!([text(&f.outsider, "PrimarySmtpAddress")]),
        "{mailbox}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_paid_for_so_500_of_them_under_one_call_never_reach_exchange() {
    const ATTEMPTS: u64 = 500;
    let script = format!(
        "let n = 0; for i in 0..{ATTEMPTS} {{ try {{ exo::invoke(\"Set-Mailbox\", {RENAME}); }} catch (e) {{ n += 1; }} }} n"
    );
    let (host, f) = resolve_host(
        "calls = 1\nwrites = 1\nwall_clock_secs = 60",
        std::slice::from_ref(&script),
    )
    .await;
    let nobody = format!("nobody-{}@{}", uuid::Uuid::new_v4(), f.domain);
    let params = json!({"Identity": nobody, "DisplayName": "x"}).to_string();
    let (wasm, _) = host
        .probe(&["call-spam", &ATTEMPTS.to_string(), "Set-Mailbox", &params])
        .await;
    let (rhai, _) = host.script(&script, &[&nobody, "x"]).await;
    assert_eq!(output_json(&wasm)["failed"], ATTEMPTS, "{:?}", wasm.outcome);
    assert_eq!(output_json(&rhai), ATTEMPTS, "{:?}", rhai.outcome);
    let lookups = guest_calls(&host, &f, "Get-Recipient");
    assert!(lookups <= 2, "{lookups} lookups reached exosim");
    assert_eq!(guest_calls(&host, &f, "Set-Mailbox"), 0);
    // The trail is bounded per run: past REFUSAL_LINES_PER_RUN the refusals are counted.
    for report in [&wasm, &rhai] {
        let lines = run_lines(&host, &report.run_id);
        assert!(
            lines.len() as u64 <= warden_broker::REFUSAL_LINES_PER_RUN + 4,
            "{} lines",
            lines.len()
        );
        let summary = lines
            .iter()
            .find(|l| l["rule"] == "refusals-unwritten")
            .expect("a summary line");
        let counted = ATTEMPTS - warden_broker::REFUSAL_LINES_PER_RUN;
        assert!(
            summary["reason"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{counted} refusals")),
            "{summary}"
        );
    }
    assert!(
        warden_audit::verify(&host.audit_path, &host.key)
            .unwrap()
            .ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_identity_is_never_in_clear_in_the_trail() {
    let script = call_script("\"Get-MailboxStatistics\"", "#{Identity: ARGS[0]}");
    let (host, f) = resolve_host("calls = 10", std::slice::from_ref(&script)).await;
    // In scope (the lookup and the call are written) and out of scope (the refusal is).
    for mailbox in [&f.victim, &f.outsider] {
        let spelled = text(mailbox, "LegacyExchangeDN").to_owned();
        let secrets = [
            spelled.clone(),
            text(mailbox, "PrimarySmtpAddress").to_owned(),
            text(mailbox, "Guid").to_owned(),
            text(mailbox, "Alias").to_owned(),
        ];
        for (runtime, answer, run_id, new) in both(
            &host,
            &script,
            "Get-MailboxStatistics",
            json!({"Identity": spelled}),
            &[&spelled],
        )
        .await
        {
            assert!(!new.is_empty(), "{runtime}: the lookup was made");
            let lines = serde_json::to_string(&run_lines(&host, &run_id))
                .unwrap()
                .to_lowercase();
            assert!(lines.contains("hmac-sha256:"), "{runtime}: {lines}");
            for secret in &secrets {
                assert!(
                    !lines.contains(&secret.to_lowercase()),
                    "{runtime} {answer}: {secret} in clear: {lines}"
                );
            }
        }
    }
}

/// The sibling of the above: the secret under a name PowerShell would bind to the marked one
/// (a leading `-`, a prefix, padding) is refused, and its refusal line hashes it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_value_under_a_misspelled_name_is_never_in_clear_in_the_trail() {
    let names = ["-Identity", "Ident", " identity", "-IDENTITY"];
    let scripts: Vec<String> = names
        .iter()
        .map(|name| {
            call_script(
                "\"Get-MailboxStatistics\"",
                &format!("#{{{}: ARGS[0]}}", json!(name)),
            )
        })
        .collect();
    let (host, f) = resolve_host("calls = 10", &scripts).await;
    let secret = text(&f.victim, "PrimarySmtpAddress").to_owned();
    for (name, script) in names.iter().zip(&scripts) {
        let mut params = serde_json::Map::new();
        params.insert((*name).to_owned(), json!(secret));
        for (runtime, answer, run_id, new) in both(
            &host,
            script,
            "Get-MailboxStatistics",
            Value::Object(params.clone()),
            &[&secret],
        )
        .await
        {
            let what = format!("{runtime} {name:?}");
            assert!(
                answer["error"]["kind"].is_string(),
                "{what}: not refused: {answer}"
            );
            assert!(new.is_empty(), "{what}: reached exosim");
            let refused = call_decisions(&host, &run_id)
                .into_iter()
                .find(|l| l["allowed"] == false)
                .unwrap_or_else(|| panic!("{what}: no refusal line"));
            let line = refused.to_string().to_lowercase();
            assert!(line.contains("hmac-sha256:"), "{what}: {line}");
            assert!(
                !line.contains(&secret.to_lowercase()),
                "{what}: in clear: {line}"
            );
        }
    }
}

/// The same for a secret no policy marks: a SecureString parameter (or one named like it) of a
/// cmdlet the grant leaves out, under its dashed, colon or shortened spellings. The vocabulary's
/// rule hashes it; it must know the spellings too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_parameter_under_a_misspelled_name_is_never_in_clear_in_the_trail() {
    let calls = [
        ("New-Mailbox", "-Pass"),
        ("New-Mailbox", "\u{2013}Password"),
        ("New-Mailbox", "pass:"),
        ("New-MigrationEndpoint", "-OAuthCode"),
        ("New-MigrationEndpoint", " oauthcode: "),
    ];
    let scripts: Vec<String> = calls
        .iter()
        .map(|(cmdlet, name)| {
            call_script(
                &json!(cmdlet).to_string(),
                &format!("#{{{}: ARGS[0]}}", json!(name)),
            )
        })
        .collect();
    let (host, _) = resolve_host("calls = 10", &scripts).await;
    let secret = "hunter2-s3cret-value";
    for ((cmdlet, name), script) in calls.iter().zip(&scripts) {
        let mut params = serde_json::Map::new();
        params.insert((*name).to_owned(), json!(secret));
        for (runtime, answer, run_id, new) in both(
            &host,
            script,
            cmdlet,
            Value::Object(params.clone()),
            &[secret],
        )
        .await
        {
            let what = format!("{runtime} {cmdlet} {name:?}");
            assert_eq!(answer["error"]["kind"], "denied", "{what}: {answer}");
            assert!(new.is_empty(), "{what}: reached exosim");
            let line = serde_json::to_string(&run_lines(&host, &run_id)).unwrap();
            assert!(line.contains("hmac-sha256:"), "{what}: {line}");
            assert!(!line.contains(secret), "{what}: in clear: {line}");
        }
    }
}

/// An object's own names are Exchange's text, not a guest's: one may start with U+200E or U+FEFF
/// (Exchange allows it), which a guest's value may not. The deny rules judge it all the same;
/// before, the value rules refused the identifier and that refusal read as "no deny".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_judges_an_identifier_whatever_characters_it_holds() {
    let script = call_script("\"Set-Mailbox\"", RENAME);
    let (host, f) = resolve_host("calls = 10\nwrites = 1", std::slice::from_ref(&script)).await;
    let alias = text(&f.victim, "Alias").to_owned();
    for marked in [
        format!("\u{200e}Admin@{}", f.domain),
        format!("\u{feff}admin@{}", f.domain),
    ] {
        // The operator names the victim like an administrator, behind an invisible mark.
        operator_invoke(
            &host.emu,
            "Set-Mailbox",
            json!({"Identity": alias, "DisplayName": marked}),
        )
        .await;
        let before = display_name(&host, &f.victim);
        assert_eq!(before, marked, "exosim keeps the mark");
        let renames = host.exosim_calls("Set-Mailbox");
        for (runtime, answer, run_id, _) in both(
            &host,
            &script,
            "Set-Mailbox",
            json!({"Identity": alias, "DisplayName": "Pwned"}),
            &[&alias, "Pwned"],
        )
        .await
        {
            assert_eq!(answer["error"]["kind"], "denied", "{runtime}: {answer}");
            let refused = call_decisions(&host, &run_id)
                .into_iter()
                .find(|l| l["allowed"] == false)
                .unwrap_or_else(|| panic!("{runtime}: no refusal line"));
            assert!(
                refused["rule"]
                    .as_str()
                    .is_some_and(|r| r.contains("deny[0]")),
                "{runtime}: {refused}"
            );
            assert_eq!(display_name(&host, &f.victim), before, "{runtime}: renamed");
        }
        assert_eq!(
            host.exosim_calls("Set-Mailbox"),
            renames,
            "no rename reached exosim"
        );
    }
}
