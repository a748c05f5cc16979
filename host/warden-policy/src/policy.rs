//! Loading a policy file: the TOML model, and every check that makes a bad file fail at load
//! with file, line and reason.

use crate::constraint::{Constraint, Quantifier, RawConstraint, Usage, address_in_domains};
use crate::declaration::Declaration;
use crate::grant::{
    Budgets, CmdletEntry, DenyRule, DenyRules, Grant, SensitiveMarks, shaped_output,
};
use crate::names;
use crate::params::DEFAULT_MAX_PARAMETER_BYTES;
use crate::resolved::names_recipient;
use crate::{Denial, Principal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use toml::Spanned;
use warden_fleet::{Candidate, PlanError, Selector};
use warden_signature::{KeyId, PublicKey};
use warden_vocab::{CmdletKind, Endpoint, PluginSignature, SignatureVerdict};

/// The only policy format version this build reads.
pub const POLICY_VERSION: i64 = 1;

/// Largest policy file read (bytes): a policy is written by people, not generated in bulk.
pub const MAX_POLICY_BYTES: u64 = 4 * 1024 * 1024;

/// A policy file that cannot be used. Nothing runs under a policy that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: cannot read the policy: {source}", path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but is not a valid policy.
    #[error("{}:{line}: {reason}", path.display())]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// 1-based line of the offending item (the nearest enclosing one the parser can place).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<Spanned<i64>>,
    max_parameter_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, Spanned<RawRole>>,
    #[serde(default)]
    grant: Vec<Spanned<RawGrant>>,
    #[serde(default)]
    deny: Vec<Spanned<RawDeny>>,
    #[serde(default)]
    trust: BTreeMap<Spanned<String>, Spanned<RawTrust>>,
    /// Delegated tasks, read by `task.rs` one by one so an error names its task.
    #[serde(default)]
    task: Vec<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    public_key: Option<String>,
    #[serde(default)]
    public_keys: Vec<String>,
    #[serde(default)]
    revoked: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    description: Option<String>,
    #[serde(default)]
    cmdlet: Vec<Spanned<RawCmdlet>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCmdlet {
    name: String,
    #[serde(default)]
    parameters: BTreeMap<String, Spanned<RawConstraint>>,
    output: Option<Vec<String>>,
    max_result_size: Option<u64>,
    target: Option<RawTarget>,
    endpoint: Option<Endpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    parameter: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    identities: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    id: Option<String>,
    plugin: Option<String>,
    script: Option<String>,
    sha256: Option<String>,
    signed_by: Option<String>,
    min_version: Option<String>,
    script_inline_sha256: Option<String>,
    script_inline: Option<String>,
    principal: Option<String>,
    roles: Vec<String>,
    /// The tenants (config profiles) the grant applies to, in `--tenants` terms.
    tenants: Option<Vec<String>>,
    #[serde(default)]
    budgets: RawBudgets,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudgets {
    calls: Option<u64>,
    writes: Option<u64>,
    objects: Option<u64>,
    output_bytes: Option<u64>,
    wall_clock_secs: Option<u64>,
    memory_mib: Option<u64>,
    cpu_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeny {
    cmdlet: String,
    parameter: Option<String>,
    when: Option<RawConstraint>,
    when_any: Option<RawConstraint>,
    when_all: Option<RawConstraint>,
    identity: Option<bool>,
    reason: Option<String>,
}

/// Which objects a cmdlet may act on: the broker resolves the object named by
/// [`TargetScope::parameter`] (for example to its primary SMTP address) before the call and asks
/// [`TargetScope::admits`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetScope {
    parameter: String,
    domains: Vec<String>,
    identities: Vec<String>,
}

impl TargetScope {
    /// The parameter naming the target object (e.g. `Identity`). A call without it is refused
    /// by [`Grant::check`].
    pub fn parameter(&self) -> &str {
        &self.parameter
    }

    /// True when the resolved target (primary SMTP address or identity) is in scope: equal,
    /// ASCII-case-insensitively, to a listed identity, or an address whose domain (after the
    /// last '@') is exactly a listed domain.
    pub fn admits(&self, resolved: &str) -> bool {
        self.identities
            .iter()
            .any(|i| i.eq_ignore_ascii_case(resolved))
            || address_in_domains(resolved, &self.domains)
    }
}

/// How a grant recognises its principal.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// A plugin by name, pinned by hash, by signer, or both (both must hold).
    Plugin {
        name: String,
        sha256: Option<String>,
        signed_by: Option<SignedBy>,
    },
    ScriptFile {
        path: PathBuf,
        sha256: String,
    },
    ScriptInline {
        sha256: String,
    },
    /// Any inline script the named principal types (`script_inline = "any"`).
    AdHoc {
        principal: String,
    },
}

/// A grant's `signed_by` (a `[trust.*]` name) and `min_version`.
#[derive(Debug, Clone)]
pub(crate) struct SignedBy {
    trust: String,
    min_version: Option<semver::Version>,
}

/// A named publisher: the keys that sign its plugins, and the ids of keys it no longer trusts.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    keys: Vec<PublicKey>,
    revoked: Vec<KeyId>,
}

#[derive(Debug, Clone)]
pub(crate) struct GrantDef {
    pub(crate) id: String,
    pub(crate) line: usize,
    pub(crate) matcher: Matcher,
    pub(crate) roles: Vec<String>,
    pub(crate) budgets: Budgets,
    /// The tenants it applies to (`tenants = [...]`); `None`: every tenant.
    pub(crate) tenants: Option<Selector>,
}

#[derive(Debug, Clone)]
pub(crate) struct Role {
    pub(crate) description: Option<String>,
    pub(crate) entries: Vec<CmdletEntry>,
}

/// A loaded, checked policy. Default deny: [`Policy::empty`] allows nothing.
#[derive(Debug, Clone)]
pub struct Policy {
    origin: PathBuf,
    pub(crate) roles: BTreeMap<String, Role>,
    pub(crate) grants: Vec<GrantDef>,
    deny: Arc<DenyRules>,
    /// The parameters any role marks `sensitive`: hashed in every grant's records.
    marked: Arc<SensitiveMarks>,
    trust: BTreeMap<String, Trust>,
    max_parameter_bytes: usize,
    pub(crate) tasks: Vec<crate::task::Task>,
    warnings: Vec<String>,
    /// Grants already built for runs ([`Policy::shared_grant_for_tenant`]).
    shared: SharedGrants,
}

/// The grants built for runs, by grant and declaration: a grant depends only on the policy
/// (immutable once parsed) and the plugin's declaration, so a plugin's runs share one instead
/// of each building and freeing its entries table. Bounded; a clone of the policy starts empty.
#[derive(Debug, Default)]
struct SharedGrants(Mutex<Vec<SharedGrant>>);

#[derive(Debug)]
struct SharedGrant {
    /// The declaration it was narrowed to; its grant id (unique in a policy) is the grant's.
    declared: Option<Declaration>,
    grant: Arc<Grant>,
}

/// How many (grant, declaration) pairs a policy keeps built: more than the plugins one host
/// runs at once; past it the oldest is dropped (and rebuilt when asked for again).
const SHARED_GRANTS: usize = 32;

impl Clone for SharedGrants {
    fn clone(&self) -> Self {
        SharedGrants::default()
    }
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn valid_sha256(what: &str, hex: &str) -> Result<String, String> {
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!("{what} {hex:?} is not a SHA-256 (64 hex digits)"))
    }
}

pub(crate) fn valid_role_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "role name {name:?} must be 1–64 ASCII letters, digits, '-' or '_'"
        ))
    }
}

struct Loader<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Loader<'_> {
    fn err(&self, offset: usize, reason: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            path: self.origin.to_owned(),
            line: line_of(self.text, offset),
            reason: reason.into(),
        }
    }
}

/// Parameters other than filters that judge objects by properties the caller names or cannot
/// see: the sort key orders results by a hidden property, ambiguous name resolution and the
/// search queries match text in properties (and contents) the shaping hides.
const READS_AROUND_SHAPING: &[&str] = &["SortBy", "Anr", "SearchQuery", "ContentMatchQuery"];

impl Policy {
    /// A policy with no roles, grants or deny rules: every principal and every call is refused.
    pub fn empty() -> Policy {
        Policy {
            origin: PathBuf::from("<empty policy>"),
            roles: BTreeMap::new(),
            grants: Vec::new(),
            deny: Arc::new(DenyRules::default()),
            marked: Arc::new(SensitiveMarks::default()),
            trust: BTreeMap::new(),
            max_parameter_bytes: DEFAULT_MAX_PARAMETER_BYTES,
            tasks: Vec::new(),
            warnings: Vec::new(),
            shared: SharedGrants::default(),
        }
    }

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        use std::io::Read;
        let read = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::Invalid {
                path: path.to_owned(),
                line: 1,
                reason: format!("the policy is larger than {MAX_POLICY_BYTES} bytes"),
            });
        }
        Self::parse(&text, path)
    }

    /// Checks a policy given as text; `origin` names it in errors and anchors relative
    /// `script` paths (relative to its directory).
    pub fn parse(text: &str, origin: &Path) -> Result<Policy, PolicyError> {
        let loader = Loader { text, origin };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            loader.err(offset, e.message().trim_end().to_owned())
        })?;
        match &raw.version {
            None => return Err(loader.err(0, "missing `version = 1` at the top of the policy")),
            Some(v) if *v.get_ref() != POLICY_VERSION => {
                return Err(loader.err(
                    v.span().start,
                    format!("policy version {} is not supported; this build reads version {POLICY_VERSION}", v.get_ref()),
                ));
            }
            Some(_) => {}
        }
        let max_parameter_bytes = match &raw.max_parameter_bytes {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 16 * 1024 * 1024 => {
                return Err(loader.err(v.span().start, "max_parameter_bytes must be 1..=16777216"));
            }
            Some(v) => *v.get_ref() as usize,
            None => DEFAULT_MAX_PARAMETER_BYTES,
        };

        let mut roles = BTreeMap::new();
        for (name, role) in &raw.roles {
            let at = name.span().start;
            valid_role_name(name.get_ref()).map_err(|e| loader.err(at, e))?;
            let entries = compile_role(&loader, name.get_ref(), role.get_ref())?;
            roles.insert(
                name.get_ref().clone(),
                Role {
                    description: role.get_ref().description.clone(),
                    entries,
                },
            );
        }

        one_endpoint_per_cmdlet(&roles).map_err(|e| loader.err(0, e))?;

        let mut trust = BTreeMap::new();
        for (name, entry) in &raw.trust {
            let at = name.span().start;
            valid_role_name(name.get_ref())
                .map_err(|e| loader.err(at, e.replace("role name", "trust name")))?;
            let compiled = compile_trust(name.get_ref(), entry.get_ref())
                .map_err(|e| loader.err(entry.span().start, e))?;
            trust.insert(name.get_ref().clone(), compiled);
        }

        let base = origin.parent().unwrap_or(Path::new("."));
        let mut grants: Vec<GrantDef> = Vec::new();
        for grant in &raw.grant {
            let at = grant.span().start;
            let def = compile_grant(grant.get_ref(), base, &roles, &trust)
                .map_err(|e| loader.err(at, e))?;
            if let Some(other) = grants
                .iter()
                .find(|g| same_principal(&g.matcher, &def.matcher))
            {
                return Err(loader.err(
                    at,
                    format!(
                        "this grant names the same principal as grant {:?} (line {}); merge them",
                        other.id, other.line
                    ),
                ));
            }
            if let Some(other) = grants.iter().find(|g| g.id == def.id) {
                return Err(loader.err(
                    at,
                    format!(
                        "grant id {:?} is used twice (first at line {})",
                        def.id, other.line
                    ),
                ));
            }
            grants.push(GrantDef {
                line: line_of(text, at),
                ..def
            });
        }

        let mut deny = Vec::new();
        for (index, rule) in raw.deny.iter().enumerate() {
            let at = rule.span().start;
            let r = rule.get_ref();
            names::validate_cmdlet(&r.cmdlet).map_err(|e| loader.err(at, e))?;
            if let Some(p) = &r.parameter {
                names::validate_parameter(p).map_err(|e| loader.err(at, e))?;
            }
            let given: Vec<(&str, &RawConstraint, Quantifier)> = [
                ("when", &r.when, Quantifier::Any),
                ("when_any", &r.when_any, Quantifier::Any),
                ("when_all", &r.when_all, Quantifier::All),
            ]
            .into_iter()
            .filter_map(|(key, c, q)| c.as_ref().map(|c| (key, c, q)))
            .collect();
            let mut when = match given.as_slice() {
                [] => None,
                [_] if r.parameter.is_none() => {
                    return Err(loader.err(
                        at,
                        "`when` needs `parameter`: it constrains that parameter's value",
                    ));
                }
                [(key, c, quantifier)] => Some((
                    c.compile(false, Usage::Deny)
                        .map_err(|e| loader.err(at, format!("{key}: {e}")))?,
                    *quantifier,
                )),
                _ => {
                    return Err(loader.err(
                        at,
                        "give one of when, when_any and when_all (when is when_any)",
                    ));
                }
            };
            let recipient = r
                .parameter
                .as_deref()
                .is_some_and(|p| names_recipient(&r.cmdlet, p));
            match r.identity {
                Some(_) if when.is_none() => {
                    return Err(loader.err(
                        at,
                        "`identity` needs `when`: it says how the broker judges the value `when` looks at",
                    ));
                }
                Some(false)
                    if recipient
                        && !r
                            .parameter
                            .as_deref()
                            .is_some_and(crate::resolved::may_name_outside_directory) =>
                {
                    return Err(loader.err(
                        at,
                        "identity = false: this parameter names a recipient on this cmdlet, and the broker always judges the object it resolves to; leave identity out",
                    ));
                }
                _ => {}
            }
            let identity = match r.identity {
                Some(marked) => Some(marked),
                None if recipient => Some(true),
                None => None,
            };
            if identity == Some(true)
                && let Some((constraint, _)) = &mut when
            {
                constraint.judge_identities();
            }
            deny.push(DenyRule {
                index,
                line: line_of(text, at),
                cmdlet: r.cmdlet.clone(),
                parameter: r.parameter.clone(),
                identity,
                when,
                reason: r.reason.clone(),
            });
        }

        let marked = SensitiveMarks::new(roles.values().flat_map(|r| r.entries.iter()));
        let mut policy = Policy {
            origin: origin.to_owned(),
            roles,
            grants,
            deny: Arc::new(DenyRules::new(deny)),
            marked: Arc::new(marked),
            trust,
            max_parameter_bytes,
            tasks: Vec::new(),
            warnings: Vec::new(),
            shared: SharedGrants::default(),
        };
        let (tasks, task_warnings) = crate::task::compile(&raw.task, text, origin, &policy)?;
        policy.tasks = tasks;
        policy.warnings = policy.compute_warnings();
        policy.warnings.extend(task_warnings);
        Ok(policy)
    }

    fn compute_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, trust) in &self.trust {
            if trust
                .keys
                .iter()
                .all(|k| self.is_revoked(k.key_id().as_str()))
            {
                out.push(format!(
                    "trust {name}: every key it lists is revoked (here or by another [trust.*] entry), so no plugin verifies as {name}; add the publisher's new key"
                ));
            }
            if !self
                .grants
                .iter()
                .any(|g| g.signed_by().is_some_and(|s| s.trust == *name))
            {
                out.push(format!("trust {name} is not used by any grant (signed_by)"));
            }
        }
        for (name, _) in self
            .roles
            .iter()
            .filter(|(n, _)| !self.grants.iter().any(|g| g.roles.contains(n)))
        {
            out.push(format!("role {name} is not used by any grant"));
        }
        for g in &self.grants {
            let writes = g
                .roles
                .iter()
                .flat_map(|r| &self.roles[r].entries)
                .any(|e| CmdletKind::of(&e.name).is_write());
            if writes && g.budgets.writes == 0 {
                out.push(format!(
                    "grant {} (line {}) allows write cmdlets but its writes budget is 0 (the default): set [grant.budgets] writes",
                    g.id, g.line
                ));
            }
            out.extend(self.filter_warnings(g));
            if let Matcher::AdHoc { principal } = &g.matcher {
                let entries = g.roles.iter().flat_map(|r| &self.roles[r].entries);
                out.extend(crate::grant::ad_hoc_warnings(
                    &g.id, g.line, principal, entries,
                ));
            }
        }
        for d in self
            .deny
            .iter()
            .filter(|d| d.when.is_some() && d.identity.is_none())
        {
            out.push(format!(
                "{} (line {}) judges {} of {} as the text a guest sends: if it names a mailbox, recipient or address Exchange resolves, set identity = true so the broker judges the object (another spelling of it would pass); set identity = false to say it does not",
                d.rule_id(),
                d.line,
                d.parameter.as_deref().unwrap_or_default(),
                d.cmdlet
            ));
        }
        out
    }

    /// Parameters that can read around output shaping: a `filter_properties` listing a property
    /// the grant's shaping hides answers, as a predicate, for what the guest may not see; so do
    /// the parameters in [`READS_AROUND_SHAPING`].
    fn filter_warnings(&self, g: &GrantDef) -> Vec<String> {
        let entries: Vec<CmdletEntry> = g
            .roles
            .iter()
            .flat_map(|r| self.roles[r].entries.iter().cloned())
            .collect();
        let mut out = Vec::new();
        for entry in &entries {
            let Some(visible) = shaped_output(&entries, &entry.name) else {
                continue;
            };
            for (name, constraint) in &entry.parameters {
                if READS_AROUND_SHAPING.iter().any(|r| names::same(r, name)) {
                    out.push(format!(
                        "grant {} (line {}): {} shapes its output but allows {name}, which answers for properties the shaping hides (the order of results, or which objects match a search): leave it out, or accept that the shaping can be read around",
                        g.id, g.line, entry.id
                    ));
                }
                let Some(listed) = constraint.filter_properties() else {
                    continue;
                };
                let hidden: Vec<&str> = listed
                    .properties
                    .iter()
                    .filter(|p| !visible.iter().any(|v| v.eq_ignore_ascii_case(p)))
                    .map(String::as_str)
                    .collect();
                if !hidden.is_empty() {
                    out.push(format!(
                        "grant {} (line {}): {} in {} may filter on {}, which its output shaping hides: the filter can be read around the shaping (it answers which objects match)",
                        g.id,
                        g.line,
                        name,
                        entry.id,
                        hidden.join(", ")
                    ));
                }
            }
        }
        out
    }

    /// The principal an inline script of `who` runs as: pinned (its text's sha256 has a
    /// `script_inline_sha256` grant) when one is, else ad hoc, under `who`'s
    /// `script_inline = "any"` grant if there is one. A pinned grant wins: it was written for
    /// exactly this text. With neither, the pinned form (its refusal names the hash to pin).
    pub fn inline_principal(&self, who: &str, source: &str) -> Principal {
        let pinned = Principal::inline_script(source);
        if self.find_grant(&pinned).is_ok() || !self.has_ad_hoc_grant(who) {
            pinned
        } else {
            Principal::ad_hoc(who, source)
        }
    }

    /// Whether `who` has an ad hoc grant (`script_inline = "any"`).
    pub fn has_ad_hoc_grant(&self, who: &str) -> bool {
        self.grants.iter().any(|g| {
            matches!(&g.matcher, Matcher::AdHoc { principal } if crate::grant::same_ad_hoc_principal(principal, who))
        })
    }

    /// Where the policy came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Things that are legal but probably not meant (unused roles, writes with no budget).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A serialisable overview for `warden policy check`.
    pub fn summary(&self) -> PolicySummary {
        PolicySummary {
            origin: self.origin.display().to_string(),
            roles: self
                .roles
                .iter()
                .map(|(name, role)| RoleSummary {
                    name: name.clone(),
                    description: role.description.clone(),
                    cmdlets: role.entries.iter().map(|e| e.name.clone()).collect(),
                })
                .collect(),
            grants: self
                .grants
                .iter()
                .map(|g| GrantSummary {
                    id: g.id.clone(),
                    line: g.line,
                    principal: describe_matcher(&g.matcher),
                    ad_hoc: matches!(g.matcher, Matcher::AdHoc { .. }),
                    roles: g.roles.clone(),
                    budgets: g.budgets.clone(),
                    tenants: g.tenants.as_ref().map(ToString::to_string),
                })
                .collect(),
            deny: self
                .deny
                .iter()
                .map(|d| DenySummary {
                    rule: d.rule_id(),
                    line: d.line,
                    cmdlet: d.cmdlet.clone(),
                    parameter: d.parameter.clone(),
                })
                .collect(),
            tasks: self.tasks.iter().map(crate::task::Task::summary).collect(),
            warnings: self.warnings.clone(),
        }
    }

    /// The grant for `principal`, narrowed to what `declared` asks for when the plugin
    /// declares its needs. Refused (with the rule and why) when no grant names the principal
    /// or the pinned hash differs.
    pub fn grant_for(
        &self,
        principal: &Principal,
        declared: Option<&Declaration>,
    ) -> Result<Grant, Denial> {
        self.grant_for_tenant(principal, declared, None)
    }

    /// What `principal`'s grant gives, whatever tenants it is limited to: for tools that
    /// explain a grant (`policy explain`, `policy pin`, `plugin inspect`), never for a run
    /// (the broker asks [`Policy::shared_grant_for_tenant`]).
    pub fn grant_for_any_tenant(
        &self,
        principal: &Principal,
        declared: Option<&Declaration>,
    ) -> Result<Grant, Denial> {
        Ok(self.grant_of(self.find_grant(principal)?, declared))
    }

    /// [`Policy::grant_for`] for a run against `tenant` (a config profile and its tags). A
    /// grant with `tenants` applies only to a tenant they select; a run for another tenant,
    /// or for none named (`None`: no profile, or its tenant overridden), is refused, saying
    /// which grant, which tenant and what to change.
    pub fn grant_for_tenant(
        &self,
        principal: &Principal,
        declared: Option<&Declaration>,
        tenant: Option<&Candidate>,
    ) -> Result<Grant, Denial> {
        let def = self.select_grant(principal, tenant)?;
        Ok(self.grant_of(def, declared))
    }

    /// [`Policy::grant_for_tenant`] for a run: the same decision (the principal matched, its
    /// signature and tenant checked on every call), but the grant itself is built once per
    /// (grant, declaration) and shared by the runs that get it. A shared grant's kept
    /// refusal reasons are shared too; they depend on nothing else.
    pub fn shared_grant_for_tenant(
        &self,
        principal: &Principal,
        declared: Option<&Declaration>,
        tenant: Option<&Candidate>,
    ) -> Result<Arc<Grant>, Denial> {
        let def = self.select_grant(principal, tenant)?;
        let mut shared = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = shared
            .iter()
            .find(|kept| kept.grant.id() == def.id && kept.declared.as_ref() == declared)
        {
            return Ok(Arc::clone(&kept.grant));
        }
        let grant = Arc::new(self.grant_of(def, declared));
        if shared.len() == SHARED_GRANTS {
            shared.remove(0);
        }
        shared.push(SharedGrant {
            declared: declared.cloned(),
            grant: Arc::clone(&grant),
        });
        Ok(grant)
    }

    /// The grant definition that applies to `principal` in a run for `tenant`.
    fn select_grant(
        &self,
        principal: &Principal,
        tenant: Option<&Candidate>,
    ) -> Result<&GrantDef, Denial> {
        let def = self.find_grant(principal)?;
        if let Some(selector) = &def.tenants {
            let refused = |reason: String| Denial {
                rule: format!("grant:{}/tenants", def.id),
                reason,
            };
            match tenant {
                None => {
                    return Err(refused(format!(
                        "grant {} (line {}) applies to tenants [{selector}] only, and this run \
                         names no tenant profile (none chosen, its tenant overridden by \
                         --tenant-id, or a profile without its own tenant_id); run it with \
                         --tenant NAME (a profile it selects, with its tenant_id), or in a fleet \
                         over them",
                        def.id, def.line
                    )));
                }
                Some(tenant) if !selector.selects(tenant) => {
                    return Err(refused(format!(
                        "grant {} (line {}) applies to tenants [{selector}] only, not to tenant \
                         {}; if it should, add \"{}\" (or one of its tags) to the grant's tenants \
                         in {}",
                        def.id,
                        def.line,
                        names::for_record(&tenant.name),
                        names::for_record(&tenant.name),
                        self.origin.display()
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(def)
    }

    /// `def`'s grant, narrowed to what `declared` asks for.
    fn grant_of(&self, def: &GrantDef, declared: Option<&Declaration>) -> Grant {
        let mut entries = Vec::new();
        let mut undeclared = Vec::new();
        for role in &def.roles {
            for entry in &self.roles[role].entries {
                match declared {
                    None => entries.push(entry.clone()),
                    Some(d) => match d.parameters(&entry.name) {
                        None => undeclared.push((role.clone(), entry.name.clone())),
                        Some(_) => entries.push(entry.narrowed_to(d)),
                    },
                }
            }
        }
        Grant::new(
            def.id.clone(),
            def.budgets.clone(),
            entries,
            undeclared,
            Arc::clone(&self.deny),
            Arc::clone(&self.marked),
            self.max_parameter_bytes,
        )
        .with_declaration(declared)
    }

    /// Whether any grant is limited to tenants (`tenants = [...]`): only then does a run's
    /// tenant matter to the policy.
    pub fn limits_tenants(&self) -> bool {
        self.grants.iter().any(|def| def.tenants.is_some())
    }

    /// Checks every grant's `tenants` against the config's tenant profiles: a name or tag no
    /// profile has is an error naming it (a typo must not quietly narrow a grant to nothing),
    /// and so is a list that selects no tenant. Called wherever the config is loaded with the
    /// policy; a policy never checked this way still refuses every tenant its grants do not
    /// select.
    pub fn check_tenants(&self, tenants: &[Candidate]) -> Result<(), PolicyError> {
        for def in &self.grants {
            let Some(selector) = &def.tenants else {
                continue;
            };
            let reason = match selector.resolve(tenants) {
                Ok(_) => continue,
                Err(PlanError::UnknownTenant { name, known }) => format!(
                    "grant {}: tenants names {name:?}, which is no [tenants.NAME] profile of the \
                     config; use one of: {known}",
                    def.id
                ),
                Err(PlanError::UnknownTag { tag, known }) => format!(
                    "grant {}: tenants names tag {tag:?}, which no profile of the config has; \
                     use one of: {known}",
                    def.id
                ),
                Err(PlanError::Empty { .. }) => format!(
                    "grant {}: tenants [{selector}] leaves no tenant of the config",
                    def.id
                ),
                Err(other) => format!("grant {}: tenants: {other}", def.id),
            };
            return Err(PolicyError::Invalid {
                path: self.origin.clone(),
                line: def.line,
                reason,
            });
        }
        Ok(())
    }

    /// The grant with id `id`, whole (no declaration narrows it): what a task's forms judge
    /// values with.
    pub(crate) fn grant_by_id(&self, id: &str) -> Option<(&GrantDef, Grant)> {
        let def = self.grants.iter().find(|g| g.id == id)?;
        let entries = def
            .roles
            .iter()
            .flat_map(|r| self.roles[r].entries.iter().cloned())
            .collect();
        let grant = Grant::new(
            def.id.clone(),
            def.budgets.clone(),
            entries,
            Vec::new(),
            Arc::clone(&self.deny),
            Arc::clone(&self.marked),
            self.max_parameter_bytes,
        );
        Some((def, grant))
    }

    fn find_grant(&self, principal: &Principal) -> Result<&GrantDef, Denial> {
        let mut near_miss: Option<&GrantDef> = None;
        for g in &self.grants {
            match (&g.matcher, principal) {
                (
                    Matcher::Plugin {
                        name,
                        sha256,
                        signed_by,
                    },
                    Principal::Plugin {
                        name: n,
                        sha256: h,
                        signature,
                    },
                ) if name == n => {
                    if sha256.as_ref().is_some_and(|s| !s.eq_ignore_ascii_case(h)) {
                        near_miss = Some(g);
                        continue;
                    }
                    if let Some(signed_by) = signed_by {
                        self.check_signature(signed_by, signature.as_ref())
                            .map_err(|refusal| Denial {
                                rule: format!("grant:{}/signed_by", g.id),
                                reason: format!(
                                    "grant {} (line {}) needs {} signed by {}: {refusal}",
                                    g.id,
                                    g.line,
                                    describe_matcher(&g.matcher),
                                    signed_by.trust
                                ),
                            })?;
                    }
                    return Ok(g);
                }
                (
                    Matcher::ScriptFile { path, sha256 },
                    Principal::Script {
                        path: Some(p),
                        sha256: h,
                    },
                ) => {
                    let same_path = same_file(path, p);
                    if same_path && sha256.eq_ignore_ascii_case(h) {
                        return Ok(g);
                    }
                    if same_path {
                        near_miss = Some(g);
                    }
                }
                (
                    Matcher::ScriptInline { sha256 },
                    Principal::Script {
                        path: None,
                        sha256: h,
                    },
                ) if sha256.eq_ignore_ascii_case(h) => {
                    return Ok(g);
                }
                (Matcher::AdHoc { principal: who }, Principal::AdHoc { principal: p, .. })
                    if crate::grant::same_ad_hoc_principal(who, p) =>
                {
                    return Ok(g);
                }
                _ => {}
            }
        }
        Err(match near_miss {
            Some(g) => Denial {
                rule: format!("grant:{}", g.id),
                reason: format!(
                    "grant {} (line {}) pins {} to sha256 {}, but this one hashes to {}; if the change is intended, re-pin it: `warden policy pin {} FILE`",
                    g.id,
                    g.line,
                    describe_matcher(&g.matcher),
                    matcher_sha(&g.matcher),
                    principal.sha256(),
                    self.origin.display()
                ),
            },
            None => Denial {
                rule: "default-deny".into(),
                reason: format!(
                    "no grant in {} names {principal}{}",
                    self.origin.display(),
                    match principal {
                        Principal::Script { path: None, .. } | Principal::AdHoc { .. } => format!(
                            "; pin it (script_inline_sha256 = \"{}\"), or give who types it an ad hoc grant (principal = \"{}\", script_inline = \"any\", read-only roles)",
                            principal.sha256(),
                            crate::OPERATOR
                        ),
                        _ => String::new(),
                    }
                ),
            },
        })
    }
}

impl Policy {
    /// Every public key the policy trusts (revoked ones included, so a signature by a revoked
    /// key is recognised as such): what a plugin's signature is checked against.
    pub fn trusted_keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = Vec::new();
        for key in self.trust.values().flat_map(|t| &t.keys) {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// Whether a key id is revoked: by any `[trust.*]` entry, for every publisher (a key
    /// revoked as one publisher's is not trusted as another's).
    pub fn is_revoked(&self, id: &str) -> bool {
        self.trust
            .values()
            .flat_map(|t| &t.revoked)
            .any(|r| r.as_str() == id)
    }

    /// Of the keys a plugin verified under, the one a grant with this trust counts: the first
    /// that is the publisher's and not revoked.
    fn counted_signer<'a>(
        trust: &Trust,
        key_ids: &'a [String],
        revoked: impl Fn(&str) -> bool,
    ) -> Option<&'a String> {
        key_ids.iter().find(|id| {
            trust
                .keys
                .iter()
                .any(|k| k.key_id().as_str() == id.as_str())
                && !revoked(id)
        })
    }

    /// Of the keys a plugin named `plugin` verified under, the one its `signed_by` grant
    /// counts (the first that is its publisher's and not revoked); `None` when no such grant
    /// or key. What the audit names as the signer.
    pub fn signer_for<'a>(&self, plugin: &str, key_ids: &'a [String]) -> Option<&'a String> {
        self.grants.iter().find_map(|g| match &g.matcher {
            Matcher::Plugin {
                name,
                signed_by: Some(s),
                ..
            } if name == plugin => {
                Self::counted_signer(&self.trust[&s.trust], key_ids, |id| self.is_revoked(id))
            }
            _ => None,
        })
    }

    /// Whether a plugin's checked signature satisfies a grant's `signed_by` (and
    /// `min_version`). The trust name was checked at load.
    fn check_signature(
        &self,
        signed_by: &SignedBy,
        signature: Option<&PluginSignature>,
    ) -> Result<(), SignatureRefusal> {
        let trust = &self.trust[&signed_by.trust];
        let publisher = &signed_by.trust;
        let Some(signature) = signature else {
            return Err(SignatureRefusal::NotChecked);
        };
        let revoked = |id: &str| self.is_revoked(id);
        match &signature.verdict {
            SignatureVerdict::Unsigned => return Err(SignatureRefusal::Unsigned),
            SignatureVerdict::Invalid { reason } => {
                return Err(SignatureRefusal::Invalid {
                    reason: reason.clone(),
                });
            }
            SignatureVerdict::Tampered { key_id } => {
                return Err(SignatureRefusal::Tampered {
                    key_id: key_id.clone(),
                });
            }
            SignatureVerdict::OtherKey { key_ids } => {
                return Err(match key_ids.iter().find(|id| revoked(id)) {
                    Some(id) => SignatureRefusal::Revoked {
                        key_id: id.clone(),
                        publisher: publisher.clone(),
                    },
                    None => SignatureRefusal::OtherKey {
                        key_ids: key_ids.clone(),
                        publisher: publisher.clone(),
                    },
                });
            }
            SignatureVerdict::Verified { key_ids } => {
                if Self::counted_signer(trust, key_ids, revoked).is_none() {
                    // Name the publisher's revoked key if it signed, else the others.
                    let of_publisher = |id: &&String| {
                        trust
                            .keys
                            .iter()
                            .any(|k| k.key_id().as_str() == id.as_str())
                    };
                    return Err(
                        match key_ids
                            .iter()
                            .filter(of_publisher)
                            .chain(key_ids)
                            .find(|id| revoked(id))
                        {
                            Some(id) => SignatureRefusal::Revoked {
                                key_id: id.clone(),
                                publisher: publisher.clone(),
                            },
                            None => SignatureRefusal::OtherKey {
                                key_ids: key_ids.clone(),
                                publisher: publisher.clone(),
                            },
                        },
                    );
                }
            }
        }
        if !signature.name_signed {
            return Err(SignatureRefusal::NameNotSigned);
        }
        let Some(min) = &signed_by.min_version else {
            return Ok(());
        };
        let Some(stated) = &signature.version else {
            return Err(SignatureRefusal::NoVersion { min: min.clone() });
        };
        match semver::Version::parse(stated.trim()) {
            Ok(version) if version >= *min => Ok(()),
            Ok(version) => Err(SignatureRefusal::Older {
                version: version.to_string(),
                min: min.clone(),
            }),
            Err(_) => Err(SignatureRefusal::UnreadableVersion {
                version: stated.chars().take(64).collect(),
                min: min.clone(),
            }),
        }
    }

    /// What the grant named `plugin` needs of a signature, for `warden plugin inspect`: the
    /// `[trust.*]` name and the minimum version, if its grant has `signed_by`.
    pub fn signature_requirement(&self, plugin: &str) -> Option<(String, Option<String>)> {
        self.grants.iter().find_map(|g| match &g.matcher {
            Matcher::Plugin {
                name,
                signed_by: Some(s),
                ..
            } if name == plugin => Some((
                s.trust.clone(),
                s.min_version.as_ref().map(ToString::to_string),
            )),
            _ => None,
        })
    }
}

impl GrantDef {
    fn signed_by(&self) -> Option<&SignedBy> {
        match &self.matcher {
            Matcher::Plugin { signed_by, .. } => signed_by.as_ref(),
            _ => None,
        }
    }
}

/// Why a plugin's signature does not satisfy its grant's `signed_by`: one case each, and the
/// refusal (a run's decision line, `plugin inspect`) says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    /// It carries no signature.
    #[error("it is unsigned; sign it with the publisher's key (`warden plugin sign`)")]
    Unsigned,
    /// Its signature was not checked (the caller gave no signature check).
    #[error("its signature was not checked")]
    NotChecked,
    /// Signed by a key that is not one of the publisher's.
    #[error(
        "it is signed by another key ({}), not one of {publisher}'s; if {publisher} has a new key, add it to [trust.{publisher}]",
        if key_ids.is_empty() { "no key id".to_owned() } else { key_ids.join(", ") }
    )]
    OtherKey {
        /// The key ids its signature names.
        key_ids: Vec<String>,
        /// The `[trust.*]` name.
        publisher: String,
    },
    /// Signed by a revoked key (revoked by any `[trust.*]` entry: revocation is policy-wide).
    #[error(
        "it is signed by key {key_id}, which the policy revokes (checked for [trust.{publisher}]); the publisher must sign it with a current key"
    )]
    Revoked {
        /// The revoked key.
        key_id: String,
        /// The `[trust.*]` name.
        publisher: String,
    },
    /// A trusted key's signature that no longer matches its bytes.
    #[error(
        "it was changed after it was signed (key {key_id}'s signature does not match its bytes); get the publisher's build again"
    )]
    Tampered {
        /// The key the signature names.
        key_id: String,
    },
    /// Its name comes from its file name, which the signature does not cover: renamed, a
    /// signed plugin could take another plugin's grant.
    #[error(
        "its name comes from the file name, not a signed manifest: build it with the SDK's manifest (warden-sdk's `manifest!`) and sign it again"
    )]
    NameNotSigned,
    /// A signature that cannot be read.
    #[error("its signature is refused: {reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// Its manifest's version is older than the grant's `min_version`.
    #[error(
        "its manifest says version {version}, older than the grant's min_version {min}: an older signed build is not accepted"
    )]
    Older {
        /// Its version.
        version: String,
        /// The grant's minimum.
        min: semver::Version,
    },
    /// The grant has `min_version` but the manifest states no version.
    #[error(
        "its manifest states no version, and the grant needs min_version {min}; build it with warden-sdk's manifest (it records the crate version)"
    )]
    NoVersion {
        /// The grant's minimum.
        min: semver::Version,
    },
    /// The manifest's version is not semver.
    #[error(
        "its manifest's version {version:?} is not a semantic version (the grant needs min_version {min})"
    )]
    UnreadableVersion {
        /// What it states (cut).
        version: String,
        /// The grant's minimum.
        min: semver::Version,
    },
}

fn compile_trust(name: &str, raw: &RawTrust) -> Result<Trust, String> {
    let texts: Vec<&String> = raw.public_key.iter().chain(&raw.public_keys).collect();
    if texts.is_empty() {
        return Err(format!(
            "trust {name} lists no key: give public_key = \"…\" (the .pub file `warden plugin keygen` wrote) or public_keys = [\"…\"]"
        ));
    }
    let mut keys: Vec<PublicKey> = Vec::new();
    for text in texts {
        let key = PublicKey::parse(text).map_err(|e| format!("trust {name}: public key: {e}"))?;
        if keys.contains(&key) {
            return Err(format!(
                "trust {name}: key {} is listed twice",
                key.key_id()
            ));
        }
        keys.push(key);
    }
    let mut revoked = Vec::new();
    for id in &raw.revoked {
        revoked.push(KeyId::parse(id).map_err(|e| format!("trust {name}: revoked: {e}"))?);
    }
    Ok(Trust { keys, revoked })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn matcher_sha(m: &Matcher) -> &str {
    match m {
        Matcher::Plugin { sha256, .. } => sha256.as_deref().unwrap_or("any"),
        Matcher::ScriptFile { sha256, .. } | Matcher::ScriptInline { sha256 } => sha256,
        Matcher::AdHoc { .. } => "any",
    }
}

fn same_principal(a: &Matcher, b: &Matcher) -> bool {
    match (a, b) {
        (Matcher::Plugin { name: x, .. }, Matcher::Plugin { name: y, .. }) => x == y,
        (Matcher::ScriptFile { path: x, .. }, Matcher::ScriptFile { path: y, .. }) => x == y,
        (Matcher::ScriptInline { sha256: x }, Matcher::ScriptInline { sha256: y }) => x == y,
        (Matcher::AdHoc { principal: x }, Matcher::AdHoc { principal: y }) => {
            crate::grant::same_ad_hoc_principal(x, y)
        }
        _ => false,
    }
}

fn describe_matcher(m: &Matcher) -> String {
    match m {
        Matcher::Plugin { name, .. } => format!("plugin {name}"),
        Matcher::ScriptFile { path, .. } => format!("script {}", path.display()),
        Matcher::ScriptInline { sha256 } => format!("inline script {}", &sha256[..12]),
        Matcher::AdHoc { principal } => format!("ad hoc: any inline script {principal} types"),
    }
}

/// Every entry for one cmdlet names the same endpoint, so no grant (whatever roles it combines)
/// can send one cmdlet to both services.
fn one_endpoint_per_cmdlet(roles: &BTreeMap<String, Role>) -> Result<(), String> {
    let entries: Vec<&CmdletEntry> = roles.values().flat_map(|r| r.entries.iter()).collect();
    for (i, a) in entries.iter().enumerate() {
        if let Some(b) = entries[..i]
            .iter()
            .find(|b| names::same(&b.name, &a.name) && b.endpoint != a.endpoint)
        {
            return Err(format!(
                "{} sends {} to {} but {} sends it to {}\n  fix: give every entry for {} the same endpoint",
                b.id, b.name, b.endpoint, a.id, a.endpoint, a.name
            ));
        }
    }
    Ok(())
}

fn compile_role(
    loader: &Loader<'_>,
    role: &str,
    raw: &RawRole,
) -> Result<Vec<CmdletEntry>, PolicyError> {
    let mut entries: Vec<CmdletEntry> = Vec::new();
    for spanned in &raw.cmdlet {
        let at = spanned.span().start;
        let c = spanned.get_ref();
        names::validate_cmdlet(&c.name).map_err(|e| loader.err(at, e))?;
        let mut parameters: Vec<(String, Constraint)> = Vec::new();
        for (pname, constraint) in &c.parameters {
            let pat = constraint.span().start;
            names::validate_parameter(pname).map_err(|e| loader.err(pat, e))?;
            if parameters.iter().any(|(p, _)| names::same(p, pname)) {
                return Err(loader.err(
                    pat,
                    format!("parameter {pname} is listed twice (names are case-insensitive)"),
                ));
            }
            if c.max_result_size.is_some() && names::same(pname, "ResultSize") {
                return Err(loader.err(pat, "ResultSize is bounded by max_result_size; do not also list it under parameters"));
            }
            let compiled = constraint
                .get_ref()
                .compile(false, Usage::Allow)
                .map_err(|e| loader.err(pat, format!("{}/{pname}: {e}", c.name)))?;
            // Exchange takes it encrypted (warden_vocab::secure): granting a guest a password
            // to set is a choice the policy author writes down, never a side effect.
            if let Some((full, _)) = warden_vocab::secure_parameter_named(&c.name, pname)
                && !full.eq_ignore_ascii_case(pname)
            {
                return Err(loader.err(
                    pat,
                    format!("{}/{pname} is an abbreviation of the SecureString parameter {full}, which Exchange's binder would take as {full}: write it as {full} (with sensitive = true)", c.name),
                ));
            }
            if warden_vocab::secure_parameter(&c.name, pname).is_some() && !compiled.sensitive {
                return Err(loader.err(
                    pat,
                    format!("{}/{pname} is a SecureString parameter (Exchange takes it encrypted): granting it is an explicit opt-in; write sensitive = true in its constraint, e.g. {pname} = {{ length = [12, 128], sensitive = true }}", c.name),
                ));
            }
            parameters.push((pname.clone(), compiled));
        }
        if c.max_result_size == Some(0) || c.max_result_size.is_some_and(|n| n > i64::MAX as u64) {
            return Err(loader.err(at, "max_result_size must be at least 1"));
        }
        let target = match &c.target {
            Some(t) => {
                names::validate_parameter(&t.parameter)
                    .map_err(|e| loader.err(at, format!("target: {e}")))?;
                if !parameters.iter().any(|(p, _)| names::same(p, &t.parameter)) {
                    return Err(loader.err(at, format!("target.parameter {} is not listed under parameters, so no call could name a target", t.parameter)));
                }
                if t.domains.is_empty() && t.identities.is_empty() {
                    return Err(loader.err(at, "target needs domains or identities (or both)"));
                }
                let mut domains = Vec::new();
                for d in &t.domains {
                    let lowered = d.to_ascii_lowercase();
                    if lowered.is_empty()
                        || !lowered
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-')
                    {
                        return Err(loader.err(
                            at,
                            format!("target domain {d:?} is not a plain ASCII DNS name"),
                        ));
                    }
                    domains.push(lowered);
                }
                Some(TargetScope {
                    parameter: t.parameter.clone(),
                    domains,
                    identities: t.identities.clone(),
                })
            }
            None => None,
        };
        let output = match &c.output {
            Some(props) => {
                for p in props {
                    if p.is_empty()
                        || !p.chars().all(|ch| {
                            ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == '@'
                        })
                    {
                        return Err(loader.err(
                            at,
                            format!("output property {p:?} is not a plain property name"),
                        ));
                    }
                }
                Some(props.clone())
            }
            None => None,
        };
        let endpoint = c.endpoint.unwrap_or_default();
        if let Some(known) = Endpoint::known_for(&c.name)
            && known != endpoint
        {
            return Err(loader.err(
                at,
                format!(
                    "{} is a {} cmdlet but this entry sends it to {endpoint}\n  fix: {} to the entry (each service runs its own cmdlets, with its own token)",
                    c.name,
                    known.service(),
                    match known {
                        Endpoint::Exchange => "remove endpoint = \"compliance\" from the entry (or set endpoint = \"exchange\")".to_owned(),
                        Endpoint::Compliance => format!("add endpoint = \"{known}\""),
                    }
                ),
            ));
        }
        let nth = entries
            .iter()
            .filter(|e| names::same(&e.name, &c.name))
            .count();
        let id = if nth == 0 {
            format!("role:{role}/{}", c.name)
        } else {
            format!("role:{role}/{}#{}", c.name, nth + 1)
        };
        entries.push(CmdletEntry {
            id,
            role: role.to_owned(),
            name: c.name.clone(),
            parameters,
            undeclared: Vec::new(),
            output,
            max_result_size: c.max_result_size,
            target,
            endpoint,
        });
    }
    Ok(entries)
}

fn compile_grant(
    g: &RawGrant,
    base: &Path,
    roles: &BTreeMap<String, Role>,
    trust: &BTreeMap<String, Trust>,
) -> Result<GrantDef, String> {
    if g.plugin.is_none() && (g.signed_by.is_some() || g.min_version.is_some()) {
        return Err("signed_by and min_version are for plugin grants only".into());
    }
    let ad_hoc = crate::grant::ad_hoc_matcher(g.principal.as_deref(), g.script_inline.as_deref())?;
    let pinned = g.plugin.is_some()
        || g.script.is_some()
        || g.script_inline_sha256.is_some()
        || g.sha256.is_some();
    let matcher = match (ad_hoc, &g.plugin, &g.script, &g.script_inline_sha256) {
        (Some(_), ..) if pinned => {
            return Err(
                "an ad hoc grant (script_inline = \"any\") names its principal only: leave out plugin, script, sha256 and script_inline_sha256".into(),
            );
        }
        (Some(principal), ..) => Matcher::AdHoc { principal },
        (None, Some(name), None, None) => {
            if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!("plugin name {name:?} is empty or has whitespace"));
            }
            let signed_by = match (&g.signed_by, &g.min_version) {
                (None, Some(_)) => {
                    return Err("min_version needs signed_by: an unsigned plugin's version is only its own claim (a sha256 pin already fixes the build)".into());
                }
                (None, None) => None,
                (Some(publisher), min) => {
                    if !trust.contains_key(publisher) {
                        let known: Vec<&str> = trust.keys().map(String::as_str).collect();
                        return Err(format!(
                            "signed_by = {publisher:?} names no [trust.{publisher}] entry{}",
                            if known.is_empty() {
                                " (the policy has none: add one with the publisher's public key)"
                                    .to_owned()
                            } else {
                                format!(" (the policy trusts {})", known.join(", "))
                            }
                        ));
                    }
                    let min_version = min
                        .as_deref()
                        .map(|v| {
                            semver::Version::parse(v).map_err(|e| {
                                format!("min_version {v:?} is not a semantic version (like \"1.2.0\"): {e}")
                            })
                        })
                        .transpose()?;
                    Some(SignedBy {
                        trust: publisher.clone(),
                        min_version,
                    })
                }
            };
            let sha256 = g
                .sha256
                .as_deref()
                .map(|sha| valid_sha256("sha256", sha))
                .transpose()?;
            if sha256.is_none() && signed_by.is_none() {
                return Err("a plugin grant needs sha256 = \"…\" (the component's hash), signed_by = \"…\" (a [trust.*] publisher), or both".into());
            }
            Matcher::Plugin {
                name: name.clone(),
                sha256,
                signed_by,
            }
        }
        (None, None, Some(path), None) => {
            let sha = g
                .sha256
                .as_deref()
                .ok_or("a script grant needs sha256 = \"…\" (the script's hash)")?;
            Matcher::ScriptFile {
                path: base.join(path),
                sha256: valid_sha256("sha256", sha)?,
            }
        }
        (None, None, None, Some(sha)) => {
            if g.sha256.is_some() {
                return Err(
                    "an inline-script grant takes script_inline_sha256 only, not sha256".into(),
                );
            }
            Matcher::ScriptInline {
                sha256: valid_sha256("script_inline_sha256", sha)?,
            }
        }
        _ => {
            return Err(
                "a grant names exactly one of plugin, script, script_inline_sha256 or script_inline = \"any\" (with principal)".into(),
            );
        }
    };
    if g.roles.is_empty() {
        return Err("a grant needs roles = [\"…\"]".into());
    }
    for (i, role) in g.roles.iter().enumerate() {
        if !roles.contains_key(role) {
            return Err(format!("role {role:?} is not defined under [roles]"));
        }
        if g.roles[..i].contains(role) {
            return Err(format!("role {role:?} is listed twice"));
        }
    }
    if matches!(matcher, Matcher::AdHoc { .. }) {
        crate::grant::ad_hoc_refuses_sensitive(g.roles.iter().flat_map(|r| &roles[r].entries))?;
    }
    let id = match &g.id {
        Some(id) => {
            valid_role_name(id).map_err(|e| e.replace("role name", "grant id"))?;
            id.clone()
        }
        None => match &matcher {
            Matcher::Plugin { name, .. } => name.clone(),
            Matcher::ScriptFile { path, .. } => path.display().to_string(),
            Matcher::ScriptInline { sha256 } => format!("inline-{}", &sha256[..12]),
            Matcher::AdHoc { principal } => format!("ad-hoc-{}", crate::grant::id_part(principal)),
        },
    };
    Ok(GrantDef {
        id,
        line: 0,
        matcher,
        roles: g.roles.clone(),
        budgets: Budgets::from_raw(&g.budgets)?,
        tenants: g.tenants.as_deref().map(tenant_selector).transpose()?,
    })
}

/// A grant's `tenants`: each item one `--tenants` term (`contoso`, `tag:eu`, `!tag:lab`).
fn tenant_selector(terms: &[String]) -> Result<Selector, String> {
    if terms.is_empty() {
        return Err(
            "tenants = [] covers no tenant; list profile names or `tag:TAG`, or leave tenants \
             out for every tenant"
                .into(),
        );
    }
    if let Some(term) = terms.iter().find(|t| t.contains(',')) {
        return Err(format!(
            "tenants: {term:?} holds a comma; give one name or `tag:TAG` per item"
        ));
    }
    terms
        .join(",")
        .parse()
        .map_err(|error: warden_fleet::PlanError| match error {
            warden_fleet::PlanError::BadSelector { reason, .. } => format!(
                "tenants: {reason}; give profile names, `tag:TAG`, and `!NAME` or `!tag:TAG` to \
                 leave some out"
            ),
            other => format!("tenants: {other}"),
        })
}

impl Budgets {
    fn from_raw(b: &RawBudgets) -> Result<Budgets, String> {
        let d = Budgets::default();
        let mib = |m: u64| m.checked_mul(1024 * 1024).ok_or("memory_mib is too large");
        Ok(Budgets {
            calls: b.calls.unwrap_or(d.calls),
            writes: b.writes.unwrap_or(d.writes),
            objects: b.objects.unwrap_or(d.objects),
            output_bytes: b.output_bytes.unwrap_or(d.output_bytes),
            wall_clock: b
                .wall_clock_secs
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.wall_clock),
            memory_bytes: match b.memory_mib {
                Some(m) => mib(m)?,
                None => d.memory_bytes,
            },
            cpu: b
                .cpu_secs
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.cpu),
        })
    }
}

/// `warden policy check`'s view of a policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    /// The file.
    pub origin: String,
    /// Roles by name, each with its cmdlets.
    pub roles: Vec<RoleSummary>,
    /// Grants in file order.
    pub grants: Vec<GrantSummary>,
    /// Deny rules in file order.
    pub deny: Vec<DenySummary>,
    /// Delegated tasks in file order.
    pub tasks: Vec<crate::task::TaskSummary>,
    /// Legal but suspicious things.
    pub warnings: Vec<String>,
}

/// One role in a [`PolicySummary`].
#[derive(Debug, Clone, Serialize)]
pub struct RoleSummary {
    /// Role name.
    pub name: String,
    /// What the operator wrote about it.
    pub description: Option<String>,
    /// Cmdlets it allows (one per entry).
    pub cmdlets: Vec<String>,
}

/// One grant in a [`PolicySummary`].
#[derive(Debug, Clone, Serialize)]
pub struct GrantSummary {
    /// Grant id.
    pub id: String,
    /// Line in the policy file.
    pub line: usize,
    /// Who it is for.
    pub principal: String,
    /// True for an ad hoc grant: any inline script its principal types runs under it.
    pub ad_hoc: bool,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its budgets (defaults filled in).
    pub budgets: Budgets,
    /// The tenants it is limited to, as a `--tenants` selector; `None`: every tenant.
    pub tenants: Option<String>,
}

/// One deny rule in a [`PolicySummary`].
#[derive(Debug, Clone, Serialize)]
pub struct DenySummary {
    /// Rule id (`deny[N]`, 0-based in file order).
    pub rule: String,
    /// Line in the policy file.
    pub line: usize,
    /// The cmdlet it refuses.
    pub cmdlet: String,
    /// The parameter it looks at, if any.
    pub parameter: Option<String>,
}
