//! Bodies of the fuzz targets in `tests/fuzz`, here so plain `cargo test` runs them over a
//! seed corpus too. Not a public API.

use crate::{Policy, Principal};
use std::path::Path;
use std::sync::OnceLock;

/// The policy the `parameter_check` target checks calls against.
pub const SAMPLE_POLICY: &str = r#"
version = 1
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Mailbox"
max_result_size = 50
output = ["DisplayName", "PrimarySmtpAddress"]
parameters.Filter = { length = [1, 200] }
parameters.Identity = { domain = ["contoso.com"] }
parameters.DisplayName = { length = [1, 64], pattern = "[A-Za-z .'-]+" }
parameters.HiddenFromAddressListsEnabled = { boolean = true }
parameters.IssueWarningQuota = { range = [0, 1000] }
parameters.Type = { one_of = ["Regular", "Room"] }
parameters.EmailAddresses = { keys = ["Add", "Remove"], each = { items = [1, 5], each = { domain = ["contoso.com"] } } }
parameters.Password = { any = true, sensitive = true }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Type"
when = { equals = "Room" }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "EmailAddresses"
when = { pattern = "admin@.*" }
[[grant]]
plugin = "fuzz"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["r"]
"#;

/// `policy_parse`: parsing arbitrary text never panics.
pub fn policy_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::parse(text, Path::new("fuzz.toml"));
    }
}

/// `parameter_check`: checking arbitrary input never panics, and an allowed decision is
/// consistent (known cmdlet, a role rule, parameters within the listed ones, every string
/// without invisible edges or control characters, no spelling of an `admin@` address in
/// EmailAddresses, a filter naming only output properties).
pub fn parameter_check(data: &[u8]) {
    static GRANT: OnceLock<crate::Grant> = OnceLock::new();
    let grant = GRANT.get_or_init(|| {
        let policy =
            Policy::parse(SAMPLE_POLICY, Path::new("sample.toml")).expect("sample policy loads");
        let principal = Principal::Plugin {
            name: "fuzz".into(),
            sha256: "0".repeat(64),
            signature: None,
        };
        policy.grant_for(&principal, None).expect("sample grant")
    });
    let text = String::from_utf8_lossy(data);
    // First line: the cmdlet; the rest: the parameter JSON.
    let (cmdlet, json) = text.split_once('\n').unwrap_or(("Set-Mailbox", &text));
    let decision = grant.check(cmdlet, json);
    if decision.allowed {
        assert_eq!(decision.cmdlet, "Set-Mailbox");
        assert!(
            decision.rule.starts_with("role:r/Set-Mailbox"),
            "{}",
            decision.rule
        );
        let listed = [
            "Identity",
            "DisplayName",
            "HiddenFromAddressListsEnabled",
            "IssueWarningQuota",
            "Type",
            "EmailAddresses",
            "Password",
            "ResultSize",
            "Filter",
        ];
        for name in decision.parameters.keys() {
            assert!(
                listed.contains(&name.as_str()),
                "{name} allowed but not listed"
            );
        }
        let room = decision.parameters.get("Type").and_then(|t| t.as_str());
        assert!(!room.is_some_and(|t| t.eq_ignore_ascii_case("Room")));
        for (name, value) in &decision.parameters {
            assert!(crate::text::check_value(name, value).is_ok(), "{name}");
        }
        if let Some(addresses) = decision.parameters.get("EmailAddresses") {
            let mut leaves = vec![addresses];
            while let Some(v) = leaves.pop() {
                match v {
                    serde_json::Value::Array(a) => leaves.extend(a),
                    serde_json::Value::Object(o) => leaves.extend(o.values()),
                    serde_json::Value::String(s) => {
                        for form in crate::text::deny_forms(s) {
                            assert!(!form.to_lowercase().starts_with("admin@"), "{s}");
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(filter) = decision.parameters.get("Filter") {
            let named =
                crate::filter::properties(filter.as_str().expect("a string")).expect("parses");
            assert!(named.iter().all(|p| {
                ["displayname", "primarysmtpaddress"].contains(&p.to_ascii_lowercase().as_str())
            }));
        }
        assert!(
            decision
                .sensitive
                .iter()
                .all(|s| decision.parameters.contains_key(s))
        );
    }
    let mut object = serde_json::Map::new();
    object.insert("Name".into(), serde_json::Value::Null);
    grant.shape(cmdlet, &mut object);
}
