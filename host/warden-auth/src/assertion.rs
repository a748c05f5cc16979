//! Signed client assertions (RFC 7523 JWT bearer) proving possession of a certificate's key.
//!
//! Default form, as Microsoft documents it today: PS256 (RSASSA-PSS, SHA-256, salt 32) with
//! `x5t#S256`; RS256 with SHA-1 `x5t` is selectable for clouds that need it. Claims: `aud` = the
//! exact token URL, `iss` = `sub` = client id, a fresh `jti`, `nbf` = `iat` = now, `exp` =
//! now + 10 minutes at most. A fresh assertion per request: we never reuse one.
//! It refuses nothing the caller controls; it only signs.

use crate::certificate::CertificateKey;
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an assertion is valid. Microsoft: "5-10 minutes after nbf at most".
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// Which signature and thumbprint header to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS SHA-256 with `x5t#S256` (the current Microsoft documentation).
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 SHA-256 with SHA-1 `x5t` (what the Azure SDKs send).
    Rs256,
}

impl std::str::FromStr for AssertionAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ps256" => Ok(Self::Ps256),
            "rs256" => Ok(Self::Rs256),
            _ => Err(format!(
                "unknown assertion algorithm '{s}'; use ps256 or rs256"
            )),
        }
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5t: Option<&'a str>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t_s256: Option<&'a str>,
}

/// The claims of a client assertion.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    /// The token URL the assertion is for.
    pub aud: String,
    /// The client id.
    pub iss: String,
    /// The client id.
    pub sub: String,
    /// A fresh UUID.
    pub jti: String,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expiry (Unix seconds).
    pub exp: u64,
}

/// Builds and signs a client assertion for `token_url`.
pub fn sign_client_assertion(
    key: &CertificateKey,
    client_id: &str,
    token_url: &str,
    algorithm: AssertionAlgorithm,
    now: SystemTime,
) -> Secret {
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = AssertionClaims {
        aud: token_url.to_owned(),
        iss: client_id.to_owned(),
        sub: client_id.to_owned(),
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now_secs,
        iat: now_secs,
        exp: now_secs + ASSERTION_LIFETIME.as_secs(),
    };
    let (x5t, x5t_s256) = (key.x5t(), key.x5t_s256());
    let header = match algorithm {
        AssertionAlgorithm::Ps256 => Header {
            alg: "PS256",
            typ: "JWT",
            x5t: None,
            x5t_s256: Some(&x5t_s256),
        },
        AssertionAlgorithm::Rs256 => Header {
            alg: "RS256",
            typ: "JWT",
            x5t: Some(&x5t),
            x5t_s256: None,
        },
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serialises")),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise")),
    );
    let signature = match algorithm {
        AssertionAlgorithm::Ps256 => {
            let signer = rsa::pss::SigningKey::<Sha256>::new(key.private_key().clone());
            signer
                .sign_with_rng(&mut rand::rng(), signing_input.as_bytes())
                .to_vec()
        }
        AssertionAlgorithm::Rs256 => {
            let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.private_key().clone());
            signer.sign(signing_input.as_bytes()).to_vec()
        }
    };
    Secret::new(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}
