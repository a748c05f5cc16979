//! Who is calling: OpenID Connect sign-in for the page, Entra access tokens for the API.
//!
//! [`Auth`] answers one question per request, [`Auth::caller`]: a person signed in through the
//! page (a session cookie) or a client presenting an Entra access token for this service
//! (`Authorization: Bearer`). Its [`routes`](Auth::routes) are the page's sign-in
//! (`GET /signin`, `GET /auth/callback`, `POST /signout`): authorization code with PKCE (S256)
//! against the tenant's Entra ID, a server-side session in a [`SessionStore`], and a cookie
//! holding only the session's random id. [`Auth::check_csrf`] guards every state-changing form.
//!
//! What it refuses: a token not signed RS256 by a key of the tenant's JWKS (`alg: none`, HMAC
//! with the public key as secret, unknown `kid`s), of another issuer, audience or tenant,
//! expired or not yet valid; as an API credential, an id_token (it has a `nonce`, or else no
//! `azp`/`appid`, which every access token names its client by), a token a
//! client app not allowed asked for (`azp`/`appid`), or one without a required scope or app
//! role; a sign-in callback not started by this browser, replayed, or with another `state` or
//! `nonce`; a return path off this service; a session past its expiry; a form without its
//! session's CSRF token for that form. v2.0 and v1.0 access tokens are both accepted, each by its own rules. A refusal
//! is a 401 (`WWW-Authenticate: Bearer error="invalid_token"`) or 403 with no detail, and a
//! log line with the reason. No token, code, cookie value or secret is ever logged, put in an
//! error, or printed by `Debug`.

mod csrf;
mod error;
mod flow;
mod provider;
pub mod return_to;
mod server_key;
mod session;
mod token;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{get, post};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

pub use error::{
    AuthError, AuthSetupError, ProviderError, SessionStoreError, SignInFailure, TokenRejection,
};
pub use flow::SIGNOUT_PATH;
pub use server_key::ServerKey;
pub use session::{MemorySessions, SessionId, SessionStore};
pub use token::{CLOCK_SKEW_SECONDS, MAX_TOKEN};

use csrf::CsrfKey;
use provider::Provider;
use session::SessionRecord;
use token::{ApiAccess, Expectations, Kind};

/// The session cookie's name over https: `__Host-` makes browsers refuse it unless it is
/// `Secure`, has `Path=/` and no `Domain`, so no other host (a sibling subdomain) can set it.
pub const SESSION_COOKIE: &str = "__Host-warden_session";
/// The session cookie's name when `secure_cookies` is false (plain http on loopback): browsers
/// drop a `__Host-` cookie that is not `Secure`, so it goes without the prefix there.
pub const SESSION_COOKIE_INSECURE: &str = "warden_session";
/// The pending sign-in's cookie (between `/signin` and `/auth/callback`).
pub const LOGIN_COOKIE: &str = "__Host-warden_login";
/// The pending sign-in's cookie without `secure_cookies`.
pub const LOGIN_COOKIE_INSECURE: &str = "warden_login";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The header that carries the CSRF token (a cookie-authenticated API call).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The delegated scope to expose on the app registration and require by default
/// ([`AuthConfig::required_scopes`]).
pub const DEFAULT_API_SCOPE: &str = "Tasks.Run";
/// The app role to define on the app registration and require by default
/// ([`AuthConfig::required_roles`]).
pub const DEFAULT_API_ROLE: &str = "Warden.Operator";
/// The longest session [`AuthConfig::session_ttl`] may ask for.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How the service signs people in and checks tokens.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The tenant's v2.0 authority, `https://login.microsoftonline.com/{tenant_id}/v2.0`: the
    /// OIDC metadata is at `{authority}/.well-known/openid-configuration`, and its `issuer`
    /// must be this very URL.
    pub authority: Url,
    /// The tenant's id (GUID): tokens must carry it as `tid`.
    pub tenant_id: String,
    /// The service's app registration (client id): the id_token's audience, and an accepted
    /// access-token audience.
    pub client_id: String,
    /// The app registration's client secret, for redeeming sign-in codes.
    pub client_secret: SecretString,
    /// The app ID URI (`api://…`): the other accepted access-token audience.
    pub app_id_uri: String,
    /// How browsers reach this service; the redirect URI is `{public_url}/auth/callback`.
    pub public_url: Url,
    /// How long a session lasts after sign-in (absolute, not sliding).
    pub session_ttl: Duration,
    /// `Secure` cookies; false only for plain http on loopback.
    pub secure_cookies: bool,
    /// Client apps (application ids) other than this service's own whose access tokens the API
    /// accepts, by the token's `azp` (v2.0) or `appid` (v1.0): the CLI or script registrations
    /// that call the API. Empty (the sensible default) accepts only tokens this service's own
    /// registration requested; a token any other app of the tenant obtained is refused.
    pub allowed_client_apps: Vec<String>,
    /// Delegated scopes an API access token may carry in `scp` (one is enough), e.g.
    /// [`DEFAULT_API_SCOPE`]. Together with `required_roles`: at least one must be non-empty.
    pub required_scopes: Vec<String>,
    /// App roles an API access token may carry in `roles` (one is enough), e.g.
    /// [`DEFAULT_API_ROLE`].
    pub required_roles: Vec<String>,
    /// The service's own random key (CSRF tokens, the sealed sign-in cookie): generated once
    /// and kept in the service's state, the same for every instance.
    pub server_key: ServerKey,
}

/// The person (or app) a request comes from, as Entra ID vouched for them.
///
/// Authorize on [`oid`](Self::oid) (and group ids) wherever the policy can: `upn` comes from
/// `preferred_username`, which a user or admin can change and which may be reused by another
/// account later; it is for display and for policies that can only name people by UPN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    /// The object id (`oid`): the stable identity.
    pub oid: String,
    /// `preferred_username` (the UPN); empty for an app-only token. Mutable: see above.
    pub upn: String,
    /// The display name (`name`), if given.
    pub name: String,
    /// The tenant (`tid`).
    pub tenant_id: String,
    /// Group object ids (`groups`), as the app registration's group claims give them.
    pub groups: Vec<String>,
    /// App role values (`roles`).
    pub roles: Vec<String>,
}

/// An authenticated caller and how they authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub person: SignedIn,
    /// How.
    pub via: Via,
}

/// How a caller authenticated.
#[derive(Debug, Clone)]
pub enum Via {
    /// The page's session cookie: state-changing requests need the CSRF token.
    Session {
        /// The session (never prints).
        id: SessionId,
    },
    /// An access token in `Authorization: Bearer`: no ambient credential, so no CSRF token.
    Bearer,
}

/// Sign-in, sessions and token checks for one service. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    provider: Provider,
    sessions: Arc<dyn SessionStore>,
    csrf: CsrfKey,
    login_seal: flow::LoginSeal,
    api_access: ApiAccess,
    redirect_uri: Url,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("authority", &self.inner.config.authority.as_str())
            .field("client_id", &self.inner.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Checks `config`, fetches the authority's OIDC metadata and signing keys, and is ready.
    /// `http` makes the calls to the identity provider.
    pub async fn new(
        config: AuthConfig,
        sessions: Arc<dyn SessionStore>,
        http: reqwest::Client,
    ) -> Result<Auth, AuthSetupError> {
        check_config(&config)?;
        let provider = Provider::discover(http, &config.authority).await?;
        if provider.metadata.issuer.trim_end_matches('/')
            != config.authority.as_str().trim_end_matches('/')
        {
            return Err(AuthSetupError::Config {
                field: "authority",
                problem: format!(
                    "the provider's metadata names issuer {:?}, not the authority {:?}",
                    provider.metadata.issuer,
                    config.authority.as_str()
                ),
                fix: "use the tenant-specific v2.0 authority, with the tenant id (GUID): \
                      https://login.microsoftonline.com/<tenant id>/v2.0",
            });
        }
        Ok(Self::with_provider(config, sessions, provider))
    }

    fn with_provider(
        config: AuthConfig,
        sessions: Arc<dyn SessionStore>,
        provider: Provider,
    ) -> Auth {
        let redirect_uri = redirect_uri(&config.public_url);
        let api_access = ApiAccess {
            app_id_uri: config.app_id_uri.clone(),
            client_apps: std::iter::once(config.client_id.clone())
                .chain(config.allowed_client_apps.iter().cloned())
                .collect(),
            scopes: config.required_scopes.clone(),
            roles: config.required_roles.clone(),
        };
        Auth {
            inner: Arc::new(Inner {
                csrf: CsrfKey::derive(&config.server_key),
                login_seal: flow::LoginSeal::derive(&config.server_key),
                api_access,
                config,
                provider,
                sessions,
                redirect_uri,
            }),
        }
    }

    /// The sign-in routes: `GET /signin?return_to=/path` (local paths only; anything else
    /// returns to `/`), `GET /auth/callback`, `POST /signout` (CSRF).
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let [signin, callback, signout] = Self::ROUTE_PATHS;
        Router::new()
            .route(signin, get(flow::signin))
            .route(callback, get(flow::callback))
            .route(signout, post(flow::signout))
            .with_state(self.clone())
    }

    /// The paths [`Auth::routes`] serves: sign-in, its callback, sign-out.
    pub const ROUTE_PATHS: [&'static str; 3] = ["/signin", "/auth/callback", SIGNOUT_PATH];

    /// Where to send a browser that must sign in first to see `return_to` (a local path).
    pub fn signin_path(return_to: &str) -> String {
        let mut path = String::from("/signin?");
        path.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair("return_to", return_to)
                .finish(),
        );
        path
    }

    /// The redirect URI registered for this service (`{public_url}/auth/callback`).
    pub fn redirect_uri(&self) -> &Url {
        &self.inner.redirect_uri
    }

    /// Who is calling: the `Authorization: Bearer` access token if the request has one (the
    /// cookie is then not looked at), else the session cookie. An `Authorization` header of
    /// another scheme (a proxy's `Basic`) is not ours and is ignored; a `Bearer` one that is
    /// malformed, or several `Bearer` headers, is a bad request.
    pub async fn caller(&self, parts: &Parts) -> Result<Caller, AuthError> {
        let bearers: Vec<_> = parts
            .headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter(|value| is_bearer_scheme(value.as_bytes()))
            .collect();
        if let Some(value) = bearers.first() {
            if bearers.len() > 1 {
                return Err(AuthError::MalformedAuthorization);
            }
            let token = value
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or(AuthError::MalformedAuthorization)?;
            let config = &self.inner.config;
            let person = token::verify(
                &self.inner.provider,
                token,
                &Expectations {
                    issuer: &self.inner.provider.metadata.issuer,
                    client_id: &config.client_id,
                    tenant_id: &config.tenant_id,
                    kind: Kind::AccessToken(&self.inner.api_access),
                },
            )
            .await?;
            return Ok(Caller {
                person,
                via: Via::Bearer,
            });
        }
        match self.session(&parts.headers).await? {
            Some((id, record)) => Ok(Caller {
                person: record.person,
                via: Via::Session { id },
            }),
            None if flow::cookie_value(&parts.headers, self.session_cookie_name()).is_some() => {
                Err(AuthError::UnknownSession)
            }
            None => Err(AuthError::NoCredentials),
        }
    }

    /// The live session the request's cookie names, if any. An expired one is deleted.
    async fn session(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<(SessionId, SessionRecord)>, AuthError> {
        let Some(id) = flow::cookie_value(headers, self.session_cookie_name())
            .and_then(|value| SessionId::from_cookie(&value))
        else {
            return Ok(None);
        };
        let key = id.store_key();
        let Some(data) = self.inner.sessions.get(&key).await? else {
            return Ok(None);
        };
        match serde_json::from_value::<SessionRecord>(data) {
            Ok(record) if session::unexpired(record.expires_at) => Ok(Some((id, record))),
            _ => {
                self.inner.sessions.delete(&key).await?;
                Ok(None)
            }
        }
    }

    /// The CSRF token for `caller`'s form that posts to `target` (its action path; field
    /// [`CSRF_FIELD`]), or for a cookie-authenticated API call to path `target` (header
    /// [`CSRF_HEADER`]). Good for that one target only. Empty for a bearer caller, who needs none.
    pub fn csrf_token(&self, caller: &Caller, target: &str) -> String {
        match &caller.via {
            Via::Session { id } => self.inner.csrf.token(id, target),
            Via::Bearer => String::new(),
        }
    }

    /// Checks the CSRF token of a state-changing request to `target`: a session caller must
    /// send its session's token for that target; a bearer caller needs none.
    pub fn check_csrf(&self, caller: &Caller, target: &str, token: &str) -> Result<(), AuthError> {
        match &caller.via {
            Via::Bearer => Ok(()),
            Via::Session { id } if self.inner.csrf.verify(id, target, token) => Ok(()),
            Via::Session { .. } => Err(AuthError::Csrf),
        }
    }

    /// [`check_csrf`](Self::check_csrf) of a cookie-authenticated API call: the token from
    /// header [`CSRF_HEADER`], for the request's path.
    pub fn check_csrf_header(&self, caller: &Caller, parts: &Parts) -> Result<(), AuthError> {
        let token = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        self.check_csrf(caller, parts.uri.path(), token)
    }

    /// The session cookie's name under this configuration.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.inner.config.secure_cookies {
            SESSION_COOKIE
        } else {
            SESSION_COOKIE_INSECURE
        }
    }

    fn login_cookie_name(&self) -> &'static str {
        if self.inner.config.secure_cookies {
            LOGIN_COOKIE
        } else {
            LOGIN_COOKIE_INSECURE
        }
    }

    /// The session lifetime (bounded by [`MAX_SESSION_TTL`] in `check_config`, so adding it
    /// to now never overflows).
    fn session_ttl(&self) -> time::Duration {
        time::Duration::try_from(self.inner.config.session_ttl.min(MAX_SESSION_TTL))
            .unwrap_or(time::Duration::DAY)
    }

    /// A cookie as every cookie of ours is: HttpOnly, SameSite=Lax (sent on the provider's
    /// top-level redirect back to us, not on cross-site subrequests or POSTs), Path=/, no
    /// Domain, Secure unless configured off.
    fn cookie(
        &self,
        name: &'static str,
        value: String,
        max_age: Option<time::Duration>,
    ) -> cookie::Cookie<'static> {
        let mut cookie = cookie::Cookie::build((name, value))
            .http_only(true)
            .secure(self.inner.config.secure_cookies)
            .same_site(cookie::SameSite::Lax)
            .path("/");
        if let Some(max_age) = max_age {
            cookie = cookie.max_age(max_age);
        }
        cookie.build()
    }

    /// A `Set-Cookie` that removes cookie `name`.
    fn removal_cookie(&self, name: &'static str) -> cookie::Cookie<'static> {
        self.cookie(name, String::new(), Some(time::Duration::ZERO))
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Auth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Auth::from_ref(state).caller(parts).await
    }
}

/// Whether an `Authorization` value is of the Bearer scheme (without case), well formed or not.
fn is_bearer_scheme(value: &[u8]) -> bool {
    value.len() >= 6
        && value[..6].eq_ignore_ascii_case(b"bearer")
        && value.get(6).is_none_or(|b| b.is_ascii_whitespace())
}

/// `{public_url}auth/callback`, keeping `public_url`'s path (a service under a path prefix).
fn redirect_uri(public_url: &Url) -> Url {
    let mut base = public_url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.set_query(None);
    base.set_fragment(None);
    base.join("auth/callback")
        .expect("a relative path joins any http(s) URL")
}

/// The token of `Bearer <token>` (scheme without case, one space, token68 characters).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.bytes().all(token68))
        .then_some(token)
}

fn check_config(config: &AuthConfig) -> Result<(), AuthSetupError> {
    let problem = |field, problem: String, fix| {
        Err(AuthSetupError::Config {
            field,
            problem,
            fix,
        })
    };
    if !(config.authority.scheme() == "https" || is_loopback_http(&config.authority)) {
        return problem(
            "authority",
            format!("{:?} is not https", config.authority.as_str()),
            "use https://login.microsoftonline.com/<tenant id>/v2.0 (plain http only on loopback, for tests)",
        );
    }
    for (field, value, fix) in [
        (
            "tenant_id",
            &config.tenant_id,
            "set the tenant id (GUID) of the app registration",
        ),
        (
            "client_id",
            &config.client_id,
            "set the service app registration's application (client) id",
        ),
        (
            "app_id_uri",
            &config.app_id_uri,
            "set the app registration's Application ID URI (api://<client id>)",
        ),
    ] {
        if value.trim().is_empty() {
            return problem(field, "is empty".into(), fix);
        }
    }
    if config.client_secret.expose_secret().is_empty() {
        return problem(
            "client_secret",
            "is empty".into(),
            "give the service app registration's client secret",
        );
    }
    if !matches!(config.public_url.scheme(), "https" | "http") || config.public_url.host().is_none()
    {
        return problem(
            "public_url",
            format!("{:?} is not an http(s) URL", config.public_url.as_str()),
            "give the URL browsers reach the service at, e.g. https://warden.example.com/",
        );
    }
    if !config.secure_cookies && !is_loopback_http(&config.public_url) {
        return problem(
            "secure_cookies",
            format!(
                "is off while the service is reached at {:?}",
                config.public_url.as_str()
            ),
            "keep secure cookies on; they may be off only for plain http on loopback",
        );
    }
    if config.session_ttl.is_zero() || config.session_ttl > MAX_SESSION_TTL {
        return problem(
            "session_ttl",
            format!(
                "is {} seconds, not between 1 second and {} days",
                config.session_ttl.as_secs(),
                MAX_SESSION_TTL.as_secs() / 86_400
            ),
            "give sessions a lifetime such as 8 hours",
        );
    }
    if config.required_scopes.is_empty() && config.required_roles.is_empty() {
        return problem(
            "required_scopes",
            "and required_roles are both empty, so no access token would carry a permission".into(),
            "require the scope the app registration exposes (e.g. Tasks.Run) and/or its app role (e.g. Warden.Operator)",
        );
    }
    for (field, values) in [
        ("allowed_client_apps", &config.allowed_client_apps),
        ("required_scopes", &config.required_scopes),
        ("required_roles", &config.required_roles),
    ] {
        if values
            .iter()
            .any(|v| v.trim().is_empty() || v.contains(' '))
        {
            return problem(
                field,
                "holds an empty value or one with a space".into(),
                "list one application id, scope or role value per entry",
            );
        }
    }
    Ok(())
}

/// `http://` to 127.0.0.0/8, `[::1]` or `localhost`.
fn is_loopback_http(url: &Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        }
}
