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
use warden_auth::transport::error_chain;

/// One POST to Exchange.
pub struct ExchangeRequest {
    /// Absolute URL.
    pub url: String,
    /// Headers other than `Authorization`.
    pub headers: Vec<(String, String)>,
    /// The bearer token, turned into the `Authorization` header at the last moment.
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
        let mut authorization =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", request.bearer.expose()))
                .map_err(|_| {
                    SendFailure::NotSent("the access token is not a valid header value".into())
                })?;
        authorization.set_sensitive(true);
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
