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

/// What a token must be, besides well signed. No `Debug`: it holds the sign-in's nonce.
pub(crate) struct Expectations<'a> {
    /// The exact `iss` of a v2.0 token (the authority's metadata).
    pub issuer: &'a str,
    /// The service's client id: the id_token's only audience, and the v2.0 access token's.
    pub client_id: &'a str,
    /// The exact `tid` (a GUID, compared without case).
    pub tenant_id: &'a str,
    /// What kind of token.
    pub kind: Kind<'a>,
}

/// The kind of token and what only that kind must carry.
pub(crate) enum Kind<'a> {
    /// A sign-in's id_token: its `nonce` must be this one.
    IdToken { nonce: &'a str },
    /// An API access token for this service.
    AccessToken(&'a ApiAccess),
}

/// What an API access token must show besides issuer, audience and tenant: who asked for it
/// (`azp`/`appid`) and what it allows (`scp`/`roles`).
#[derive(Debug, Clone)]
pub(crate) struct ApiAccess {
    /// The app ID URI: the v1.0 token's audience (and accepted on v2.0 too).
    pub app_id_uri: String,
    /// Client apps whose tokens are accepted: the service's own client id and the configured
    /// others.
    pub client_apps: Vec<String>,
    /// Delegated scopes of which the token's `scp` must hold one.
    pub scopes: Vec<String>,
    /// App roles of which the token's `roles` must hold one.
    pub roles: Vec<String>,
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
    azp: Option<String>,
    appid: Option<String>,
    ver: Option<String>,
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

/// The v1.0 access token issuer of tenant `tenant_id` (Entra's STS, whatever the authority).
/// Entra writes the tenant GUID lower-case there, while the configured id may be in any case
/// (`tid` is compared without case). Sovereign clouds have other STS hosts
/// (e.g. `sts.chinacloudapi.cn`); they are not handled here.
pub(crate) fn v1_issuer(tenant_id: &str) -> String {
    format!(
        "https://sts.windows.net/{}/",
        tenant_id.to_ascii_lowercase()
    )
}

fn check_claims(claims: Claims, expect: &Expectations<'_>) -> Result<SignedIn, TokenRejection> {
    let issuer = claims.iss.ok_or(TokenRejection::MissingClaim("iss"))?;
    let audiences = match claims.aud.ok_or(TokenRejection::MissingClaim("aud"))? {
        Audience::One(one) => vec![one],
        Audience::Many(many) => many,
    };
    let tenant_id = claims.tid.ok_or(TokenRejection::MissingClaim("tid"))?;
    if !tenant_id.eq_ignore_ascii_case(expect.tenant_id) {
        return Err(TokenRejection::Tenant(printable(&tenant_id)));
    }
    match expect.kind {
        Kind::IdToken { nonce } => {
            if issuer != expect.issuer {
                return Err(TokenRejection::Issuer(printable(&issuer)));
            }
            // OIDC core 3.1.3.7: the client must be an audience, and with several audiences
            // the token must be issued to it (`azp`).
            let ours = match audiences.as_slice() {
                [one] => one == expect.client_id,
                many => {
                    many.iter().any(|aud| aud == expect.client_id)
                        && claims.azp.as_deref() == Some(expect.client_id)
                }
            };
            if !ours {
                return Err(TokenRejection::Audience(printable(&audiences.join(" "))));
            }
            let sent = claims.nonce.ok_or(TokenRejection::MissingClaim("nonce"))?;
            if !bool::from(sent.as_bytes().ct_eq(nonce.as_bytes())) {
                return Err(TokenRejection::Nonce);
            }
        }
        Kind::AccessToken(access) => {
            // An id_token carries the sign-in's nonce and names no requesting app: it is
            // proof of a sign-in to the client, never a permission to call the API.
            if claims.nonce.is_some() {
                return Err(TokenRejection::NotAnAccessToken);
            }
            // v1.0 and v2.0 access tokens differ in issuer, audience and the client claim.
            let (client, client_claim) = match claims.ver.as_deref() {
                Some("2.0") => {
                    if issuer != expect.issuer {
                        return Err(TokenRejection::Issuer(printable(&issuer)));
                    }
                    (claims.azp, "azp")
                }
                Some("1.0") => {
                    if issuer != v1_issuer(expect.tenant_id) {
                        return Err(TokenRejection::Issuer(printable(&issuer)));
                    }
                    (claims.appid, "appid")
                }
                Some(other) => return Err(TokenRejection::Version(printable(other))),
                None => return Err(TokenRejection::MissingClaim("ver")),
            };
            let [audience] = audiences.as_slice() else {
                return Err(TokenRejection::Audience(printable(&audiences.join(" "))));
            };
            if audience != expect.client_id && *audience != access.app_id_uri {
                return Err(TokenRejection::Audience(printable(audience)));
            }
            let client = client.ok_or(TokenRejection::MissingClaim(client_claim))?;
            if !access
                .client_apps
                .iter()
                .any(|app| app.eq_ignore_ascii_case(&client))
            {
                return Err(TokenRejection::ClientApp(printable(&client)));
            }
            let scopes = claims.scp.as_deref().unwrap_or_default();
            let allowed = scopes
                .split(' ')
                .any(|scope| access.scopes.iter().any(|want| want == scope))
                || claims
                    .roles
                    .iter()
                    .any(|role| access.roles.iter().any(|want| want == role));
            if !allowed {
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
