//! A principal's effective grant and the decision on one call.

use crate::constraint::{Constraint, Quantifier};
use crate::declaration::Declaration;
use crate::params::GivenParameters;
use crate::policy::TargetScope;
use crate::{filter, names, text};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use warden_vocab::{CmdletKind, Endpoint};

/// What one run may consume. A grant that leaves a budget out gets the default below — never
/// "unlimited".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budgets {
    /// Cmdlet calls (reads and writes). Default 1000.
    pub calls: u64,
    /// Calls to write cmdlets ([`CmdletKind::Write`]). Default 0: a grant that may change the
    /// tenant must say how many changes it may make.
    pub writes: u64,
    /// Objects returned to the guest, summed over calls. Default 10 000.
    pub objects: u64,
    /// Bytes of results returned to the guest. Default 16 MiB.
    pub output_bytes: u64,
    /// Wall-clock time of the run, host calls included. Default 300 s.
    #[serde(serialize_with = "secs")]
    pub wall_clock: Duration,
    /// Guest linear memory. Default 256 MiB.
    pub memory_bytes: u64,
    /// Guest CPU time (epoch deadline / Rhai operations). Default 60 s.
    #[serde(serialize_with = "secs")]
    pub cpu: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            calls: 1000,
            writes: 0,
            objects: 10_000,
            output_bytes: 16 * 1024 * 1024,
            wall_clock: Duration::from_secs(300),
            memory_bytes: 256 * 1024 * 1024,
            cpu: Duration::from_secs(60),
        }
    }
}

/// One `[[roles.NAME.cmdlet]]` entry, compiled.
#[derive(Debug, Clone)]
pub(crate) struct CmdletEntry {
    pub(crate) id: String,
    pub(crate) role: String,
    pub(crate) name: String,
    pub(crate) parameters: Vec<(String, Constraint)>,
    /// Parameters the role grants but the plugin did not declare (kept for reasons).
    pub(crate) undeclared: Vec<String>,
    pub(crate) output: Option<Vec<String>>,
    pub(crate) max_result_size: Option<u64>,
    pub(crate) target: Option<TargetScope>,
    /// The service the cmdlet is sent to (`endpoint = "exchange" | "compliance"`).
    pub(crate) endpoint: Endpoint,
}

impl CmdletEntry {
    pub(crate) fn narrowed_to(&self, declared: &Declaration) -> CmdletEntry {
        let (kept, dropped): (Vec<_>, Vec<_>) = self
            .parameters
            .iter()
            .cloned()
            .partition(|(p, _)| declared.declares(&self.name, p));
        CmdletEntry {
            parameters: kept,
            undeclared: dropped.into_iter().map(|(p, _)| p).collect(),
            ..self.clone()
        }
    }

    fn constraint(&self, name: &str) -> Option<(&str, &Constraint)> {
        self.parameters
            .iter()
            .find(|(p, _)| names::same(p, name))
            .map(|(p, c)| (p.as_str(), c))
    }

    /// Whether this entry fully admits the call; on refusal, the parameter at fault and why.
    fn admits(&self, params: &Map<String, Value>) -> Result<(), (Option<String>, String)> {
        for (name, value) in params {
            self.admits_one(name, value)?;
        }
        if let Some(target) = &self.target
            && !params.keys().any(|k| names::same(k, target.parameter()))
        {
            return Err((
                Some(target.parameter().to_owned()),
                format!(
                    "{} is target-scoped: the call must name its target with {}",
                    self.name,
                    target.parameter()
                ),
            ));
        }
        Ok(())
    }

    /// Whether this entry admits one parameter of a call (task forms judge values with it, so
    /// a form and the broker can never disagree); on refusal, the parameter at fault and why.
    pub(crate) fn admits_one(
        &self,
        name: &str,
        value: &Value,
    ) -> Result<(), (Option<String>, String)> {
        if names::same(name, "ResultSize")
            && let Some(max) = self.max_result_size
        {
            if value.is_string() {
                return Err((
                    Some("ResultSize".into()),
                    format!(
                        "ResultSize must be an integer ≤ {max}; a string (such as \"Unlimited\") is refused"
                    ),
                ));
            }
            Constraint::int_range(1, max as i64)
                .check(value)
                .map_err(|e| (Some("ResultSize".into()), format!("ResultSize: {e}")))?;
            return Ok(());
        }
        let Some((canonical, constraint)) = self.constraint(name) else {
            let why = if let Some(p) = self.undeclared.iter().find(|p| names::same(p, name)) {
                format!(
                    "parameter {p} is granted by role {} but was not declared by the plugin",
                    self.role
                )
            } else if names::is_common_parameter(name) {
                format!(
                    "common parameter {name} is not listed for {} in role {} (common parameters are refused unless listed)",
                    self.name, self.role
                )
            } else {
                format!(
                    "parameter {name} is not listed for {} in role {} (names match exactly: no abbreviations, no aliases){}",
                    self.name,
                    self.role,
                    crate::known::parameter_hint(
                        name,
                        self.parameters.iter().map(|(p, _)| p.as_str())
                    )
                )
            };
            return Err((Some(name.to_owned()), why));
        };
        constraint
            .check(value)
            .map_err(|e| (Some(canonical.to_owned()), format!("{canonical}: {e}")))?;
        Ok(())
    }
}

/// The two fixes for a name missing from both a plugin's declaration and its grant.
const BOTH_FIXES: &str = "it needs both fixes: declare it in the plugin's manifest \
    (warden_sdk::manifest!) and rebuild, then grant it: `warden policy pin POLICY PLUGIN.wasm \
    --grant-declared` adds what the manifest declares to the grant's own role (or add it to a \
    role of the grant by hand)";

/// Longest refusal reason a decision carries (bytes); see [`names::cut`].
pub const MAX_REASON_BYTES: usize = 2048;

/// The properties the guest receives from `cmdlet` under these entries: those every entry that
/// limits output allows (so shaping never widens), or `None` when no entry limits output.
pub(crate) fn shaped_output(entries: &[CmdletEntry], cmdlet: &str) -> Option<Vec<String>> {
    let mut lists = entries
        .iter()
        .filter(|e| names::same(&e.name, cmdlet))
        .filter_map(|e| e.output.as_ref());
    let first = lists.next()?;
    let rest: Vec<&Vec<String>> = lists.collect();
    Some(
        first
            .iter()
            .filter(|p| {
                rest.iter()
                    .all(|list| list.iter().any(|q| q.eq_ignore_ascii_case(p)))
            })
            .cloned()
            .collect(),
    )
}

/// What a guest may receive of one cmdlet's result objects ([`Grant::shaper`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shaper {
    /// Nothing: the grant does not allow the cmdlet.
    Nothing,
    /// Every property: no entry of the cmdlet limits its output.
    Everything,
    /// Only these properties (compared case-insensitively), in the object's own order.
    Only(Vec<String>),
}

impl Shaper {
    /// Removes from `object` every property the guest may not receive.
    pub fn apply(&self, object: &mut Map<String, Value>) {
        match self {
            Shaper::Nothing => object.clear(),
            Shaper::Everything => {}
            Shaper::Only(visible) => {
                object.retain(|key, _| visible.iter().any(|p| p.eq_ignore_ascii_case(key)))
            }
        }
    }
}

/// One `[[deny]]` rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct DenyRule {
    pub(crate) index: usize,
    pub(crate) line: usize,
    pub(crate) cmdlet: String,
    pub(crate) parameter: Option<String>,
    pub(crate) when: Option<(Constraint, Quantifier)>,
    /// Whether `parameter` names a directory object the broker resolves before `when` judges it
    /// (`identity = true`, or a recipient parameter), or is text (`identity = false`); `None`
    /// when the operator did not say and the parameter is not a known recipient one (judged as
    /// text, with a warning).
    pub(crate) identity: Option<bool>,
    pub(crate) reason: Option<String>,
}

impl DenyRule {
    pub(crate) fn rule_id(&self) -> String {
        format!("deny[{}]", self.index)
    }

    /// Why it refuses, for people (never quotes a value).
    pub(crate) fn why(&self) -> String {
        match &self.reason {
            Some(r) => format!("{} (line {}): {r}", self.rule_id(), self.line),
            None => format!(
                "{} (line {}) refuses {}{} whatever the roles allow",
                self.rule_id(),
                self.line,
                self.cmdlet,
                self.parameter
                    .as_deref()
                    .map(|p| format!(" with {p}"))
                    .unwrap_or_default()
            ),
        }
    }

    pub(crate) fn matches(&self, cmdlet: &str, params: &Map<String, Value>) -> bool {
        if !names::same(&self.cmdlet, cmdlet) {
            return false;
        }
        let Some(parameter) = &self.parameter else {
            return true;
        };
        let Some((_, value)) = params.iter().find(|(k, _)| names::same(k, parameter)) else {
            return false;
        };
        match &self.when {
            None => true,
            Some((c, quantifier)) => c.deny_matches(value, *quantifier),
        }
    }
}

/// The policy's answer on one call, with everything the broker and the audit need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// True only when a role entry fully admits the call and no deny rule matches.
    pub allowed: bool,
    /// Stable id of the deciding rule: `role:NAME/Cmdlet` (allowed), `role:NAME/Cmdlet/Param`
    /// (refused at that parameter), `deny[N]`, `default-deny`, `invalid-name`,
    /// `invalid-parameters`.
    pub rule: String,
    /// Why, for people. Never contains a parameter value.
    pub reason: String,
    /// The cmdlet in the policy's casing (as given when no role names it).
    pub cmdlet: String,
    /// The parameters in the policy's casing; for an allowed call with `max_result_size`, with
    /// `ResultSize` added when the call left it out. Empty when the JSON could not be parsed.
    pub parameters: Map<String, Value>,
    /// Parameter names (as in `parameters`) whose values the audit must keyed-hash.
    pub sensitive: Vec<String>,
    /// True when the cmdlet changes state (counts against the writes budget; never retried).
    pub write: bool,
}

/// One cmdlet a grant allows, as `exchange.grants()` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowedCmdlet {
    /// Cmdlet name.
    pub cmdlet: String,
    /// The role entry (`role:NAME/Cmdlet`).
    pub rule: String,
    /// Parameters it may take.
    pub parameters: Vec<String>,
    /// True for write cmdlets.
    pub write: bool,
    /// Upper bound on ResultSize, if any.
    pub max_result_size: Option<u64>,
    /// Output properties the guest receives, if limited.
    pub output: Option<Vec<String>>,
    /// The target-scoped parameter, if any.
    pub target_parameter: Option<String>,
    /// The service the entry sends the cmdlet to.
    pub endpoint: Endpoint,
}

/// The policy's deny rules with their index by cmdlet: built once, when the policy is parsed
/// ([`crate::Policy::parse`]), and shared by every grant and task through an `Arc`.
#[derive(Debug, Default)]
pub(crate) struct DenyRules {
    rules: Vec<DenyRule>,
    /// Indexes into `rules` by [`cmdlet_key`], in policy order (so the first match is the
    /// same as in a scan of them all).
    by_cmdlet: HashMap<String, Vec<usize>>,
}

impl DenyRules {
    pub(crate) fn new(rules: Vec<DenyRule>) -> Self {
        let mut by_cmdlet: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            by_cmdlet
                .entry(cmdlet_key(&rule.cmdlet))
                .or_default()
                .push(i);
        }
        DenyRules { rules, by_cmdlet }
    }

    /// Every rule, in policy order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, DenyRule> {
        self.rules.iter()
    }

    /// The indexes of the rules whose cmdlet has this [`cmdlet_key`].
    fn indexes(&self, key: &str) -> &[usize] {
        self.by_cmdlet.get(key).map_or(&[], Vec::as_slice)
    }
}

/// Every parameter some role entry of the policy marks `sensitive`, by [`cmdlet_key`]: a
/// value the policy calls a secret is keyed-hashed in every record of every grant, also when
/// the grant leaves the cmdlet or the parameter out (or the plugin does not declare it), so a
/// refusal never records it in clear.
#[derive(Debug, Default)]
pub(crate) struct SensitiveMarks(HashMap<String, Vec<String>>);

impl SensitiveMarks {
    pub(crate) fn new<'a>(entries: impl Iterator<Item = &'a CmdletEntry>) -> Self {
        let mut marks: HashMap<String, Vec<String>> = HashMap::new();
        for entry in entries {
            for (name, constraint) in &entry.parameters {
                if constraint.sensitive {
                    marks
                        .entry(cmdlet_key(&entry.name))
                        .or_default()
                        .push(name.clone());
                }
            }
        }
        SensitiveMarks(marks)
    }

    /// Whether the policy marks `parameter` of `cmdlet` sensitive: any casing of either, and
    /// the parameter also as PowerShell could bind it ([`names::as_bound`]), and a prefix of a
    /// marked name taken for it (`-Pass` for `Password`): a guest misspelling a secret's name is refused, and its line must not
    /// hold the secret either. A prefix that is a parameter of its own (`CustomAttribute1`
    /// under a marked `CustomAttribute10`) is hashed too: nothing here knows every cmdlet's
    /// parameters, and a value hashed needlessly loses a detail where one missed leaks.
    /// Allocates nothing.
    fn marks(&self, cmdlet: &str, parameter: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let given = names::as_bound(parameter);
        !given.is_empty()
            && with_cmdlet_key(cmdlet, |key| {
                self.0.get(key).is_some_and(|marked| {
                    marked.iter().any(|p| {
                        p.get(..given.len())
                            .is_some_and(|head| names::same(head, given))
                    })
                })
            })
    }
}

/// What a grant holds for one cmdlet: indexes into its entries and into the policy's deny
/// rules, each in policy order.
#[derive(Debug, Clone, Copy)]
struct CmdletRules<'a> {
    entries: &'a [usize],
    deny: &'a [usize],
}

/// The key a cmdlet name is looked up by: ASCII-lowercased, so two names map to one key
/// exactly when [`names::same`] says they are the same (non-ASCII characters are left as they
/// are, so a lookalike never meets a granted name).
fn cmdlet_key(cmdlet: &str) -> String {
    cmdlet.to_ascii_lowercase()
}

/// Most refusal reasons one grant keeps ([`KeptReasons`]).
const MAX_KEPT_REASONS: usize = 64;

/// The reasons a grant has worked out for valid cmdlet names no role entry names, by the name
/// as given: the reason (with its "did you mean", `known::cmdlet_hint`: edit distances to the
/// grant's names and, failing those, to every known cmdlet) depends on nothing else, so a
/// guest repeating a refused call pays a lookup instead of the search. Names only deny rules
/// name are kept alike (their parameters still decide), so the search is paid once for
/// either; their parameters are still parsed (the deny rules read them), so a refusal's time
/// may still tell the two apart. At most [`MAX_KEPT_REASONS`]; past them a new name's reason
/// is worked out every time. A clone starts empty.
/// Read-locked by every call of a name refused before (runs share a grant), written once per
/// name.
#[derive(Debug, Default)]
struct KeptReasons(RwLock<HashMap<String, KeptReason, foldhash::fast::RandomState>>);

/// One kept "not granted" reason.
#[derive(Debug, Clone)]
struct KeptReason {
    reason: Arc<str>,
    /// No deny rule names the cmdlet either: the name alone refuses it.
    refused_by_name: bool,
}

impl KeptReasons {
    fn get(&self, cmdlet: &str) -> Option<KeptReason> {
        // Only valid names are kept: a longer one is not hashed under the lock.
        if cmdlet.len() > names::MAX_NAME_LEN {
            return None;
        }
        let kept = self.0.read().unwrap_or_else(|p| p.into_inner());
        kept.get(cmdlet).cloned()
    }

    fn keep(&self, cmdlet: &str, kept_reason: &KeptReason) {
        let full = || self.0.read().unwrap_or_else(|p| p.into_inner()).len() >= MAX_KEPT_REASONS;
        // Full: no writer's lock for every new name past the bound.
        if full() {
            return;
        }
        let mut kept = self.0.write().unwrap_or_else(|p| p.into_inner());
        if kept.len() < MAX_KEPT_REASONS {
            kept.insert(cmdlet.to_owned(), kept_reason.clone());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Clone for KeptReasons {
    fn clone(&self) -> Self {
        KeptReasons::default()
    }
}

/// What [`Grant::judge`] made of a call.
#[derive(Debug)]
pub enum Judgement {
    /// Refused on its cmdlet's name alone.
    RefusedByName(NameRefusal),
    /// Decided on its parameters (allowed or refused).
    Decided(Decision),
}

/// A call refused on its cmdlet's name alone ([`Grant::refusal_by_name`]): no parameter could
/// change the answer.
/// Made only by [`Grant::refusal_by_name`], so [`Grant::refused_by_name`] records only a
/// refusal the grant made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRefusal {
    rule: &'static str,
    reason: Arc<str>,
}

impl NameRefusal {
    /// `invalid-name` (not a cmdlet's name) or `default-deny` (nothing grants it).
    pub fn rule(&self) -> &'static str {
        self.rule
    }

    /// Why, for people: bounded, never a parameter value.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// `f` of [`cmdlet_key`]`(cmdlet)`, lowercased on the stack for a name of at most
/// [`names::MAX_NAME_LEN`] bytes (every name a policy holds): a lookup allocates nothing.
fn with_cmdlet_key<R>(cmdlet: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buffer = [0u8; names::MAX_NAME_LEN];
    if let Some(room) = buffer.get_mut(..cmdlet.len()) {
        room.copy_from_slice(cmdlet.as_bytes());
        room.make_ascii_lowercase();
        // ASCII lowercasing leaves every byte of a multi-byte character as it was.
        if let Ok(key) = std::str::from_utf8(room) {
            return f(key);
        }
    }
    f(&cmdlet_key(cmdlet))
}

/// A principal's effective rights: the roles of its grant, narrowed to its declaration, under
/// the policy's deny rules.
#[derive(Debug, Clone)]
pub struct Grant {
    id: String,
    budgets: Budgets,
    pub(crate) entries: Vec<CmdletEntry>,
    undeclared: Vec<(String, String)>,
    pub(crate) deny: Arc<DenyRules>,
    /// The policy's sensitive parameters, whatever role marks them.
    marked: Arc<SensitiveMarks>,
    /// The indexes of `entries` by [`cmdlet_key`], in policy order. Built with the grant: for
    /// runs once per grant and declaration ([`crate::Policy::shared_grant_for_tenant`]); the
    /// deny rules' index is the policy's, built once at parse.
    by_cmdlet: HashMap<String, Vec<usize>>,
    max_parameter_bytes: usize,
    /// The plugin's declaration, when it has one: a refusal for a name missing from both the
    /// declaration and the grant names both fixes.
    declaration: Option<Declaration>,
    reasons: KeptReasons,
}

impl Grant {
    pub(crate) fn new(
        id: String,
        budgets: Budgets,
        entries: Vec<CmdletEntry>,
        undeclared: Vec<(String, String)>,
        deny: Arc<DenyRules>,
        marked: Arc<SensitiveMarks>,
        max_parameter_bytes: usize,
    ) -> Self {
        let mut entries = entries;
        // A filter answers for every property it names: where output shaping hides properties,
        // a filter parameter may name only what the guest can see (unless the role lists its
        // properties explicitly; `warden policy check` warns when those reach past the shaping).
        for i in 0..entries.len() {
            let Some(visible) = shaped_output(&entries, &entries[i].name) else {
                continue;
            };
            for (name, constraint) in &mut entries[i].parameters {
                if filter::is_filter_parameter(name) {
                    constraint.imply_filter_properties(&visible);
                }
            }
        }
        // A call finds its cmdlet's entries (and, in the policy's index, its deny rules) by a
        // hash lookup rather than a scan; building this costs the grant one pass over them.
        let mut by_cmdlet: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            by_cmdlet
                .entry(cmdlet_key(&entry.name))
                .or_default()
                .push(i);
        }
        Grant {
            id,
            budgets,
            entries,
            undeclared,
            deny,
            marked,
            by_cmdlet,
            max_parameter_bytes,
            declaration: None,
            reasons: KeptReasons::default(),
        }
    }

    /// Why nothing of this grant allows `cmdlet` (no role entry names it): it names the
    /// missing declaration too, or the role that grants it undeclared, or else the nearest
    /// name ("did you mean").
    fn not_granted_reason(&self, cmdlet: &str) -> Arc<str> {
        let reason = if let Some(why) = self.missing_from_both(cmdlet) {
            why
        } else if let Some((role, c)) = self.undeclared.iter().find(|(_, c)| names::same(c, cmdlet))
        {
            format!("{c} is granted by role {role} but was not declared by the plugin")
        } else {
            format!(
                "no role of grant {} allows {cmdlet}{}",
                self.id,
                self.cmdlet_hint(cmdlet)
            )
        };
        // The name is the guest's: cut, so a huge one cannot flood a refusal.
        names::cut(&reason, MAX_REASON_BYTES).into()
    }

    /// `; did you mean X?` for a cmdlet no entry of this grant allows (`known::cmdlet_hint`
    /// against the entries' names).
    fn cmdlet_hint(&self, cmdlet: &str) -> String {
        crate::known::cmdlet_hint(cmdlet, self.entries.iter().map(|e| e.name.as_str()))
    }

    /// The same grant, remembering the declaration it was narrowed to (for refusal reasons).
    pub(crate) fn with_declaration(mut self, declaration: Option<&Declaration>) -> Self {
        self.declaration = declaration.cloned();
        self
    }

    /// The grant's id in the policy.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The run's budgets.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// What this grant holds for `cmdlet` (nothing when no entry and no deny rule names it):
    /// one key, looked up in the grant's entries and the policy's deny rules.
    fn rules_for(&self, cmdlet: &str) -> CmdletRules<'_> {
        with_cmdlet_key(cmdlet, |key| CmdletRules {
            entries: self.by_cmdlet.get(key).map_or(&[], Vec::as_slice),
            deny: self.deny.indexes(key),
        })
    }

    /// The role entries for `cmdlet`, in policy order.
    fn entries_for(&self, cmdlet: &str) -> impl Iterator<Item = &CmdletEntry> + Clone {
        self.entries_in(self.rules_for(cmdlet))
    }

    fn entries_in<'a>(
        &'a self,
        rules: CmdletRules<'a>,
    ) -> impl Iterator<Item = &'a CmdletEntry> + Clone {
        rules.entries.iter().map(|&i| &self.entries[i])
    }

    /// The deny rules naming `cmdlet`, in policy order.
    pub(crate) fn deny_for(&self, cmdlet: &str) -> impl Iterator<Item = &DenyRule> {
        self.deny_in(self.rules_for(cmdlet))
    }

    fn deny_in<'a>(&'a self, rules: CmdletRules<'a>) -> impl Iterator<Item = &'a DenyRule> {
        rules.deny.iter().map(|&i| &self.deny.rules[i])
    }

    /// Decides one call. Never panics, whatever the input.
    ///
    /// A call is allowed when no deny rule matches it and ONE role entry for the cmdlet admits
    /// every parameter of it. Entries are never merged parameter-wise, so one role can never
    /// loosen another role's constraint. A call refused by its name alone
    /// ([`Grant::refusal_by_name`]) is refused before its parameters are judged.
    pub fn check(&self, cmdlet: &str, parameters_json: &str) -> Decision {
        self.check_given(cmdlet, GivenParameters::Json(parameters_json))
    }

    /// [`Grant::check`] of parameters as a guest gave them.
    pub fn check_given(&self, cmdlet: &str, parameters: GivenParameters<'_>) -> Decision {
        match self.judge(cmdlet, parameters) {
            Judgement::RefusedByName(refusal) => self.refused_by_name(&refusal, cmdlet, parameters),
            Judgement::Decided(decision) => decision,
        }
    }

    /// [`Grant::check`], with a refusal by name left as it is: its [`Decision`] (the
    /// parameters parsed for the record) is made by [`Grant::refused_by_name`] only when
    /// someone records it, and a [`GivenParameters::Deferred`] is not written before.
    /// Parameters with no JSON form are refused exactly as JSON that does not parse:
    /// `invalid-name` when the cmdlet name is bad, `default-deny` when no role entry names it,
    /// else `invalid-parameters` with the reason.
    pub fn judge(&self, cmdlet: &str, parameters: GivenParameters<'_>) -> Judgement {
        match self.refusal_by_name(cmdlet) {
            Some(refusal) => Judgement::RefusedByName(refusal),
            None => {
                Judgement::Decided(self.decide(cmdlet, parameters.parse(self.max_parameter_bytes)))
            }
        }
    }

    /// The refusal of every call to `cmdlet` when its name alone decides it: a name that is
    /// not a cmdlet's (`invalid-name`), or one no role entry of this grant and no deny rule
    /// of the policy names (`default-deny`), so no parameter could change the answer. `None`
    /// when the parameters decide ([`Grant::check`]). A name refused before costs a hash
    /// lookup: its reason is kept.
    pub fn refusal_by_name(&self, cmdlet: &str) -> Option<NameRefusal> {
        // Kept only for valid names no entry names (and a grant never changes).
        if let Some(kept) = self.reasons.get(cmdlet) {
            return kept.refused_by_name.then_some(NameRefusal {
                rule: "default-deny",
                reason: kept.reason,
            });
        }
        if let Err(why) = names::validate_cmdlet(cmdlet) {
            return Some(NameRefusal {
                rule: "invalid-name",
                reason: names::cut(&why, MAX_REASON_BYTES).into(),
            });
        }
        let rules = self.rules_for(cmdlet);
        if !rules.entries.is_empty() || !rules.deny.is_empty() {
            return None;
        }
        Some(NameRefusal {
            rule: "default-deny",
            reason: self.kept_not_granted_reason(cmdlet, rules),
        })
    }

    /// [`Grant::not_granted_reason`] of a valid name no role entry names, kept
    /// ([`KeptReasons`]).
    fn kept_not_granted_reason(&self, cmdlet: &str, rules: CmdletRules<'_>) -> Arc<str> {
        if let Some(kept) = self.reasons.get(cmdlet) {
            return kept.reason;
        }
        let kept = KeptReason {
            reason: self.not_granted_reason(cmdlet),
            refused_by_name: rules.deny.is_empty(),
        };
        self.reasons.keep(cmdlet, &kept);
        kept.reason
    }

    /// The decision [`Grant::check`] makes on a call that `refusal` refuses: the call as the
    /// trail records it, its parameters included when they parse (what a hostile guest tried;
    /// values the audit must hash marked by their names).
    pub fn refused_by_name(
        &self,
        refusal: &NameRefusal,
        cmdlet: &str,
        given: GivenParameters<'_>,
    ) -> Decision {
        let mut parameters = Map::new();
        let mut sensitive = Vec::new();
        let write = CmdletKind::of(cmdlet).is_write();
        let cmdlet = if refusal.rule == "invalid-name" {
            // The name goes into the audit trail: cut, so a huge one cannot flood it.
            names::for_record(cmdlet)
        } else {
            if let Ok(given) = given.parse(self.max_parameter_bytes) {
                for (name, value) in given {
                    let recorded = names::for_record(&name);
                    if self.is_sensitive(cmdlet, &name) {
                        sensitive.push(recorded.clone());
                    }
                    parameters.insert(recorded, value);
                }
            }
            cmdlet.to_owned()
        };
        Decision {
            allowed: false,
            rule: refusal.rule.to_owned(),
            reason: refusal.reason().to_owned(),
            write,
            cmdlet,
            parameters,
            sensitive,
        }
    }

    /// Whether the trail must hash `parameter` of `cmdlet`: the policy marks it, or its name
    /// says it is a secret.
    fn is_sensitive(&self, cmdlet: &str, parameter: &str) -> bool {
        self.marked.marks(cmdlet, parameter) || names::sensitive_by_name(parameter)
    }

    /// [`Grant::check`] of a call whose name is valid and named by an entry or a deny rule.
    fn decide(&self, cmdlet: &str, given: Result<Map<String, Value>, String>) -> Decision {
        let write = CmdletKind::of(cmdlet).is_write();
        // The cmdlet's entries and deny rules by one key (no scan of the others).
        let rules = self.rules_for(cmdlet);
        let refuse = |rule: &str,
                      reason: String,
                      cmdlet: &str,
                      parameters: Map<String, Value>,
                      sensitive: Vec<String>| {
            // Named by a deny rule only: malformed input gets the answer any cmdlet nothing
            // grants gets, so a guest cannot learn which cmdlets deny rules name.
            let (rule, reason) = if rules.entries.is_empty() && rule.starts_with("invalid") {
                (
                    "default-deny",
                    self.kept_not_granted_reason(cmdlet, rules).to_string(),
                )
            } else {
                (rule, reason)
            };
            Decision {
                allowed: false,
                rule: rule.to_owned(),
                // Reasons may carry guest text (a name, a front end's problem): bounded here.
                reason: names::cut(&reason, MAX_REASON_BYTES),
                cmdlet: cmdlet.to_owned(),
                parameters,
                sensitive,
                write,
            }
        };
        let given = match given {
            Ok(map) => map,
            Err(why) => return refuse("invalid-parameters", why, cmdlet, Map::new(), Vec::new()),
        };
        let entries = self.entries_in(rules);
        let canonical_cmdlet = entries
            .clone()
            .next()
            .map(|e| e.name.clone())
            .unwrap_or_else(|| cmdlet.to_owned());
        // Canonical names (the first entry that lists a parameter gives its casing) and
        // sensitivity (any entry marking it, or its name).
        let mut parameters = Map::new();
        let mut sensitive = Vec::new();
        let mut bad_name = None;
        for (name, value) in &given {
            if let Err(why) = names::validate_parameter(name) {
                bad_name.get_or_insert(why);
            }
            let listed = entries.clone().find_map(|e| e.constraint(name));
            let canonical = listed
                .map(|(p, _)| p.to_owned())
                .unwrap_or_else(|| names::for_record(name));
            if self.is_sensitive(cmdlet, name) {
                sensitive.push(canonical.clone());
            }
            parameters.insert(canonical, value.clone());
        }
        if let Some(why) = bad_name {
            return refuse(
                "invalid-name",
                why,
                &canonical_cmdlet,
                parameters,
                sensitive,
            );
        }
        // The text judged must be the text Exchange acts on (see `text`): checked before any
        // rule looks at a value.
        if let Some(why) = given
            .iter()
            .find_map(|(name, value)| text::check_value(name, value).err())
        {
            return refuse(
                "invalid-parameters",
                why,
                &canonical_cmdlet,
                parameters,
                sensitive,
            );
        }
        if let Some(rule) = self.deny_in(rules).find(|d| d.matches(cmdlet, &given)) {
            return refuse(
                &rule.rule_id(),
                rule.why(),
                &canonical_cmdlet,
                parameters,
                sensitive,
            );
        }
        if rules.entries.is_empty() {
            // Only deny rules name it, and none matched: still nothing grants it.
            let why = self.kept_not_granted_reason(cmdlet, rules).to_string();
            return refuse(
                "default-deny",
                why,
                &canonical_cmdlet,
                parameters,
                sensitive,
            );
        }
        let mut failures: Vec<(String, String)> = Vec::new();
        for entry in entries {
            match entry.admits(&given) {
                Ok(()) => {
                    let mut canonical = Map::new();
                    for (name, value) in given {
                        let name = entry
                            .constraint(&name)
                            .map(|(p, _)| p.to_owned())
                            .unwrap_or_else(|| {
                                if names::same(&name, "ResultSize") {
                                    "ResultSize".to_owned()
                                } else {
                                    name
                                }
                            });
                        canonical.insert(name, value);
                    }
                    let mut reason = format!("allowed by role {} ({})", entry.role, entry.id);
                    if let Some(max) = entry.max_result_size
                        && !canonical.contains_key("ResultSize")
                    {
                        canonical.insert("ResultSize".into(), Value::from(max));
                        reason.push_str(&format!("; ResultSize set to {max}"));
                    }
                    let sensitive = sensitive
                        .into_iter()
                        .map(|s| {
                            canonical
                                .keys()
                                .find(|k| names::same(k, &s))
                                .cloned()
                                .unwrap_or(s)
                        })
                        .collect();
                    return Decision {
                        allowed: true,
                        rule: entry.id.clone(),
                        reason,
                        cmdlet: entry.name.clone(),
                        parameters: canonical,
                        sensitive,
                        write,
                    };
                }
                Err((param, why)) => {
                    let rule = match param {
                        Some(p) => format!("{}/{p}", entry.id),
                        None => entry.id.clone(),
                    };
                    failures.push((rule, why));
                }
            }
        }
        let rule = failures[0].0.clone();
        let mut reason = failures
            .into_iter()
            .map(|(_, why)| why)
            .collect::<Vec<_>>()
            .join("; ");
        // Refused at a parameter the plugin does not declare either: name both fixes at once.
        if let Some(both) = rule
            .rsplit_once('/')
            .and_then(|(_, parameter)| self.undeclared_too(cmdlet, parameter))
        {
            reason.push_str("; the plugin does not declare it either: ");
            reason.push_str(both);
        }
        refuse(&rule, reason, &canonical_cmdlet, parameters, sensitive)
    }

    /// A call naming a cmdlet that the plugin's declaration leaves out AND no role grants: one
    /// refusal naming both fixes, so the author does not learn of the second gap only after
    /// fixing the first.
    fn missing_from_both(&self, cmdlet: &str) -> Option<String> {
        let declaration = self.declaration.as_ref()?;
        let granted = self.entries_for(cmdlet).next().is_some()
            || self.undeclared.iter().any(|(_, c)| names::same(c, cmdlet));
        (!granted && declaration.parameters(cmdlet).is_none()).then(|| {
            format!(
                "{cmdlet} is neither declared by the plugin nor granted (no role of grant {} \
                 allows it){}; {BOTH_FIXES}",
                self.id,
                self.cmdlet_hint(cmdlet)
            )
        })
    }

    /// For a call refused at a parameter no role entry lists: when the plugin does not declare
    /// it either, the second fix to name (`None` when one fix is enough).
    fn undeclared_too(&self, cmdlet: &str, parameter: &str) -> Option<&'static str> {
        let declaration = self.declaration.as_ref()?;
        let unlisted = !self.entries_for(cmdlet).any(|e| {
            e.constraint(parameter).is_some()
                || e.undeclared.iter().any(|p| names::same(p, parameter))
                || (e.max_result_size.is_some() && names::same(parameter, "ResultSize"))
        });
        (unlisted && !declaration.declares(cmdlet, parameter)).then_some(BOTH_FIXES)
    }

    /// Removes from a result object every property the guest may not receive for `cmdlet`.
    ///
    /// With several role entries for the cmdlet, the guest receives only properties every
    /// entry that limits output allows (the intersection), so shaping never widens. A cmdlet
    /// this grant does not allow keeps nothing.
    pub fn shape(&self, cmdlet: &str, object: &mut Map<String, Value>) {
        self.shaper(cmdlet).apply(object);
    }

    /// [`Grant::shape`] for `cmdlet`, worked out once to apply to a whole page of objects.
    pub fn shaper(&self, cmdlet: &str) -> Shaper {
        if self.entries_for(cmdlet).next().is_none() {
            return Shaper::Nothing;
        }
        match shaped_output(&self.entries, cmdlet) {
            Some(visible) => Shaper::Only(visible),
            None => Shaper::Everything,
        }
    }

    /// The target scope of `cmdlet`, when its entry has one. With several entries the first
    /// scoped one is returned; [`Grant::check`] already refuses calls without the target
    /// parameter.
    pub fn target_scope(&self, cmdlet: &str) -> Option<&TargetScope> {
        self.entries_for(cmdlet).find_map(|e| e.target.as_ref())
    }

    /// The target scope of the role entry that admitted `decision` (by its rule id), if that
    /// entry is target-scoped. Prefer this over [`Grant::target_scope`] when a cmdlet appears in
    /// several roles with different scopes.
    pub fn target_scope_for(&self, decision: &Decision) -> Option<&TargetScope> {
        if !decision.allowed {
            return None;
        }
        self.entries
            .iter()
            .find(|e| e.id == decision.rule)
            .and_then(|e| e.target.as_ref())
    }

    /// The endpoint of the role entry that admitted `decision` (by its rule id): where the
    /// broker sends the call. An error, never a default, for a refusal or a rule id that
    /// names no entry of this grant: such a call must not be sent anywhere.
    pub fn endpoint_for(&self, decision: &Decision) -> Result<Endpoint, String> {
        if !decision.allowed {
            return Err(format!(
                "{} was refused ({}): it has no endpoint",
                decision.cmdlet, decision.rule
            ));
        }
        self.entries
            .iter()
            .find(|e| e.id == decision.rule)
            .map(|e| e.endpoint)
            .ok_or_else(|| {
                format!(
                    "{} was allowed by {}, which is no role entry of this grant: not sent",
                    decision.cmdlet, decision.rule
                )
            })
    }

    /// Everything this grant allows, one item per role entry.
    pub fn allowed_cmdlets(&self) -> Vec<AllowedCmdlet> {
        self.entries
            .iter()
            .map(|e| {
                let mut parameters: Vec<String> =
                    e.parameters.iter().map(|(p, _)| p.clone()).collect();
                if e.max_result_size.is_some() {
                    parameters.push("ResultSize".into());
                }
                AllowedCmdlet {
                    cmdlet: e.name.clone(),
                    rule: e.id.clone(),
                    parameters,
                    write: CmdletKind::of(&e.name).is_write(),
                    max_result_size: e.max_result_size,
                    output: e.output.clone(),
                    target_parameter: e.target.as_ref().map(|t| t.parameter().to_owned()),
                    endpoint: e.endpoint,
                }
            })
            .collect()
    }
}

/// The one value `script_inline` takes: an ad hoc grant admits any script text.
pub(crate) const AD_HOC_ANY: &str = "any";

/// The principal of an ad hoc grant (`principal = "…"` with `script_inline = "any"`), checked;
/// `None` for a grant that pins what it runs. Principals are `operator` (whoever runs `warden
/// eval` or `warden repl` with the policy: the CLI holds the credential anyway), or `user:NAME`
/// and `group:NAME` for a front end that signs people in and says who they are.
pub(crate) fn ad_hoc_matcher(
    principal: Option<&str>,
    script_inline: Option<&str>,
) -> Result<Option<String>, String> {
    match (principal, script_inline) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(
            "principal = \"…\" belongs to an ad hoc grant: add script_inline = \"any\" (or pin the script instead)"
                .into(),
        ),
        (None, Some(_)) => Err(
            "script_inline = \"any\" needs principal = \"…\": who may run any script under it (\"operator\" for the CLI)"
                .into(),
        ),
        (Some(_), Some(other)) if other != AD_HOC_ANY => Err(format!(
            "script_inline = {other:?}: the only value is \"any\" (to pin one script, use script_inline_sha256)"
        )),
        (Some(who), Some(_)) => valid_ad_hoc_principal(who).map(|()| Some(who.to_owned())),
    }
}

fn valid_ad_hoc_principal(who: &str) -> Result<(), String> {
    if who == "operator" {
        return Ok(());
    }
    let name = who
        .strip_prefix("user:")
        .or_else(|| who.strip_prefix("group:"));
    match name {
        Some(name)
            if !name.is_empty()
                && name.len() <= 256
                && !name.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "principal {:?} is not \"operator\", \"user:NAME\" or \"group:NAME\" (NAME: 1–256 characters, no spaces)",
            names::for_record(who)
        )),
    }
}

/// Whether two ad hoc principals are the same (sign-in names and group names are
/// case-insensitive).
pub(crate) fn same_ad_hoc_principal(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A principal as part of a grant id: letters and digits kept, the rest `-`, cut to fit.
pub(crate) fn id_part(principal: &str) -> String {
    principal
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(57)
        .collect()
}

/// What `policy check` says about an ad hoc grant beyond the usual: any text its principal
/// types runs under it, so writes deserve a second look.
pub(crate) fn ad_hoc_warnings<'a>(
    id: &str,
    line: usize,
    principal: &str,
    entries: impl Iterator<Item = &'a CmdletEntry>,
) -> Vec<String> {
    entries
        .filter(|entry| CmdletKind::of(&entry.name).is_write())
        .map(|entry| {
            format!(
                "grant {id} (line {line}) is ad hoc and allows {} ({}): any script {principal} types may change the tenant within the grant's writes budget; ad hoc grants are meant to be read-only",
                entry.name, entry.id
            )
        })
        .collect()
}

/// An ad hoc run records its script's text whole, so a value typed into it would be in the
/// trail in clear: an ad hoc grant may not take a parameter the audit keyed-hashes (marked
/// `sensitive`, or named like a password, secret or token).
pub(crate) fn ad_hoc_refuses_sensitive<'a>(
    mut entries: impl Iterator<Item = &'a CmdletEntry>,
) -> Result<(), String> {
    let found = entries.find_map(|entry| {
        entry
            .parameters
            .iter()
            .find(|(name, c)| c.sensitive || names::sensitive_by_name(name))
            .map(|(name, _)| (entry, name))
    });
    match found {
        None => Ok(()),
        Some((entry, name)) => Err(format!(
            "an ad hoc grant records each script's text whole in the audit trail, but {} takes {name}, whose value the trail must keep keyed-hashed; give the ad hoc grant roles without sensitive parameters, and pin the script that needs it",
            entry.id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Policy, Principal};
    use std::path::Path;

    const POLICY: &str = r#"
version = 1

[roles.links]
[[roles.links.cmdlet]]
name = "Add-UnifiedGroupLinks"
[roles.links.cmdlet.parameters]
Identity = { any = true }
Links = { any = true }

[[deny]]
cmdlet = "add-unifiedgrouplinks"
parameter = "Links"
when = { pattern = "(?i).*admin.*" }

[[deny]]
cmdlet = "Remove-Mailbox"
parameter = "Identity"
when = { equals = "ceo" }

[[grant]]
plugin = "p"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["links"]
"#;

    fn grant() -> Grant {
        let policy = Policy::parse(POLICY, Path::new("lookup.toml")).unwrap();
        let principal = Principal::Plugin {
            name: "p".into(),
            sha256: "0".repeat(64),
            signature: None,
        };
        policy.grant_for(&principal, None).unwrap()
    }

    #[test]
    fn the_stack_key_is_the_allocated_key() {
        for name in [
            "Add-UnifiedGroupLinks",
            "ADD-unifiedGROUPlinks",
            "Add-UnifiedGroupLin\u{212a}s", // Kelvin sign
            "Get-Ma\u{130}lbox",            // capital I with dot above
            "Get-Ma\u{131}lbox",            // dotless i
            "\u{17f}et-Mailbox",            // long s
            &"A".repeat(names::MAX_NAME_LEN),
            &"A".repeat(names::MAX_NAME_LEN + 1),
            &"\u{e9}".repeat(100),
            "",
        ] {
            assert_eq!(
                with_cmdlet_key(name, str::to_owned),
                cmdlet_key(name),
                "{name}"
            );
        }
    }

    #[test]
    fn a_kept_reason_is_the_reason_worked_out_whatever_the_casing() {
        let grant = grant();
        let refused = |grant: &Grant, name: &str| {
            let refusal = grant.refusal_by_name(name).expect("refused by name");
            assert_eq!(refusal.rule, "default-deny", "{name}");
            refusal.reason
        };
        // A clone keeps nothing: its reason is worked out afresh.
        let fresh = |name: &str| refused(&grant.clone(), name);
        let names = [
            "Add-UnifiedGroupLink",
            "add-unifiedgrouplinkz",
            "Get-Mailboxx",
            "GET-MAILBOXX",
            "Get-MailboxPermision",
            "Frobnicate-Widget",
        ];
        // Twice over, each casing: the first asks work the reason out, the rest find it kept.
        for _ in 0..2 {
            for name in names {
                for name in [
                    name.to_owned(),
                    name.to_ascii_uppercase(),
                    name.to_ascii_lowercase(),
                ] {
                    let kept = refused(&grant, &name);
                    assert_eq!(kept, fresh(&name), "{name}");
                    assert!(kept.contains(&name), "{kept}");
                }
            }
        }
        // Bounded: names past the limit are worked out each time, and still right.
        for i in 0..2 * MAX_KEPT_REASONS {
            let name = format!("Get-Mailbox{i}");
            assert_eq!(refused(&grant, &name), fresh(&name), "{name}");
        }
        assert_eq!(grant.reasons.len(), MAX_KEPT_REASONS);
        // Granted, or named by a deny rule: never refused by name, so never kept.
        assert_eq!(grant.refusal_by_name("add-unifiedgrouplinks"), None);
    }

    #[test]
    fn a_name_only_deny_rules_hold_keeps_its_reason_and_its_rules() {
        let grant = grant();
        let fresh = grant
            .clone()
            .check("Remove-Mailbox", r#"{"Identity":"cfo"}"#);
        for _ in 0..3 {
            // Its parameters decide: never refused by name, kept or not.
            assert_eq!(grant.refusal_by_name("Remove-Mailbox"), None);
            let d = grant.check("Remove-Mailbox", r#"{"Identity":"ceo"}"#);
            assert_eq!(d.rule, "deny[1]", "{d:?}");
            let d = grant.check("Remove-Mailbox", r#"{"Identity":"cfo"}"#);
            assert_eq!(
                (d.rule.as_str(), &d.reason),
                ("default-deny", &fresh.reason)
            );
            // Malformed input gets the same answer as for a name nothing names.
            let d = grant.check("Remove-Mailbox", "{not json");
            assert_eq!(
                (d.rule.as_str(), &d.reason),
                ("default-deny", &fresh.reason)
            );
            // The reason (its "did you mean" search) is worked out once.
            assert_eq!(grant.reasons.len(), 1);
        }
    }

    #[test]
    fn only_ascii_casing_finds_a_cmdlet_in_either_table() {
        let grant = grant();
        for name in [
            "Add-UnifiedGroupLinks",
            "add-unifiedgrouplinks",
            "ADD-UNIFIEDGROUPLINKS",
        ] {
            let rules = grant.rules_for(name);
            assert_eq!((rules.entries, rules.deny), (&[0][..], &[0][..]), "{name}");
        }
        // Unicode case folding would make each of these the granted name; names::same does not.
        for name in [
            "Add-UnifiedGroupLin\u{212a}s", // Kelvin sign: lowercases to k
            "Add-Unified\u{130}roupLinks",  // not a letter of the name at all
            "Add-Un\u{131}fiedGroupLinks",  // dotless i: uppercases to I
            "Add-UnifiedGroupLink\u{17f}",  // long s: uppercases to S
        ] {
            assert!(!names::same(name, "Add-UnifiedGroupLinks"));
            let rules = grant.rules_for(name);
            assert!(rules.entries.is_empty() && rules.deny.is_empty(), "{name}");
            assert_eq!(
                grant.deny_for_value(name, "Links", &Value::from("admins")),
                None
            );
        }
    }
}
