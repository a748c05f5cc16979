//! Audit trail tests: round trip, tampering named by line, wrong key, secrets never written,
//! fail-closed open and write, chain continued across reopen, key file handling.

use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::Duration;
use warden_audit::{AuditError, AuditKey, AuditTrail, Event, Outcome, keyed_hash, verify};
use warden_policy::{Decision, Principal};

fn key() -> AuditKey {
    AuditKey::from_bytes([7; 32])
}

fn principal() -> Principal {
    Principal::plugin("mailbox-report", b"component bytes")
}

fn decision(allowed: bool, params: Value, sensitive: &[&str]) -> Decision {
    Decision {
        allowed,
        rule: if allowed {
            "role:helpdesk/Set-User".into()
        } else {
            "default-deny".into()
        },
        reason: "because".into(),
        cmdlet: "Set-User".into(),
        parameters: serde_json::from_value::<Map<String, Value>>(params).unwrap(),
        sensitive: sensitive.iter().map(|s| (*s).to_owned()).collect(),
        write: true,
    }
}

fn write_lines(path: &Path, n: usize) {
    let trail = AuditTrail::open(path, key()).unwrap();
    for i in 0..n {
        let d = decision(
            true,
            json!({"Identity": format!("user{i}@contoso.com")}),
            &[],
        );
        trail
            .record(&Event::decision("run-1", &principal(), &d))
            .unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn round_trip_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let d = decision(
        true,
        json!({"Identity": "a@contoso.com", "Password": "hunter2"}),
        &["Password"],
    );
    trail
        .record(&Event::decision("run-1", &principal(), &d))
        .unwrap();
    trail
        .record(&Event::call(
            "run-1",
            &principal(),
            &d,
            Outcome::Ok,
            Duration::from_millis(42),
            1,
            512,
        ))
        .unwrap();
    let failed = Outcome::Error {
        kind: "throttled".into(),
    };
    trail
        .record(&Event::call(
            "run-1",
            &principal(),
            &d,
            failed,
            Duration::ZERO,
            0,
            0,
        ))
        .unwrap();
    trail.sync().unwrap();
    let report = verify(&path, &key()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.lines, 3);

    let all = lines(&path);
    let first: Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(first["prev"], "start");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "decision");
    assert_eq!(first["run_id"], "run-1");
    assert_eq!(first["principal"]["kind"], "plugin");
    assert_eq!(first["principal"]["name"], "mailbox-report");
    assert_eq!(
        first["principal"]["sha256"],
        warden_policy::sha256_hex(b"component bytes")
    );
    assert_eq!(first["allowed"], true);
    assert_eq!(first["rule"], "role:helpdesk/Set-User");
    assert!(
        time::OffsetDateTime::parse(
            first["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    let second: Value = serde_json::from_str(&all[1]).unwrap();
    assert_eq!(second["prev"], first["mac"]);
    assert_eq!(second["outcome"], json!({"status": "ok"}));
    assert_eq!(
        (
            second["duration_ms"].as_u64(),
            second["objects"].as_u64(),
            second["bytes"].as_u64()
        ),
        (Some(42), Some(1), Some(512))
    );
    let third: Value = serde_json::from_str(&all[2]).unwrap();
    assert_eq!(
        third["outcome"],
        json!({"status": "error", "kind": "throttled"})
    );
}

#[test]
fn sensitive_values_never_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    // Marked by the policy, by name only (not marked), nested, and in a refused call.
    let d = decision(
        false,
        json!({"Pin": "CANARY-PIN-4711", "ApiToken": "CANARY-TOKEN-0815", "NewPassword": {"Value": "CANARY-NESTED"}, "Identity": "visible@contoso.com"}),
        &["Pin"],
    );
    trail
        .record(&Event::decision("run-2", &principal(), &d))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("CANARY"), "{text}");
    assert!(text.contains("visible@contoso.com"));
    let line: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        line["parameters"]["Pin"],
        keyed_hash(&key(), "CANARY-PIN-4711")
    );
    assert_eq!(
        line["parameters"]["ApiToken"],
        keyed_hash(&key(), "CANARY-TOKEN-0815")
    );
    assert_eq!(
        line["parameters"]["NewPassword"],
        keyed_hash(&key(), r#"{"Value":"CANARY-NESTED"}"#)
    );
    assert!(keyed_hash(&key(), "x").starts_with("hmac-sha256:"));
    assert_ne!(
        keyed_hash(&key(), "x"),
        keyed_hash(&AuditKey::from_bytes([8; 32]), "x")
    );
}

#[test]
fn a_prefix_of_a_secure_parameter_is_hashed_as_the_parameter() {
    // PowerShell's binder takes `-Pass` for `-Password` and `-OAuth` for `-OAuthCode`; no word
    // of the by-name list is in either, so only the broker's prefix rule catches them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    for (cmdlet, parameter) in [
        ("Set-Mailbox", "Pass"),
        ("set-mailbox", "PASSW"),
        ("New-MigrationEndpoint", "OAuth"),
    ] {
        let mut d = decision(true, json!({ parameter: "CANARY-PREFIX" }), &[]);
        d.cmdlet = cmdlet.to_owned();
        trail
            .record(&Event::decision("run-3", &principal(), &d))
            .unwrap();
    }
    // Not a secure parameter of this cmdlet: left as it is.
    let mut d = decision(true, json!({"Pass": "visible-value"}), &[]);
    d.cmdlet = "Get-Mailbox".into();
    trail
        .record(&Event::decision("run-3", &principal(), &d))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("CANARY"), "{text}");
    assert!(text.contains("visible-value"), "{text}");
}

#[test]
fn a_tampered_byte_is_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_lines(&path, 5);
    let mut bytes = std::fs::read(&path).unwrap();
    let third_line_start = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 1;
    let at = third_line_start
        + bytes[third_line_start..]
            .windows(5)
            .position(|w| w == b"user2")
            .unwrap();
    bytes[at] = b'U';
    std::fs::write(&path, &bytes).unwrap();
    let report = verify(&path, &key()).unwrap();
    let (line, why) = report.first_broken.expect("broken");
    assert_eq!(line, 3, "{why}");
    assert!(why.contains("edited"), "{why}");
}

#[test]
fn removed_reordered_and_cut_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_lines(&path, 5);
    let all = lines(&path);

    let mut removed = all.clone();
    removed.remove(1);
    std::fs::write(&path, removed.join("\n") + "\n").unwrap();
    let (line, why) = verify(&path, &key()).unwrap().first_broken.unwrap();
    assert_eq!(line, 2, "{why}");
    assert!(why.contains("removed"), "{why}");

    let mut swapped = all.clone();
    swapped.swap(2, 3);
    std::fs::write(&path, swapped.join("\n") + "\n").unwrap();
    assert_eq!(verify(&path, &key()).unwrap().first_broken.unwrap().0, 3);

    let mut first_gone = all.clone();
    first_gone.remove(0);
    std::fs::write(&path, first_gone.join("\n") + "\n").unwrap();
    assert_eq!(verify(&path, &key()).unwrap().first_broken.unwrap().0, 1);

    let cut = all.join("\n") + "\n";
    std::fs::write(&path, &cut[..cut.len() - 10]).unwrap();
    assert_eq!(verify(&path, &key()).unwrap().first_broken.unwrap().0, 5);
    // A cut-off tail also stops the trail from being continued.
    assert!(matches!(
        AuditTrail::open(&path, key()),
        Err(AuditError::Broken { .. })
    ));
}

#[test]
fn the_wrong_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_lines(&path, 2);
    let other = AuditKey::from_bytes([9; 32]);
    let (line, _) = verify(&path, &other).unwrap().first_broken.unwrap();
    assert_eq!(line, 1);
    assert!(matches!(
        AuditTrail::open(&path, other),
        Err(AuditError::Broken { .. })
    ));
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_lines(&path, 2);
    write_lines(&path, 3);
    let report = verify(&path, &key()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.lines, 5);
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let _first = AuditTrail::open(&path, key()).unwrap();
    assert!(matches!(
        AuditTrail::open(&path, key()),
        Err(AuditError::Io {
            action: "cannot lock",
            ..
        })
    ));
}

#[test]
fn an_unwritable_trail_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = AuditTrail::open(&file.join("audit.jsonl"), key()).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_surfaces_and_poisons_the_trail() {
    // /dev/full accepts opens and refuses every write with ENOSPC.
    let trail = AuditTrail::open(Path::new("/dev/full"), key()).unwrap();
    let d = decision(true, json!({}), &[]);
    let err = trail
        .record(&Event::decision("run", &principal(), &d))
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Io {
                action: "cannot write",
                ..
            }
        ),
        "{err}"
    );
    let err = trail
        .record(&Event::decision("run", &principal(), &d))
        .unwrap_err();
    assert!(matches!(err, AuditError::Poisoned { .. }), "{err}");
}

#[test]
fn concurrent_records_keep_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = std::sync::Arc::new(AuditTrail::open(&path, key()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let trail = trail.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let d = decision(true, json!({"Identity": format!("{t}-{i}")}), &[]);
                    trail
                        .record(&Event::decision("run", &principal(), &d))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = verify(&path, &key()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.lines, 100);
}

#[test]
fn key_files_are_created_private_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/warden/audit.key");
    let created = AuditKey::load_or_create(&path).unwrap();
    let again = AuditKey::load_or_create(&path).unwrap();
    assert_eq!(keyed_hash(&created, "v"), keyed_hash(&again, "v"));
    assert_eq!(format!("{created:?}"), "AuditKey([redacted])");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = AuditKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(&path, "not hex").unwrap();
    assert!(AuditKey::load(&path).is_err());
    assert!(AuditKey::load(&dir.path().join("missing")).is_err());
    assert_eq!(
        warden_audit::default_key_path(None, Some("/home/x".into())),
        Some("/home/x/.local/state/warden/audit.key".into())
    );
    assert_eq!(
        warden_audit::default_key_path(Some("/k".into()), Some("/home/x".into())),
        Some("/k".into())
    );
}

/// A delegated run's lines name the person, the task, the approver and the service's run; a
/// line of a run nobody delegated has no `delegation` at all; both verify in one trail (an old
/// trail, without the field, verifies as before). Its texts are cut like identifiers, so the
/// line keeps its bound.
#[test]
fn delegated_lines_name_the_person_task_and_approver() {
    use warden_vocab::{DelegatedPerson, Delegation};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let d = decision(true, json!({"Identity": "a@contoso.com"}), &[]);
    trail
        .record(&Event::decision("cli-run", &principal(), &d))
        .unwrap();
    let delegation = Delegation {
        person: DelegatedPerson {
            oid: "oid-helpdesk".into(),
            upn: "helpdesk@contoso.com".into(),
        },
        task: "rename-mailbox".into(),
        approver: Some(DelegatedPerson {
            oid: "oid-lead".into(),
            upn: format!("{}@contoso.com", "l".repeat(5000)),
        }),
        service_run: "7d1c0c3e-0000-4000-8000-000000000001".into(),
    };
    trail
        .record(
            &Event::decision("run-2", &principal(), &d)
                .delegated(Some(&trail.bind_delegation(&delegation))),
        )
        .unwrap();
    assert!(verify(&path, &key()).unwrap().ok());
    let all = lines(&path);
    let cli: Value = serde_json::from_str(&all[0]).unwrap();
    assert!(cli.get("delegation").is_none(), "{cli}");
    let delegated: Value = serde_json::from_str(&all[1]).unwrap();
    assert_eq!(
        delegated["delegation"]["person"],
        json!({"oid": "oid-helpdesk", "upn": "helpdesk@contoso.com"})
    );
    assert_eq!(delegated["delegation"]["task"], "rename-mailbox");
    assert_eq!(delegated["delegation"]["approver"]["oid"], "oid-lead");
    assert!(
        delegated["delegation"]["approver"]["upn"]
            .as_str()
            .unwrap()
            .len()
            < 300,
        "a long text is cut: {delegated}"
    );
    assert_eq!(
        delegated["delegation"]["service_run"],
        "7d1c0c3e-0000-4000-8000-000000000001"
    );
}
