//! Group commit: `record` writes its line and every queued line ahead of it before it returns;
//! `record_later` queues, and the writer thread (or the next writer) writes within the delay;
//! the chain keeps the order of the calls; the queue is bounded; a failed write stops everything.

use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use warden_audit::{AuditError, AuditKey, AuditTrail, Durability, Event, MAX_QUEUED_BYTES, verify};
use warden_policy::{Decision, Principal};

fn key() -> AuditKey {
    AuditKey::from_bytes([9; 32])
}

fn principal() -> Principal {
    Principal::plugin("p", b"component")
}

/// A decision whose rule names it, so the file's order can be read back.
fn event(allowed: bool, name: &str, parameters: Value) -> Event {
    let Value::Object(parameters) = parameters else {
        unreachable!()
    };
    Event::from_decision(
        "run",
        &principal(),
        Decision {
            allowed,
            rule: name.to_owned(),
            reason: String::new(),
            cmdlet: "Set-Mailbox".into(),
            parameters,
            sensitive: Vec::new(),
            write: true,
        },
    )
}

fn small(allowed: bool, name: &str) -> Event {
    event(allowed, name, json!({"Identity": "a@contoso.com"}))
}

/// The rules of the file's lines, in order.
fn rules(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            line["rule"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_record_writes_the_queued_lines_ahead_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    trail.record_later(small(false, "refused-1")).unwrap();
    trail.record_later(small(false, "refused-2")).unwrap();
    trail.record(&small(true, "allowed")).unwrap();
    // Without waiting: the allowed line took the queue with it, in call order.
    assert_eq!(rules(&path), ["refused-1", "refused-2", "allowed"]);
    assert!(verify(&path, &key()).unwrap().ok());
}

#[test]
fn the_chain_keeps_the_order_of_the_record_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let mut expected = Vec::new();
    for i in 0..300 {
        let name = format!("line-{i}");
        if i % 7 == 0 {
            trail.record(&small(true, &name)).unwrap();
        } else {
            trail.record_later(small(false, &name)).unwrap();
        }
        expected.push(name);
    }
    trail.flush().unwrap();
    assert_eq!(rules(&path), expected);
    drop(trail);
    // An old trail continues: reopened, its chain goes on and the whole file verifies.
    let trail = AuditTrail::open(&path, key()).unwrap();
    trail.record_later(small(false, "after-reopen")).unwrap();
    drop(trail);
    let report = verify(&path, &key()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.lines, 301);
}

#[test]
fn queued_lines_are_written_by_the_writer_within_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    let queued = Instant::now();
    trail.record_later(small(false, "refused")).unwrap();
    // Nobody records or flushes: only the writer thread can write it. The delay is 10 ms;
    // the bound here leaves a loaded machine room.
    while rules(&path).is_empty() {
        assert!(
            queued.elapsed() < Duration::from_secs(5),
            "a queued line was never written"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(rules(&path), ["refused"]);
}

/// Waits (at most 5 s: a loaded machine) until the file holds `count` lines.
fn wait_for_lines(path: &Path, count: usize, what: &str) {
    let since = Instant::now();
    while rules(path).len() < count {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{what} was never written"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_line_queued_after_the_writer_went_idle_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    trail.record_later(small(false, "first")).unwrap();
    wait_for_lines(&path, 1, "the first queued line");
    // Well past the delay: the writer waits for a line with no deadline, and only a wake-up
    // brings it back.
    std::thread::sleep(Duration::from_millis(100));
    trail.record_later(small(false, "second")).unwrap();
    wait_for_lines(&path, 2, "a line queued to an idle writer");
    assert_eq!(rules(&path), ["first", "second"]);
}

#[test]
fn a_line_queued_while_the_writer_gathers_is_written_when_its_delay_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    for round in 0..20 {
        // The writer is woken for the first line and gathers; a flush takes its batch, and
        // the next line is queued without waking it: it must still find it when its delay
        // ends.
        trail
            .record_later(small(false, &format!("taken-{round}")))
            .unwrap();
        trail.flush().unwrap();
        trail
            .record_later(small(false, &format!("left-{round}")))
            .unwrap();
        wait_for_lines(
            &path,
            2 * round + 2,
            "a line queued while the writer gathered",
        );
    }
    assert!(verify(&path, &key()).unwrap().ok());
}

#[test]
fn dropping_the_trail_writes_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    for i in 0..50 {
        trail.record_later(small(false, &format!("r{i}"))).unwrap();
    }
    drop(trail);
    assert_eq!(rules(&path).len(), 50);
    assert!(verify(&path, &key()).unwrap().ok());
}

#[test]
fn a_producer_past_the_queue_bound_writes_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key()).unwrap();
    trail.record_later(small(false, "queued")).unwrap();
    // One event holding more than the queue may: not queued, written here with the queue.
    let mut big = Map::new();
    big.insert("DisplayName".into(), json!("x".repeat(MAX_QUEUED_BYTES)));
    trail
        .record_later(event(false, "too-big-to-queue", Value::Object(big)))
        .unwrap();
    assert_eq!(rules(&path), ["queued", "too-big-to-queue"]);
    assert!(verify(&path, &key()).unwrap().ok());
}

#[test]
fn concurrent_records_and_queued_lines_keep_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = std::sync::Arc::new(AuditTrail::open(&path, key()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let trail = trail.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let name = format!("{t}-{i}");
                    if i % 10 == 0 {
                        trail.record(&small(true, &name)).unwrap();
                    } else {
                        trail.record_later(small(false, &name)).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    trail.flush().unwrap();
    let written = rules(&path);
    assert_eq!(written.len(), 800);
    // Each thread's lines are in the order it recorded them.
    for t in 0..4 {
        let mine: Vec<&String> = written
            .iter()
            .filter(|r| r.starts_with(&format!("{t}-")))
            .collect();
        let expected: Vec<String> = (0..200).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    assert!(verify(&path, &key()).unwrap().ok());
}

#[test]
fn fsync_per_write_records_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let trail = AuditTrail::open(&path, key())
        .unwrap()
        .with_durability(Durability::Sync);
    trail.record_later(small(false, "queued")).unwrap();
    trail.record(&small(true, "allowed")).unwrap();
    assert_eq!(rules(&path), ["queued", "allowed"]);
    assert!(verify(&path, &key()).unwrap().ok());
}

/// A trail on /dev/full, which opens and fails every write with ENOSPC (a full disk). Its
/// lock is held by any other test (or process) using it: wait for it.
#[cfg(target_os = "linux")]
fn full_disk() -> AuditTrail {
    let started = Instant::now();
    loop {
        match AuditTrail::open(Path::new("/dev/full"), key()) {
            Ok(trail) => return trail,
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_batch_poisons_the_trail_for_every_kind_of_record() {
    let trail = full_disk();
    // Queuing does not touch the disk: it succeeds.
    trail.record_later(small(false, "refused")).unwrap();
    // The writer thread's batch fails; from then on every record fails, queued or not.
    let started = Instant::now();
    let error = loop {
        match trail.record_later(small(false, "refused")) {
            Err(error) => break error,
            Ok(()) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the writer never failed"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    assert!(matches!(error, AuditError::Poisoned { .. }), "{error}");
    // The writer's own failure had no caller: its cause rides on every later error.
    assert!(error.to_string().contains("No space left"), "{error}");
    let error = trail.record(&small(true, "allowed")).unwrap_err();
    assert!(matches!(error, AuditError::Poisoned { .. }), "{error}");
    assert!(error.to_string().contains("No space left"), "{error}");
    assert!(trail.flush().is_err());
}

#[cfg(target_os = "linux")]
#[test]
fn an_allowed_record_fails_with_the_queued_lines_it_writes() {
    let trail = full_disk();
    trail.record_later(small(false, "refused")).unwrap();
    let error = trail.record(&small(true, "allowed")).unwrap_err();
    // Written here, or by the writer thread first if this thread stalled past the delay:
    // either way the allowed call is refused.
    assert!(
        matches!(
            error,
            AuditError::Io {
                action: "cannot write",
                ..
            } | AuditError::Poisoned { .. }
        ),
        "{error}"
    );
    let error = trail.record_later(small(false, "refused")).unwrap_err();
    assert!(matches!(error, AuditError::Poisoned { .. }), "{error}");
}
