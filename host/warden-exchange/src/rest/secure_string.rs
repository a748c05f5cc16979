//! SecureString and PSCredential parameters, encrypted as the ExchangeOnlineManagement module
//! encrypts them before they leave the machine (`docs/fidelity.md`, "SecureString parameters").
//!
//! The module's `Encrypt-Value` (Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`): RSA
//! PKCS#1 v1.5 (`RSACryptoServiceProvider.Encrypt(bytes, $false)`) of the UTF-8 plain text
//! with the service's public key (`$PublicKey`, embedded in the module), base64; a PSCredential
//! is first turned into `{"UserName":…,"Password":…}` compact JSON; `$null` and `''` are sent
//! as they are. Which parameters: [`warden_vocab::secure`].
//!
//! What it refuses: a value of the wrong shape (a number for a password, a credential without
//! `UserName`/`Password`) and a plain text too long for one RSA block. No error, log or `Debug`
//! output here carries the value.

use crate::error::{ExchangeError, Result};
use crate::params::{ParamValue, Parameters};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BoxedUint, Pkcs1v15Encrypt};
use std::fmt;
use warden_vocab::SecureKind;
use zeroize::Zeroizing;

/// The public key the ExchangeOnlineManagement module encrypts SecureString parameters with
/// (`$PublicKey` in the generated module, Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`).
/// Microsoft rotates it and the service accepts at least the previous one (GreyCorbel/ExoHelper
/// `README.md`), so it is configurable: `[tenants.NAME.exchange] secure_string_public_key`.
pub const MODULE_PUBLIC_KEY: &str = "<RSAKeyValue><Modulus>31yPXtYRltEiVLHXaiF3nNtXPBqfNd0YNioi9HwVBOv9CPJhVpDE7sfszHZ0W9uHQP3kZE63zn8Dr/zXknMWuECGuqYOM170R1dc6FTybvkWYK4uFMuwnnNFfKYrhXTGINSfwvYglhaYuBhQIk3fn4hStf5qBA4Pt8BQyhZmMvov/gMh10yCbWDMi7MuXs7XoIBycTreQ7w2knCIrTD7sqtCzIxpowBhP0FyorIVwr+dQNSPhYfxbSlY2k2RrSmva6xgowDdzesUK1p6Y+jZ3PlSB9CuapaCDLMOGyc2tXMEtSjK+RW8k/8rtTLXaOWvMvfdMbF47S5TzkppcRhYTQ==</Modulus><Exponent>AQAB</Exponent></RSAKeyValue>";

/// The shortest RSA modulus accepted for SecureString parameters (the module's key is 2048
/// bits; NIST SP 800-131A disallows shorter RSA keys for encryption).
pub const MIN_KEY_BITS: u32 = 2048;

/// The service's public key for SecureString parameters.
#[derive(Clone, PartialEq, Eq)]
pub struct SecureStringKey {
    key: rsa::PublicKey,
}

impl fmt::Debug for SecureStringKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureStringKey")
            .field("bits", &(self.key.size() * 8))
            .finish()
    }
}

impl Default for SecureStringKey {
    fn default() -> Self {
        Self::parse(MODULE_PUBLIC_KEY).expect("the module's key parses")
    }
}

impl SecureStringKey {
    /// A key from the module's XML form (`<RSAKeyValue><Modulus>…</Modulus><Exponent>…`), a PEM
    /// `PUBLIC KEY` (SubjectPublicKeyInfo) or a PEM `RSA PUBLIC KEY` (PKCS#1).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = |why: &str| {
            ExchangeError::Invalid(format!(
                "the SecureString public key is not usable: {why}\n  fix: give the module's <RSAKeyValue> XML or a PEM RSA public key (or leave secure_string_public_key unset for the module's own key)"
            ))
        };
        let key = if text.starts_with("<RSAKeyValue>") {
            let field = |tag: &str| -> Result<Vec<u8>> {
                let open = format!("<{tag}>");
                let close = format!("</{tag}>");
                let start = text.find(&open).ok_or_else(|| bad(&format!("no {open}")))?;
                let rest = &text[start + open.len()..];
                let end = rest
                    .find(&close)
                    .ok_or_else(|| bad(&format!("no {close}")))?;
                STANDARD
                    .decode(rest[..end].trim())
                    .map_err(|_| bad(&format!("{tag} is not base64")))
            };
            let uint = |bytes: &[u8]| {
                // .NET's XML may pad a number with zero bytes; the key's size is its
                // significant bits, so they go before the number is sized.
                let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                let bytes = &bytes[first..];
                let bits = u32::try_from(bytes.len().max(1) * 8).map_err(|_| bad("too long"))?;
                BoxedUint::from_be_slice(bytes, bits).map_err(|_| bad("a number does not fit"))
            };
            rsa::PublicKey::new(uint(&field("Modulus")?)?, uint(&field("Exponent")?)?)
                .map_err(|e| bad(&e.to_string()))?
        } else if let Some(der) = pem_body(text, "PUBLIC KEY") {
            rsa::PublicKey::from_public_key_der(&der?).map_err(|e| bad(&e.to_string()))?
        } else if let Some(der) = pem_body(text, "RSA PUBLIC KEY") {
            rsa::PublicKey::from_pkcs1_der(&der?).map_err(|e| bad(&e.to_string()))?
        } else {
            return Err(bad("it is neither <RSAKeyValue> XML nor a PEM public key"));
        };
        // A short modulus can be factored: a value sealed under it is as good as plain text.
        let bits = key.n().bit_width();
        if bits < MIN_KEY_BITS {
            return Err(bad(&format!(
                "its modulus is {bits} bits, under the {MIN_KEY_BITS} bits RSA needs to keep a password"
            )));
        }
        Ok(Self { key })
    }

    /// `plain` encrypted as the module's `Encrypt-Value` does: PKCS#1 v1.5, base64.
    fn encrypt(&self, plain: &[u8]) -> std::result::Result<String, rsa::Error> {
        let sealed = self
            .key
            .encrypt(&mut rand::rngs::SysRng, Pkcs1v15Encrypt, plain)?;
        Ok(STANDARD.encode(sealed))
    }
}

/// The DER inside `-----BEGIN {label}-----`, when `text` is that PEM block.
fn pem_body(text: &str, label: &str) -> Option<Result<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.strip_prefix(&begin)?.trim().strip_suffix(&end)?;
    let joined: String = body.split_whitespace().collect();
    Some(
        STANDARD
            .decode(joined)
            .map_err(|_| ExchangeError::Invalid(format!("the {label} PEM block is not base64"))),
    )
}

/// `parameters` with each SecureString or PSCredential parameter of `cmdlet` encrypted under
/// `key`; every other parameter as it was.
pub fn encrypt_secure_parameters(
    cmdlet: &str,
    parameters: &Parameters,
    key: &SecureStringKey,
) -> Result<Parameters> {
    let mut out = parameters.clone();
    for (name, value) in out.iter_mut() {
        let Some(kind) = warden_vocab::secure_parameter(cmdlet, name) else {
            continue;
        };
        let refuse = |why: &str| {
            ExchangeError::Invalid(format!(
                "{cmdlet} -{name} takes a {}: {why} (the value is not shown)",
                match kind {
                    SecureKind::SecureString => "SecureString",
                    SecureKind::Credential => "PSCredential",
                }
            ))
        };
        let plain = match (kind, &*value) {
            // The module sends $null and '' unencrypted.
            (_, ParamValue::Null) => continue,
            (_, ParamValue::String(s)) if s.is_empty() => continue,
            (SecureKind::SecureString, ParamValue::String(s)) => Zeroizing::new(s.clone()),
            (SecureKind::SecureString, _) => return Err(refuse("give it as a string")),
            (SecureKind::Credential, ParamValue::HashTable(map)) => {
                let field = |want: &str| {
                    map.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(want))
                        .and_then(|(_, v)| match v {
                            ParamValue::String(s) => Some(s.clone()),
                            _ => None,
                        })
                };
                match (field("UserName"), field("Password")) {
                    (Some(user), Some(password)) if map.len() == 2 => {
                        let password = Zeroizing::new(password);
                        // The module's `select UserName, Password | ConvertTo-Json -Compress`.
                        Zeroizing::new(
                            serde_json::json!({"UserName": user, "Password": password.as_str()})
                                .to_string(),
                        )
                    }
                    _ => {
                        return Err(refuse(
                            "give it as {UserName = \"…\", Password = \"…\"} (two strings, nothing else)",
                        ));
                    }
                }
            }
            (SecureKind::Credential, _) => {
                return Err(refuse(
                    "give it as {UserName = \"…\", Password = \"…\"} (two strings)",
                ));
            }
        };
        // The error names the block's capacity, never the text's length (a password's
        // length is a secret's property too).
        let sealed = key.encrypt(plain.as_bytes()).map_err(|_| {
            refuse(&format!(
                "its text is longer than one {}-bit RSA block holds (at most {} bytes of UTF-8)",
                key.key.size() * 8,
                key.key.size().saturating_sub(11)
            ))
        })?;
        *value = ParamValue::String(sealed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePublicKey as _;
    use std::collections::BTreeMap;

    fn test_key() -> (rsa::PrivateKey, SecureStringKey) {
        let private = rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048).unwrap();
        let pem = private
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        (private, SecureStringKey::parse(&pem).unwrap())
    }

    #[test]
    fn the_module_key_parses_and_is_2048_bits() {
        let key = SecureStringKey::default();
        assert_eq!(key.key.size(), 256);
        assert_eq!(format!("{key:?}"), "SecureStringKey { bits: 2048 }");
    }

    #[test]
    fn encrypts_secure_strings_and_credentials_as_the_module_does() {
        let (private, key) = test_key();
        let parameters = Parameters::from([
            ("Identity".to_owned(), ParamValue::String("alex".into())),
            (
                "password".to_owned(),
                ParamValue::String("Hunter2-canary".into()),
            ),
        ]);
        let sent = encrypt_secure_parameters("Set-Mailbox", &parameters, &key).unwrap();
        assert_eq!(sent["Identity"], ParamValue::String("alex".into()));
        let ParamValue::String(b64) = &sent["password"] else {
            panic!()
        };
        assert!(!b64.contains("Hunter2"));
        let plain = private
            .decrypt(Pkcs1v15Encrypt, &STANDARD.decode(b64).unwrap())
            .unwrap();
        assert_eq!(plain, b"Hunter2-canary");

        let credential = ParamValue::HashTable(BTreeMap::from([
            ("UserName".to_owned(), ParamValue::String("u@x".into())),
            ("Password".to_owned(), ParamValue::String("p".into())),
        ]));
        let sent = encrypt_secure_parameters(
            "New-MoveRequest",
            &Parameters::from([("RemoteCredential".to_owned(), credential)]),
            &key,
        )
        .unwrap();
        let ParamValue::String(b64) = &sent["RemoteCredential"] else {
            panic!()
        };
        let plain = private
            .decrypt(Pkcs1v15Encrypt, &STANDARD.decode(b64).unwrap())
            .unwrap();
        assert_eq!(plain, br#"{"UserName":"u@x","Password":"p"}"#);
    }

    #[test]
    fn a_wrong_shape_is_refused_without_the_value() {
        let key = SecureStringKey::default();
        for value in [
            ParamValue::Int(31337),
            ParamValue::Array(vec![ParamValue::String("Hunter2-canary".into())]),
            ParamValue::String("x".repeat(300) + "Hunter2-canary"),
        ] {
            let error = encrypt_secure_parameters(
                "New-Mailbox",
                &Parameters::from([("Password".to_owned(), value)]),
                &key,
            )
            .unwrap_err()
            .to_string();
            assert!(
                error.contains("New-Mailbox -Password takes a SecureString"),
                "{error}"
            );
            assert!(
                !error.contains("Hunter2") && !error.contains("31337"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_short_key_is_refused_and_zero_padding_does_not_size_a_key() {
        let xml = |modulus: &[u8]| {
            format!(
                "<RSAKeyValue><Modulus>{}</Modulus><Exponent>AQAB</Exponent></RSAKeyValue>",
                STANDARD.encode(modulus)
            )
        };
        let short = rsa::PrivateKey::new(&mut rand::rngs::SysRng, 1024)
            .unwrap()
            .to_public_key();
        let short_n = short.n_bytes();
        let error = SecureStringKey::parse(&xml(&short_n))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("1024 bits") && error.contains("fix:"),
            "{error}"
        );
        // Zero bytes in front of a short modulus do not make it long enough.
        let mut padded = vec![0u8; 200];
        padded.extend_from_slice(&short_n);
        let error = SecureStringKey::parse(&xml(&padded))
            .unwrap_err()
            .to_string();
        assert!(error.contains("1024 bits"), "{error}");
        let pem = short.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert!(SecureStringKey::parse(&pem).is_err());
        // A 2048-bit modulus with a zero byte in front is the same 2048-bit key.
        let (private, key) = test_key();
        let mut padded = vec![0u8];
        padded.extend_from_slice(&private.to_public_key().n_bytes());
        let parsed = SecureStringKey::parse(&xml(&padded)).unwrap();
        assert_eq!(parsed.key.size(), 256);
        assert_eq!(parsed, key);
    }

    #[test]
    fn a_too_long_value_is_refused_without_its_length() {
        let key = SecureStringKey::default();
        let value = "x".repeat(300);
        let error = encrypt_secure_parameters(
            "New-Mailbox",
            &Parameters::from([("Password".to_owned(), ParamValue::String(value))]),
            &key,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("at most 245 bytes"), "{error}");
        assert!(!error.contains("300"), "{error}");
    }

    #[test]
    fn a_bad_key_is_explained() {
        for text in [
            "nonsense",
            "<RSAKeyValue><Modulus>!!</Modulus></RSAKeyValue>",
        ] {
            let error = SecureStringKey::parse(text).unwrap_err().to_string();
            assert!(error.contains("fix:"), "{error}");
        }
    }
}
