//! `warden plugin inspect`: what a plugin is (name, sha256, WIT version, imports, what it
//! declares it needs, who signed it) and, given a policy, what that policy would grant it —
//! without compiling or running any of its code.

use crate::guest_args::{load_policy, policy_path};
use crate::output::{Format, Layout, escape, escape_cut, json_text};
use clap::Args;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_auth::config::Environment;
use warden_policy::{AllowedCmdlet, Principal};
use warden_runtime::PluginHost;

/// Longest manifest text (version, description) shown by `inspect`.
const MAX_MANIFEST_TEXT: usize = 300;

/// Arguments of `warden plugin inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
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

/// Runs `warden plugin inspect`.
pub async fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.plugin).map_err(|e| {
        anyhow::anyhow!(
            "{}: the plugin cannot be read: {e}\n  fix: check the path and its permissions",
            escape(&args.plugin.display().to_string(), Layout::Line)
        )
    })?;
    let info = PluginHost::inspect(&args.plugin.display().to_string(), &bytes)
        .map_err(crate::guest_args::runtime_error)?;
    let detached = super::sign::read_detached(&args.plugin)?;
    let declaration = info.declaration();
    let env = Environment::from_process();
    let policy = match policy_path(args.policy.as_deref(), &env) {
        Ok(path) => Some(load_policy(&path, false)?),
        Err(_) if args.policy.is_none() => None,
        Err(e) => return Err(e),
    };
    // Checked as a run checks it: against the policy's trusted keys.
    let principal = match &policy {
        Some(policy) => {
            warden_runtime::plugin_principal(&info, &bytes, detached.as_deref(), policy)
        }
        None => Principal::plugin(info.name.clone(), &bytes),
    };
    let signature =
        super::sign::SignatureView::of(&bytes, detached.as_deref(), policy.as_ref(), &principal);
    let granted = policy
        .as_ref()
        .map(|p| p.grant_for_any_tenant(&principal, declaration.as_ref()));
    let rows = match &granted {
        Some(granted) => declared_rows(&info, granted),
        None => Vec::new(),
    };
    let file = escape(&args.plugin.display().to_string(), Layout::Line).into_owned();
    let policy_file = policy_path(args.policy.as_deref(), &env)
        .map(|p| escape(&p.display().to_string(), Layout::Line).into_owned())
        .unwrap_or_else(|_| "POLICY".to_owned());
    // The advice is a command that does the whole fix: a grant drafted from the manifest, or
    // the existing grant re-pinned (adding a second grant for the same plugin is an error).
    let advice = match &granted {
        None => format!(
            "To grant it, draft a grant for review: warden policy init {file} --into POLICY"
        ),
        Some(Ok(_)) => String::new(),
        // A signature refusal is not fixed by re-pinning: the signature or the trust is.
        Some(Err(denial)) if denial.rule.ends_with("/signed_by") => format!(
            "If this build is the publisher's: have it signed again with a key its [trust.*] \
             entry lists (warden plugin sign), or add the signing key to that entry (or take it \
             off `revoked` if it was revoked by mistake); then check: warden plugin verify {file} --policy {policy_file}"
        ),
        Some(Err(denial)) if denial.rule.starts_with("grant:") => {
            format!("If the change is intended, re-pin it: warden policy pin {policy_file} {file}")
        }
        Some(Err(_)) => format!(
            "To grant it, draft a grant for review: warden policy init {file} --into {policy_file}"
        ),
    };

    match args.output {
        Format::Json => {
            let policy_view = match &granted {
                None => json!(null),
                Some(Ok(grant)) => json!({
                    "granted": true,
                    "grant": grant.id(),
                    "budgets": grant.budgets(),
                    "cmdlets": grant.allowed_cmdlets(),
                    "declared": rows,
                }),
                Some(Err(denial)) => json!({
                    "granted": false,
                    "rule": denial.rule,
                    "reason": denial.reason,
                    "advice": advice,
                    "declared": rows,
                }),
            };
            println!(
                "{}",
                json_text(
                    &json!({ "plugin": info, "signature": signature, "policy": policy_view }),
                    true
                )?
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
                    for (cmdlet, properties) in &info.reads {
                        println!("  {} reads {}", show(cmdlet), show(&properties.join(", ")));
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
            signature.print();
            match &granted {
                None => {
                    println!("\nNo policy given. {advice}");
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
                    println!("{advice}");
                }
            }
            if !rows.is_empty() {
                println!("\nwhat it declares, against this policy:");
                println!("{}", declared_table(&rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One thing a plugin declares (a cmdlet, a parameter of one, or a property it reads), and
/// whether the policy gives it.
#[derive(Debug, serde::Serialize)]
struct DeclaredRow {
    cmdlet: String,
    /// `cmdlet`, `parameter` or `reads`.
    kind: &'static str,
    /// The parameter or property (empty for a cmdlet row).
    name: String,
    /// Granted (a property: left in by output shaping).
    granted: bool,
    /// The rule that grants it, or why not.
    why: String,
}

/// Every declared cmdlet, parameter and read property, granted or not, and why not. The table
/// and the JSON are both printed from these rows.
fn declared_rows(
    info: &warden_runtime::PluginInfo,
    granted: &Result<warden_policy::Grant, warden_policy::Denial>,
) -> Vec<DeclaredRow> {
    let mut rows = Vec::new();
    let same = warden_policy::names::same;
    for (cmdlet, parameters) in info.declared.iter().flatten() {
        let row = |kind, name: &str, granted, why: String| DeclaredRow {
            cmdlet: cmdlet.clone(),
            kind,
            name: name.to_owned(),
            granted,
            why,
        };
        let grant = match granted {
            Ok(grant) => grant,
            Err(denial) => {
                let why = format!("the policy gives the plugin nothing ({})", denial.rule);
                rows.push(row("cmdlet", "", false, why.clone()));
                for p in parameters {
                    rows.push(row("parameter", p, false, why.clone()));
                }
                continue;
            }
        };
        let entries: Vec<AllowedCmdlet> = grant
            .allowed_cmdlets()
            .into_iter()
            .filter(|a| same(&a.cmdlet, cmdlet))
            .collect();
        if entries.is_empty() {
            // The policy's own reason, so this list and a run's refusal say the same thing.
            let why = grant.check(cmdlet, "{}").reason;
            rows.push(row("cmdlet", "", false, why));
            for p in parameters {
                rows.push(row(
                    "parameter",
                    p,
                    false,
                    format!("{cmdlet} is not granted"),
                ));
            }
            continue;
        }
        let rules: Vec<&str> = entries.iter().map(|e| e.rule.as_str()).collect();
        rows.push(row("cmdlet", "", true, format!("by {}", rules.join(", "))));
        for p in parameters {
            let by: Vec<&str> = entries
                .iter()
                .filter(|e| e.parameters.iter().any(|q| same(q, p)))
                .map(|e| e.rule.as_str())
                .collect();
            rows.push(if by.is_empty() {
                let listed: Vec<&str> = entries
                    .iter()
                    .flat_map(|e| e.parameters.iter().map(String::as_str))
                    .collect();
                row(
                    "parameter",
                    p,
                    false,
                    format!(
                        "no role entry for {cmdlet} lists it ({} list {}){}",
                        rules.join(", "),
                        if listed.is_empty() {
                            "none".to_owned()
                        } else {
                            listed.join(", ")
                        },
                        warden_policy::known::parameter_hint(p, listed.iter().copied())
                    ),
                )
            } else {
                row("parameter", p, true, format!("by {}", by.join(", ")))
            });
        }
        let shaping: Vec<&Vec<String>> = entries.iter().filter_map(|e| e.output.as_ref()).collect();
        let reads = info
            .reads
            .iter()
            .find(|(c, _)| same(c, cmdlet))
            .map(|(_, r)| r.as_slice())
            .unwrap_or_default();
        for property in reads {
            let removed_by = shaping
                .iter()
                .find(|list| !list.iter().any(|q| q.eq_ignore_ascii_case(property)));
            rows.push(match removed_by {
                None => row(
                    "reads",
                    property,
                    true,
                    "left in by output shaping".to_owned(),
                ),
                Some(list) => row(
                    "reads",
                    property,
                    false,
                    format!(
                        "removed by output shaping: the grant's output for {cmdlet} is [{}]",
                        list.join(", ")
                    ),
                ),
            });
        }
    }
    rows
}

fn declared_table(rows: &[DeclaredRow]) -> Table {
    let show = |text: &str| escape(text, Layout::Line).into_owned();
    let mut table = Table::new();
    // Not wrapped: one row per line, so the table reads (and parses) like the JSON.
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["cmdlet", "kind", "name", "granted", "why"]);
    for r in rows {
        table.add_row(vec![
            show(&r.cmdlet),
            r.kind.to_owned(),
            show(&r.name),
            if r.granted { "yes" } else { "no" }.to_owned(),
            show(&r.why),
        ]);
    }
    table
}

fn cmdlets_table(cmdlets: &[AllowedCmdlet]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(140)
        .set_header([
            "cmdlet",
            "parameters",
            "write",
            "endpoint",
            "rule",
            "output",
        ]);
    for c in cmdlets {
        table.add_row(vec![
            c.cmdlet.clone(),
            c.parameters.join(", "),
            if c.write { "yes" } else { "no" }.to_owned(),
            c.endpoint.to_string(),
            c.rule.clone(),
            c.output
                .as_ref()
                .map(|o| o.join(", "))
                .unwrap_or_else(|| "all".to_owned()),
        ]);
    }
    table
}
