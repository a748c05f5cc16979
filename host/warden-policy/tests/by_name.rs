//! A call whose cmdlet nothing grants is refused on its name alone (`Grant::refusal_by_name`):
//! the same answer whatever its parameters, the reason kept, the parameters still on record.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use warden_policy::{GivenParameters, Grant, Judgement, Policy, Principal};

/// Parameters that never became JSON (a script value with no JSON form).
fn no_json_form() -> Result<String, String> {
    Err("map key has no JSON form".to_owned())
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A grant of `Get-Mailbox` (Identity, ResultSize); the policy denies `Set-Mailbox` with
/// `DisplayName = "ceo"` although no role grants `Set-Mailbox`.
fn grant() -> Grant {
    let text = format!(
        r#"version = 1
[roles.r]
[[roles.r.cmdlet]]
name = "Get-Mailbox"
parameters.Identity = {{ any = true }}
parameters.ResultSize = {{ range = [1, 10] }}

[[deny]]
cmdlet = "Set-Mailbox"
parameter = "DisplayName"
when = {{ equals = "ceo" }}

[[grant]]
plugin = "p"
sha256 = "{ZERO}"
roles = ["r"]
"#
    );
    let policy = Policy::parse(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
    let principal = Principal::Plugin {
        name: "p".into(),
        sha256: ZERO.into(),
        signature: None,
    };
    policy.grant_for(&principal, None).expect("grant")
}

#[test]
fn a_cmdlet_nothing_grants_is_refused_whatever_its_parameters() {
    let g = grant();
    let refusal = g
        .refusal_by_name("Remove-Mailbox")
        .expect("refused by name");
    assert_eq!(refusal.rule(), "default-deny");
    assert!(
        refusal.reason().contains("Remove-Mailbox"),
        "{}",
        refusal.reason()
    );
    // Well-formed, malformed, a bad name, a value Exchange would read differently, too big:
    // each would be judged on its own if something granted the cmdlet; here none changes the
    // answer (they are parsed only for the record).
    for parameters in [
        r#"{"Identity":"x"}"#,
        "{not json",
        "[1,2]",
        r#"{"-Bad Name":1}"#,
        r#"{"Identity":"x\u0000y"}"#,
        &format!(r#"{{"Identity":"{}"}}"#, "x".repeat(1 << 20)),
    ] {
        let d = g.check("Remove-Mailbox", parameters);
        assert!(!d.allowed, "{parameters}");
        assert_eq!(d.rule, "default-deny", "{parameters}");
        assert_eq!(d.reason, refusal.reason(), "{parameters}");
        assert!(d.write, "Remove-Mailbox is a write");
    }
    let d = g.check_given("Remove-Mailbox", GivenParameters::Deferred(&no_json_form));
    assert_eq!(
        (d.rule.as_str(), d.reason.as_str()),
        ("default-deny", refusal.reason())
    );
}

#[test]
fn a_refusal_by_name_still_records_the_parameters_it_was_given() {
    let g = grant();
    let d = g.check(
        "New-InboxRule",
        r#"{"Mailbox":"ceo@contoso.com","ForwardTo":"x@evil.example","Password":"hunter2"}"#,
    );
    assert_eq!(d.rule, "default-deny");
    assert_eq!(d.parameters["ForwardTo"], "x@evil.example");
    assert_eq!(d.parameters["Mailbox"], "ceo@contoso.com");
    // Hashed by the trail: its name says it is a secret.
    assert_eq!(d.sensitive, ["Password"]);
    // Parameters that do not parse are not on record; the refusal is the same.
    let malformed = g.check("New-InboxRule", "{not json");
    assert!(malformed.parameters.is_empty());
    assert_eq!(malformed.reason, d.reason);
}

#[test]
fn a_name_that_is_no_cmdlets_is_refused_as_invalid_before_its_parameters() {
    let g = grant();
    let huge = format!("Get-{}", "M".repeat(1 << 16));
    for name in [
        "Get-Mailbox;Remove-Mailbox",
        "Get-Ma\u{131}lbox",
        "Get-Mailbox ",
        huge.as_str(),
    ] {
        let refusal = g.refusal_by_name(name).expect("refused by name");
        assert_eq!(refusal.rule(), "invalid-name", "{name:.40}");
        let d = g.check(name, r#"{"Identity":"x"}"#);
        assert_eq!(d.rule, "invalid-name");
        assert!(d.parameters.is_empty());
        assert!(
            d.cmdlet.len() < 200,
            "the recorded name is cut: {}",
            d.cmdlet.len()
        );
        // Never kept as a name nothing grants: asked again, it is still invalid.
        assert_eq!(
            g.refusal_by_name(name).map(|r| r.rule()),
            Some("invalid-name")
        );
    }
}

#[test]
fn a_granted_cmdlet_or_one_a_deny_rule_names_is_judged_on_its_parameters() {
    let g = grant();
    // Granted: every casing finds the entry.
    for name in ["Get-Mailbox", "get-mailbox", "GET-MAILBOX"] {
        assert_eq!(g.refusal_by_name(name), None, "{name}");
    }
    assert_eq!(
        g.check("get-mailbox", "{not json").rule,
        "invalid-parameters"
    );
    assert_eq!(
        g.check("Get-Mailbox", r#"{"ResultSize":11}"#).rule,
        "role:r/Get-Mailbox/ResultSize"
    );
    // Named by a deny rule only: the rule decides on the value, then nothing grants it.
    assert_eq!(g.refusal_by_name("Set-Mailbox"), None);
    assert_eq!(
        g.check("Set-Mailbox", r#"{"DisplayName":"ceo"}"#).rule,
        "deny[0]"
    );
    let other = g.check("Set-Mailbox", r#"{"DisplayName":"intern"}"#);
    assert_eq!(other.rule, "default-deny");
    // Its not-granted reason is not kept as a refusal by name: the deny rule still decides.
    assert_eq!(g.refusal_by_name("Set-Mailbox"), None);
    assert_eq!(
        g.check("Set-Mailbox", r#"{"DisplayName":"ceo"}"#).rule,
        "deny[0]"
    );
    assert!(
        other.reason.starts_with("no role of grant") && other.reason.contains("Set-Mailbox"),
        "{}",
        other.reason
    );
    // Malformed input gets the answer of any cmdlet nothing grants: a guest cannot tell a
    // cmdlet a deny rule names from one nobody names.
    for parameters in [
        "{not json",
        r#"{"-Bad Name":1}"#,
        r#"{"DisplayName":" ceo"}"#,
    ] {
        let d = g.check("Set-Mailbox", parameters);
        assert_eq!(d.rule, "default-deny", "{parameters}");
        assert_eq!(d.reason, other.reason, "{parameters}");
    }
    let d = g.check_given("Set-Mailbox", GivenParameters::Deferred(&no_json_form));
    assert_eq!(d.rule, "default-deny");
}

#[test]
fn deferred_parameters_are_not_written_for_a_refusal_by_name() {
    let g = grant();
    let written = AtomicUsize::new(0);
    let write = || {
        written.fetch_add(1, Ordering::Relaxed);
        Ok(r#"{"Identity":"a@contoso.com"}"#.to_owned())
    };
    let Judgement::RefusedByName(refusal) =
        g.judge("Remove-Mailbox", GivenParameters::Deferred(&write))
    else {
        panic!("Remove-Mailbox is granted by nothing: refused on its name");
    };
    assert_eq!(
        written.load(Ordering::Relaxed),
        0,
        "written before the name was read"
    );
    // The record of the refusal still holds them.
    let d = g.refused_by_name(
        &refusal,
        "Remove-Mailbox",
        GivenParameters::Deferred(&write),
    );
    assert_eq!(written.load(Ordering::Relaxed), 1);
    assert_eq!(d.parameters["Identity"], "a@contoso.com");
    // A granted cmdlet's are read to decide.
    let Judgement::Decided(d) = g.judge("Get-Mailbox", GivenParameters::Deferred(&write)) else {
        panic!("Get-Mailbox is granted: decided on its parameters");
    };
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(written.load(Ordering::Relaxed), 2);
}
