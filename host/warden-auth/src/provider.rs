//! The token provider: one cached token per (authority, tenant, client, scope), proactive
//! refresh, single-flight, retries with the shared [`crate::retry::RetryPolicy`], and a short
//! negative cache.
//!
//! Rules (`docs/protocol/entra-auth.md` §3.5):
//! - before `refresh_on` (`refresh_in`, else 5 minutes before expiry) the cached token is
//!   returned as is;
//! - after `refresh_on` but with time to spare, the cached token is returned and one background
//!   refresh starts (at most one per 30 s; its failure is logged and the old token kept);
//! - near expiry (the last minute, or the last quarter of a short lifetime) or with no token,
//!   every caller waits for the one refresh in flight: N concurrent callers cause one request;
//! - transport errors, 408, 429, 5xx and Entra's "temporarily unavailable" are retried with
//!   capped exponential backoff and full jitter, never sooner than `Retry-After`; configuration
//!   errors (`invalid_client`, `invalid_scope`, …) are never retried;
//! - after a throttled or failed refresh, callers get the same error without a request until
//!   `Retry-After` (or 5 s) has passed, so a retry-happy caller cannot hammer Entra.
//!
//! It refuses to return an expired token.

use crate::clock::{Clock, SystemClock};
use crate::credential::{Credential, Outcome};
use crate::error::AuthError;
use crate::secret::AccessToken;
use crate::transport::HttpTransport;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Minimum gap between two background refreshes of one token.
pub const REFRESH_DEBOUNCE: Duration = Duration::from_secs(30);
/// How long a failed refresh is answered from the negative cache without `Retry-After`.
pub const NEGATIVE_CACHE_DEFAULT: Duration = Duration::from_secs(5);

pub use crate::retry::RetryPolicy;

#[derive(Default)]
struct Entry {
    current: RwLock<Option<AccessToken>>,
    generation: AtomicU64,
    refresh: tokio::sync::Mutex<()>,
    last_background_attempt: Mutex<Option<SystemTime>>,
    negative: Mutex<Option<(SystemTime, AuthError)>>,
}

impl Entry {
    fn current(&self) -> Option<AccessToken> {
        self.current.read().expect("token lock").clone()
    }
    fn store(&self, token: AccessToken) {
        *self.current.write().expect("token lock") = Some(token);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

struct Inner {
    credential: Credential,
    transport: Arc<dyn HttpTransport>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    requests_sent: AtomicU64,
}

/// Gets tokens for one credential, from cache when it can.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("credential", &self.inner.credential.kind.name())
            .field("tenant", &self.inner.credential.tenant)
            .field("client_id", &self.inner.credential.client_id)
            .finish_non_exhaustive()
    }
}

/// How close to expiry a token must be before callers block on a refresh.
fn must_refresh_margin(token: &AccessToken, now: SystemTime) -> Duration {
    let lifetime = token
        .expires_on
        .duration_since(token.refresh_on.min(now))
        .unwrap_or_default();
    Duration::from_secs(60).min(lifetime / 4)
}

impl TokenProvider {
    /// A provider with the real clock and default retries.
    pub fn new(credential: Credential, transport: Arc<dyn HttpTransport>) -> Self {
        Self::with_options(
            credential,
            transport,
            Arc::new(SystemClock),
            RetryPolicy::default(),
        )
    }

    /// A provider with an injected clock and retry policy (tests, benchmarks).
    pub fn with_options(
        credential: Credential,
        transport: Arc<dyn HttpTransport>,
        clock: Arc<dyn Clock>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                credential,
                transport,
                clock,
                retry,
                entries: Mutex::new(HashMap::new()),
                requests_sent: AtomicU64::new(0),
            }),
        }
    }

    /// The transport this provider sends through. Exchange sessions built for the provider
    /// send through it too: one client, one connection pool and one root store per process.
    pub fn transport(&self) -> Arc<dyn HttpTransport> {
        self.inner.transport.clone()
    }

    /// The credential this provider uses.
    pub fn credential(&self) -> &Credential {
        &self.inner.credential
    }

    /// How many requests this provider has sent to the endpoint (attempts, retries included).
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests_sent.load(Ordering::Relaxed)
    }

    fn entry(&self, scope: &str) -> Arc<Entry> {
        let key = self.inner.credential.cache_key(scope);
        self.inner
            .entries
            .lock()
            .expect("cache lock")
            .entry(key)
            .or_default()
            .clone()
    }

    /// A valid token for `scope`, from cache or freshly acquired.
    pub async fn get_token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        if let Some(result) = self.inner.credential.static_token(self.inner.clock.now()) {
            return result;
        }
        let entry = self.entry(scope);
        let now = self.inner.clock.now();
        let seen_generation = entry.generation.load(Ordering::SeqCst);
        if let Some(token) = entry.current() {
            if now < token.refresh_on && now < token.expires_on {
                return Ok(token);
            }
            if now + must_refresh_margin(&token, now) < token.expires_on {
                self.spawn_background_refresh(entry.clone(), scope.to_owned());
                return Ok(token);
            }
        }
        let _flight = entry.refresh.lock().await;
        // Someone else refreshed while we waited: use theirs.
        if entry.generation.load(Ordering::SeqCst) != seen_generation
            && let Some(token) = entry.current()
            && self.inner.clock.now() < token.expires_on
        {
            return Ok(token);
        }
        if let Some((until, error)) = entry.negative.lock().expect("negative lock").clone()
            && self.inner.clock.now() < until
        {
            return Err(error);
        }
        match self.fetch(scope).await {
            Ok(token) if self.inner.clock.now() >= token.expires_on => {
                Err(AuthError::BadResponse {
                    url: self
                        .inner
                        .credential
                        .token_url()
                        .unwrap_or_else(|| "the managed identity endpoint".into()),
                    reason: "the token it issued had already expired (check this machine's clock)"
                        .into(),
                })
            }
            Ok(token) => {
                entry.store(token.clone());
                *entry.negative.lock().expect("negative lock") = None;
                Ok(token)
            }
            Err((error, hold)) => {
                // Every failure is held briefly, not only throttling: otherwise each caller that
                // was waiting on this refresh would send its own doomed request in turn.
                let hold = hold.unwrap_or(NEGATIVE_CACHE_DEFAULT);
                *entry.negative.lock().expect("negative lock") =
                    Some((self.inner.clock.now() + hold, error.clone()));
                Err(error)
            }
        }
    }

    /// Drops `token` from the cache if it is still the cached one, so the next call mints a
    /// new token (after a 401 from the resource: roles are embedded at issue time).
    pub fn invalidate(&self, scope: &str, token: &AccessToken) {
        let entry = self.entry(scope);
        let mut current = entry.current.write().expect("token lock");
        if current.as_ref().is_some_and(|c| c.same_as(token)) {
            *current = None;
            entry.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn spawn_background_refresh(&self, entry: Arc<Entry>, scope: String) {
        let now = self.inner.clock.now();
        {
            let mut last = entry.last_background_attempt.lock().expect("debounce lock");
            if last.is_some_and(|t| now.duration_since(t).unwrap_or_default() < REFRESH_DEBOUNCE) {
                return;
            }
            *last = Some(now);
        }
        let provider = self.clone();
        tokio::spawn(async move {
            let Ok(_flight) = entry.refresh.try_lock() else {
                return;
            };
            match provider.fetch(&scope).await {
                Ok(token) => entry.store(token),
                Err((error, _)) => {
                    tracing::warn!(%scope, error = %error, "proactive token refresh failed; keeping the current token")
                }
            }
        });
    }

    /// One acquisition with retries. On failure, also says how long to hold the error in the
    /// negative cache (only for throttling and unavailability).
    async fn fetch(&self, scope: &str) -> Result<AccessToken, (AuthError, Option<Duration>)> {
        let inner = &self.inner;
        let credential = &inner.credential;
        let started = inner.clock.now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = credential
                .build_request(scope, inner.clock.now())
                .map_err(|e| (e, None))?;
            let url = crate::transport::strip_query(&request.url);
            inner.requests_sent.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%url, attempt, kind = credential.kind.name(), "requesting token");
            let (error, retry_after, status) = match inner.transport.send(request).await {
                Ok(response) => match credential.classify(response, &url, inner.clock.now()) {
                    Outcome::Token(token) => return Ok(token),
                    Outcome::Fatal(error) => return Err((error, None)),
                    Outcome::Retry {
                        status,
                        retry_after,
                        error,
                    } => (error, retry_after, Some(status)),
                },
                Err(failure) => (
                    AuthError::Transport {
                        url: url.clone(),
                        reason: failure.to_string(),
                    },
                    None,
                    None,
                ),
            };
            let elapsed = inner
                .clock
                .now()
                .duration_since(started)
                .unwrap_or_default();
            let Some(delay) = inner.retry.next_wait(attempt, elapsed, retry_after) else {
                let hold = status.map(|_| retry_after.unwrap_or(NEGATIVE_CACHE_DEFAULT));
                let error = match (error, status) {
                    (
                        AuthError::Unavailable {
                            url,
                            status,
                            retry_after,
                            ..
                        },
                        _,
                    ) => AuthError::Unavailable {
                        url,
                        status,
                        attempts: attempt,
                        retry_after,
                    },
                    (other, _) => other,
                };
                return Err((error, hold));
            };
            tracing::debug!(
                attempt,
                status,
                delay_ms = delay.as_millis() as u64,
                "token request will be retried"
            );
            inner.clock.sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::credential::CredentialKind;
    use crate::endpoint::EndpointVersion;
    use crate::secret::Secret;
    use crate::transport::{HttpRequest, HttpResponse, SendFailure};
    use std::collections::VecDeque;

    /// Answers from a queue (the last answer repeats), counting requests.
    #[derive(Debug, Default)]
    struct QueueTransport {
        answers: Mutex<VecDeque<HttpResponse>>,
        sent: AtomicU64,
        delay: Duration,
        tokens_issued: AtomicU64,
    }

    impl QueueTransport {
        fn new(answers: Vec<HttpResponse>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into()),
                ..Default::default()
            })
        }
        fn sent(&self) -> u64 {
            self.sent.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl HttpTransport for QueueTransport {
        async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, SendFailure> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let mut answers = self.answers.lock().unwrap();
            let mut answer = if answers.len() > 1 {
                answers.pop_front().unwrap()
            } else {
                answers.front().cloned().expect("an answer")
            };
            if answer.status == 200 {
                // Every issued token is distinct, so tests can tell old from new.
                let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst);
                let body = String::from_utf8(answer.body)
                    .unwrap()
                    .replace("TOKEN", &format!("token-{n}"));
                answer.body = body.into_bytes();
            }
            Ok(answer)
        }
    }

    fn ok(expires_in: u64, refresh_in: Option<u64>) -> HttpResponse {
        let refresh = refresh_in
            .map(|r| format!(r#","refresh_in":{r}"#))
            .unwrap_or_default();
        HttpResponse { status: 200, headers: vec![], body: format!(r#"{{"token_type":"Bearer","expires_in":{expires_in}{refresh},"access_token":"TOKEN"}}"#).into_bytes() }
    }

    fn status(code: u16, retry_after: Option<&str>, body: &str) -> HttpResponse {
        HttpResponse {
            status: code,
            headers: retry_after
                .map(|r| vec![("retry-after".to_owned(), r.to_owned())])
                .unwrap_or_default(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn provider(transport: Arc<QueueTransport>, clock: Arc<ManualClock>) -> TokenProvider {
        let credential = Credential {
            authority_host: "https://login.example".into(),
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "22222222-2222-2222-2222-222222222222".into(),
            endpoint_version: EndpointVersion::V2,
            kind: CredentialKind::ClientSecret(Secret::new("s".into())),
        };
        let retry = RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..Default::default()
        };
        TokenProvider::with_options(credential, transport, clock, retry)
    }

    const SCOPE: &str = "https://outlook.office365.com/.default";

    #[tokio::test]
    async fn a_cached_token_is_reused_until_refresh_on() {
        let transport = QueueTransport::new(vec![ok(3600, None)]);
        let clock = Arc::new(ManualClock::new());
        let p = provider(transport.clone(), clock.clone());
        let first = p.get_token(SCOPE).await.unwrap();
        clock.advance(Duration::from_secs(3000));
        let second = p.get_token(SCOPE).await.unwrap();
        assert!(first.same_as(&second));
        assert_eq!(transport.sent(), 1);
        // A different scope is a different cache entry.
        p.get_token("https://graph.microsoft.com/.default")
            .await
            .unwrap();
        assert_eq!(transport.sent(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_request() {
        let transport = Arc::new(QueueTransport {
            answers: Mutex::new(vec![ok(3600, None)].into()),
            delay: Duration::from_millis(50),
            ..Default::default()
        });
        let p = provider(transport.clone(), Arc::new(ManualClock::new()));
        let calls = (0..200).map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.get_token(SCOPE).await.unwrap() })
        });
        let tokens: Vec<AccessToken> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(transport.sent(), 1);
        assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
    }

    #[tokio::test]
    async fn past_refresh_on_the_old_token_is_served_while_one_background_refresh_runs() {
        let transport = QueueTransport::new(vec![ok(3600, Some(1800))]);
        let clock = Arc::new(ManualClock::new());
        let p = provider(transport.clone(), clock.clone());
        let first = p.get_token(SCOPE).await.unwrap();
        clock.advance(Duration::from_secs(1801));
        let during = p.get_token(SCOPE).await.unwrap();
        assert!(
            during.same_as(&first),
            "the still-valid token is returned at once"
        );
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let _ = p.get_token(SCOPE).await.unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(transport.sent(), 2, "one background refresh, debounced");
        let after = p.get_token(SCOPE).await.unwrap();
        assert!(!after.same_as(&first), "the refreshed token is used");
    }

    #[tokio::test]
    async fn near_expiry_callers_wait_for_a_new_token() {
        let transport = QueueTransport::new(vec![ok(3600, None)]);
        let clock = Arc::new(ManualClock::new());
        let p = provider(transport.clone(), clock.clone());
        let first = p.get_token(SCOPE).await.unwrap();
        clock.advance(Duration::from_secs(3590));
        let second = p.get_token(SCOPE).await.unwrap();
        assert!(!second.same_as(&first));
        assert_eq!(transport.sent(), 2);
    }

    #[tokio::test]
    async fn failed_background_refresh_keeps_the_old_token() {
        let invalid = r#"{"error":"invalid_client","error_codes":[7000222],"error_description":"AADSTS7000222: expired"}"#;
        let transport = QueueTransport::new(vec![ok(3600, Some(1800)), status(401, None, invalid)]);
        let clock = Arc::new(ManualClock::new());
        let p = provider(transport.clone(), clock.clone());
        let first = p.get_token(SCOPE).await.unwrap();
        clock.advance(Duration::from_secs(1801));
        assert!(p.get_token(SCOPE).await.unwrap().same_as(&first));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(transport.sent(), 2);
        assert!(p.get_token(SCOPE).await.unwrap().same_as(&first));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_honouring_retry_after() {
        let transport = QueueTransport::new(vec![
            status(503, None, ""),
            status(429, Some("7"), ""),
            ok(3600, None),
        ]);
        let clock = Arc::new(ManualClock::new());
        let p = provider(transport.clone(), clock.clone());
        p.get_token(SCOPE).await.unwrap();
        assert_eq!(transport.sent(), 3);
        let sleeps = clock.sleeps();
        assert_eq!(sleeps.len(), 2);
        assert!(
            sleeps[0] <= Duration::from_millis(100),
            "first backoff is jittered below the base: {sleeps:?}"
        );
        assert!(
            sleeps[1] >= Duration::from_secs(7),
            "Retry-After is a floor: {sleeps:?}"
        );
    }

    #[tokio::test]
    async fn configuration_errors_are_never_retried() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t","error_codes":[7000215],"trace_id":"t","correlation_id":"c"}"#;
        let transport = QueueTransport::new(vec![status(401, None, body)]);
        let p = provider(transport.clone(), Arc::new(ManualClock::new()));
        let error = p.get_token(SCOPE).await.unwrap_err();
        assert_eq!(error.aadsts_code(), Some(7000215));
        assert_eq!(transport.sent(), 1);
        // Callers that were waiting on that refresh get the same answer, not a request each.
        for _ in 0..5 {
            assert_eq!(
                p.get_token(SCOPE).await.unwrap_err().aadsts_code(),
                Some(7000215)
            );
        }
        assert_eq!(transport.sent(), 1);
    }

    #[tokio::test]
    async fn a_token_that_arrives_expired_is_refused() {
        let transport = QueueTransport::new(vec![ok(0, None)]);
        let p = provider(transport.clone(), Arc::new(ManualClock::new()));
        let error = p.get_token(SCOPE).await.unwrap_err();
        assert!(error.to_string().contains("already expired"), "{error}");
    }

    #[tokio::test]
    async fn a_throttled_failure_is_answered_from_the_negative_cache() {
        let transport = QueueTransport::new(vec![status(429, Some("20"), "")]);
        let clock = Arc::new(ManualClock::new());
        let p = provider(transport.clone(), clock.clone());
        let error = p.get_token(SCOPE).await.unwrap_err();
        assert!(
            matches!(error, AuthError::Unavailable { status: 429, .. }),
            "{error}"
        );
        let attempts = transport.sent();
        assert!(attempts >= 1);
        assert!(p.get_token(SCOPE).await.is_err());
        assert_eq!(
            transport.sent(),
            attempts,
            "no request while the server asked us to wait"
        );
        clock.advance(Duration::from_secs(21));
        assert!(p.get_token(SCOPE).await.is_err());
        assert!(
            transport.sent() > attempts,
            "asks again once Retry-After has passed"
        );
    }

    #[tokio::test]
    async fn invalidate_forces_a_new_token_once() {
        let transport = QueueTransport::new(vec![ok(3600, None)]);
        let p = provider(transport.clone(), Arc::new(ManualClock::new()));
        let first = p.get_token(SCOPE).await.unwrap();
        p.invalidate(SCOPE, &first);
        let second = p.get_token(SCOPE).await.unwrap();
        assert!(!second.same_as(&first));
        // Invalidating a token that is no longer cached changes nothing.
        p.invalidate(SCOPE, &first);
        assert!(p.get_token(SCOPE).await.unwrap().same_as(&second));
        assert_eq!(transport.sent(), 2);
    }

    #[tokio::test]
    async fn a_token_endpoint_answering_a_huge_body_fails_cleanly() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Every connection gets a 200 whose body is 64 MiB of `x`, streamed.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let len = 64 << 20;
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                    let _ = socket.write_all(head.as_bytes()).await;
                    let chunk = vec![b'x'; 1 << 16];
                    for _ in 0..len / chunk.len() {
                        if socket.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let credential = Credential {
            authority_host: authority,
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "22222222-2222-2222-2222-222222222222".into(),
            endpoint_version: EndpointVersion::V2,
            kind: CredentialKind::ClientSecret(Secret::new("s".into())),
        };
        let retry = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            ..Default::default()
        };
        let transport = Arc::new(crate::transport::ReqwestTransport::new(None).unwrap());
        let p = TokenProvider::with_options(credential, transport, Arc::new(SystemClock), retry);
        let error = p.get_token(SCOPE).await.unwrap_err();
        let shown = error.to_string();
        assert!(matches!(error, AuthError::Transport { .. }), "{shown}");
        assert!(shown.contains("larger than"), "{shown}");
    }
}
