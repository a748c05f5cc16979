//! `warden plugin`: inspect a plugin, make and use signing keys, scaffold a new plugin, embed a
//! manifest into a component built by another language's toolchain.

mod inspect;
mod sign;

use clap::{Args, Subcommand};
use std::process::ExitCode;

/// Arguments of `warden plugin`.
#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Show a plugin's identity, needs and signature, and what a policy grants it.
    Inspect(inspect::InspectArgs),
    /// Make an Ed25519 key pair for signing plugins (secret key file 0600, public key file).
    Keygen(sign::KeygenArgs),
    /// Sign a plugin (embedded in the component, or --detached beside it as FILE.sig).
    Sign(sign::SignArgs),
    /// Check a plugin's signature against a public key or a policy's trusted keys.
    Verify(sign::VerifyArgs),
    /// Scaffold a new plugin from a template (rust, python or js).
    New(super::plugin_new::NewArgs),
    /// Write a manifest (JSON) into a built component (Python, JavaScript guests).
    EmbedManifest(super::plugin_manifest::EmbedManifestArgs),
}

/// Runs the subcommand.
pub async fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::Inspect(args) => inspect::run(args).await,
        PluginCommand::Keygen(args) => sign::keygen(args),
        PluginCommand::Sign(args) => sign::sign(args),
        PluginCommand::Verify(args) => sign::verify(args),
        PluginCommand::New(args) => super::plugin_new::run(args),
        PluginCommand::EmbedManifest(args) => super::plugin_manifest::run(args),
    }
}
