//! Checking a JWT from Entra ID: an access token presented as `Authorization: Bearer`, or the
//! id_token of a sign-in.
//!
//! The order is fixed: shape and size, `alg` (RS256 only: `none`, the HMAC family and anything
//! else are refused before a key is looked at, so an RSA public key can never serve as an HMAC
//! secret), `kid` among the tenant's keys, signature, `exp`/`nbf` with a small clock-skew
//! leeway, then `iss`, `aud`, `tid` and the claims each kind of token must have. jsonwebtoken
//! does the JWS; the claim checks are ours so that each refusal has its own reason.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::SignedIn;
use super::error::{AuthError, TokenRejection};
use super::provider::Provider;

/// The longest token accepted (Entra's are a few KiB; a group-heavy one under 16).
pub const MAX_TOKEN: usize = 16 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

/// What a token must be, besides well signed.
#[derive(Debug)]
pub(crate) struct Expectations<'a> {
    /// The exact `iss`.
    pub issuer: &'a str,
    /// Accepted `aud` values (any one).
    pub audiences: &'a [&'a str],
    /// The exact `tid` (a GUID, compared without case).
    pub tenant_id: &'a str,
    /// What kind of token.
    pub kind: Kind<'a>,
}

/// The kind of token and what only that kind must carry.
#[derive(Debug)]
pub(crate) enum Kind<'a> {
    /// A sign-in's id_token: its `nonce` must be this one.
    IdToken { nonce: &'a str },
    /// An API access token: it must carry `scp` or `roles`.
    AccessToken,
}

/// The claims we read. Types are checked: a claim of another type makes the token malformed.
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<Audience>,
    tid: Option<String>,
    oid: Option<String>,
    preferred_username: Option<String>,
    upn: Option<String>,
    name: Option<String>,
    nonce: Option<String>,
    scp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Checks `token` and returns who it names.
pub(crate) async fn verify(
    provider: &Provider,
    token: &str,
    expect: &Expectations<'_>,
) -> Result<SignedIn, AuthError> {
    let kid = header_kid(token)?;
    let key = provider
        .key(&kid)
        .await?
        .ok_or(TokenRejection::UnknownKid)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = CLOCK_SKEW_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false; // ours, below, for a typed reason
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| rejection(e.kind()))?
        .claims;
    Ok(check_claims(claims, expect)?)
}

/// The header's `kid`, once the token is a JWS of acceptable shape and `alg`.
fn header_kid(token: &str) -> Result<String, TokenRejection> {
    #[derive(Deserialize)]
    struct Header {
        alg: Option<serde_json::Value>,
        kid: Option<serde_json::Value>,
    }
    if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
        return Err(TokenRejection::Malformed);
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let header: Header = URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenRejection::Malformed)?;
    match header.alg {
        Some(serde_json::Value::String(alg)) if alg == "RS256" => {}
        Some(serde_json::Value::String(alg)) => {
            return Err(TokenRejection::Algorithm(printable(&alg)));
        }
        _ => return Err(TokenRejection::Algorithm("(none given)".into())),
    }
    match header.kid {
        Some(serde_json::Value::String(kid)) if !kid.is_empty() && kid.len() <= 256 => Ok(kid),
        _ => Err(TokenRejection::MissingKid),
    }
}

fn rejection(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature => TokenRejection::Signature,
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => {
            TokenRejection::MissingClaim("exp")
        }
        ErrorKind::InvalidAlgorithm => {
            TokenRejection::Algorithm("(header and key disagree)".into())
        }
        _ => TokenRejection::Malformed,
    }
}

fn check_claims(claims: Claims, expect: &Expectations<'_>) -> Result<SignedIn, TokenRejection> {
    let issuer = claims.iss.ok_or(TokenRejection::MissingClaim("iss"))?;
    if issuer != expect.issuer {
        return Err(TokenRejection::Issuer(printable(&issuer)));
    }
    let audiences = match claims.aud.ok_or(TokenRejection::MissingClaim("aud"))? {
        Audience::One(one) => vec![one],
        Audience::Many(many) => many,
    };
    if !audiences
        .iter()
        .any(|aud| expect.audiences.contains(&aud.as_str()))
    {
        return Err(TokenRejection::Audience(printable(&audiences.join(" "))));
    }
    let tenant_id = claims.tid.ok_or(TokenRejection::MissingClaim("tid"))?;
    if !tenant_id.eq_ignore_ascii_case(expect.tenant_id) {
        return Err(TokenRejection::Tenant(printable(&tenant_id)));
    }
    match expect.kind {
        Kind::IdToken { nonce } => {
            let sent = claims.nonce.ok_or(TokenRejection::MissingClaim("nonce"))?;
            if !bool::from(sent.as_bytes().ct_eq(nonce.as_bytes())) {
                return Err(TokenRejection::Nonce);
            }
        }
        Kind::AccessToken => {
            let scopes = claims.scp.as_deref().unwrap_or_default().trim();
            if scopes.is_empty() && claims.roles.is_empty() {
                return Err(TokenRejection::NoPermissions);
            }
        }
    }
    let oid = claims
        .oid
        .filter(|oid| !oid.is_empty())
        .ok_or(TokenRejection::MissingClaim("oid"))?;
    // An app-only token has no user name: the person is known by `oid` (and `roles`).
    let upn = claims.preferred_username.or(claims.upn).unwrap_or_default();
    if matches!(expect.kind, Kind::IdToken { .. }) && upn.is_empty() {
        return Err(TokenRejection::MissingClaim("preferred_username"));
    }
    Ok(SignedIn {
        oid,
        upn,
        name: claims.name.unwrap_or_default(),
        tenant_id,
        groups: claims.groups,
        roles: claims.roles,
    })
}

/// A claim value fit for a log line: printable ASCII, cut short.
fn printable(text: &str) -> String {
    text.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
