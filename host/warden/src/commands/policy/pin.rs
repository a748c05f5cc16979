//! `warden policy pin POLICY P.wasm|S.rhai`: re-pins the guest's existing grant to its current
//! sha256 and says what changed in the plugin's manifest since the last pin. What the manifest
//! now declares but the grant does not allow is added to the roles `policy init` drafted for
//! this plugin alone (never to a role another grant may share), and each addition is printed;
//! anything else is reported with where to add it by hand. Nothing is written unless the result
//! loads as a policy.

use super::draft::{CmdletNeeds, Needs, PinRecord, ValueNeeds, cmdlet_entry, free_name};
use super::{Guest, read_guest, shown, write_policy};
use anyhow::{Context, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use toml_edit::{DocumentMut, Item, Table, value};
use warden_exchange::verbs::CmdletKind;
use warden_policy::{Policy, Principal, names};

/// Arguments of `warden policy pin`.
#[derive(Debug, Args)]
pub(super) struct PinArgs {
    /// The policy file holding the guest's grant.
    policy: PathBuf,
    /// The plugin (.wasm) or script (.rhai) as it is now.
    guest: PathBuf,
}

pub(super) fn pin(args: PinArgs) -> anyhow::Result<ExitCode> {
    Policy::load(&args.policy).map_err(crate::guest_args::policy_error)?;
    let guest = read_guest(&args.guest)?;
    let text = std::fs::read_to_string(&args.policy)?;
    let mut doc: DocumentMut = text.parse()?;
    let file = shown(&args.policy.display().to_string()).into_owned();
    let Some(index) = super::grant_index(&doc, &guest, &args.policy) else {
        bail!(
            "{file}: no grant names {}\n  fix: `warden policy init {} --into {file}` drafts one",
            shown(&guest.label()),
            shown(&args.guest.display().to_string())
        );
    };
    let sha256 = guest.sha256().to_owned();
    let mut report = Vec::new();
    let (grant_id, old_sha) = {
        let grant = grant_mut(&mut doc, index);
        let old = grant
            .get("sha256")
            .and_then(Item::as_str)
            .unwrap_or_default()
            .to_owned();
        // The value alone is replaced: the key's comments and layout stay as written.
        match grant.get_mut("sha256").and_then(Item::as_value_mut) {
            Some(pinned) => {
                let decor = pinned.decor().clone();
                *pinned = sha256.as_str().into();
                *pinned.decor_mut() = decor;
            }
            None => {
                grant.insert("sha256", value(&sha256));
            }
        }
        let id = grant
            .get("id")
            .and_then(Item::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| guest.name());
        (id, old)
    };
    if old_sha.eq_ignore_ascii_case(&sha256) {
        report.push(format!("grant {grant_id} already pins sha256 {sha256}"));
    } else {
        report.push(format!(
            "grant {grant_id}: sha256 {} → {}",
            short(&old_sha),
            short(&sha256)
        ));
    }
    if let Guest::Plugin(info) = &guest {
        let record = PinRecord::of(grant_mut(&mut doc, index));
        let declared = info.declared.clone().unwrap_or_default();
        match &record {
            Some(old) => report.extend(manifest_changes(old, &declared, &info.reads)),
            None => report.push(
                "no earlier pin record (it was not pinned by warden), so the manifest's changes \
                 cannot be listed; recording it now"
                    .to_owned(),
            ),
        }
        if info.declared.is_none() {
            report.push(
                "the plugin declares nothing: its runs get the whole grant (declare its needs \
                 with warden_sdk::manifest!)"
                    .to_owned(),
            );
        }
        let mut record = record.unwrap_or_default();
        record.cmdlets = declared;
        record.reads = info.reads.clone();
        grant_into_own_roles(
            &mut doc,
            index,
            info,
            &mut record,
            &args.policy,
            &mut report,
        )?;
        record.store(grant_mut(&mut doc, index), None);
    }
    let text = doc.to_string();
    let policy = Policy::parse(&text, &args.policy).map_err(|e| {
        anyhow::anyhow!(
            "the re-pinned policy does not load ({e}); nothing was written\n  fix: update the \
             grant's sha256 by hand"
        )
    })?;
    write_policy(&args.policy, &text)?;
    for line in &report {
        println!("{}", shown(line));
    }
    for warning in super::lint(&policy) {
        eprintln!("warning: {}", shown(&warning));
    }
    println!(
        "review it: warden plugin inspect {} --policy {file}",
        shown(&args.guest.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn grant_mut(doc: &mut DocumentMut, index: usize) -> &mut Table {
    doc["grant"]
        .as_array_of_tables_mut()
        .and_then(|g| g.get_mut(index))
        .expect("the grant found above")
}

/// What the manifest added or dropped since `old`, one line each.
fn manifest_changes(
    old: &PinRecord,
    declared: &BTreeMap<String, Vec<String>>,
    reads: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let find = |map: &BTreeMap<String, Vec<String>>, cmdlet: &str| {
        map.iter()
            .find(|(c, _)| names::same(c, cmdlet))
            .map(|(_, v)| v.clone())
    };
    let minus = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter()
            .filter(|x| !b.iter().any(|y| names::same(x, y)))
            .cloned()
            .collect()
    };
    let mut lines = Vec::new();
    for (cmdlet, params) in declared {
        match find(&old.cmdlets, cmdlet) {
            None => lines.push(format!(
                "manifest: + {cmdlet} ({})",
                if params.is_empty() {
                    "no parameters".to_owned()
                } else {
                    params.join(", ")
                }
            )),
            Some(before) => {
                let added = minus(params, &before);
                let removed = minus(&before, params);
                if !added.is_empty() {
                    lines.push(format!(
                        "manifest: + {cmdlet} parameters {}",
                        added.join(", ")
                    ));
                }
                if !removed.is_empty() {
                    lines.push(format!(
                        "manifest: - {cmdlet} parameters {}",
                        removed.join(", ")
                    ));
                }
            }
        }
    }
    for cmdlet in old.cmdlets.keys() {
        if find(declared, cmdlet).is_none() {
            lines.push(format!(
                "manifest: - {cmdlet} (no longer declared: runs no longer get it; its role \
                 entry stays until you remove it)"
            ));
        }
    }
    for (cmdlet, properties) in reads {
        let before = find(&old.reads, cmdlet).unwrap_or_default();
        let added = minus(properties, &before);
        if !added.is_empty() {
            lines.push(format!("manifest: + {cmdlet} reads {}", added.join(", ")));
        }
    }
    if lines.is_empty() {
        lines.push("manifest: unchanged since the last pin".to_owned());
    }
    lines
}

/// Grants what the manifest declares and the grant does not allow, in the roles drafted for
/// this plugin alone (`record.roles`); reports what it cannot place.
fn grant_into_own_roles(
    doc: &mut DocumentMut,
    index: usize,
    info: &warden_runtime::PluginInfo,
    record: &mut PinRecord,
    origin: &std::path::Path,
    report: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(declaration) = info.declaration() else {
        return Ok(());
    };
    let policy = Policy::parse(&doc.to_string(), origin)
        .map_err(|e| anyhow::anyhow!("the re-pinned policy does not load: {e}"))?;
    let principal = Principal::Plugin {
        name: info.name.clone(),
        sha256: info.sha256.clone(),
    };
    let allowed = policy
        .grant_for(&principal, Some(&declaration))
        .map_err(|d| anyhow::anyhow!("{d}"))?
        .allowed_cmdlets();
    let needs = Needs::of_plugin(info);
    for (cmdlet, cmdlet_needs) in &needs.cmdlets {
        let entries: Vec<_> = allowed
            .iter()
            .filter(|a| names::same(&a.cmdlet, cmdlet))
            .collect();
        let missing: Vec<&String> = cmdlet_needs
            .parameters
            .keys()
            .filter(|p| {
                !entries
                    .iter()
                    .any(|e| e.parameters.iter().any(|q| names::same(q, p)))
            })
            .collect();
        if !entries.is_empty() && missing.is_empty() {
            continue;
        }
        let write = CmdletKind::of(cmdlet).is_write();
        if entries.is_empty() {
            match own_role(doc, index, record, write) {
                Some(role) => {
                    role_entries(doc, &role)?.push(cmdlet_entry(cmdlet, cmdlet_needs));
                    report.push(format!(
                        "granted: {cmdlet} ({}) in role {role}",
                        list_or_none(cmdlet_needs.parameters.keys())
                    ));
                }
                None => report.push(not_placed(cmdlet, None)),
            }
            continue;
        }
        // Parameters go to this plugin's own entry for the cmdlet, if it has one.
        let own = record.roles.clone().into_iter().find(|role| {
            role_entries(doc, role).is_ok_and(|entries| {
                entries.iter().any(|e| {
                    e.get("name")
                        .and_then(Item::as_str)
                        .is_some_and(|n| names::same(n, cmdlet))
                })
            })
        });
        let Some(role) = own else {
            report.push(not_placed(cmdlet, Some(&missing)));
            continue;
        };
        let entries = role_entries(doc, &role)?;
        let entry = entries
            .iter_mut()
            .find(|e| {
                e.get("name")
                    .and_then(Item::as_str)
                    .is_some_and(|n| names::same(n, cmdlet))
            })
            .expect("found above");
        let only_missing = CmdletNeeds {
            parameters: missing
                .iter()
                .map(|p| ((*p).clone(), ValueNeeds::Any))
                .collect(),
            reads: None,
        };
        let drafted = cmdlet_entry(cmdlet, &only_missing);
        if let Some(max) = drafted.get("max_result_size") {
            entry.insert("max_result_size", max.clone());
        }
        if let Some(Item::Table(params)) = drafted.get("parameters") {
            let target = entry
                .entry("parameters")
                .or_insert_with(|| Item::Table(Table::new()))
                .as_table_mut()
                .context("the entry's parameters are not a table")?;
            for (name, item) in params.iter() {
                target.insert(name, item.clone());
            }
        }
        report.push(format!(
            "granted: {cmdlet} parameters {} in role {role}",
            list_or_none(missing.iter().copied())
        ));
    }
    Ok(())
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = items.map(String::as_str).collect();
    if list.is_empty() {
        "no parameters".to_owned()
    } else {
        list.join(", ")
    }
}

fn not_placed(cmdlet: &str, parameters: Option<&[&String]>) -> String {
    let what = match parameters {
        Some(ps) => format!(
            "{cmdlet} parameters {}",
            ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        ),
        None => cmdlet.to_owned(),
    };
    format!(
        "not granted: {what} is declared, but the grant's roles were not drafted for this \
         plugin alone, so pin does not widen them: add it to one of the grant's roles by hand"
    )
}

/// The role drafted for this plugin's reads (or writes), created when it has none yet.
fn own_role(
    doc: &mut DocumentMut,
    index: usize,
    record: &mut PinRecord,
    write: bool,
) -> Option<String> {
    if record.roles.is_empty() {
        return None;
    }
    let fits = |doc: &mut DocumentMut, role: &str| {
        role_entries(doc, role).is_ok_and(|entries| {
            entries.iter().all(|e| {
                e.get("name")
                    .and_then(Item::as_str)
                    .is_some_and(|n| CmdletKind::of(n).is_write() == write)
            })
        })
    };
    if let Some(role) = record.roles.clone().into_iter().find(|r| fits(doc, r)) {
        return Some(role);
    }
    let base = record.roles[0].trim_end_matches("-write").to_owned();
    let roles = doc["roles"].as_table_mut()?;
    let name = free_name(&if write { format!("{base}-write") } else { base }, |n| {
        roles.contains_key(n)
    });
    let mut role = Table::new();
    role.insert(
        "description",
        value(format!(
            "{} (drafted by `warden policy pin`; review it)",
            if write { "The writes" } else { "The reads" }
        )),
    );
    role.insert("cmdlet", Item::ArrayOfTables(Default::default()));
    roles.insert(&name, Item::Table(role));
    if let Some(list) = grant_mut(doc, index)
        .get_mut("roles")
        .and_then(Item::as_array_mut)
    {
        list.push(name.as_str());
    }
    record.roles.push(name.clone());
    Some(name)
}

fn role_entries<'d>(
    doc: &'d mut DocumentMut,
    role: &str,
) -> anyhow::Result<&'d mut toml_edit::ArrayOfTables> {
    doc.get_mut("roles")
        .and_then(|r| r.get_mut(role))
        .and_then(|r| r.get_mut("cmdlet"))
        .and_then(Item::as_array_of_tables_mut)
        .with_context(|| format!("role {role} has no [[roles.{role}.cmdlet]] entries"))
}
