//! The on-disk cache of compiled components: `<component sha256>-<engine hash>.cwasm` in a
//! host-owned directory, each with a `.sha256` sidecar of the compiled bytes.
//!
//! What it refuses: loading compiled code from anywhere but the cache directory, loading a
//! file whose bytes do not match its sidecar (it recompiles and overwrites instead, with a
//! warning), and ever leaving a half-written file under a final name (temp file + rename).
//! A cache that cannot be written costs speed, never a run: errors there are warnings.

use super::inspect::hex;
use crate::RuntimeError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A cache directory bound to one engine configuration.
#[derive(Debug)]
pub(crate) struct CodeCache {
    dir: PathBuf,
    /// Hex of the engine's precompile-compatibility hash: code compiled by another wasmtime
    /// version or configuration gets another file name.
    engine_hash: String,
}

/// Feeds `Hash` output into SHA-256 so the key is stable across Rust releases (the std
/// hashers promise no such thing).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Unused: the key is the full digest.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CodeCache {
    /// Opens (creating it 0700 if missing) the cache directory.
    pub(crate) fn open(dir: PathBuf, engine: &Engine) -> Result<Self, RuntimeError> {
        let setup = |e: std::io::Error| {
            RuntimeError::Setup(format!("compiled-code cache {}: {e}", dir.display()))
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(setup)?;
        let meta = std::fs::metadata(&dir).map_err(setup)?;
        if !meta.is_dir() {
            return Err(RuntimeError::Setup(format!(
                "compiled-code cache {} is not a directory",
                dir.display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o022 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    "the compiled-code cache is writable by others; anyone who can write there can run code in warden"
                );
            }
        }
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex(&hasher.0.finalize()[..16]);
        Ok(Self { dir, engine_hash })
    }

    fn path_for(&self, component_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{component_sha256}-{}.cwasm", self.engine_hash))
    }

    /// The compiled component for `sha256`, if a sound entry is cached.
    pub(crate) fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path_for(sha256);
        let sidecar = sidecar_of(&path);
        let expected = match std::fs::read_to_string(&sidecar) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %sidecar.display(), error = %e, "cannot read a cache sidecar; recompiling");
                return None;
            }
        };
        let actual = match std::fs::read(&path) {
            Ok(bytes) => hex(&Sha256::digest(&bytes)),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read cached code; recompiling");
                }
                return None;
            }
        };
        if actual != expected {
            tracing::warn!(file = %path.display(), "cached code does not match its .sha256; recompiling and overwriting it");
            return None;
        }
        #[allow(
            unsafe_code,
            reason = "the one place compiled code is loaded: from our own cache directory, after checking its hash"
        )]
        // SAFETY: `deserialize_file` trusts its input to be code this wasmtime compiled. The
        // file is in the host-owned (0700) cache directory, was written by `put` below from
        // `Component::serialize`, carries this engine's compatibility hash in its name, and its
        // bytes were just checked against the sidecar written with it. Another wasmtime
        // version's file is refused by wasmtime itself.
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cached code does not load; recompiling");
                None
            }
        }
    }

    /// Stores `component` for `sha256`. Failures are warnings: the run goes on uncached.
    pub(crate) fn put(&self, sha256: &str, component: &Component) {
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| {
                let path = self.path_for(sha256);
                write_atomically(&self.dir, &path, &bytes)?;
                let digest = hex(&Sha256::digest(&bytes));
                write_atomically(
                    &self.dir,
                    &sidecar_of(&path),
                    format!("{digest}\n").as_bytes(),
                )
            });
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the compiled-code cache");
        }
    }
}

fn sidecar_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // tempfile creates it 0600 in the same directory, so the rename is atomic.
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
