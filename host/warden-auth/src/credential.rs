//! How a token is obtained: the credential kinds and the one request each makes.
//!
//! Client secret, certificate (signed assertion), workload-identity federation (an external
//! JWT read from a file on every request, so a rotated projected token is always picked up),
//! managed identity (Azure IMDS, or App Service's `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), and
//! a pre-acquired access token. This module builds requests and classifies answers; the
//! [`crate::provider`] sends, retries and caches. It refuses to put a secret in a URL.

use crate::assertion::{AssertionAlgorithm, sign_client_assertion};
use crate::certificate::CertificateKey;
use crate::endpoint::{self, ClientAuth, EndpointVersion};
use crate::error::AuthError;
use crate::secret::{AccessToken, Secret};
use crate::transport::{HttpRequest, HttpResponse, Method};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The IMDS token URL on an Azure VM.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Where a managed identity's token comes from.
#[derive(Clone)]
pub enum ManagedIdentitySource {
    /// Azure Instance Metadata Service (VMs, VM scale sets).
    Imds {
        /// The token URL (default [`IMDS_ENDPOINT`]).
        endpoint: String,
    },
    /// App Service, Functions and Container Apps.
    AppService {
        /// `IDENTITY_ENDPOINT`.
        endpoint: String,
        /// `IDENTITY_HEADER`, sent as `X-IDENTITY-HEADER`.
        header: Secret,
    },
}

impl fmt::Debug for ManagedIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Imds { endpoint } => f.debug_struct("Imds").field("endpoint", endpoint).finish(),
            Self::AppService { endpoint, .. } => f
                .debug_struct("AppService")
                .field("endpoint", endpoint)
                .finish_non_exhaustive(),
        }
    }
}

/// The secret material and method.
#[derive(Debug, Clone)]
pub enum CredentialKind {
    /// A client secret.
    ClientSecret(Secret),
    /// A certificate whose key signs a client assertion.
    Certificate {
        /// The key and certificate.
        key: Arc<CertificateKey>,
        /// PS256 + `x5t#S256` (default) or RS256 + `x5t`.
        algorithm: AssertionAlgorithm,
    },
    /// An external IdP's JWT in a file (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity {
        /// The token file, re-read on every request.
        token_file: PathBuf,
    },
    /// An Azure managed identity.
    ManagedIdentity {
        /// IMDS or App Service.
        source: ManagedIdentitySource,
        /// A user-assigned identity's client id; `None` for system-assigned.
        client_id: Option<String>,
    },
    /// An access token acquired elsewhere, used as is until it expires: at its `exp` claim,
    /// or (an opaque token) one hour after it was loaded — fixed once, not renewed per use.
    AccessToken {
        /// The token.
        token: Secret,
        /// When it stops being used.
        expires_on: SystemTime,
    },
}

impl CredentialKind {
    /// A short name for messages: `client secret`, `certificate`, ….
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClientSecret(_) => "client secret",
            Self::Certificate { .. } => "certificate",
            Self::WorkloadIdentity { .. } => "workload identity (federated token)",
            Self::ManagedIdentity {
                source: ManagedIdentitySource::Imds { .. },
                ..
            } => "managed identity (IMDS)",
            Self::ManagedIdentity {
                source: ManagedIdentitySource::AppService { .. },
                ..
            } => "managed identity (App Service)",
            Self::AccessToken { .. } => "pre-acquired access token",
        }
    }
}

/// An app's identity in one tenant plus how it proves it.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: String,
    /// Tenant GUID or domain.
    pub tenant: String,
    /// Application (client) id.
    pub client_id: String,
    /// Token endpoint version.
    pub endpoint_version: EndpointVersion,
    /// The secret material.
    pub kind: CredentialKind,
}

/// What one answer means.
#[derive(Debug)]
pub enum Outcome {
    /// A token.
    Token(AccessToken),
    /// Worth another attempt (after at least `retry_after`).
    Retry {
        /// Status seen.
        status: u16,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// The error, if this is the last attempt.
        error: AuthError,
    },
    /// Final.
    Fatal(AuthError),
}

/// When a pre-acquired token expires: its `exp` claim, else (no claim, or one past what a
/// clock can hold) an hour after `loaded_at`.
pub fn static_token_expiry(token: &Secret, loaded_at: SystemTime) -> SystemTime {
    crate::diagnose::decode_claims(token.expose())
        .as_ref()
        .and_then(|c| c.get("exp"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|e| UNIX_EPOCH.checked_add(Duration::from_secs(e)))
        .unwrap_or(loaded_at + Duration::from_secs(3600))
}

impl Credential {
    /// The token URL this credential posts to (`None` for managed identity and static tokens).
    pub fn token_url(&self) -> Option<String> {
        match self.kind {
            CredentialKind::ManagedIdentity { .. } | CredentialKind::AccessToken { .. } => None,
            _ => Some(endpoint::token_url(
                &self.authority_host,
                &self.tenant,
                self.endpoint_version,
            )),
        }
    }

    /// The cache key: (authority, tenant, client, scope).
    pub fn cache_key(&self, scope: &str) -> String {
        match &self.kind {
            CredentialKind::ManagedIdentity { source, client_id } => {
                let endpoint = match source {
                    ManagedIdentitySource::Imds { endpoint }
                    | ManagedIdentitySource::AppService { endpoint, .. } => endpoint,
                };
                format!(
                    "{endpoint}|mi|{}|{scope}",
                    client_id.as_deref().unwrap_or("system")
                )
            }
            _ => format!(
                "{}|{}|{}|{scope}",
                self.authority_host, self.tenant, self.client_id
            ),
        }
    }

    /// Builds the request for `scope` (a fresh assertion each time).
    pub fn build_request(&self, scope: &str, now: SystemTime) -> Result<HttpRequest, AuthError> {
        let form_headers = || {
            vec![
                (
                    "content-type".to_owned(),
                    "application/x-www-form-urlencoded".to_owned(),
                ),
                ("accept".to_owned(), "application/json".to_owned()),
                (
                    "client-request-id".to_owned(),
                    uuid::Uuid::new_v4().to_string(),
                ),
                ("x-client-sku".to_owned(), "exo-warden".to_owned()),
                (
                    "x-client-ver".to_owned(),
                    env!("CARGO_PKG_VERSION").to_owned(),
                ),
            ]
        };
        let url = endpoint::token_url(&self.authority_host, &self.tenant, self.endpoint_version);
        let body = match &self.kind {
            CredentialKind::ClientSecret(secret) => endpoint::client_credentials_form(
                self.endpoint_version,
                &self.client_id,
                scope,
                &ClientAuth::Secret(secret),
            ),
            CredentialKind::Certificate { key, algorithm } => {
                let assertion = sign_client_assertion(key, &self.client_id, &url, *algorithm, now);
                endpoint::client_credentials_form(
                    self.endpoint_version,
                    &self.client_id,
                    scope,
                    &ClientAuth::Assertion(&assertion),
                )
            }
            CredentialKind::WorkloadIdentity { token_file } => {
                let assertion = read_federated_token(token_file)?;
                endpoint::client_credentials_form(
                    self.endpoint_version,
                    &self.client_id,
                    scope,
                    &ClientAuth::Assertion(&assertion),
                )
            }
            CredentialKind::ManagedIdentity { source, client_id } => {
                return Ok(managed_identity_request(
                    source,
                    client_id.as_deref(),
                    scope,
                ));
            }
            CredentialKind::AccessToken { .. } => {
                return Err(AuthError::Config {
                    what: "a pre-acquired access token is not requested from an endpoint".into(),
                    fix: "this is a bug: report it".into(),
                });
            }
        };
        let mut request = HttpRequest::new(Method::Post, url);
        request.headers = form_headers();
        request.body = body;
        Ok(request)
    }

    /// Classifies an answer from the endpoint.
    pub fn classify(&self, response: HttpResponse, url: &str, received_at: SystemTime) -> Outcome {
        let retry_after = response.retry_after();
        if (200..300).contains(&response.status) {
            return match endpoint::parse_token_success(&response.body, url, received_at) {
                Ok(token) => Outcome::Token(token),
                Err(e) => Outcome::Fatal(e),
            };
        }
        let managed = matches!(self.kind, CredentialKind::ManagedIdentity { .. });
        if managed {
            return classify_managed_identity(response, url, retry_after);
        }
        let entra = endpoint::parse_entra_error(&response, url);
        let status = response.status;
        let transient_status = status == 408 || status == 429 || status >= 500;
        match entra {
            Some(error) if transient_status || error.is_transient() => Outcome::Retry {
                status,
                retry_after,
                error: AuthError::Entra(Box::new(error)),
            },
            Some(error) => Outcome::Fatal(AuthError::Entra(Box::new(error))),
            None if transient_status => Outcome::Retry {
                status,
                retry_after,
                error: AuthError::Unavailable {
                    url: url.to_owned(),
                    status,
                    attempts: 1,
                    retry_after,
                },
            },
            None => Outcome::Fatal(AuthError::BadResponse {
                url: url.to_owned(),
                reason: format!(
                    "HTTP {status} without Entra's error JSON ({} bytes)",
                    response.body.len()
                ),
            }),
        }
    }

    /// For a pre-acquired token: the token with its fixed lifetime.
    pub fn static_token(&self, now: SystemTime) -> Option<Result<AccessToken, AuthError>> {
        let CredentialKind::AccessToken {
            token: secret,
            expires_on,
        } = &self.kind
        else {
            return None;
        };
        let expires_on = *expires_on;
        if expires_on <= now {
            return Some(Err(AuthError::Config {
                what: "the pre-acquired access token has expired".into(),
                fix: "acquire a new token, or configure a credential warden can refresh itself"
                    .into(),
            }));
        }
        Some(Ok(AccessToken::new(
            secret.expose().to_owned(),
            expires_on,
            expires_on,
        )))
    }
}

fn read_federated_token(path: &PathBuf) -> Result<Secret, AuthError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| AuthError::CredentialFile {
        path: path.clone(),
        reason: format!("the federated token file cannot be read: {e}"),
        fix: "check AZURE_FEDERATED_TOKEN_FILE (or the profile's token_file) and that the token projection is mounted".into(),
    })?);
    let token = text.trim();
    if token.is_empty() || token.split('.').count() != 3 {
        return Err(AuthError::CredentialFile {
            path: path.clone(),
            reason: "the federated token file does not hold one JWT".into(),
            fix: "the file must contain the external identity provider's token (header.payload.signature)".into(),
        });
    }
    Ok(Secret::new(token.to_owned()))
}

fn managed_identity_request(
    source: &ManagedIdentitySource,
    client_id: Option<&str>,
    scope: &str,
) -> HttpRequest {
    let resource = endpoint::scope_to_resource(scope);
    let (endpoint, api_version) = match source {
        ManagedIdentitySource::Imds { endpoint } => (endpoint, "2018-02-01"),
        ManagedIdentitySource::AppService { endpoint, .. } => (endpoint, "2019-08-01"),
    };
    let mut query: Vec<(&str, &str)> = vec![("api-version", api_version), ("resource", resource)];
    if let Some(id) = client_id {
        query.push(("client_id", id));
    }
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    let url = format!(
        "{endpoint}{separator}{}",
        serde_urlencoded::to_string(&query).expect("pairs encode")
    );
    let mut headers = vec![("metadata".to_owned(), "true".to_owned())];
    if let ManagedIdentitySource::AppService { header, .. } = source {
        headers.push(("x-identity-header".to_owned(), header.expose().to_owned()));
    }
    let mut request = HttpRequest::new(Method::Get, url);
    request.headers = headers;
    request
}

fn classify_managed_identity(
    response: HttpResponse,
    url: &str,
    retry_after: Option<Duration>,
) -> Outcome {
    let status = response.status;
    let message = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| {
            let error = v.get("error").and_then(|e| {
                e.as_str()
                    .map(str::to_owned)
                    .or_else(|| e.get("code").and_then(|c| c.as_str()).map(str::to_owned))
            });
            let description = v
                .get("error_description")
                .or_else(|| v.get("message"))
                .and_then(|d| d.as_str());
            match (error, description) {
                (Some(e), Some(d)) => Some(format!("{e}: {d}")),
                (Some(e), None) => Some(e),
                (None, Some(d)) => Some(d.to_owned()),
                (None, None) => None,
            }
        })
        .unwrap_or_else(|| format!("{} bytes of non-JSON", response.body.len()));
    // IMDS: 404, 410 (not ready yet), 429 and 5xx are retried; other 4xx are final.
    if matches!(status, 404 | 410 | 429) || status >= 500 {
        return Outcome::Retry {
            status,
            retry_after,
            error: AuthError::Unavailable {
                url: url.split('?').next().unwrap_or(url).to_owned(),
                status,
                attempts: 1,
                retry_after,
            },
        };
    }
    let fix = match status {
        400 => {
            "check that this machine has a managed identity, the client_id of a user-assigned identity, and the resource"
        }
        401 | 403 => {
            "check IDENTITY_HEADER (App Service) and that the identity is assigned to this resource"
        }
        _ => "check the managed identity endpoint",
    };
    Outcome::Fatal(AuthError::ManagedIdentity {
        status,
        message,
        fix: fix.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(token: &str, loaded_at: SystemTime) -> Credential {
        let token = Secret::new(token.to_owned());
        let expires_on = static_token_expiry(&token, loaded_at);
        Credential {
            authority_host: String::new(),
            tenant: String::new(),
            client_id: String::new(),
            endpoint_version: EndpointVersion::V2,
            kind: CredentialKind::AccessToken { token, expires_on },
        }
    }

    #[test]
    fn an_opaque_pre_acquired_token_expires_an_hour_after_loading_not_after_each_use() {
        let loaded = SystemTime::now();
        let opaque = credential("EwBwA8l6BAAU-opaque", loaded);
        assert!(
            opaque
                .static_token(loaded + Duration::from_secs(3500))
                .unwrap()
                .is_ok()
        );
        let error = opaque
            .static_token(loaded + Duration::from_secs(3700))
            .unwrap()
            .unwrap_err();
        assert!(error.to_string().contains("has expired"), "{error}");
    }

    #[test]
    fn a_jwt_pre_acquired_token_expires_at_its_exp_claim() {
        use base64::Engine;
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 120;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        let jwt = credential(&format!("e30.{payload}.sig"), SystemTime::now());
        let token = jwt.static_token(SystemTime::now()).unwrap().unwrap();
        assert_eq!(token.expires_on, UNIX_EPOCH + Duration::from_secs(exp));
        assert!(
            jwt.static_token(SystemTime::now() + Duration::from_secs(121))
                .unwrap()
                .is_err()
        );
    }
}
