//! `verify_from`: continuing a verification reads only the appended lines, and falls back to
//! the whole file when the line it ended on is no longer there.

use std::path::Path;
use warden_audit::{AuditKey, AuditTrail, Event, verify, verify_from};
use warden_policy::{Decision, Principal};

fn key() -> AuditKey {
    AuditKey::from_bytes([9; 32])
}

fn record(trail: &AuditTrail, n: usize) {
    let decision = Decision {
        allowed: false,
        rule: "default-deny".into(),
        reason: format!("line {n:04}"),
        cmdlet: "Get-Mailbox".into(),
        parameters: Default::default(),
        sensitive: Vec::new(),
        write: false,
    };
    trail
        .record(&Event::decision(
            "run",
            &Principal::ad_hoc("test", ""),
            &decision,
        ))
        .unwrap();
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from));
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn continues_after_what_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let (report, none) = verify_from(&path, &key(), None).unwrap();
    assert!(report.ok() && report.lines == 0);
    let none = none.unwrap();
    for n in 0..5 {
        record(&trail, n);
    }
    let (report, five) = verify_from(&path, &key(), Some(&none)).unwrap();
    assert!(report.ok() && report.lines == 5, "{report:?}");
    let five = five.unwrap();
    assert_eq!(five.bytes, std::fs::metadata(&path).unwrap().len());
    record(&trail, 5);
    let (report, six) = verify_from(&path, &key(), Some(&five)).unwrap();
    assert!(report.ok() && report.lines == 6, "{report:?}");
    assert_eq!(six.unwrap().lines, 6);

    // An edit before the continuation point is NOT seen by it, and is by a whole verification.
    edit(&path, "line 0001", "line 0009");
    record(&trail, 6);
    let (report, _) = verify_from(&path, &key(), Some(&five)).unwrap();
    assert!(report.ok(), "only the appended lines are read");
    assert_eq!(verify(&path, &key()).unwrap().first_broken.unwrap().0, 2);
}

#[test]
fn the_last_verified_line_changed_means_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    for n in 0..4 {
        record(&trail, n);
    }
    let (_, four) = verify_from(&path, &key(), None).unwrap();
    let four = four.unwrap();
    // The last verified line edited: the continuation verifies the whole file and names it.
    edit(&path, "line 0003", "line 0008");
    record(&trail, 4);
    let (report, verified) = verify_from(&path, &key(), Some(&four)).unwrap();
    assert_eq!(report.first_broken.unwrap().0, 4);
    assert!(verified.is_none());
    // A line longer than before shifts everything after it: also the whole file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    for n in 0..4 {
        record(&trail, n);
    }
    let (_, four) = verify_from(&path, &key(), None).unwrap();
    edit(&path, "line 0000", "line 00000");
    record(&trail, 4);
    let (report, _) = verify_from(&path, &key(), four.as_ref()).unwrap();
    assert_eq!(report.first_broken.unwrap().0, 1);
}
