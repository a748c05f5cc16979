//! `warden serve`: the service for delegated tasks (warden-serve). This module only turns the
//! command line into a [`warden_serve::ServeConfig`] — the Exchange session (the same
//! `connect()` as `warden run`), the audit trail, the store's URL, the service's own app
//! registration for sign-in — and stops the service on SIGINT/SIGTERM.

use crate::auth_args::AuthArgs;
use crate::guest_args::{load_policy, policy_path};
use anyhow::Context;
use clap::Args;
use clap::builder::TypedValueParser;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_auth::config::Environment;
use warden_serve::listen::TlsFiles;
use warden_serve::ratelimit::{RateLimit, RequestLimits};
use warden_serve::worker::{ClaimTiming, WorkerConfig};
use warden_serve::{AuthSettings, ServeConfig};

/// Arguments of `warden serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Plain HTTP is refused on anything but a loopback address: give \
--tls-cert and --tls-key to listen elsewhere. SIGINT/SIGTERM stop taking runs, let running ones \
finish (--shutdown-grace), then mark the ones cut."
)]
pub struct ServeArgs {
    #[command(flatten)]
    auth: AuthArgs,
    /// The policy with the tasks [default: $WARDEN_POLICY]. Read again when it changes.
    #[arg(long, value_name = "FILE", required_unless_present = "demo")]
    policy: Option<PathBuf>,
    /// Where to listen, e.g. 127.0.0.1:8080 (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// The TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The store: sqlite:PATH or postgres://… [default: sqlite:STATE_DIR/serve.db].
    #[arg(
        long,
        value_name = "URL",
        env = "WARDEN_DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// The service's state directory (its database, audit trail and key by default)
    /// [default: $XDG_STATE_HOME/warden/serve].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The audit trail [default: STATE_DIR/audit.jsonl].
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// The audit key [default: STATE_DIR/audit.key].
    #[arg(long, value_name = "FILE")]
    audit_key: Option<PathBuf>,
    /// Write {"url": …} to FILE once listening (with --demo, also "exosim": its ready object).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Runs at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// This instance's name: its runs cut by a stop are recovered when it starts again (give
    /// each instance sharing a PostgreSQL database its own) [default: the host name].
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,
    /// Time limit of each cmdlet call, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    call_timeout: u64,
    /// Seconds running runs get to finish at shutdown before they are cut.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    shutdown_grace: u64,
    /// Seconds between heartbeats of this instance's running runs (and sweeps for stale ones).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_every: u64,
    /// Seconds without a heartbeat after which any instance takes a run back from the instance
    /// that claimed it (it died): queued again if it never wrote, else outcome-unknown. At least
    /// three heartbeats; the instances' clocks must agree to within this less one heartbeat.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    claims_stale_after: u64,
    /// Requests one client address (IPv4, IPv6 /64) may make at once without a valid sign-in.
    #[arg(long, value_name = "N", default_value_t = RequestLimits::default().address.burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    address_burst: u32,
    /// Such requests per second refilled to each address.
    #[arg(long, value_name = "RATE", default_value_t = RequestLimits::default().address.per_second)]
    address_rate: f64,
    /// A reverse proxy in front of the service (its address as the service sees it; repeat
    /// for each): requests from it are counted under the client its `X-Forwarded-For` names.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Live run views (server-sent event streams) one person may hold open at once.
    #[arg(long, value_name = "N", default_value_t = RequestLimits::default().streams_per_person,
          value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    streams_per_person: usize,
    /// Seconds one live run view lasts before the browser reconnects.
    #[arg(long, value_name = "SECS", default_value_t = RequestLimits::default().stream_lifetime.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    stream_lifetime: u64,
    /// The service's own app registration (sign-in and the API's audience).
    #[arg(long, value_name = "GUID", env = "WARDEN_SERVE_CLIENT_ID")]
    service_client_id: Option<String>,
    /// A file holding that app's client secret (or $WARDEN_SERVE_CLIENT_SECRET).
    #[arg(long, value_name = "FILE")]
    service_secret_file: Option<PathBuf>,
    /// The app's Application ID URI [default: api://SERVICE_CLIENT_ID].
    #[arg(long, value_name = "URI")]
    app_id_uri: Option<String>,
    /// How browsers reach the service (behind a proxy) [default: the address it listens on].
    #[arg(long, value_name = "URL")]
    public_url: Option<url::Url>,
    /// A client app (its application id) whose users' access tokens the API accepts besides the
    /// service's own, e.g. a command-line public client (repeat for each).
    #[arg(long = "api-client", value_name = "GUID")]
    api_clients: Vec<String>,
    /// A group the policy names by name: NAME=OBJECT-ID (repeat for each).
    #[arg(long = "group", value_name = "NAME=ID")]
    groups: Vec<String>,
    /// Serve the demo: an emulated tenant in this process (exosim), its users and a demo policy
    /// with two tasks. Needs a build with the `demo` feature.
    #[arg(long)]
    demo: bool,
}

/// What the demo (or the operator's flags) gives the service besides the policy.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// The Exchange session.
    pub runner: Arc<dyn warden_exchange::CmdletRunner>,
    /// Sign-in.
    pub auth: AuthSettings,
    /// The policy file.
    pub policy: PathBuf,
    /// Group names.
    pub group_names: HashMap<String, String>,
    /// A CA file the sign-in client must trust (the emulator's).
    pub ca_file: Option<PathBuf>,
    /// Extra fields for the ready file.
    pub ready: serde_json::Map<String, serde_json::Value>,
}

fn default_state_dir(env: &Environment) -> anyhow::Result<PathBuf> {
    env.get("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .map(|base| base.join("warden/serve"))
        .context("no state directory: pass --state-dir DIR (HOME is not set)")
}

/// Runs the subcommand.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let env = Environment::from_process();
    // A temporary state directory for the demo unless one is given.
    let demo_dir = (args.demo && args.state_dir.is_none())
        .then(tempfile::tempdir)
        .transpose()
        .context("creating a temporary directory for the demo")?;
    let state_dir = match (&args.state_dir, &demo_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_owned(),
        (None, None) => default_state_dir(&env)?,
    };
    create_private_dir(&state_dir)?;
    // The demo's emulator lives as long as the service.
    let (wiring, _demo) = if args.demo {
        demo_wiring(&state_dir).await?
    } else {
        (operator_wiring(&args, &env)?, None)
    };
    let policy = args.policy.clone().unwrap_or(wiring.policy.clone());
    // Checked (and its warnings printed) before anything starts.
    load_policy(&policy, false)?;
    let audit_path = args
        .audit
        .clone()
        .unwrap_or_else(|| state_dir.join("audit.jsonl"));
    let key_path = args
        .audit_key
        .clone()
        .unwrap_or_else(|| state_dir.join("audit.key"));
    let audit = Arc::new(AuditTrail::open(
        &audit_path,
        AuditKey::load_or_create(&key_path)?,
    )?);
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", state_dir.join("serve.db").display()));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let mut group_names = wiring.group_names.clone();
    for entry in &args.groups {
        let (name, id) = entry.split_once('=').with_context(|| {
            format!("--group {entry}: expected NAME=OBJECT-ID\n  fix: e.g. --group Helpdesk=00000000-0000-0000-0000-000000000001")
        })?;
        group_names.insert(id.trim().to_owned(), name.trim().to_owned());
    }
    let running = warden_serve::start(ServeConfig {
        bind: args.bind,
        tls,
        policy,
        database,
        audit,
        audit_key_path: key_path,
        auth: wiring.auth.clone(),
        workers: WorkerConfig {
            runner: wiring.runner.clone(),
            call_timeout: Duration::from_secs(args.call_timeout.max(1)),
            limits: Default::default(),
            workers: usize::from(args.workers),
            instance: args.instance.clone().unwrap_or_else(hostname),
            claims: ClaimTiming::new(
                Duration::from_secs(args.heartbeat_every),
                Duration::from_secs(args.claims_stale_after),
            )
            .context("--heartbeat-every and --claims-stale-after")?,
        },
        group_names,
        rate_limit: RequestLimits {
            address: RateLimit {
                burst: args.address_burst,
                per_second: address_rate(args.address_rate)?,
            },
            streams_per_person: args.streams_per_person,
            stream_lifetime: Duration::from_secs(args.stream_lifetime),
            trusted_proxies: args.trusted_proxies.clone(),
            ..RequestLimits::default()
        },
        body_limit: warden_serve::DEFAULT_BODY_LIMIT,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        expiry_every: Duration::from_secs(30),
        sign_in_ca: wiring.ca_file.clone(),
        server_key: load_or_create_server_key(&state_dir.join("serve.key"))?,
    })
    .await?;
    eprintln!("warden serve: listening on {}", running.url);
    if let Some(file) = &args.ready_file {
        let mut ready = wiring.ready.clone();
        ready.insert("url".into(), running.url.clone().into());
        write_ready(file, &serde_json::Value::Object(ready))?;
    }
    wait_for_stop().await;
    eprintln!(
        "warden serve: stopping (running tasks get {} s to finish)",
        args.shutdown_grace
    );
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The demo's wiring, and what must stay alive with it (the embedded emulator).
#[cfg(feature = "demo")]
async fn demo_wiring(
    state_dir: &Path,
) -> anyhow::Result<(Wiring, Option<Box<dyn std::any::Any + Send>>)> {
    let demo = super::demo::serve_demo(state_dir).await?;
    Ok((demo.wiring(), Some(Box::new(demo))))
}

#[cfg(not(feature = "demo"))]
async fn demo_wiring(_: &Path) -> anyhow::Result<(Wiring, Option<Box<dyn std::any::Any + Send>>)> {
    anyhow::bail!(super::demo_left_out("serve --demo"))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "warden".into())
}

/// The operator's wiring: the credential flags (as every command), the service app's flags.
fn operator_wiring(args: &ServeArgs, env: &Environment) -> anyhow::Result<Wiring> {
    let session = args.auth.resolve(env)?;
    let runner = session.exchange(env, args.auth.transport, None)?;
    let client_id = args.service_client_id.clone().context(
        "the service's own app registration is needed for sign-in\n  fix: pass --service-client-id GUID (or set WARDEN_SERVE_CLIENT_ID) and --service-secret-file FILE",
    )?;
    let secret = match (
        &args.service_secret_file,
        env.get("WARDEN_SERVE_CLIENT_SECRET"),
    ) {
        (Some(file), _) => std::fs::read_to_string(file)
            .with_context(|| {
                format!(
                    "{}: the service's client secret cannot be read",
                    file.display()
                )
            })?
            .trim()
            .to_owned(),
        (None, Some(secret)) => secret.to_owned(),
        (None, None) => anyhow::bail!(
            "the service app's client secret is needed for sign-in\n  fix: pass --service-secret-file FILE or set WARDEN_SERVE_CLIENT_SECRET"
        ),
    };
    let tenant_id = session
        .settings
        .tenant
        .as_ref()
        .map(|t| t.value.clone())
        .context("sign-in needs the tenant\n  fix: pass --tenant-id or set AZURE_TENANT_ID")?;
    let authority = url::Url::parse(&format!(
        "{}/{tenant_id}/v2.0",
        session.settings.authority_host.value.trim_end_matches('/')
    ))
    .context("the authority host is not a URL")?;
    Ok(Wiring {
        runner,
        auth: AuthSettings {
            authority,
            tenant_id,
            app_id_uri: args
                .app_id_uri
                .clone()
                .unwrap_or_else(|| format!("api://{client_id}")),
            client_id,
            client_secret: secret.into(),
            public_url: args.public_url.clone(),
            session_ttl: Duration::from_secs(8 * 3600),
            api_clients: args.api_clients.clone(),
        },
        policy: policy_path(args.policy.as_deref(), env)?,
        group_names: HashMap::new(),
        ca_file: session.settings.ca_file.clone(),
        ready: Default::default(),
    })
}

/// Writes the ready file atomically (a reader never sees half of it).
fn write_ready(file: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let temp = file.with_extension("tmp");
    std::fs::write(&temp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The service's own key (CSRF tokens, sealed sign-in cookies): 32 random bytes in a file only
/// its owner reads, made at the first start.
fn load_or_create_server_key(path: &Path) -> anyhow::Result<warden_serve::auth::ServerKey> {
    use warden_serve::auth::ServerKey;
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{}: the service key is not 32 bytes\n  fix: delete it (signed-in people sign in again) or restore it from a backup",
                    path.display()
                )
            })?;
            Ok(ServerKey::from_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ServerKey::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options
                .open(path)
                .with_context(|| format!("creating the service key {}", path.display()))?;
            std::io::Write::write_all(&mut file, key.expose_bytes())
                .with_context(|| format!("writing the service key {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!(
            "{}: the service key cannot be read: {e}\n  fix: check its permissions",
            path.display()
        )),
    }
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// `--address-rate`: a refill rate, positive and finite.
fn address_rate(rate: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "--address-rate {rate}: give requests per second as a positive number, e.g. 5 or 0.5"
    );
    Ok(rate)
}
