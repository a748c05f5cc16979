//! The library's error type: what can go wrong while loading a tenants file or starting the
//! emulator.
//!
//! Request-time failures are not errors of this kind: the emulator answers them on the wire, in
//! the documented Entra error shape (see [`crate::identity`]). Nothing here carries a secret.

use std::path::PathBuf;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a tenants file could not be loaded or the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenants file could not be read.
    #[error("cannot read tenants file {}: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The tenants file is not valid TOML for [`crate::TenantsConfig`].
    #[error("invalid tenants file {}: {reason}", path.display())]
    ParseConfig {
        /// The file (`<inline>` when parsed from a string).
        path: PathBuf,
        /// What the parser said, including the line and column.
        reason: String,
    },

    /// The tenants configuration parsed, but says something impossible (a duplicate client id,
    /// a malformed GUID, an unreadable certificate file, ...).
    #[error("invalid tenants configuration{}: {reason}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    InvalidConfig {
        /// The file, when the configuration came from one.
        path: Option<PathBuf>,
        /// What is wrong, naming the tenant and app.
        reason: String,
    },

    /// A file in the state directory could not be written (or a configured file read).
    #[error("cannot {action} {}: {source}", path.display())]
    StateFile {
        /// What we were doing ("write", "create directory", "read certificate").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// Generating or encoding a key, certificate or PFX failed.
    #[error("cannot generate {what}: {reason}")]
    Crypto {
        /// Which artefact ("test CA", "app certificate for 'x'", ...).
        what: String,
        /// The underlying error, as text (the crates involved have unrelated error types).
        reason: String,
    },

    /// The TLS server configuration was refused by rustls.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),

    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The ready file could not be written.
    #[error("cannot write ready file {}: {source}", path.display())]
    ReadyFile {
        /// The ready file.
        path: PathBuf,
        /// The I/O or encoding error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn crypto(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Crypto {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn state(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::StateFile {
            action,
            path: path.into(),
            source,
        }
    }
}
