//! # warden-signature: who signed a plugin component
//!
//! Signs and verifies components in the WebAssembly tool-conventions signature format (the
//! `wasmsign2` crate: Ed25519 over the SHA-256 of the component's sections, in a custom
//! section named `signature` placed first, or kept apart as a detached signature). Offline.
//!
//! What a verification says ([`Verdict`]): the component is unsigned; it verifies under one of
//! the given keys (and which: its [`KeyId`]); it carries a signature by a key not among them;
//! or it carries a signature made with one of them that no longer matches its bytes (it was
//! changed after signing). What it refuses outright ([`SignatureError`]), before any hashing:
//! a file that is not a component or module, a section longer than what follows it, a
//! signature section larger than [`MAX_SIGNATURE_BYTES`], a signature whose inner lengths
//! or counts exceed what it holds, two signature sections, a signature
//! section that is not the first, a signature split into parts (a `signature_delimiter`
//! section: it would cover only part of the component), and an embedded signature together
//! with a detached one. Only whole-component signatures count.
//!
//! The signature promises who built these exact bytes, nothing about what they do.
#![deny(missing_docs)]

use std::fmt;
use std::io::Cursor;
use zeroize::Zeroizing;

/// Name of the custom section holding the signature (tool-conventions).
pub const SIGNATURE_SECTION: &str = "signature";

/// Name of the section that splits a signature into parts; refused (partial coverage).
pub const DELIMITER_SECTION: &str = "signature_delimiter";

/// Largest signature (embedded section payload or detached file) read, in bytes. One
/// Ed25519 signature with its key id and hash takes about 120 bytes.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// Length of a key id in bytes (shown as twice as many hex digits).
const KEY_ID_BYTES: usize = 12;

/// A component whose signature cannot be read: it is refused, whatever the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not a WebAssembly component or module, or cut short.
    #[error("not a readable WebAssembly component: {0}")]
    Malformed(String),
    /// A signature larger than [`MAX_SIGNATURE_BYTES`].
    #[error("its signature takes {bytes} bytes, more than the {MAX_SIGNATURE_BYTES} allowed")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// More than one `signature` section.
    #[error(
        "it has {count} signature sections; a signed component has exactly one, first (sign it again)"
    )]
    SeveralSignatureSections {
        /// How many.
        count: usize,
    },
    /// A `signature` section that is not the component's first section.
    #[error("its signature section is not its first section (sign it again)")]
    SignatureNotFirst,
    /// A signature split by `signature_delimiter` sections: it covers only part of it.
    #[error(
        "its signature covers only part of it (it has a signature_delimiter section); sign the whole component with `warden plugin sign`"
    )]
    PartialSignature,
    /// An embedded signature and a detached one at once.
    #[error(
        "it has an embedded signature and a detached one; keep one (delete the .sig file, or sign without --detached)"
    )]
    EmbeddedAndDetached,
    /// A signature section that does not decode.
    #[error("its signature does not decode ({0})")]
    Undecodable(String),
}

/// A key that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// A public key's id: the first 12 bytes of HMAC-SHA256("key_id", key), in lowercase hex (the
/// id wasmsign2 stores with each signature).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a key id as policies write it (24 hex digits).
    pub fn parse(text: &str) -> Result<KeyId, KeyError> {
        if text.len() == KEY_ID_BYTES * 2 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(KeyId(text.to_ascii_lowercase()))
        } else {
            Err(KeyError(format!(
                "key id {text:?} is not {} hex digits (`warden plugin verify` prints a key's id)",
                KEY_ID_BYTES * 2
            )))
        }
    }

    fn from_bytes(bytes: &[u8]) -> KeyId {
        KeyId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ed25519 public key that verifies plugin signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: wasmsign2::PublicKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("id", &self.id).finish()
    }
}

impl PublicKey {
    fn from_inner(key: wasmsign2::PublicKey) -> PublicKey {
        let key = wasmsign2::PublicKey {
            key_id: None,
            ..key
        }
        .attach_default_key_id();
        let id = KeyId::from_bytes(key.key_id().map(Vec::as_slice).unwrap_or_default());
        PublicKey { key, id }
    }

    /// Reads a public key written as PEM (`-----BEGIN PUBLIC KEY-----`, what
    /// `warden plugin keygen` writes) or as the base64 line between the PEM armour.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        let pem = if text.starts_with("-----BEGIN") {
            text.to_owned()
        } else {
            format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n")
        };
        wasmsign2::PublicKey::from_pem(&pem)
            .map(PublicKey::from_inner)
            .map_err(|_| {
                KeyError(
                    "not an Ed25519 public key: give the PEM text `warden plugin keygen` wrote \
                     (the .pub file), or its base64 line"
                        .to_owned(),
                )
            })
    }

    /// The key as PEM text.
    pub fn to_pem(&self) -> String {
        self.key.to_pem()
    }

    /// Its id, as signatures carry it and policies revoke it.
    pub fn key_id(&self) -> &KeyId {
        &self.id
    }
}

/// An Ed25519 secret key that signs plugins. Its `Debug` shows only its public key's id.
pub struct SecretKey {
    key: wasmsign2::SecretKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("public_key_id", self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> SecretKey {
        SecretKey {
            key: wasmsign2::KeyPair::generate().sk,
        }
    }

    /// Reads a secret key written as PEM (what `warden plugin keygen` writes).
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        wasmsign2::SecretKey::from_pem(text.trim())
            .map(|key| SecretKey { key })
            .map_err(|_| {
                KeyError(
                    "not an Ed25519 secret key in PEM (the secret key file `warden plugin keygen` wrote)"
                        .to_owned(),
                )
            })
    }

    /// The key as PEM text (wiped from memory when dropped).
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.to_pem())
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_inner(wasmsign2::PublicKey {
            pk: self.key.sk.public_key(),
            key_id: None,
        })
    }

    /// Signs `component`, embedding the signature (replacing any signature it had).
    pub fn sign(&self, component: &[u8]) -> Result<Vec<u8>, SignatureError> {
        // Checked first: re-signing replaces the one signature section, so a second one (or a
        // partial signature) never rides along under the new signature.
        scan(component)?;
        let module = parse_module(component)?;
        let public = self.public_key();
        let signed = self
            .key
            .sign(module, public.key.key_id())
            .map_err(|e| SignatureError::Undecodable(e.to_string()))?;
        let mut out = Vec::with_capacity(component.len() + 256);
        signed
            .serialize(&mut out)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Adds this key's signature to a component's embedded one, keeping the signatures it
    /// has (a publisher moving to a new key signs with both while operators update their
    /// policy). An unsigned component gets this one signature.
    pub fn add_signature(&self, component: &[u8]) -> Result<Vec<u8>, SignatureError> {
        if scan(component)?.signature.is_some() {
            signature_data(component, None)?;
        }
        let module = parse_module(component)?;
        let public = self.public_key();
        let (signed, _) = self
            .key
            .sign_multi(module, public.key.key_id(), false, false)
            .map_err(|e| SignatureError::Undecodable(e.to_string()))?;
        let mut out = Vec::with_capacity(component.len() + 256);
        signed
            .serialize(&mut out)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Signs `component` and returns the detached signature (the component is unchanged). A
    /// component that already carries an embedded signature is refused: its bytes would be
    /// signed with the old signature inside.
    pub fn sign_detached(&self, component: &[u8]) -> Result<Vec<u8>, SignatureError> {
        if scan(component)?.signature.is_some() {
            return Err(SignatureError::EmbeddedAndDetached);
        }
        let module = parse_module(component)?;
        let public = self.public_key();
        let (_, signature) = self
            .key
            .sign_multi(module, public.key.key_id(), true, false)
            .map_err(|e| SignatureError::Undecodable(e.to_string()))?;
        Ok(signature)
    }
}

/// What checking a component's signature against a set of keys found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It carries no signature.
    Unsigned,
    /// It verifies under each of these keys (their ids, sorted, at least one): a component
    /// may carry signatures by several keys (a publisher's old and new key), and which of
    /// them counts is the policy's choice.
    Verified(Vec<KeyId>),
    /// It is signed, but by none of the keys (the ids its signatures name; a signature
    /// without a key id is not listed).
    OtherKey(Vec<KeyId>),
    /// A signature names one of the keys but does not match the component's bytes: it was
    /// changed after signing (or the signature was).
    Tampered(KeyId),
}

/// The key ids a component's signature names, read without any key (for `plugin inspect`).
/// `Ok(None)` when it is unsigned.
pub fn signers(
    component: &[u8],
    detached: Option<&[u8]>,
) -> Result<Option<Vec<KeyId>>, SignatureError> {
    Ok(signature_data(component, detached)?.map(|data| key_ids(&data)))
}

/// Checks `component` (with its detached signature, if any) against `keys`.
pub fn verify(
    component: &[u8],
    detached: Option<&[u8]>,
    keys: &[PublicKey],
) -> Result<Verdict, SignatureError> {
    let Some(data) = signature_data(component, detached)? else {
        return Ok(Verdict::Unsigned);
    };
    let set = wasmsign2::PublicKeySet::new(keys.iter().map(|k| k.key.clone()).collect());
    // Every key that verifies, not the first: the policy picks the one that is its publisher's
    // and not revoked.
    if let Ok(valid) = set.verify(&mut Cursor::new(component), detached) {
        let mut ids: Vec<KeyId> = keys
            .iter()
            .filter(|k| valid.contains(&k.key))
            .map(|k| k.id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            return Ok(Verdict::Verified(ids));
        }
    }
    let named = key_ids(&data);
    match keys.iter().find(|k| named.contains(&k.id)) {
        Some(key) => Ok(Verdict::Tampered(key.id.clone())),
        None => Ok(Verdict::OtherKey(named)),
    }
}

fn key_ids(data: &wasmsign2::SignatureData) -> Vec<KeyId> {
    let mut ids: Vec<KeyId> = data
        .signed_hashes_set
        .iter()
        .flat_map(|set| &set.signatures)
        .filter_map(|s| s.key_id.as_deref().map(KeyId::from_bytes))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The decoded signature (embedded or detached), after the structural checks.
fn signature_data(
    component: &[u8],
    detached: Option<&[u8]>,
) -> Result<Option<wasmsign2::SignatureData>, SignatureError> {
    let layout = scan(component)?;
    let payload = match (layout.signature, detached) {
        (Some(_), Some(_)) => return Err(SignatureError::EmbeddedAndDetached),
        (Some(range), None) => &component[range],
        (None, Some(detached)) => detached,
        (None, None) => return Ok(None),
    };
    if payload.len() > MAX_SIGNATURE_BYTES {
        return Err(SignatureError::TooLarge {
            bytes: payload.len(),
        });
    }
    check_payload(payload)?;
    wasmsign2::CustomSection::new(SIGNATURE_SECTION.to_owned(), payload.to_vec())
        .signature_data()
        .map(Some)
        .map_err(|e| SignatureError::Undecodable(e.to_string()))
}

/// Most hash sets, hashes per set and signatures per set a signature may hold (wasmsign2's
/// own caps; one whole-component signature has one of each).
const MAX_HASH_SETS: u32 = 64;
const MAX_HASHES: u32 = 64;
const MAX_SIGNATURES: u32 = 256;

/// Walks a signature payload the way wasmsign2 decodes it, before it does: wasmsign2 0.2.8
/// allocates each length-prefixed field (`varint::get_slice`) at the length the payload
/// claims before reading it, so a few bytes claiming 4 GiB would make it allocate 4 GiB.
/// Here every length is checked against the bytes that remain at its level, and every count
/// against a cap, without allocating.
fn check_payload(payload: &[u8]) -> Result<(), SignatureError> {
    use wasmparser::BinaryReader;
    fn fail(what: &str) -> SignatureError {
        SignatureError::Undecodable(format!(
            "its {what} is cut short or longer than the signature"
        ))
    }
    fn slice<'a>(r: &mut BinaryReader<'a>, what: &str) -> Result<&'a [u8], SignatureError> {
        let len = r.read_var_u32().map_err(|_| fail(what))? as usize;
        if len > r.bytes_remaining() {
            return Err(fail(what));
        }
        r.read_bytes(len).map_err(|_| fail(what))
    }
    fn count(r: &mut BinaryReader<'_>, what: &str, cap: u32) -> Result<u32, SignatureError> {
        let n = r.read_var_u32().map_err(|_| fail(what))?;
        if n > cap || n as usize > r.bytes_remaining() {
            return Err(SignatureError::Undecodable(format!(
                "it claims {n} {what}, more than it can hold (at most {cap})"
            )));
        }
        Ok(n)
    }
    let mut r = BinaryReader::new(payload, 0);
    for what in ["version", "content type", "hash function"] {
        r.read_u8().map_err(|_| fail(what))?;
    }
    for _ in 0..count(&mut r, "hash sets", MAX_HASH_SETS)? {
        let mut set = BinaryReader::new(slice(&mut r, "hash set")?, 0);
        let hashes = count(&mut set, "hashes", MAX_HASHES)?;
        let hash_bytes = hashes as usize * 32;
        if hash_bytes > set.bytes_remaining() {
            return Err(fail("hash list"));
        }
        set.read_bytes(hash_bytes).map_err(|_| fail("hash list"))?;
        for _ in 0..count(&mut set, "signatures", MAX_SIGNATURES)? {
            let mut signature = BinaryReader::new(slice(&mut set, "signature")?, 0);
            slice(&mut signature, "key id")?;
            signature.read_u8().map_err(|_| fail("algorithm"))?;
            slice(&mut signature, "signature bytes")?;
        }
    }
    Ok(())
}

fn parse_module(component: &[u8]) -> Result<wasmsign2::Module, SignatureError> {
    wasmsign2::Module::deserialize(&mut Cursor::new(component))
        .map_err(|e| SignatureError::Malformed(e.to_string()))
}

/// Where a component's signature section is, after checking its top-level layout.
struct Layout {
    /// The signature section's payload (after its name).
    signature: Option<std::ops::Range<usize>>,
}

/// Walks the top-level sections (nested modules are inside their section's bytes): every
/// length within the file, at most one signature section, first, bounded, and no delimiter.
/// The lengths inside the signature payload are not checked here (see [`check_payload`]).
fn scan(bytes: &[u8]) -> Result<Layout, SignatureError> {
    use wasmparser::BinaryReader;
    const HEADERS: [[u8; 8]; 2] = [
        [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
        [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00],
    ];
    let malformed = |what: &str| SignatureError::Malformed(what.to_owned());
    if bytes.len() < 8 || !HEADERS.iter().any(|h| bytes[..8] == h[..]) {
        return Err(malformed(
            "it does not start with a WebAssembly component or module header",
        ));
    }
    let mut reader = BinaryReader::new(&bytes[8..], 8);
    let mut signatures = Vec::new();
    let mut index = 0usize;
    while !reader.eof() {
        let id = reader
            .read_u8()
            .map_err(|_| malformed("a section is cut short"))?;
        let len = reader
            .read_var_u32()
            .map_err(|_| malformed("a section length is cut short"))? as usize;
        let start = reader.original_position();
        if len > reader.bytes_remaining() {
            return Err(malformed(&format!(
                "section {index} says it is {len} bytes long, but only {} follow",
                reader.bytes_remaining()
            )));
        }
        let body = reader
            .read_bytes(len)
            .map_err(|_| malformed("a section is cut short"))?;
        if id == 0 {
            let mut inner = BinaryReader::new(body, start);
            let name = inner
                .read_string()
                .map_err(|_| malformed("a custom section's name does not decode"))?;
            match name {
                SIGNATURE_SECTION => {
                    signatures.push((index, inner.original_position()..start + len));
                }
                DELIMITER_SECTION => return Err(SignatureError::PartialSignature),
                _ => {}
            }
        }
        index += 1;
    }
    match signatures.as_slice() {
        [] => Ok(Layout { signature: None }),
        [(0, range)] => {
            if range.len() > MAX_SIGNATURE_BYTES {
                return Err(SignatureError::TooLarge { bytes: range.len() });
            }
            Ok(Layout {
                signature: Some(range.clone()),
            })
        }
        [(_, _)] => Err(SignatureError::SignatureNotFirst),
        several => Err(SignatureError::SeveralSignatureSections {
            count: several.len(),
        }),
    }
}

#[cfg(test)]
mod tests;
