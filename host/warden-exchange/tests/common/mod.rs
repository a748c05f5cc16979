//! Plumbing the session tests share: a token service that issues numbered tokens.

use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use warden_auth::{HttpRequest, HttpResponse, HttpTransport, SendFailure};

/// Issues tokens `<prefix>-0`, `<prefix>-1`, … and counts them.
#[derive(Debug)]
pub struct Sts {
    pub issued: AtomicU64,
    prefix: &'static str,
}

impl Sts {
    pub fn issuing(prefix: &'static str) -> Self {
        Self {
            issued: AtomicU64::new(0),
            prefix,
        }
    }
}

#[async_trait]
impl HttpTransport for Sts {
    async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, SendFailure> {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        Ok(HttpResponse {
            status: 200,
            headers: vec![],
            body: format!(
                r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"{}-{n}"}}"#,
                self.prefix
            )
            .into_bytes(),
        })
    }
}
