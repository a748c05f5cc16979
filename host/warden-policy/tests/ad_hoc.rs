//! Ad hoc grants (`principal = "…"`, `script_inline = "any"`): any text the principal types
//! runs under the grant's roles; pinned grants keep working and win for their exact text; the
//! load errors say what is wrong.

use std::path::Path;
use warden_policy::{OPERATOR, Policy, PolicyError, Principal};

const READER: &str = r#"
version = 1
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 10
[roles.writer]
[[roles.writer.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { length = [1, 64] }
[roles.secret]
[[roles.secret.cmdlet]]
name = "Set-User"
parameters.Identity = { length = [1, 64] }
parameters.Notes = { length = [1, 64], sensitive = true }
[roles.password]
[[roles.password.cmdlet]]
name = "Set-User"
parameters.Identity = { length = [1, 64] }
parameters.Password = { length = [1, 64] }
"#;

fn parse(grants: &str) -> Result<Policy, PolicyError> {
    Policy::parse(&format!("{READER}\n{grants}"), Path::new("ad-hoc.toml"))
}

fn error(grants: &str) -> String {
    parse(grants).expect_err("refused").to_string()
}

#[test]
fn any_text_the_operator_types_runs_under_the_ad_hoc_grant_and_nothing_else() {
    let policy = parse(
        "[[grant]]\nid = \"adhoc\"\nprincipal = \"operator\"\nscript_inline = \"any\"\nroles = [\"reader\"]\n",
    )
    .unwrap();
    for text in ["1 + 1", "exo::invoke(\"Get-Mailbox\")", "let x = 5; x * 2"] {
        let principal = policy.inline_principal(OPERATOR, text);
        assert!(matches!(principal, Principal::AdHoc { .. }), "{principal}");
        let grant = policy.grant_for(&principal, None).expect("granted");
        assert_eq!(grant.id(), "adhoc");
        assert!(grant.check("Get-Mailbox", "{}").allowed);
        assert!(!grant.check("Set-Mailbox", r#"{"Identity":"a"}"#).allowed);
    }
    // Another principal, a pinned-inline or a script-file principal gets nothing from it.
    assert!(
        policy
            .grant_for(&Principal::ad_hoc("user:alice@contoso.com", "1"), None)
            .is_err()
    );
    assert!(
        policy
            .grant_for(&Principal::inline_script("1"), None)
            .is_err()
    );
    assert!(
        policy
            .grant_for(&Principal::script_file("x.rhai", b"1"), None)
            .is_err()
    );
    let summary = policy.summary();
    assert!(summary.grants[0].ad_hoc);
    assert!(
        summary.grants[0].principal.contains("ad hoc"),
        "{}",
        summary.grants[0].principal
    );
}

#[test]
fn a_pinned_grant_wins_for_its_exact_text_and_without_an_ad_hoc_grant_the_pin_is_asked_for() {
    let text = "exo::invoke(\"Set-Mailbox\", #{Identity: \"a\"})";
    let sha = warden_policy::sha256_hex(text.as_bytes());
    let policy = parse(&format!(
        "[[grant]]\nid = \"pinned\"\nscript_inline_sha256 = \"{sha}\"\nroles = [\"writer\"]\n[grant.budgets]\nwrites = 1\n\
         [[grant]]\nid = \"adhoc\"\nprincipal = \"operator\"\nscript_inline = \"any\"\nroles = [\"reader\"]\n"
    ))
    .unwrap();
    let pinned = policy.inline_principal(OPERATOR, text);
    assert_eq!(policy.grant_for(&pinned, None).unwrap().id(), "pinned");
    let other = policy.inline_principal(OPERATOR, "2");
    assert_eq!(policy.grant_for(&other, None).unwrap().id(), "adhoc");

    let no_ad_hoc = parse(&format!(
        "[[grant]]\nscript_inline_sha256 = \"{sha}\"\nroles = [\"reader\"]\n"
    ))
    .unwrap();
    let principal = no_ad_hoc.inline_principal(OPERATOR, "3");
    assert!(matches!(principal, Principal::Script { path: None, .. }));
    let denial = no_ad_hoc.grant_for(&principal, None).unwrap_err();
    assert!(
        denial.reason.contains("script_inline = \"any\""),
        "{denial}"
    );
    assert!(denial.reason.contains(principal.sha256()), "{denial}");
}

#[test]
fn bad_ad_hoc_grants_are_refused_at_load_with_the_fix() {
    let base = "roles = [\"reader\"]\n";
    for (grant, expect) in [
        ("principal = \"operator\"\n", "add script_inline = \"any\""),
        ("script_inline = \"any\"\n", "needs principal"),
        (
            "principal = \"operator\"\nscript_inline = \"all\"\n",
            "the only value is \"any\"",
        ),
        (
            "principal = \"root\"\nscript_inline = \"any\"\n",
            "is not \"operator\", \"user:NAME\" or \"group:NAME\"",
        ),
        (
            "principal = \"user:a b\"\nscript_inline = \"any\"\n",
            "no spaces",
        ),
        (
            "principal = \"operator\"\nscript_inline = \"any\"\nplugin = \"p\"\n",
            "names its principal only",
        ),
        (
            "principal = \"operator\"\nscript_inline = \"any\"\nsha256 = \"00\"\n",
            "names its principal only",
        ),
    ] {
        let message = error(&format!("[[grant]]\n{grant}{base}"));
        assert!(message.contains(expect), "{grant}: {message}");
        assert!(message.starts_with("ad-hoc.toml:"), "{message}");
    }
    let twice = error(
        "[[grant]]\nid = \"a\"\nprincipal = \"user:Alice@contoso.com\"\nscript_inline = \"any\"\nroles = [\"reader\"]\n\
         [[grant]]\nid = \"b\"\nprincipal = \"user:alice@CONTOSO.com\"\nscript_inline = \"any\"\nroles = [\"reader\"]\n",
    );
    assert!(twice.contains("same principal"), "{twice}");
}

#[test]
fn an_ad_hoc_grant_takes_no_parameter_the_trail_must_keep_hashed() {
    for role in ["secret", "password"] {
        let message = error(&format!(
            "[[grant]]\nprincipal = \"operator\"\nscript_inline = \"any\"\nroles = [\"reader\", \"{role}\"]\n"
        ));
        assert!(message.contains("keyed-hashed"), "{message}");
        assert!(
            message.contains(&format!("role:{role}/Set-User")),
            "{message}"
        );
    }
}

#[test]
fn policy_check_warns_about_an_ad_hoc_grant_that_writes() {
    let policy = parse(
        "[[grant]]\nprincipal = \"operator\"\nscript_inline = \"any\"\nroles = [\"writer\"]\n[grant.budgets]\nwrites = 1\n",
    )
    .unwrap();
    assert!(
        policy
            .warnings()
            .iter()
            .any(|w| w.contains("is ad hoc and allows Set-Mailbox")),
        "{:?}",
        policy.warnings()
    );
}

#[test]
fn the_shipped_policies_carry_a_read_only_ad_hoc_grant_for_the_operator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in ["policy.example.toml", "scripts/policy.toml"] {
        let policy = Policy::load(&root.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let principal = policy.inline_principal(OPERATOR, "exo::count(\"Get-Mailbox\")");
        let grant = policy
            .grant_for(&principal, None)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(policy.summary().grants.iter().any(|g| g.ad_hoc));
        assert!(
            grant.allowed_cmdlets().iter().all(|c| !c.write),
            "{file}: the ad hoc grant writes"
        );
        assert_eq!(grant.budgets().writes, 0, "{file}");
    }
}
