//! The legacy Remote PowerShell transport: WS-Management + MS-PSRP (`reference/exo-protocol.md`
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
//! plain http, following a redirect anywhere but on Create and only to https, and repeating a
//! write whose outcome is unknown.

use crate::error::Result;
use crate::runner::{CmdletRunner, PageStream};
use crate::session::{Invocation, SYSTEM_MAILBOX};
use secrecy::SecretString;
use std::path::Path;
use std::time::Duration;
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
    /// Follow a redirect of the Create request (PowerShell's `-AllowRedirection`).
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
            base_url: crate::session::rest_base(cloud).to_owned(),
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
        todo!("rps: RpsConfig::endpoint")
    }

    /// Whether this targets Exchange Online itself (a host of a cloud's REST base), where RPS
    /// is retired: callers warn with [`RETIRED`].
    pub fn targets_exchange_online(&self) -> bool {
        todo!("rps: RpsConfig::targets_exchange_online")
    }
}

/// An RPS session with one tenant. Cheap to clone; clones share the runspace pool.
#[derive(Debug, Clone)]
pub struct RpsSession {
    config: std::sync::Arc<RpsConfig>,
}

impl RpsSession {
    /// A session sending with reqwest over rustls (system roots plus `extra_ca`, if given).
    /// Nothing is sent until the first call.
    pub fn new(config: RpsConfig, tokens: TokenProvider, extra_ca: Option<&Path>) -> Result<Self> {
        let _ = (tokens, extra_ca);
        let _ = &config;
        todo!("rps: RpsSession::new")
    }

    /// The configuration.
    pub fn config(&self) -> &RpsConfig {
        &self.config
    }

    /// Closes the runspace pool (Delete), if one is open. Later calls open a new one.
    pub async fn close(&self) -> Result<()> {
        todo!("rps: RpsSession::close")
    }
}

impl CmdletRunner for RpsSession {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        let _ = invocation;
        todo!("rps: RpsSession::start")
    }
}
