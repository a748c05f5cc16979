//! `warden policy pin POLICY P.wasm|S.rhai [--grant-declared]`: re-pins the guest's existing
//! grant to its current sha256 and says what changed in the plugin's manifest since the last
//! pin. By default that is all it changes: what the manifest now declares but the grant does
//! not allow is printed as what `--grant-declared` would grant. With the flag it is added to
//! the roles `policy init` drafted for this grant, and only to those the grant still names and
//! no other grant names; anything else is reported with the grant that shares the role, to add
//! by hand. A manifest whose name differs from the pinned one, or that shares no cmdlet with
//! it, is refused: the plugin's name is its own claim, not proof it is the same plugin. Nothing
//! is written unless the result loads as a policy.

use super::draft::{CmdletNeeds, Needs, PinRecord, ValueNeeds, cmdlet_entry, free_name};
use super::{Guest, read_guest, shown, write_policy};
use anyhow::{Context, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use toml_edit::{DocumentMut, Item, Table, value};
use warden_exchange::verbs::CmdletKind;
use warden_policy::{Policy, names};

/// Arguments of `warden policy pin`.
#[derive(Debug, Args)]
pub(super) struct PinArgs {
    /// The policy file holding the guest's grant.
    policy: PathBuf,
    /// The plugin (.wasm) or script (.rhai) as it is now.
    guest: PathBuf,
    /// Also grant what the manifest declares and the grant does not allow, in the roles drafted
    /// for this grant alone (without it, pin only re-pins and prints what it would grant).
    #[arg(long)]
    grant_declared: bool,
}

pub(super) fn pin(args: PinArgs) -> anyhow::Result<ExitCode> {
    Policy::load(&args.policy).map_err(crate::guest_args::policy_error)?;
    let guest = read_guest(&args.guest)?;
    let text = std::fs::read_to_string(&args.policy)?;
    let mut doc: DocumentMut = text.parse()?;
    let file = shown(&args.policy.display().to_string()).into_owned();
    if doc
        .get("grant")
        .is_some_and(|g| g.as_array_of_tables().is_none())
    {
        return Err(super::draft::inline_form("grant", "[[grant]]"));
    }
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
        // The value alone is replaced: the key's comments and layout stay as written. A grant
        // by signer alone (`signed_by`, no sha256) stays one: a pin would refuse the
        // publisher's next signed build.
        let by_signer = grant.contains_key("signed_by");
        match grant.get_mut("sha256").and_then(Item::as_value_mut) {
            Some(pinned) => {
                let decor = pinned.decor().clone();
                *pinned = sha256.as_str().into();
                *pinned.decor_mut() = decor;
            }
            None if by_signer => {}
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
    let by_signer_only = old_sha.is_empty() && grant_mut(&mut doc, index).contains_key("signed_by");
    if by_signer_only {
        report.push(format!(
            "grant {grant_id} is granted by signer (signed_by), so no sha256 is added"
        ));
    } else if old_sha.eq_ignore_ascii_case(&sha256) {
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
        if let Some(old) = &record {
            same_plugin(old, info, &declared)?;
        }
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
        record.plugin = Some(info.name.clone());
        grant_into_own_roles(
            &mut doc,
            index,
            (info, &args.guest),
            &mut record,
            &args.policy,
            args.grant_declared,
            &mut report,
        )?;
        record.store(grant_mut(&mut doc, index), None)?;
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

/// Refuses a manifest that does not look like the plugin pinned before: another name, or no
/// cmdlet in common with the recorded ones. The grant is found by the name the plugin gives
/// itself, so a different plugin claiming it must not inherit (and widen) the grant.
fn same_plugin(
    old: &PinRecord,
    info: &warden_runtime::PluginInfo,
    declared: &BTreeMap<String, Vec<String>>,
) -> anyhow::Result<()> {
    if let Some(name) = old.plugin.as_deref().filter(|n| *n != info.name) {
        bail!(
            "the grant was pinned to a plugin named {}, but this manifest names it {}; nothing \
             was written\n  fix: if it is the same plugin, change the grant's `plugin` and \
             sha256 by hand; else grant it with `warden policy init`",
            shown(name),
            shown(&info.name)
        );
    }
    let shares = declared
        .keys()
        .any(|c| old.cmdlets.keys().any(|o| names::same(o, c)));
    if !old.cmdlets.is_empty() && !declared.is_empty() && !shares {
        bail!(
            "plugin {} declares none of the cmdlets it was pinned with ({}): it may be another \
             plugin using the same name; nothing was written\n  fix: if it is the same plugin, \
             change the grant's sha256 by hand and review its roles; else rename it and grant it \
             with `warden policy init`",
            shown(&info.name),
            shown(&old.cmdlets.keys().cloned().collect::<Vec<_>>().join(", "))
        );
    }
    Ok(())
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
    for (cmdlet, before) in &old.reads {
        let dropped = minus(before, &find(reads, cmdlet).unwrap_or_default());
        if !dropped.is_empty() {
            lines.push(format!("manifest: - {cmdlet} reads {}", dropped.join(", ")));
        }
    }
    if lines.is_empty() {
        lines.push("manifest: unchanged since the last pin".to_owned());
    }
    lines
}

/// Where pin may widen: the roles drafted for this grant (`record.roles`) that it still names
/// and no other grant names. `why_not` says, for the report, why the others are left alone.
struct OwnRoles {
    eligible: Vec<String>,
    why_not: String,
}

impl OwnRoles {
    fn of(doc: &DocumentMut, index: usize, record: &PinRecord) -> OwnRoles {
        let grants = doc
            .get("grant")
            .and_then(Item::as_array_of_tables)
            .map(|g| g.iter().collect::<Vec<_>>())
            .unwrap_or_default();
        let roles_of = |g: &Table| -> Vec<String> {
            g.get("roles")
                .and_then(Item::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let current = grants.get(index).map(|g| roles_of(g)).unwrap_or_default();
        let mut eligible = Vec::new();
        let mut reasons = Vec::new();
        for role in &record.roles {
            if !current.contains(role) {
                reasons.push(format!("role {role} is no longer the grant's"));
                continue;
            }
            let sharer = grants
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .find(|(_, g)| roles_of(g).contains(role))
                .map(|(i, g)| {
                    g.get("id")
                        .and_then(Item::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("#{}", i + 1))
                });
            match sharer {
                Some(other) => reasons.push(format!(
                    "role {role} is also named by grant {other}, so widening it would widen that \
                     grant too"
                )),
                None => eligible.push(role.clone()),
            }
        }
        if record.roles.is_empty() {
            reasons.push("the grant's roles were not drafted for this plugin alone".to_owned());
        }
        OwnRoles {
            eligible,
            why_not: reasons.join("; "),
        }
    }
}

/// Grants (with `widen`) or says it would grant what the manifest declares and the grant does
/// not allow, in the grant's own roles only; reports what it cannot place and why.
fn grant_into_own_roles(
    doc: &mut DocumentMut,
    index: usize,
    (info, component): (&warden_runtime::PluginInfo, &std::path::Path),
    record: &mut PinRecord,
    origin: &std::path::Path,
    widen: bool,
    report: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(declaration) = info.declaration() else {
        return Ok(());
    };
    let policy = Policy::parse(&doc.to_string(), origin)
        .map_err(|e| anyhow::anyhow!("the re-pinned policy does not load: {e}"))?;
    // Judged as a run would be: with its signature, for a grant by signer.
    let bytes = std::fs::read(component).with_context(|| {
        format!(
            "{}: cannot read it",
            shown(&component.display().to_string())
        )
    })?;
    let detached = warden_runtime::read_detached_signature(component)
        .map_err(crate::guest_args::runtime_error)?;
    let principal = warden_runtime::plugin_principal(info, &bytes, detached.as_deref(), &policy);
    let allowed = policy
        .grant_for_any_tenant(&principal, Some(&declaration))
        .map_err(|d| anyhow::anyhow!("{d}"))?
        .allowed_cmdlets();
    let own = OwnRoles::of(doc, index, record);
    let verb = if widen { "granted" } else { "would grant" };
    let mut pending = false;
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
            match own_role(doc, index, record, &own.eligible, write, widen) {
                Some(role) => {
                    if widen {
                        role_entries(doc, &role)?.push(cmdlet_entry(cmdlet, cmdlet_needs));
                    }
                    pending = true;
                    report.push(format!(
                        "{verb}: {cmdlet} ({}) in role {role}",
                        list_or_none(cmdlet_needs.parameters.keys())
                    ));
                }
                None => report.push(not_placed(cmdlet, None, &own.why_not)),
            }
            continue;
        }
        // Parameters go to this grant's own entry for the cmdlet, if it has one.
        let role = own.eligible.iter().find(|role| {
            role_entries(doc, role).is_ok_and(|entries| {
                entries.iter().any(|e| {
                    e.get("name")
                        .and_then(Item::as_str)
                        .is_some_and(|n| names::same(n, cmdlet))
                })
            })
        });
        let Some(role) = role.cloned() else {
            report.push(not_placed(cmdlet, Some(&missing), &own.why_not));
            continue;
        };
        pending = true;
        report.push(format!(
            "{verb}: {cmdlet} parameters {} in role {role}",
            list_or_none(missing.iter().copied())
        ));
        if !widen {
            continue;
        }
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
            entry.entry("max_result_size").or_insert(max.clone());
        }
        if let Some(Item::Table(params)) = drafted.get("parameters") {
            let target = entry
                .entry("parameters")
                .or_insert_with(|| Item::Table(Table::new()))
                .as_table_mut()
                .context("the entry's parameters are not a table")?;
            // A parameter the operator already narrowed keeps its constraint.
            for (name, item) in params.iter() {
                target.entry(name).or_insert(item.clone());
            }
        }
    }
    if pending && !widen {
        report.push(
            "nothing was granted: run again with --grant-declared to grant the above, after \
             reviewing it"
                .to_owned(),
        );
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

fn not_placed(cmdlet: &str, parameters: Option<&[&String]>, why: &str) -> String {
    let what = match parameters {
        Some(ps) => format!(
            "{cmdlet} parameters {}",
            ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        ),
        None => cmdlet.to_owned(),
    };
    format!(
        "not granted: {what} is declared, but pin widens only roles drafted for this grant \
         alone ({why}): add it to one of the grant's roles by hand"
    )
}

/// The grant's own role for its reads (or writes): one of `eligible` that fits, else a new one
/// (created only when `widen`). None when the grant owns no role at all.
fn own_role(
    doc: &mut DocumentMut,
    index: usize,
    record: &mut PinRecord,
    eligible: &[String],
    write: bool,
    widen: bool,
) -> Option<String> {
    let base = eligible.first()?.trim_end_matches("-write").to_owned();
    let fits = |doc: &mut DocumentMut, role: &str| {
        role_entries(doc, role).is_ok_and(|entries| {
            entries.iter().all(|e| {
                e.get("name")
                    .and_then(Item::as_str)
                    .is_some_and(|n| CmdletKind::of(n).is_write() == write)
            })
        })
    };
    if let Some(role) = eligible.iter().find(|r| fits(doc, r)) {
        return Some(role.clone());
    }
    let roles = doc["roles"].as_table_mut()?;
    let name = free_name(&if write { format!("{base}-write") } else { base }, |n| {
        roles.contains_key(n)
    });
    if !widen {
        return Some(format!("{name} (new)"));
    }
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
