//! `warden policy init P.wasm|S.rhai [--into policy.toml]`: drafts the least-privilege roles
//! and grant a guest needs — from a plugin's manifest, or from a script's calls read
//! statically — for the operator to review. Into an existing policy it only adds: role names
//! already taken get a suffix, and a guest the policy already grants is refused (re-pin it
//! with `warden policy pin`). The result must load as a policy before anything is written.

use super::draft::{Needs, PinRecord, add_grant, policy_name};
use super::{read_guest, shown, write_policy};
use anyhow::bail;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use toml_edit::DocumentMut;
use warden_policy::Policy;

/// Arguments of `warden policy init`.
#[derive(Debug, Args)]
pub(super) struct InitArgs {
    /// The plugin (.wasm component) or script (.rhai) to grant.
    guest: PathBuf,
    /// Add the draft to this policy file (created when missing) instead of printing it.
    #[arg(long, value_name = "POLICY")]
    into: Option<PathBuf>,
}

pub(super) fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let guest = read_guest(&args.guest)?;
    let (mut doc, origin) = match &args.into {
        Some(path) if path.exists() => {
            // Only a valid policy is extended: the draft must not hide an earlier mistake.
            Policy::load(path).map_err(crate::guest_args::policy_error)?;
            let text = std::fs::read_to_string(path)?;
            (text.parse::<DocumentMut>()?, path.clone())
        }
        Some(path) => (DocumentMut::new(), path.clone()),
        None => (DocumentMut::new(), PathBuf::from("policy.toml")),
    };
    if let Some(id) = super::granting(&doc, &guest, &origin) {
        bail!(
            "{}: grant {} already names {}\n  fix: `warden policy pin {} {}` updates its \
             sha256 (and grants what its manifest added)",
            shown(&origin.display().to_string()),
            shown(&id),
            shown(&guest.label()),
            shown(&origin.display().to_string()),
            shown(&args.guest.display().to_string())
        );
    }
    let (needs, record, about, principal) = match &guest {
        super::Guest::Plugin(info) => {
            if info.declared.is_none() {
                bail!(
                    "{}: plugin {} declares nothing, so there is nothing to draft a \
                     least-privilege grant from\n  fix: declare the cmdlets and parameters it \
                     calls with warden_sdk::manifest! and rebuild",
                    shown(&args.guest.display().to_string()),
                    shown(&info.name)
                );
            }
            // Policy names only: the guest is named verbatim by its escaped `plugin` value.
            let about = format!(
                "plugin {}{} (from its manifest)",
                policy_name(&info.name),
                info.version
                    .as_deref()
                    .map(|v| format!(" {}", names_only(v)))
                    .unwrap_or_default()
            );
            let record = PinRecord {
                cmdlets: info.declared.clone().unwrap_or_default(),
                reads: info.reads.clone(),
                roles: Vec::new(),
                plugin: Some(info.name.clone()),
            };
            (
                Needs::of_plugin(info),
                record,
                about,
                vec![
                    ("plugin", info.name.clone()),
                    ("sha256", info.sha256.clone()),
                ],
            )
        }
        super::Guest::Script {
            path,
            source,
            sha256,
        } => {
            let needs = super::script_calls::read(&path.display().to_string(), source)?;
            let relative = relative_to(path, &origin);
            (
                needs,
                PinRecord::default(),
                format!(
                    "script {} (from its calls, read statically)",
                    policy_name(&guest.name())
                ),
                vec![
                    ("script", relative.display().to_string()),
                    ("sha256", sha256.clone()),
                ],
            )
        }
    };
    if needs.cmdlets.is_empty() {
        bail!(
            "{}: it calls no cmdlet that can be read, so there is nothing to grant\n  fix: grant \
             it by hand (policy.example.toml shows the format)",
            shown(&args.guest.display().to_string())
        );
    }
    let base = policy_name(&guest.name());
    let principal: Vec<(&str, &str)> = principal.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (id, roles) = add_grant(&mut doc, &base, &principal, &needs, record, &about)?;
    let text = doc.to_string();
    // The draft must pass `warden policy check` before the operator sees it.
    let policy = Policy::parse(&text, &origin).map_err(|e| {
        anyhow::anyhow!(
            "the drafted policy does not load ({e}); nothing was written\n  fix: grant it by \
             hand (this is a warden bug: please report it)"
        )
    })?;
    for note in &needs.unreadable {
        eprintln!("warning: {}", shown(note));
    }
    for warning in super::lint(&policy) {
        eprintln!("warning: {}", shown(&warning));
    }
    match &args.into {
        Some(path) => {
            write_policy(path, &text)?;
            eprintln!(
                "{}: added grant {} with role(s) {}; review it before use: warden policy check {}",
                shown(&path.display().to_string()),
                shown(&id),
                shown(&roles.join(", ")),
                shown(&path.display().to_string())
            );
        }
        // The draft quotes literals from a script a stranger may have written: on a terminal
        // they are shown escaped (a file or pipe gets the TOML as it is, escaped by TOML).
        None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            print!(
                "{}",
                crate::output::escape(&text, crate::output::Layout::Text)
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The manifest's version, reduced to what a comment may hold.
fn names_only(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        .take(32)
        .collect()
}

/// `script` as the policy at `policy` names it: relative to the policy's directory when it
/// lies under it, else absolute.
fn relative_to(script: &Path, policy: &Path) -> PathBuf {
    let dir = policy
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (script.canonicalize(), dir.canonicalize()) {
        (Ok(s), Ok(d)) => s.strip_prefix(&d).map(Path::to_owned).unwrap_or(s),
        _ => script.to_owned(),
    }
}
