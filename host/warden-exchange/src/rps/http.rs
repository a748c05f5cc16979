//! The HTTP layer under the RPS session, as a trait so tests can script a server, and so a
//! failed send says whether the request may have reached it (a Command whose request may have
//! arrived must not be repeated for a write).
//!
//! Every request authenticates with Basic ([`Auth::Basic`]); the header is built by the
//! transport at the last moment from the user and the password (`Bearer <token>` for OAuth),
//! marked sensitive, and never appears in `Debug`, errors or logs. The real implementation is reqwest over rustls with
//! no automatic redirects (the session decides which redirect may be followed).

use crate::http::{ExchangeResponse, SendFailure, classify, header_pairs};
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use warden_auth::transport::Auth;

/// The password half of the Basic credentials (the one definition lives in warden-auth).
pub type RpsPassword = warden_auth::transport::BasicPassword;

/// One POST of a SOAP envelope.
pub struct RpsRequest {
    /// Absolute URL, query included.
    pub url: String,
    /// Headers other than `Authorization`.
    pub headers: Vec<(String, String)>,
    /// The credentials, always [`Auth::Basic`] for RPS; the transport turns them into the
    /// `Authorization` header while building the request it sends.
    pub auth: Auth,
    /// The SOAP envelope.
    pub body: Arc<String>,
}

impl fmt::Debug for RpsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpsRequest")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("auth", &self.auth)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Sends SOAP POSTs to an RPS endpoint.
#[async_trait]
pub trait RpsHttp: Send + Sync + fmt::Debug {
    /// Sends one request, waiting at most `timeout` for the whole answer.
    async fn post(
        &self,
        request: RpsRequest,
        timeout: Duration,
    ) -> Result<ExchangeResponse, SendFailure>;
}

/// reqwest over rustls.
#[derive(Debug, Clone)]
pub struct ReqwestRpsHttp {
    client: reqwest::Client,
    max_body: usize,
}

impl ReqwestRpsHttp {
    /// A client trusting the system roots plus `extra_ca` (PEM bundle), if given, with the
    /// token transport's TLS settings and no redirects; answers over `max_body` bytes are
    /// refused while they are read.
    pub fn new(
        extra_ca: Option<&std::path::Path>,
        max_body: usize,
    ) -> Result<Self, crate::ExchangeError> {
        let client = warden_auth::transport::https_client_builder(extra_ca)?
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| {
                crate::ExchangeError::Invalid(format!("the HTTPS client could not be built: {e}"))
            })?;
        Ok(Self { client, max_body })
    }
}

#[async_trait]
impl RpsHttp for ReqwestRpsHttp {
    async fn post(
        &self,
        request: RpsRequest,
        timeout: Duration,
    ) -> Result<ExchangeResponse, SendFailure> {
        let mut builder = self.client.post(&request.url).timeout(timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let authorization = request.auth.header_value().map_err(|_| {
            SendFailure::NotSent("the credentials are not a valid header value".into())
        })?;
        builder = builder
            .header(reqwest::header::AUTHORIZATION, authorization)
            .body(request.body.as_bytes().to_vec());
        let mut response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = header_pairs(&response);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_body {
                // The request was processed; its answer is lost.
                return Err(SendFailure::Ambiguous(format!(
                    "the answer is larger than {} bytes",
                    self.max_body
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(ExchangeResponse {
            status,
            headers,
            body,
        })
    }
}
