//! A run's grant is built once per (grant, declaration) and shared by the runs that get it
//! (`Policy::shared_grant_for_tenant`), but every run is still decided on its own: the
//! principal, its pinned hash and its tenant are checked each time, and a different
//! declaration gets its own grant.

use std::path::Path;
use std::sync::Arc;
use warden_policy::{Candidate, Declaration, Grant, Policy, Principal};

const SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn policy() -> Policy {
    let text = format!(
        "version = 1\n[roles.read]\n[[roles.read.cmdlet]]\nname = \"Get-Mailbox\"\n\
         [[roles.read.cmdlet]]\nname = \"Get-User\"\n\
         [[grant]]\nid = \"reader\"\nplugin = \"reader\"\nsha256 = \"{SHA}\"\nroles = [\"read\"]\n\
         tenants = [\"contoso\"]\n"
    );
    Policy::parse(&text, Path::new("p.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn plugin(sha256: &str) -> Principal {
    Principal::Plugin {
        name: "reader".into(),
        sha256: sha256.into(),
        signature: None,
    }
}

fn tenant(name: &str) -> Candidate {
    Candidate {
        name: name.into(),
        tags: Vec::new(),
    }
}

fn declaring(cmdlets: &[&str]) -> Declaration {
    Declaration::new(cmdlets.iter().map(|c| (*c, &[][..]))).unwrap()
}

/// The reader plugin's shared grant for contoso, declaring `cmdlets` (none: no declaration).
fn shared(p: &Policy, cmdlets: Option<&[&str]>) -> Arc<Grant> {
    let declared = cmdlets.map(declaring);
    p.shared_grant_for_tenant(&plugin(SHA), declared.as_ref(), Some(&tenant("contoso")))
        .unwrap()
}

#[test]
fn runs_of_one_plugin_share_its_grant() {
    let p = policy();
    let first = shared(&p, Some(&["Get-Mailbox"]));
    let second = shared(&p, Some(&["Get-Mailbox"]));
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second run rebuilt the grant"
    );
    // The shared grant decides as a freshly built one does.
    let fresh = p
        .grant_for_tenant(
            &plugin(SHA),
            Some(&declaring(&["Get-Mailbox"])),
            Some(&tenant("contoso")),
        )
        .unwrap();
    for (cmdlet, params) in [
        ("Get-Mailbox", "{}"),
        ("Get-User", "{}"),
        ("Set-Mailbox", "{}"),
    ] {
        assert_eq!(
            first.check(cmdlet, params),
            fresh.check(cmdlet, params),
            "{cmdlet}"
        );
    }
    assert!(
        !first.check("Get-User", "{}").allowed,
        "narrowed to the declaration"
    );
}

#[test]
fn another_declaration_gets_its_own_grant() {
    let p = policy();
    let narrow = shared(&p, Some(&["Get-Mailbox"]));
    let wide = shared(&p, Some(&["Get-Mailbox", "Get-User"]));
    let undeclared = shared(&p, None);
    assert!(!Arc::ptr_eq(&narrow, &wide));
    assert!(!Arc::ptr_eq(&wide, &undeclared));
    assert!(!narrow.check("Get-User", "{}").allowed);
    assert!(wide.check("Get-User", "{}").allowed);
    assert!(undeclared.check("Get-User", "{}").allowed);
}

#[test]
fn a_shared_grant_still_checks_each_run_s_principal_and_tenant() {
    let p = policy();
    shared(&p, None);
    // Same grant definition, but another build of the plugin: refused on its pinned hash.
    let other = "2222222222222222222222222222222222222222222222222222222222222222";
    let denial = p
        .shared_grant_for_tenant(&plugin(other), None, Some(&tenant("contoso")))
        .unwrap_err();
    assert!(denial.rule.starts_with("grant:reader"), "{denial}");
    // Same plugin, a tenant the grant does not select: refused.
    let denial = p
        .shared_grant_for_tenant(&plugin(SHA), None, Some(&tenant("fabrikam")))
        .unwrap_err();
    assert_eq!(denial.rule, "grant:reader/tenants");
    let denial = p
        .shared_grant_for_tenant(&plugin(SHA), None, None)
        .unwrap_err();
    assert_eq!(denial.rule, "grant:reader/tenants");
}

#[test]
fn a_cloned_policy_keeps_no_grant_of_the_original() {
    let p = policy();
    let original = shared(&p, None);
    let copied = shared(&p.clone(), None);
    assert!(!Arc::ptr_eq(&original, &copied));
}

#[test]
fn past_its_bound_the_oldest_grant_is_rebuilt() {
    let p = policy();
    let first = shared(&p, None);
    // 32 other declarations push the first out.
    let names: Vec<String> = (0..32).map(|i| format!("Get-Thing{i}")).collect();
    for name in &names {
        shared(&p, Some(&[name]));
    }
    assert!(
        !Arc::ptr_eq(&first, &shared(&p, None)),
        "kept past the bound"
    );
    let last = [names[31].as_str()];
    assert!(Arc::ptr_eq(
        &shared(&p, Some(&last)),
        &shared(&p, Some(&last))
    ));
}
