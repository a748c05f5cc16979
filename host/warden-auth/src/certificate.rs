//! Certificate credentials: an RSA private key and its X.509 certificate, loaded from a
//! PFX/PKCS#12 file (AES-256, 3DES or RC2-40), a PEM key + certificate, or a directory of such
//! files addressed by SHA-1 thumbprint (our `cert://currentuser/my/<thumbprint>`).
//!
//! It refuses EC and other non-RSA keys (Entra signs assertions with RSA only), a PFX without a
//! private key, and a key that does not belong to the certificate. The private key lives in
//! `rsa::RsaKey`, which zeroizes itself; intermediate DER is held in `Zeroizing` buffers.
//! Errors name the file and the fix, never the password.

use crate::error::AuthError;
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::PrivateKey as RsaKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// An RSA key with its certificate, ready to sign client assertions.
pub struct CertificateKey {
    key: RsaKey,
    cert_der: Vec<u8>,
    sha1: [u8; 20],
    sha256: [u8; 32],
    /// The certificate's subject, e.g. `CN=warden`.
    pub subject: String,
    /// Start of the certificate's validity.
    pub not_before: OffsetDateTime,
    /// End of the certificate's validity.
    pub not_after: OffsetDateTime,
    /// The file it was loaded from.
    pub source: PathBuf,
}

impl fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateKey")
            .field("subject", &self.subject)
            .field("thumbprint_sha1", &self.thumbprint_sha1_hex())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn file_error(path: &Path, reason: impl Into<String>, fix: impl Into<String>) -> AuthError {
    AuthError::CredentialFile {
        path: path.to_owned(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

impl CertificateKey {
    /// Loads a PFX or PEM file, telling them apart by content.
    pub fn from_file(path: &Path, password: Option<&Secret>) -> Result<Self, AuthError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
            file_error(
                path,
                format!("cannot be read: {e}"),
                "check the path and its permissions",
            )
        })?);
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| file_error(path, "is not valid UTF-8 PEM", "re-export it as PEM"))?;
            Self::from_pem(text, None, password, path)
        } else {
            Self::from_pfx(&bytes, password, path)
        }
    }

    /// Loads a PKCS#12 (PFX) archive. `path` is used in messages only.
    pub fn from_pfx(
        bytes: &[u8],
        password: Option<&Secret>,
        path: &Path,
    ) -> Result<Self, AuthError> {
        let password = password.map(Secret::expose).unwrap_or("");
        let store = p12_keystore::KeyStore::from_pkcs12(
            bytes,
            password,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .map_err(|e| pfx_error(path, &e))?;
        let Some((_, chain)) = store.private_key_chain() else {
            return Err(file_error(
                path,
                "the PFX holds no private key with its certificate",
                "export the certificate *with* its private key (Windows: 'Yes, export the private key')",
            ));
        };
        let key_der = Zeroizing::new(chain.key().as_der().to_vec());
        let leaf = chain.certs().first().ok_or_else(|| {
            file_error(
                path,
                "the PFX's private key has no certificate",
                "export the key together with its certificate",
            )
        })?;
        let cert_der = leaf.as_der().to_vec();
        drop(store);
        let key = RsaKey::from_pkcs8_der(&key_der).map_err(|_| not_rsa(path))?;
        Self::assemble(key, cert_der, path)
    }

    /// Loads a PEM private key and certificate. They may share one file (`key_pem` = `None`
    /// means the key is in `cert_pem`, as `AZURE_CLIENT_CERTIFICATE_PATH` allows).
    pub fn from_pem(
        cert_pem: &str,
        key_pem: Option<&str>,
        password: Option<&Secret>,
        path: &Path,
    ) -> Result<Self, AuthError> {
        let key_text = key_pem.unwrap_or(cert_pem);
        let key = parse_pem_key(key_text, password, path)?;
        let cert_der = pem_blocks(cert_pem, "CERTIFICATE")
            .into_iter()
            .next()
            .ok_or_else(|| {
                file_error(
                    path,
                    "holds no -----BEGIN CERTIFICATE----- block",
                    "add the certificate (PEM) next to the key, or name it with `certificate_pem`",
                )
            })?;
        Self::assemble(key, cert_der, path)
    }

    /// Loads a PEM certificate file and a separate PEM key file.
    pub fn from_pem_files(
        cert_path: &Path,
        key_path: &Path,
        password: Option<&Secret>,
    ) -> Result<Self, AuthError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map(Zeroizing::new).map_err(|e| {
                file_error(
                    p,
                    format!("cannot be read: {e}"),
                    "check the path and its permissions",
                )
            })
        };
        let cert = read(cert_path)?;
        let key = read(key_path)?;
        let key = parse_pem_key(&key, password, key_path)?;
        let cert_der = pem_blocks(&cert, "CERTIFICATE")
            .into_iter()
            .next()
            .ok_or_else(|| {
                file_error(
                    cert_path,
                    "holds no -----BEGIN CERTIFICATE----- block",
                    "point it at the PEM certificate",
                )
            })?;
        Self::assemble(key, cert_der, cert_path)
    }

    /// Finds the certificate with this SHA-1 thumbprint (hex, any case, spaces or colons
    /// allowed) among the `.pfx`, `.p12` and `.pem` files of `dir`.
    pub fn from_thumbprint_dir(
        dir: &Path,
        thumbprint: &str,
        password: Option<&Secret>,
    ) -> Result<Self, AuthError> {
        let wanted: String = thumbprint
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect::<String>()
            .to_ascii_uppercase();
        if wanted.len() != 40 {
            return Err(AuthError::Config {
                what: format!("'{thumbprint}' is not a SHA-1 thumbprint (40 hex digits)"),
                fix: "copy the thumbprint from the app registration's Certificates & secrets page"
                    .into(),
            });
        }
        let entries = std::fs::read_dir(dir).map_err(|e| {
            file_error(
                dir,
                format!("the certificate directory cannot be read: {e}"),
                "check the path and its permissions",
            )
        })?;
        let mut seen = Vec::new();
        let mut unreadable = Vec::new();
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if !matches!(ext.as_deref(), Some("pfx" | "p12" | "pem")) {
                continue;
            }
            match CertificateKey::from_file(&path, password) {
                Ok(cert) if cert.thumbprint_sha1_hex() == wanted => return Ok(cert),
                Ok(cert) => seen.push(cert.thumbprint_sha1_hex()),
                Err(_) => unreadable.push(
                    path.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                ),
            }
        }
        let mut reason = format!(
            "no certificate with thumbprint {wanted} (found: {})",
            if seen.is_empty() {
                "none".into()
            } else {
                seen.join(", ")
            }
        );
        if !unreadable.is_empty() {
            reason.push_str(&format!(
                "; could not open {} (wrong password?)",
                unreadable.join(", ")
            ));
        }
        Err(file_error(
            dir,
            reason,
            "put the PFX or PEM (key + certificate) of that certificate in this directory",
        ))
    }

    fn assemble(key: RsaKey, cert_der: Vec<u8>, path: &Path) -> Result<Self, AuthError> {
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| {
            file_error(
                path,
                format!("the certificate cannot be parsed: {e}"),
                "re-export the certificate",
            )
        })?;
        let public = cert.public_key().parsed().map_err(|_| not_rsa(path))?;
        let x509_parser::public_key::PublicKey::RSA(rsa_public) = public else {
            return Err(not_rsa(path));
        };
        let key_modulus = key.n_bytes();
        if strip_leading_zeros(rsa_public.modulus) != strip_leading_zeros(&key_modulus) {
            return Err(file_error(
                path,
                "the private key does not belong to the certificate",
                "pair the key with the certificate it was issued for",
            ));
        }
        let subject = cert.subject().to_string();
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let sha1: [u8; 20] = Sha1::digest(&cert_der).into();
        let sha256: [u8; 32] = Sha256::digest(&cert_der).into();
        Ok(Self {
            key,
            cert_der,
            sha1,
            sha256,
            subject,
            not_before,
            not_after,
            source: path.to_owned(),
        })
    }

    /// SHA-1 thumbprint, upper-case hex, as the Azure portal and AADSTS700027 show it.
    pub fn thumbprint_sha1_hex(&self) -> String {
        hex_upper(&self.sha1)
    }

    /// SHA-256 thumbprint, upper-case hex.
    pub fn thumbprint_sha256_hex(&self) -> String {
        hex_upper(&self.sha256)
    }

    /// `x5t`: base64url (no padding) of the SHA-1 thumbprint's bytes.
    pub fn x5t(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.sha1)
    }

    /// `x5t#S256`: base64url (no padding) of the SHA-256 thumbprint's bytes.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.sha256)
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Whether the certificate is valid at `now`.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    pub(crate) fn private_key(&self) -> &RsaKey {
        &self.key
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn not_rsa(path: &Path) -> AuthError {
    file_error(
        path,
        "the private key is not an RSA key",
        "Entra ID accepts RSA certificates only: create an RSA 2048 (or larger) certificate",
    )
}

fn pfx_error(path: &Path, error: &p12_keystore::error::Error) -> AuthError {
    use p12_keystore::error::Error as E;
    match error {
        E::MacError(_) | E::UnpadError | E::Pkcs5Error(_) => file_error(
            path,
            "the PFX password is wrong (the archive's integrity check failed)",
            "set the right password in AZURE_CLIENT_CERTIFICATE_PASSWORD or the profile's password_env / password_file",
        ),
        E::DerError(e) if e.to_string().to_ascii_lowercase().contains("indefinite") => file_error(
            path,
            "the PFX uses BER indefinite-length encoding (a Firefox/NSS export), which is not supported",
            "re-export it: `openssl pkcs12 -in in.p12 -out key-and-cert.pem -nodes`, then `openssl pkcs12 -export -in key-and-cert.pem -out out.pfx`",
        ),
        E::DerError(_)
        | E::InvalidVersion
        | E::UnsupportedContentType
        | E::InvalidData
        | E::InvalidLength => file_error(
            path,
            "is not a valid PFX/PKCS#12 file (it may be truncated or another format)",
            "export the certificate with its private key as .pfx, or give a PEM key + certificate",
        ),
        E::UnsupportedEncryptionScheme | E::UnsupportedMacAlgorithm => file_error(
            path,
            format!("uses an encryption or MAC scheme that is not supported ({error})"),
            "re-export it with AES-256 (OpenSSL 3 default) or 3DES (`-keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES`)",
        ),
        other => file_error(
            path,
            format!("cannot be read as PFX: {other}"),
            "re-export the certificate with its private key",
        ),
    }
}

fn parse_pem_key(text: &str, password: Option<&Secret>, path: &Path) -> Result<RsaKey, AuthError> {
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return Err(file_error(
                path,
                "the private key is encrypted and no password was given",
                "set AZURE_CLIENT_CERTIFICATE_PASSWORD or the profile's password_env / password_file",
            ));
        };
        let block = pem_section(text, "ENCRYPTED PRIVATE KEY").unwrap_or_default();
        return RsaKey::from_pkcs8_encrypted_pem(&block, password.expose()).map_err(|_| {
            file_error(
                path,
                "the private key cannot be decrypted (wrong password, or not an RSA key)",
                "check the password; Entra ID accepts RSA keys only",
            )
        });
    }
    if let Some(block) = pem_section(text, "PRIVATE KEY") {
        return RsaKey::from_pkcs8_pem(&block).map_err(|_| not_rsa(path));
    }
    if let Some(block) = pem_section(text, "RSA PRIVATE KEY") {
        return RsaKey::from_pkcs1_pem(&block).map_err(|_| {
            file_error(
                path,
                "the RSA private key cannot be parsed",
                "re-export the key as PKCS#8 PEM",
            )
        });
    }
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return Err(not_rsa(path));
    }
    Err(file_error(
        path,
        "holds no private key (-----BEGIN PRIVATE KEY-----)",
        "give the PEM private key, in the same file or with `key_pem`",
    ))
}

/// The first PEM section with this label, including its BEGIN/END lines.
fn pem_section(text: &str, label: &str) -> Option<Zeroizing<String>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(Zeroizing::new(format!("{}\n", &text[start..stop])))
}

/// The DER bodies of every PEM block with this label.
fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body_start = start + begin.len();
        let Some(stop) = rest[body_start..].find(&end) else {
            break;
        };
        let body: String = rest[body_start..body_start + stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            out.push(der);
        }
        rest = &rest[body_start + stop + end.len()..];
    }
    out
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
