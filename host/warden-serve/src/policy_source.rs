//! The policy as it is on disk now: read again whenever the file changes, so an operator's
//! edit (a task removed, a delegate taken off) wins over what was true when a run was asked
//! for. A file that no longer loads is an error, never the old policy (fail closed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use warden_policy::Policy;

/// The policy file and its last loaded state.
#[derive(Debug)]
pub struct PolicySource {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, Arc<Policy>)>>,
}

/// What tells a changed file: modification time and length.
type Stamp = (SystemTime, u64);

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
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .map_err(|e| format!("{}: cannot be read: {e}", self.path.display()))?;
        let mut cached = self.cached.lock().expect("policy cache lock");
        if let Some((at, policy)) = cached.as_ref()
            && *at == stamp
        {
            return Ok(policy.clone());
        }
        // A failed load forgets the old policy: nothing runs under rules the file no longer has.
        *cached = None;
        let policy = Arc::new(Policy::load(&self.path).map_err(|e| e.to_string())?);
        *cached = Some((stamp, policy.clone()));
        Ok(policy)
    }
}
