//! The per-line cap (issue 13 item 6, issue 21 item 6): whatever an event holds — a 4 MB map
//! key copied into a refusal reason, a 65 KB unlisted parameter, thousands of parameters, deep
//! nesting, text that JSON-escapes six-fold — its line is at most `MAX_LINE_BYTES`, keeps the
//! length and keyed hash of what it cut, and the trail still verifies.

use serde_json::{Map, Value, json};
use warden_audit::{AuditKey, AuditTrail, Event, MAX_LINE_BYTES, keyed_hash, verify};
use warden_policy::{Decision, Principal};

fn key() -> AuditKey {
    AuditKey::from_bytes([9; 32])
}

fn refusal(cmdlet: &str, reason: String, parameters: Map<String, Value>) -> Decision {
    Decision {
        allowed: false,
        rule: "invalid-parameters".into(),
        reason,
        cmdlet: cmdlet.into(),
        parameters,
        sensitive: Vec::new(),
        write: false,
    }
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

/// Records each decision, then checks every line's size and the chain; returns the lines.
fn record_all(decisions: &[Decision]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let principal = Principal::plugin("hostile", b"component");
    for decision in decisions {
        trail
            .record(&Event::decision("run-1", &principal, decision))
            .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        assert!(
            line.len() <= MAX_LINE_BYTES,
            "line {} is {} bytes, over the {MAX_LINE_BYTES}-byte cap",
            n + 1,
            line.len()
        );
    }
    let report = verify(&path, &key()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.lines as usize, decisions.len());
    // Reopening continues the chain from a bounded last line.
    drop(trail);
    AuditTrail::open(&path, key()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_4_mb_map_key_in_a_refusal_reason_writes_one_capped_line() {
    let big_key = "k".repeat(4 << 20);
    let reason = format!("parameters: {big_key}: a value of type Fn has no JSON form");
    let lines = record_all(&[refusal("Set-Mailbox", reason.clone(), Map::new())]);
    let cut = lines[0]["reason"].as_str().unwrap();
    assert!(cut.starts_with("parameters: kkkk"), "{cut}");
    assert!(
        cut.contains(&format!("[cut: {} bytes, ", reason.len())),
        "{cut}"
    );
    assert!(cut.contains(&keyed_hash(&key(), &reason)), "{cut}");
}

#[test]
fn a_65_kb_unlisted_parameter_is_cut_with_its_length_and_hash() {
    let name = format!("Unlisted{}", "N".repeat(65 * 1024));
    let value = "v".repeat(65 * 1024);
    let parameters = object(json!({ name.clone(): value.clone(), "Identity": "a@contoso.com" }));
    let reason = format!("parameter '{name}' is not allowed for Get-Mailbox");
    let lines = record_all(&[refusal("Get-Mailbox", reason, parameters)]);
    let recorded = lines[0]["parameters"].as_object().unwrap();
    assert_eq!(
        recorded["Identity"], "a@contoso.com",
        "short values stay whole"
    );
    let (cut_name, cut_value) = recorded
        .iter()
        .find(|(k, _)| k.starts_with("UnlistedNNN"))
        .expect("the cut name keeps its start");
    assert!(
        cut_name.contains(&format!(
            "[cut: {} bytes, {}]",
            name.len(),
            keyed_hash(&key(), &name)
        )),
        "{cut_name}"
    );
    assert!(
        cut_value.as_str().unwrap().contains(&format!(
            "[cut: {} bytes, {}]",
            value.len(),
            keyed_hash(&key(), &value)
        )),
        "{cut_value}"
    );
}

#[test]
fn many_deep_or_escaped_parameters_stay_under_the_cap() {
    let many = (0..20_000)
        .map(|i| (format!("P{i}"), Value::String("x".repeat(500))))
        .collect();
    let deep = object(json!({ "Identity": (0..120).fold(json!("a"), |v, _| json!([v])) }));
    let wide = object(json!({ "Members": (0..100_000).collect::<Vec<u32>>() }));
    // Control characters take six bytes each in JSON: a text under any byte count before
    // escaping must still be measured after it.
    let escaped = object(json!({ "DisplayName": "\u{1}".repeat(5000), "\u{2}".repeat(900): 1 }));
    let long_cmdlet = format!("Get-{}", "\u{1b}".repeat(100_000));
    let lines = record_all(&[
        refusal("Set-Mailbox", "too many".into(), many),
        refusal("Set-Mailbox", "deep".into(), deep),
        refusal("Add-DistributionGroupMember", "wide".into(), wide),
        refusal("Set-Mailbox", "escaped".into(), escaped),
        refusal(&long_cmdlet, "\u{1}".repeat(100_000), Map::new()),
    ]);
    let folded = lines[0]["parameters"]["…"].as_str().unwrap();
    assert!(folded.contains("more of 20000 entries"), "{folded}");
    assert!(
        lines[4]["cmdlet"]
            .as_str()
            .unwrap()
            .contains("[cut: 100004 bytes")
    );
}

#[test]
fn a_sensitive_value_is_hashed_whole_before_anything_is_cut() {
    let secret = "S".repeat(200_000);
    let name = format!("{}Password", "x".repeat(5000));
    let decision = Decision {
        sensitive: vec!["Pin".into()],
        ..refusal(
            "Set-Mailbox",
            "refused".into(),
            object(json!({ "Pin": secret.clone(), name: secret.clone() })),
        )
    };
    let lines = record_all(&[decision]);
    let text = lines[0].to_string();
    assert!(!text.contains("SSSS"), "a sensitive value leaked: {text}");
    assert_eq!(lines[0]["parameters"]["Pin"], keyed_hash(&key(), &secret));
}

/// Exchange's error ids are server text: kept whole when short, cut to a marker when a server
/// (or something in between) sends megabytes, and the line stays under its cap and verifies.
#[test]
fn error_ids_are_kept_and_bounded() {
    use std::time::Duration;
    use warden_audit::{ErrorIds, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let principal = Principal::plugin("p", b"component");
    let mut decision = refusal("Get-Mailbox", String::new(), Map::new());
    decision.allowed = true;
    let failed = |ids: ErrorIds| {
        Event::call(
            "run-1",
            &principal,
            &decision,
            Outcome::Error {
                kind: "remote".into(),
            },
            Duration::from_millis(5),
            0,
            0,
        )
        .with_error_ids(ids)
    };
    trail
        .record(&failed(ErrorIds {
            error_id: Some("Ex6F9304".into()),
            exception: Some("ManagementObjectNotFoundException".into()),
            request_id: Some("cad3d16d-d10f-d607-b925-0ef6e74bf2df".into()),
        }))
        .unwrap();
    let huge = "x".repeat(4 << 20);
    trail
        .record(&failed(ErrorIds {
            error_id: Some(huge.clone()),
            exception: Some(huge.clone()),
            request_id: Some(huge),
        }))
        .unwrap();
    trail.record(&failed(ErrorIds::default())).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().all(|l| l.len() < MAX_LINE_BYTES));
    assert!(verify(&path, &key()).unwrap().ok());
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["error"],
        json!({"error_id": "Ex6F9304", "exception": "ManagementObjectNotFoundException", "request_id": "cad3d16d-d10f-d607-b925-0ef6e74bf2df"})
    );
    let cut = lines[1]["error"]["request_id"].as_str().unwrap();
    assert!(cut.len() < 300 && cut.contains("hmac-sha256:"), "{cut}");
    assert!(lines[2].get("error").is_none(), "no ids, no field");
}

/// A call's line counts the warnings Exchange gave with its answers (a write's warnings may be
/// all that says what it did); none, no field. The line still verifies.
#[test]
fn a_calls_warnings_are_counted() {
    use std::time::Duration;
    use warden_audit::Outcome;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let principal = Principal::plugin("p", b"component");
    let mut decision = refusal("Set-Mailbox", String::new(), Map::new());
    decision.allowed = true;
    for warnings in [2, 0] {
        let event = Event::call(
            "run-1",
            &principal,
            &decision,
            Outcome::Ok,
            Duration::from_millis(5),
            0,
            0,
        )
        .with_warnings(warnings);
        trail.record(&event).unwrap();
    }
    assert!(verify(&path, &key()).unwrap().ok());
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["warnings"], 2);
    assert!(lines[1].get("warnings").is_none());
}

/// A fleet of thousands of tenants keeps its `fleet` lines under the cap: the names past the
/// list's room are counted and hashed, and the trail verifies.
#[test]
fn a_fleet_line_of_many_tenants_stays_bounded_and_verifies() {
    use warden_audit::FleetAction;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, AuditKey::from_bytes([7; 32])).unwrap();
    let tenants: Vec<String> = (0..3000)
        .map(|i| format!("customer-{i:04}-{}", "x".repeat(40)))
        .collect();
    let guest = Principal::Script {
        path: Some("fleet.rhai".into()),
        sha256: "ab".repeat(32),
    };
    let id = "7d1e0c52-51c5-4c3e-9d0e-0a4c8f1b2e3d";
    trail
        .record(&Event::fleet(
            id,
            &guest,
            FleetAction::Recorded {
                by: "local:ops".into(),
                selector: "all".into(),
                tenants: tenants.clone(),
                waves: vec![1, 299, 2700],
                max_failures: Some(5),
                dry_run: true,
            },
        ))
        .unwrap();
    trail
        .record(&Event::fleet(
            id,
            &guest,
            FleetAction::Retried {
                by: "local:ops".into(),
                requeued: tenants.clone(),
                not_requeued_may_have_written: tenants.clone(),
            },
        ))
        .unwrap();
    trail
        .record(&Event::fleet(
            id,
            &guest,
            FleetAction::Summary {
                counts: [
                    ("completed".to_owned(), 2999),
                    ("outcome-unknown".to_owned(), 1),
                ]
                .into_iter()
                .collect(),
                outcome_unknown: vec!["customer-0001".into()],
                halted: false,
                cancelled: false,
                dry_run: false,
            },
        ))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| {
            assert!(line.len() < MAX_LINE_BYTES, "{}", line.len());
            serde_json::from_str(line).unwrap()
        })
        .collect();
    let listed = &lines[0]["fleet_action"]["tenants"];
    assert_eq!(lines[0]["kind"], "fleet");
    assert_eq!(lines[0]["run_id"], id);
    assert_eq!(listed["count"], 3000);
    let kept = listed["names"].as_array().unwrap().len();
    assert!(kept > 10 && kept < 3000, "{kept}");
    assert_eq!(listed["omitted"], 3000 - kept);
    assert_eq!(
        listed["sha256"],
        warden_policy::sha256_hex(tenants.join("\n").as_bytes())
    );
    // Both lists of the retry line keep their count and pin the whole list.
    for list in ["requeued", "not_requeued_may_have_written"] {
        let retried = &lines[1]["fleet_action"][list];
        assert_eq!(retried["count"], 3000, "{list}");
        assert_eq!(
            retried["sha256"],
            warden_policy::sha256_hex(tenants.join("\n").as_bytes()),
            "{list}"
        );
    }
    // `dry_run` is on a dry run's lines only.
    assert_eq!(lines[0]["fleet_action"]["dry_run"], true);
    assert!(lines[2]["fleet_action"].get("dry_run").is_none());
    assert_eq!(
        lines[2]["fleet_action"]["outcome_unknown"]["names"],
        serde_json::json!(["customer-0001"])
    );
    assert!(verify(&path, &AuditKey::from_bytes([7; 32])).unwrap().ok());
}
