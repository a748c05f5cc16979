//! The identity provider as this service uses it: OIDC discovery, the tenant's signing keys
//! (JWKS), and the token endpoint for the authorization code.
//!
//! Keys are cached. A token naming a key we do not hold makes us fetch the set again, at most
//! once a minute whatever the callers send, so a flood of made-up `kid`s costs the provider one
//! request a minute. Independently, a set older than [`KEYS_MAX_AGE`] is fetched again on the
//! next use (by one caller; the others go on with the cached set meanwhile), so a key the
//! provider withdrew stops being accepted within a day even if no unknown `kid` ever comes. Every answer is read up to a size limit; every call has a timeout.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use serde::Deserialize;
use url::Url;

use super::error::ProviderError;

/// The most we read of a metadata, JWKS or token answer.
const MAX_ANSWER: usize = 1024 * 1024;
/// How long one call to the provider may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest interval between two fetches of the signing keys.
pub(crate) const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a fetched key set is used before it is fetched again on schedule.
pub(crate) const KEYS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The OIDC discovery document, the fields we use.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
}

impl Metadata {
    fn from_document(document: Document, url: &Url) -> Result<Self, ProviderError> {
        let parse = |field: &'static str, text: &str| {
            Url::parse(text).map_err(|e| ProviderError::Unusable {
                what: "OIDC metadata",
                url: url.to_string(),
                reason: format!("{field} is not a URL: {e}"),
            })
        };
        Ok(Metadata {
            authorization_endpoint: parse(
                "authorization_endpoint",
                &document.authorization_endpoint,
            )?,
            token_endpoint: parse("token_endpoint", &document.token_endpoint)?,
            jwks_uri: parse("jwks_uri", &document.jwks_uri)?,
            issuer: document.issuer,
        })
    }
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// The signing keys by `kid` (RSA signing keys only).
pub(crate) type KeySet = HashMap<String, DecodingKey>;

/// Discovery, keys and the token endpoint of one authority.
pub(crate) struct Provider {
    pub metadata: Metadata,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// When the cached key set was fetched (successfully).
    keys_fetched: RwLock<Instant>,
    /// When the keys were last fetched (or a fetch was last tried); serialises refetches.
    last_fetch: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.metadata.issuer)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Fetches the discovery document of `authority` and its signing keys.
    pub async fn discover(http: reqwest::Client, authority: &Url) -> Result<Self, ProviderError> {
        let url = discovery_url(authority);
        let document: Document = get_json(&http, "OIDC metadata", &url).await?;
        let metadata = Metadata::from_document(document, &url)?;
        let provider = Self::with_metadata(http, metadata);
        let keys = provider.fetch_keys().await?;
        provider.store_keys(keys);
        Ok(provider)
    }

    /// A provider with known metadata and no keys yet (the first unknown `kid` fetches them).
    pub fn with_metadata(http: reqwest::Client, metadata: Metadata) -> Self {
        Self {
            metadata,
            http,
            keys: RwLock::new(Arc::new(KeySet::new())),
            keys_fetched: RwLock::new(Instant::now()),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Makes the last fetch look older than the refetch interval (tests of the rate limit).
    #[cfg(test)]
    pub fn backdate_last_fetch(&self) {
        let mut last_fetch = self.last_fetch.try_lock().expect("no fetch under way");
        if let Some(earlier) = Instant::now().checked_sub(JWKS_REFETCH_INTERVAL) {
            *last_fetch = earlier;
        }
    }

    /// Makes the cached key set look `age` old (tests of the scheduled refresh).
    #[cfg(test)]
    pub fn backdate_keys(&self, age: Duration) {
        if let Some(earlier) = Instant::now().checked_sub(age) {
            *self.keys_fetched.write().expect("key age lock") = earlier;
        }
        self.backdate_last_fetch();
    }

    /// The key named `kid`: from the cache (refreshed first if older than [`KEYS_MAX_AGE`]), or
    /// after one refetch if the last fetch is more than [`JWKS_REFETCH_INTERVAL`] old.
    /// `Ok(None)` when the provider does not have it.
    pub async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, ProviderError> {
        self.refresh_on_schedule().await;
        if let Some(key) = self.cached(kid) {
            return Ok(Some(key));
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another caller may have refetched while we waited for the lock.
        if let Some(key) = self.cached(kid) {
            return Ok(Some(key));
        }
        if last_fetch.elapsed() < JWKS_REFETCH_INTERVAL {
            return Ok(None);
        }
        *last_fetch = Instant::now();
        let keys = self.fetch_keys().await?;
        tracing::info!(
            keys = keys.len(),
            "refetched the identity provider's signing keys"
        );
        let found = keys.get(kid).cloned();
        self.store_keys(keys);
        Ok(found)
    }

    /// Fetches the key set again if it is older than [`KEYS_MAX_AGE`]. One caller does it; a
    /// caller that finds a fetch under way goes on with the cached keys instead of waiting. A
    /// failed fetch keeps the cached keys (logged) and is retried after the refetch interval.
    async fn refresh_on_schedule(&self) {
        if self.keys_fetched.read().expect("key age lock").elapsed() < KEYS_MAX_AGE {
            return;
        }
        let Ok(mut last_fetch) = self.last_fetch.try_lock() else {
            return;
        };
        let stale = self.keys_fetched.read().expect("key age lock").elapsed() >= KEYS_MAX_AGE;
        if !stale || last_fetch.elapsed() < JWKS_REFETCH_INTERVAL {
            return;
        }
        *last_fetch = Instant::now();
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "refreshed the signing keys on schedule");
                self.store_keys(keys);
            }
            Err(error) => tracing::warn!(
                %error,
                "could not refresh the signing keys on schedule; keeping the cached ones"
            ),
        }
    }

    fn store_keys(&self, keys: KeySet) {
        *self.keys.write().expect("key set lock") = Arc::new(keys);
        *self.keys_fetched.write().expect("key age lock") = Instant::now();
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().expect("key set lock").get(kid).cloned()
    }

    async fn fetch_keys(&self) -> Result<KeySet, ProviderError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<serde_json::Value>,
        }
        let url = &self.metadata.jwks_uri;
        let jwks: Jwks = get_json(&self.http, "signing keys (JWKS)", url).await?;
        // A key we cannot use (EC, encryption, malformed) is skipped, not fatal: the provider
        // may publish kinds we never accept.
        let keys: KeySet = jwks
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter(is_rsa_signing_key)
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some((kid, key))
            })
            .collect();
        if keys.is_empty() {
            return Err(ProviderError::Unusable {
                what: "signing keys (JWKS)",
                url: url.to_string(),
                reason: "no RSA signing key with a kid".into(),
            });
        }
        Ok(keys)
    }

    /// Redeems an authorization code (confidential client, PKCE). `form` is the request body;
    /// the answer's `error`/`error_codes` are returned typed, never its description.
    pub async fn redeem_code(
        &self,
        form: &[(&str, &str)],
    ) -> Result<Result<TokenAnswer, TokenError>, ProviderError> {
        let url = &self.metadata.token_endpoint;
        let what = "token endpoint";
        let response = self
            .http
            .post(url.clone())
            .timeout(CALL_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| unreachable(what, url, &e))?;
        let status = response.status();
        let body = read_limited(response, what, url).await?;
        if status.is_success() {
            serde_json::from_slice(&body)
                .map(Ok)
                .map_err(|e| unusable(what, url, e))
        } else if let Ok(error) = serde_json::from_slice::<TokenError>(&body) {
            Ok(Err(error))
        } else {
            Err(ProviderError::Status {
                what,
                url: url.to_string(),
                status: status.as_u16(),
            })
        }
    }
}

/// A token endpoint's success answer: only the id_token is used (the access and refresh
/// tokens are for Graph, which this service does not call, and are dropped unread).
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    pub id_token: Option<String>,
}

/// A token endpoint's error answer, its safe parts.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenError {
    pub error: String,
    #[serde(default)]
    pub error_codes: Vec<u64>,
}

fn is_rsa_signing_key(jwk: &Jwk) -> bool {
    matches!(
        jwk.algorithm,
        jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
    ) && matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
}

/// `{authority}/.well-known/openid-configuration`, keeping the authority's path.
pub(crate) fn discovery_url(authority: &Url) -> Url {
    let mut url = authority.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        authority.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    what: &'static str,
    url: &Url,
) -> Result<T, ProviderError> {
    let response = http
        .get(url.clone())
        .timeout(CALL_TIMEOUT)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unreachable(what, url, &e))?;
    if !response.status().is_success() {
        return Err(ProviderError::Status {
            what,
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    let body = read_limited(response, what, url).await?;
    serde_json::from_slice(&body).map_err(|e| unusable(what, url, e))
}

async fn read_limited(
    mut response: reqwest::Response,
    what: &'static str,
    url: &Url,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = || ProviderError::Unusable {
        what,
        url: url.to_string(),
        reason: format!("larger than {MAX_ANSWER} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable(what, url, &e))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn unreachable(what: &'static str, url: &Url, error: &reqwest::Error) -> ProviderError {
    // reqwest's text names the URL (no secret: the code and secret travel in the body).
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    ProviderError::Unreachable {
        what,
        url: url.to_string(),
        reason,
    }
}

fn unusable(what: &'static str, url: &Url, error: serde_json::Error) -> ProviderError {
    // Position and category only: serde_json's own message may quote a value it met, and a
    // token answer's values are secrets.
    ProviderError::Unusable {
        what,
        url: url.to_string(),
        reason: format!(
            "not the expected JSON ({:?} error at line {} column {})",
            error.classify(),
            error.line(),
            error.column()
        ),
    }
}
