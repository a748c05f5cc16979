//! `warden run`: runs a plugin (a WebAssembly component) under the policy. The plugin reaches
//! Exchange only through the broker; its output goes to stdout, its log lines and progress to
//! stderr, and every decision and call to the audit trail.

use crate::guest_args::{GuestArgs, cache_dir, cache_key_path, runtime_error};
use crate::output::RunDisplay;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_runtime::{PluginHost, RunRequest, RuntimeLimits};

/// Arguments of `warden run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 completed, 1 the plugin failed or warden could not run it, \
3 refused by the policy, 4 stopped at a limit (CPU, memory, wall clock, output)."
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
        interrupt: Default::default(),
    };
    let result = host.run_checked(&plugin, &context.broker, request).await;
    args.guest.finish(result, &context, &display)
}
