//! The policy engine's tests: every constraint kind both ways, the bypass attempts, deny over
//! allow, no widening across roles, declared ∩ granted, shaping, load errors, the example file,
//! a property test, and the fuzz bodies over their seed corpus.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use warden_policy::{
    Decision, Declaration, GivenParameters, Grant, Policy, PolicyError, Principal,
};

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn principal() -> Principal {
    Principal::Plugin {
        name: "p".into(),
        sha256: ZERO.into(),
        signature: None,
    }
}

fn policy(body: &str, roles: &str) -> Policy {
    let text = format!(
        "version = 1\n{body}\n[[grant]]\nplugin = \"p\"\nsha256 = \"{ZERO}\"\nroles = [{roles}]\n"
    );
    Policy::parse(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn grant(body: &str, roles: &str) -> Grant {
    policy(body, roles)
        .grant_for(&principal(), None)
        .expect("grant")
}

fn one_param(constraint: &str) -> Grant {
    grant(
        &format!(
            "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Set-Mailbox\"\nparameters.Q = {constraint}\n"
        ),
        "\"r\"",
    )
}

fn check(grant: &Grant, cmdlet: &str, params: Value) -> Decision {
    grant.check(cmdlet, &params.to_string())
}

#[test]
fn every_constraint_kind_allows_and_denies() {
    // (constraint, allowed value, refused value)
    let table: &[(&str, Value, Value)] = &[
        ("{ any = true }", json!("whatever"), json!(["a", "list"])),
        ("{ any = true }", json!(null), json!({"Nested": 1})),
        ("{ equals = \"Room\" }", json!("Room"), json!("room")),
        ("{ equals = 5 }", json!(5), json!("5")),
        ("{ one_of = [\"A\", \"B\"] }", json!("B"), json!("C")),
        ("{ pattern = \"[a-z]+\" }", json!("abc"), json!("abc1")),
        ("{ pattern = \"a|b\" }", json!("b"), json!("ab")),
        ("{ pattern = \"[a-z]+\" }", json!("abc"), json!(5)),
        ("{ range = [1, 10] }", json!(10), json!(11)),
        ("{ range = [1, 10] }", json!(1), json!("5")),
        ("{ range = [1, 10] }", json!(3), json!(3.5)),
        ("{ boolean = true }", json!(false), json!("true")),
        ("{ length = [2, 3] }", json!("äöü"), json!("abcd")),
        ("{ length = [2, 3] }", json!("ab"), json!("a")),
        (
            "{ items = [1, 2] }",
            json!(["a", "b"]),
            json!(["a", "b", "c"]),
        ),
        ("{ items = [1, 2] }", json!(["a"]), json!([])),
        ("{ items = [0, 5] }", json!(["a"]), json!([["nested"]])),
        ("{ items = [0, 5] }", json!([1, 2]), json!("scalar")),
        (
            "{ items = [0, 9], each = { pattern = \"x+\" } }",
            json!(["x", "xx"]),
            json!(["x", "y"]),
        ),
        (
            "{ keys = [\"Add\"], each = { range = [0, 9] } }",
            json!({"Add": 3}),
            json!({"Add": 30}),
        ),
        (
            "{ items = [0, 9], each = { range = [0, 9] } }",
            json!([3]),
            json!({"Add": 3}),
        ),
        (
            "{ keys = [\"Add\"] }",
            json!({"Add": 3}),
            json!({"Add": [3]}),
        ),
        (
            "{ keys = [\"Add\", \"Remove\"], each = { any = true } }",
            json!({"add": "x"}),
            json!({"Replace": "x"}),
        ),
        (
            "{ domain = [\"contoso.com\"] }",
            json!("a@Contoso.COM"),
            json!("a@contoso.com.evil.net"),
        ),
        (
            "{ domain = [\"contoso.com\"] }",
            json!("a@b@contoso.com"),
            json!("a@evilcontoso.com"),
        ),
        (
            "{ domain = [\"contoso.com\"] }",
            json!("x@contoso.com"),
            json!("contoso.com"),
        ),
        (
            "{ domain = [\"contoso.com\"] }",
            json!("x@contoso.com"),
            json!("@contoso.com"),
        ),
        (
            "{ domain = [\"contoso.com\"] }",
            json!("x@contoso.com"),
            json!("x@cont\u{043e}so.com"),
        ),
        (
            "{ length = [1, 10], pattern = \"[a-z]+\" }",
            json!("abc"),
            json!("abcdefghijkl"),
        ),
        (
            "{ length = [1, 10], pattern = \"[a-z]+\" }",
            json!("abc"),
            json!("ABC"),
        ),
    ];
    for (constraint, good, bad) in table {
        let g = one_param(constraint);
        let allowed = check(&g, "Set-Mailbox", json!({ "Q": good }));
        assert!(
            allowed.allowed,
            "{constraint} should admit {good}: {}",
            allowed.reason
        );
        assert_eq!(allowed.rule, "role:r/Set-Mailbox");
        let refused = check(&g, "Set-Mailbox", json!({ "Q": bad }));
        assert!(!refused.allowed, "{constraint} should refuse {bad}");
        assert_eq!(
            refused.rule, "role:r/Set-Mailbox/Q",
            "{constraint} / {bad}: {}",
            refused.reason
        );
    }
}

#[test]
fn reasons_never_quote_values() {
    let g = one_param("{ pattern = \"[a-z]+\", sensitive = true }");
    let d = check(&g, "Set-Mailbox", json!({ "Q": "Hunter2-SECRET-VALUE" }));
    assert!(!d.allowed);
    assert!(!d.reason.contains("Hunter2"), "{}", d.reason);
    assert_eq!(d.sensitive, vec!["Q".to_owned()]);
}

fn helpdesk() -> Grant {
    grant(
        r#"
[roles.helpdesk]
[[roles.helpdesk.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { domain = ["contoso.com"] }
parameters.DisplayName = { length = [1, 64] }
[[roles.helpdesk.cmdlet]]
name = "Get-Mailbox"
max_result_size = 100
parameters.Identity = { any = true }
"#,
        "\"helpdesk\"",
    )
}

#[test]
fn bypass_attempts_are_refused() {
    let g = helpdesk();
    let ok = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@contoso.com", "DisplayName": "A"}),
    );
    assert!(ok.allowed, "{}", ok.reason);
    // Case differences are fine and come back canonical, in the order they were given.
    let d = check(
        &g,
        "set-MAILBOX",
        json!({"identity": "a@contoso.com", "DISPLAYNAME": "A"}),
    );
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(d.cmdlet, "Set-Mailbox");
    assert_eq!(
        d.parameters.keys().collect::<Vec<_>>(),
        ["Identity", "DisplayName"]
    );

    let refused: &[(&str, &str, &str)] = &[
        // (cmdlet, params JSON, expected rule)
        (
            " Set-Mailbox",
            r#"{"Identity":"a@contoso.com"}"#,
            "invalid-name",
        ),
        (
            "Set-Mailbox ",
            r#"{"Identity":"a@contoso.com"}"#,
            "invalid-name",
        ),
        (
            "Set-Mailbox\u{200b}",
            r#"{"Identity":"a@contoso.com"}"#,
            "invalid-name",
        ),
        (
            "S\u{0435}t-Mailbox",
            r#"{"Identity":"a@contoso.com"}"#,
            "invalid-name",
        ),
        (
            "\u{ff33}et-Mailbox",
            r#"{"Identity":"a@contoso.com"}"#,
            "invalid-name",
        ),
        (
            "Exchange\\Set-Mailbox",
            r#"{"Identity":"a@contoso.com"}"#,
            "invalid-name",
        ),
        // Aliases and abbreviations of cmdlets.
        ("Set-Mbx", r#"{"Identity":"a@contoso.com"}"#, "default-deny"),
        (
            "Set-Mail",
            r#"{"Identity":"a@contoso.com"}"#,
            "default-deny",
        ),
        // Parameter abbreviation, alias, whitespace, leading dash, lookalike.
        (
            "Set-Mailbox",
            r#"{"Ident":"a@contoso.com"}"#,
            "role:helpdesk/Set-Mailbox/Ident",
        ),
        (
            "Set-Mailbox",
            r#"{"Name":"a"}"#,
            "role:helpdesk/Set-Mailbox/Name",
        ),
        (
            "Set-Mailbox",
            r#"{"Identity ":"a@contoso.com"}"#,
            "invalid-name",
        ),
        (
            "Set-Mailbox",
            r#"{"-Identity":"a@contoso.com"}"#,
            "invalid-name",
        ),
        (
            "Set-Mailbox",
            "{\"Identit\u{0443}\":\"a@contoso.com\"}",
            "invalid-name",
        ),
        // Duplicate keys, also differing only in case.
        (
            "Set-Mailbox",
            r#"{"Identity":"a@contoso.com","Identity":"b@evil.com"}"#,
            "invalid-parameters",
        ),
        (
            "Set-Mailbox",
            r#"{"Identity":"a@contoso.com","identity":"b@evil.com"}"#,
            "invalid-parameters",
        ),
        // Type confusion and nesting.
        (
            "Set-Mailbox",
            r#"{"Identity":["a@contoso.com","b@evil.com"]}"#,
            "role:helpdesk/Set-Mailbox/Identity",
        ),
        (
            "Set-Mailbox",
            r#"{"Identity":{"Value":"a@contoso.com"}}"#,
            "role:helpdesk/Set-Mailbox/Identity",
        ),
        (
            "Set-Mailbox",
            r#"{"Identity":"a@contoso.com","DisplayName":{"A":{"B":1}}}"#,
            "role:helpdesk/Set-Mailbox/DisplayName",
        ),
        (
            "Set-Mailbox",
            r#"{"Identity":5}"#,
            "role:helpdesk/Set-Mailbox/Identity",
        ),
        // Unlisted common parameters.
        (
            "Set-Mailbox",
            r#"{"Identity":"a@contoso.com","Confirm":false}"#,
            "role:helpdesk/Set-Mailbox/Confirm",
        ),
        (
            "Set-Mailbox",
            r#"{"Identity":"a@contoso.com","ErrorAction":"SilentlyContinue"}"#,
            "role:helpdesk/Set-Mailbox/ErrorAction",
        ),
        (
            "Set-Mailbox",
            r#"{"Identity":"a@contoso.com","WhatIf":true}"#,
            "role:helpdesk/Set-Mailbox/WhatIf",
        ),
        // Not JSON objects, huge numbers, trailing data.
        ("Set-Mailbox", r#"["Identity"]"#, "invalid-parameters"),
        (
            "Set-Mailbox",
            r#"{"Identity":"a@contoso.com"} {}"#,
            "invalid-parameters",
        ),
        (
            "Get-Mailbox",
            r#"{"ResultSize":99999999999999999999999}"#,
            "invalid-parameters",
        ),
        // ResultSize bound.
        (
            "Get-Mailbox",
            r#"{"ResultSize":"Unlimited"}"#,
            "role:helpdesk/Get-Mailbox/ResultSize",
        ),
        (
            "Get-Mailbox",
            r#"{"ResultSize":101}"#,
            "role:helpdesk/Get-Mailbox/ResultSize",
        ),
        (
            "Get-Mailbox",
            r#"{"ResultSize":0}"#,
            "role:helpdesk/Get-Mailbox/ResultSize",
        ),
    ];
    for (cmdlet, params, rule) in refused {
        let d = g.check(cmdlet, params);
        assert!(!d.allowed, "{cmdlet:?} {params} was allowed");
        assert_eq!(d.rule, *rule, "{cmdlet:?} {params}: {}", d.reason);
    }
    let lookalike = g.check("S\u{0435}t-Mailbox", "{}");
    assert!(lookalike.reason.contains("U+0435"), "{}", lookalike.reason);
    let common = g.check(
        "Set-Mailbox",
        r#"{"Identity":"a@contoso.com","Confirm":false}"#,
    );
    assert!(
        common.reason.contains("common parameter"),
        "{}",
        common.reason
    );
}

#[test]
fn strings_are_values_never_parsed() {
    let g = helpdesk();
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@contoso.com", "DisplayName": "x -Confirm:$false"}),
    );
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(d.parameters["DisplayName"], json!("x -Confirm:$false"));
    assert!(!d.parameters.contains_key("Confirm"));
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@contoso.com; Remove-Mailbox x"}),
    );
    assert!(!d.allowed, "domain is checked on the whole string");
}

#[test]
fn result_size_is_bounded_and_defaulted() {
    let g = helpdesk();
    let d = check(&g, "Get-Mailbox", json!({}));
    assert!(d.allowed);
    assert_eq!(d.parameters["ResultSize"], json!(100));
    let d = check(&g, "Get-Mailbox", json!({"resultsize": 7}));
    assert!(d.allowed);
    assert_eq!(d.parameters["ResultSize"], json!(7));
    assert_eq!(d.parameters.len(), 1);
}

#[test]
fn deny_overrides_allow() {
    let g = grant(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { any = true }
parameters.Type = { one_of = ["Regular", "Room"] }
[[roles.r.cmdlet]]
name = "Remove-Mailbox"
parameters.Identity = { any = true }
[[deny]]
cmdlet = "Remove-Mailbox"
[[deny]]
cmdlet = "set-mailbox"
parameter = "Identity"
when = { pattern = "(?i)admin.*" }
reason = "hands off admins"
"#,
        "\"r\"",
    );
    assert!(check(&g, "Set-Mailbox", json!({"Identity": "bob"})).allowed);
    let d = check(&g, "Set-Mailbox", json!({"identity": "Administrator"}));
    assert!(!d.allowed);
    assert_eq!(d.rule, "deny[1]");
    assert!(d.reason.contains("hands off admins"), "{}", d.reason);
    let d = check(&g, "Remove-Mailbox", json!({"Identity": "bob"}));
    assert_eq!((d.allowed, d.rule.as_str()), (false, "deny[0]"));
}

#[test]
fn roles_never_widen_each_other() {
    let body = r#"
[roles.names]
[[roles.names.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { domain = ["contoso.com"] }
parameters.DisplayName = { length = [1, 10] }
[roles.quota]
[[roles.quota.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { any = true }
parameters.IssueWarningQuota = { range = [1, 100] }
"#;
    let g = grant(body, "\"names\", \"quota\"");
    // Each role's own calls pass.
    assert!(
        check(
            &g,
            "Set-Mailbox",
            json!({"Identity": "a@contoso.com", "DisplayName": "A"})
        )
        .allowed
    );
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@fabrikam.com", "IssueWarningQuota": 5}),
    );
    assert_eq!(d.rule, "role:quota/Set-Mailbox");
    // quota's `any` Identity does not loosen names' domain constraint.
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@fabrikam.com", "DisplayName": "A"}),
    );
    assert!(!d.allowed);
    assert_eq!(d.rule, "role:names/Set-Mailbox/Identity", "{}", d.reason);
    assert!(
        d.reason.contains("role quota"),
        "both roles explain themselves: {}",
        d.reason
    );
    // Parameters from two roles are not combined into one call.
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@contoso.com", "DisplayName": "A", "IssueWarningQuota": 5}),
    );
    assert!(!d.allowed, "{}", d.reason);
}

#[test]
fn declared_intersects_granted() {
    let p = policy(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Get-Mailbox"
parameters.Identity = { any = true }
parameters.Filter = { any = true }
[[roles.r.cmdlet]]
name = "Get-User"
parameters.Identity = { any = true }
"#,
        "\"r\"",
    );
    let declared = Declaration::from_toml_str(
        "[cmdlets]\nGet-Mailbox = [\"Identity\"]\nRemove-Mailbox = [\"Identity\"]\n",
    )
    .unwrap();
    let g = p.grant_for(&principal(), Some(&declared)).unwrap();
    assert!(check(&g, "Get-Mailbox", json!({"Identity": "x"})).allowed);
    let d = check(&g, "Get-Mailbox", json!({"Filter": "x"}));
    assert!(!d.allowed);
    assert!(d.reason.contains("not declared"), "{}", d.reason);
    let d = check(&g, "Get-User", json!({}));
    assert!(!d.allowed);
    assert!(d.reason.contains("not declared"), "{}", d.reason);
    let d = check(&g, "Remove-Mailbox", json!({"Identity": "x"}));
    assert_eq!((d.allowed, d.rule.as_str()), (false, "default-deny"));
    let json = Declaration::from_json_str(r#"{"cmdlets":{"Get-Mailbox":["Identity"]}}"#).unwrap();
    assert!(
        p.grant_for(&principal(), Some(&json))
            .unwrap()
            .allowed_cmdlets()
            .len()
            == 1
    );
    assert!(Declaration::from_toml_str("[cmdlets]\n\"G\u{0435}t-Mailbox\" = []\n").is_err());
    assert!(Declaration::from_toml_str("cmdlet = 1\n").is_err());
}

#[test]
fn grants_pin_principals() {
    let p = policy("[roles.r]\n", "\"r\"");
    assert!(p.grant_for(&principal(), None).is_ok());
    let other_hash = Principal::Plugin {
        name: "p".into(),
        sha256: "1".repeat(64),
        signature: None,
    };
    let denial = p.grant_for(&other_hash, None).unwrap_err();
    assert_eq!(denial.rule, "grant:p");
    assert!(denial.reason.contains("re-pin"), "{}", denial.reason);
    let stranger = Principal::Plugin {
        name: "q".into(),
        sha256: ZERO.into(),
        signature: None,
    };
    assert_eq!(
        p.grant_for(&stranger, None).unwrap_err().rule,
        "default-deny"
    );
    let inline = Principal::inline_script("exo::invoke(\"Get-Mailbox\", #{})");
    assert_eq!(p.grant_for(&inline, None).unwrap_err().rule, "default-deny");
    // The empty policy allows nothing.
    assert!(Policy::empty().grant_for(&principal(), None).is_err());
    let empty = Policy::parse("version = 1\n", Path::new("e.toml")).unwrap();
    assert!(empty.grant_for(&principal(), None).is_err());
}

#[test]
fn script_grants_match_path_and_hash_or_inline_hash() {
    let dir = tempfile::tempdir().unwrap();
    let source = b"exo::invoke(\"Get-Mailbox\", #{})";
    std::fs::write(dir.path().join("s.rhai"), source).unwrap();
    let inline = "exo::invoke(\"Get-User\", #{})";
    let text = format!(
        "version = 1\n[roles.r]\n[[grant]]\nscript = \"s.rhai\"\nsha256 = \"{}\"\nroles = [\"r\"]\n[[grant]]\nscript_inline_sha256 = \"{}\"\nroles = [\"r\"]\n",
        warden_policy::sha256_hex(source),
        warden_policy::sha256_hex(inline.as_bytes())
    );
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, &text).unwrap();
    let p = Policy::load(&path).unwrap();
    let script = Principal::script_file(dir.path().join("s.rhai"), source);
    assert_eq!(
        p.grant_for(&script, None).unwrap().id(),
        dir.path().join("s.rhai").display().to_string()
    );
    let edited = Principal::script_file(dir.path().join("s.rhai"), b"edited");
    assert!(
        p.grant_for(&edited, None)
            .unwrap_err()
            .reason
            .contains("re-pin")
    );
    assert!(p.grant_for(&Principal::inline_script(inline), None).is_ok());
    assert!(
        p.grant_for(&Principal::inline_script("other"), None)
            .is_err()
    );
}

#[test]
fn output_shaping_and_target_scope() {
    let g = grant(
        r#"
[roles.a]
[[roles.a.cmdlet]]
name = "Get-Mailbox"
output = ["DisplayName", "PrimarySmtpAddress", "Alias"]
parameters.Identity = { any = true }
[roles.b]
[[roles.b.cmdlet]]
name = "Get-Mailbox"
output = ["displayname", "Alias", "Guid"]
[[roles.b.cmdlet]]
name = "Set-Mailbox"
target = { parameter = "Identity", domains = ["contoso.com"], identities = ["room1"] }
parameters.Identity = { any = true }
parameters.DisplayName = { any = true }
"#,
        "\"a\", \"b\"",
    );
    let mut object: Map<String, Value> = serde_json::from_value(json!({
        "DisplayName": "A", "PrimarySmtpAddress": "a@contoso.com", "Alias": "a", "Guid": "g",
        "ForwardingSmtpAddress": "x@evil.com"
    }))
    .unwrap();
    g.shape("get-mailbox", &mut object);
    // What is kept stays in Exchange's order.
    assert_eq!(object.keys().collect::<Vec<_>>(), ["DisplayName", "Alias"]);
    let mut other: Map<String, Value> = serde_json::from_value(json!({"A": 1})).unwrap();
    g.shape("Get-User", &mut other);
    assert!(other.is_empty(), "a cmdlet not granted keeps nothing");

    let scope = g.target_scope("Set-Mailbox").expect("scoped");
    assert_eq!(scope.parameter(), "Identity");
    assert!(scope.admits("Bob@CONTOSO.com"));
    assert!(scope.admits("ROOM1"));
    assert!(!scope.admits("bob@contoso.com.evil.net"));
    assert!(!scope.admits("bob@sub.contoso.com"));
    assert!(!scope.admits("contoso.com"));
    let d = check(&g, "Set-Mailbox", json!({"DisplayName": "x"}));
    assert!(!d.allowed, "a scoped cmdlet needs its target parameter");
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "bob", "DisplayName": "x"}),
    );
    assert!(d.allowed);
    assert!(g.target_scope_for(&d).is_some());
    assert!(g.target_scope("Get-Mailbox").is_none());
    let allowed = g.allowed_cmdlets();
    assert_eq!(allowed.len(), 3);
    assert!(allowed.iter().any(|a| a.cmdlet == "Set-Mailbox" && a.write));
}

#[test]
fn sensitive_parameters_are_marked() {
    let g = grant(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Set-User"
parameters.Identity = { any = true }
parameters.NewPassword = { any = true }
parameters.Pin = { any = true, sensitive = true }
"#,
        "\"r\"",
    );
    let d = check(
        &g,
        "Set-User",
        json!({"Identity": "a", "newpassword": "p", "PIN": "1"}),
    );
    assert!(d.allowed);
    let mut s = d.sensitive.clone();
    s.sort();
    assert_eq!(s, ["NewPassword", "Pin"]);
    // Refused calls still mark by name, so the audit can hash them.
    let d = check(&g, "Set-User", json!({"ApiToken": "t"}));
    assert!(!d.allowed);
    assert_eq!(d.sensitive, ["ApiToken"]);
}

#[test]
fn budgets_default_safely() {
    let g = grant("[roles.r]\n", "\"r\"");
    let b = g.budgets();
    assert_eq!((b.calls, b.writes, b.objects), (1000, 0, 10_000));
    assert_eq!(b.wall_clock.as_secs(), 300);
    let p = policy(
        "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Set-Mailbox\"\nparameters.Identity = { any = true }\n",
        "\"r\"",
    );
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.contains("writes budget is 0")),
        "{:?}",
        p.warnings()
    );
}

fn load_error(text: &str) -> (usize, String) {
    match Policy::parse(text, Path::new("bad.toml")) {
        Err(PolicyError::Invalid { path, line, reason }) => {
            assert_eq!(path, PathBuf::from("bad.toml"));
            (line, reason)
        }
        Err(other) => panic!("unexpected {other}"),
        Ok(_) => panic!("loaded:\n{text}"),
    }
}

#[test]
fn bad_policies_fail_with_line_and_reason() {
    let grant = format!("[[grant]]\nplugin = \"p\"\nsha256 = \"{ZERO}\"\nroles = [\"r\"]\n");
    let cases: Vec<(String, usize, &str)> = vec![
        ("[roles.r]\n".into(), 1, "version"),
        ("version = 2\n".into(), 1, "not supported"),
        ("version = 1\nunknown = 3\n".into(), 2, "unknown"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nparameters.Filter = { pattern = \"(\" }\n".into(), 5, "regular expression"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nparameters.N = { range = [5, 1] }\n".into(), 5, "min is greater"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nparameters.N = { lenght = [1, 2] }\n".into(), 5, "unknown field"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nparameters.N = {}\n".into(), 5, "any = true"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nparameters.N = { items = [1, 2], pattern = \"a\" }\n".into(), 5, "each"),
        ("version = 1\n[roles.r]\n\n[[roles.r.cmdlet]]\nname = \"G\u{0435}t-Mailbox\"\n".into(), 4, "U+0435"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nparameters.Identity = { any = true }\nparameters.identity = { any = true }\n".into(), 6, "twice"),
        ("version = 1\n[roles.r]\n\n[[grant]]\nplugin = \"p\"\nsha256 = \"abc\"\nroles = [\"r\"]\n".into(), 4, "SHA-256"),
        (format!("version = 1\n[roles.r]\n{}", grant.replace("[\"r\"]", "[\"nope\"]")), 3, "not defined"),
        (format!("version = 1\n[roles.r]\n{grant}{grant}"), 7, "same principal"),
        ("version = 1\n[[deny]]\ncmdlet = \"Set-Mailbox\"\nwhen = { any = true }\n".into(), 2, "needs `parameter`"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Set-Mailbox\"\ntarget = { parameter = \"Identity\", domains = [\"contoso.com\"] }\n".into(), 3, "not listed"),
        ("version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 10\nparameters.ResultSize = { any = true }\n".into(), 6, "max_result_size"),
        ("version = 1\nroles = [\n".into(), 2, ""),
    ];
    for (text, line, needle) in cases {
        let (got_line, reason) = load_error(&text);
        assert_eq!(got_line, line, "{reason}\n{text}");
        assert!(
            reason.contains(needle),
            "{reason:?} lacks {needle:?}\n{text}"
        );
    }
    let e = Policy::parse("version = 1\nx = 1\n", Path::new("dir/p.toml")).unwrap_err();
    assert!(e.to_string().starts_with("dir/p.toml:2: "), "{e}");
    assert!(matches!(
        Policy::load(Path::new("/nonexistent/p.toml")),
        Err(PolicyError::Read { .. })
    ));
}

#[test]
fn the_example_policy_loads_and_behaves_as_documented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy.example.toml");
    let p = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    let summary = p.summary();
    // Four pinned grants and the operator's ad hoc one.
    assert_eq!(summary.grants.len(), 5);
    // The compliance example lists searches on the compliance endpoint and may not purge.
    let searches = p
        .grant_for(
            &Principal::Script {
                path: Some(
                    path.parent()
                        .unwrap()
                        .join("scripts/compliance-searches.rhai"),
                ),
                sha256: warden_policy::sha256_hex(
                    &std::fs::read(
                        path.parent()
                            .unwrap()
                            .join("scripts/compliance-searches.rhai"),
                    )
                    .unwrap(),
                ),
            },
            None,
        )
        .unwrap();
    let listed = check(&searches, "Get-ComplianceSearch", json!({}));
    assert!(listed.allowed, "{listed:?}");
    assert_eq!(
        searches.endpoint_for(&listed),
        Ok(warden_policy::Endpoint::Compliance)
    );
    let purge = json!({"SearchName": "x", "Purge": true});
    assert!(!check(&searches, "New-ComplianceSearchAction", purge).allowed);
    assert_eq!(summary.deny.len(), 6);
    let inline = Principal::inline_script("exo::invoke(\"Get-Mailbox\", #{ResultSize: 10}).len()");
    let g = p.grant_for(&inline, None).unwrap();
    assert!(check(&g, "Get-Mailbox", json!({"ResultSize": 10})).allowed);
    assert!(!check(&g, "Get-Mailbox", json!({"ResultSize": "Unlimited"})).allowed);
    let script = Principal::Script {
        path: Some(path.parent().unwrap().join("scripts/helpdesk.rhai")),
        sha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752".into(),
    };
    let g = p.grant_for(&script, None).unwrap();
    assert!(
        check(
            &g,
            "Set-Mailbox",
            json!({"Identity": "a@contoso.com", "DisplayName": "Zoë O'Neil"})
        )
        .allowed
    );
    // The documented no-merge example: DisplayName (helpdesk) + IssueWarningQuota (quota).
    assert!(
        !check(
            &g,
            "Set-Mailbox",
            json!({"Identity": "a@contoso.com", "DisplayName": "A", "IssueWarningQuota": 5})
        )
        .allowed
    );
    assert_eq!(
        check(
            &g,
            "Set-Mailbox",
            json!({"Identity": "admin@contoso.com", "DisplayName": "A"})
        )
        .rule,
        "deny[0]"
    );
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@contoso.com", "EmailAddresses": {"Add": ["smtp:b@contoso.com"]}}),
    );
    assert!(d.allowed, "{}", d.reason);
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "a@contoso.com", "EmailAddresses": {"Add": ["smtp:b@evil.com"]}}),
    );
    assert!(!d.allowed);
    let d = check(
        &g,
        "Set-User",
        json!({"Identity": "a@contoso.com", "Password": "correct horse battery"}),
    );
    assert!(d.allowed && d.sensitive == ["Password"]);
    // The admin's password is as protected as its mailbox: deny rules are per cmdlet.
    let d = check(
        &g,
        "Set-User",
        json!({"Identity": "admin@contoso.com", "Password": "correct horse battery"}),
    );
    assert_eq!(d.rule, "deny[1]", "{}", d.reason);
}

/// Every write a shipped policy grants on an `Identity` is refused on the admin account: a deny
/// rule is per cmdlet, so each such cmdlet needs its own.
#[test]
fn shipped_policies_protect_the_admin_on_every_write_they_grant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let zeros = "0".repeat(64);
    let cases: [(&str, Principal, &str); 4] = [
        (
            "policy.example.toml",
            Principal::Script {
                path: Some(root.join("scripts/helpdesk.rhai")),
                sha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752".into(),
            },
            "admin@contoso.com",
        ),
        (
            "plugins/shared-mailbox/policy.toml",
            Principal::Plugin {
                name: "shared-mailbox".into(),
                sha256: zeros.clone(),
                signature: None,
            },
            "admin@contoso.onmicrosoft.com",
        ),
        (
            "scripts/policy.toml",
            Principal::Script {
                path: Some(root.join("scripts/rename-mailbox.rhai")),
                sha256: warden_policy::sha256_hex(
                    &std::fs::read(root.join("scripts/rename-mailbox.rhai")).unwrap(),
                ),
            },
            "admin@contoso.onmicrosoft.com",
        ),
        (
            "scripts/policy.toml",
            Principal::Script {
                path: Some(root.join("scripts/shared-mailbox-access.rhai")),
                sha256: warden_policy::sha256_hex(
                    &std::fs::read(root.join("scripts/shared-mailbox-access.rhai")).unwrap(),
                ),
            },
            "admin@contoso.onmicrosoft.com",
        ),
    ];
    for (file, principal, admin) in cases {
        let p = Policy::load(&root.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let g = p
            .grant_for(&principal, None)
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let writes: Vec<_> = g
            .allowed_cmdlets()
            .into_iter()
            .filter(|c| c.write && c.parameters.iter().any(|p| p == "Identity"))
            .collect();
        for c in writes {
            let d = check(&g, &c.cmdlet, json!({ "Identity": admin }));
            assert!(
                d.rule.starts_with("deny["),
                "{file}: {} on {admin} is not refused by a deny rule ({})",
                c.cmdlet,
                d.rule
            );
        }
    }
}

// ---- property: allowed only if every parameter is listed and satisfies its constraint ----

/// The model: parameter name → predicate, mirroring the policy below.
fn model_admits(name: &str, value: &Value) -> Option<bool> {
    match name {
        "Count" => Some(value.as_i64().is_some_and(|n| (0..=100).contains(&n))),
        "Mode" => Some(value == "Fast" || value == "Slow"),
        "Flag" => Some(value.is_boolean()),
        "Name" => Some(value.as_str().is_some_and(|s| {
            let n = s.chars().count();
            (1..=8).contains(&n) && s.chars().all(|c| c.is_ascii_lowercase())
        })),
        "Tags" => Some(value.as_array().is_some_and(|a| {
            a.len() <= 3 && a.iter().all(|t| t.as_str().is_some_and(|s| s.len() <= 4))
        })),
        _ => None,
    }
}

const PROP_POLICY: &str = r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Thing"
parameters.Count = { range = [0, 100] }
parameters.Mode = { one_of = ["Fast", "Slow"] }
parameters.Flag = { boolean = true }
parameters.Name = { pattern = "[a-z]+", length = [1, 8] }
parameters.Tags = { items = [0, 3], each = { length = [0, 4] } }
"#;

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..120).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z]{0,10}".prop_map(Value::String),
        prop_oneof![Just("Fast"), Just("Slow"), Just("fast")].prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[A-Z][a-z]{0,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("Count"),
            Just("Mode"),
            Just("Flag"),
            Just("Name"),
            Just("Tags")
        ]
        .prop_map(String::from),
        prop_oneof![
            Just("count"),
            Just("MODE"),
            Just("Confirm"),
            Just("Nam"),
            Just("Other")
        ]
        .prop_map(String::from),
        "[A-Za-z]{1,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn allowed_only_if_every_parameter_is_listed_and_satisfies_its_constraint(
        params in prop::collection::btree_map(arb_name(), arb_value(), 0..5)
    ) {
        let g = grant(PROP_POLICY, "\"r\"");
        // Build the JSON by hand so case-variant duplicates reach the checker.
        let mut folded = std::collections::HashSet::new();
        let mut duplicate = false;
        for name in params.keys() {
            duplicate |= !folded.insert(name.to_ascii_lowercase());
        }
        let body: Vec<String> = params.iter().map(|(k, v)| format!("{}:{v}", json!(k))).collect();
        let d = g.check("Set-Thing", &format!("{{{}}}", body.join(",")));
        let canonical = |n: &str| ["Count", "Mode", "Flag", "Name", "Tags"].into_iter().find(|c| c.eq_ignore_ascii_case(n));
        let expected = !duplicate && params.iter().all(|(k, v)| {
            canonical(k).and_then(|c| model_admits(c, v)).unwrap_or(false)
        });
        prop_assert_eq!(d.allowed, expected, "{:?} → {} {}", params, d.rule, d.reason);
    }
}

#[test]
fn fuzz_bodies_survive_the_seed_corpus() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/seeds");
    for (target, body) in [
        (
            "policy_parse",
            warden_policy::fuzz::policy_parse as fn(&[u8]),
        ),
        (
            "parameter_check",
            warden_policy::fuzz::parameter_check as fn(&[u8]),
        ),
    ] {
        let dir = seeds.join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            body(&bytes);
            n += 1;
        }
        assert!(n >= 5, "{target}: only {n} seeds");
    }
    warden_policy::fuzz::policy_parse(warden_policy::fuzz::SAMPLE_POLICY.as_bytes());
    warden_policy::fuzz::parameter_check(b"Set-Mailbox\n{\"Identity\":\"a@contoso.com\"}");
}

// ---- issue 13: the policy decides on what Exchange will act on ----

fn permissions(deny: &str) -> Grant {
    grant(
        &format!(
            r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Add-MailboxPermission"
parameters.Identity = {{ any = true }}
parameters.AccessRights = {{ items = [0, 5], each = {{ any = true }} }}
parameters.Rights = {{ any = true }}
parameters.Mixed = {{ keys = ["Add"], each = {{ items = [0, 5] }} }}
[[deny]]
cmdlet = "Add-MailboxPermission"
parameter = "AccessRights"
{deny}
[[deny]]
cmdlet = "Add-MailboxPermission"
parameter = "Rights"
{deny}
[[deny]]
cmdlet = "Add-MailboxPermission"
parameter = "Mixed"
{deny}
"#
        ),
        "\"r\"",
    )
}

#[test]
fn a_deny_judges_every_list_item_and_fails_closed() {
    let g = permissions("when = { one_of = [\"FullAccess\", \"ChangeOwner\"] }");
    let allowed = |p: &str, v: Value| check(&g, "Add-MailboxPermission", json!({ p: v }));
    for (p, v) in [
        ("AccessRights", json!(["ReadPermission"])),
        ("AccessRights", json!(["ReadPermission", "SendAs"])),
        ("Rights", json!("ReadPermission")),
        ("Mixed", json!({"Add": ["ReadPermission"]})),
    ] {
        let d = allowed(p, v.clone());
        assert!(d.allowed, "{p} {v}: {}", d.reason);
    }
    // Each was "no match" before: a list, a list item, another case, a flags string, a type
    // the constraint cannot judge (Exchange reads 1 as FullAccess), null, nothing to judge.
    for (p, v) in [
        ("AccessRights", json!(["FullAccess"])),
        ("AccessRights", json!(["ReadPermission", "FullAccess"])),
        ("AccessRights", json!(["fullaccess"])),
        ("AccessRights", json!(["ReadPermission,FullAccess"])),
        ("AccessRights", json!([1])),
        ("AccessRights", json!([])),
        ("Rights", json!("FullAccess")),
        ("Rights", json!("FULLACCESS")),
        ("Rights", json!("ReadPermission, ChangeOwner")),
        ("Rights", json!(1)),
        ("Rights", json!(null)),
        ("Rights", json!(true)),
        ("Mixed", json!({"Add": ["ReadPermission", "FullAccess"]})),
        ("Mixed", json!({"Add": []})),
        ("Mixed", json!({"Add": "FullAccess"})),
    ] {
        let d = allowed(p, v.clone());
        assert!(!d.allowed, "{p} {v} passed the deny");
        assert!(
            d.rule.starts_with("deny["),
            "{p} {v}: {} {}",
            d.rule,
            d.reason
        );
    }
    // when_all: only when every item matches; when_any is when.
    let g = permissions("when_all = { one_of = [\"FullAccess\"] }");
    let d = check(
        &g,
        "Add-MailboxPermission",
        json!({"AccessRights": ["ReadPermission", "FullAccess"]}),
    );
    assert!(d.allowed, "{}", d.reason);
    let d = check(
        &g,
        "Add-MailboxPermission",
        json!({"AccessRights": ["FullAccess", "fullaccess"]}),
    );
    assert_eq!(d.rule, "deny[0]");
    let g = permissions("when_any = { one_of = [\"FullAccess\"] }");
    let d = check(
        &g,
        "Add-MailboxPermission",
        json!({"AccessRights": ["ReadPermission", "FullAccess"]}),
    );
    assert_eq!(d.rule, "deny[0]");
}

#[test]
fn a_deny_judges_the_address_exchange_acts_on() {
    let g = grant(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { domain = ["contoso.com"] }
parameters.GrantSendOnBehalfTo = { keys = ["Add", "Remove"], each = { items = [1, 5], each = { any = true } } }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { pattern = "admin.*@.*" }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "GrantSendOnBehalfTo"
when = { pattern = "admin.*@.*" }
"#,
        "\"r\"",
    );
    assert!(check(&g, "Set-Mailbox", json!({"Identity": "bob@contoso.com"})).allowed);
    for identity in [
        "admin@contoso.com",
        "Admin@Contoso.com",
        "smtp:admin@contoso.com",
        "SMTP:ADMIN@contoso.com",
        "sMtP:admin@contoso.com",
    ] {
        let d = check(&g, "Set-Mailbox", json!({ "Identity": identity }));
        assert_eq!(d.rule, "deny[0]", "{identity}: {}", d.reason);
    }
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "bob@contoso.com", "GrantSendOnBehalfTo": {"Add": ["bob@contoso.com", "SMTP:admin@contoso.com"]}}),
    );
    assert_eq!(d.rule, "deny[1]", "{}", d.reason);
    // `domain` reads past the prefix too: smtp:@contoso.com names no mailbox.
    let d = check(&g, "Set-Mailbox", json!({"Identity": "smtp:@contoso.com"}));
    assert_eq!(d.rule, "role:r/Set-Mailbox/Identity");
    assert!(
        check(
            &g,
            "Set-Mailbox",
            json!({"Identity": "SMTP:bob@contoso.com"})
        )
        .allowed
    );
}

#[test]
fn deny_rules_take_single_value_keys_and_one_quantifier() {
    let deny = |when: &str| {
        format!("version = 1\n[[deny]]\ncmdlet = \"Set-Mailbox\"\nparameter = \"P\"\n{when}\n")
    };
    for (when, says) in [
        ("when = { items = [1, 2] }", "single values"),
        ("when = { keys = [\"Add\"] }", "single values"),
        (
            "when_all = { items = [0, 9], each = { any = true } }",
            "single values",
        ),
        ("when = { any = true, sensitive = true }", "sensitive"),
        (
            "when = { any = true }\nwhen_all = { any = true }",
            "one of when",
        ),
        ("when_any = { equals = [\"a\"] }", "single values"),
    ] {
        let (line, why) = load_error(&deny(when));
        assert_eq!(line, 2, "{when}");
        assert!(why.contains(says), "{when}: {why}");
    }
}

#[test]
fn lists_and_hashtables_only_where_said() {
    // (constraint, refused value, the reason says)
    let table: &[(&str, Value, &str)] = &[
        // keys admits only a non-empty hashtable: [] is Exchange's "replace all".
        (
            "{ keys = [\"Add\", \"Remove\"], each = { items = [0, 5] } }",
            json!([]),
            "a hashtable is expected",
        ),
        (
            "{ keys = [\"Add\", \"Remove\"], each = { items = [0, 5] } }",
            json!(["a"]),
            "a hashtable is expected",
        ),
        (
            "{ keys = [\"Add\", \"Remove\"], each = { items = [0, 5] } }",
            json!({}),
            "empty hashtable",
        ),
        (
            "{ keys = [\"Add\", \"Remove\"], each = { items = [0, 5] } }",
            json!("a"),
            "a hashtable is expected",
        ),
        (
            "{ keys = [\"Add\", \"Remove\"], each = { items = [0, 5] } }",
            json!(null),
            "a hashtable is expected",
        ),
        (
            "{ keys = [\"Add\", \"Remove\"], each = { items = [0, 5] } }",
            json!({"Add": "a"}),
            "a list is expected",
        ),
        // items admits only a list.
        (
            "{ items = [0, 5] }",
            json!({"Add": "a"}),
            "a list is expected",
        ),
        ("{ items = [0, 5] }", json!("a"), "a list is expected"),
        ("{ items = [0, 5] }", json!([{"Add": "a"}]), "single value"),
        (
            "{ items = [0, 5], each = { items = [0, 5] } }",
            json!([{"Add": "a"}]),
            "a list is expected",
        ),
        // Single-value keys admit no list or hashtable.
        ("{ any = true }", json!([]), "a single value is expected"),
        ("{ any = true }", json!({}), "a single value is expected"),
        (
            "{ one_of = [\"a\"] }",
            json!(["a"]),
            "a single value is expected",
        ),
        (
            "{ equals = \"a\" }",
            json!(["a"]),
            "a single value is expected",
        ),
        (
            "{ domain = [\"contoso.com\"] }",
            json!(["a@contoso.com"]),
            "a single value is expected",
        ),
    ];
    for (constraint, bad, says) in table {
        let g = one_param(constraint);
        let d = check(&g, "Set-Mailbox", json!({ "Q": bad }));
        assert!(!d.allowed, "{constraint} admitted {bad}");
        assert!(
            d.reason.contains(says),
            "{constraint} / {bad}: {}",
            d.reason
        );
    }
    let g = one_param("{ keys = [\"Add\", \"Remove\"], each = { items = [0, 5] } }");
    assert!(check(&g, "Set-Mailbox", json!({"Q": {"Add": []}})).allowed);
    // Keys whose shape is not said fail at load.
    for (constraint, says) in [
        ("{ each = { any = true } }", "alone it admits nothing"),
        ("{ keys = [\"Add\"], items = [0, 1] }", "one shape"),
        ("{ equals = [\"a\"] }", "single values"),
        ("{ one_of = [[\"a\"]] }", "single values"),
        (
            "{ any = true, items = [0, 1] }",
            "any applies to a single value",
        ),
        ("{ keys = [] }", "admits nothing"),
        ("{ filter_properties = [] }", "admits no filter"),
        ("{ filter_properties = [\"a.b\"] }", "plain property"),
    ] {
        let text = format!(
            "version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Set-Mailbox\"\nparameters.Q = {constraint}\n"
        );
        let (_, why) = load_error(&text);
        assert!(why.contains(says), "{constraint}: {why}");
    }
}

#[test]
fn values_with_invisible_edges_or_control_characters_are_refused() {
    let g = grant(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { length = [1, 256] }
parameters.DisplayName = { any = true }
parameters.EmailAddresses = { keys = ["Add"], each = { items = [1, 5], each = { any = true } } }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { pattern = "admin@.*" }
"#,
        "\"r\"",
    );
    let edges = [
        ' ', '\t', '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{a0}', '\u{1680}', '\u{2002}',
        '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
        '\u{200b}', '\u{200d}', '\u{2060}', '\u{feff}', '\u{ad}', '\u{180e}', '\u{202e}',
    ];
    for c in edges {
        let code = format!("U+{:04X}", c as u32);
        for value in [
            json!({"Identity": format!("{c}admin@contoso.com")}),
            json!({"Identity": format!("admin@contoso.com{c}")}),
            json!({"Identity": "bob", "DisplayName": format!("{c}Bob")}),
            json!({"Identity": "bob", "EmailAddresses": {"Add": ["x@contoso.com", format!("x@contoso.com{c}")]}}),
        ] {
            let d = check(&g, "Set-Mailbox", value.clone());
            assert!(!d.allowed, "{value}");
            assert_eq!(d.rule, "invalid-parameters", "{value}: {}", d.reason);
            assert!(d.reason.contains(&code), "{value}: {}", d.reason);
            assert!(!d.reason.contains("admin"), "{}", d.reason);
        }
    }
    for c in ['\0', '\u{7}', '\u{1b}', '\n', '\u{7f}', '\u{9b}'] {
        let d = check(
            &g,
            "Set-Mailbox",
            json!({"Identity": "bob", "DisplayName": format!("a{c}b")}),
        );
        assert_eq!(d.rule, "invalid-parameters", "{c:?}: {}", d.reason);
        assert!(d.reason.contains("control character"), "{}", d.reason);
    }
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "bob", "EmailAddresses": {"Add": [" x"]}}),
    );
    assert!(
        d.reason.starts_with("EmailAddresses.Add[0]:"),
        "{}",
        d.reason
    );
    // Inner spaces and letters of any script are values like any other.
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Identity": "bob", "DisplayName": "Zoë O'Neil 山田"}),
    );
    assert!(d.allowed, "{}", d.reason);
}

fn shaped(filter: &str, extra_role: &str, roles: &str) -> Policy {
    policy(
        &format!(
            r#"
[roles.reader]
[[roles.reader.cmdlet]]
name = "Get-Mailbox"
output = ["DisplayName", "PrimarySmtpAddress"]
parameters.Filter = {filter}
parameters.RecipientFilter = {{ any = true }}
[[roles.reader.cmdlet]]
name = "Get-Recipient"
parameters.Filter = {{ any = true }}
{extra_role}
"#
        ),
        roles,
    )
}

#[test]
fn filters_name_only_what_output_shaping_lets_the_guest_see() {
    let p = shaped("{ length = [1, 500] }", "", "\"reader\"");
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    let g = p.grant_for(&principal(), None).unwrap();
    let filter = |f: &str| check(&g, "Get-Mailbox", json!({ "Filter": f }));
    for ok in [
        "DisplayName -eq 'Bob'",
        "displayname -like 'B*' -and PRIMARYSMTPADDRESS -ne $null",
        "-not (DisplayName -eq 'x') -or (PrimarySmtpAddress -like '*@contoso.com')",
        "DisplayName -eq 'HiddenFromAddressListsEnabled -eq $true'",
    ] {
        let d = filter(ok);
        assert!(d.allowed, "{ok}: {}", d.reason);
    }
    for hidden in [
        "HiddenFromAddressListsEnabled -eq $true",
        "hiddenfromaddresslistsenabled -eq $TRUE",
        "GrantSendOnBehalfTo -like '*'",
        "-not (GrantSendOnBehalfTo -eq $null)",
        "DisplayName -eq 'a' -or (((HiddenFromAddressListsEnabled -eq $true)))",
        "DisplayName -like '*' -and -not -not HiddenFromAddressListsEnabled -ne $false",
        "ProhibitSendQuota -gt 5",
    ] {
        let d = filter(hidden);
        assert!(!d.allowed, "{hidden} was allowed");
        assert_eq!(
            d.rule, "role:reader/Get-Mailbox/Filter",
            "{hidden}: {}",
            d.reason
        );
        assert!(d.reason.contains("output shaping hides"), "{}", d.reason);
    }
    for unreadable in [
        "DisplayName -contains 'x'",
        "{DisplayName -eq 'x'}",
        "DisplayName -eq $x",
        "(DisplayName -eq 'x'",
        "DisplayName -eq 'x' HiddenFromAddressListsEnabled -eq $true",
        "Hidden.Value -eq 1",
    ] {
        let d = filter(unreadable);
        assert_eq!(
            d.rule, "role:reader/Get-Mailbox/Filter",
            "{unreadable}: {}",
            d.reason
        );
        assert!(
            d.reason.contains("not a filter the policy can read"),
            "{}",
            d.reason
        );
    }
    // Siblings: any parameter named *Filter, whatever the operator wrote for it.
    let d = check(
        &g,
        "Get-Mailbox",
        json!({"RecipientFilter": "HiddenFromAddressListsEnabled -eq $true"}),
    );
    assert_eq!(
        d.rule, "role:reader/Get-Mailbox/RecipientFilter",
        "{}",
        d.reason
    );
    // Without output shaping there is nothing to read around.
    let d = check(
        &g,
        "Get-Recipient",
        json!({"Filter": "HiddenFromAddressListsEnabled -eq $true"}),
    );
    assert!(d.allowed, "{}", d.reason);
}

#[test]
fn filters_cannot_read_around_shaping_through_another_role() {
    // `open` lets Get-Mailbox filter on anything and shapes nothing, but the guest's results are
    // shaped by `reader` (shaping keeps what every limiting entry allows), so the filter is held
    // to what the guest sees.
    let open = r#"
[roles.open]
[[roles.open.cmdlet]]
name = "Get-Mailbox"
parameters.Filter = { any = true }
"#;
    let g = shaped("{ any = true }", open, "\"reader\", \"open\"")
        .grant_for(&principal(), None)
        .unwrap();
    let d = check(
        &g,
        "Get-Mailbox",
        json!({"Filter": "HiddenFromAddressListsEnabled -eq $true"}),
    );
    assert!(!d.allowed, "{}", d.reason);
    let d = check(&g, "Get-Mailbox", json!({"Filter": "DisplayName -eq 'x'"}));
    assert!(d.allowed, "{}", d.reason);
}

#[test]
fn explicit_filter_properties_hold_and_warn_when_they_reach_past_shaping() {
    let p = shaped(
        "{ filter_properties = [\"DisplayName\", \"HiddenFromAddressListsEnabled\"] }",
        "",
        "\"reader\"",
    );
    let warning = p.warnings().join("\n");
    assert!(
        warning.contains("HiddenFromAddressListsEnabled") && warning.contains("read around"),
        "{warning}"
    );
    let g = p.grant_for(&principal(), None).unwrap();
    let d = check(
        &g,
        "Get-Mailbox",
        json!({"Filter": "HiddenFromAddressListsEnabled -eq $true"}),
    );
    assert!(d.allowed, "the operator listed it: {}", d.reason);
    let d = check(
        &g,
        "Get-Mailbox",
        json!({"Filter": "PrimarySmtpAddress -eq 'x'"}),
    );
    assert!(
        d.reason.contains("filter_properties does not list"),
        "{}",
        d.reason
    );
    // Without shaping, filter_properties still holds, and nothing is read around.
    let p = policy(
        "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-User\"\nparameters.Filter = { filter_properties = [\"Department\"] }\n",
        "\"r\"",
    );
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    let g = p.grant_for(&principal(), None).unwrap();
    assert!(check(&g, "Get-User", json!({"Filter": "Department -eq 'IT'"})).allowed);
    assert!(!check(&g, "Get-User", json!({"Filter": "Title -eq 'IT'"})).allowed);
}

#[test]
fn refusals_quote_guest_text_within_a_bound() {
    // A cap high enough that the names, not the size, are what is refused.
    let g = grant(
        "max_parameter_bytes = 16777216\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"Set-Mailbox\"\nparameters.Q = { any = true }\n",
        "\"r\"",
    );
    let huge = format!("-{}", "K".repeat(4 << 20));
    let d = check(&g, "Set-Mailbox", json!({ huge.clone(): 1 }));
    assert_eq!(d.rule, "invalid-name");
    assert!(d.reason.len() < 1024, "{} bytes", d.reason.len());
    let d = g.check_given(
        "Set-Mailbox",
        GivenParameters::Deferred(&|| Err(format!("map key {huge:?} has no JSON form"))),
    );
    assert_eq!(d.rule, "invalid-parameters");
    assert!(
        d.reason.len() <= warden_policy::MAX_REASON_BYTES + 32,
        "{} bytes",
        d.reason.len()
    );
    let d = check(
        &g,
        "Set-Mailbox",
        json!({"Q": format!("x{}", "y".repeat(1 << 20)) + " "}),
    );
    assert_eq!(d.rule, "invalid-parameters");
    assert!(d.reason.len() < 512, "{}", d.reason);
    let filter = one_param("{ filter_properties = [\"A\"] }");
    let long = format!("{} -eq 1", "B".repeat(1 << 20));
    let d = check(&filter, "Set-Mailbox", json!({ "Q": long }));
    assert!(!d.allowed);
    assert!(d.reason.len() < 1024, "{} bytes", d.reason.len());
}

// ---- review of issue 13: deny rules fail closed on identifiers and enum numbers ----

#[test]
fn deny_rules_judge_every_identifier_whatever_its_text() {
    let g = grant(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { any = true }
[[roles.r.cmdlet]]
name = "Add-MailboxPermission"
parameters.Identity = { any = true }
parameters.AccessRights = { any = true }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { pattern = "(?i)admin.*" }
"#,
        "\"r\"",
    );
    // An object's name may have invisible edges or controls that a guest's value may not; the
    // value rules refused these, and the broker read that refusal as "no deny".
    for identifier in [
        "\u{200E}Admin",
        "\u{FEFF}Admin Team",
        "Admin\u{200F}",
        "\u{3000}admin@contoso.com",
        "Admin\u{7}",
    ] {
        let d = g
            .deny_for_value("Set-Mailbox", "Identity", &json!(identifier))
            .unwrap_or_else(|| panic!("{identifier:?} passed the deny"));
        assert_eq!(d.rule, "deny[0]");
    }
    // Only deny rules answer: a value the roles or the text rules refuse is not a deny.
    assert!(
        g.deny_for_value("Set-Mailbox", "Identity", &json!("\u{200E}bob"))
            .is_none()
    );
    assert!(
        g.deny_for_value("Add-MailboxPermission", "Identity", &json!("admin"))
            .is_none()
    );
}

#[test]
fn enum_numbers_given_as_text_match_a_deny_pattern_too() {
    let g = permissions("when = { pattern = \"(?i)(FullAccess|ChangeOwner)\" }");
    for (p, v) in [
        ("Rights", json!("1")),
        ("Rights", json!("-1")),
        ("Rights", json!("ReadPermission,1")),
        ("AccessRights", json!(["ReadPermission", "983041"])),
    ] {
        let d = check(&g, "Add-MailboxPermission", json!({ p: v.clone() }));
        assert!(
            d.rule.starts_with("deny["),
            "{p} {v}: {} {}",
            d.rule,
            d.reason
        );
    }
    let d = check(
        &g,
        "Add-MailboxPermission",
        json!({"Rights": "ReadPermission"}),
    );
    assert!(d.allowed, "{}", d.reason);
}

#[test]
fn enum_numbers_given_as_text_match_a_deny_that_lists_names() {
    let g = permissions("when = { one_of = [\"FullAccess\", \"ChangeOwner\"] }");
    let call = |p: &str, v: Value| check(&g, "Add-MailboxPermission", json!({ p: v }));
    // .NET Enum.Parse reads "1" as FullAccess and "-1" as every right.
    for (p, v) in [
        ("Rights", json!("1")),
        ("Rights", json!("-1")),
        ("Rights", json!("+1")),
        ("Rights", json!("ReadPermission,1")),
        ("Rights", json!("ReadPermission, 524288")),
        ("AccessRights", json!(["ReadPermission", "1"])),
        ("Mixed", json!({"Add": ["-1"]})),
    ] {
        let d = call(p, v.clone());
        assert!(
            d.rule.starts_with("deny["),
            "{p} {v}: {} {}",
            d.rule,
            d.reason
        );
    }
    let d = check(
        &g,
        "Add-MailboxPermission",
        json!({"Rights": "ReadPermission"}),
    );
    assert!(d.allowed, "{}", d.reason);
    let d = grant(
        r#"
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { any = true }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { equals = "admin@contoso.com" }
"#,
        "\"r\"",
    );
    // Identity names a directory object (the broker resolves it): an all-digit alias or
    // employee number is a name, not an enum value, so it is judged, not refused blindly.
    let d = check(&d, "Set-Mailbox", json!({"Identity": "10234"}));
    assert!(d.allowed, "{} {}", d.rule, d.reason);
    // The allow side already refuses a number in place of a listed name.
    let allow = one_param("{ one_of = [\"ReadPermission\"] }");
    assert!(!check(&allow, "Set-Mailbox", json!({"Q": "1"})).allowed);
}

#[test]
fn filters_hold_only_printable_ascii_so_powershell_reads_them_as_we_do() {
    let p = shaped("{ length = [1, 500] }", "", "\"reader\"");
    let g = p.grant_for(&principal(), None).unwrap();
    // Each is one comparison on DisplayName to an ASCII-only lexer, and three comparisons
    // (one on a hidden property) to PowerShell's, which closes quotes on typographic ones.
    for bad in [
        "DisplayName -eq 'x\u{2019} -or HiddenFromAddressListsEnabled -eq $true -or DisplayName -eq \u{2018}y'",
        "DisplayName -eq 'x\u{201A} -or HiddenFromAddressListsEnabled -eq $true -or DisplayName -eq \u{201B}y'",
        "DisplayName -eq \"x\u{201C} -or HiddenFromAddressListsEnabled -eq $true -or DisplayName -eq \u{201D}y\"",
        "DisplayName -eq \"x`\" -or HiddenFromAddressListsEnabled -eq $true -or DisplayName -eq `\"y\"",
        "DisplayName \u{2013}eq 'x'",
        "DisplayName -eq 'B\u{f6}b'",
    ] {
        let d = check(&g, "Get-Mailbox", json!({ "Filter": bad }));
        assert!(!d.allowed, "{bad}");
        assert!(d.reason.contains("printable ASCII"), "{bad}: {}", d.reason);
    }
    assert!(
        check(
            &g,
            "Get-Mailbox",
            json!({"Filter": "DisplayName -like 'B*b'"})
        )
        .allowed
    );
}

#[test]
fn shaped_roles_that_allow_sort_or_search_are_warned_about() {
    for parameter in [
        "SortBy",
        "Anr",
        "SearchQuery",
        "ContentMatchQuery",
        "sortby",
    ] {
        let p = shaped(
            "{ length = [1, 500] }",
            &format!(
                "[[roles.reader.cmdlet]]\nname = \"Get-User\"\noutput = [\"DisplayName\"]\nparameters.{parameter} = {{ any = true }}\n"
            ),
            "\"reader\"",
        );
        let warning = p.warnings().join("\n");
        assert!(
            warning.contains(parameter) && warning.contains("read around"),
            "{parameter}: {warning}"
        );
    }
    // Unshaped, a sort key shows nothing the guest cannot read anyway.
    let p = policy(
        "[roles.r]\n[[roles.r.cmdlet]]\nname = \"Get-User\"\nparameters.SortBy = { any = true }\n",
        "\"r\"",
    );
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
}

#[test]
fn deny_rules_on_identities_judge_the_object_or_say_they_judge_text() {
    let body = r#"
[roles.r]
[[roles.r.cmdlet]]
name = "New-InboxRule"
parameters.Mailbox = { any = true }
parameters.Name = { any = true }
parameters.ForwardTo = { items = [1, 5], each = { any = true } }
[[roles.r.cmdlet]]
name = "Set-CalendarProcessing"
parameters.Identity = { any = true }
parameters.ResourceDelegates = { items = [1, 5], each = { any = true } }
[[roles.r.cmdlet]]
name = "Set-Mailbox"
parameters.Identity = { any = true }
parameters.ForwardingSmtpAddress = { any = true }
parameters.CustomAttribute1 = { any = true }
[[deny]]
cmdlet = "New-InboxRule"
parameter = "Mailbox"
when = { pattern = "(?i)admin.*" }
[[deny]]
cmdlet = "New-InboxRule"
parameter = "ForwardTo"
when = { pattern = "(?i)admin.*" }
[[deny]]
cmdlet = "Set-CalendarProcessing"
parameter = "ResourceDelegates"
when = { pattern = "(?i)admin.*" }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "ForwardingSmtpAddress"
when = { pattern = "(?i)admin.*" }
identity = true
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "CustomAttribute1"
when = { equals = "x" }
"#;
    let p = policy(body, "\"r\"");
    // Only the unmarked deny on a parameter outside the recipient list is warned about.
    let about_deny: Vec<_> = p
        .warnings()
        .iter()
        .filter(|w| w.starts_with("deny["))
        .collect();
    assert_eq!(about_deny.len(), 1, "{about_deny:?}");
    assert!(
        about_deny[0].starts_with("deny[4]") && about_deny[0].contains("identity = true"),
        "{about_deny:?}"
    );
    let g = p.grant_for(&principal(), None).unwrap();
    let resolved = |cmdlet: &str, params: Value| {
        let d = check(&g, cmdlet, params);
        assert!(d.allowed, "{}", d.reason);
        let mut names = g.identity_parameters(&d);
        names.sort();
        names
    };
    // Before, each was judged as the text sent: another spelling of the admin passed.
    assert_eq!(
        resolved(
            "New-InboxRule",
            json!({"Mailbox": "bob", "Name": "n", "ForwardTo": ["carol"]})
        ),
        ["ForwardTo", "Mailbox"]
    );
    assert_eq!(
        resolved(
            "Set-CalendarProcessing",
            json!({"Identity": "room", "ResourceDelegates": ["carol"]})
        ),
        ["ResourceDelegates"]
    );
    assert_eq!(
        resolved(
            "Set-Mailbox",
            json!({"Identity": "bob", "ForwardingSmtpAddress": "carol@contoso.com", "CustomAttribute1": "y"})
        ),
        ["ForwardingSmtpAddress"]
    );
    // Saying a recipient parameter is text would let spellings through: refused at load.
    let bad = "version = 1\n[[deny]]\ncmdlet = \"Add-MailboxPermission\"\nparameter = \"User\"\nwhen = { pattern = \"admin.*\" }\nidentity = false\n";
    let e = Policy::parse(bad, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.toml:2") && e.contains("names a recipient"),
        "{e}"
    );
    // An inbox rule may forward to any external address, which the broker cannot resolve: the
    // operator may judge that parameter as text, knowingly.
    let text = "version = 1\n[[deny]]\ncmdlet = \"New-InboxRule\"\nparameter = \"ForwardTo\"\nwhen = { pattern = \".*@evil\\\\.example\" }\nidentity = false\n";
    let policy = Policy::parse(text, Path::new("p.toml")).unwrap();
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    let bad =
        "version = 1\n[[deny]]\ncmdlet = \"Set-Mailbox\"\nparameter = \"P\"\nidentity = true\n";
    let e = Policy::parse(bad, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs `when`"), "{e}");
}

#[test]
fn the_examples_deny_rules_refuse_a_purge_even_to_a_role_granting_the_search_action() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // The example's compliance grant, given a role that DOES grant New-ComplianceSearchAction.
    let granted = "roles = [\"compliance-searches\", \"search-actions\"]";
    let text = text.replace("roles = [\"compliance-searches\"]", granted)
        + r#"
[roles.search-actions]
description = "Act on compliance searches"
[[roles.search-actions.cmdlet]]
name = "New-ComplianceSearchAction"
endpoint = "compliance"
[roles.search-actions.cmdlet.parameters]
SearchName = { any = true }
Preview = { any = true }
Purge = { any = true }
PurgeType = { any = true }
"#;
    let p = Policy::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let script = path
        .parent()
        .unwrap()
        .join("scripts/compliance-searches.rhai");
    let searches = p
        .grant_for(
            &Principal::Script {
                sha256: warden_policy::sha256_hex(&std::fs::read(&script).unwrap()),
                path: Some(script),
            },
            None,
        )
        .unwrap();
    let preview = check(
        &searches,
        "New-ComplianceSearchAction",
        json!({"SearchName": "x", "Preview": true}),
    );
    assert!(preview.allowed, "the role grants the cmdlet: {preview:?}");
    for purge in [
        json!({"SearchName": "x", "Purge": true}),
        json!({"SearchName": "x", "Purge": true, "PurgeType": "HardDelete"}),
        json!({"SearchName": "x", "PurgeType": "SoftDelete"}),
    ] {
        let decision = check(&searches, "New-ComplianceSearchAction", purge.clone());
        assert!(!decision.allowed, "{purge}: {decision:?}");
        assert!(
            format!("{decision:?}").contains("purging"),
            "{purge}: refused by the deny rule: {decision:?}"
        );
    }
}
