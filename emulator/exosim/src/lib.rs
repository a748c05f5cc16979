//! # exosim: a loopback HTTPS emulator of Microsoft Entra ID and Exchange Online
//!
//! There is no Microsoft tenant reachable from our machines, so exo-warden is built and tested
//! against this emulator. It must be faithful, not convenient: HTTPS with a generated test CA,
//! OIDC discovery, v2 and v1 token endpoints that really check secrets and really verify
//! client-assertion signatures against registered certificates, workload identity federation,
//! managed identity (IMDS and App Service), signed access tokens with realistic claims, and
//! errors in Entra's documented shape. Its fidelity is checked by clients nobody here wrote
//! (msal-python and msal-node for Entra ID, pypsrp for Remote PowerShell; see `tests/peers/`).
//!
//! It refuses to be anything but a test double: it listens where it is told (loopback), keeps
//! everything in memory and in a state directory, and is never linked into the `warden` binary
//! except for `warden demo` (and `warden serve --demo`). It issues app-only tokens (client
//! credentials, managed identity) and user tokens for the people of each tenant: a login form
//! with authorization code + PKCE and refresh tokens for the tenant's service app, and the
//! password grant for its public client (so msal can sign a user in without a browser).
//!
//! Many tenants: [`TenantsConfig::add_fleet`] (`exosim serve --tenants N`) generates customer
//! tenants with their own ids, domains and mailboxes, and one multi-tenant app registered in the
//! first tenant and consented (a service principal with its own grants, `[[tenant.consent]]`) in
//! all or some of them; elsewhere it gets AADSTS700016. Exchange's faults, latency and throttling
//! can be aimed at one tenant ([`ExchangeFaultsUpdate::tenant`]); the token endpoint's faults
//! ([`FaultsUpdate`]) have no tenant selector and hit whichever tenant asks next. Both request
//! logs name the tenant of each request.
//!
//! Embed it with [`Exosim::start`] and [`ExosimOptions::demo`] ([`Exosim::stop`] and
//! [`Exosim::restart`] take it down and bring the same emulator back on the same address, for
//! tests of a service restart); run it out of process with the
//! `exosim serve` binary, which writes a [`ReadyInfo`] file. The Exchange Online REST half
//! (`/adminapi/beta/{tenant}/InvokeCommand`, `EXOModuleFile`) shares the server and the state: a
//! seeded simulated organisation per tenant that writes really change (optionally persisted to a
//! state file), RBAC from the token's `wids`, the live envelope, paging, errors, throttling and
//! fault injection ([`ExchangeFaults`]), all per `docs/protocol/exo-protocol.md`. So does the
//! legacy Remote PowerShell endpoint (`/PowerShell-LiveID`, `/PowerShell`: WS-Management + MS-PSRP,
//! §2), which runs the same cmdlets through the same binder, RBAC and faults.

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod compliance;
mod config;
mod conn;
mod control;
mod counters;
mod directory;
mod error;
mod exchange;
mod faults;
mod identity;
mod jose;
mod pki;
mod ready;
mod request_log;
mod rps;
mod server;
mod state;

pub use compliance::{
    COMPLIANCE_ADMINISTRATOR_ROLE, COMPLIANCE_REGION, EXCHANGE_REGION, ExchangeRegion, TEST_CLOUD,
};
pub use config::{
    AdministrativeUnitConfig, AppConfig, AppRoleAssignmentConfig, AppRoleConfig, CertificateConfig,
    ConsentConfig, DEMO_CLIENT_ID, DEMO_DOMAIN, DEMO_FEDERATED_SUBJECT,
    DEMO_MANAGED_IDENTITY_CLIENT_ID, DEMO_NO_ROLE_CLIENT_ID, DEMO_NO_WIDS_CLIENT_ID,
    DEMO_OPERATOR_ROLE, DEMO_PUBLIC_CLIENT_ID, DEMO_READER_CLIENT_ID, DEMO_SERVICE_CLIENT_ID,
    DEMO_SERVICE_REDIRECT_URI, DEMO_TENANT_ID, EXCHANGE_ADMINISTRATOR_ROLE, EXCHANGE_MANAGE_AS_APP,
    FLEET_CLIENT_ID, FederatedCredentialConfig, FleetConfig, GLOBAL_READER_ROLE, GroupConfig,
    ManagedIdentityConfig, ManagementScopeConfig, PublicClientConfig, RoleAssignmentConfig,
    SecretConfig, ServiceAppConfig, TOKEN_EXCHANGE_AUDIENCE, TenantConfig, TenantsConfig,
    URL_PLACEHOLDER, UserConfig,
};
pub use counters::Counters;
pub use error::{Error, Result};
pub use exchange::ExchangeRequestRecord;
pub use exchange::faults::{
    ExchangeFault, ExchangeFaults, ExchangeFaultsSnapshot, ExchangeFaultsUpdate, InvalidThrottle,
    QueuedExchangeFault, TenantFaultsSnapshot, Throttle,
};
pub use faults::{Faults, FaultsSnapshot, FaultsUpdate, QueuedFault, TokenFault};
pub use ready::{
    AppInfo, CertificateInfo, ConsentInfo, ControlInfo, FederatedCredentialInfo, GroupInfo,
    ManagedIdentityInfo, MultiTenantAppInfo, PublicClientInfo, ReadyInfo, ServiceAppInfo,
    SignInInfo, TenantInfo, UserInfo,
};
pub use request_log::{AssertionSummary, LoggedRequest};
pub use rps::{DEFAULT_MAX_SHELLS, MAX_ENVELOPE, OnPremBasic};

/// Default lifetime of issued access tokens (what Entra's samples show as `expires_in`).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct ExosimOptions {
    /// Address to listen on; port 0 picks a free one. Keep it on loopback.
    pub bind: SocketAddr,
    /// Where `ca.pem` and the app certificate files (PFX, PEM) are written; created if missing.
    pub state_dir: PathBuf,
    /// The simulated tenants.
    pub tenants: TenantsConfig,
    /// Lifetime of issued access tokens (default [`DEFAULT_TOKEN_LIFETIME`]); short values let
    /// tests watch expiry in seconds.
    pub token_lifetime: Duration,
    /// `refresh_in` to send with tokens (Entra sends it for long-lived tokens), if any.
    pub refresh_in: Option<Duration>,
    /// Mailboxes generated per tenant (tenants loaded from `state_file` keep theirs).
    pub mailboxes: usize,
    /// Seed of the tenant generator: the same `(seed, mailboxes)` gives the same tenant.
    pub seed: u64,
    /// JSON state file: loaded at start when it exists, saved (atomically) after every applied
    /// write and at [`Exosim::shutdown`]. `None` keeps the state in memory only.
    pub state_file: Option<PathBuf>,
    /// Per-tenant InvokeCommand throttling; `None` (the default) never answers 429 by itself.
    /// Remote PowerShell Commands share the buckets (and answer 503 with `Retry-After`).
    pub throttle: Option<Throttle>,
    /// Added before every Exchange answer (InvokeCommand and its `$batch` parts, `Get-EXO*`
    /// entity reads, Remote PowerShell Commands) unless a run-time latency is set
    /// ([`ExchangeFaults::set_latency`]); a clear of the faults keeps it. Default zero.
    pub exchange_latency: Duration,
    /// Remote PowerShell shells one app may hold open per tenant (default
    /// [`DEFAULT_MAX_SHELLS`]; Exchange Online allowed 3).
    pub rps_max_shells: usize,
    /// Plain Basic credentials accepted on `/PowerShell`, as on-premises Exchange would, acting
    /// as an Exchange Administrator of the first tenant; `None` (the default) refuses plain
    /// Basic with 401.
    pub onprem_basic: Option<OnPremBasic>,
    /// Answer a Remote PowerShell Create on `/PowerShell-LiveID` whose query has no `PSVersion`
    /// with `302 Found` to the same path with `PSVersion=5.1.17763.2867` added, as the service
    /// redirected clients to the server holding the tenant (docs/protocol/exo-protocol.md §2.3);
    /// clients must follow it only with `-AllowRedirection`. Off by default.
    pub rps_redirect: bool,
    /// How Exchange's front door (a Host `outlook.<suffix>`) treats the tenant's regional host
    /// (docs/protocol/exo-protocol.md §1.2.1); Security & Compliance's front door always
    /// redirects. Default [`ExchangeRegion::Direct`].
    pub exchange_region: ExchangeRegion,
}

impl ExosimOptions {
    /// Loopback on a free port, the ready demo tenant ([`TenantsConfig::demo`]), default lifetime,
    /// 25 mailboxes from seed 1, no state file, no throttling, [`DEFAULT_MAX_SHELLS`] Remote
    /// PowerShell shells per app, no on-premises Basic credentials, no RPS redirect.
    pub fn demo(state_dir: impl Into<PathBuf>) -> Self {
        ExosimOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: state_dir.into(),
            tenants: TenantsConfig::demo(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            refresh_in: None,
            mailboxes: 25,
            seed: 1,
            state_file: None,
            throttle: None,
            exchange_latency: Duration::ZERO,
            rps_max_shells: DEFAULT_MAX_SHELLS,
            onprem_basic: None,
            rps_redirect: false,
            exchange_region: ExchangeRegion::Direct,
        }
    }
}

/// A running emulator. Dropping it stops the server at once; [`Exosim::shutdown`] stops it
/// gracefully.
pub struct Exosim {
    shared: Arc<state::Shared>,
    /// `None` while stopped ([`Exosim::stop`]).
    server: tokio::sync::Mutex<Option<server::Running>>,
    /// Kept for [`Exosim::restart`]: the same certificate on the same address.
    tls: axum_server::tls_rustls::RustlsConfig,
    addr: SocketAddr,
    url: String,
    ca_file: PathBuf,
    ready: ReadyInfo,
}

impl std::fmt::Debug for Exosim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exosim")
            .field("url", &self.url)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Exosim {
    /// Generates keys and certificates, writes the state directory, binds and starts serving
    /// on the current Tokio runtime. Returns once the server accepts connections.
    pub async fn start(options: ExosimOptions) -> Result<Exosim> {
        server::start(options).await
    }

    /// `https://localhost:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The socket address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM file of the generated test CA (`state_dir/ca.pem`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The ready-file contents: URL, CA, tenants with credentials, managed-identity endpoints.
    pub fn ready_info(&self) -> ReadyInfo {
        self.ready.clone()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// Fault injection and token-lifetime control for the token endpoints.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// A JWT from the emulator's own external identity provider (`{url}/_federation`), for
    /// workload identity federation: present it as `client_assertion`.
    pub fn mint_federated_token(
        &self,
        subject: &str,
        audience: &str,
        lifetime: Duration,
    ) -> String {
        identity::issue::mint_federated(&self.shared, subject, audience, lifetime, Duration::ZERO)
    }

    /// A JWT with exactly `claims`, signed RS256 by the emulator's token-signing key under the
    /// `kid` its key sets publish. For tests of a relying party's claim checks (expiry, `nbf`,
    /// issuer, audience, tenant, missing claims): only a token whose signature verifies reaches
    /// them, and no grant issues such tokens.
    pub fn sign_token(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.shared.signing.thumbprints.x5t());
        jose::sign_rs256(&self.shared.signing, &header, claims)
    }

    /// The requests received so far (oldest first), with credentials redacted.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.log.snapshot()
    }

    /// Forgets the logged requests.
    pub fn clear_request_log(&self) {
        self.shared.log.clear();
    }

    /// Base URL of the Exchange Online REST API (the same server: equal to [`Exosim::url`]).
    pub fn exchange_url(&self) -> String {
        self.url.clone()
    }

    /// Fault injection, latency and strict anchor mode for `InvokeCommand`.
    pub fn exchange_faults(&self) -> &ExchangeFaults {
        &self.shared.exchange.faults
    }

    /// Remote PowerShell shells open now (any owner).
    pub fn rps_shell_count(&self) -> usize {
        self.shared.rps.shells.count()
    }

    /// The Exchange requests received so far (oldest first), credentials redacted: InvokeCommand,
    /// EXOModuleFile and Remote PowerShell (those have [`ExchangeRequestRecord::action`]).
    pub fn exchange_log(&self) -> Vec<ExchangeRequestRecord> {
        self.shared.exchange.log_snapshot()
    }

    /// Forgets the logged Exchange requests.
    pub fn clear_exchange_log(&self) {
        self.shared.exchange.clear_log();
    }

    /// The current state of a mailbox as `Get-Mailbox` shows it (without OData annotations), for
    /// assertions. `tenant` is a tenant id or domain; `identity` anything Exchange resolves
    /// (name, alias, address, UPN, GUID).
    pub fn mailbox(&self, tenant: &str, identity: &str) -> Option<serde_json::Value> {
        self.shared.exchange.mailbox(&self.shared, tenant, identity)
    }

    /// How many mailboxes `tenant` has now (0 for an unknown tenant).
    pub fn mailbox_count(&self, tenant: &str) -> usize {
        self.shared.exchange.mailbox_count(&self.shared, tenant)
    }

    /// Writes the state file now (atomically); does nothing when no state file is configured.
    pub fn save_state(&self) -> Result<()> {
        self.shared.exchange.save()
    }

    /// Stops accepting connections, lets in-flight requests finish (up to two seconds), waits
    /// for the server task, and saves the state file (if any).
    pub async fn shutdown(self) {
        server::shutdown(self).await;
    }

    /// Goes down the way a crashed or killed service does: the listening socket closes (new
    /// connections are refused), every open connection is dropped mid-request without an
    /// answer, and the state file (if any) is saved as after every write. Returns once no
    /// connection is open (or after five seconds, with a warning). Everything else stays: [`Exosim::restart`] brings the same emulator
    /// back. The in-process accessors (state, logs, counters, faults) keep working meanwhile.
    /// Does nothing when already stopped.
    pub async fn stop(&self) {
        server::stop(self).await;
    }

    /// Serves again after [`Exosim::stop`], on the same address with the same CA, signing keys,
    /// credentials, paging key, fault settings, counters and request logs, so tokens and paging
    /// links issued before still work. The tenants' state is reloaded from the state file when
    /// one is configured (what a restarted process would find), else kept from memory. Does
    /// nothing when running.
    pub async fn restart(&self) -> Result<()> {
        server::restart(self).await
    }
}

impl Drop for Exosim {
    fn drop(&mut self) {
        if let Some(running) = self.server.get_mut().as_ref() {
            running.abort();
        }
    }
}
