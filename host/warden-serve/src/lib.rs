//! # warden-serve: delegated tasks as a service
//!
//! `warden serve`: one process that holds the credential and runs the operator's named tasks
//! (`[[task]]` in the policy) for people who sign in with Entra ID, through the same runtimes and
//! broker as the CLI. An HTTP API and a web page served by the binary itself; approvals (four
//! eyes) before a run that needs one; every run recorded in the store and audited with the
//! person who asked and the person who approved.
//!
//! What it refuses: a caller it cannot authenticate (401); past a rate (429), requests from one
//! address that do not authenticate, or from one person ([`ratelimit`]); a task or run the
//! caller may not see (403, with no hint of what exists, and an audit line), parameter values
//! outside the policy (before queueing), an approval by the run's own requester, a run the
//! policy no longer allows when it starts, plain HTTP on anything but loopback, and re-running a
//! run that may have written (cut after its first write: `outcome-unknown`). A delegate is told
//! why a run did not complete in a short sentence, never the policy's text ([`run_error`]).

#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod html;
pub mod listen;
pub mod marking;
pub mod openapi;
pub mod pages;
pub mod policy_source;
pub mod ratelimit;
pub mod run_error;
pub mod runs;
pub mod state;
pub mod trail_status;
pub mod worker;

use auth::{Auth, AuthConfig};
use listen::TlsFiles;
use ratelimit::{RateLimiter, RequestLimits};
use state::{AppState, Shared};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use warden_audit::AuditTrail;
use warden_store::Store;
use worker::{WorkerConfig, Workers};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is wrong; the message names it and the fix.
    #[error("{0}")]
    Config(String),
    /// The store could not be opened or recovered.
    #[error("the store: {0}")]
    Store(#[from] warden_store::StoreError),
    /// Sign-in could not be set up.
    #[error("sign-in: {0}")]
    Auth(#[from] auth::AuthSetupError),
    /// The listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything `warden serve` is started with.
#[derive(Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// TLS files; `None` only on loopback.
    pub tls: Option<TlsFiles>,
    /// The policy file (read again when it changes).
    pub policy: PathBuf,
    /// The store's URL (`sqlite:PATH` or `postgres://…`).
    pub database: String,
    /// The audit trail.
    pub audit: Arc<AuditTrail>,
    /// Its key file.
    pub audit_key_path: PathBuf,
    /// Sign-in settings; `public_url` None means "the URL we listen on".
    pub auth: AuthSettings,
    /// The workers.
    pub workers: WorkerConfig,
    /// Group object id → name, for policies that name groups.
    pub group_names: HashMap<String, String>,
    /// Requests per person and per address before sign-in, live streams per person.
    pub rate_limit: RequestLimits,
    /// Largest request body.
    pub body_limit: usize,
    /// How long running runs may finish at shutdown before they are cut.
    pub shutdown_grace: Duration,
    /// How often pending approvals are checked for expiry.
    pub expiry_every: Duration,
    /// A CA (PEM) the sign-in calls to the identity provider must trust besides the system's.
    pub sign_in_ca: Option<PathBuf>,
    /// The key behind CSRF tokens and sealed sign-in cookies (kept in the state directory, so
    /// it survives a restart; instances that share a database must share it too).
    pub server_key: auth::ServerKey,
}

/// [`AuthConfig`] without the URL, which is known once the listener is bound.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The OIDC authority, `…/{tenant_id}/v2.0`.
    pub authority: url::Url,
    /// The tenant.
    pub tenant_id: String,
    /// The service's app registration.
    pub client_id: String,
    /// Its secret.
    pub client_secret: secrecy::SecretString,
    /// Its app ID URI (the API's audience).
    pub app_id_uri: String,
    /// How browsers reach the service, if not the bound address.
    pub public_url: Option<url::Url>,
    /// How long a page session lasts.
    pub session_ttl: Duration,
    /// Client apps besides the service's own whose access tokens the API accepts (a command-line
    /// public client, a portal); empty: only tokens the service's own registration asked for.
    pub api_clients: Vec<String>,
}

/// A running service.
#[derive(Debug)]
pub struct Running {
    /// Where it listens (`http(s)://addr`).
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    state: AppState,
    handle: axum_server::Handle<SocketAddr>,
    server: tokio::task::JoinHandle<()>,
    workers: Workers,
    expiry: tokio::task::JoinHandle<()>,
    audit_check: tokio::task::JoinHandle<()>,
    grace: Duration,
}

/// Default request body cap.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Opens the store (migrations, recovery), binds, and starts the server and the workers.
pub async fn start(config: ServeConfig) -> Result<Running, ServeError> {
    listen::check_bind(config.bind, config.tls.as_ref())?;
    let policy = policy_source::PolicySource::open(&config.policy).map_err(|e| {
        ServeError::Config(format!(
            "{e}\n  fix: `warden policy check FILE` shows what is wrong"
        ))
    })?;
    let tls = config.tls.as_ref().map(listen::rustls_config).transpose()?;
    let store = Store::open(&config.database).await?;
    // Runs cut by a stop or crash: queued again unless they may have written.
    let recovery = store
        .recover(warden_store::Stale::Instance(&config.workers.instance))
        .await?;
    if !recovery.requeued.is_empty() || !recovery.outcome_unknown.is_empty() {
        tracing::warn!(
            requeued = recovery.requeued.len(),
            outcome_unknown = recovery.outcome_unknown.len(),
            "recovered runs cut by the last stop"
        );
    }
    let listener =
        std::net::TcpListener::bind(config.bind).map_err(|source| ServeError::Listen {
            addr: config.bind,
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Listen {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.bind,
        source,
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let public_url = match &config.auth.public_url {
        Some(url) => url.clone(),
        None => url::Url::parse(&url).map_err(|e| ServeError::Config(e.to_string()))?,
    };
    // Browsers reach us over https when we terminate TLS or a proxy in front does (its public
    // URL says so): the cookies must then be Secure and `__Host-`, whatever our own listener is.
    let secure_cookies = tls.is_some() || public_url.scheme() == "https";
    let sessions: Arc<dyn auth::SessionStore> = Arc::new(StoreSessions(store.clone()));
    let auth = Auth::new(
        AuthConfig {
            authority: config.auth.authority.clone(),
            tenant_id: config.auth.tenant_id.clone(),
            client_id: config.auth.client_id.clone(),
            client_secret: config.auth.client_secret.clone(),
            app_id_uri: config.auth.app_id_uri.clone(),
            public_url,
            session_ttl: config.auth.session_ttl,
            secure_cookies,
            // Only tokens our own registration or the listed client apps asked for, carrying the
            // API's scope or role.
            allowed_client_apps: config.auth.api_clients.clone(),
            required_scopes: vec![auth::DEFAULT_API_SCOPE.to_owned()],
            required_roles: vec![auth::DEFAULT_API_ROLE.to_owned()],
            server_key: config.server_key.clone(),
        },
        sessions,
        sign_in_client(config.sign_in_ca.as_deref())?,
    )
    .await?;
    let state = AppState(Arc::new(Shared {
        policy,
        store: store.clone(),
        auth,
        audit: config.audit.clone(),
        audit_key_path: config.audit_key_path.clone(),
        limiter: RateLimiter::new(config.rate_limit),
        wake: Arc::new(Notify::new()),
        group_names: config.group_names.clone(),
        accepting: AtomicBool::new(true),
    }));
    state.audit_recovery(&recovery).await;
    let app = app::router(state.clone(), config.body_limit);
    let handle = axum_server::Handle::new();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = match tls {
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .map_err(|source| ServeError::Listen { addr, source })?
            .handle(handle.clone());
            tokio::spawn(async move {
                if let Err(error) = server.serve(service).await {
                    tracing::error!(%error, "the server stopped");
                }
            })
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .map_err(|source| ServeError::Listen { addr, source })?
                .handle(handle.clone());
            tokio::spawn(async move {
                if let Err(error) = server.serve(service).await {
                    tracing::error!(%error, "the server stopped");
                }
            })
        }
    };
    let _ = handle.listening().await;
    let workers = Workers::start(state.clone(), config.workers);
    let expiry = {
        let store = store.clone();
        let every = config.expiry_every;
        tokio::spawn(async move {
            loop {
                match store.expire_pending(time::OffsetDateTime::now_utc()).await {
                    Ok(expired) if !expired.is_empty() => {
                        tracing::info!(count = expired.len(), "pending approvals expired")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "expiring pending approvals failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    // The whole trail verified on a timer, not only when someone asks (see trail_status).
    let audit_check = {
        let status = trail_status::TrailStatus::of(config.audit.path(), &config.audit_key_path);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(trail_status::FULL_EVERY).await;
                match status.verify_in_full().await {
                    Ok(report) if !report.ok() => {
                        tracing::error!(lines = report.lines, "the audit trail does NOT verify")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "the audit trail cannot be verified"),
                }
            }
        })
    };
    Ok(Running {
        url,
        addr,
        state,
        handle,
        server,
        workers,
        expiry,
        audit_check,
        grace: config.shutdown_grace,
    })
}

impl Running {
    /// Stops: no new runs, running ones finish within the grace or are cut (marked), then the
    /// listener closes.
    pub async fn shutdown(self) {
        self.state.accepting.store(false, Ordering::Release);
        self.workers.shutdown(self.grace).await;
        self.expiry.abort();
        self.audit_check.abort();
        // Aborted tasks let go of the state (and the audit trail's lock) when they are dropped.
        let _ = self.expiry.await;
        let _ = self.audit_check.await;
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.server.await;
    }
}

/// Page sessions kept in the store (so they survive a restart and are shared by instances).
#[derive(Debug, Clone)]
struct StoreSessions(Store);

fn session_error(error: warden_store::StoreError) -> auth::SessionStoreError {
    auth::SessionStoreError(Box::new(error))
}

#[async_trait::async_trait]
impl auth::SessionStore for StoreSessions {
    async fn put(
        &self,
        id: &str,
        data: &serde_json::Value,
        expires_at: time::OffsetDateTime,
    ) -> Result<(), auth::SessionStoreError> {
        self.0
            .put_session(id, data, expires_at)
            .await
            .map_err(session_error)
    }
    async fn get(&self, id: &str) -> Result<Option<serde_json::Value>, auth::SessionStoreError> {
        Ok(self
            .0
            .session(id)
            .await
            .map_err(session_error)?
            .map(|s| s.data))
    }
    async fn delete(&self, id: &str) -> Result<(), auth::SessionStoreError> {
        self.0.delete_session(id).await.map_err(session_error)
    }
}

/// The HTTP client of sign-in (OIDC metadata, keys, code redemption): the system's roots,
/// and `ca` when given (an emulator's, a private PKI's).
fn sign_in_client(ca: Option<&std::path::Path>) -> Result<reqwest::Client, ServeError> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| {
            ServeError::Config(format!("{}: the CA file cannot be read: {e}", ca.display()))
        })?;
        let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            ServeError::Config(format!("{}: not a PEM certificate: {e}", ca.display()))
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| ServeError::Config(format!("cannot build the sign-in HTTP client: {e}")))
}
