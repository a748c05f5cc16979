//! Minting access tokens and federated (external IdP) tokens, and the token response bodies.
//!
//! Access tokens are v1-format app-only JWTs signed RS256 with the emulator's token-signing key
//! (`kid` = `x5t`), with the claims of docs/protocol/entra-auth.md §4. `roles` is sent only when
//! the app has roles on the requested resource, `wids` only when non-empty, as Entra does. Tokens
//! are never logged.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use serde_json::json;

use crate::counters::Counter;
use crate::directory::Tenant;
use crate::jose::{b64url, sign_rs256};
use crate::state::Shared;

/// Who the token is for.
#[derive(Debug)]
pub(crate) struct Principal<'a> {
    pub appid: &'a str,
    pub display_name: Option<&'a str>,
    pub object_id: &'a str,
    /// Roles on the requested resource (already filtered to that resource).
    pub roles: &'a [String],
    pub wids: &'a [String],
    /// `"1"` for a client secret, `"2"` for a certificate, a federated assertion or a managed
    /// identity. Entra documents `2` for certificates; for federated credentials and managed
    /// identities `2` is our inference.
    pub appidacr: &'static str,
    /// The managed identity's ARM resource id (`xms_mirid`).
    pub mi_resource_id: Option<&'a str>,
}

/// A freshly minted access token with its timing.
pub(crate) struct Issued {
    pub access_token: String,
    pub lifetime_secs: u64,
    pub refresh_in_secs: Option<u64>,
    pub not_before: i64,
    pub expires_on: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("lifetime_secs", &self.lifetime_secs)
            .field("expires_on", &self.expires_on)
            .finish_non_exhaustive()
    }
}

/// The claims of an app-only v1 access token, in Entra's member order.
#[derive(Serialize)]
struct AccessClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    aio: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_displayname: Option<&'a str>,
    appid: &'a str,
    appidacr: &'static str,
    idp: &'a str,
    idtyp: &'static str,
    oid: &'a str,
    rh: String,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    sub: &'a str,
    tid: &'a str,
    uti: String,
    ver: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    wids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    xms_mirid: Option<&'a str>,
}

/// Issues an access token for `audience` in `tenant`. `iat` and `nbf` are five minutes in the
/// past, as Entra sets them; `exp` is now + the configured lifetime.
pub(crate) fn mint_access_token(
    shared: &Shared,
    tenant: &Tenant,
    audience: &str,
    who: &Principal<'_>,
) -> Issued {
    let (lifetime, refresh_in) = shared.faults.lifetimes();
    let now = super::unix_now();
    let lifetime_secs = lifetime.as_secs();
    let not_before = now - 300;
    let expires_on = now.saturating_add(i64::try_from(lifetime_secs).unwrap_or(i64::MAX));
    let issuer = format!("https://sts.windows.net/{}/", tenant.id);
    let claims = AccessClaims {
        aud: audience,
        iss: &issuer,
        iat: not_before,
        nbf: not_before,
        exp: expires_on,
        aio: random_b64(48),
        app_displayname: who.display_name,
        appid: who.appid,
        appidacr: who.appidacr,
        idp: &issuer,
        idtyp: "app",
        oid: who.object_id,
        rh: random_b64(32),
        roles: who.roles,
        sub: who.object_id,
        tid: &tenant.id,
        uti: unique_token_id(shared.faults.token_generation()),
        ver: "1.0",
        wids: who.wids,
        xms_mirid: who.mi_resource_id,
    };
    // Entra's header: typ, alg, x5t and kid (both the SHA-1 thumbprint); jsonwebtoken writes
    // kid before x5t, which no client reads in order.
    let x5t = shared.signing.thumbprints.x5t();
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(x5t.clone());
    header.kid = Some(x5t);
    let access_token = sign_rs256(&shared.signing, &header, &claims);
    shared.counters.bump(Counter::TokenIssued);
    Issued {
        access_token,
        lifetime_secs,
        refresh_in_secs: refresh_in.map(|d| d.as_secs()),
        not_before,
        expires_on,
    }
}

/// Signs a token as the emulator's external identity provider (`{url}/_federation`).
pub(crate) fn mint_federated(
    shared: &Shared,
    subject: &str,
    audience: &str,
    lifetime: Duration,
    backdate: Duration,
) -> String {
    let now =
        super::unix_now().saturating_sub(i64::try_from(backdate.as_secs()).unwrap_or(i64::MAX));
    let exp = now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    let claims = json!({
        "iss": shared.federation_issuer(),
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": exp,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(shared.federation.thumbprints.x5t());
    sign_rs256(&shared.federation, &header, &claims)
}

/// The `uti` claim: 16 bytes like Entra's, the first four of which are the token generation
/// ([`crate::Faults::expire_issued_tokens`]); clients treat `uti` as opaque.
fn unique_token_id(generation: u32) -> String {
    let mut buf = [0u8; 16];
    buf[..4].copy_from_slice(&generation.to_be_bytes());
    rand::fill(&mut buf[4..]);
    b64url(buf)
}

/// The generation an access token's `uti` carries, when it is one of ours.
pub(crate) fn token_generation(uti: &str) -> Option<u32> {
    let bytes = crate::jose::decode_segment(uti)?;
    let head: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    (bytes.len() == 16).then(|| u32::from_be_bytes(head))
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    b64url(buf)
}

/// v2 success body: numbers are numbers.
#[derive(Serialize)]
pub(crate) struct V2Body {
    token_type: &'static str,
    expires_in: u64,
    ext_expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_in: Option<u64>,
    access_token: String,
}

impl V2Body {
    pub(crate) fn new(issued: Issued) -> Self {
        V2Body {
            token_type: "Bearer",
            expires_in: issued.lifetime_secs,
            ext_expires_in: issued.lifetime_secs,
            refresh_in: issued.refresh_in_secs,
            access_token: issued.access_token,
        }
    }
}

/// v1 success body: numbers are strings, plus `expires_on`, `not_before` and `resource`.
#[derive(Serialize)]
pub(crate) struct V1Body {
    token_type: &'static str,
    expires_in: String,
    ext_expires_in: String,
    expires_on: String,
    not_before: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_in: Option<String>,
    resource: String,
    access_token: String,
}

impl V1Body {
    pub(crate) fn new(issued: Issued, resource: &str) -> Self {
        V1Body {
            token_type: "Bearer",
            expires_in: issued.lifetime_secs.to_string(),
            ext_expires_in: issued.lifetime_secs.to_string(),
            expires_on: issued.expires_on.to_string(),
            not_before: issued.not_before.to_string(),
            refresh_in: issued.refresh_in_secs.map(|s| s.to_string()),
            resource: resource.to_owned(),
            access_token: issued.access_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uti_carries_its_generation_and_looks_like_entras() {
        let uti = unique_token_id(7);
        assert_eq!(uti.len(), 22, "16 bytes, base64url without padding: {uti}");
        assert_eq!(token_generation(&uti), Some(7));
        assert_ne!(unique_token_id(7), uti, "the rest is random");
        assert_eq!(token_generation(&random_b64(12)), None, "not one of ours");
    }
}
