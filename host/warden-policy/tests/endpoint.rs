//! `endpoint = "exchange" | "compliance"` on a role's cmdlet entry: which service the broker
//! sends an allowed call to. A Security & Compliance cmdlet granted without it, and one cmdlet
//! sent to two endpoints by two entries, are load errors naming the fix.

use std::path::Path;
use warden_policy::{Endpoint, OPERATOR, Policy, PolicyError};

fn parse(roles: &str) -> Result<Policy, PolicyError> {
    let text = format!(
        "version = 1\n{roles}\n[[grant]]\nid = \"adhoc\"\nprincipal = \"operator\"\nscript_inline = \"any\"\nroles = [\"r\"]\n"
    );
    Policy::parse(&text, Path::new("endpoint.toml"))
}

fn endpoint_of(policy: &Policy, cmdlet: &str) -> Endpoint {
    let grant = policy
        .grant_for(&policy.inline_principal(OPERATOR, "1"), None)
        .unwrap();
    let decision = grant.check(cmdlet, "{}");
    assert!(decision.allowed, "{decision:?}");
    grant.endpoint_for(&decision).unwrap()
}

#[test]
fn an_entry_names_its_endpoint_and_exchange_is_the_default() {
    let policy = parse(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Get-Mailbox"
[[roles.r.cmdlet]]
name = "Get-ComplianceSearch"
endpoint = "compliance"
[[roles.r.cmdlet]]
name = "Get-Unknown"
endpoint = "compliance"
"#,
    )
    .unwrap();
    assert_eq!(endpoint_of(&policy, "Get-Mailbox"), Endpoint::Exchange);
    assert_eq!(
        endpoint_of(&policy, "get-compliancesearch"),
        Endpoint::Compliance
    );
    // A cmdlet warden does not know goes where its entry says.
    assert_eq!(endpoint_of(&policy, "Get-Unknown"), Endpoint::Compliance);
}

#[test]
fn a_compliance_cmdlet_without_the_compliance_endpoint_is_a_load_error_naming_the_fix() {
    for entry in [
        "name = \"Get-ComplianceSearch\"",
        "name = \"New-ComplianceSearchAction\"\nendpoint = \"exchange\"",
        "name = \"get-dlpcompliancepolicy\"",
    ] {
        let error = parse(&format!("[roles.r]\n[[roles.r.cmdlet]]\n{entry}\n"))
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("Security & Compliance cmdlet")
                && error.contains("endpoint = \"compliance\""),
            "{error}"
        );
    }
    let error =
        parse("[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nendpoint = \"ipps\"\n")
            .expect_err("refused")
            .to_string();
    assert!(
        error.contains("exchange") && error.contains("compliance"),
        "{error}"
    );
}

#[test]
fn two_entries_sending_one_cmdlet_to_two_endpoints_are_a_load_error() {
    let error = parse(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Get-Thing"
[roles.other]
[[roles.other.cmdlet]]
name = "get-thing"
endpoint = "compliance"
"#,
    )
    .expect_err("refused")
    .to_string();
    assert!(
        error.contains("role:other/get-thing") && error.contains("role:r/Get-Thing"),
        "{error}"
    );
    assert!(error.contains("the same endpoint"), "{error}");
}

#[test]
fn a_decision_no_entry_explains_has_no_endpoint() {
    let policy = parse(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Get-ComplianceSearch"
endpoint = "compliance"
"#,
    )
    .unwrap();
    let grant = policy
        .grant_for(&policy.inline_principal(OPERATOR, "1"), None)
        .unwrap();
    let mut decision = grant.check("Get-ComplianceSearch", "{}");
    assert_eq!(grant.endpoint_for(&decision), Ok(Endpoint::Compliance));
    // An allowed decision whose rule names no entry: never defaulted to Exchange.
    decision.rule = "role:other/Get-ComplianceSearch".into();
    let error = grant.endpoint_for(&decision).unwrap_err();
    assert!(error.contains("role:other/Get-ComplianceSearch"), "{error}");
    let refused = grant.check("Get-Mailbox", "{}");
    assert!(grant.endpoint_for(&refused).is_err());
}
