//! A parameter some role marks `sensitive` is a secret in every record: also when the call's
//! grant leaves the cmdlet or the parameter out, or the plugin does not declare it. (A refusal
//! records the parameters it was given; the trail keyed-hashes the ones a decision marks.)

use std::path::Path;
use warden_policy::{Declaration, Policy, Principal};

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Role `admin` marks Set-Mailbox's `Notes` (a name that does not look secret) sensitive;
/// grant `p` holds `reader` (Get-Mailbox) and `writer` (Set-Mailbox's DisplayName only).
fn policy_text() -> String {
    format!(
        r#"version = 1
[roles.admin]
[[roles.admin.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = {{ any = true }}
parameters.Notes = {{ any = true, sensitive = true }}
parameters.CustomAttribute10 = {{ any = true, sensitive = true }}

[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
parameters.Identity = {{ any = true }}

[roles.writer]
[[roles.writer.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = {{ any = true }}
parameters.DisplayName = {{ any = true }}
parameters.CustomAttribute1 = {{ any = true }}

[[grant]]
plugin = "p"
sha256 = "{ZERO}"
roles = ["reader"]

[[grant]]
plugin = "w"
sha256 = "{ZERO}"
roles = ["writer"]

[[grant]]
plugin = "a"
sha256 = "{ZERO}"
roles = ["admin"]
"#
    )
}

fn policy() -> Policy {
    parse(&policy_text())
}

fn parse(text: &str) -> Policy {
    Policy::parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn plugin(name: &str) -> Principal {
    Principal::Plugin {
        name: name.into(),
        sha256: ZERO.into(),
        signature: None,
    }
}

const CALL: &str = r#"{"Identity":"ceo","notes":"s3cret"}"#;

#[test]
fn a_cmdlet_the_grant_leaves_out_still_marks_the_policys_secret() {
    let g = policy().grant_for(&plugin("p"), None).unwrap();
    let d = g.check("set-mailbox", CALL);
    assert_eq!(d.rule, "default-deny");
    assert_eq!(d.sensitive, ["notes"], "{d:?}");
}

#[test]
fn a_parameter_the_grants_entry_leaves_out_still_marks_the_policys_secret() {
    let g = policy().grant_for(&plugin("w"), None).unwrap();
    let d = g.check("Set-Mailbox", CALL);
    assert!(!d.allowed);
    assert_eq!(d.rule, "role:writer/Set-Mailbox/notes", "{d:?}");
    assert_eq!(d.sensitive, ["notes"], "{d:?}");
}

#[test]
fn a_cmdlet_the_plugin_does_not_declare_still_marks_the_policys_secret() {
    let declared = Declaration::new([("Get-Mailbox", &["Identity"][..])]).unwrap();
    let g = policy().grant_for(&plugin("a"), Some(&declared)).unwrap();
    let d = g.check("Set-Mailbox", CALL);
    assert_eq!(d.rule, "default-deny");
    assert!(d.reason.contains("not declared"), "{}", d.reason);
    assert_eq!(d.sensitive, ["notes"], "{d:?}");
    // Allowed where granted and declared: marked too, in the policy's casing.
    let g = policy().grant_for(&plugin("a"), None).unwrap();
    let d = g.check("Set-Mailbox", CALL);
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.sensitive, ["Notes"], "{d:?}");
}

#[test]
fn a_parameter_no_role_marks_is_not_marked() {
    let g = policy().grant_for(&plugin("p"), None).unwrap();
    let d = g.check("Set-Mailbox", r#"{"Identity":"ceo","DisplayName":"x"}"#);
    assert!(d.sensitive.is_empty(), "{d:?}");
}

#[test]
fn a_secret_under_a_dashed_or_shortened_name_is_still_marked() {
    let g = policy().grant_for(&plugin("p"), None).unwrap();
    for given in [
        "-Notes",
        " notes ",
        "--NOTES",
        "Note",
        "-no",
        "\u{2013}Notes",
        "Notes:",
        "-notes: ",
    ] {
        let call = format!(
            r#"{{"Identity":"ceo",{}:"s3cret"}}"#,
            serde_json::json!(given)
        );
        let d = g.check("Set-Mailbox", &call);
        assert_eq!(d.rule, "default-deny", "{given:?}: {d:?}");
        assert_eq!(d.sensitive.len(), 1, "{given:?} not marked: {d:?}");
    }
    // Longer than the marked name, or only a dash: not the secret's name.
    for given in ["NotesX", "-", "Identity"] {
        let call = format!(r#"{{{}:"x"}}"#, serde_json::json!(given));
        let d = g.check("Set-Mailbox", &call);
        assert!(d.sensitive.is_empty(), "{given:?} marked: {d:?}");
    }
}

#[test]
fn a_cmdlet_only_a_deny_rule_names_still_marks_the_policys_secret() {
    // Grant `p` holds no role naming Set-Mailbox; a deny rule names it.
    let deny = "\n[[deny]]\ncmdlet = \"Set-Mailbox\"\nparameter = \"Identity\"\nwhen = { equals = \"ceo-locked\" }\n";
    let g = parse(&(policy_text() + deny))
        .grant_for(&plugin("p"), None)
        .unwrap();
    // The deny rule is in force: its value is refused by it.
    let d = g.check("Set-Mailbox", r#"{"Identity":"ceo-locked"}"#);
    assert_eq!(d.rule, "deny[0]", "{d:?}");
    // Malformed input and a call no deny rule matches: both refused, both marked.
    let d = g.check("Set-Mailbox", CALL);
    assert_eq!(d.rule, "default-deny", "{d:?}");
    assert_eq!(d.sensitive, ["notes"], "{d:?}");
    let d = g.check(
        "Set-Mailbox",
        r#"{"Identity":"ceo","-notes":"s3cret","bad name":1}"#,
    );
    assert_eq!(d.rule, "default-deny", "{d:?}");
    assert!(d.sensitive.iter().any(|s| s == "-notes"), "{d:?}");
}

#[test]
fn a_prefix_of_a_marked_name_is_marked_even_where_the_policy_lists_it() {
    let g = policy().grant_for(&plugin("w"), None).unwrap();
    // CustomAttribute1 is allowed (role writer) and is a prefix of the marked
    // CustomAttribute10: hashed, since a policy's listed name may be an abbreviation too.
    for given in ["CustomAttribute1", "-customattribute1:"] {
        let call = format!(r#"{{"Identity":"ceo",{}:"x"}}"#, serde_json::json!(given));
        let d = g.check("Set-Mailbox", &call);
        assert_eq!(d.sensitive.len(), 1, "{given:?}: {d:?}");
    }
    let d = g.check(
        "Set-Mailbox",
        r#"{"Identity":"ceo","CustomAttribute1":"x"}"#,
    );
    assert!(d.allowed, "{d:?}");
    // A prefix no entry lists is refused, and marked.
    let d = g.check(
        "Set-Mailbox",
        r#"{"Identity":"ceo","CustomAttribute":"s3cret"}"#,
    );
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.sensitive, ["CustomAttribute"], "{d:?}");
}
