//! The HTTP layer under the session, as a trait so tests can script answers, and so a failed
//! send says whether the request may have reached the server: a write whose request may have
//! arrived must not be repeated.
//!
//! The real implementation is reqwest over rustls, HTTP/1.1, no redirects (a redirect could
//! carry the bearer token to another host).

use async_trait::async_trait;
use std::fmt;
use std::time::Duration;
use warden_auth::AccessToken;
use warden_auth::transport::Auth;
use warden_auth::transport::error_chain;

/// One POST to Exchange.
pub struct ExchangeRequest {
    /// Absolute URL.
    pub url: String,
    /// Headers other than `Authorization`.
    pub headers: Vec<(String, String)>,
    /// The bearer token, turned into the `Authorization` header ([`Auth::Bearer`]) only by the
    /// transport building the request it sends.
    pub bearer: AccessToken,
    /// JSON body.
    pub body: std::sync::Arc<Vec<u8>>,
}

impl fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub struct ExchangeResponse {
    /// Status.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl ExchangeResponse {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// `Retry-After` in decimal seconds, as the module reads it (capped at an hour).
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)))
    }
}

/// Why no answer arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// The request never left (connection refused, DNS, TLS handshake): safe to retry.
    NotSent(String),
    /// The connection broke after the request may have been sent: a write's outcome is unknown.
    Ambiguous(String),
    /// No answer within the time limit: a write's outcome is unknown.
    TimedOut,
}

/// Sends POSTs to Exchange.
#[async_trait]
pub trait ExchangeHttp: Send + Sync + fmt::Debug {
    /// Sends one request, waiting at most `timeout` for the whole answer.
    async fn post(
        &self,
        request: ExchangeRequest,
        timeout: Duration,
    ) -> Result<ExchangeResponse, SendFailure>;
}

/// reqwest over rustls.
#[derive(Debug, Clone)]
pub struct ReqwestExchangeHttp {
    client: reqwest::Client,
}

impl ReqwestExchangeHttp {
    /// A client trusting the system roots plus `extra_ca` (PEM bundle), if given, with the
    /// same TLS and redirect settings as the token transport.
    pub fn new(extra_ca: Option<&std::path::Path>) -> Result<Self, crate::ExchangeError> {
        let client = warden_auth::transport::https_client_builder(extra_ca)?
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| {
                crate::ExchangeError::Invalid(format!("the HTTPS client could not be built: {e}"))
            })?;
        Ok(Self { client })
    }

    /// [`ReqwestExchangeHttp::new`] resolving the host names of `resolve` to their addresses
    /// instead of asking DNS (TLS still checks the certificate for the name).
    pub fn with_resolved(
        extra_ca: Option<&std::path::Path>,
        resolve: &[(String, std::net::SocketAddr)],
    ) -> Result<Self, crate::ExchangeError> {
        let mut builder =
            warden_auth::transport::https_client_builder(extra_ca)?.pool_max_idle_per_host(32);
        for (host, addr) in resolve {
            builder = builder.resolve(host, *addr);
        }
        let client = builder.build().map_err(|e| {
            crate::ExchangeError::Invalid(format!("the HTTPS client could not be built: {e}"))
        })?;
        Ok(Self { client })
    }
}

#[async_trait]
impl ExchangeHttp for ReqwestExchangeHttp {
    async fn post(
        &self,
        request: ExchangeRequest,
        timeout: Duration,
    ) -> Result<ExchangeResponse, SendFailure> {
        let mut builder = self.client.post(&request.url).timeout(timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        // The header exists only in the request reqwest is about to send.
        let authorization = Auth::Bearer(request.bearer).header_value().map_err(|_| {
            SendFailure::NotSent("the access token is not a valid header value".into())
        })?;
        builder = builder
            .header(reqwest::header::AUTHORIZATION, authorization)
            .body(request.body.as_ref().clone());
        let response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = header_pairs(&response);
        let body = response.bytes().await.map_err(classify)?.to_vec();
        Ok(ExchangeResponse {
            status,
            headers,
            body,
        })
    }
}

/// Whether a failed reqwest send may have reached the server. A connect failure (even a connect
/// timeout) means nothing was sent: it is checked first.
pub(crate) fn classify(e: reqwest::Error) -> SendFailure {
    if e.is_connect() {
        SendFailure::NotSent(error_chain(&e))
    } else if e.is_timeout() {
        SendFailure::TimedOut
    } else {
        SendFailure::Ambiguous(error_chain(&e))
    }
}

/// A response's headers as (lower-case name, value) pairs.
pub(crate) fn header_pairs(response: &reqwest::Response) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rps::{ReqwestRpsHttp, RpsHttp, RpsPassword, RpsRequest};
    use std::sync::Arc;
    use std::time::SystemTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TOKEN: &str = "TOKEN-CANARY-5b1e";

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

    fn token() -> AccessToken {
        let now = SystemTime::now();
        AccessToken::new(TOKEN.into(), now, now)
    }

    #[tokio::test]
    async fn rest_sends_bearer_on_the_wire_only_and_never_follows_a_redirect() {
        let other_host = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere = format!("http://{}/steal", other_host.local_addr().unwrap());
        let (url, server) = redirecting_server(elsewhere).await;
        let request = ExchangeRequest {
            url,
            headers: vec![("content-type".into(), "application/json".into())],
            bearer: token(),
            body: std::sync::Arc::new(b"{}".to_vec()),
        };
        assert!(!format!("{request:?}").contains(TOKEN));
        let http = ReqwestExchangeHttp::new(None).unwrap();
        let response = http.post(request, Duration::from_secs(5)).await.unwrap();
        assert_eq!(response.status, 302);
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(
            head.contains(&format!(
                "authorization: bearer {}",
                TOKEN.to_ascii_lowercase()
            )),
            "{head}"
        );
        assert!(!contacted(&other_host).await, "the redirect was followed");
    }

    #[tokio::test]
    async fn rps_sends_basic_on_the_wire_only_and_never_follows_a_redirect() {
        let other_host = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere = format!("http://{}/steal", other_host.local_addr().unwrap());
        let (url, server) = redirecting_server(elsewhere).await;
        let request = RpsRequest {
            url,
            headers: vec![],
            auth: Auth::Basic {
                user: "OAuthUser@contoso".into(),
                password: RpsPassword::Bearer(token()),
            },
            body: Arc::new("<s:Envelope/>".into()),
        };
        let expected = request.auth.header_value().unwrap();
        let expected = expected.to_str().unwrap().to_owned();
        let shown = format!("{request:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains(&expected[6..]),
            "{shown}"
        );
        let http = ReqwestRpsHttp::new(None, 1 << 20).unwrap();
        let response = http.post(request, Duration::from_secs(5)).await.unwrap();
        assert_eq!(response.status, 302);
        let head = server.await.unwrap();
        assert!(
            head.to_ascii_lowercase().contains("authorization: basic ")
                && head.contains(&expected[6..]),
            "{head}"
        );
        assert!(!contacted(&other_host).await, "the redirect was followed");
    }
}
