//! Starting, stopping and restarting the HTTPS server: generate keys and certificates off the
//! async threads, bind the socket, assemble the router (identity routes, control plane and the
//! Exchange Online routes) behind the request-log middleware, and serve with rustls on *ring*.
//! A restart serves the same state (keys, CA, credentials, tenants) on the same address.
//!
//! It binds exactly the address it is given (normally loopback) and never serves plain HTTP.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::conn::KillAcceptor;
use crate::exchange::Exchange;

use crate::counters::CounterSet;
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::pki::{self, RsaCredential, TestCa};
use crate::ready::ReadyInfo;
use crate::request_log::{self, RequestLog};
use crate::state::{ReplayCache, Shared};
use crate::{Exosim, ExosimOptions};

/// All routes of one emulator.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(crate::identity::router())
        .merge(crate::control::router())
        .merge(crate::exchange::router())
        .merge(crate::rps::router())
        // By Host: Security & Compliance's front door and regional hosts, and Exchange's
        // regional modes, before the routes above see the request.
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::compliance::route_by_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            request_log::record,
        ))
        .with_state(shared)
}

/// Generates `count` RSA keys on up to all cores.
fn generate_keys(count: usize) -> Result<Vec<rsa::PrivateKey>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, count.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let share = count / threads + usize::from(i < count % threads);
                scope.spawn(move || {
                    (0..share)
                        .map(|_| pki::generate_rsa("RSA key"))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut keys = Vec::with_capacity(count);
        for worker in workers {
            keys.extend(
                worker
                    .join()
                    .map_err(|_| Error::crypto("RSA key", "key generation thread panicked"))??,
            );
        }
        Ok(keys)
    })
}

/// The server task of a running emulator.
#[derive(Debug)]
pub(crate) struct Running {
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops at once: no new connections, open ones dropped (for `Drop`).
    pub(crate) fn abort(&self) {
        self.handle.shutdown();
    }
}

/// Binds `addr` (non-blocking, for Tokio) and says which address it got.
fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Serves `shared` on `listener` (bound to `addr`) until stopped; returns once the accept
/// loop runs.
async fn serve(
    shared: &Arc<Shared>,
    listener: TcpListener,
    addr: SocketAddr,
    tls: RustlsConfig,
) -> Result<Running> {
    let handle = axum_server::Handle::new();
    // TLS over connections that the Exchange reset faults can break (see `crate::conn`).
    let acceptor = RustlsAcceptor::new(tls).acceptor(KillAcceptor {
        connections: shared.exchange.connections.clone(),
    });
    let server = axum_server::from_tcp(listener)
        .map_err(|source| Error::Bind { addr, source })?
        .acceptor(acceptor)
        .handle(handle.clone());
    let app = router(shared.clone());
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        if let Err(error) = server.serve(service).await {
            tracing::error!(%error, "exosim server stopped");
        }
    });
    // The socket is already bound and listening; wait until the accept loop runs too.
    let _ = handle.listening().await;
    Ok(Running { handle, task })
}

pub(crate) async fn start(options: ExosimOptions) -> Result<Exosim> {
    options.tenants.validate()?;
    let state_dir = options.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| Error::state("create directory", &state_dir, e))?;
    // Absolute, so the paths in the ready file work from any directory.
    let state_dir = state_dir.canonicalize().unwrap_or(state_dir);

    let (listener, addr) = bind(options.bind)?;
    let url = format!("https://localhost:{}", addr.port());

    let (ca, signing, federation, secure_string, directory, exchange) = {
        let config = options.tenants.clone();
        let state_dir = state_dir.clone();
        let url = url.clone();
        let (mailboxes, seed, state_file, throttle, latency) = (
            options.mailboxes,
            options.seed,
            options.state_file.clone(),
            options.throttle,
            options.exchange_latency,
        );
        tokio::task::spawn_blocking(move || -> Result<_> {
            let needed = Directory::keys_needed(&config);
            let mut keys = generate_keys(3 + needed)?.into_iter();
            let mut next = || {
                keys.next()
                    .ok_or_else(|| Error::crypto("RSA key", "too few keys"))
            };
            let signing = RsaCredential::self_signed(next()?, "exosim token signing", 365)?;
            let federation = RsaCredential::self_signed(next()?, "exosim federation issuer", 365)?;
            let secure_string = next()?;
            let ca = TestCa::generate()?;
            let directory = Directory::build(&config, &state_dir, &url, &mut keys)?;
            let tenants: Vec<(String, String, Option<usize>)> = directory
                .tenants
                .iter()
                .map(|t| (t.id.clone(), t.domain.clone(), t.mailboxes))
                .collect();
            let exchange =
                Exchange::build(&tenants, mailboxes, seed, state_file, throttle, latency)?;
            Ok((ca, signing, federation, secure_string, directory, exchange))
        })
        .await
        .map_err(|e| Error::crypto("keys and certificates", e))??
    };

    let ca_file = state_dir.join("ca.pem");
    pki::write_file(&ca_file, ca.ca_pem.as_bytes(), false)?;
    let tls = RustlsConfig::from_config(ca.rustls_config()?);

    let identity_header = uuid::Uuid::new_v4().simple().to_string();
    let shared = Arc::new(Shared {
        base_url: url.clone(),
        directory,
        signing,
        federation,
        secure_string,
        identity_header,
        counters: CounterSet::default(),
        faults: Faults::new(options.token_lifetime, options.refresh_in),
        log: RequestLog::default(),
        replay: ReplayCache::default(),
        sign_in: Default::default(),
        exchange,
        rps: crate::rps::Rps::new(
            options.rps_max_shells,
            options.onprem_basic.clone(),
            options.rps_redirect,
        ),
        compliance: crate::compliance::Compliance::new(options.exchange_region),
    });
    let mut ready = ReadyInfo::build(
        &url,
        &ca_file,
        &state_dir,
        &shared.directory,
        &shared.identity_header,
        &shared.federation_issuer(),
    );
    ready.secure_string_public_key =
        crate::exchange::secure_string::public_key_xml(&shared.secure_string.to_public_key());

    let running = serve(&shared, listener, addr, tls.clone()).await?;
    tracing::info!(%url, "exosim listening");

    Ok(Exosim {
        shared,
        server: tokio::sync::Mutex::new(Some(running)),
        tls,
        addr,
        url,
        ca_file,
        ready,
    })
}

/// Saves the state file (if any) off the async threads.
async fn save(shared: &Arc<Shared>) {
    let shared = shared.clone();
    match tokio::task::spawn_blocking(move || shared.exchange.save()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "cannot save the exosim state file"),
        Err(error) => tracing::error!(%error, "state saver panicked"),
    }
}

pub(crate) async fn shutdown(exosim: Exosim) {
    if let Some(running) = exosim.server.lock().await.take() {
        running
            .handle
            .graceful_shutdown(Some(Duration::from_secs(2)));
        let _ = running.task.await;
    }
    save(&exosim.shared).await;
}

/// Longest wait for dropped connections to close their sockets after a stop.
const CONNECTIONS_CLOSE_WITHIN: Duration = Duration::from_secs(5);

pub(crate) async fn stop(exosim: &Exosim) {
    let mut server = exosim.server.lock().await;
    let Some(running) = server.take() else {
        return;
    };
    running.handle.shutdown();
    let _ = running.task.await;
    // Each connection's task ends on its own once told to; wait for them, so that when `stop`
    // returns no socket of this server is open and clients see their connections gone.
    let waited = tokio::time::timeout(CONNECTIONS_CLOSE_WITHIN, async {
        while running.handle.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            open = running.handle.connection_count(),
            "exosim stopped with connections still closing"
        );
    }
    save(&exosim.shared).await;
    // A restarted service has no sessions: Remote PowerShell clients must open new shells.
    exosim.shared.rps.shells.clear();
    tracing::info!(url = %exosim.url, "exosim stopped");
}

pub(crate) async fn restart(exosim: &Exosim) -> Result<()> {
    let mut server = exosim.server.lock().await;
    if server.is_some() {
        return Ok(());
    }
    let (listener, addr) = bind(exosim.addr)?;
    // What a restarted process would find (a small file read; restarts are rare).
    exosim.shared.exchange.reload()?;
    *server = Some(serve(&exosim.shared, listener, addr, exosim.tls.clone()).await?);
    tracing::info!(url = %exosim.url, "exosim restarted");
    Ok(())
}
