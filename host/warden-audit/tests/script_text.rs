//! An ad hoc run's script text in the trail: recorded whole, in parts that each fit the line
//! cap however the text escapes, each part carrying the whole text's sha256; the parts joined
//! in order are the text exactly, and the trail verifies.

use serde_json::Value;
use warden_audit::{AuditKey, AuditTrail, Event, MAX_LINE_BYTES, SCRIPT_PART_JSON_BYTES, verify};
use warden_policy::Principal;

fn recorded(text: &str, principal_name: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = AuditKey::from_bytes([7; 32]);
    let trail = AuditTrail::open(&path, AuditKey::from_bytes([7; 32])).unwrap();
    let principal = Principal::ad_hoc(principal_name, text);
    let events = Event::script_text(&"r".repeat(5000), &principal, text);
    for event in &events {
        trail.record(event).unwrap();
    }
    let file = std::fs::read_to_string(&path).unwrap();
    for line in file.split_inclusive('\n') {
        assert!(line.len() <= MAX_LINE_BYTES, "a {}-byte line", line.len());
    }
    assert!(verify(&path, &key).unwrap().ok());
    file.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_script_is_recorded_whole_in_parts_that_fit_the_line_cap() {
    let one_liner = "exo::invoke(\"Get-Mailbox\").len()";
    let lines = recorded(one_liner, "operator");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["kind"], "script");
    assert_eq!(lines[0]["script"]["text"], one_liner);
    assert_eq!(lines[0]["script"]["part"], 1);
    assert_eq!(lines[0]["script"]["parts"], 1);
    assert_eq!(lines[0]["principal"]["kind"], "ad-hoc");
    assert_eq!(lines[0]["principal"]["name"], "operator");

    // 60 KB that escapes up to six-fold, with multi-byte characters at every boundary, under a
    // principal name and run id long enough to be cut.
    let hostile: String = (0..6000)
        .map(|i| match i % 6 {
            0 => "\u{1}\"\\".to_owned(),
            1 => "é€😀".to_owned(),
            2 => "\n\t".to_owned(),
            _ => format!("let x{i} = 1;"),
        })
        .collect();
    let name = format!("user:{}", "a".repeat(3000));
    let lines = recorded(&hostile, &name);
    assert!(lines.len() > 1);
    let sha = warden_policy::sha256_hex(hostile.as_bytes());
    let mut joined = String::new();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["script"]["part"], i + 1);
        assert_eq!(line["script"]["parts"], lines.len());
        assert_eq!(line["script"]["sha256"], sha.as_str());
        let part = line["script"]["text"].as_str().unwrap();
        assert!(serde_json::to_string(part).unwrap().len() <= SCRIPT_PART_JSON_BYTES);
        joined.push_str(part);
    }
    assert_eq!(joined, hostile);
}
