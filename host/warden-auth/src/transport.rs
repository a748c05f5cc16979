//! The one HTTP interface every warden connection goes through: token requests to Entra,
//! REST `InvokeCommand` POSTs and WinRM (RPS) POSTs to Exchange. A trait, [`HttpTransport`], so
//! tests inject scripted fakes; one real implementation, [`ReqwestTransport`].
//!
//! Its rules, kept here once for every caller:
//! - auth is [`Auth::Bearer`] or [`Auth::Basic`], carried in the request as credentials; the
//!   `Authorization` header is built by the transport while it builds the request it sends
//!   ([`Auth::header_value`]), marked sensitive, and never exists above it;
//! - a failed send says whether the request may have reached the server ([`SendFailure`]): a
//!   write whose request may have arrived must not be repeated;
//! - redirects are never followed: a 3xx comes back as a response, and the caller decides (a
//!   redirect could carry a token or a password to another host);
//! - rustls on *ring*, the system roots plus any extra CA (`WARDEN_CA_FILE` or
//!   `SSL_CERT_FILE`); in the CLI, one client (one connection pool, one root store) for
//!   identity and Exchange;
//! - every answer is read up to a size limit ([`HttpRequest::max_response_bytes`], 1 MiB
//!   unless the caller sets it).
//!
//! Request bodies may carry secrets (a client secret, an assertion), so they are zeroized when
//! dropped; `Debug` of a request shows header names, never values.

use crate::error::AuthError;
pub use crate::roots::preload_system_roots;
use crate::roots::{SystemVerifier, system_roots};
use crate::secret::AccessToken;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{HeaderValue, InvalidHeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, TrustAnchor};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use zeroize::Zeroizing;

/// An HTTP method warden uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET` (managed identity, OIDC discovery).
    Get,
    /// `POST` (token requests, Exchange calls).
    Post,
}

/// One HTTP request.
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Header name/value pairs, `Authorization` excepted (see [`HttpRequest::auth`]): the
    /// transport refuses a request carrying one here as [`SendFailure::NotSent`].
    pub headers: Vec<(String, String)>,
    /// The credentials, turned into the `Authorization` header only by the transport.
    pub auth: Option<Auth>,
    /// The body; zeroized on drop because it may hold a client secret or assertion.
    pub body: Zeroizing<Vec<u8>>,
    /// The longest wait for the whole answer, headers and body.
    pub timeout: Duration,
    /// The largest answer body read ([`HttpRequest::DEFAULT_MAX_RESPONSE_BYTES`] unless the
    /// caller sets it); a longer one fails as [`SendFailure::Ambiguous`]. `None`: no limit.
    pub max_response_bytes: Option<usize>,
}

impl HttpRequest {
    /// How long a request waits for its answer unless told otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// The largest answer read unless told otherwise: 1 MiB, far above any token response or
    /// discovery document, so a hostile or broken endpoint cannot fill memory.
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

    /// A request with no headers, no credentials, an empty body, the default timeout and the
    /// default answer size limit.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            auth: None,
            body: Zeroizing::new(Vec::new()),
            timeout: Self::DEFAULT_TIMEOUT,
            max_response_bytes: Some(Self::DEFAULT_MAX_RESPONSE_BYTES),
        }
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
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
            .field("auth", &self.auth)
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
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

/// One HTTP response (a 3xx included: redirects are the caller's decision).
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
        find_header(&self.headers, name)
    }

    /// `Retry-After` in decimal seconds, as Entra and the Exchange module read it (HTTP dates
    /// are not used by either), capped at an hour.
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)))
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why no answer arrived, and whether the request may have reached the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// The request never left (connection refused, DNS, TLS handshake, a request that could
    /// not be built): safe to retry.
    #[error("the request was not sent: {0}")]
    NotSent(String),
    /// The connection broke after the request may have been sent: a write's outcome is unknown.
    #[error("the connection broke after the request may have been sent: {0}")]
    Ambiguous(String),
    /// No answer within the request's timeout: a write's outcome is unknown.
    #[error("no answer within the time limit")]
    TimedOut,
}

/// Sends HTTP requests; the one interface under identity, REST and RPS.
#[async_trait]
pub trait HttpTransport: Send + Sync + fmt::Debug {
    /// Sends one request and reads its whole answer within `request.timeout`. Never follows a
    /// redirect.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, SendFailure>;
}

/// The real transport: reqwest over rustls. Cheap to clone; clones share one connection pool.
///
/// Its reqwest client is built at the first request: the system roots it trusts are read on a
/// thread of their own ([`preload_system_roots`]), milliseconds of file reads and parsing that
/// a cold `warden run` overlaps with loading its policy and its component instead of waiting
/// for them. What can be wrong with the transport's own settings (the extra CA file) is found
/// when it is made. The system roots are read once per process: a long-lived worker picks up
/// a changed system store when it is restarted.
#[derive(Clone)]
pub struct ReqwestTransport {
    inner: Arc<LazyClient>,
}

impl fmt::Debug for ReqwestTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestTransport")
            .field("extra_roots", &self.inner.extra.len())
            .field("resolve", &self.inner.resolve)
            .field("built", &self.inner.client.get().is_some_and(Result::is_ok))
            .finish()
    }
}

struct LazyClient {
    /// The extra CA's certificates, parsed and checked when the transport was made.
    extra: Vec<TrustAnchor<'static>>,
    resolve: Vec<(String, std::net::SocketAddr)>,
    /// Built once, by the first request (concurrent first requests wait for it).
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl ReqwestTransport {
    /// A transport trusting the system roots plus the PEM CA bundle at `extra_ca`, if given.
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, AuthError> {
        Self::with_resolved(extra_ca, &[])
    }

    /// [`ReqwestTransport::new`] resolving the host names of `resolve` to their addresses
    /// instead of asking DNS (a test's cloud on loopback; TLS still checks the certificate for
    /// the name). An embedder's seam, never read from a file.
    pub fn with_resolved(
        extra_ca: Option<&Path>,
        resolve: &[(String, std::net::SocketAddr)],
    ) -> Result<Self, AuthError> {
        install_crypto_provider();
        preload_system_roots();
        let extra = match extra_ca {
            Some(path) => extra_roots(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            inner: Arc::new(LazyClient {
                extra,
                resolve: resolve.to_vec(),
                client: OnceLock::new(),
            }),
        })
    }

    /// The client, built on first use. The first request blocks its thread here while the
    /// system roots are still being read (once per process, bounded by reading them) and the
    /// client is built; every later one takes the built client. Building fails only when no
    /// root is trusted at all (no usable system root and no extra CA); the request is then
    /// refused unsent, saying why.
    fn client(&self) -> Result<&reqwest::Client, SendFailure> {
        self.inner
            .client
            .get_or_init(|| self.inner.build())
            .as_ref()
            .map_err(|why| SendFailure::NotSent(why.clone()))
    }
}

impl LazyClient {
    /// The HTTPS client: rustls on *ring* with every TLS version it has and ALPN `http/1.1`
    /// (what reqwest configures itself while its `http2` feature is off, as the workspace
    /// builds it), trusting the system roots plus the extra CA (the system's directories read
    /// only when a chain needs them: [`crate::roots`]); no
    /// redirects, a connect timeout, warden's User-Agent.
    fn build(&self) -> Result<reqwest::Client, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = SystemVerifier::new(&self.extra, system_roots(), provider.clone())?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| format!("the TLS settings are not usable: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("exo-warden/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(32);
        for (host, addr) in &self.resolve {
            builder = builder.resolve(host, *addr);
        }
        builder
            .build()
            .map_err(|e| format!("the HTTPS client could not be built: {}", error_chain(&e)))
    }
}

/// The certificates of the PEM bundle at `path`, each checked as a trust anchor.
fn extra_roots(path: &Path) -> Result<Vec<TrustAnchor<'static>>, AuthError> {
    let pem = std::fs::read(path).map_err(|e| AuthError::Config {
        what: format!("the CA file {} cannot be read: {e}", path.display()),
        fix: "point WARDEN_CA_FILE (or SSL_CERT_FILE) at a readable PEM file".into(),
    })?;
    let not_pem = |e: &dyn fmt::Display| AuthError::Config {
        what: format!(
            "the CA file {} is not a PEM certificate bundle: {e}",
            path.display()
        ),
        fix: "export the CA as PEM (-----BEGIN CERTIFICATE-----)".into(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| not_pem(&e))?;
        roots.add(cert).map_err(|e| not_pem(&e))?;
    }
    if roots.is_empty() {
        return Err(AuthError::Config {
            what: format!("the CA file {} holds no certificate", path.display()),
            fix: "export the CA as PEM (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(roots.roots)
}

/// Installs rustls' *ring* provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[async_trait]
impl HttpTransport for ReqwestTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, SendFailure> {
        // reqwest would send both this and the one built from `auth`.
        if request.header("authorization").is_some() {
            return Err(SendFailure::NotSent(
                "the request carries an Authorization header among its headers; credentials go in HttpRequest::auth".into(),
            ));
        }
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut builder = self
            .client()?
            .request(method, &request.url)
            .timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(auth) = &request.auth {
            // The header exists only in the request reqwest is about to send.
            let authorization = auth.header_value().map_err(|_| {
                SendFailure::NotSent("the credentials are not a valid header value".into())
            })?;
            builder = builder.header(reqwest::header::AUTHORIZATION, authorization);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.to_vec());
        }
        let mut response = builder.send().await.map_err(classify)?;
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
        // Sized once from the announced length: a page of mailboxes grown by doubling held up
        // to three times its size while it was copied. Never past the limit nor 16 MiB, which
        // a server's claim alone does not earn: a longer body grows as it arrives.
        let announced = response.content_length().unwrap_or(0);
        let limit = request.max_response_bytes.unwrap_or(usize::MAX);
        let reserved = usize::try_from(announced)
            .unwrap_or(0)
            .min(limit)
            .min(16 << 20);
        let mut body = Vec::with_capacity(reserved);
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if let Some(max) = request.max_response_bytes
                && body.len() + chunk.len() > max
            {
                // The request was processed; its answer is lost.
                return Err(SendFailure::Ambiguous(format!(
                    "the answer is larger than {max} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Whether a failed reqwest send may have reached the server. A connect failure (even a connect
/// timeout) or a request that could not be built means nothing was sent: checked first.
fn classify(e: reqwest::Error) -> SendFailure {
    if e.is_connect() || e.is_builder() {
        SendFailure::NotSent(error_chain(&e))
    } else if e.is_timeout() {
        SendFailure::TimedOut
    } else {
        SendFailure::Ambiguous(error_chain(&e))
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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

    /// A server that answers one request with a redirect to `elsewhere` and hands back the
    /// request's head as it arrived on the wire.
    async fn redirecting_server(elsewhere: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/powershell", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                head.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 302 Found\r\nlocation: {elsewhere}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, task)
    }

    /// Whether anyone connects to `listener` within a short while.
    async fn contacted(listener: &TcpListener) -> bool {
        tokio::time::timeout(Duration::from_millis(300), listener.accept())
            .await
            .is_ok()
    }

    /// Sends `auth` through the real transport to a server that redirects elsewhere; checks
    /// the header reached the wire (and only the wire), and the redirect came back unfollowed.
    async fn sends_on_the_wire_only_and_never_follows_a_redirect(auth: Auth) {
        let other_host = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere = format!("http://{}/steal", other_host.local_addr().unwrap());
        let (url, server) = redirecting_server(elsewhere).await;
        let mut request = HttpRequest::new(Method::Post, url);
        request
            .headers
            .push(("content-type".into(), "application/json".into()));
        request.body = Zeroizing::new(b"{}".to_vec());
        request.timeout = Duration::from_secs(5);
        request.auth = Some(auth.clone());
        let expected = auth.header_value().unwrap();
        let expected = expected.to_str().unwrap().to_owned();
        let credentials = expected.split(' ').nth(1).unwrap();
        let shown = format!("{request:?} {request:#?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains(PASSWORD) && !shown.contains(credentials),
            "{shown}"
        );
        let http = ReqwestTransport::new(None).unwrap();
        let response = http.send(request).await.unwrap();
        assert_eq!(response.status, 302);
        assert!(response.header("location").unwrap().ends_with("/steal"));
        let head = server.await.unwrap();
        assert!(
            head.contains(&format!("authorization: {expected}\r\n")),
            "{head}"
        );
        assert!(!contacted(&other_host).await, "the redirect was followed");
    }

    #[tokio::test]
    async fn bearer_goes_on_the_wire_only_and_a_redirect_is_never_followed() {
        sends_on_the_wire_only_and_never_follows_a_redirect(Auth::Bearer(token())).await;
    }

    #[tokio::test]
    async fn basic_goes_on_the_wire_only_and_a_redirect_is_never_followed() {
        for password in [
            BasicPassword::Bearer(token()),
            BasicPassword::Secret(PASSWORD.to_owned().into()),
        ] {
            sends_on_the_wire_only_and_never_follows_a_redirect(basic(password)).await;
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent_and_a_silent_server_times_out() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let http = ReqwestTransport::new(None).unwrap();
        let failure = http
            .send(HttpRequest::new(Method::Post, url))
            .await
            .unwrap_err();
        assert!(matches!(failure, SendFailure::NotSent(_)), "{failure:?}");

        // Accepts and reads, never answers: the request may have arrived.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let (mut socket, _) = silent.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let mut request = HttpRequest::new(Method::Post, url);
        request.timeout = Duration::from_millis(300);
        let failure = http.send(request).await.unwrap_err();
        assert_eq!(failure, SendFailure::TimedOut);
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_as_ambiguous() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let body = "x".repeat(2048);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        });
        let mut request = HttpRequest::new(Method::Get, url);
        request.max_response_bytes = Some(1024);
        let failure = ReqwestTransport::new(None)
            .unwrap()
            .send(request)
            .await
            .unwrap_err();
        assert!(matches!(failure, SendFailure::Ambiguous(_)), "{failure:?}");
    }

    /// A server that reads one request's head, then does `then` with the socket.
    async fn one_shot_server<F, Fut>(then: F) -> String
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            then(socket).await;
        });
        url
    }

    #[tokio::test]
    async fn an_answer_over_the_default_limit_is_refused_as_ambiguous() {
        let url = one_shot_server(|mut socket| async move {
            let len = HttpRequest::DEFAULT_MAX_RESPONSE_BYTES + 1;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&vec![b'x'; len]).await;
        })
        .await;
        // No limit set by the caller: the default one holds.
        let failure = ReqwestTransport::new(None)
            .unwrap()
            .send(HttpRequest::new(Method::Get, url))
            .await
            .unwrap_err();
        assert!(matches!(failure, SendFailure::Ambiguous(_)), "{failure:?}");
    }

    #[tokio::test]
    async fn an_authorization_header_among_the_headers_is_refused_not_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let mut request = HttpRequest::new(Method::Post, url);
        request
            .headers
            .push(("AUTHORIZATION".into(), format!("Bearer {TOKEN}")));
        request.auth = Some(Auth::Bearer(token()));
        let shown = format!("{request:?}");
        assert!(shown.contains("max_response_bytes"), "{shown}");
        let failure = ReqwestTransport::new(None)
            .unwrap()
            .send(request)
            .await
            .unwrap_err();
        let SendFailure::NotSent(reason) = &failure else {
            panic!("{failure:?}");
        };
        assert!(reason.contains("HttpRequest::auth"), "{reason}");
        assert!(!reason.contains(TOKEN), "{reason}");
        assert!(!contacted(&listener).await, "the request was sent");
    }

    #[tokio::test]
    async fn a_connection_reset_after_the_request_arrived_is_ambiguous() {
        let url = one_shot_server(|socket| async move {
            // Linger 0: close sends RST, not FIN.
            socket.set_zero_linger().unwrap();
            drop(socket);
        })
        .await;
        let mut request = HttpRequest::new(Method::Post, url);
        request.body = Zeroizing::new(b"{}".to_vec());
        request.timeout = Duration::from_secs(5);
        let failure = ReqwestTransport::new(None)
            .unwrap()
            .send(request)
            .await
            .unwrap_err();
        assert!(matches!(failure, SendFailure::Ambiguous(_)), "{failure:?}");
    }

    #[tokio::test]
    async fn a_body_that_stalls_after_the_headers_times_out_within_the_limit() {
        let url = one_shot_server(|mut socket| async move {
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial";
            let _ = socket.write_all(head.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let mut request = HttpRequest::new(Method::Post, url);
        request.timeout = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let failure = ReqwestTransport::new(None)
            .unwrap()
            .send(request)
            .await
            .unwrap_err();
        assert_eq!(failure, SendFailure::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    fn ca_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn config_error(extra_ca: &Path) -> String {
        match ReqwestTransport::new(Some(extra_ca)) {
            Err(AuthError::Config { what, .. }) => what,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_ca_file_is_refused_when_the_transport_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let what = config_error(&dir.path().join("nowhere.pem"));
        assert!(what.contains("cannot be read"), "{what}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_when_the_transport_is_made() {
        let file = ca_file("not a certificate\n");
        let what = config_error(file.path());
        assert!(what.contains("holds no certificate"), "{what}");
    }

    #[test]
    fn a_ca_file_whose_certificate_does_not_parse_is_refused_when_the_transport_is_made() {
        // PEM framing around bytes that are no X.509 certificate.
        let file =
            ca_file("-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n");
        let what = config_error(file.path());
        assert!(what.contains("is not a PEM certificate bundle"), "{what}");
    }
}
