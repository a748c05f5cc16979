//! Whether the audit trail verifies, as the audit page shows it, without reading the whole
//! trail on every request: the last verification is kept with the file's identity (device,
//! inode), length and change times, and
//!
//! - nothing changed: the kept answer (a flood of requests reads nothing);
//! - the file grew and had verified: only the appended lines are read
//!   ([`warden_audit::verify_from`], which first checks that the last verified line is still
//!   there, whole and unchanged), and the first line and [`SPOT_CHECKS`] lines at random
//!   offsets are checked against the chain ([`warden_audit::spot_check`]); one that fails
//!   makes it a full verification;
//! - anything else (another file, shorter, rewritten in place at the same length, broken
//!   before), and at least every [`FULL_EVERY`]: the whole file is verified again, also by a
//!   timer ([`TrailStatus::verify_in_full`], which the service runs every [`FULL_EVERY`]),
//!   whether or not anyone asks.
//!
//! Fail closed: an edit in place changes the change time (`ctime`, which no one can set back),
//! so it is verified in full at the next request. An edit followed by an append is seen at the
//! next request when it touched a sampled line, else by the next full verification, at most
//! [`FULL_EVERY`] later; so is an edit within the time stamps' granularity (a few
//! milliseconds) of the last change the kept verification saw.
//!
//! The kept verification belongs to the file (a trail is written by one process: it is locked),
//! so it is kept per trail and key path for the whole process.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use warden_audit::{AuditKey, Verified, VerifyReport};

/// The longest a verification covers only appended lines before the whole trail is verified
/// again.
pub const FULL_EVERY: Duration = Duration::from_secs(60);

/// Lines at random offsets checked, besides the first, when only appended lines are verified.
pub const SPOT_CHECKS: usize = 4;

/// What tells a changed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    length: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            length: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    fn same_file(&self, other: &Stamp) -> bool {
        self.device == other.device && self.inode == other.inode
    }
}

#[derive(Debug)]
struct Kept {
    key: Arc<AuditKey>,
    stamp: Stamp,
    report: VerifyReport,
    /// How far it verified (`None`: broken).
    verified: Option<Verified>,
    full_at: Instant,
}

/// One trail's kept verification.
#[derive(Debug)]
pub struct TrailStatus {
    trail: PathBuf,
    key_path: PathBuf,
    kept: tokio::sync::Mutex<Option<Kept>>,
    /// Lines read by verifications so far (for tests and the operator's debug log).
    lines_read: AtomicU64,
}

/// Why the trail's status cannot be told.
#[derive(Debug, thiserror::Error)]
pub enum TrailStatusError {
    /// The trail or its key cannot be read.
    #[error("the audit trail or its key cannot be read: {0}")]
    Audit(#[from] warden_audit::AuditError),
    /// The trail's file cannot be looked at.
    #[error("{}: {source}", path.display())]
    Stat {
        /// The trail.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The verification did not finish.
    #[error("the verification stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl TrailStatus {
    /// The kept verification of `trail` under the key at `key_path`, shared in this process.
    pub fn of(trail: &Path, key_path: &Path) -> Arc<TrailStatus> {
        /// By (trail, key file).
        type ByPaths = HashMap<(PathBuf, PathBuf), Arc<TrailStatus>>;
        static ALL: LazyLock<Mutex<ByPaths>> = LazyLock::new(Mutex::default);
        ALL.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((trail.to_owned(), key_path.to_owned()))
            .or_insert_with(|| {
                Arc::new(TrailStatus {
                    trail: trail.to_owned(),
                    key_path: key_path.to_owned(),
                    kept: tokio::sync::Mutex::new(None),
                    lines_read: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Lines its verifications have read so far.
    pub fn lines_read(&self) -> u64 {
        self.lines_read.load(Ordering::Relaxed)
    }

    /// Whether the trail verifies now. One verification at a time: concurrent requests wait
    /// for it and take its answer.
    pub async fn report(&self) -> Result<VerifyReport, TrailStatusError> {
        self.check(false).await
    }

    /// Verifies the whole trail now and keeps the answer (the service's timer, so that an
    /// edit the sampled checks missed is seen within [`FULL_EVERY`] even without requests).
    pub async fn verify_in_full(&self) -> Result<VerifyReport, TrailStatusError> {
        self.check(true).await
    }

    async fn check(&self, in_full: bool) -> Result<VerifyReport, TrailStatusError> {
        let mut kept = self.kept.lock().await;
        let stamp = std::fs::metadata(&self.trail)
            .map(|m| Stamp::of(&m))
            .map_err(|source| TrailStatusError::Stat {
                path: self.trail.clone(),
                source,
            })?;
        let now = Instant::now();
        let recent = |k: &Kept| !in_full && now.duration_since(k.full_at) < FULL_EVERY;
        if let Some(k) = kept.as_ref().filter(|k| k.stamp == stamp && recent(k)) {
            return Ok(k.report.clone());
        }
        let from = kept
            .as_ref()
            .filter(|k| recent(k) && k.stamp.same_file(&stamp) && stamp.length > k.stamp.length)
            .and_then(|k| k.verified.clone());
        let key = match kept.as_ref() {
            Some(k) => k.key.clone(),
            None => Arc::new(AuditKey::load(&self.key_path)?),
        };
        let (path, key_for_task) = (self.trail.clone(), key.clone());
        let (report, verified, from) = tokio::task::spawn_blocking(move || {
            // Appended lines only, if the sampled earlier lines still verify.
            let from = match from {
                Some(f)
                    if warden_audit::spot_check(&path, &key_for_task, &spot_offsets(f.bytes))? =>
                {
                    Some(f)
                }
                _ => None,
            };
            warden_audit::verify_from(&path, &key_for_task, from.as_ref())
                .map(|(report, verified)| (report, verified, from))
        })
        .await??;
        let report = unterminated_is_pending(report);
        let before = from.as_ref().map_or(0, |f| f.lines);
        self.lines_read
            .fetch_add(report.lines.saturating_sub(before), Ordering::Relaxed);
        let full_at = match (from, kept.as_ref()) {
            (Some(_), Some(k)) => k.full_at,
            _ => now,
        };
        *kept = Some(Kept {
            key,
            stamp,
            report: report.clone(),
            verified,
            full_at,
        });
        Ok(report)
    }
}

/// A live trail is read while the writer appends a batch, which a multi-page `write` grows
/// page by page: an unterminated last line is pending, not broken. Nothing is lost by it (a cut
/// at a line's end is as invisible to a verifier), and the next change of the file is
/// verified from its start again (no verified end is kept).
fn unterminated_is_pending(report: VerifyReport) -> VerifyReport {
    match &report.first_broken {
        Some((n, why)) if why == warden_audit::INCOMPLETE_LAST_LINE => VerifyReport {
            lines: n - 1,
            first_broken: None,
        },
        _ => report,
    }
}

/// The first line's offset and [`SPOT_CHECKS`] random ones within the verified `bytes`.
fn spot_offsets(bytes: u64) -> Vec<u64> {
    std::iter::once(0)
        .chain((0..SPOT_CHECKS).map(|_| rand::random_range(0..bytes.max(1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_audit::{AuditTrail, Event};
    use warden_policy::{Decision, Principal};

    fn record(trail: &AuditTrail, reason: &str) {
        let decision = Decision {
            allowed: false,
            rule: "test".into(),
            reason: reason.into(),
            cmdlet: "(test)".into(),
            parameters: Default::default(),
            sensitive: Vec::new(),
            write: false,
        };
        trail
            .record(&Event::decision(
                "run",
                &Principal::ad_hoc("user:test", ""),
                &decision,
            ))
            .unwrap();
    }

    #[tokio::test]
    async fn a_line_being_appended_is_pending_and_a_bad_one_is_broken_once_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key_path) = (dir.path().join("audit.jsonl"), dir.path().join("audit.key"));
        let trail = AuditTrail::open(&path, AuditKey::load_or_create(&key_path).unwrap()).unwrap();
        record(&trail, "line 1");
        record(&trail, "line 2");
        let append = |bytes: &str| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(bytes.as_bytes()).unwrap();
        };
        // A batch's first page is in the file, the rest not yet.
        append("{\"seq\":3,\"prev\":");
        let status = TrailStatus::of(&path, &key_path);
        let report = status.report().await.unwrap();
        assert!(report.ok() && report.lines == 2, "{report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        append("\"not a mac\"}\n");
        let report = status.report().await.unwrap();
        assert_eq!(
            report.first_broken.as_ref().map(|(n, _)| *n),
            Some(3),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn reads_only_what_was_appended_and_sees_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key_path) = (dir.path().join("audit.jsonl"), dir.path().join("audit.key"));
        let trail = AuditTrail::open(&path, AuditKey::load_or_create(&key_path).unwrap()).unwrap();
        for n in 0..20 {
            record(&trail, &format!("line {n:04}"));
        }
        let status = TrailStatus::of(&path, &key_path);
        assert!(Arc::ptr_eq(&status, &TrailStatus::of(&path, &key_path)));
        for _ in 0..50 {
            let report = status.report().await.unwrap();
            assert!(report.ok() && report.lines == 20, "{report:?}");
        }
        assert_eq!(status.lines_read(), 20, "a flood reads the trail once");
        record(&trail, "line 0020");
        assert_eq!(status.report().await.unwrap().lines, 21);
        assert_eq!(status.lines_read(), 21, "only the appended line is read");

        // An edit in place, the length kept: seen at the next request (after the time
        // stamps' granularity, a few milliseconds).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("line 0003", "line 0004", 1)).unwrap();
        let report = status.report().await.unwrap();
        assert_eq!(
            report.first_broken.as_ref().map(|(n, _)| *n),
            Some(4),
            "{report:?}"
        );
        assert_eq!(status.report().await.unwrap(), report, "and stays broken");
        // Put back, it verifies again, in full.
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(&path, &text).unwrap();
        assert!(status.report().await.unwrap().ok());
        assert_eq!(status.lines_read(), 21 + 4 + 21);
    }

    #[tokio::test]
    async fn an_edit_followed_by_an_append_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key_path) = (dir.path().join("audit.jsonl"), dir.path().join("audit.key"));
        let trail = AuditTrail::open(&path, AuditKey::load_or_create(&key_path).unwrap()).unwrap();
        for n in 0..20 {
            record(&trail, &format!("line {n:04}"));
        }
        let status = TrailStatus::of(&path, &key_path);
        assert!(status.report().await.unwrap().ok());
        // The first line edited (same length), then a line appended: sampled, so seen at once.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("line 0000", "line 9999", 1)).unwrap();
        record(&trail, "line 0020");
        let report = status.report().await.unwrap();
        assert_eq!(
            report.first_broken.as_ref().map(|(n, _)| *n),
            Some(1),
            "{report:?}"
        );
        // Put back and grown again; a middle line edited, then an append: the timer's full
        // verification sees it whatever the sample was.
        std::fs::write(&path, &text).unwrap();
        drop(trail);
        let trail = AuditTrail::open(&path, AuditKey::load(&key_path).unwrap()).unwrap();
        record(&trail, "line 0021");
        assert!(status.report().await.unwrap().ok());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("line 0011", "line 0012", 1)).unwrap();
        record(&trail, "line 0022");
        let _sampled_or_not = status.report().await.unwrap();
        let report = status.verify_in_full().await.unwrap();
        assert_eq!(
            report.first_broken.as_ref().map(|(n, _)| *n),
            Some(12),
            "{report:?}"
        );
        assert_eq!(status.report().await.unwrap(), report, "kept");
    }
}
