//! Refusals that finish the job: "did you mean …?" for names, and one refusal naming both
//! fixes when a call is missing from the plugin's declaration and from its grant.

use std::path::Path;
use warden_policy::{Declaration, Policy, Principal};

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn policy() -> Policy {
    let text = format!(
        r#"version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 10
[roles.reader.cmdlet.parameters]
Identity = {{ any = true }}
RecipientTypeDetails = {{ one_of = ["SharedMailbox"] }}

[[grant]]
id = "p"
plugin = "p"
sha256 = "{SHA}"
roles = ["reader"]
"#
    );
    Policy::parse(&text, Path::new("author.toml")).unwrap()
}

fn principal() -> Principal {
    Principal::Plugin {
        name: "p".into(),
        sha256: SHA.into(),
        signature: None,
    }
}

#[test]
fn a_misspelt_cmdlet_or_parameter_gets_the_closest_name() {
    let grant = policy().grant_for(&principal(), None).unwrap();
    let d = grant.check("get-mailboxx", "{}");
    assert!(!d.allowed);
    assert!(
        d.reason.ends_with("did you mean Get-Mailbox?"),
        "{}",
        d.reason
    );
    // Not granted, but a cmdlet Exchange has: named, and said to be not granted.
    let d = grant.check("Get-MailboxPermision", "{}");
    assert!(
        d.reason
            .contains("did you mean Get-MailboxPermission? (not granted either)"),
        "{}",
        d.reason
    );
    let d = grant.check("Get-Mailbox", r#"{"identiy":"a@contoso.com"}"#);
    assert!(d.reason.contains("did you mean Identity?"), "{}", d.reason);
    // Nothing close: no guess.
    let d = grant.check("Get-Mailbox", r#"{"Frobnicate":1}"#);
    assert!(!d.reason.contains("did you mean"), "{}", d.reason);
}

#[test]
fn missing_from_declaration_and_grant_is_one_refusal_naming_both_fixes() {
    let declared = Declaration::new([("Get-Mailbox", &["Identity"][..])]).unwrap();
    let grant = policy().grant_for(&principal(), Some(&declared)).unwrap();
    let d = grant.check("Get-MailboxPermission", r#"{"Identity":"a@contoso.com"}"#);
    assert!(!d.allowed);
    assert_eq!(d.rule, "default-deny");
    for part in [
        "neither declared by the plugin nor granted (no role of grant p allows it)",
        "manifest",
        "warden policy pin",
    ] {
        assert!(d.reason.contains(part), "{part}: {}", d.reason);
    }
    // A parameter missing from both: the same, at the parameter.
    let d = grant.check("Get-Mailbox", r#"{"Filter":"x"}"#);
    assert_eq!(d.rule, "role:reader/Get-Mailbox/Filter");
    assert!(
        d.reason.contains("is not listed for Get-Mailbox"),
        "{}",
        d.reason
    );
    assert!(
        d.reason
            .contains("the plugin does not declare it either: it needs both fixes"),
        "{}",
        d.reason
    );
    // Granted but undeclared keeps its own reason (one fix: the manifest).
    let d = grant.check("Get-Mailbox", r#"{"RecipientTypeDetails":"SharedMailbox"}"#);
    assert!(
        d.reason.contains("not declared by the plugin"),
        "{}",
        d.reason
    );
    assert!(!d.reason.contains("neither"), "{}", d.reason);
    // Without a declaration (a script) there is only the grant to fix.
    let grant = policy().grant_for(&principal(), None).unwrap();
    let d = grant.check("Get-MailboxPermission", "{}");
    assert!(!d.reason.contains("declared"), "{}", d.reason);
}

#[test]
fn a_value_refusal_names_the_value_for_the_operator_only() {
    let text = format!(
        r#"version = 1
[roles.writer]
[[roles.writer.cmdlet]]
name = "Set-Mailbox"
[roles.writer.cmdlet.parameters]
Identity = {{ any = true }}
DisplayName = {{ length = [1, 8] }}
Password = {{ length = [1, 4], sensitive = true }}
Note = {{ length = [1, 4], sensitive = true }}

[[deny]]
cmdlet = "Set-Mailbox"
parameter = "DisplayName"
when = {{ pattern = "(?i)admin.*" }}

[[grant]]
id = "p"
plugin = "p"
sha256 = "{SHA}"
roles = ["writer"]
"#
    );
    let policy = Policy::parse(&text, Path::new("detail.toml")).unwrap();
    let grant = policy.grant_for(&principal(), None).unwrap();
    let d = grant.check(
        "Set-Mailbox",
        r#"{"Identity":"a","DisplayName":"Far Too Long Name"}"#,
    );
    assert!(!d.allowed);
    // The guest's reason never quotes the value; the operator's detail does, with the rule.
    assert!(!d.reason.contains("Far Too Long"), "{}", d.reason);
    let detail = grant.refused_value(&d).unwrap();
    assert!(
        detail.starts_with(
            "DisplayName = \"Far Too Long Name\" refused by role:writer/Set-Mailbox/DisplayName:"
        ),
        "{detail}"
    );
    // A deny rule looking at a parameter: named the same way.
    let d = grant.check("Set-Mailbox", r#"{"Identity":"a","DisplayName":"Admin1"}"#);
    let detail = grant.refused_value(&d).unwrap();
    assert!(
        detail.starts_with("DisplayName = \"Admin1\" refused by deny[0]"),
        "{detail}"
    );
    // Sensitive by name, and marked sensitive: never echoed.
    for (name, secret) in [("Password", "hunter2hunter2"), ("Note", "s3cr3t-n0te")] {
        let d = grant.check(
            "Set-Mailbox",
            &format!(r#"{{"Identity":"a","{name}":"{secret}"}}"#),
        );
        let detail = grant.refused_value(&d).unwrap();
        assert!(!detail.contains(secret), "{detail}");
        assert!(detail.contains("(sensitive: not shown)"), "{detail}");
    }
    // Refused for a name, not a value: no value detail.
    let d = grant.check("Set-Mailbox", r#"{"Identity":"a","Title":"x"}"#);
    assert_eq!(grant.refused_value(&d), None);
}
