//! The on-disk cache of compiled components: `<component sha256>-<engine hash>.cwasm` in a
//! host-owned directory. Compiled code is native code run inside the process that holds the
//! credential, so the cache is inside the trust boundary: each file starts with an HMAC-SHA256
//! tag, under a per-install cache key, of (component sha256, engine hash, compiled bytes).
//!
//! What it refuses: a cache directory or key file that someone else owns or that group or
//! others can write (the key also must not be readable by them) — an error, not a warning;
//! loading compiled code from anywhere but the cache directory; and running a file whose tag
//! does not verify for the component asked for (code compiled from another component, or by
//! another install, put under this one's name is recompiled and overwritten, with a warning).
//! The bytes are read once, the tag checked on those bytes and those same bytes deserialized,
//! so nothing can swap the file between the check and the load. The key and cached files are
//! opened without following symlinks and read only when they are regular files of bounded
//! size. Files are written under a temporary name and renamed, never left half-written. A
//! cache that cannot be written costs speed, never a run: errors writing are warnings.

use super::inspect::hex;
use crate::RuntimeError;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;
use zeroize::Zeroizing;

/// Bytes of the tag at the start of each cached file.
const TAG_BYTES: usize = 32;
/// Domain separation: this key tags nothing else.
const TAG_CONTEXT: &[u8] = b"warden compiled component v1\0";

/// A cache directory bound to one engine configuration and one install's key.
#[derive(Debug)]
pub(crate) struct CodeCache {
    dir: PathBuf,
    /// Hex of the engine's precompile-compatibility hash: code compiled by another wasmtime
    /// version or configuration gets another file name.
    engine_hash: String,
    key: CacheKey,
}

/// The per-install key the cache's tags are made with: 32 random bytes in a 0600 file (64 hex
/// digits). Never printed; zeroized on drop.
struct CacheKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey([redacted])")
    }
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

fn setup_error(what: &Path, problem: impl std::fmt::Display, fix: &str) -> RuntimeError {
    RuntimeError::Setup(format!(
        "compiled-code cache {}: {problem}\n  fix: {fix}",
        what.display()
    ))
}

/// Refuses a file or directory that someone else owns or that group or others may write
/// (`private`: or read, for the key). Whoever can write there could run code inside warden.
fn check_ours(path: &Path, meta: &std::fs::Metadata, private: bool) -> Result<(), RuntimeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let mode = meta.mode() & 0o777;
        let forbidden = if private { 0o077 } else { 0o022 };
        if mode & forbidden != 0 {
            let who = if private {
                "readable or writable by group or others"
            } else {
                "writable by group or others"
            };
            let fix = if private { "chmod 600" } else { "chmod 700" };
            return Err(setup_error(
                path,
                format_args!(
                    "is {who} (mode {mode:o}), so someone else could put code there that warden would run"
                ),
                &format!("run `{fix} {}`, or pass --no-cache", path.display()),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(setup_error(
                path,
                format_args!(
                    "is owned by uid {}, not by this user (uid {me}), so its owner could put code there that warden would run",
                    meta.uid()
                ),
                "use a cache directory of your own (--cache-dir or WARDEN_CACHE_DIR), or pass --no-cache",
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta, private);
    Ok(())
}

/// Bytes of the largest cached file read; a larger one is recompiled and overwritten.
const MAX_CACHED_BYTES: u64 = 512 * 1024 * 1024;

/// Opens `path` to read, refusing a symlink (never followed), anything but a regular file
/// (a FIFO is not waited on), and a file over `max` bytes.
fn open_regular(path: &Path, max: u64) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        let flags = (OFlags::NOFOLLOW | OFlags::NONBLOCK).bits();
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            i32::try_from(flags).unwrap_or(0),
        );
    }
    let file = options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return std::io::Error::other("it is a symbolic link, which is never followed");
        }
        e
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::other(format!(
            "it is {} bytes, over the {max}-byte limit",
            meta.len()
        )));
    }
    Ok((file, meta))
}

/// Refuses a key directory group or others can write (they could swap the key): owned by
/// this user or root.
fn check_parent(dir: &Path, meta: &std::fs::Metadata) -> Result<(), RuntimeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if meta.uid() != 0 {
            return check_ours(dir, meta, false);
        }
        if meta.mode() & 0o022 != 0 {
            return Err(setup_error(
                dir,
                format_args!(
                    "is writable by group or others (mode {:o}), so someone else could replace the cache key in it",
                    meta.mode() & 0o777
                ),
                "keep the cache key (--cache-key) in a directory of your own",
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, meta);
    Ok(())
}

impl CacheKey {
    /// Reads the key file, or creates it (0600, with a 0700 parent) when it does not exist.
    /// A new key is written to a temporary file and linked into place, so a concurrent process
    /// never reads a half-written key; the process that loses the race reads the winner's.
    fn load_or_create(path: &Path) -> Result<Self, RuntimeError> {
        let fix = "remove the file (a new key only costs one recompile per plugin)";
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(parent)?;
        let parent_meta = std::fs::metadata(parent).map_err(|e| {
            setup_error(
                parent,
                format_args!("cannot read it: {e}"),
                "check the path",
            )
        })?;
        check_parent(parent, &parent_meta)?;
        if std::fs::symlink_metadata(path).is_err() {
            let key = Zeroizing::new(rand::random::<[u8; 32]>());
            let text = Zeroizing::new(format!("{}\n", hex(&key[..])));
            // tempfile creates it 0600 beside the key; `persist_noclobber` links it into
            // place and fails if the name exists.
            let written = tempfile::NamedTempFile::new_in(parent).and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.as_file().sync_all()?;
                Ok(file)
            });
            let file = written.map_err(|e| {
                setup_error(
                    path,
                    format_args!("cannot create the cache key: {e}"),
                    "check the permissions of its directory, or pass --no-cache",
                )
            })?;
            match file.persist_noclobber(path) {
                Ok(_) => return Ok(CacheKey(key)),
                // Another process made it first: read theirs.
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(setup_error(
                        path,
                        format_args!("cannot create the cache key: {}", e.error),
                        "check the permissions of its directory, or pass --no-cache",
                    ));
                }
            }
        }
        let (mut file, meta) = open_regular(path, 200)
            .map_err(|e| setup_error(path, format_args!("cannot open the cache key: {e}"), fix))?;
        check_ours(path, &meta, true)?;
        let mut text = Zeroizing::new(String::new());
        std::io::Read::by_ref(&mut file)
            .take(201)
            .read_to_string(&mut text)
            .map_err(|e| setup_error(path, format_args!("cannot read the cache key: {e}"), fix))?;
        let digits = text.trim().as_bytes();
        let mut key = Zeroizing::new([0u8; 32]);
        let valid = digits.len() == 64
            && digits.chunks(2).zip(key.iter_mut()).all(|(pair, byte)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .map(|b| *byte = b)
                    .is_some()
            });
        if !valid {
            return Err(setup_error(path, "the cache key is not 64 hex digits", fix));
        }
        Ok(CacheKey(key))
    }

    /// The tag binding `code` to the component `sha256` and the engine `engine_hash`.
    fn mac(&self, sha256: &str, engine_hash: &str, code: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..])
            .expect("HMAC takes any key length");
        for part in [
            TAG_CONTEXT,
            sha256.as_bytes(),
            b"\0",
            engine_hash.as_bytes(),
            b"\0",
        ] {
            mac.update(part);
        }
        mac.update(code);
        mac
    }
}

/// Creates a directory (and parents) 0700 if missing.
fn create_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        setup_error(
            dir,
            format_args!("cannot create it: {e}"),
            "check the path, or pass --no-cache",
        )
    })
}

impl CodeCache {
    /// Opens (creating it 0700 if missing) the cache directory, and the key at `key_path`
    /// (creating it 0600 if missing). Refuses either when it is not private to this user.
    pub(crate) fn open(
        dir: PathBuf,
        key_path: &Path,
        engine: &Engine,
    ) -> Result<Self, RuntimeError> {
        create_private_dir(&dir)?;
        let meta = std::fs::metadata(&dir).map_err(|e| {
            setup_error(&dir, format_args!("cannot read it: {e}"), "check the path")
        })?;
        if !meta.is_dir() {
            return Err(setup_error(
                &dir,
                "is not a directory",
                "pass a directory with --cache-dir, or --no-cache",
            ));
        }
        check_ours(&dir, &meta, false)?;
        let key = CacheKey::load_or_create(key_path)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex(&hasher.0.finalize()[..16]);
        Ok(Self {
            dir,
            engine_hash,
            key,
        })
    }

    fn path_for(&self, component_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{component_sha256}-{}.cwasm", self.engine_hash))
    }

    /// The compiled component for `sha256`, if an entry tagged for it under this install's
    /// key is cached.
    pub(crate) fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path_for(sha256);
        // One read: the bytes checked are the bytes loaded.
        let read = open_regular(&path, MAX_CACHED_BYTES).and_then(|(file, meta)| {
            let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.take(MAX_CACHED_BYTES).read_to_end(&mut bytes)?;
            Ok(bytes)
        });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read cached code; recompiling");
                }
                return None;
            }
        };
        let Some((tag, code)) = bytes.split_at_checked(TAG_BYTES) else {
            tracing::warn!(file = %path.display(), "cached code is truncated; recompiling and overwriting it");
            return None;
        };
        if self
            .key
            .mac(sha256, &self.engine_hash, code)
            .verify_slice(tag)
            .is_err()
        {
            tracing::warn!(
                file = %path.display(),
                "cached code is not tagged for this component under this install's cache key (swapped, corrupted, or written by another install); recompiling and overwriting it"
            );
            return None;
        }
        #[allow(
            unsafe_code,
            reason = "the one place compiled code is loaded: bytes from our own cache directory whose tag under our key was just verified"
        )]
        // SAFETY: `deserialize` trusts its input to be code this wasmtime compiled. These are
        // the very bytes whose HMAC, under this install's private key, binds them to this
        // component's sha256 and this engine's compatibility hash; only `put` below makes such
        // tags, from `Component::serialize` of this component. Another wasmtime version's
        // code is refused by wasmtime itself.
        let loaded = unsafe { Component::deserialize(engine, code) };
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
        let path = self.path_for(sha256);
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|code| {
                let tag = self
                    .key
                    .mac(sha256, &self.engine_hash, &code)
                    .finalize()
                    .into_bytes();
                let mut bytes = Vec::with_capacity(TAG_BYTES + code.len());
                bytes.extend_from_slice(&tag);
                bytes.extend_from_slice(&code);
                write_atomically(&self.dir, &path, &bytes)
            });
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the compiled-code cache");
        }
        // The digest sidecar of earlier versions means nothing now.
        let mut sidecar = path.into_os_string();
        sidecar.push(".sha256");
        let _ = std::fs::remove_file(sidecar);
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // tempfile creates it 0600 in the same directory, so the rename is atomic.
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
