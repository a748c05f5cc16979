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
        "neither declared by the plugin nor granted by grant p",
        "manifest",
        "warden policy pin",
    ] {
        assert!(d.reason.contains(part), "{part}: {}", d.reason);
    }
    // A parameter missing from both: the same, at the parameter.
    let d = grant.check("Get-Mailbox", r#"{"Filter":"x"}"#);
    assert_eq!(d.rule, "role:reader/Get-Mailbox/Filter");
    assert!(d.reason.contains("neither declared"), "{}", d.reason);
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
