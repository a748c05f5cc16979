//! `warden plugin inspect`: what a plugin is (name, sha256, WIT version, imports, what it
//! declares it needs) and, given a policy, what that policy would grant it — without compiling
//! or running any of its code.

use crate::guest_args::{load_policy, policy_path};
use crate::output::{Format, Layout, escape, escape_cut, json_text};
use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_auth::config::Environment;
use warden_policy::{AllowedCmdlet, Principal};
use warden_runtime::PluginHost;

/// Longest manifest text (version, description) shown by `inspect`.
const MAX_MANIFEST_TEXT: usize = 300;

/// Arguments of `warden plugin`.
#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Show a plugin's identity and needs, and what a policy grants it.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The plugin (.wasm component).
    plugin: PathBuf,
    /// A policy to evaluate it against [default: $WARDEN_POLICY, else
    /// ~/.config/warden/policy.toml if present].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Runs the subcommand.
pub async fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    let PluginCommand::Inspect(args) = args.command;
    let bytes = std::fs::read(&args.plugin).map_err(|e| {
        anyhow::anyhow!(
            "{}: the plugin cannot be read: {e}\n  fix: check the path and its permissions",
            escape(&args.plugin.display().to_string(), Layout::Line)
        )
    })?;
    let info = PluginHost::inspect(&args.plugin.display().to_string(), &bytes)
        .map_err(crate::guest_args::runtime_error)?;
    let declaration = info.declaration();
    let env = Environment::from_process();
    let policy = match policy_path(args.policy.as_deref(), &env) {
        Ok(path) => Some(load_policy(&path, false)?),
        Err(_) if args.policy.is_none() => None,
        Err(e) => return Err(e),
    };
    let principal = Principal::Plugin {
        name: info.name.clone(),
        sha256: info.sha256.clone(),
    };
    let granted = policy
        .as_ref()
        .map(|p| p.grant_for(&principal, declaration.as_ref()));
    let snippet = format!(
        "[[grant]]\nid = \"{name}\"\nplugin = \"{name}\"\nsha256 = \"{sha}\"\nroles = [ ]   # the roles it needs",
        name = info.name,
        sha = info.sha256
    );

    match args.output {
        Format::Json => {
            let policy_view = match &granted {
                None => json!(null),
                Some(Ok(grant)) => json!({
                    "granted": true,
                    "grant": grant.id(),
                    "budgets": grant.budgets(),
                    "cmdlets": grant.allowed_cmdlets(),
                }),
                Some(Err(denial)) => json!({
                    "granted": false,
                    "rule": denial.rule,
                    "reason": denial.reason,
                }),
            };
            println!(
                "{}",
                json_text(&json!({ "plugin": info, "policy": policy_view }), true)?
            );
        }
        Format::Text => {
            // warden's own findings first, one per line; every name is escaped, though the
            // manifest name and declared names were validated when the plugin was read.
            let show = |text: &str| escape(text, Layout::Line).into_owned();
            println!("plugin       {}", show(&info.name));
            println!("sha256       {}", info.sha256);
            println!("size         {} bytes", info.size_bytes);
            println!(
                "API          {}",
                show(
                    info.wit_package
                        .as_deref()
                        .unwrap_or("(imports no warden interface)")
                )
            );
            println!("imports      {}", show(&info.imports.join(", ")));
            println!("exports      {}", show(&info.exports.join(", ")));
            match &info.declared {
                Some(declared) => {
                    println!("declares");
                    for (cmdlet, parameters) in declared {
                        println!("  {} {}", show(cmdlet), show(&parameters.join(", ")));
                    }
                }
                None => println!("declares     nothing (it would get its whole grant)"),
            }
            // Free text from the manifest is the plugin's own claim: shown apart, marked, on
            // one escaped line each and cut, so it cannot pose as any line above.
            if info.version.is_some() || info.description.is_some() {
                println!("from its manifest (the plugin's own words, escaped):");
                for (label, text) in [
                    ("version", &info.version),
                    ("description", &info.description),
                ] {
                    if let Some(text) = text {
                        println!("  {label:<12} | {}", escape_cut(text, MAX_MANIFEST_TEXT).0);
                    }
                }
            }
            match &granted {
                None => {
                    println!("\nNo policy given. To grant it, add to a policy:\n{snippet}");
                }
                Some(Ok(grant)) => {
                    println!("\ngranted by   grant {}", show(grant.id()));
                    println!("{}", cmdlets_table(&grant.allowed_cmdlets()));
                }
                Some(Err(denial)) => {
                    println!(
                        "\nrefused      {}: {}",
                        show(&denial.rule),
                        show(&denial.reason)
                    );
                    println!("To grant it, add to the policy:\n{snippet}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmdlets_table(cmdlets: &[AllowedCmdlet]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(140)
        .set_header(["cmdlet", "parameters", "write", "rule", "output"]);
    for c in cmdlets {
        table.add_row(vec![
            c.cmdlet.clone(),
            c.parameters.join(", "),
            if c.write { "yes" } else { "no" }.to_owned(),
            c.rule.clone(),
            c.output
                .as_ref()
                .map(|o| o.join(", "))
                .unwrap_or_else(|| "all".to_owned()),
        ]);
    }
    table
}
