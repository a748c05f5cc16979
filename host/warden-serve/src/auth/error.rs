//! Why a caller was refused, as types: [`AuthError`] for a request, [`TokenRejection`] for a
//! token, [`AuthSetupError`] for a service that cannot start.
//!
//! An [`AuthError`] answers the client with a status and a fixed text (401 with
//! `WWW-Authenticate: Bearer error="invalid_token"` for a bad credential) and tells the log the
//! reason. Neither ever holds a token, a code, a cookie value or the client secret: the reasons
//! are enums, and the only text they carry is claim values of a token whose signature verified
//! (Entra's statement, not the caller's) or error codes of the identity provider.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request's caller is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No session cookie and no `Authorization` header.
    #[error("no credentials: neither a session cookie nor an Authorization header")]
    NoCredentials,
    /// A `Bearer` `Authorization` header that is malformed, or several (400 invalid_request).
    #[error("the Authorization header is not one `Bearer <token>`")]
    MalformedAuthorization,
    /// The session cookie names no session, or one that has expired.
    #[error("the session cookie names no live session")]
    UnknownSession,
    /// The bearer token was refused.
    #[error("the bearer token was refused: {0}")]
    Token(#[from] TokenRejection),
    /// A state-changing request came without the session's CSRF token, or with another.
    #[error("the CSRF token is missing or is not this session's")]
    Csrf,
    /// The sign-in callback could not complete a sign-in.
    #[error("sign-in did not complete: {0}")]
    SignIn(#[from] SignInFailure),
    /// The identity provider (metadata, keys or token endpoint) could not be used.
    #[error("the identity provider could not be used: {0}")]
    Provider(#[from] ProviderError),
    /// The session store failed.
    #[error("the session store failed: {0}")]
    Store(#[from] SessionStoreError),
}

/// Why a JWT (a bearer access token, or the id_token of a sign-in) was refused. Checked in this
/// order; the first failing check is the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    /// Not a compact JWS within the size limit, or a claim of the wrong type.
    #[error("not a well-formed JWT")]
    Malformed,
    /// The header's `alg` is not RS256 (`none`, HMAC, EC, PS… are all refused).
    #[error("algorithm {0:?} is not accepted (RS256 only)")]
    Algorithm(String),
    /// The header names no `kid`.
    #[error("the token header names no key (kid)")]
    MissingKid,
    /// The `kid` is not among the tenant's signing keys, even after refetching them.
    #[error("the token's key (kid) is not one of the tenant's signing keys")]
    UnknownKid,
    /// The signature does not verify with the named key.
    #[error("the signature does not verify")]
    Signature,
    /// `exp` has passed (beyond the clock-skew leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the clock-skew leeway).
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// A claim this service needs is absent.
    #[error("the token has no {0:?} claim")]
    MissingClaim(&'static str),
    /// `iss` is not the configured authority's issuer.
    #[error("issuer {0:?} is not the configured authority's")]
    Issuer(String),
    /// `aud` is not this service (client id or app ID URI).
    #[error("audience {0:?} is not this service")]
    Audience(String),
    /// `tid` is not the configured tenant.
    #[error("tenant {0:?} is not the configured tenant")]
    Tenant(String),
    /// The id_token's `nonce` is not the one this sign-in sent.
    #[error("the nonce is not this sign-in's")]
    Nonce,
    /// An access token without one of the configured scopes (`scp`) or app roles (`roles`).
    #[error("the token carries none of the scopes or app roles this API requires")]
    NoPermissions,
    /// A token with a `nonce` presented as an access token: an id_token, not a permission.
    #[error("the token is an id_token (it has a nonce), not an access token")]
    NotAnAccessToken,
    /// The access token was requested by a client app (`azp`/`appid`) not allowed to call us.
    #[error("client app {0:?} is not allowed to call this API")]
    ClientApp(String),
    /// The access token's `ver` is neither `1.0` nor `2.0`.
    #[error("token version {0:?} is not 1.0 or 2.0")]
    Version(String),
}

/// Why the sign-in callback could not complete.
#[derive(Debug, thiserror::Error)]
pub enum SignInFailure {
    /// No pending sign-in for this browser (no login cookie, or its record expired or was used).
    #[error("no pending sign-in for this browser (expired, already used, or started elsewhere)")]
    NoPendingLogin,
    /// The `state` is not the pending sign-in's.
    #[error("the state parameter is not this browser's pending sign-in")]
    StateMismatch,
    /// The identity provider answered with an error instead of a code.
    #[error("the identity provider answered {0:?}")]
    Provider(String),
    /// The callback carries no code.
    #[error("the callback carries no authorization code")]
    NoCode,
    /// The token endpoint refused the code.
    #[error("the token endpoint refused the code: {error} {codes:?}")]
    CodeRefused {
        /// The OAuth `error` (e.g. `invalid_grant`).
        error: String,
        /// Entra's `error_codes` (AADSTS numbers).
        codes: Vec<u64>,
    },
    /// The token endpoint's answer has no id_token.
    #[error("the token endpoint's answer has no id_token")]
    NoIdToken,
    /// The id_token was refused.
    #[error("the id_token was refused: {0}")]
    IdToken(TokenRejection),
}

/// The identity provider could not be used (network, status, or an answer we cannot read).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request did not complete (connection, TLS, timeout).
    #[error("{what}: the request to {url} failed: {reason}")]
    Unreachable {
        /// What was being fetched.
        what: &'static str,
        /// Where (an endpoint URL; none carries a secret).
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// An HTTP status other than success.
    #[error("{what}: {url} answered HTTP {status}")]
    Status {
        /// What was being fetched.
        what: &'static str,
        /// Where.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The answer is not what the protocol says (not JSON, a field missing, too large).
    #[error("{what}: the answer from {url} is unusable: {reason}")]
    Unusable {
        /// What was being fetched.
        what: &'static str,
        /// Where.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// A session store's failure, whatever the store (SQLite, PostgreSQL, memory).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SessionStoreError(#[from] pub Box<dyn std::error::Error + Send + Sync>);

/// Why [`super::Auth::new`] could not start: a configuration error (naming the field and the
/// fix), or a provider that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A configuration value is unusable.
    #[error("auth configuration: {field}: {problem}; fix: {fix}")]
    Config {
        /// The `AuthConfig` field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
        /// What to do.
        fix: &'static str,
    },
    /// The OIDC metadata or the signing keys could not be fetched or read.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl AuthError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MalformedAuthorization => StatusCode::BAD_REQUEST,
            AuthError::NoCredentials
            | AuthError::UnknownSession
            | AuthError::Token(_)
            | AuthError::SignIn(_) => StatusCode::UNAUTHORIZED,
            AuthError::Csrf => StatusCode::FORBIDDEN,
            AuthError::Provider(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        // The reason goes to the log, never to the client: a forger learns nothing from the answer.
        match &self {
            AuthError::NoCredentials => tracing::debug!(reason = %self, "caller refused"),
            AuthError::Provider(_) | AuthError::Store(_) => {
                tracing::error!(reason = %self, "authentication could not be done")
            }
            _ => tracing::warn!(reason = %self, "caller refused"),
        }
        let body = match &self {
            AuthError::SignIn(_) => "Sign-in did not complete. Start again at /signin.\n",
            AuthError::Csrf => "Forbidden: the form is stale or was not sent by this page.\n",
            AuthError::Provider(_) => "The identity provider is unavailable. Try again later.\n",
            AuthError::Store(_) => "Internal error.\n",
            AuthError::MalformedAuthorization => "Bad request: malformed Authorization header.\n",
            _ => "Unauthorized.\n",
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
            // RFC 6750 §3: no error code when the request carried no credential at all.
            let challenge = match self {
                AuthError::NoCredentials => r#"Bearer realm="warden""#,
                AuthError::MalformedAuthorization => {
                    r#"Bearer realm="warden", error="invalid_request""#
                }
                _ => r#"Bearer realm="warden", error="invalid_token""#,
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
