//! `warden run`: runs a plugin (a WebAssembly component) under the policy. The plugin reaches
//! Exchange only through the broker; its output goes to stdout, its log lines and progress to
//! stderr, and every decision and call to the audit trail.

use crate::guest_args::{GuestArgs, cache_dir, cache_key_path, runtime_error};
use crate::output::RunDisplay;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_runtime::{Interrupt, PluginHost, RunReport, RunRequest, RuntimeError, RuntimeLimits};

/// Arguments of `warden run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 completed, 1 the plugin failed (its error, a panic or a trap), \
a replayed call was not recorded, or warden could not run it, 3 refused by the policy, 4 stopped \
at a limit (CPU, memory, wall clock, output)."
)]
pub struct RunArgs {
    /// The plugin: a component built for wasm32-wasip2.
    plugin: PathBuf,
    #[command(flatten)]
    guest: GuestArgs,
    /// Directory of compiled plugins [default: $WARDEN_CACHE_DIR, else ~/.cache/warden/components].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The key that binds each cached file to its plugin, created 0600 on first use
    /// [default: $WARDEN_CACHE_KEY, else cache.key beside the audit key].
    #[arg(long, value_name = "FILE")]
    cache_key: Option<PathBuf>,
    /// Compile the plugin in memory and cache nothing.
    #[arg(long)]
    no_cache: bool,
    /// Arguments for the plugin (its `run(args)`), after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Runs the subcommand.
pub async fn run(args: RunArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    // The plugin is checked (a component, our WIT version, only imports we provide) before
    // the policy, the audit trail or a credential is touched; it is compiled (or taken from
    // the cache) only once the broker has found a grant for it, so a plugin the policy
    // refuses is never compiled or cached.
    args.guest.preload_system_roots();
    let plugin = PluginHost::check(&args.plugin).map_err(runtime_error)?;
    let context = args.guest.broker().await?;
    let host = PluginHost::builder(RuntimeLimits::default())
        .cache_dir(cache_dir(args.cache_dir.as_deref(), args.no_cache))
        .cache_key(Some(cache_key_path(args.cache_key.as_deref(), &context)))
        .build()
        .map_err(runtime_error)?;
    let display = RunDisplay::new(args.guest.quiet, verbose);
    let request = RunRequest {
        args: args.args.clone(),
        observer: display.clone(),
        interrupt: Interrupt::new(),
        delegation: None,
    };
    let ctrl_c = interrupt_on_ctrl_c(&request.interrupt, context.audit.clone()).await;
    let result = host.run_checked(&plugin, &context.broker, request).await;
    ctrl_c.abort();
    let unclosed = trail_unclosed(&result);
    let code = args.guest.finish(result, &context, &display)?;
    Ok(unclosed.unwrap_or(code))
}

/// A Ctrl-C listener, already listening when this returns: tokio's `ctrl_c` subscribes on its
/// first poll, so a listener first polled after the guest started could miss a Ctrl-C (and
/// before any listener exists, SIGINT ends the process unrecorded).
pub(crate) enum CtrlC {
    /// Listening; the future completes at the next Ctrl-C.
    Listening(std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>),
    /// Ctrl-C came while the listener was being set up.
    Pressed,
    /// No signal handling on this platform.
    Unavailable,
}

pub(crate) async fn listen_for_ctrl_c() -> CtrlC {
    let mut listener: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
        Box::pin(tokio::signal::ctrl_c());
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(listener.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Pending => CtrlC::Listening(listener),
        std::task::Poll::Ready(Ok(())) => CtrlC::Pressed,
        std::task::Poll::Ready(Err(_)) => CtrlC::Unavailable,
    }
}

/// Ctrl-C interrupts the run, which then ends (a write in flight settles first) and gets its
/// closing audit line; a second Ctrl-C writes the trail's queued lines (refusals, calls'
/// closing lines) and quits. Await it before the run starts; abort the task when the run is
/// over.
pub(crate) async fn interrupt_on_ctrl_c(
    interrupt: &Interrupt,
    audit: std::sync::Arc<warden_audit::AuditTrail>,
) -> tokio::task::JoinHandle<()> {
    let interrupt = interrupt.clone();
    let first = listen_for_ctrl_c().await;
    tokio::spawn(async move {
        let pressed = match first {
            CtrlC::Listening(listener) => listener.await.is_ok(),
            CtrlC::Pressed => true,
            CtrlC::Unavailable => false,
        };
        if pressed {
            eprintln!("interrupted: ending the run (Ctrl-C again quits without recording its end)");
            interrupt.interrupt();
            if tokio::signal::ctrl_c().await.is_ok() {
                // `exit` runs no destructor: without this, lines still queued are lost.
                if let Err(error) = audit.flush() {
                    eprintln!("error: {error}");
                }
                std::process::exit(130);
            }
        }
    })
}

/// A run whose closing audit line could not be written fails the command, whatever the guest
/// did: the trail does not say how the run ended. `Some` is the exit status (after the
/// message).
pub(crate) fn trail_unclosed(result: &Result<RunReport, RuntimeError>) -> Option<ExitCode> {
    match result {
        Ok(report) if !report.trail_closed => {
            eprintln!(
                "error: the end of run {} could not be written to the audit trail; the trail does \
                 not say how it ended (see the log above, and check the trail's disk and permissions)",
                report.run_id
            );
            Some(ExitCode::from(crate::guest_args::EXIT_FAILED))
        }
        _ => None,
    }
}
