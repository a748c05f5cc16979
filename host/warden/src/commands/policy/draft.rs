//! What a guest needs, and the least-privilege policy text that grants exactly that: one role
//! for its reads, one for its writes (only when it writes), and a grant pinned to its hash with
//! budgets sized from what it calls. `policy init` writes it; `policy pin` extends the same
//! roles when the plugin's manifest grows.
//!
//! Each grant written here carries a pin record (a `# warden pin: {…}` comment above it): the
//! manifest it was pinned to and the roles drafted for it alone, so the next `policy pin` can
//! say what changed and knows which roles it may extend.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};
use warden_exchange::verbs::CmdletKind;
use warden_policy::names;

/// `max_result_size` drafted for a cmdlet whose `ResultSize` has no literal bound.
pub(super) const DEFAULT_MAX_RESULT_SIZE: i64 = 1000;
/// Calls granted per cmdlet a guest calls (a guest that calls once per object needs more).
const CALLS_PER_CMDLET: i64 = 100;
/// Writes granted per write cmdlet a guest calls.
const WRITES_PER_CMDLET: i64 = 10;
/// The comment prefix of a pin record.
const PIN_RECORD: &str = "# warden pin: ";

/// What a guest calls.
#[derive(Debug, Default)]
pub(super) struct Needs {
    /// Cmdlet name → what it is called with.
    pub cmdlets: BTreeMap<String, CmdletNeeds>,
    /// Calls that could not be read (script calls with computed names), for the operator.
    pub unreadable: Vec<String>,
}

/// One cmdlet's parameters, and the properties the guest reads from its results.
#[derive(Debug, Default)]
pub(super) struct CmdletNeeds {
    pub parameters: BTreeMap<String, ValueNeeds>,
    pub reads: Option<Vec<String>>,
}

/// What values a parameter takes: the literals a script passes, or anything.
#[derive(Debug)]
pub(super) enum ValueNeeds {
    Any,
    Literals(Vec<Value>),
}

/// The manifest a grant was last pinned to, and the roles drafted for it alone.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PinRecord {
    #[serde(default)]
    pub cmdlets: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The plugin name the manifest gave when it was pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

impl PinRecord {
    /// The record in a grant's leading comments, if it has one.
    pub fn of(grant: &Table) -> Option<PinRecord> {
        let prefix = grant.decor().prefix()?.as_str()?;
        prefix
            .lines()
            .find_map(|line| line.trim().strip_prefix(PIN_RECORD.trim_end()))
            .and_then(|json| serde_json::from_str(json.trim()).ok())
    }

    /// Writes the record into the grant's leading comments, replacing an earlier one, with
    /// `note` (warden's own fixed words, never a guest's) above it when given. A comment is raw
    /// policy text: a line break in it would start policy lines of its own, so a record or note
    /// holding a control character is refused rather than written.
    pub fn store(&self, grant: &mut Table, note: Option<&'static str>) -> anyhow::Result<()> {
        let json = serde_json::to_string(self)?;
        for text in note.iter().copied().chain([json.as_str()]) {
            if text.chars().any(char::is_control) {
                anyhow::bail!(
                    "the pin record would hold a control character, which a policy comment \
                     cannot: {}\n  fix: rename what the manifest declares to printable names",
                    super::shown(text)
                );
            }
        }
        let old = grant
            .decor()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or("\n")
            .to_owned();
        let mut kept: Vec<&str> = old
            .lines()
            .filter(|line| !line.trim().starts_with(PIN_RECORD.trim_end()))
            .collect();
        while kept.last().is_some_and(|l| l.trim().is_empty()) {
            kept.pop();
        }
        let mut prefix = kept.join("\n");
        prefix.push('\n');
        if let Some(note) = note {
            prefix.push_str(&format!("# {note}\n"));
        }
        prefix.push_str(&format!("{PIN_RECORD}{json}\n"));
        grant.decor_mut().set_prefix(prefix);
        Ok(())
    }
}

impl Needs {
    /// A plugin's needs from its manifest.
    pub fn of_plugin(info: &warden_runtime::PluginInfo) -> Needs {
        let mut needs = Needs::default();
        for (cmdlet, parameters) in info.declared.iter().flatten() {
            let entry = needs.cmdlets.entry(cmdlet.clone()).or_default();
            for p in parameters {
                entry.parameters.insert(p.clone(), ValueNeeds::Any);
            }
        }
        for (cmdlet, properties) in &info.reads {
            if let Some(entry) = needs
                .cmdlets
                .iter_mut()
                .find(|(c, _)| names::same(c, cmdlet))
                .map(|(_, e)| e)
            {
                entry.reads = Some(properties.clone());
            }
        }
        needs
    }

    fn writes(&self) -> usize {
        self.cmdlets
            .keys()
            .filter(|c| CmdletKind::of(c).is_write())
            .count()
    }
}

/// A role or grant name from a guest's name: `[A-Za-z0-9_-]`, 1 to 64 characters.
pub(super) fn policy_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    if cleaned.is_empty() {
        "guest".to_owned()
    } else {
        cleaned
    }
}

/// `base`, else `base-2`, `base-3`, … : the first name `taken` does not hold.
pub(super) fn free_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .expect("an unbounded range has a free name")
}

/// The refusal for a policy that writes `key` inline (`grant = [{…}]`, `roles = {…}`): valid,
/// but `init` and `pin` edit only the table form.
pub(super) fn inline_form(key: &str, form: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the policy writes `{key}` as an inline table or array, which `warden policy init` and \
         `pin` do not edit; nothing was written\n  fix: write it in the {form} table form, or \
         add the grant by hand"
    )
}

/// The constraint drafted for one parameter.
fn constraint(needs: &ValueNeeds) -> InlineTable {
    let mut table = InlineTable::new();
    match needs {
        ValueNeeds::Literals(values)
            if !values.is_empty() && values.iter().all(|v| v.is_string()) =>
        {
            table.insert("one_of", toml_array(values).into());
        }
        ValueNeeds::Literals(values)
            if !values.is_empty()
                && values.iter().all(|v| {
                    v.as_array().is_some_and(|items| {
                        !items.is_empty() && items.iter().all(Value::is_string)
                    })
                }) =>
        {
            let items: Vec<Value> = values
                .iter()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .fold(Vec::new(), |mut all, v| {
                    if !all.contains(&v) {
                        all.push(v);
                    }
                    all
                });
            let longest = values
                .iter()
                .filter_map(|v| v.as_array().map(Vec::len))
                .max()
                .unwrap_or(1) as i64;
            let mut range = Array::new();
            range.push(1i64);
            range.push(longest);
            table.insert("items", range.into());
            let mut each = InlineTable::new();
            each.insert("one_of", toml_array(&items).into());
            table.insert("each", each.into());
        }
        ValueNeeds::Literals(values)
            if !values.is_empty() && values.iter().all(|v| v.is_boolean()) && values.len() == 1 =>
        {
            table.insert("equals", toml_scalar(&values[0]));
        }
        _ => {
            table.insert("any", true.into());
        }
    }
    table
}

fn toml_scalar(v: &Value) -> toml_edit::Value {
    match v {
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or_default().into(),
        },
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

fn toml_array(values: &[Value]) -> Array {
    values.iter().map(toml_scalar).collect()
}

/// One `[[roles.NAME.cmdlet]]` entry granting `cmdlet` as `needs` asks.
pub(super) fn cmdlet_entry(cmdlet: &str, needs: &CmdletNeeds) -> Table {
    let mut entry = Table::new();
    entry.insert("name", value(cmdlet));
    let mut parameters = Table::new();
    for (name, values) in &needs.parameters {
        if names::same(name, "ResultSize") {
            let bound = match values {
                ValueNeeds::Literals(v) if !v.is_empty() && v.iter().all(Value::is_i64) => v
                    .iter()
                    .filter_map(Value::as_i64)
                    .max()
                    .unwrap_or(DEFAULT_MAX_RESULT_SIZE)
                    .max(1),
                _ => DEFAULT_MAX_RESULT_SIZE,
            };
            entry.insert("max_result_size", value(bound));
            continue;
        }
        // A SecureString is drafted as the opt-in the policy asks for, never with the
        // script's literal (a password would land in the policy in clear).
        if let Some((full, _)) = warden_vocab::secure_parameter_named(cmdlet, name) {
            let mut table = InlineTable::new();
            table.insert("any", true.into());
            table.insert("sensitive", true.into());
            let mut item = toml_edit::Value::from(table);
            item.decor_mut().set_suffix(
                "   # review: a SecureString (sent encrypted, hashed in the audit); narrow it, e.g. length = [12, 128]",
            );
            parameters.insert(full, Item::Value(item));
            continue;
        }
        let mut item = Item::Value(constraint(values).into());
        if matches!(values, ValueNeeds::Any)
            && let Some(v) = item.as_value_mut()
        {
            v.decor_mut()
                .set_suffix("   # review: any single value; narrow it (domain, one_of, pattern)");
        }
        parameters.insert(name, item);
    }
    if let Some(reads) = &needs.reads {
        let list: Array = reads.iter().map(|p| p.as_str()).collect();
        entry.insert("output", value(list));
    }
    if !parameters.is_empty() {
        entry.insert("parameters", Item::Table(parameters));
    }
    entry
}

/// Adds the drafted roles and grant for `needs` to `doc` (creating `version = 1` when it is
/// empty), choosing role names no other role has. `principal` holds the grant's `plugin` or
/// `script` key and its hash. Returns the grant id and the roles drafted.
pub(super) fn add_grant(
    doc: &mut DocumentMut,
    base: &str,
    principal: &[(&str, &str)],
    needs: &Needs,
    record: PinRecord,
    about: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    if !doc.contains_key("version") {
        doc.insert("version", value(1i64));
    }
    let roles = doc
        .entry("roles")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| inline_form("roles", "[roles.NAME]"))?;
    let mut drafted = Vec::new();
    for (suffix, writes) in [("", false), ("-write", true)] {
        let cmdlets: Vec<(&String, &CmdletNeeds)> = needs
            .cmdlets
            .iter()
            .filter(|(c, _)| CmdletKind::of(c).is_write() == writes)
            .collect();
        if cmdlets.is_empty() {
            continue;
        }
        let name = free_name(&format!("{base}{suffix}"), |n| roles.contains_key(n));
        let mut role = Table::new();
        role.insert(
            "description",
            value(format!(
                "{} of {about}, drafted by `warden policy init`: review it",
                if writes { "The writes" } else { "The reads" }
            )),
        );
        let mut entries = ArrayOfTables::new();
        for (cmdlet, cmdlet_needs) in cmdlets {
            entries.push(cmdlet_entry(cmdlet, cmdlet_needs));
        }
        role.insert("cmdlet", Item::ArrayOfTables(entries));
        roles.insert(&name, Item::Table(role));
        drafted.push(name);
    }
    let taken_ids: Vec<String> = doc
        .get("grant")
        .and_then(Item::as_array_of_tables)
        .map(|grants| {
            grants
                .iter()
                .filter_map(|g| g.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let id = free_name(base, |n| taken_ids.iter().any(|t| t == n));
    let mut grant = Table::new();
    grant.insert("id", value(&id));
    for (key, v) in principal {
        grant.insert(key, value(*v));
    }
    let role_names: Array = drafted.iter().map(String::as_str).collect();
    grant.insert("roles", value(role_names));
    let mut budgets = Table::new();
    let cmdlets = needs.cmdlets.len().max(1) as i64;
    budgets.insert("calls", value(CALLS_PER_CMDLET * cmdlets));
    let writes = needs.writes() as i64;
    if writes > 0 {
        budgets.insert("writes", value(WRITES_PER_CMDLET * writes));
    }
    budgets.decor_mut().set_prefix(format!(
        "# sized from what it calls: {CALLS_PER_CMDLET} calls per cmdlet ({cmdlets}), \
         {WRITES_PER_CMDLET} writes per write cmdlet ({writes}); raise them if it calls once \
         per object\n"
    ));
    grant.insert("budgets", Item::Table(budgets));
    PinRecord {
        roles: drafted.clone(),
        ..record
    }
    // The guest is named only by the grant's escaped `plugin`/`script` value.
    .store(
        &mut grant,
        Some("drafted by `warden policy init`: review it before use"),
    )?;
    doc.entry("grant")
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| inline_form("grant", "[[grant]]"))?
        .push(grant);
    Ok((id, drafted))
}
