//! `exosim`: run the emulator out of process.
//!
//! `exosim serve --bind 127.0.0.1:0 --ready-file F [--config tenants.toml] [--state-dir DIR]
//! [--token-lifetime SECS] [--refresh-in SECS] [--mailboxes N] [--seed S] [--state FILE]
//! [--throttle PER_SECOND[:BURST]] [--rps-max-shells N] [--onprem-basic USER:PASSWORD]
//! [--tenants N [--unconsented I,J] [--tenant-mailboxes M]] [--exchange-latency-ms MS]` starts
//! the server, writes one JSON object ([`exosim::ReadyInfo`]) to F atomically once it listens,
//! and runs until SIGINT or SIGTERM.
//! This file only parses arguments and wires the library; it refuses bad arguments and bad
//! configuration with a message and a non-zero exit, before binding anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use exosim::{Exosim, ExosimOptions, FleetConfig, OnPremBasic, TenantsConfig, Throttle};

#[derive(Parser, Debug)]
#[command(
    name = "exosim",
    version,
    about = "Loopback HTTPS emulator of Microsoft Entra ID and Exchange Online for tests and demos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Where to write the ready JSON once listening (atomically: temp file, then rename).
    #[arg(long)]
    ready_file: PathBuf,
    /// Tenants file (TOML, see tenants.example.toml); the demo tenant when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for ca.pem and certificate files; a fresh temporary directory, removed at
    /// exit, when absent.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3599, value_parser = clap::value_parser!(u64).range(1..))]
    token_lifetime: u64,
    /// Send `refresh_in` with tokens, in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    refresh_in: Option<u64>,
    /// Mailboxes to generate per tenant.
    #[arg(long, default_value_t = 25)]
    mailboxes: usize,
    /// Seed of the tenant generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// JSON state file: loaded at start if it exists, saved after each write and at exit.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Per-tenant InvokeCommand throttling: requests per second, and optionally the burst
    /// (default: one second's worth, at least 1), e.g. `5` or `0.5:3`.
    #[arg(long, value_parser = str::parse::<Throttle>)]
    throttle: Option<Throttle>,
    /// Remote PowerShell shells one app may hold open per tenant (Exchange Online allowed 3).
    #[arg(long, default_value_t = exosim::DEFAULT_MAX_SHELLS, value_parser = parse_max_shells)]
    rps_max_shells: usize,
    /// Accept plain Basic `USER:PASSWORD` on `/PowerShell` (on-premises style), acting as an
    /// Exchange Administrator of the first tenant. A test credential: it shows in `ps`.
    #[arg(long, value_parser = parse_onprem_basic)]
    onprem_basic: Option<OnPremBasic>,
    /// Redirect Remote PowerShell Creates on `/PowerShell-LiveID` (302 to `?PSVersion=…`), as
    /// the service did; a client must follow it.
    #[arg(long)]
    rps_redirect: bool,
    /// Generate N customer tenants after the configured ones (`tenant-001.onmicrosoft.com`…,
    /// ids `f1ee7000-0000-4000-8000-<index in hex>`), and register the multi-tenant app
    /// `warden-fleet` in the first tenant, consented in each generated one.
    #[arg(long, value_name = "N")]
    tenants: Option<usize>,
    /// Generated tenants (1-based, comma-separated) where `warden-fleet` is not consented: its
    /// token requests there get AADSTS700016.
    #[arg(
        long,
        value_name = "I,J,...",
        value_delimiter = ',',
        requires = "tenants"
    )]
    unconsented: Vec<usize>,
    /// Mailboxes per generated tenant.
    #[arg(long, default_value_t = 5, requires = "tenants")]
    tenant_mailboxes: usize,
    /// Milliseconds added before every Exchange answer (InvokeCommand, `Get-EXO*` entity reads,
    /// Remote PowerShell Commands); the control endpoint can override it, also per tenant, and
    /// a clear there brings it back.
    #[arg(long, value_name = "MS")]
    exchange_latency_ms: Option<u64>,
}

fn parse_max_shells(text: &str) -> std::result::Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a positive number of shells"))
}

fn parse_onprem_basic(text: &str) -> std::result::Result<OnPremBasic, String> {
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(OnPremBasic {
            user: user.to_owned(),
            password: password.to_owned(),
        }),
        _ => Err("expected USER:PASSWORD, both non-empty".to_owned()),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXOSIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut tenants = match &args.config {
        Some(path) => TenantsConfig::from_toml_file(path)?,
        None => TenantsConfig::demo(),
    };
    if let Some(count) = args.tenants {
        tenants.add_fleet(&FleetConfig {
            tenants: count,
            unconsented: args.unconsented.clone(),
            mailboxes: args.tenant_mailboxes,
        })?;
    }
    match args.ready_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            bail!(
                "the ready file's directory {} does not exist",
                dir.display()
            )
        }
        _ => {}
    }
    // Kept alive until the end of `serve`, then removed.
    let (state_dir, _temp) = match args.state_dir {
        Some(dir) => (dir, None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("exosim-")
                .tempdir()
                .context("cannot create a temporary state directory")?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    let options = ExosimOptions {
        bind: args.bind,
        state_dir,
        tenants,
        token_lifetime: Duration::from_secs(args.token_lifetime),
        refresh_in: args.refresh_in.map(Duration::from_secs),
        mailboxes: args.mailboxes,
        seed: args.seed,
        state_file: args.state,
        throttle: args.throttle,
        exchange_latency: Duration::from_millis(args.exchange_latency_ms.unwrap_or(0)),
        rps_max_shells: args.rps_max_shells,
        onprem_basic: args.onprem_basic,
        rps_redirect: args.rps_redirect,
        exchange_region: exosim::ExchangeRegion::Direct,
    };
    let exosim = Exosim::start(options).await?;
    exosim.ready_info().write_to(&args.ready_file)?;
    tracing::info!(ready_file = %args.ready_file.display(), "ready");

    wait_for_signal().await?;
    tracing::info!("shutting down");
    exosim.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
