//! The grant's lookup tables (a cmdlet's entries and deny rules found by one hash lookup,
//! built at load) decide exactly as a scan of every entry and rule did: names match
//! ASCII-case-insensitively and nothing else, in policy order, deny rules included for
//! cmdlets no role grants.

use serde_json::{Value, json};
use std::path::Path;
use warden_policy::{Decision, Grant, Policy, Principal};

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const POLICY: &str = r#"
version = 1

[roles.a]
[[roles.a.cmdlet]]
name = "Get-Mailbox"
[roles.a.cmdlet.parameters]
Identity = { pattern = "[a-z]+@contoso\\.com" }

[[roles.a.cmdlet]]
name = "set-MAILBOX"
[roles.a.cmdlet.parameters]
DisplayName = { length = [1, 64] }

[roles.b]
[[roles.b.cmdlet]]
name = "GET-mailbox"
[roles.b.cmdlet.parameters]
Identity = { any = true }
ResultSize = { range = [1, 10] }

[[deny]]
cmdlet = "SET-Mailbox"
parameter = "DisplayName"
when = { pattern = "(?i).*admin.*" }
reason = "no admin names"

[[deny]]
cmdlet = "remove-mailbox"
reason = "nobody removes mailboxes"

[[grant]]
plugin = "p"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["a", "b"]
"#;

fn grant() -> Grant {
    let policy = Policy::parse(POLICY, Path::new("lookup.toml")).unwrap();
    let principal = Principal::Plugin {
        name: "p".into(),
        sha256: ZERO.into(),
        signature: None,
    };
    policy.grant_for(&principal, None).unwrap()
}

fn check(grant: &Grant, cmdlet: &str, params: Value) -> Decision {
    grant.check(cmdlet, &params.to_string())
}

#[test]
fn every_ascii_casing_finds_the_same_entries_in_policy_order() {
    let grant = grant();
    for cmdlet in ["Get-Mailbox", "get-mailbox", "GET-MAILBOX", "gEt-mAiLbOx"] {
        // Role a's entry comes first and refuses a non-contoso identity; role b's admits it.
        let d = check(&grant, cmdlet, json!({"Identity": "x@fabrikam.com"}));
        assert!(d.allowed, "{cmdlet}: {d:?}");
        assert_eq!(d.rule, "role:b/GET-mailbox", "{cmdlet}");
        assert_eq!(d.cmdlet, "GET-mailbox", "the admitting entry's casing");
        let d = check(&grant, cmdlet, json!({"Identity": "x@contoso.com"}));
        assert_eq!(
            d.rule, "role:a/Get-Mailbox",
            "{cmdlet}: the first entry admits"
        );
        // Refused by both: the first entry's rule decides, both reasons are given.
        let d = check(&grant, cmdlet, json!({"ResultSize": 11}));
        assert!(!d.allowed);
        assert_eq!(d.rule, "role:a/Get-Mailbox/ResultSize", "{cmdlet}");
        assert!(d.reason.contains("; "), "{}", d.reason);
    }
}

#[test]
fn deny_rules_are_found_whatever_the_casing_on_either_side() {
    let grant = grant();
    for cmdlet in ["Set-Mailbox", "set-mailbox", "SET-MAILBOX"] {
        let d = check(&grant, cmdlet, json!({"DisplayName": "Admin Person"}));
        assert_eq!(d.rule, "deny[0]", "{cmdlet}");
        let d = check(&grant, cmdlet, json!({"DisplayName": "Alex"}));
        assert!(d.allowed, "{cmdlet}: {d:?}");
        assert_eq!(d.cmdlet, "set-MAILBOX");
    }
    // A deny rule for a cmdlet no role grants still decides (its reason, not default-deny).
    for cmdlet in ["Remove-Mailbox", "REMOVE-MAILBOX"] {
        let d = check(&grant, cmdlet, json!({"Identity": "x"}));
        assert_eq!(d.rule, "deny[1]", "{cmdlet}");
        assert!(d.reason.contains("nobody removes mailboxes"));
    }
}

#[test]
fn lookalikes_and_aliases_never_meet_a_granted_name() {
    let grant = grant();
    for cmdlet in [
        "Get-Mailbοx",         // Greek omicron
        "Ｇet-Mailbox",        // fullwidth G
        "Get‐Mailbox",         // U+2010 hyphen
        "Get-Mailbox\u{200b}", // zero-width space
        "ſet-Mailbox",         // long s: uppercases to S, never the same name here
        " Get-Mailbox",
        "Get-Mailbox ",
        "Get-Mailbo",
        "Get-Mailboxes",
        "gmb",
        "Get-EXOMailbox",
        "Microsoft.Exchange\\Get-Mailbox",
    ] {
        let d = check(&grant, cmdlet, json!({"Identity": "x@contoso.com"}));
        assert!(!d.allowed, "{cmdlet:?}: {d:?}");
        assert!(
            d.rule == "invalid-name" || d.rule == "default-deny",
            "{cmdlet:?}: {}",
            d.rule
        );
    }
    let d = check(&grant, "Remove-Mailbοx", json!({}));
    assert_eq!(
        d.rule, "invalid-name",
        "a lookalike of a denied name is no name at all"
    );
}

#[test]
fn an_unknown_cmdlet_is_refused_with_its_hint_unchanged() {
    let grant = grant();
    let d = check(&grant, "Frobnicate-Widget", json!({"Identity": "x"}));
    assert_eq!(d.rule, "default-deny");
    assert!(!d.reason.contains("did you mean"), "{}", d.reason);
    let d = check(&grant, "Get-Mailbx", json!({}));
    assert_eq!(d.rule, "default-deny");
    assert!(
        d.reason.ends_with("; did you mean Get-Mailbox?"),
        "{}",
        d.reason
    );
    let d = check(&grant, "Get-MailboxPermision", json!({}));
    assert!(
        d.reason
            .ends_with("; did you mean Get-MailboxPermission? (not granted either)"),
        "{}",
        d.reason
    );
}

#[test]
fn a_value_is_denied_whatever_the_casing_of_its_cmdlet_and_parameter() {
    let grant = grant();
    for (cmdlet, parameter) in [
        ("Set-Mailbox", "DisplayName"),
        ("set-mailbox", "displayname"),
        ("SET-MAILBOX", "DISPLAYNAME"),
    ] {
        let d = grant
            .deny_for_value(cmdlet, parameter, &json!("The Admin"))
            .unwrap_or_else(|| panic!("{cmdlet} {parameter}: not denied"));
        assert_eq!(d.rule, "deny[0]");
        assert!(!d.allowed);
        assert_eq!(
            grant.deny_for_value(cmdlet, parameter, &json!("Alex")),
            None
        );
    }
    // A cmdlet no deny rule names, and one only a Unicode case folding would turn into one.
    assert_eq!(
        grant.deny_for_value("Get-Mailbox", "DisplayName", &json!("The Admin")),
        None
    );
    assert_eq!(
        grant.deny_for_value("\u{17f}et-Mailbox", "DisplayName", &json!("The Admin")),
        None
    );
}
