//! Starting and stopping the HTTPS server: generate keys and certificates off the async
//! threads, bind the socket, assemble the router (identity routes, control plane and the
//! Exchange Online routes) behind the request-log middleware, and serve with rustls on *ring*.
//!
//! It binds exactly the address it is given (normally loopback) and never serves plain HTTP.

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

pub(crate) async fn start(options: ExosimOptions) -> Result<Exosim> {
    options.tenants.validate()?;
    let state_dir = options.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| Error::state("create directory", &state_dir, e))?;
    // Absolute, so the paths in the ready file work from any directory.
    let state_dir = state_dir.canonicalize().unwrap_or(state_dir);

    let listener = std::net::TcpListener::bind(options.bind).map_err(|source| Error::Bind {
        addr: options.bind,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind {
            addr: options.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: options.bind,
        source,
    })?;
    let url = format!("https://localhost:{}", addr.port());

    let (ca, signing, federation, directory, exchange) = {
        let config = options.tenants.clone();
        let state_dir = state_dir.clone();
        let url = url.clone();
        let (mailboxes, seed, state_file, throttle) = (
            options.mailboxes,
            options.seed,
            options.state_file.clone(),
            options.throttle,
        );
        tokio::task::spawn_blocking(move || -> Result<_> {
            let needed = Directory::keys_needed(&config);
            let mut keys = generate_keys(2 + needed)?.into_iter();
            let mut next = || {
                keys.next()
                    .ok_or_else(|| Error::crypto("RSA key", "too few keys"))
            };
            let signing = RsaCredential::self_signed(next()?, "exosim token signing", 365)?;
            let federation = RsaCredential::self_signed(next()?, "exosim federation issuer", 365)?;
            let ca = TestCa::generate()?;
            let directory = Directory::build(&config, &state_dir, &url, &mut keys)?;
            let tenants: Vec<(String, String)> = directory
                .tenants
                .iter()
                .map(|t| (t.id.clone(), t.domain.clone()))
                .collect();
            let exchange = Exchange::build(&tenants, mailboxes, seed, state_file, throttle)?;
            Ok((ca, signing, federation, directory, exchange))
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
        identity_header,
        counters: CounterSet::default(),
        faults: Faults::new(options.token_lifetime, options.refresh_in),
        log: RequestLog::default(),
        replay: ReplayCache::default(),
        exchange,
    });
    let ready = ReadyInfo::build(
        &url,
        &ca_file,
        &state_dir,
        &shared.directory,
        &shared.identity_header,
        &shared.federation_issuer(),
    );

    let handle = axum_server::Handle::new();
    // TLS over connections that the Exchange reset faults can break (see `crate::conn`).
    let acceptor = RustlsAcceptor::new(tls).acceptor(KillAcceptor {
        connections: shared.exchange.connections.clone(),
    });
    let server = axum_server::from_tcp(listener)
        .map_err(|source| Error::Bind {
            addr: options.bind,
            source,
        })?
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
    tracing::info!(%url, "exosim listening");

    Ok(Exosim {
        shared,
        handle,
        task: Some(task),
        addr,
        url,
        ca_file,
        ready,
    })
}

pub(crate) async fn shutdown(mut exosim: Exosim) {
    exosim
        .handle
        .graceful_shutdown(Some(Duration::from_secs(2)));
    if let Some(task) = exosim.task.take() {
        let _ = task.await;
    }
    let shared = exosim.shared.clone();
    match tokio::task::spawn_blocking(move || shared.exchange.save()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "cannot save the exosim state file at shutdown"),
        Err(error) => tracing::error!(%error, "state saver panicked at shutdown"),
    }
}
