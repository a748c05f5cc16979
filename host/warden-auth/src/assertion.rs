//! Signed client assertions (RFC 7523 JWT bearer) proving possession of a certificate's key.
//!
//! Default form, as Microsoft documents it today: PS256 (RSASSA-PSS, SHA-256, salt 32) with
//! `x5t#S256`; RS256 with SHA-1 `x5t` is selectable for clouds that need it. Claims: `aud` = the
//! exact token URL, `iss` = `sub` = client id, a fresh `jti`, `nbf` = `iat` = now, `exp` =
//! now + 10 minutes at most. A fresh assertion per request: we never reuse one.
//! It refuses nothing the caller controls; it only signs.

use crate::certificate::CertificateKey;
use crate::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde::{Deserialize, Serialize};
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
    // jsonwebtoken's header carries `typ: JWT`; exactly one thumbprint names the certificate.
    let mut header = match algorithm {
        AssertionAlgorithm::Ps256 => Header::new(Algorithm::PS256),
        AssertionAlgorithm::Rs256 => Header::new(Algorithm::RS256),
    };
    match algorithm {
        AssertionAlgorithm::Ps256 => header.x5t_s256 = Some(key.x5t_s256()),
        AssertionAlgorithm::Rs256 => header.x5t = Some(key.x5t()),
    }
    // The DER lives in a zeroizing document and the EncodingKey zeroizes its copy on drop.
    // Both cannot fail for a key we loaded ourselves: a private key always encodes, and
    // signing PKCS#1 v1.5 or PSS with a valid key needs only the system RNG.
    let der = key
        .private_key()
        .to_pkcs1_der()
        .expect("an RSA private key encodes as PKCS#1");
    let signing_key = EncodingKey::from_rsa_der(der.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims, &signing_key)
        .expect("signing with a loaded RSA key succeeds");
    Secret::new(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use rsa::pkcs1::EncodeRsaPublicKey;

    /// Each form verifies with jsonwebtoken under its own algorithm only, names the
    /// certificate by its own thumbprint, and carries the claims Entra checks.
    #[test]
    fn each_algorithm_signs_with_its_own_thumbprint_header() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, pem_key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t",
            ])
            .args(["-days", "1", "-keyout"])
            .arg(&pem_key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let key = CertificateKey::from_pem_files(&cert, &pem_key, None).unwrap();
        let public = key.private_key().to_public_key().to_pkcs1_der().unwrap();
        let decoding = DecodingKey::from_rsa_der(public.as_bytes());
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for (form, alg) in [
            (AssertionAlgorithm::Ps256, Algorithm::PS256),
            (AssertionAlgorithm::Rs256, Algorithm::RS256),
        ] {
            let token = sign_client_assertion(&key, "client", "https://t/token", form, now);
            let mut validation = Validation::new(alg);
            validation.validate_exp = false;
            validation.set_audience(&["https://t/token"]);
            let data =
                jsonwebtoken::decode::<AssertionClaims>(token.expose(), &decoding, &validation)
                    .unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert_eq!(data.header.typ.as_deref(), Some("JWT"));
            match form {
                AssertionAlgorithm::Ps256 => {
                    assert_eq!(data.header.x5t_s256, Some(key.x5t_s256()));
                    assert_eq!(data.header.x5t, None);
                }
                AssertionAlgorithm::Rs256 => {
                    assert_eq!(data.header.x5t, Some(key.x5t()));
                    assert_eq!(data.header.x5t_s256, None);
                }
            }
            assert_eq!(
                (data.claims.iss.as_str(), data.claims.sub.as_str()),
                ("client", "client")
            );
            assert_eq!(
                data.claims.exp - data.claims.nbf,
                ASSERTION_LIFETIME.as_secs()
            );
            let other = if alg == Algorithm::PS256 {
                Algorithm::RS256
            } else {
                Algorithm::PS256
            };
            assert!(
                jsonwebtoken::decode::<AssertionClaims>(
                    token.expose(),
                    &decoding,
                    &Validation::new(other)
                )
                .is_err(),
                "{form:?} verified under {other:?}"
            );
        }
    }
}
