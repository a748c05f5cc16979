//! Verifying `client_assertion`s: certificate assertions the client signed itself, and
//! federated assertions issued by an external identity provider (workload identity federation).
//!
//! Verification is real: the certificate is found among the app's registered ones by `x5t`
//! (SHA-1), `x5t#S256` or `kid`, the RS256/PS256 signature is checked against its public key,
//! `aud` must be the token URL the client addressed, `iss`/`sub` the client id, and the time
//! window is enforced with five minutes of skew. It accepts what shipping SDKs send (padded or
//! unpadded, base64url or standard thumbprints; `x5c` with line breaks; no `nbf` or `iat`) and
//! refuses everything else with the AADSTS code Entra uses. It never logs or echoes the
//! assertion or its signature.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::aadsts::AadError;
use super::{CLOCK_SKEW_SECS, unix_now};
use crate::directory::{App, AppCertificate};
use crate::jose::{self, Alg};
use crate::pki::{Thumbprints, hex_upper};
use crate::state::{Replay, Shared};

/// How the client authenticated, for `appidacr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verified {
    Certificate,
    Federated,
}

/// What a verification needs to know about the request.
pub(crate) struct Context<'a> {
    pub app: &'a App,
    /// Every URL the assertion's `aud` may name (lower-cased): the token URL as addressed, with
    /// the tenant as given, as GUID and as domain.
    pub audiences: &'a [String],
}

pub(crate) fn verify(
    shared: &Shared,
    ctx: &Context<'_>,
    assertion: &str,
) -> Result<Verified, AadError> {
    let jws = jose::parse(assertion).map_err(AadError::malformed_jwt)?;
    let alg_name = jws.header.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some(alg) = Alg::from_header(alg_name) else {
        return Err(AadError::malformed_jwt(format_args!(
            "The signing algorithm '{alg_name}' is not supported; use RS256 or PS256."
        )));
    };
    let claim_str = |name: &str| jws.claims.get(name).and_then(Value::as_str);
    let Some(iss) = claim_str("iss") else {
        return Err(AadError::missing_claim("iss"));
    };
    let client_id = ctx.app.client_id.as_str();

    let kind = if iss.eq_ignore_ascii_case(client_id) {
        Verified::Certificate
    } else if iss.contains("://") {
        Verified::Federated
    } else {
        return Err(AadError::assertion_client_mismatch());
    };
    let Some(sub) = claim_str("sub") else {
        return Err(AadError::missing_claim("sub"));
    };
    let auds: Vec<&str> = match jws.claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if auds.is_empty() {
        return Err(AadError::missing_claim("aud"));
    }
    let exp = match jws.claims.get("exp") {
        None => return Err(AadError::missing_claim("exp")),
        Some(value) => numeric_date(value)
            .ok_or_else(|| AadError::malformed_jwt("The 'exp' claim is not a number."))?,
    };
    let nbf = match jws.claims.get("nbf") {
        None => None,
        Some(value) => Some(
            numeric_date(value)
                .ok_or_else(|| AadError::malformed_jwt("The 'nbf' claim is not a number."))?,
        ),
    };

    match kind {
        Verified::Certificate => {
            if !sub.eq_ignore_ascii_case(client_id) {
                return Err(AadError::assertion_client_mismatch());
            }
            let (cert, thumbprint) = find_certificate(ctx.app, &jws.header)?;
            if !jws.verify(alg, &cert.public) {
                return Err(AadError::invalid_signature(
                    &thumbprint,
                    "The key was found, but use of the key to verify the signature failed",
                ));
            }
            if cert.not_after < time::OffsetDateTime::now_utc() {
                return Err(AadError::invalid_signature(
                    &thumbprint,
                    "The key used is expired",
                ));
            }
            if !auds
                .iter()
                .any(|aud| ctx.audiences.iter().any(|ok| ok.eq_ignore_ascii_case(aud)))
            {
                return Err(AadError::malformed_jwt(format_args!(
                    "The 'aud' claim '{}' is not the token endpoint this request was sent to ('{}').",
                    auds.join(" "),
                    ctx.audiences.first().map_or("", String::as_str)
                )));
            }
        }
        Verified::Federated => {
            let by_issuer: Vec<_> = ctx
                .app
                .federated
                .iter()
                .filter(|f| f.issuer == iss)
                .collect();
            if by_issuer.is_empty() {
                return Err(AadError::federated_issuer_mismatch(iss));
            }
            let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == sub).collect();
            if by_subject.is_empty() {
                return Err(AadError::federated_subject_mismatch(sub));
            }
            if !by_subject.iter().any(|f| {
                auds.iter()
                    .any(|aud| f.audiences.iter().any(|ok| ok == aud))
            }) {
                return Err(AadError::federated_audience_mismatch(&auds.join(" ")));
            }
            // Entra would fetch the issuer's keys through its OIDC discovery document. The
            // emulator has no network, so it trusts exactly one external issuer: itself.
            if iss != shared.federation_issuer() {
                return Err(AadError::invalid_signature(
                    "(none)",
                    "The signing keys of the issuer could not be retrieved; exosim can only verify tokens of its own issuer {url}/_federation",
                ));
            }
            let kid = jws.header.get("kid").and_then(Value::as_str);
            let thumbprint = shared.federation.thumbprints.sha1_hex();
            if kid.is_some_and(|kid| kid != shared.federation.thumbprints.x5t()) {
                return Err(AadError::invalid_signature(
                    kid.unwrap_or_default(),
                    "The issuer has no signing key with this key id",
                ));
            }
            if !jws.verify(alg, &shared.federation.public) {
                return Err(AadError::invalid_signature(
                    &thumbprint,
                    "The federated assertion has an invalid signature",
                ));
            }
        }
    }

    let now = unix_now();
    if now > exp.saturating_add(CLOCK_SKEW_SECS)
        || nbf.is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf)
    {
        return Err(AadError::outside_time_window(now, nbf, exp));
    }

    // Replay policy: see `ReplayCache`. The identical assertion again is fine (MSAL reuses one
    // assertion for ~540 s and Entra accepts that); another assertion with a used jti is not.
    if let Some(jti) = claim_str("jti") {
        let digest: [u8; 32] = Sha256::digest(assertion.as_bytes()).into();
        let forget_at = exp.saturating_add(CLOCK_SKEW_SECS);
        if shared
            .replay
            .check_and_remember(client_id, jti, digest, forget_at, now)
            == Replay::Replayed
        {
            return Err(AadError::malformed_jwt(format_args!(
                "The client assertion reuses jti '{jti}' of a different assertion already presented for this client: replayed assertions are refused."
            )));
        }
    }
    Ok(kind)
}

/// A JWT NumericDate: an integer, or a number with a fraction (truncated).
fn numeric_date(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.trunc() as i64)
    })
}

/// Finds the registered certificate the header points at. Returns it with the thumbprint to
/// quote in errors (upper-case hex SHA-1 when known, as Entra quotes it).
fn find_certificate<'a>(
    app: &'a App,
    header: &serde_json::Map<String, Value>,
) -> Result<(&'a AppCertificate, String), AadError> {
    let s256 = header.get("x5t#S256").and_then(Value::as_str);
    let sha1 = header.get("x5t").and_then(Value::as_str);
    let kid = header.get("kid").and_then(Value::as_str);
    if s256.is_none() && sha1.is_none() && kid.is_none() {
        return Err(AadError::no_key_reference());
    }

    // The leaf of an x5c chain, when sent, is the certificate the client signed with.
    let leaf = match header.get("x5c") {
        None => None,
        Some(Value::Array(chain)) => {
            let first = chain
                .first()
                .and_then(Value::as_str)
                .and_then(jose::decode_any_base64);
            Some(first.ok_or_else(|| {
                AadError::malformed_jwt("The 'x5c' header is not a list of base64 certificates.")
            })?)
        }
        Some(_) => {
            return Err(AadError::malformed_jwt(
                "The 'x5c' header is not a list of base64 certificates.",
            ));
        }
    };

    let sha1_bytes = sha1
        .and_then(jose::decode_any_base64)
        .filter(|b| b.len() == 20);
    let s256_bytes = s256
        .and_then(jose::decode_any_base64)
        .filter(|b| b.len() == 32);
    let found = app.certificates.iter().find(|c| {
        sha1_bytes.as_deref() == Some(&c.thumbprints.sha1[..])
            || s256_bytes.as_deref() == Some(&c.thumbprints.sha256[..])
            || kid.is_some_and(|kid| {
                kid.eq_ignore_ascii_case(&c.key_id)
                    || kid.eq_ignore_ascii_case(&c.thumbprints.sha1_hex())
                    || kid == c.thumbprints.x5t()
            })
    });

    let quoted = if let Some(bytes) = &sha1_bytes {
        hex_upper(bytes)
    } else if let Some(leaf) = &leaf {
        Thumbprints::of(leaf).sha1_hex()
    } else if let Some(bytes) = &s256_bytes {
        hex_upper(bytes)
    } else {
        sha1.or(s256).or(kid).unwrap_or_default().to_owned()
    };

    let Some(cert) = found else {
        return Err(AadError::key_not_registered(&app.client_id, &quoted));
    };
    if let Some(leaf) = leaf
        && leaf != cert.der
    {
        return Err(AadError::invalid_signature(
            &Thumbprints::of(&leaf).sha1_hex(),
            "The first certificate of the x5c chain is not the certificate named by the thumbprint",
        ));
    }
    Ok((cert, cert.thumbprints.sha1_hex()))
}
