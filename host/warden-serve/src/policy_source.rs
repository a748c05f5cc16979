//! The policy as it is on disk now: read again whenever the file changes, so an operator's
//! edit (a task removed, a delegate taken off) wins over what was true when a run was asked
//! for. A file that no longer loads is an error, never the old policy (fail closed).
//!
//! A change is told by the SHA-256 of the file's bytes, read on every call: a time stamp and a
//! length miss an edit made within the file system's time granularity that keeps the length,
//! and reading and hashing a policy (a few kilobytes, in the page cache) costs microseconds.
//! Parsing happens outside any lock: requests never wait for another request's reload.
//!
//! A file whose length or modification time moves while it is read is read again, then
//! refused: the operator writes the policy by an atomic rename, never in place.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use warden_policy::{MAX_POLICY_BYTES, Policy};

/// The policy file and its last loaded state.
#[derive(Debug)]
pub struct PolicySource {
    path: PathBuf,
    /// The SHA-256 (hex) of the bytes the policy was parsed from, and the policy. Locked only
    /// to read or replace it.
    cached: Mutex<Option<(String, Arc<Policy>)>>,
}

impl PolicySource {
    /// The policy at `path` (loaded now, so a bad file stops the start).
    pub fn open(path: &Path) -> Result<Self, String> {
        let source = Self {
            path: path.to_owned(),
            cached: Mutex::new(None),
        };
        source.current()?;
        Ok(source)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy as the file says now.
    pub fn current(&self) -> Result<Arc<Policy>, String> {
        let bytes = self.read()?;
        let digest = warden_policy::sha256_hex(&bytes);
        if let Some((at, policy)) = self.cache().as_ref()
            && *at == digest
        {
            return Ok(policy.clone());
        }
        let parsed = String::from_utf8(bytes)
            .map_err(|_| format!("{}: not UTF-8 text", self.path.display()))
            .and_then(|text| Policy::parse(&text, &self.path).map_err(|e| e.to_string()));
        match parsed {
            Ok(policy) => {
                let policy = Arc::new(policy);
                *self.cache() = Some((digest, policy.clone()));
                Ok(policy)
            }
            Err(error) => {
                // A failed load forgets the old policy: nothing runs under rules the file no
                // longer has.
                *self.cache() = None;
                Err(error)
            }
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<(String, Arc<Policy>)>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file's bytes, at most [`MAX_POLICY_BYTES`] (as [`Policy::load`] reads it), read
    /// while it did not change: a file being written in place (its length or modification
    /// time moving during the read) is read again, and refused after [`READ_ATTEMPTS`].
    fn read(&self) -> Result<Vec<u8>, String> {
        let cannot = |e: std::io::Error| format!("{}: cannot be read: {e}", self.path.display());
        for _ in 0..READ_ATTEMPTS {
            let mut file = std::fs::File::open(&self.path).map_err(cannot)?;
            let before = Written::of(&file.metadata().map_err(cannot)?);
            let mut bytes = Vec::new();
            (&mut file)
                .take(MAX_POLICY_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(cannot)?;
            if bytes.len() as u64 > MAX_POLICY_BYTES {
                return Err(format!(
                    "{}: the policy is larger than {MAX_POLICY_BYTES} bytes",
                    self.path.display()
                ));
            }
            let after = Written::of(&file.metadata().map_err(cannot)?);
            if before == after && after.length == bytes.len() as u64 {
                return Ok(bytes);
            }
        }
        Err(format!(
            "{}: changed while being read, {READ_ATTEMPTS} times\n  fix: write the policy to another file and rename it over this one (an atomic replace)",
            self.path.display()
        ))
    }
}

/// How many times a policy that changes while being read is read before it is refused.
const READ_ATTEMPTS: usize = 3;

/// What tells that a file was written to between two looks.
#[derive(Debug, PartialEq, Eq)]
struct Written {
    length: u64,
    modified: Option<std::time::SystemTime>,
}

impl Written {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            length: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "version = 1\n";

    #[test]
    fn an_edit_with_the_same_length_and_time_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, format!("{POLICY}# aaaa\n")).unwrap();
        let source = PolicySource::open(&path).unwrap();
        let first = source.current().unwrap();
        let stamp = std::fs::metadata(&path).unwrap().modified().unwrap();
        // Same length, same modification time, other bytes: not valid TOML any more.
        std::fs::write(&path, format!("{POLICY}x=[111\n")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(stamp)
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), stamp);
        assert!(source.current().is_err(), "the edit was missed");
        std::fs::write(&path, format!("{POLICY}# bbbb\n")).unwrap();
        let again = source.current().unwrap();
        assert!(!Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(&again, &source.current().unwrap()), "cached");
    }
}
