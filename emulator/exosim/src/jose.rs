//! Just enough JOSE for the emulator: split and decode a compact JWS, verify RS256/PS256 with the
//! `rsa` crate, and sign RS256 tokens.
//!
//! It refuses every other algorithm (`none`, HMAC, EC, RS384, ...) and JWE; it decodes base64
//! leniently where real clients are lenient (padding, alphabet, line breaks in `x5c`) and nowhere
//! else. It never logs anything: a signature or a token must not reach a log line.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rsa::sha2::Sha256;
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
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for Jws<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jws")
            .field("header", &self.header)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a compact JWS could not be taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwsError {
    /// Not three dot-separated parts (five would be JWE).
    Parts,
    /// A part is not base64url.
    Base64,
    /// Header or payload is not a JSON object.
    Json,
}

impl std::fmt::Display for JwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwsError::Parts => "the token does not have three dot-separated parts",
            JwsError::Base64 => "a part of the token is not base64url",
            JwsError::Json => "the token header or payload is not a JSON object",
        })
    }
}

/// Splits a compact JWS into header, claims and signature.
pub(crate) fn parse(token: &str) -> Result<Jws<'_>, JwsError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Parts);
    };
    let header = decode_segment(h).ok_or(JwsError::Base64)?;
    let payload = decode_segment(p).ok_or(JwsError::Base64)?;
    let signature = decode_segment(s).ok_or(JwsError::Base64)?;
    let header = json_object(&header).ok_or(JwsError::Json)?;
    let claims = json_object(&payload).ok_or(JwsError::Json)?;
    Ok(Jws {
        header,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

fn json_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The signature algorithms Entra accepts on client assertions, and we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
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

    /// Verifies `signature` over `input` with `key`.
    pub(crate) fn verify(self, key: &rsa::PublicKey, input: &[u8], signature: &[u8]) -> bool {
        match self {
            Alg::Rs256 => key.pkcs1v15_verify::<Sha256>(input, signature).is_ok(),
            // `pss_verify` requires a salt as long as the digest: 32 bytes for SHA-256, which
            // is what RFC 7518 §3.5 prescribes for PS256.
            Alg::Ps256 => key.pss_verify::<Sha256>(input, signature).is_ok(),
        }
    }
}

/// Signs `header` and `claims` as an RS256 compact JWS (members in declaration order).
pub(crate) fn sign_rs256(
    key: &rsa::PrivateKey,
    header: &impl serde::Serialize,
    claims: &impl serde::Serialize,
) -> String {
    let mut token = format!(
        "{}.{}",
        b64url(serde_json::to_vec(header).unwrap_or_default()),
        b64url(serde_json::to_vec(claims).unwrap_or_default())
    );
    // Signing with a key we generated ourselves cannot fail short of an RNG failure for the
    // blinding factor; an unsigned token would be refused by any verifier, which is the right
    // outcome for a broken machine.
    let signature = key
        .pkcs1v15_sign::<Sha256>(token.as_bytes())
        .unwrap_or_default();
    token.push('.');
    token.push_str(&b64url(signature));
    token
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
        assert_eq!(parse("a.b").unwrap_err(), JwsError::Parts);
        assert_eq!(parse("a.b.c.d.e").unwrap_err(), JwsError::Parts);
        assert_eq!(parse("!!.e30.").unwrap_err(), JwsError::Base64);
        assert_eq!(parse("W10.e30.").unwrap_err(), JwsError::Json);
        let jws = parse("e30.e30.").unwrap();
        assert_eq!(jws.signing_input, "e30.e30");
        assert!(jws.signature.is_empty());
    }
}
