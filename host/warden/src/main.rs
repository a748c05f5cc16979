//! The `warden` command: parses arguments and hands each subcommand to its module. It holds
//! no logic of its own; the crates under `host/` do the work.

mod auth_args;
mod commands;
mod guest_args;
mod output;
mod replay;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// `warden --version`: the release and the git commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WARDEN_GIT_COMMIT"),
    ")"
);

/// exo-warden: run Exchange Online automation without handing it your app's credentials.
#[derive(Debug, Parser)]
#[command(name = "warden", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log verbosity on stderr: -v warden's own decisions and calls, -vv its trace, -vvv every
    /// library's too. Secrets are never logged at any level.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Acquire an app-only token and explain whether Exchange Online would accept it.
    Token(commands::token::TokenArgs),
    /// Check configuration, credential, authority, token and claims, each with the fix.
    Doctor(commands::doctor::DoctorArgs),
    /// Run one cmdlet as the operator (not through the guest broker) and print the results.
    Invoke(commands::invoke::InvokeArgs),
    /// Check a policy file, or explain whether a call would be allowed and by which rule.
    Policy(commands::policy::PolicyArgs),
    /// Verify an audit trail, or compute the keyed hash of a value to search it.
    Audit(commands::audit::AuditArgs),
    /// Run a plugin (a wasm32-wasip2 component) under the policy: `warden run P.wasm -- ARGS`.
    Run(commands::run::RunArgs),
    /// Run a Rhai script file under the policy: `warden script F.rhai -- ARGS`.
    Script(commands::script::ScriptArgs),
    /// Run a Rhai one-liner under the policy: `warden eval 'exo::invoke("Get-Mailbox")'`.
    Eval(commands::script::EvalArgs),
    /// An interactive Rhai shell under the operator's ad hoc grant (history, completion).
    Repl(commands::repl::ReplArgs),
    /// Inspect a plugin: identity, API version, declared needs, what a policy grants it.
    Plugin(commands::plugin::PluginArgs),
    /// Serve delegated tasks: an API and a web page with sign-in and approvals.
    Serve(Box<commands::serve::ServeArgs>),
    /// One plugin or script over many tenants: `warden fleet run P.wasm --tenants tag:eu`.
    Fleet(commands::fleet::FleetArgs),
    /// Take fleet jobs from a shared store: `warden worker --database postgres://…`.
    Worker(Box<commands::worker::WorkerArgs>),
    /// Run the demo against an emulated tenant inside this process (no network needed).
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo(commands::demo::DemoArgs),
    /// Print a shell completion script: `warden completions bash > ~/.local/share/bash-completion/completions/warden`.
    Completions(commands::completions::CompletionsArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // `--help` and `--version` succeed. A usage mistake exits 1 like any other error
            // rather than clap's 2, which `policy explain` (refused) and `audit verify`
            // (tampered) give a meaning of their own.
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose);
    let verbose = cli.verbose > 0;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Token(args) => commands::token::run(args).await,
            Command::Doctor(args) => commands::doctor::run(args).await,
            Command::Invoke(args) => commands::invoke::run(args).await,
            Command::Policy(args) => commands::policy::run(args).await,
            Command::Audit(args) => commands::audit::run(args).await,
            Command::Run(args) => commands::run::run(args, verbose).await,
            Command::Script(args) => commands::script::run_file(args, verbose).await,
            Command::Eval(args) => commands::script::run_inline(args, verbose).await,
            Command::Repl(args) => commands::repl::run(args, verbose).await,
            Command::Plugin(args) => commands::plugin::run(args).await,
            Command::Serve(args) => commands::serve::run(*args).await,
            Command::Fleet(args) => commands::fleet::run(args).await,
            Command::Worker(args) => commands::worker::run(*args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Completions(args) => commands::completions::run(args, Cli::command()),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            // Errors can quote a guest (a manifest line, a script's text): escaped, but the
            // `fix:` lines keep their line breaks.
            let message = format!("{error:#}");
            eprintln!("error: {}", output::escape(&message, output::Layout::Text));
            ExitCode::FAILURE
        }
    }
}

/// Warden's own crates (tracing targets are module paths) and the guest lines it relays.
const OWN_TARGETS: &[&str] = &[
    "warden",
    "warden_auth",
    "warden_exchange",
    "warden_psrp",
    "warden_policy",
    "warden_audit",
    "warden_broker",
    "warden_runtime",
    "exosim",
    "guest",
];

/// The log filter for `-v` count `verbose`: dependencies (HTTP, TLS, wasmtime, …) stay at
/// warnings until the highest level, so `-v` shows warden's own decisions and calls.
fn log_filter(verbose: u8) -> String {
    let own = match verbose {
        0 => return "warn".to_owned(),
        1 => "debug",
        2 => "trace",
        _ => return "trace".to_owned(),
    };
    let mut filter = "warn".to_owned();
    for target in OWN_TARGETS {
        filter.push_str(&format!(",{target}={own}"));
    }
    filter
}

fn init_logging(verbose: u8) {
    let default = log_filter(verbose);
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // No colours: the writer escapes every control character a logged guest text could carry,
    // and colour codes would be escaped with them.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| output::TerminalSafeStderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}
