//! The page's sign-in: `GET /signin`, `GET /auth/callback`, `POST /signout`.
//!
//! OpenID Connect authorization code flow with PKCE (S256), as Entra ID v2.0 documents it. The
//! request's secrets (state, nonce, PKCE verifier) and the return path are sealed (AES-256-GCM
//! under a subkey of the server key) into a short-lived cookie: `/signin` writes nothing
//! server-side, so anonymous requests cannot fill the store. The callback completes only in the
//! browser that holds the cookie (no login CSRF), and only once: the cookie is removed, and a
//! completed sign-in leaves a marker under its `state` until the cookie would have expired, so
//! a replayed cookie is refused before any code is redeemed.

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::error::{AuthError, SignInFailure};
use super::server_key::ServerKey;
use super::session::{
    PendingLogin, SessionId, SessionRecord, random_token, store_key, unexpired, unix_expiry,
};
use super::token::{self, Expectations, Kind};
use super::{Auth, CSRF_FIELD, CSRF_HEADER, return_to};

/// How long a started sign-in may take to come back.
pub(crate) const PENDING_LOGIN_TTL: time::Duration = time::Duration::minutes(10);
/// Scopes asked for at sign-in: who the person is, nothing else.
const SIGN_IN_SCOPES: &str = "openid profile";
/// The longest return path kept (the sealed cookie must stay well under 4 KiB).
const MAX_RETURN_TO: usize = 1024;

/// Seals a [`PendingLogin`] into its cookie value and opens it again. Never prints.
pub(crate) struct LoginSeal(aes_gcm::Aes256Gcm);

impl LoginSeal {
    const LABEL: &[u8] = b"exo-warden serve login cookie v1";
    const NONCE: usize = 12;

    pub fn derive(server_key: &ServerKey) -> Self {
        use aes_gcm::KeyInit as _;
        let key = server_key.subkey(Self::LABEL);
        Self(aes_gcm::Aes256Gcm::new_from_slice(&key).expect("a 256-bit key"))
    }

    /// base64url(nonce ‖ ciphertext ‖ tag); the cookie's name is the associated data, so a
    /// value sealed for one cookie never opens as another.
    fn seal(&self, cookie_name: &str, pending: &PendingLogin) -> String {
        use aes_gcm::aead::{Aead as _, Payload};
        let mut nonce = [0u8; Self::NONCE];
        rand::fill(&mut nonce);
        let plain = serde_json::to_vec(pending).expect("a pending sign-in serialises");
        let sealed = self
            .0
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plain,
                    aad: cookie_name.as_bytes(),
                },
            )
            .expect("AES-GCM seals any short message");
        let mut value = nonce.to_vec();
        value.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(value)
    }

    /// The pending sign-in `value` seals, if this service sealed it for `cookie_name`.
    fn open(&self, cookie_name: &str, value: &str) -> Option<PendingLogin> {
        use aes_gcm::aead::{Aead as _, Payload};
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        if bytes.len() < Self::NONCE {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(Self::NONCE);
        let nonce: [u8; Self::NONCE] = nonce.try_into().ok()?;
        let plain = self
            .0
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: sealed,
                    aad: cookie_name.as_bytes(),
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

#[derive(Deserialize)]
pub(crate) struct SignInQuery {
    return_to: Option<String>,
}

/// `GET /signin?return_to=/path`: starts a sign-in and sends the browser to the provider.
pub(crate) async fn signin(
    State(auth): State<Auth>,
    Query(query): Query<SignInQuery>,
) -> Result<Response, AuthError> {
    let requested = query.return_to.unwrap_or_else(|| "/".to_owned());
    let return_to = match return_to::local_path(&requested) {
        Some(path) if path.len() <= MAX_RETURN_TO => path.to_owned(),
        _ => {
            tracing::warn!(
                "sign-in asked to return off this service (or too far); returning to / instead"
            );
            "/".to_owned()
        }
    };
    let pending = PendingLogin {
        state: random_token(),
        nonce: random_token(),
        verifier: random_token(),
        return_to,
        expires_at: unix_expiry(OffsetDateTime::now_utc() + PENDING_LOGIN_TTL),
    };
    let sealed = auth
        .inner
        .login_seal
        .seal(auth.login_cookie_name(), &pending);

    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
    let mut location = auth.inner.provider.metadata.authorization_endpoint.clone();
    location
        .query_pairs_mut()
        .append_pair("client_id", &auth.inner.config.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", auth.inner.redirect_uri.as_str())
        .append_pair("response_mode", "query")
        .append_pair("scope", SIGN_IN_SCOPES)
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    let mut response = redirect(StatusCode::FOUND, location.as_str());
    let cookie = auth.cookie(auth.login_cookie_name(), sealed, Some(PENDING_LOGIN_TTL));
    append_cookie(&mut response, &cookie);
    Ok(response)
}

/// `GET /auth/callback?code&state` (or `?error&error_description&state`): completes the
/// sign-in, makes a new session and returns the browser where it asked to go.
pub(crate) async fn callback(
    State(auth): State<Auth>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match complete_sign_in(&auth, &headers, query.as_deref()).await {
        Ok(response) => response,
        Err(error) => {
            // A failed callback uses up this browser's pending sign-in: it starts again.
            let mut response = error.into_response();
            append_cookie(
                &mut response,
                &auth.removal_cookie(auth.login_cookie_name()),
            );
            response
        }
    }
}

async fn complete_sign_in(
    auth: &Auth,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response, AuthError> {
    let params = first_values(query.unwrap_or_default());
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };

    // The pending sign-in this browser holds, sealed by us and not expired.
    let pending: PendingLogin = cookie_value(headers, auth.login_cookie_name())
        .and_then(|value| auth.inner.login_seal.open(auth.login_cookie_name(), &value))
        .filter(|pending| unexpired(pending.expires_at))
        .ok_or(SignInFailure::NoPendingLogin)?;
    let state = param("state").unwrap_or_default();
    if !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
        return Err(SignInFailure::StateMismatch.into());
    }
    // A sign-in completes once: its marker is written when it does (below).
    let completed_key = store_key("login-done", &pending.state);
    if auth.inner.sessions.get(&completed_key).await?.is_some() {
        return Err(SignInFailure::NoPendingLogin.into());
    }
    if let Some(error) = param("error") {
        return Err(SignInFailure::Provider(error_code(error)).into());
    }
    let code = param("code")
        .filter(|code| !code.is_empty())
        .ok_or(SignInFailure::NoCode)?;

    let answer = auth
        .inner
        .provider
        .redeem_code(&[
            ("grant_type", "authorization_code"),
            ("client_id", &auth.inner.config.client_id),
            (
                "client_secret",
                auth.inner.config.client_secret.expose_secret(),
            ),
            ("code", code),
            ("redirect_uri", auth.inner.redirect_uri.as_str()),
            ("code_verifier", &pending.verifier),
            ("scope", SIGN_IN_SCOPES),
        ])
        .await?
        .map_err(|refused| SignInFailure::CodeRefused {
            error: error_code(&refused.error),
            codes: refused.error_codes,
        })?;
    let id_token = answer.id_token.ok_or(SignInFailure::NoIdToken)?;
    let config = &auth.inner.config;
    let person = token::verify(
        &auth.inner.provider,
        &id_token,
        &Expectations {
            issuer: &auth.inner.provider.metadata.issuer,
            client_id: &config.client_id,
            tenant_id: &config.tenant_id,
            kind: Kind::IdToken {
                nonce: &pending.nonce,
            },
        },
    )
    .await
    .map_err(|error| match error {
        AuthError::Token(rejection) => SignInFailure::IdToken(rejection).into(),
        other => other,
    })?;

    // Only a sign-in the provider vouched for writes this marker: no anonymous store writes.
    let completed_until = OffsetDateTime::from_unix_timestamp(pending.expires_at)
        .unwrap_or_else(|_| OffsetDateTime::now_utc() + PENDING_LOGIN_TTL);
    auth.inner
        .sessions
        .put(
            &completed_key,
            &serde_json::Value::Bool(true),
            completed_until,
        )
        .await?;

    // A new id at every sign-in; the session this browser had before, if any, ends.
    if let Some(old) = cookie_value(headers, auth.session_cookie_name())
        .and_then(|value| SessionId::from_cookie(&value))
    {
        auth.inner.sessions.delete(&old.store_key()).await?;
    }
    let session = SessionId::generate();
    let expires_at = OffsetDateTime::now_utc() + auth.session_ttl();
    tracing::info!(oid = %person.oid, upn = %person.upn, "signed in");
    let record = SessionRecord {
        person,
        expires_at: unix_expiry(expires_at),
    };
    auth.inner
        .sessions
        .put(
            &session.store_key(),
            &serde_json::to_value(&record).expect("a session serialises"),
            expires_at,
        )
        .await?;

    let mut response = redirect(StatusCode::SEE_OTHER, &pending.return_to);
    let session_cookie = auth.cookie(
        auth.session_cookie_name(),
        session.expose().to_owned(),
        Some(auth.session_ttl()),
    );
    append_cookie(&mut response, &session_cookie);
    append_cookie(
        &mut response,
        &auth.removal_cookie(auth.login_cookie_name()),
    );
    Ok(response)
}

/// Where the sign-out form posts (its CSRF tokens are for this target).
pub const SIGNOUT_PATH: &str = "/signout";

/// `POST /signout` (form field `csrf` or header `X-CSRF-Token`): ends the session.
pub(crate) async fn signout(
    State(auth): State<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AuthError> {
    let mut response = redirect(StatusCode::SEE_OTHER, "/");
    if let Some((session, _)) = auth.session(&headers).await? {
        let form = first_values(std::str::from_utf8(&body).unwrap_or_default());
        let token = form
            .iter()
            .find(|(key, _)| key == CSRF_FIELD)
            .map(|(_, value)| value.as_str())
            .or_else(|| headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()))
            .unwrap_or_default();
        if !auth.inner.csrf.verify(&session, SIGNOUT_PATH, token) {
            return Err(AuthError::Csrf);
        }
        auth.inner.sessions.delete(&session.store_key()).await?;
        tracing::info!("signed out");
    }
    // Nothing to protect without a live session: clear the cookie either way.
    append_cookie(
        &mut response,
        &auth.removal_cookie(auth.session_cookie_name()),
    );
    Ok(response)
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location).expect("a validated location is a header value"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn append_cookie(response: &mut Response, cookie: &cookie::Cookie<'_>) {
    let value = HeaderValue::from_str(&cookie.to_string()).expect("our cookies are header-safe");
    response.headers_mut().append(header::SET_COOKIE, value);
}

/// The value of cookie `name` in the request, when it is there exactly once (or several times
/// with one value): two different values (cookie tossing) count as none.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for header in headers.get_all(header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for cookie in cookie::Cookie::split_parse(text).flatten() {
            if cookie.name() != name {
                continue;
            }
            match &found {
                Some(value) if value != cookie.value() => return None,
                _ => found = Some(cookie.value().to_owned()),
            }
        }
    }
    found
}

/// A query string or form body as pairs, the first of each name only.
fn first_values(text: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(text.as_bytes()) {
        if !pairs.iter().any(|(seen, _)| *seen == key) {
            pairs.push((key.into_owned(), value.into_owned()));
        }
    }
    pairs
}

/// An OAuth `error` value fit for a log line: the protocol's alphabet, cut short.
fn error_code(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}
