//! Issue 13's policy half, through real guests against exosim: the policy judges what Exchange
//! will act on, not how a guest spelled it. Each trick below passed the policy before (a list
//! past a deny, `[]` past a hashtable-only constraint, a padded or `smtp:` identity past the
//! admin deny, a filter reading what `output` hides) and is now refused by both the `probe`
//! wasm guest's and a Rhai script's call alike, with its audit line, while exosim's request log
//! shows that it never arrived; the honest sibling of each still reaches exosim.

use crate::guests::{GuestHost, output_json};
use crate::hostile::{
    Expect, call_decisions, call_script, check_call, denied, granted_host, invalid, rhai_literal,
    rhai_string, summary, witnessed,
};
use crate::support::*;
use serde_json::{Value, json};
use warden_policy::Policy;
use warden_runtime::RuntimeLimits;

/// The roles every case is decided under. `{ADMIN}` is a TOML literal-string pattern for the
/// one mailbox the deny protects, written without `(?i)` as an operator might.
const ROLES: &str = r#"
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]
[roles.reader.cmdlet.parameters]
Identity = { length = [1, 256] }
Filter = { length = [1, 500] }

[roles.editor]
[[roles.editor.cmdlet]]
name = "Set-Mailbox"
[roles.editor.cmdlet.parameters]
Identity = { length = [1, 256] }
DisplayName = { length = [1, 256] }
GrantSendOnBehalfTo = { keys = ["Add", "Remove"], each = { items = [1, 10], each = { length = [1, 256] } } }

[[roles.editor.cmdlet]]
name = "Add-MailboxPermission"
[roles.editor.cmdlet.parameters]
Identity = { length = [1, 256] }
User = { length = [1, 256] }
AccessRights = { items = [1, 5], each = { length = [1, 64] } }

[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { pattern = '{ADMIN}' }
reason = "the administrator's mailbox is changed by hand only"

[[deny]]
cmdlet = "Add-MailboxPermission"
parameter = "AccessRights"
when = { one_of = ["FullAccess"] }
identity = false
reason = "full access is granted by hand only"
"#;

/// One call: the cmdlet, its parameters, and what it must come to in both runtimes.
struct Case {
    cmdlet: &'static str,
    params: Value,
    expect: Expect,
}

fn case(cmdlet: &'static str, params: Value, expect: Expect) -> Case {
    Case {
        cmdlet,
        params,
        expect,
    }
}

/// A host whose probe and `scripts` are granted [`ROLES`], the deny guarding `admin`.
async fn policy_host(emu: Emulator, admin: &str, scripts: &[String]) -> GuestHost {
    let roles = ROLES.replace("{ADMIN}", &admin.replace('.', "\\."));
    let grant = "roles = [\"reader\", \"editor\"]\n[grant.budgets]\nwrites = 100\n";
    let host = granted_host(emu, RuntimeLimits::default(), &roles, grant, scripts);
    let written = Policy::load(&host.emu.dir.path().join("policy.toml")).unwrap();
    assert!(written.warnings().is_empty(), "{:?}", written.warnings());
    host
}

/// The tricks, each refused before the network.
fn tricks(admin: &str, other: &str) -> Vec<Case> {
    let padded = |says| invalid("invalid-parameters", says);
    let admin_deny = || denied("deny[0]", "by hand only");
    let full_access = || denied("deny[1]", "by hand only");
    let rename = |identity: String| json!({"Identity": identity, "DisplayName": "Renamed"});
    let grant_access =
        |rights: Value| json!({"Identity": other, "User": other, "AccessRights": rights});
    let delegates = |value: Value| json!({"Identity": other, "GrantSendOnBehalfTo": value});
    let shaped = |says| denied("role:reader/Get-Mailbox/Filter", says);
    vec![
        // Whitespace Exchange trims, invisible characters, control characters: the admin deny
        // would have judged another text than the mailbox Exchange resolves.
        case("Set-Mailbox", rename(format!(" {admin}")), padded("U+0020")),
        case("Set-Mailbox", rename(format!("{admin} ")), padded("U+0020")),
        case(
            "Set-Mailbox",
            rename(format!("\t{admin}")),
            padded("U+0009"),
        ),
        case(
            "Set-Mailbox",
            rename(format!("\u{3000}{admin}")),
            padded("U+3000"),
        ),
        case(
            "Set-Mailbox",
            rename(format!("{admin}\u{a0}")),
            padded("U+00A0"),
        ),
        case(
            "Set-Mailbox",
            rename(format!("\u{200b}{admin}")),
            padded("U+200B"),
        ),
        case(
            "Set-Mailbox",
            rename(format!("{admin}\u{feff}")),
            padded("U+FEFF"),
        ),
        case(
            "Set-Mailbox",
            json!({"Identity": other, "DisplayName": "bob\n-Type Room\r\n-Confirm:$false"}),
            padded("U+000A"),
        ),
        case(
            "Set-Mailbox",
            json!({"Identity": other, "DisplayName": "nul\0byte -Type Room"}),
            padded("U+0000"),
        ),
        // The address Exchange acts on, in another case or behind an smtp: prefix.
        case("Set-Mailbox", rename(format!("smtp:{admin}")), admin_deny()),
        case(
            "Set-Mailbox",
            rename(format!("SMTP:{}", admin.to_uppercase())),
            admin_deny(),
        ),
        case("Set-Mailbox", rename(admin.to_uppercase()), admin_deny()),
        // A deny on FullAccess holds for a list, any item of it, any case, a flags string.
        case(
            "Add-MailboxPermission",
            grant_access(json!(["FullAccess"])),
            full_access(),
        ),
        case(
            "Add-MailboxPermission",
            grant_access(json!(["ReadPermission", "FullAccess"])),
            full_access(),
        ),
        case(
            "Add-MailboxPermission",
            grant_access(json!(["fullaccess"])),
            full_access(),
        ),
        case(
            "Add-MailboxPermission",
            grant_access(json!(["ReadPermission,FullAccess"])),
            full_access(),
        ),
        // .NET reads a number given as text as the enum's value: "1" is FullAccess, "-1" every
        // right; a deny listing names cannot tell which, so it refuses.
        case(
            "Add-MailboxPermission",
            grant_access(json!(["1"])),
            full_access(),
        ),
        case(
            "Add-MailboxPermission",
            grant_access(json!(["ReadPermission", "-1"])),
            full_access(),
        ),
        case(
            "Add-MailboxPermission",
            grant_access(json!(["ReadPermission, 1"])),
            full_access(),
        ),
        // A hashtable-only parameter takes no list: [] is Exchange's "replace all".
        case(
            "Set-Mailbox",
            delegates(json!([])),
            denied(
                "role:editor/Set-Mailbox/GrantSendOnBehalfTo",
                "a hashtable is expected",
            ),
        ),
        case(
            "Set-Mailbox",
            delegates(json!([admin])),
            denied(
                "role:editor/Set-Mailbox/GrantSendOnBehalfTo",
                "a hashtable is expected",
            ),
        ),
        case(
            "Set-Mailbox",
            delegates(json!({})),
            denied(
                "role:editor/Set-Mailbox/GrantSendOnBehalfTo",
                "empty hashtable",
            ),
        ),
        // A filter may name only what the output shaping shows.
        case(
            "Get-Mailbox",
            json!({"Filter": "HiddenFromAddressListsEnabled -eq $true"}),
            shaped("output shaping hides"),
        ),
        case(
            "Get-Mailbox",
            json!({"Filter": "-not (GrantSendOnBehalfTo -eq $null)"}),
            shaped("output shaping hides"),
        ),
        case(
            "Get-Mailbox",
            json!({"Filter": "(DisplayName -like '*') -and (hiddenFROMaddresslistsENABLED -ne $false)"}),
            shaped("output shaping hides"),
        ),
        case(
            "Get-Mailbox",
            json!({"Filter": "DisplayName -like '*' -or $true"}),
            shaped("not a filter the policy can read"),
        ),
        // PowerShell closes a single-quoted value on a typographic quote, reads typographic
        // double quotes and dashes, and honours backticks: one value to an ASCII lexer, three
        // comparisons (one on a hidden property) to Exchange. Only printable ASCII is read.
        case(
            "Get-Mailbox",
            json!({"Filter": "DisplayName -eq 'x\u{2019} -or HiddenFromAddressListsEnabled -eq $true -or DisplayName -eq \u{2018}y'"}),
            shaped("printable ASCII"),
        ),
        case(
            "Get-Mailbox",
            json!({"Filter": "DisplayName -eq \"x\u{201D} -or HiddenFromAddressListsEnabled -eq $true -or DisplayName -eq \u{201C}y\""}),
            shaped("printable ASCII"),
        ),
        case(
            "Get-Mailbox",
            json!({"Filter": "DisplayName -eq \"x`\" -or HiddenFromAddressListsEnabled -eq $true -or DisplayName -eq `\"y\""}),
            shaped("printable ASCII"),
        ),
        case(
            "Get-Mailbox",
            json!({"Filter": "DisplayName -like '*' \u{2013}or HiddenFromAddressListsEnabled -eq $true"}),
            shaped("printable ASCII"),
        ),
        // The honest filter reaches exosim.
        case(
            "Get-Mailbox",
            json!({"Filter": "DisplayName -like '*'"}),
            Expect::Reached {
                sent: &["Filter", "ResultSize"],
                answer: "ok",
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricks_on_values_are_refused_alike_and_never_reach_exosim() {
    let emu = Emulator::start().await;
    let mailboxes = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 2})).await;
    let address = |i: usize| {
        mailboxes[i]["PrimarySmtpAddress"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (admin, other) = (address(0), address(1));
    let cases = tricks(&admin, &other);
    let scripts: Vec<String> = cases
        .iter()
        .map(|c| call_script(&rhai_string(c.cmdlet), &rhai_literal(&c.params)))
        .collect();
    let host = policy_host(emu, &admin, &scripts).await;
    let tenant = host.emu.tenant_id();
    let before = host.emu.exosim.mailbox(&tenant, &admin).unwrap();
    let baseline = host.emu.exosim.exchange_log().len();
    for (c, script) in cases.iter().zip(&scripts) {
        let what = format!("{} {}", c.cmdlet, c.params);
        let wasm_json = c.params.to_string();
        let (report, new) = witnessed(&host, host.probe(&["invoke", c.cmdlet, &wasm_json])).await;
        let wasm = check_call(&host, &format!("wasm {what}"), &report, &new, c.expect);
        let (report, new) = witnessed(&host, host.script(script, &[])).await;
        let rhai = check_call(&host, &format!("Rhai {what}"), &report, &new, c.expect);
        assert_eq!(
            summary(&wasm),
            summary(&rhai),
            "{what}: wasm and Rhai decided differently"
        );
    }
    // Only the honest filter arrived (once per runtime); nothing was written.
    assert_eq!(host.emu.exosim.exchange_log().len() - baseline, 2);
    assert_eq!(host.exosim_calls("Set-Mailbox"), 0);
    assert_eq!(host.exosim_calls("Add-MailboxPermission"), 0);
    assert_eq!(host.emu.exosim.mailbox(&tenant, &admin).unwrap(), before);
    assert!(
        warden_audit::verify(&host.audit_path, &host.key)
            .unwrap()
            .ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_honest_siblings_of_the_tricks_reach_exosim() {
    let emu = Emulator::start().await;
    let mailboxes = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 2})).await;
    let address = |i: usize| {
        mailboxes[i]["PrimarySmtpAddress"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (admin, other) = (address(0), address(1));
    let calls: Vec<(&str, Value)> = vec![
        (
            "Set-Mailbox",
            json!({"Identity": other, "DisplayName": "Renamed by policy test"}),
        ),
        (
            "Add-MailboxPermission",
            json!({"Identity": other, "User": admin, "AccessRights": ["ReadPermission"]}),
        ),
        (
            "Set-Mailbox",
            json!({"Identity": other, "GrantSendOnBehalfTo": {"Add": [admin]}}),
        ),
    ];
    let scripts: Vec<String> = calls
        .iter()
        .map(|(cmdlet, params)| call_script(&rhai_string(cmdlet), &rhai_literal(params)))
        .collect();
    let host = policy_host(emu, &admin, &scripts).await;
    for ((cmdlet, params), script) in calls.iter().zip(&scripts) {
        let json_params = params.to_string();
        for runtime in ["wasm", "Rhai"] {
            let (report, new) = if runtime == "wasm" {
                witnessed(&host, host.probe(&["invoke", cmdlet, &json_params])).await
            } else {
                witnessed(&host, host.script(script, &[])).await
            };
            let what = format!("{runtime} {cmdlet} {params}");
            let answer = output_json(&report);
            assert!(answer.get("ok").is_some(), "{what}: {answer}");
            // The broker's own lookups (it decides on the resolved object) come first.
            let (lookups, sent): (Vec<_>, Vec<_>) = new
                .iter()
                .partition(|r| r.cmdlet.as_deref() == Some("Get-Recipient"));
            assert!(lookups.iter().all(|r| r.status == 200), "{what}");
            assert_eq!(sent.len(), 1, "{what}: one request");
            assert_eq!(sent[0].cmdlet.as_deref(), Some(*cmdlet), "{what}");
            assert_eq!(sent[0].status, 200, "{what}");
            let decisions = call_decisions(&host, &report.run_id);
            assert_eq!(decisions[0]["allowed"], true, "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_warns_when_a_filter_can_read_around_output_shaping() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, filter: &str| {
        let path = dir.path().join(name);
        let body = format!(
            "version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\noutput = [\"DisplayName\"]\nparameters.Filter = {filter}\n[[grant]]\nplugin = \"p\"\nsha256 = \"{}\"\nroles = [\"r\"]\n",
            "0".repeat(64)
        );
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let reads_around = write(
        "wide.toml",
        "{ filter_properties = [\"DisplayName\", \"HiddenFromAddressListsEnabled\"] }",
    );
    let check = warden(&["policy", "check", &reads_around], &[]).await;
    let (_, stderr) = text(&check);
    assert!(check.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("HiddenFromAddressListsEnabled")
            && stderr.contains("read around"),
        "{stderr}"
    );
    // The safe forms: the implied restriction, or only visible properties listed.
    for (name, filter) in [
        ("implied.toml", "{ length = [1, 200] }"),
        ("listed.toml", "{ filter_properties = [\"DisplayName\"] }"),
    ] {
        let check = warden(&["policy", "check", &write(name, filter)], &[]).await;
        let (_, stderr) = text(&check);
        assert!(check.status.success(), "{stderr}");
        assert!(!stderr.contains("warning:"), "{name}: {stderr}");
    }
}

/// `warden policy` prints policy text and a caller's cmdlet on the operator's terminal: escaped
/// like every other command's output, and its JSON is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_command_escapes_what_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let steer = "\u{1b}[2J\u{202e}fake\r";
    let body = format!(
        "version = 1\n[roles.r]\ndescription = {desc}\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nparameters.Identity = {{ any = true }}\n[[grant]]\nplugin = \"p\"\nsha256 = \"{}\"\nroles = [\"r\"]\n",
        "0".repeat(64),
        desc = serde_json::to_string(steer).unwrap(),
    );
    std::fs::write(&path, body).unwrap();
    let path = path.to_str().unwrap();
    let raw = |bytes: &[u8]| {
        let s = String::from_utf8_lossy(bytes);
        s.contains('\u{1b}') || s.contains('\u{202e}') || s.contains('\r')
    };
    let check = warden(&["policy", "check", path], &[]).await;
    assert!(check.status.success(), "{}", text(&check).1);
    assert!(
        !raw(&check.stdout) && !raw(&check.stderr),
        "{}",
        text(&check).0
    );
    let json = warden(&["policy", "check", "--output", "json", path], &[]).await;
    assert!(!raw(&json.stdout), "{}", text(&json).0);
    let summary: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(summary["roles"][0]["description"], steer, "{summary}");
    let zeros = "0".repeat(64);
    for output in ["text", "json"] {
        let explain = warden(
            &[
                "policy",
                "explain",
                "--policy",
                path,
                "--plugin",
                "p",
                "--sha256",
                &zeros,
                "--output",
                output,
                "Get-Mailbox",
                "-p",
                "Identity=a\u{202e}b",
            ],
            &[],
        )
        .await;
        assert!(!raw(&explain.stdout), "{output}: {}", text(&explain).0);
        let refused = warden(
            &[
                "policy",
                "explain",
                "--policy",
                path,
                "--plugin",
                "p",
                "--sha256",
                &zeros,
                "--output",
                output,
                &format!("Get-Mailbox{steer}"),
            ],
            &[],
        )
        .await;
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused).1);
        assert!(!raw(&refused.stdout), "{output}: {}", text(&refused).0);
    }
}
