//! Grants limited to tenants or tags (`tenants = ["contoso", "tag:eu"]`): the grant applies
//! only to runs for a tenant it selects; an unknown name or tag is an error naming it once the
//! config's tenants are known; no field means every tenant.

use std::path::Path;
use warden_policy::{Candidate, Policy, Principal};

const SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn policy(tenants: &str) -> Policy {
    let text = format!(
        "version = 1\n[roles.read]\n[[roles.read.cmdlet]]\nname = \"Get-Mailbox\"\n\
         [[grant]]\nid = \"reader\"\nplugin = \"reader\"\nsha256 = \"{SHA}\"\nroles = [\"read\"]\n{tenants}\n"
    );
    Policy::parse(&text, Path::new("p.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn reader() -> Principal {
    Principal::Plugin {
        name: "reader".into(),
        sha256: SHA.into(),
        signature: None,
    }
}

fn tenant(name: &str, tags: &[&str]) -> Candidate {
    Candidate {
        name: name.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn config() -> Vec<Candidate> {
    vec![
        tenant("contoso", &["eu"]),
        tenant("fabrikam", &["us"]),
        tenant("northwind", &["eu", "lab"]),
    ]
}

#[test]
fn a_grant_applies_only_to_the_tenants_it_selects() {
    let p = policy("tenants = [\"fabrikam\", \"tag:eu\", \"!tag:lab\"]");
    assert!(p.limits_tenants());
    // `policy show` lists them.
    let shown = p.summary().grants[0].tenants.clone().expect("listed");
    for term in ["fabrikam", "tag:eu", "!tag:lab"] {
        assert!(shown.contains(term), "{shown}");
    }
    assert_eq!(policy("").summary().grants[0].tenants, None);
    p.check_tenants(&config()).unwrap();
    for (name, tags, allowed) in [
        ("contoso", &["eu"][..], true),
        ("fabrikam", &["us"][..], true),
        ("northwind", &["eu", "lab"][..], false),
    ] {
        let got = p.grant_for_tenant(&reader(), None, Some(&tenant(name, tags)));
        assert_eq!(got.is_ok(), allowed, "{name}: {got:?}");
        if let Err(denial) = got {
            assert_eq!(denial.rule, "grant:reader/tenants");
            // Which grant, which tenant, what to change.
            assert!(denial.reason.contains("grant reader (line"), "{denial}");
            assert!(
                denial.reason.contains("not to tenant northwind"),
                "{denial}"
            );
            assert!(denial.reason.contains("add \"northwind\""), "{denial}");
        }
    }
    // No tenant known (no profile, or `--tenant-id` overriding it): refused, saying how.
    let denial = p.grant_for(&reader(), None).unwrap_err();
    assert!(
        denial.reason.contains("names no tenant profile"),
        "{denial}"
    );
    assert!(denial.reason.contains("--tenant NAME"), "{denial}");
    // Tools that explain the grant see what it gives, its tenants aside.
    assert_eq!(
        p.grant_for_any_tenant(&reader(), None).unwrap().id(),
        "reader"
    );
}

#[test]
fn no_tenants_field_means_every_tenant() {
    let p = policy("");
    assert!(!p.limits_tenants());
    p.check_tenants(&config()).unwrap();
    assert!(p.grant_for(&reader(), None).is_ok());
    for candidate in config() {
        assert!(
            p.grant_for_tenant(&reader(), None, Some(&candidate))
                .is_ok()
        );
    }
}

#[test]
fn an_unknown_tenant_or_tag_is_named_once_the_config_is_known() {
    for (tenants, named) in [
        (
            "tenants = [\"contosso\"]",
            "\"contosso\", which is no [tenants.NAME] profile",
        ),
        ("tenants = [\"tag:asia\"]", "tag \"asia\", which no profile"),
        ("tenants = [\"!tag:eu\", \"!fabrikam\"]", "leaves no tenant"),
    ] {
        let p = policy(tenants);
        let error = p.check_tenants(&config()).unwrap_err().to_string();
        assert!(error.contains(named), "{tenants}: {error}");
        assert!(error.starts_with("p.toml:"), "{error}");
        assert!(error.contains("grant reader"), "{error}");
    }
}

#[test]
fn a_tenants_list_that_cannot_be_read_fails_the_load() {
    for (tenants, says) in [
        ("tenants = []", "covers no tenant"),
        ("tenants = [\"a,b\"]", "holds a comma"),
        (
            "tenants = [\"x:y\"]",
            "neither a profile name nor `tag:TAG`",
        ),
        ("tenants = [\"!all\"]", "leaves no tenant"),
    ] {
        let text = format!(
            "version = 1\n[roles.read]\n[[roles.read.cmdlet]]\nname = \"Get-Mailbox\"\n\
             [[grant]]\nid = \"reader\"\nplugin = \"reader\"\nsha256 = \"{SHA}\"\nroles = [\"read\"]\n{tenants}\n"
        );
        let error = Policy::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{tenants}: {error}");
    }
}
