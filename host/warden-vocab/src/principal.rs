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
        /// What checking its signature against the policy's trusted keys found, with the
        /// version its manifest states; `None` when it was not checked (the policy trusts no
        /// key).
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<PluginSignature>,
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
    /// A plugin principal from its component bytes (signature not checked).
    pub fn plugin(name: impl Into<String>, component: &[u8]) -> Self {
        Principal::Plugin {
            name: name.into(),
            sha256: sha256_hex(component),
            signature: None,
        }
    }

    /// The id of the key a plugin verified under, if it did: the first of its verifying keys
    /// (the one its policy counts, put first when the principal is made under the policy).
    pub fn signer(&self) -> Option<&str> {
        match self {
            Principal::Plugin {
                signature:
                    Some(PluginSignature {
                        verdict: SignatureVerdict::Verified { key_ids },
                        ..
                    }),
                ..
            } => key_ids.first().map(String::as_str),
            _ => None,
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
            Principal::Plugin { name, sha256, .. } => {
                write!(f, "plugin {name} (sha256 {sha256}")?;
                match self.signer() {
                    Some(key_id) => write!(f, ", signed by key {key_id})"),
                    None => write!(f, ")"),
                }
            }
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

/// A plugin's signature as warden checked it, and its manifest's version (what a grant's
/// `min_version` compares: a version is only worth comparing on a signed build).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginSignature {
    /// What the check found.
    pub verdict: SignatureVerdict,
    /// The version its manifest states, if any.
    pub version: Option<String>,
    /// Whether its name comes from its manifest (inside the bytes the signature covers), not
    /// from its file name, which anyone can change: a `signed_by` grant needs this.
    pub name_signed: bool,
}

/// What checking a component's signature against a set of trusted keys found. Key ids are
/// lowercase hex (see warden-signature).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SignatureVerdict {
    /// It carries no signature.
    Unsigned,
    /// It verifies under each of these trusted keys (a component may carry signatures by
    /// several, e.g. a publisher's old and new key); which one counts is the policy's choice.
    Verified {
        /// The keys' ids, the one the policy counts first (see [`Principal::signer`]).
        key_ids: Vec<String>,
    },
    /// It is signed, but by none of the trusted keys.
    OtherKey {
        /// The key ids its signature names.
        key_ids: Vec<String>,
    },
    /// A signature names a trusted key but does not match its bytes: changed after signing.
    Tampered {
        /// The trusted key the signature names.
        key_id: String,
    },
    /// Its signature cannot be read (malformed, split, several, too large).
    Invalid {
        /// Why.
        reason: String,
    },
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
