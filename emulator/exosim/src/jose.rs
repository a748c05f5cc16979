//! The emulator's JOSE, on `jsonwebtoken` (RustCrypto backend): take a compact JWS apart,
//! verify RS256/PS256 against an `rsa` public key; sign RS256 tokens in `jsonwebtoken`'s layout
//! with *ring*; plus the base64 forms of thumbprints and certificates that shipping SDKs send.
//!
//! It refuses every other algorithm (`none`, HMAC, EC, RS384, ...) and JWE; it decodes base64
//! leniently where real clients are lenient (padding, alphabet, line breaks in `x5c`) and nowhere
//! else: JWS segments are strict base64url, as RFC 7515 has them. It never logs anything: a
//! signature or a token must not reach a log line.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use rsa::pkcs1::EncodeRsaPublicKey as _;
use serde_json::{Map, Value};

/// base64url without padding, the JWS encoding (RFC 7515 §2).
pub(crate) fn b64url(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Standard base64 with padding, the `x5c` encoding (RFC 7515 §4.1.6).
pub(crate) fn b64std(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// Decodes a JWS segment: base64url, padding tolerated.
pub(crate) fn decode_segment(text: &str) -> Option<Vec<u8>> {
    URL_LENIENT.decode(text).ok()
}

/// Decodes a thumbprint or certificate the way shipping SDKs encode them: base64url or standard
/// alphabet, padded or not, with any whitespace (msal-python leaves PEM line breaks in `x5c`).
pub(crate) fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    STD_LENIENT.decode(cleaned).ok()
}

/// A compact JWS taken apart. Nothing is verified yet.
pub(crate) struct Jws<'a> {
    /// The header as jsonwebtoken read it (only members of a valid JWS header get here).
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    token: &'a str,
}

impl std::fmt::Debug for Jws<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jws")
            .field("header", &self.header)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Jws<'_> {
    /// Verifies the signature with `key` under `alg`, and that the header names `alg`. Claims
    /// (time window, audience, issuer) are the caller's, who answers them with Entra's codes.
    pub(crate) fn verify(&self, alg: Alg, key: &rsa::PublicKey) -> bool {
        let Ok(der) = key.to_pkcs1_der() else {
            return false;
        };
        let mut validation = Validation::new(alg.into());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde::de::IgnoredAny>(
            self.token,
            &DecodingKey::from_rsa_der(der.as_bytes()),
            &validation,
        )
        .is_ok()
    }
}

/// Why a compact JWS could not be taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwsError {
    /// Not three dot-separated parts (five would be JWE).
    Parts,
    /// A part is not base64url.
    Base64,
    /// The payload is not a JSON object.
    Json,
    /// The header is not a JWS header jsonwebtoken accepts (an unknown `alg`, a member of the
    /// wrong type, an unknown critical extension); the text is jsonwebtoken's reason.
    Header(String),
}

impl std::fmt::Display for JwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwsError::Parts => f.write_str("the token does not have three dot-separated parts"),
            JwsError::Base64 => f.write_str("a part of the token is not base64url"),
            JwsError::Json => f.write_str("the token payload is not a JSON object"),
            JwsError::Header(why) => {
                write!(f, "the token header is not a valid JWS header ({why})")
            }
        }
    }
}

fn kind_error(error: &jsonwebtoken::errors::Error, otherwise: JwsError) -> JwsError {
    match error.kind() {
        ErrorKind::Base64(_) => JwsError::Base64,
        _ => otherwise,
    }
}

/// Splits a compact JWS into header and claims.
pub(crate) fn parse(token: &str) -> Result<Jws<'_>, JwsError> {
    // jsonwebtoken splits from the right and would read the last three parts of a JWE.
    if token.split('.').count() != 3 {
        return Err(JwsError::Parts);
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| kind_error(&e, JwsError::Header(e.to_string())))?;
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
        .map_err(|e| kind_error(&e, JwsError::Json))?;
    let Ok(Value::Object(header)) = serde_json::to_value(&header) else {
        return Err(JwsError::Header("it does not serialise".into()));
    };
    Ok(Jws {
        header,
        claims,
        token,
    })
}

/// The signature algorithms Entra accepts on client assertions, and we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (RFC 7518 §3.5).
    Ps256,
}

impl Alg {
    pub(crate) fn from_header(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "PS256" => Some(Alg::Ps256),
            _ => None,
        }
    }
}

impl From<Alg> for Algorithm {
    fn from(alg: Alg) -> Self {
        match alg {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Ps256 => Algorithm::PS256,
        }
    }
}

/// Signs `claims` under `header` (whose `alg` must be RS256) with `credential`'s key, as a
/// compact JWS: `jsonwebtoken::encode`'s layout (each part base64url of its serde JSON), signed
/// on *ring* (see [`crate::pki::RsaCredential::signer`]).
pub(crate) fn sign_rs256(
    credential: &crate::pki::RsaCredential,
    header: &Header,
    claims: &impl serde::Serialize,
) -> String {
    // The signer is RS256's: a header naming anything else would be a token signed otherwise
    // than it says.
    if header.alg != Algorithm::RS256 {
        return String::new();
    }
    // Serialising our own header and claims, or signing with a key we generated ourselves,
    // cannot fail short of an RNG failure; an empty token (here, or for a wrong algorithm
    // above) is refused by any verifier, the right outcome for a broken machine or caller.
    let (Ok(header), Ok(claims)) = (serde_json::to_vec(header), serde_json::to_vec(claims)) else {
        return String::new();
    };
    let (header, claims) = (b64url(header), b64url(claims));
    let message = format!("{header}.{claims}");
    match rcgen::SigningKey::sign(&credential.signer, message.as_bytes()) {
        Ok(signature) => format!("{message}.{}", b64url(signature)),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_base64_accepts_all_shipping_forms() {
        let raw = [0xfbu8, 0xff, 0x01, 0x02, 0x03];
        for text in ["-_8BAgM", "-_8BAgM=", "+/8BAgM", "+/8BAgM=", "+/8B\nAgM="] {
            assert_eq!(decode_any_base64(text).as_deref(), Some(&raw[..]), "{text}");
        }
        assert!(decode_any_base64("***").is_none());
    }

    #[test]
    fn parse_refuses_wrong_shapes() {
        let header = b64url(br#"{"alg":"RS256"}"#);
        assert_eq!(parse("a.b").unwrap_err(), JwsError::Parts);
        assert_eq!(
            parse(&format!("{header}.e30.x.y.z")).unwrap_err(),
            JwsError::Parts
        );
        assert_eq!(parse("!!.e30.").unwrap_err(), JwsError::Base64);
        assert_eq!(
            parse(&format!("{header}.W10.")).unwrap_err(),
            JwsError::Json
        );
        let none = b64url(br#"{"alg":"none"}"#);
        let refused = parse(&format!("{none}.e30.")).unwrap_err();
        assert!(refused.to_string().contains("none"), "{refused}");
        let token = format!("{header}.e30.");
        let jws = parse(&token).unwrap();
        assert_eq!(jws.header.get("alg"), Some(&Value::from("RS256")));
        assert!(jws.claims.is_empty());
    }

    #[test]
    fn a_signed_token_verifies_under_its_key_and_algorithm_only() {
        let credential = crate::pki::RsaCredential::self_signed(
            crate::pki::generate_rsa("test").unwrap(),
            "test",
            1,
        )
        .unwrap();
        let key = &credential.key;
        let other = crate::pki::generate_rsa("test").unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k".into());
        let claims = serde_json::json!({"aud": "a", "name": "Zoë \"quoted\" </>"});
        let token = sign_rs256(&credential, &header, &claims);
        let jws = parse(&token).unwrap();
        assert_eq!(jws.claims.get("aud"), Some(&Value::from("a")));
        assert!(jws.verify(Alg::Rs256, &key.to_public_key()));
        assert!(!jws.verify(Alg::Ps256, &key.to_public_key()));
        assert!(!jws.verify(Alg::Rs256, &other.to_public_key()));
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert!(
            !parse(&tampered)
                .unwrap()
                .verify(Alg::Rs256, &key.to_public_key())
        );
        // PKCS#1 v1.5 signatures are deterministic: byte for byte what jsonwebtoken signs with
        // the RustCrypto key.
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let der = key.to_pkcs1_der().unwrap();
        let by_jsonwebtoken = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
        )
        .unwrap();
        assert_eq!(token, by_jsonwebtoken);
        // A header naming another algorithm gets no token rather than a mislabelled one.
        let mut ps256 = header.clone();
        ps256.alg = Algorithm::PS256;
        assert_eq!(sign_rs256(&credential, &ps256, &claims), "");
    }
}
