//! Who asks for a call: the thing a grant is pinned to.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Who is asking: the thing a grant is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    /// A wasm component: its name and the SHA-256 (hex) of its bytes.
    Plugin {
        /// Plugin name as the policy's `plugin = "…"` gives it.
        name: String,
        /// SHA-256 of the component, lowercase hex.
        sha256: String,
    },
    /// A Rhai script: a file (path and hash) or an inline one-liner (hash only).
    Script {
        /// The script file, or `None` for an inline script.
        path: Option<PathBuf>,
        /// SHA-256 of the script's source, lowercase hex.
        sha256: String,
    },
    /// A script a person typed, run under an ad hoc grant (`script_inline = "any"`) because of
    /// who they are, not what the text hashes to. Its text goes into the audit trail whole.
    #[serde(rename = "ad-hoc")]
    AdHoc {
        /// Who typed it, as a grant's `principal = "…"` names them (`operator` on the CLI).
        principal: String,
        /// SHA-256 of the text, lowercase hex.
        sha256: String,
        /// The text (or, for an interactive session, empty: each line is recorded as it runs).
        #[serde(skip)]
        source: Arc<str>,
    },
}

impl Principal {
    /// A plugin principal from its component bytes.
    pub fn plugin(name: impl Into<String>, component: &[u8]) -> Self {
        Principal::Plugin {
            name: name.into(),
            sha256: sha256_hex(component),
        }
    }

    /// A script-file principal from its path and source.
    pub fn script_file(path: impl Into<PathBuf>, source: &[u8]) -> Self {
        Principal::Script {
            path: Some(path.into()),
            sha256: sha256_hex(source),
        }
    }

    /// An inline-script principal from its source (what `script_inline_sha256` pins).
    pub fn inline_script(source: &str) -> Self {
        Principal::Script {
            path: None,
            sha256: sha256_hex(source.as_bytes()),
        }
    }

    /// An ad hoc script `principal` typed (what a `script_inline = "any"` grant admits).
    pub fn ad_hoc(principal: impl Into<String>, source: &str) -> Self {
        Principal::AdHoc {
            principal: principal.into(),
            sha256: sha256_hex(source.as_bytes()),
            source: source.into(),
        }
    }

    /// The pinned hash (for an ad hoc script, its text's hash).
    pub fn sha256(&self) -> &str {
        match self {
            Principal::Plugin { sha256, .. }
            | Principal::Script { sha256, .. }
            | Principal::AdHoc { sha256, .. } => sha256,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Plugin { name, sha256 } => write!(f, "plugin {name} (sha256 {sha256})"),
            Principal::Script {
                path: Some(p),
                sha256,
            } => {
                write!(f, "script {} (sha256 {sha256})", p.display())
            }
            Principal::Script { path: None, sha256 } => {
                write!(f, "inline script (sha256 {sha256})")
            }
            Principal::AdHoc {
                principal, sha256, ..
            } => write!(f, "ad hoc script by {principal} (sha256 {sha256})"),
        }
    }
}

/// The SHA-256 of `bytes` as lowercase hex (how components and scripts are pinned).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}
