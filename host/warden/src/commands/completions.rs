//! `warden completions SHELL`: prints the completion script clap_complete generates from the
//! same command definition the parser uses, so completions cannot drift from the flags.

use clap::Args;
use clap_complete::Shell;
use std::process::ExitCode;

/// Arguments of `warden completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for (bash, zsh, fish, powershell, elvish).
    shell: Shell,
}

/// Writes the script for `args.shell` to stdout.
pub fn run(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let name = command.get_name().to_owned();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
