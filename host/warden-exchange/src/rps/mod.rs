//! The legacy Remote PowerShell transport: WS-Management + MS-PSRP (`docs/protocol/exo-protocol.md`
//! §2) to `https://outlook.office365.com/PowerShell-LiveID?BasicAuthToOAuthConversion=true`
//! (app-only: Basic `OAuthUser@<tenant>` / `Bearer <token>`) or an on-premises
//! `https://server/PowerShell` (plain Basic), behind the same [`CmdletRunner`] as REST.
//!
//! One runspace pool per session, opened on first use and shared by every call; each call is one
//! pipeline (Command, then Receive until the pipeline's state is final); results arrive as
//! pages, one per Receive answer. Every request carries a fresh token from the provider, so a
//! long session renews as tokens expire.
//!
//! What it refuses: sending script text (a call is always one cmdlet with named parameters),
//! plain http, following a redirect anywhere but on Create and only to https (with plain Basic
//! credentials, only on the configured host), and repeating a write whose outcome is unknown.
//!
//! How answers map to what REST callers see:
//! - pages: one per Receive answer carrying output, warnings or non-terminating errors (see
//!   [`RpsStream`]); an output that is not an object becomes `{"Value": …}`; `$select` is
//!   applied to the objects here (RPS has no projection);
//! - a Failed pipeline is [`crate::ExchangeError::Cmdlet`] with the error id, request id and
//!   server parsed from `FullyQualifiedErrorId`, and REST's status for it: 404 `NotFound` for an
//!   object not found, 400 `BadRequest` for an unknown cmdlet, a parameter that does not bind
//!   or a category blaming the request, else 500
//!   ([`convert::status_of`]);
//! - HTTP 401 (after one fresh token) is `AccessDenied` 401; HTTP 403 and a `w:AccessDenied`
//!   fault (authenticated, no Exchange role) are `AccessDenied` 403, explained as REST does;
//! - any other fault is `Protocol` naming the fault's reason and codes;
//! - retries follow REST's rules (`client` module docs): a write whose Command (or the
//!   pipeline's state) may have been lost is `OutcomeUnknown` and never sent again.

mod client;
pub mod convert;
mod stream;

pub use stream::RpsStream;

use crate::error::{ExchangeError, Result};
use crate::rest::session::{Invocation, SYSTEM_MAILBOX};
use crate::runner::{CmdletRunner, PageStream};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use warden_auth::transport::HttpTransport;
use warden_auth::{Cloud, TokenProvider};

/// Exchange Online's RPS path.
pub const LIVE_ID_PATH: &str = "/PowerShell-LiveID";
/// On-premises Exchange Server's RPS path.
pub const ON_PREMISES_PATH: &str = "/PowerShell";

/// What to say when RPS is chosen for Exchange Online itself.
pub const RETIRED: &str = "Exchange Online retired Remote PowerShell in 2023 (tenants cannot re-enable it); use transport = \"rest\" unless you target an emulator or on-premises Exchange";

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum RpsAuth {
    /// Basic `user` / `Bearer <token from the provider>` with `BasicAuthToOAuthConversion=true`;
    /// `user` is `OAuthUser@<tenant>` for app-only.
    OAuth {
        /// The Basic user name.
        user: String,
    },
    /// Plain Basic (on-premises test setups), over https only.
    Basic {
        /// `DOMAIN\user` or a UPN.
        user: String,
        /// The password.
        password: SecretString,
    },
}

/// How a session talks to an RPS endpoint.
#[derive(Debug, Clone)]
pub struct RpsConfig {
    /// `https://outlook.office365.com` (or an emulator's or on-premises server's URL).
    pub base_url: String,
    /// [`LIVE_ID_PATH`] or [`ON_PREMISES_PATH`].
    pub path: String,
    /// Tenant GUID or domain.
    pub tenant: String,
    /// The `email=` routing anchor, `SystemMailbox{…}@<tenant>` by default; None leaves it off.
    pub anchor: Option<String>,
    /// `DelegatedOrg=`: the customer tenant a partner manages.
    pub delegated_org: Option<String>,
    /// The session configuration, `Microsoft.Exchange`.
    pub configuration_name: String,
    /// How requests authenticate.
    pub auth: RpsAuth,
    /// Token scope for the Exchange resource.
    pub scope: String,
    /// `MaxEnvelopeSize` this client asks for and fragments to.
    pub max_envelope_size: u32,
    /// `OperationTimeout` of a Receive (the server answers `TimedOut` after it; we ask again).
    pub operation_timeout: Duration,
    /// Time limit per HTTP request.
    pub request_timeout: Duration,
    /// Follow a redirect of the Create request (PowerShell's `-AllowRedirection`), only to
    /// https. With [`RpsAuth::OAuth`] (a short-lived token) it may move the session to another
    /// host; with [`RpsAuth::Basic`] (a long-lived password) only to another path of the
    /// configured host: a redirect elsewhere is refused whatever this says (set the endpoint
    /// URL to the new host if you trust it). On by default.
    pub allow_redirection: bool,
    /// Most redirects followed.
    pub max_redirects: u32,
    /// Runspaces in the pool: pipelines that may run at once.
    pub max_concurrency: usize,
    /// Attempts per request that may be repeated, the first included.
    pub max_attempts: u32,
    /// First back-off (doubles per attempt).
    pub base_delay: Duration,
    /// Largest back-off.
    pub max_delay: Duration,
}

impl RpsConfig {
    /// Defaults for app-only access to a tenant in a cloud: the cloud's host, [`LIVE_ID_PATH`],
    /// the system-mailbox anchor, `OAuthUser@<tenant>`, `Microsoft.Exchange`.
    pub fn new(cloud: Cloud, tenant: &str) -> Self {
        Self {
            base_url: crate::rest::session::rest_base(cloud).to_owned(),
            path: LIVE_ID_PATH.to_owned(),
            tenant: tenant.to_owned(),
            anchor: Some(format!("{SYSTEM_MAILBOX}@{tenant}")),
            delegated_org: None,
            configuration_name: "Microsoft.Exchange".to_owned(),
            auth: RpsAuth::OAuth {
                user: format!("OAuthUser@{tenant}"),
            },
            scope: cloud.exchange_scope(),
            max_envelope_size: 153_600,
            operation_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(960),
            allow_redirection: true,
            max_redirects: 5,
            max_concurrency: 8,
            max_attempts: 6,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        }
    }

    /// The endpoint URL: base, path, then `BasicAuthToOAuthConversion=true` (OAuth only),
    /// `DelegatedOrg=` and `email=` (percent-encoded) when set.
    pub fn endpoint(&self) -> String {
        let encode = |value: &str| {
            // Form encoding writes a space as `+`; a query wants `%20` (a `+` itself is `%2B`).
            url::form_urlencoded::byte_serialize(value.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        let path = self.path.trim();
        let mut url = format!(
            "{}{}{}",
            self.base_url.trim().trim_end_matches('/'),
            if path.starts_with('/') || path.is_empty() {
                ""
            } else {
                "/"
            },
            path
        );
        let mut query = Vec::new();
        if matches!(self.auth, RpsAuth::OAuth { .. }) {
            query.push("BasicAuthToOAuthConversion=true".to_owned());
        }
        if let Some(org) = self
            .delegated_org
            .as_deref()
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            query.push(format!("DelegatedOrg={}", encode(org)));
        }
        if let Some(anchor) = self
            .anchor
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            query.push(format!("email={}", encode(anchor)));
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    /// The shared retry policy with this session's attempts and back-off.
    pub fn retry_policy(&self) -> crate::pipeline::RetryPolicy {
        crate::pipeline::RetryPolicy::exchange(self.max_attempts, self.base_delay, self.max_delay)
    }

    /// Whether this targets Exchange Online itself (a host of a cloud's REST base), where RPS
    /// is retired: callers warn with [`RETIRED`].
    pub fn targets_exchange_online(&self) -> bool {
        let host = |url: &str| {
            url::Url::parse(url.trim())
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        };
        let Some(ours) = host(&self.base_url) else {
            return false;
        };
        [Cloud::Public, Cloud::GccHigh, Cloud::Dod, Cloud::China]
            .into_iter()
            .filter_map(|cloud| host(crate::rest::session::rest_base(cloud)))
            .any(|exo| exo == ours)
    }
}

/// An RPS session with one tenant. Cheap to clone; clones share the runspace pool.
#[derive(Debug, Clone)]
pub struct RpsSession {
    config: std::sync::Arc<RpsConfig>,
    inner: Arc<client::Inner>,
}

/// Smallest `max_envelope_size` accepted: room for the SOAP around a useful fragment.
pub const MIN_ENVELOPE_SIZE: u32 = 8_192;

impl RpsSession {
    /// A session sending with `http` (usually the [`TokenProvider::transport`] of `tokens`; a
    /// scripted server in tests). Nothing is sent until the first call.
    pub fn new(
        config: RpsConfig,
        tokens: TokenProvider,
        http: Arc<dyn HttpTransport>,
    ) -> Result<Self> {
        validate(&config)?;
        let config = Arc::new(config);
        Ok(Self {
            inner: Arc::new(client::Inner::new(config.clone(), tokens, http)),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RpsConfig {
        &self.config
    }

    /// Closes the runspace pool (Delete), if one is open. Later calls open a new one.
    pub async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    /// Runs a cmdlet, returning its results page by page.
    pub fn stream(&self, invocation: Invocation) -> RpsStream {
        RpsStream::new(self.inner.clone(), invocation)
    }

    /// The endpoint the session uses now: [`RpsConfig::endpoint`], or where a redirect of
    /// its Create moved it.
    pub async fn current_endpoint(&self) -> String {
        self.inner.pool.lock().await.endpoint.clone()
    }
}

impl CmdletRunner for RpsSession {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        Box::new(self.stream(invocation))
    }
}

/// Why `invocation` cannot go over RPS at all, decided when its stream is made.
pub(super) fn refusal(invocation: &Invocation) -> Option<ExchangeError> {
    // The module defines the Get-EXO* cmdlets for REST connections only.
    if crate::rest::entity::is_rest_only(&invocation.cmdlet) {
        Some(crate::rest::entity::rest_only_error(&invocation.cmdlet))
    } else {
        secure_string_refusal(invocation)
    }
}

/// A SecureString or PSCredential value over RPS needs PSRP's session-key exchange
/// (PUBLIC_KEY / ENCRYPTED_SESSION_KEY, MS-PSRP 3.1.5.4.5; jborean93/pypsrp
/// `src/pypsrp/powershell.py` `exchange_keys`), which this client does not implement: sending
/// the value as a plain string would put the password on the wire in clear CLIXML, and the
/// server's binder refuses a string for a SecureString anyway. So the call is refused here,
/// before anything is sent.
fn secure_string_refusal(invocation: &Invocation) -> Option<ExchangeError> {
    let name = invocation.parameters.iter().find_map(|(name, value)| {
        let empty = matches!(value, crate::params::ParamValue::Null)
            || matches!(value, crate::params::ParamValue::String(s) if s.is_empty());
        (!empty && warden_vocab::secure_parameter(&invocation.cmdlet, name).is_some())
            .then_some(name)
    })?;
    Some(ExchangeError::Invalid(format!(
        "{} -{name} is a SecureString parameter, which the rps transport cannot send (it needs PSRP's session-key exchange, not implemented); nothing was sent\n  fix: run this cmdlet over --transport rest, which encrypts it as the ExchangeOnlineManagement module does",
        invocation.cmdlet
    )))
}

fn validate(config: &RpsConfig) -> Result<()> {
    let base = url::Url::parse(config.base_url.trim()).map_err(|e| {
        ExchangeError::Invalid(format!(
            "the RPS URL '{}' is not a URL ({e}): give https://host[:port]",
            config.base_url
        ))
    })?;
    if base.scheme() != "https" {
        return Err(ExchangeError::Invalid(format!(
            "the RPS URL '{}' is not https: Basic credentials (which carry the token) must not travel in clear; use https://{}{} (for a local emulator, serve TLS and trust its CA with WARDEN_CA_FILE)",
            config.base_url,
            base.host_str().unwrap_or("host"),
            base.port().map(|p| format!(":{p}")).unwrap_or_default()
        )));
    }
    if config.max_envelope_size < MIN_ENVELOPE_SIZE {
        return Err(ExchangeError::Invalid(format!(
            "max_envelope_size {} is below {MIN_ENVELOPE_SIZE} bytes",
            config.max_envelope_size
        )));
    }
    if config.max_concurrency == 0 {
        return Err(ExchangeError::Invalid(
            "max_concurrency must be at least 1 (it is the pool's MaxRunspaces)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: &str =
        "email=SystemMailbox%7Bbb558c35-97f1-4cb9-8ff7-d53741dc928c%7D%40contoso.onmicrosoft.com";

    #[test]
    fn endpoint_forms() {
        let config = RpsConfig::new(Cloud::Public, "contoso.onmicrosoft.com");
        assert_eq!(
            config.endpoint(),
            format!(
                "https://outlook.office365.com/PowerShell-LiveID?BasicAuthToOAuthConversion=true&{ANCHOR}"
            )
        );
        let mut partner = config.clone();
        partner.delegated_org = Some("fabrikam.onmicrosoft.com".into());
        assert_eq!(
            partner.endpoint(),
            format!(
                "https://outlook.office365.com/PowerShell-LiveID?BasicAuthToOAuthConversion=true&DelegatedOrg=fabrikam.onmicrosoft.com&{ANCHOR}"
            )
        );
        let mut bare = config.clone();
        bare.anchor = None;
        assert_eq!(
            bare.endpoint(),
            "https://outlook.office365.com/PowerShell-LiveID?BasicAuthToOAuthConversion=true"
        );
        let mut on_premises = config.clone();
        on_premises.base_url = "https://mail.contoso.com/".into();
        on_premises.path = ON_PREMISES_PATH.into();
        on_premises.anchor = None;
        on_premises.auth = RpsAuth::Basic {
            user: "CONTOSO\\admin".into(),
            password: SecretString::from("pw"),
        };
        assert_eq!(
            on_premises.endpoint(),
            "https://mail.contoso.com/PowerShell"
        );
        on_premises.delegated_org = Some("a b&c=d".into());
        assert_eq!(
            on_premises.endpoint(),
            "https://mail.contoso.com/PowerShell?DelegatedOrg=a%20b%26c%3Dd"
        );
    }

    #[test]
    fn exchange_online_hosts_are_recognised() {
        let mut config = RpsConfig::new(Cloud::Public, "contoso.onmicrosoft.com");
        assert!(config.targets_exchange_online());
        config.base_url = "https://OUTLOOK.office365.us".into();
        assert!(config.targets_exchange_online());
        config.base_url = "https://outlook-dod.office365.us:443/".into();
        assert!(config.targets_exchange_online());
        config.base_url = "https://127.0.0.1:8443".into();
        assert!(!config.targets_exchange_online());
        config.base_url = "https://outlook.office365.com.evil.example".into();
        assert!(!config.targets_exchange_online());
    }

    #[test]
    fn plain_http_is_refused_with_the_fix() {
        let mut config = RpsConfig::new(Cloud::Public, "contoso.onmicrosoft.com");
        config.base_url = "http://127.0.0.1:8080".into();
        let error = validate(&config).unwrap_err().to_string();
        assert!(
            error.contains("'http://127.0.0.1:8080' is not https"),
            "{error}"
        );
        assert!(error.contains("use https://127.0.0.1:8080"), "{error}");
    }
}
