//! The HTTP transport the credentials speak through, as a trait so tests can queue responses
//! and inspect requests without sockets.
//!
//! [`ReqwestTransport`] is the real one: rustls on *ring*, the system roots plus any extra CA
//! (`WARDEN_CA_FILE` or `SSL_CERT_FILE`), no redirects (a token endpoint that redirects is
//! misconfigured, and following it could carry a secret elsewhere). Request bodies carry
//! secrets, so they are zeroized when dropped.

use crate::error::AuthError;
use async_trait::async_trait;
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
