//! The HTTP transport the credentials speak through, as a trait so tests can queue responses
//! and inspect requests without sockets.
//!
//! [`ReqwestTransport`] is the real one: rustls on *ring*, the system roots plus any extra CA
//! (`WARDEN_CA_FILE` or `SSL_CERT_FILE`), no redirects (a token endpoint that redirects is
//! misconfigured, and following it could carry a secret elsewhere). Request bodies carry
//! secrets, so they are zeroized when dropped.
//!
//! [`Auth`] is how an Exchange request authenticates (`Bearer` or `Basic`). No layer above the
//! real transports holds an `Authorization` string: they call [`Auth::header_value`] while
//! building the request they put on the wire, and its value is marked sensitive.

use crate::error::AuthError;
use crate::secret::AccessToken;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{HeaderValue, InvalidHeaderValue};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// One HTTP request.
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Absolute URL.
    pub url: String,
    /// Header name/value pairs.
    pub headers: Vec<(String, String)>,
    /// The body; zeroized on drop because it may hold a client secret or assertion.
    pub body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "header_names",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// How a request authenticates. `Debug` shows the scheme only, never the token or password.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(AccessToken),
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: BasicPassword,
    },
}

/// The password half of Basic credentials.
#[derive(Clone)]
pub enum BasicPassword {
    /// `Bearer <token>`: OAuth through Basic (RPS' `BasicAuthToOAuthConversion=true`).
    Bearer(AccessToken),
    /// A plain password (on-premises Basic).
    Secret(SecretString),
}

impl Auth {
    /// The `Authorization` header's value, marked sensitive (hyper and reqwest redact it). Only a
    /// transport putting the request on the wire, or a test standing in for one, calls this.
    pub fn header_value(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        let mut value = match self {
            Auth::Bearer(token) => HeaderValue::from_str(&zeroize::Zeroizing::new(format!(
                "Bearer {}",
                token.expose()
            )))?,
            Auth::Basic { user, password } => {
                let password = zeroize::Zeroizing::new(match password {
                    BasicPassword::Bearer(token) => format!("Bearer {}", token.expose()),
                    BasicPassword::Secret(secret) => secret.expose_secret().to_owned(),
                });
                let pair = zeroize::Zeroizing::new(format!("{user}:{}", password.as_str()));
                HeaderValue::from_str(&zeroize::Zeroizing::new(format!(
                    "Basic {}",
                    STANDARD.encode(pair.as_bytes())
                )))?
            }
        };
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer([redacted])"),
            Auth::Basic { user, password } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", password)
                .finish(),
        }
    }
}

impl fmt::Debug for BasicPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BasicPassword::Bearer(_) => "Bearer([redacted])",
            BasicPassword::Secret(_) => "Secret([redacted])",
        })
    }
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header name (lower case)/value pairs.
    pub headers: Vec<(String, String)>,
    /// The body. A token response body holds a token: callers parse it and drop it.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends HTTP requests.
#[async_trait]
pub trait HttpTransport: Send + Sync + fmt::Debug {
    /// Sends one request. An error means no response arrived (connect, TLS, timeout).
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, AuthError>;
}

/// The real transport: reqwest with rustls.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport trusting the system roots plus the PEM CA bundle at `extra_ca`, if given.
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, AuthError> {
        let client = https_client_builder(extra_ca)?
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| AuthError::Config {
                what: format!("the HTTPS client could not be built: {e}"),
                fix: "check the CA file".into(),
            })?;
        Ok(Self { client })
    }

    /// The underlying client, for crates that speak other protocols with the same trust.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// The HTTPS client settings every warden connection shares: rustls on *ring*, the system
/// roots plus `extra_ca` (a PEM bundle), no redirects, a connect timeout, warden's User-Agent.
pub fn https_client_builder(extra_ca: Option<&Path>) -> Result<reqwest::ClientBuilder, AuthError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("exo-warden/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|e| AuthError::Config {
            what: format!("the CA file {} cannot be read: {e}", path.display()),
            fix: "point WARDEN_CA_FILE (or SSL_CERT_FILE) at a readable PEM file".into(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| AuthError::Config {
            what: format!(
                "the CA file {} is not a PEM certificate bundle: {e}",
                path.display()
            ),
            fix: "export the CA as PEM (-----BEGIN CERTIFICATE-----)".into(),
        })?;
        if certs.is_empty() {
            return Err(AuthError::Config {
                what: format!("the CA file {} holds no certificate", path.display()),
                fix: "export the CA as PEM (-----BEGIN CERTIFICATE-----)".into(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// Installs rustls' *ring* provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[async_trait]
impl HttpTransport for ReqwestTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, AuthError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .expect("methods are static and valid");
        let mut builder = self.client.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.to_vec());
        }
        let response = builder.send().await.map_err(|e| AuthError::Transport {
            url: strip_query(&request.url),
            reason: error_chain(&e),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.bytes().await.map_err(|e| AuthError::Transport {
            url: strip_query(&request.url),
            reason: error_chain(&e),
        })?;
        Ok(HttpResponse {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

/// The URL without its query, for error messages (a query may carry identifiers).
pub(crate) fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// An error with all its causes, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const TOKEN: &str = "eyJ0eXAi.TOKEN-CANARY.sig";
    const PASSWORD: &str = "PASSWORD-CANARY";

    fn token() -> AccessToken {
        let now = SystemTime::now();
        AccessToken::new(TOKEN.into(), now, now)
    }

    fn basic(password: BasicPassword) -> Auth {
        Auth::Basic {
            user: "admin@contoso".into(),
            password,
        }
    }

    #[test]
    fn the_header_is_bearer_or_basic_and_marked_sensitive() {
        let bearer = Auth::Bearer(token()).header_value().unwrap();
        assert_eq!(bearer.to_str().unwrap(), format!("Bearer {TOKEN}"));
        assert!(bearer.is_sensitive());

        let plain = basic(BasicPassword::Secret(PASSWORD.to_owned().into()))
            .header_value()
            .unwrap();
        let expected = STANDARD.encode(format!("admin@contoso:{PASSWORD}"));
        assert_eq!(plain.to_str().unwrap(), format!("Basic {expected}"));
        assert!(plain.is_sensitive());

        let oauth = basic(BasicPassword::Bearer(token()))
            .header_value()
            .unwrap();
        let expected = STANDARD.encode(format!("admin@contoso:Bearer {TOKEN}"));
        assert_eq!(oauth.to_str().unwrap(), format!("Basic {expected}"));
    }

    #[test]
    fn debug_shows_the_scheme_and_user_but_no_secret() {
        let all = [
            Auth::Bearer(token()),
            basic(BasicPassword::Secret(PASSWORD.to_owned().into())),
            basic(BasicPassword::Bearer(token())),
        ];
        for auth in all {
            let shown = format!("{auth:?} {auth:#?}");
            let header = auth.header_value().unwrap();
            let header = header.to_str().unwrap();
            for secret in [TOKEN, PASSWORD, header, header.split(' ').nth(1).unwrap()] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn a_header_breaking_token_is_refused_not_sent() {
        let now = SystemTime::now();
        let broken = AccessToken::new("a\r\nX-Injected: 1".into(), now, now);
        assert!(Auth::Bearer(broken).header_value().is_err());
    }
}
