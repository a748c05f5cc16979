//! `warden plugin embed-manifest P.wasm --manifest M.json`: writes a plugin manifest into a
//! built component's `warden:manifest` custom section, for toolchains that cannot emit custom
//! sections themselves (componentize-py, componentize-js). The Rust SDK's `manifest!` macro
//! embeds the same section at compile time.
//!
//! What it refuses: a manifest that is not JSON of the documented shape (unknown keys too: a
//! misspelt `cmdlet` would silently declare nothing), a component that already carries a
//! manifest, and a result the host itself would not load — the embedded component is read
//! back with the host's own `PluginHost::inspect`, so the rules are the host's, not a copy.

use crate::output::{Layout, escape};
use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warden_runtime::PluginHost;
use warden_runtime::component::MANIFEST_SECTION;

/// Arguments of `warden plugin embed-manifest`.
#[derive(Debug, Args)]
#[command(after_long_help = MANIFEST_HELP)]
pub struct EmbedManifestArgs {
    /// The built component (.wasm), rewritten in place unless --output is given.
    plugin: PathBuf,
    /// The manifest, as JSON (format below).
    #[arg(long, value_name = "M.json")]
    manifest: PathBuf,
    /// Write the component with its manifest here instead of over PLUGIN.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

const MANIFEST_HELP: &str = "\
The manifest (JSON; every key but `name` optional, no other key allowed):

  {
    \"name\": \"mailbox-report-py\",
    \"version\": \"0.1.0\",
    \"description\": \"Lists mailboxes with their size\",
    \"cmdlets\": {\"Get-Mailbox\": [\"ResultSize\"], \"Get-MailboxStatistics\": [\"Identity\"]},
    \"reads\": {\"Get-Mailbox\": [\"DisplayName\", \"PrimarySmtpAddress\"]}
  }

name         what grants call the plugin: 1 to 64 ASCII letters, digits, `-`, `_` or `.`
version      compared with a grant's `min_version`
cmdlets      each cmdlet the plugin calls and the parameter names it passes; a run gets only
             what this declares and the policy grants (no `cmdlets`: the whole grant)
reads        result properties the plugin reads, per cmdlet (`warden plugin inspect` flags
             those the grant's output shaping removes)

It is stored as TOML in the component's `warden:manifest` section, as the Rust SDK's
`manifest!` writes it; `warden plugin inspect` shows what was embedded. Embed after the last
step that rewrites the component, and pin (or sign) the result: the sha256 changes.";

/// The manifest as JSON gives it; serialized as the TOML the host reads.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmdlets: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    reads: BTreeMap<String, Vec<String>>,
}

fn shown(path: &Path) -> String {
    escape(&path.display().to_string(), Layout::Line).into_owned()
}

/// Runs the subcommand.
pub fn run(args: EmbedManifestArgs) -> anyhow::Result<ExitCode> {
    let EmbedManifestArgs {
        plugin,
        manifest,
        output,
    } = args;
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{}: the manifest cannot be read\n  fix: check the path and its permissions",
            shown(&manifest)
        )
    })?;
    let parsed: Manifest = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid manifest: {e}\n  fix: see `warden plugin embed-manifest --help` for its format",
            shown(&manifest)
        )
    })?;
    let toml = toml::to_string(&parsed).context("the manifest does not serialize as TOML")?;

    let mut bytes = std::fs::read(&plugin).with_context(|| {
        format!(
            "{}: the plugin cannot be read\n  fix: check the path and its permissions",
            shown(&plugin)
        )
    })?;
    let what = plugin.display().to_string();
    // Read first, so a component the host would refuse anyway is blamed on itself, not on the
    // manifest; one already carrying a manifest is refused after embedding (two sections).
    PluginHost::inspect(&what, &bytes).map_err(crate::guest_args::runtime_error)?;
    let section = wasm_encoder::CustomSection {
        name: MANIFEST_SECTION.into(),
        data: toml.as_bytes().into(),
    };
    // A custom section may follow the component's last section; the host finds it at any depth.
    bytes.push(wasm_encoder::ComponentSectionId::CoreCustom.into());
    wasm_encoder::Encode::encode(&section, &mut bytes);
    // The host's own reader is the judge of what it will load.
    let after = PluginHost::inspect(&what, &bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}\n  (the manifest came from {})",
            crate::guest_args::runtime_error(e),
            shown(&manifest)
        )
    })?;

    // The built component's permissions, not the temporary file's 0600.
    let permissions = std::fs::metadata(&plugin)
        .map(|m| m.permissions())
        .with_context(|| format!("{}: cannot read its permissions", shown(&plugin)))?;
    let target = output.unwrap_or(plugin);
    write_replacing(&target, &bytes, permissions)?;
    println!(
        "{}: manifest of {} embedded; sha256 {}",
        shown(&target),
        escape(&after.name, Layout::Line),
        after.sha256
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `path` through a temporary file beside it, so a failure never leaves half a
/// component.
fn write_replacing(
    path: &Path,
    bytes: &[u8],
    permissions: std::fs::Permissions,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{}: cannot write it: {e}\n  fix: check the directory and its permissions",
            shown(path)
        )
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(&e))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| fail(&e))?;
    file.as_file()
        .set_permissions(permissions)
        .map_err(|e| fail(&e))?;
    file.persist(path).map_err(|e| fail(&e.error))?;
    Ok(())
}
