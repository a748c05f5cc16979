//! Delegated tasks (`[[task]]`): a named run of a script or plugin a grant pins, which the
//! people the task names may start (through `warden serve`), with parameters whose form field
//! and validation come from the policy's own constraints, and an approval when it is asked for.
//!
//! - A parameter names `cmdlet` and `parameter`: the role entry of the task's grant that lists
//!   them gives its field ([`FormField`]) and judges its values with the very code the broker
//!   judges a call with ([`Task::check_values`]), so a form and a call never disagree.
//! - Delegates and approvers are `user:` (UPN, compared ASCII-case-insensitively, or object
//!   id, compared exactly), `group:` (object id, or display name) or `role:` (an app role
//!   value) entries ([`Person`] is who signed in).
//! - `approval = "writes"` asks for an approval exactly when the grant's roles allow a write
//!   cmdlet (by its verb, [`warden_vocab::CmdletKind`]); nobody approves their own run.

use crate::grant::{CmdletEntry, DenyRules, Grant};
use crate::policy::{GrantDef, Matcher, PolicyError, line_of, valid_role_name};
use crate::{Policy, names, text};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;
use warden_vocab::CmdletKind;

/// How long a run waits for an approval when the task does not say.
pub const DEFAULT_APPROVAL_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// The longest `approval_expires_after` a task may set: a request older than that is stale.
pub const MAX_APPROVAL_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Who signed in, as the service's sign-in says: what delegates and approvers are matched on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Entra object id (`oid`).
    pub oid: String,
    /// User principal name (`preferred_username`).
    pub upn: String,
    /// Object ids of the groups the person is in.
    pub groups: Vec<String>,
    /// Display names of those groups, where the service knows them.
    pub group_names: Vec<String>,
    /// App role values assigned to the person for the service (`roles`).
    pub roles: Vec<String>,
}

/// When a run of a task waits for an approver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Never: it runs when asked.
    Never,
    /// When the grant's roles allow any write cmdlet.
    Writes,
    /// Always.
    Always,
}

impl Approval {
    fn parse(text: &str) -> Option<Approval> {
        match text {
            "never" => Some(Approval::Never),
            "writes" => Some(Approval::Writes),
            "always" => Some(Approval::Always),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Approval::Never => "never",
            Approval::Writes => "writes",
            Approval::Always => "always",
        }
    }
}

/// A task parameter's form field, derived from the constraint of the parameter it maps to.
/// A hint for the page only: [`Task::check_values`] judges the values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FormField {
    /// One of these values (`one_of`, or `equals` as a single option).
    Choice {
        /// The values accepted, with their JSON types.
        options: Vec<Value>,
    },
    /// `true` or `false` (`boolean = true`).
    Checkbox,
    /// Text, with the `length` and `pattern` the constraint gives (the pattern is the policy's
    /// Rust regex, anchored at both ends, as written).
    Text {
        /// Fewest characters.
        min_length: Option<u64>,
        /// Most characters.
        max_length: Option<u64>,
        /// The pattern the whole text must match.
        pattern: Option<String>,
    },
    /// An integer in `min..=max` (`range`, or `max_result_size` for `ResultSize`).
    Integer {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
    },
    /// An address in one of these domains (`domain`).
    Address {
        /// The domains accepted.
        domains: Vec<String>,
    },
}

impl FormField {
    /// The JSON value a form's text stands for in this field: an integer for [`FormField::Integer`]
    /// when it parses, the option whose text it is for [`FormField::Choice`], `true`/`false` for
    /// a checkbox's `on`/`true`/`false`; else the text itself (which the check then refuses
    /// with the type it expected).
    pub fn value_from_text(&self, text: &str) -> Value {
        match self {
            FormField::Integer { .. } => text
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(text.to_owned())),
            FormField::Checkbox => match text {
                "on" | "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => Value::String(other.to_owned()),
            },
            FormField::Choice { options } => options
                .iter()
                .find(|o| option_text(o) == text)
                .cloned()
                .unwrap_or_else(|| Value::String(text.to_owned())),
            FormField::Text { .. } | FormField::Address { .. } => Value::String(text.to_owned()),
        }
    }
}

/// How an option of a [`FormField::Choice`] reads on a page: text as is, other values as JSON.
pub fn option_text(option: &Value) -> String {
    match option {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One parameter of a task: a guest argument `name=value` whose value is judged as the value
/// of `cmdlet`'s `parameter`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskParameter {
    /// The argument's name: the guest receives `name=value`.
    pub name: String,
    /// The form field's label.
    pub label: String,
    /// More words for the form, if the policy gives them.
    pub help: Option<String>,
    /// Whether a run needs a value (default true).
    pub required: bool,
    /// The value is a secret the page must not show back (the audit keyed-hashes it).
    pub sensitive: bool,
    /// The cmdlet whose constraint judges the value.
    pub cmdlet: String,
    /// The parameter of that cmdlet, in the policy's spelling.
    pub parameter: String,
    /// The form field, derived from the constraint.
    pub field: FormField,
    /// Which of the task's calls judges it (an index into `Task::calls`).
    #[serde(skip)]
    call: usize,
}

/// One cmdlet the task's parameters name, with the role entries of the grant that list every
/// task parameter for it (the broker admits a call when one entry admits all of it).
#[derive(Debug, Clone)]
struct TaskCall {
    cmdlet: String,
    entries: Vec<CmdletEntry>,
}

/// What a task runs: the guest its grant pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRuns {
    /// A Rhai script (the grant's `script`, relative to the policy file).
    Script {
        /// The script file.
        path: PathBuf,
    },
    /// A plugin (the grant's `plugin`), from the task's `component` file.
    Plugin {
        /// The plugin's name, as its grant names it.
        name: String,
        /// The component (`.wasm`), relative to the policy file.
        component: PathBuf,
    },
}

/// A delegate or approver entry as the policy writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    UserUpn(String),
    UserObjectId(String),
    GroupObjectId(String),
    GroupName(String),
    Role(String),
}

impl Member {
    fn parse(entry: &str) -> Result<Member, String> {
        let Some((prefix, name)) = entry.split_once(':') else {
            return Err(format!(
                "{:?} has no prefix: write user:UPN (or user:OBJECT-ID), group:OBJECT-ID (or group:NAME) or role:APP-ROLE",
                names::for_record(entry)
            ));
        };
        if name.is_empty()
            || name.len() > 256
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "{:?}: the name after {prefix}: must be 1–256 characters without spaces",
                names::for_record(entry)
            ));
        }
        let guid = |id: &str| -> Result<bool, String> {
            if !is_guid(id) {
                return Ok(false);
            }
            if id.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(format!(
                    "{:?}: object ids are compared exactly, and Entra's tokens carry them in lowercase: write {}",
                    names::for_record(entry),
                    id.to_ascii_lowercase()
                ));
            }
            Ok(true)
        };
        match prefix {
            "user" if guid(name)? => Ok(Member::UserObjectId(name.to_owned())),
            "user" if name.contains('@') => Ok(Member::UserUpn(name.to_owned())),
            "user" => Err(format!(
                "{:?} is neither a UPN (name@domain) nor an object id (a GUID)",
                names::for_record(entry)
            )),
            "group" if guid(name)? => Ok(Member::GroupObjectId(name.to_owned())),
            "group" => Ok(Member::GroupName(name.to_owned())),
            "role" => Ok(Member::Role(name.to_owned())),
            _ => Err(format!(
                "{:?}: the prefix must be user:, group: or role:",
                names::for_record(entry)
            )),
        }
    }

    /// Whether `who` is this entry. Empty claims never match.
    fn admits(&self, who: &Person) -> bool {
        match self {
            Member::UserUpn(upn) => !who.upn.is_empty() && who.upn.eq_ignore_ascii_case(upn),
            Member::UserObjectId(oid) => who.oid == *oid,
            Member::GroupObjectId(id) => who.groups.iter().any(|g| g == id),
            Member::GroupName(name) => who.group_names.iter().any(|g| g.eq_ignore_ascii_case(name)),
            Member::Role(role) => who.roles.iter().any(|r| r == role),
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::UserUpn(n) | Member::UserObjectId(n) => write!(f, "user:{n}"),
            Member::GroupObjectId(n) | Member::GroupName(n) => write!(f, "group:{n}"),
            Member::Role(n) => write!(f, "role:{n}"),
        }
    }
}

fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A `[[task]]`, compiled and checked against the policy's grants and roles.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// The task's id (1–64 ASCII letters, digits, `-` or `_`).
    pub id: String,
    /// Its title.
    pub title: String,
    /// What it does, for people.
    pub description: String,
    /// The `[[grant]]` it runs under.
    pub grant: String,
    /// When a run waits for an approver.
    pub approval: Approval,
    /// Whether a run waits for an approver (from `approval` and `writes`).
    #[serde(rename = "needs_approval")]
    approval_needed: bool,
    /// How long a request waits for an approver before it expires.
    #[serde(serialize_with = "secs")]
    pub approval_expires_after: Duration,
    /// Its parameters, in the order the guest receives them.
    pub parameters: Vec<TaskParameter>,
    /// The grant's roles allow a write cmdlet.
    pub writes: bool,
    /// What it runs.
    #[serde(skip)]
    pub runs: TaskRuns,
    #[serde(skip)]
    line: usize,
    #[serde(skip)]
    calls: Vec<TaskCall>,
    #[serde(skip)]
    deny: Arc<DenyRules>,
    #[serde(skip)]
    delegates: Vec<Member>,
    #[serde(skip)]
    approvers: Vec<Member>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// A value a task refused: the parameter (or the unknown name, cut) and why. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The task parameter's name.
    pub parameter: String,
    /// What is wrong, for the form.
    pub message: String,
    /// Whether a deny rule refused the value: the message then names the rule and its line,
    /// which is for the operator, not a delegate.
    #[serde(skip)]
    pub by_deny_rule: bool,
}

impl Task {
    /// Whether a run of this task waits for an approver.
    pub fn needs_approval(&self) -> bool {
        self.approval_needed
    }

    /// The line of its `[[task]]` in the policy file.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The delegate entries, as written.
    pub fn delegates(&self) -> Vec<String> {
        self.delegates.iter().map(ToString::to_string).collect()
    }

    /// The approver entries, as written.
    pub fn approvers(&self) -> Vec<String> {
        self.approvers.iter().map(ToString::to_string).collect()
    }

    /// The delegate entry that lets `who` run it, if any.
    fn delegate_entry(&self, who: &Person) -> Option<&Member> {
        self.delegates.iter().find(|m| m.admits(who))
    }

    /// The approver entry that lets `who` approve it, if any.
    fn approver_entry(&self, who: &Person) -> Option<&Member> {
        self.approvers.iter().find(|m| m.admits(who))
    }

    /// Checks the values of a run and gives the guest's arguments (`name=value`, in the task's
    /// parameter order; text as is, numbers and booleans as JSON). Refuses a name the task does
    /// not have, a required parameter left out (`null` counts as left out), and a value its
    /// role entry or a deny rule on it refuses — judged by the broker's own checks, so a value
    /// the form accepts is one the call's constraint accepts. Messages never quote a value.
    pub fn check_values(
        &self,
        values: &Map<String, Value>,
    ) -> Result<Vec<String>, Vec<FieldError>> {
        let mut errors = Vec::new();
        for name in values.keys() {
            if !self.parameters.iter().any(|p| p.name == *name) {
                errors.push(FieldError {
                    parameter: names::for_record(name),
                    message: format!(
                        "task {} has no parameter {}{}",
                        self.id,
                        names::for_record(name),
                        self.parameter_list()
                    ),
                    by_deny_rule: false,
                });
            }
        }
        let given = |p: &TaskParameter| values.get(&p.name).filter(|v| !v.is_null());
        for p in &self.parameters {
            match given(p) {
                None if p.required => errors.push(FieldError {
                    parameter: p.name.clone(),
                    message: format!("{} is required", p.label),
                    by_deny_rule: false,
                }),
                None => {}
                Some(value) => {
                    if let Err((why, by_deny_rule)) = self.check_one(p, value) {
                        errors.push(FieldError {
                            parameter: p.name.clone(),
                            message: names::cut(&why, crate::MAX_REASON_BYTES),
                            by_deny_rule,
                        });
                    }
                }
            }
        }
        // The broker admits a call when ONE entry admits all of it: the values of one call
        // must pass together in one entry.
        if errors.is_empty() {
            for (index, call) in self.calls.iter().enumerate() {
                let ours: Vec<(&TaskParameter, &Value)> = self
                    .parameters
                    .iter()
                    .filter(|p| p.call == index)
                    .filter_map(|p| given(p).map(|v| (p, v)))
                    .collect();
                let together = call.entries.iter().any(|entry| {
                    ours.iter()
                        .all(|(p, v)| entry.admits_one(&p.parameter, v).is_ok())
                });
                if !together && let Some((p, _)) = ours.first() {
                    errors.push(FieldError {
                        parameter: p.name.clone(),
                        message: format!(
                            "no single role entry for {} accepts these values together",
                            call.cmdlet
                        ),
                        by_deny_rule: false,
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(self
            .parameters
            .iter()
            .filter_map(|p| {
                given(p).map(|v| match v {
                    Value::String(s) => format!("{}={s}", p.name),
                    other => format!("{}={other}", p.name),
                })
            })
            .collect())
    }

    /// One value: the broker's string rules, a role entry for the call that admits it, and no
    /// deny rule on the parameter matching it.
    /// `Err((why, by_deny_rule))`.
    fn check_one(&self, p: &TaskParameter, value: &Value) -> Result<(), (String, bool)> {
        text::check_value(&p.parameter, value).map_err(|why| (why, false))?;
        let call = &self.calls[p.call];
        let mut first_refusal = None;
        for entry in &call.entries {
            match entry.admits_one(&p.parameter, value) {
                Ok(()) => {
                    first_refusal = None;
                    break;
                }
                Err((_, why)) => {
                    first_refusal.get_or_insert(why);
                }
            }
        }
        if let Some(why) = first_refusal {
            return Err((why, false));
        }
        let alone: Map<String, Value> =
            [(p.parameter.clone(), value.clone())].into_iter().collect();
        if let Some(rule) = self
            .deny
            .iter()
            .find(|d| d.parameter.is_some() && d.matches(&call.cmdlet, &alone))
        {
            return Err((rule.why(), true));
        }
        Ok(())
    }

    fn parameter_list(&self) -> String {
        if self.parameters.is_empty() {
            " (it takes none)".to_owned()
        } else {
            let list: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
            format!(" (its parameters: {})", list.join(", "))
        }
    }

    /// The values a submitted form stands for: each of the task's parameters read from its
    /// field's text ([`FormField::value_from_text`]); an unticked checkbox is `false`, an empty
    /// text left out. Form fields the task does not have (a CSRF token, say) are ignored here;
    /// [`Task::check_values`] judges the rest.
    pub fn values_from_form<'a>(
        &self,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Map<String, Value> {
        let fields: Vec<(&str, &str)> = fields.into_iter().collect();
        let mut values = Map::new();
        for p in &self.parameters {
            let text = fields.iter().find(|(n, _)| *n == p.name).map(|(_, t)| *t);
            match (text, &p.field) {
                (None, FormField::Checkbox) => {
                    values.insert(p.name.clone(), Value::Bool(false));
                }
                (None, _) | (Some(""), _) => {}
                (Some(text), field) => {
                    values.insert(p.name.clone(), field.value_from_text(text));
                }
            }
        }
        values
    }

    /// `warden policy check`'s view of the task.
    pub fn summary(&self) -> TaskSummary {
        TaskSummary {
            id: self.id.clone(),
            line: self.line,
            title: self.title.clone(),
            grant: self.grant.clone(),
            approval: self.approval,
            needs_approval: self.approval_needed,
            writes: self.writes,
            delegates: self.delegates(),
            approvers: self.approvers(),
            parameters: self
                .parameters
                .iter()
                .map(|p| {
                    format!(
                        "{} → {}/{} ({}{})",
                        p.name,
                        p.cmdlet,
                        p.parameter,
                        field_kind(&p.field),
                        if p.required { ", required" } else { "" }
                    )
                })
                .collect(),
        }
    }
}

fn field_kind(field: &FormField) -> &'static str {
    match field {
        FormField::Choice { .. } => "choice",
        FormField::Checkbox => "checkbox",
        FormField::Text { .. } => "text",
        FormField::Integer { .. } => "integer",
        FormField::Address { .. } => "address",
    }
}

/// One task in a [`crate::PolicySummary`].
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    /// Task id.
    pub id: String,
    /// Line in the policy file.
    pub line: usize,
    /// Its title.
    pub title: String,
    /// Its grant.
    pub grant: String,
    /// Its approval mode.
    pub approval: Approval,
    /// Whether a run waits for an approver.
    pub needs_approval: bool,
    /// The grant's roles allow a write cmdlet.
    pub writes: bool,
    /// Delegate entries.
    pub delegates: Vec<String>,
    /// Approver entries.
    pub approvers: Vec<String>,
    /// Each parameter: `name → Cmdlet/Parameter (field kind[, required])`.
    pub parameters: Vec<String>,
}

/// What the policy says about one person and one task: may they run it, does a run wait for an
/// approval, may they approve one (never their own).
#[derive(Debug, Clone, Serialize)]
pub struct TaskVerdict {
    /// The task asked about.
    pub task: String,
    /// Whether the policy has it.
    pub exists: bool,
    /// The delegate entry that lets the person run it (`None`: they may not).
    pub delegate_as: Option<String>,
    /// Whether a run waits for an approver.
    pub needs_approval: bool,
    /// The approver entry that lets the person approve others' runs (`None`: they may not).
    pub approver_as: Option<String>,
    /// The answer in words.
    pub explanation: String,
}

impl TaskVerdict {
    /// Whether the person may run the task.
    pub fn may_run(&self) -> bool {
        self.delegate_as.is_some()
    }
}

impl Policy {
    /// Every task, in file order.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The tasks `who` is a delegate of, in file order.
    pub fn tasks_for(&self, who: &Person) -> Vec<&Task> {
        self.tasks
            .iter()
            .filter(|t| t.delegate_entry(who).is_some())
            .collect()
    }

    /// Task `id` if `who` is one of its delegates; `None` alike when there is no such task and
    /// when `who` may not run it, so a caller's answer tells nothing about what exists.
    pub fn task_for(&self, who: &Person, id: &str) -> Option<&Task> {
        self.tasks
            .iter()
            .find(|t| t.id == id && t.delegate_entry(who).is_some())
    }

    /// Whether `who` is one of `task`'s approvers. Being a delegate is not enough.
    pub fn may_approve(&self, who: &Person, task: &Task) -> bool {
        task.approver_entry(who).is_some()
    }

    /// Whether `who` may decide a run of `task` that `requested_by` (an object id) asked for:
    /// an approver, and never the person who asked (an empty id is nobody's, so it refuses).
    pub fn may_approve_run(&self, who: &Person, task: &Task, requested_by: &str) -> bool {
        !who.oid.is_empty()
            && !requested_by.is_empty()
            && who.oid != requested_by
            && self.may_approve(who, task)
    }

    /// The answer to "may `who` run task `id`, and approve it?" (for `warden policy explain`).
    pub fn task_verdict(&self, who: &Person, id: &str) -> TaskVerdict {
        let Some(task) = self.tasks.iter().find(|t| t.id == id) else {
            let known: Vec<&str> = self.tasks.iter().map(|t| t.id.as_str()).collect();
            return TaskVerdict {
                task: id.to_owned(),
                exists: false,
                delegate_as: None,
                needs_approval: false,
                approver_as: None,
                explanation: format!(
                    "no task {} in {} (its tasks: {})",
                    names::for_record(id),
                    self.origin().display(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            };
        };
        let delegate = task.delegate_entry(who).map(ToString::to_string);
        let approver = task.approver_entry(who).map(ToString::to_string);
        let mut lines = vec![format!(
            "task {} (line {}): {:?} runs {} under grant {}",
            task.id,
            task.line,
            task.title,
            match &task.runs {
                TaskRuns::Script { path } => format!("script {}", path.display()),
                TaskRuns::Plugin { name, component } =>
                    format!("plugin {name} ({})", component.display()),
            },
            task.grant
        )];
        lines.push(match &delegate {
            Some(entry) => format!("may run it: yes, as delegate {entry}"),
            None => format!(
                "may run it: no, no delegate entry names this person (delegates: {})",
                list_or_none(&task.delegates())
            ),
        });
        lines.push(format!(
            "approval: {} — {}",
            task.approval.name(),
            match (task.approval, task.writes) {
                (Approval::Always, _) => "every run waits for an approver".to_owned(),
                (Approval::Writes, true) =>
                    "its grant's roles allow writes, so every run waits for an approver".to_owned(),
                (Approval::Writes, false) =>
                    "its grant's roles allow no write, so runs start at once".to_owned(),
                (Approval::Never, _) => "runs start at once".to_owned(),
            }
        ));
        lines.push(match &approver {
            Some(entry) => {
                format!("may approve others' runs: yes, as approver {entry} (never their own)")
            }
            None => format!(
                "may approve: no, no approver entry names this person (approvers: {})",
                list_or_none(&task.approvers())
            ),
        });
        TaskVerdict {
            task: task.id.clone(),
            exists: true,
            delegate_as: delegate,
            needs_approval: task.approval_needed,
            approver_as: approver,
            explanation: lines.join("\n"),
        }
    }

    /// [`Policy::task_verdict`] in words.
    pub fn explain_task(&self, who: &Person, id: &str) -> String {
        self.task_verdict(who, id).explanation
    }
}

fn list_or_none(entries: &[String]) -> String {
    if entries.is_empty() {
        "none".to_owned()
    } else {
        entries.join(", ")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: Option<String>,
    title: Option<String>,
    description: Option<String>,
    grant: Option<String>,
    component: Option<String>,
    approval: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    delegates: Vec<String>,
    approval_expires_after: Option<String>,
    #[serde(default)]
    parameter: Vec<RawTaskParameter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskParameter {
    name: Option<String>,
    label: Option<String>,
    help: Option<String>,
    cmdlet: Option<String>,
    parameter: Option<String>,
    required: Option<bool>,
}

/// `"30m"`, `"24h"`, `"7d"`: a whole number and one unit (s, m, h, d), within 1 minute and
/// [`MAX_APPROVAL_EXPIRY`].
fn parse_expiry(text: &str) -> Result<Duration, String> {
    let fix = "write a whole number and a unit, like \"30m\", \"24h\" or \"7d\" (at least 1m, at most 30d)";
    let unit = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86400,
        _ => return Err(format!("{:?} has no unit: {fix}", names::for_record(text))),
    };
    let number = &text[..text.len() - 1];
    let secs = number
        .parse::<u64>()
        .ok()
        .filter(|_| number.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{:?} is not a duration: {fix}", names::for_record(text)))?;
    let duration = Duration::from_secs(secs);
    if duration < Duration::from_secs(60) || duration > MAX_APPROVAL_EXPIRY {
        return Err(format!("{text:?} is out of bounds: {fix}"));
    }
    Ok(duration)
}

/// A guest argument name: an ASCII letter, then letters, digits or `_`, at most 64.
fn valid_argument_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Short text a person reads (a title, a label): no control characters, bounded.
fn valid_label(what: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() || text.len() > 256 || text.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be 1–256 characters of text without control characters"
        ));
    }
    Ok(())
}

/// Compiles every `[[task]]` against the loaded policy: the tasks, and the warnings about them.
pub(crate) fn compile(
    raw: &[Spanned<toml::Table>],
    text: &str,
    origin: &Path,
    policy: &Policy,
) -> Result<(Vec<Task>, Vec<String>), PolicyError> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut warnings = Vec::new();
    for (index, spanned) in raw.iter().enumerate() {
        let line = line_of(text, spanned.span().start);
        let table = spanned.get_ref();
        let named = table
            .get("id")
            .and_then(|v| v.as_str())
            .map(names::for_record)
            .unwrap_or_else(|| format!("#{}", index + 1));
        let err = |reason: String| PolicyError::Invalid {
            path: origin.to_owned(),
            line,
            reason: format!("task {named}: {reason}"),
        };
        let raw: RawTask = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| err(e.message().trim_end().to_owned()))?;
        let task = compile_task(&raw, line, origin, policy, &mut warnings).map_err(err)?;
        if let Some(other) = tasks.iter().find(|t| t.id == task.id) {
            return Err(err(format!(
                "id {:?} is used twice (first at line {}); give each task its own id",
                task.id, other.line
            )));
        }
        tasks.push(task);
    }
    Ok((tasks, warnings))
}

fn compile_task(
    raw: &RawTask,
    line: usize,
    origin: &Path,
    policy: &Policy,
    warnings: &mut Vec<String>,
) -> Result<Task, String> {
    let id = raw.id.clone().ok_or(
        "id is missing: give id = \"…\" (1–64 ASCII letters, digits, '-' or '_'; the page and the API name the task by it)",
    )?;
    valid_role_name(&id).map_err(|e| format!("id: {}", e.replace("role name", "task id")))?;
    let title = raw
        .title
        .clone()
        .ok_or("title is missing: give title = \"…\" (what the page shows)")?;
    valid_label("title", &title)?;
    let description = raw.description.clone().unwrap_or_default();
    if description.chars().any(|c| c.is_control() && c != '\n') {
        return Err("description must not hold control characters (line breaks are fine)".into());
    }
    let grant_id = raw
        .grant
        .clone()
        .ok_or("grant is missing: give grant = \"<a [[grant]] id>\" (it pins what the task runs and gives its roles)")?;
    let Some((def, grant)) = policy.grant_by_id(&grant_id) else {
        let known: Vec<&str> = policy.grants.iter().map(|g| g.id.as_str()).collect();
        return Err(format!(
            "grant = {:?} names no [[grant]] (the policy's grants: {}); fix: name one of them, or add a grant with that id",
            names::for_record(&grant_id),
            list_or_none(&known.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        ));
    };
    // Serve's broker knows no tenant a grant could judge: such a task would be offered, then
    // refused at every run. Refused here, where the policy is written.
    if let Some(selector) = &def.tenants {
        return Err(format!(
            "grant = {:?} is limited to tenants [{selector}], and a task's runs name no tenant \
             profile (`warden serve` acts on the one tenant it was started for): every run \
             would be refused; fix: give the task a grant without tenants",
            names::for_record(&grant_id)
        ));
    }
    let runs = runs_of(def, raw.component.as_deref(), origin)?;
    let approval_text = raw
        .approval
        .as_deref()
        .ok_or("approval is missing: give approval = \"never\", \"writes\" (when the grant's roles allow a write) or \"always\"")?;
    let approval = Approval::parse(approval_text).ok_or_else(|| {
        format!(
            "approval = {:?}: write \"never\", \"writes\" (when the grant's roles allow a write) or \"always\"",
            names::for_record(approval_text)
        )
    })?;
    let approval_expires_after = match &raw.approval_expires_after {
        Some(text) => parse_expiry(text).map_err(|e| format!("approval_expires_after = {e}"))?,
        None => DEFAULT_APPROVAL_EXPIRY,
    };
    let members = |key: &str, entries: &[String]| -> Result<Vec<Member>, String> {
        let mut out: Vec<Member> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let member = Member::parse(entry).map_err(|e| format!("{key}[{i}] = {e}"))?;
            if !out.contains(&member) {
                out.push(member);
            }
        }
        Ok(out)
    };
    let delegates = members("delegates", &raw.delegates)?;
    let approvers = members("approvers", &raw.approvers)?;
    let write_entry = def
        .roles
        .iter()
        .flat_map(|r| &policy.roles[r].entries)
        .find(|e| CmdletKind::of(&e.name).is_write());
    let writes = write_entry.is_some();
    let approval_needed = match approval {
        Approval::Never => false,
        Approval::Writes => writes,
        Approval::Always => true,
    };
    if approval_needed && approvers.is_empty() {
        return Err(format!(
            "approval = \"{}\" needs an approver{}, but approvers is empty; fix: list who may approve, e.g. approvers = [\"user:lead@contoso.com\"]",
            approval.name(),
            match write_entry {
                Some(e) if approval == Approval::Writes => format!(
                    " (grant {grant_id}'s roles allow the write {}, {})",
                    e.name, e.id
                ),
                _ => String::new(),
            }
        ));
    }
    let (parameters, calls) = compile_parameters(&raw.parameter, &grant_id, &grant)?;

    // Legal, probably not meant.
    let at = format!("task {id} (line {line})");
    if let (Approval::Never, Some(e)) = (approval, write_entry) {
        warnings.push(format!(
            "{at} has approval = \"never\" but grant {grant_id}'s roles allow the write {} ({}): its delegates change the tenant with nobody's approval; use approval = \"writes\" unless that is meant",
            e.name, e.id
        ));
    }
    if !approval_needed && !approvers.is_empty() {
        warnings.push(format!(
            "{at} lists approvers but no run of it waits for one (approval = \"{}\"{})",
            approval.name(),
            if approval == Approval::Writes {
                ", and its grant's roles allow no write"
            } else {
                ""
            }
        ));
    }
    if delegates.is_empty() {
        warnings.push(format!(
            "{at} has no delegates: nobody can run it; list delegates = [\"user:…\", \"group:…\"]"
        ));
    }
    for member in delegates.iter().chain(&approvers) {
        if let Member::GroupName(name) = member {
            warnings.push(format!(
                "{at} names group:{name} by its display name, which Entra does not keep unique (and may let users create groups with any name): name it by object id, group:<GUID>"
            ));
        }
    }
    for call in &calls {
        if let Some(rule) = grant
            .deny
            .iter()
            .find(|d| d.parameter.is_none() && names::same(&d.cmdlet, &call.cmdlet))
        {
            warnings.push(format!(
                "{at} passes values to {}, which {} refuses whatever its parameters: no run of it can make that call",
                call.cmdlet,
                rule.rule_id()
            ));
        }
    }
    Ok(Task {
        id,
        title,
        description,
        grant: grant_id,
        approval,
        approval_needed,
        approval_expires_after,
        parameters,
        writes,
        runs,
        line,
        calls,
        deny: Arc::clone(&grant.deny),
        delegates,
        approvers,
    })
}

/// What the grant pins, as a task runs it: a script file, or a plugin from the task's
/// `component` file. A grant that pins no file cannot be a task's.
fn runs_of(def: &GrantDef, component: Option<&str>, origin: &Path) -> Result<TaskRuns, String> {
    let base = origin.parent().unwrap_or(Path::new("."));
    match (&def.matcher, component) {
        (Matcher::ScriptFile { path, .. }, None) => Ok(TaskRuns::Script { path: path.clone() }),
        (Matcher::ScriptFile { .. }, Some(_)) => Err(format!(
            "component is for a plugin grant, and grant {} pins a script (the task runs that script); leave component out",
            def.id
        )),
        (Matcher::Plugin { name, .. }, Some(component)) => Ok(TaskRuns::Plugin {
            name: name.clone(),
            component: base.join(component),
        }),
        (Matcher::Plugin { name, .. }, None) => Err(format!(
            "grant {} pins plugin {name}, and the task must say where its component is: give component = \"path/to/{name}.wasm\" (relative to the policy file; its hash is checked against the grant at every run)",
            def.id
        )),
        (Matcher::ScriptInline { .. } | Matcher::AdHoc { .. }, _) => Err(format!(
            "grant {} pins no file (an inline script or ad hoc text), so a task cannot run it: name a grant with script = \"…\" or plugin = \"…\"",
            def.id
        )),
    }
}

fn compile_parameters(
    raw: &[RawTaskParameter],
    grant_id: &str,
    grant: &Grant,
) -> Result<(Vec<TaskParameter>, Vec<TaskCall>), String> {
    // First pass: names, and which cmdlet/parameter each maps to.
    let mut mapped: Vec<(String, &RawTaskParameter, String, String)> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let at = |what: &str| format!("parameter #{} {what}", i + 1);
        let name = p.name.clone().ok_or_else(|| {
            at("has no name: give name = \"…\" (the guest receives it as the argument name=value)")
        })?;
        if !valid_argument_name(&name) {
            return Err(format!(
                "parameter {:?}: a name is an ASCII letter, then letters, digits or '_' (at most 64)",
                names::for_record(&name)
            ));
        }
        if mapped.iter().any(|(n, ..)| n.eq_ignore_ascii_case(&name)) {
            return Err(format!(
                "parameter {name} is listed twice (names are case-insensitive here)"
            ));
        }
        let cmdlet = p.cmdlet.clone().ok_or_else(|| {
            format!("parameter {name} has no cmdlet: give cmdlet = \"Verb-Noun\" and parameter = \"…\" (whose constraint judges its values)")
        })?;
        names::validate_cmdlet(&cmdlet).map_err(|e| format!("parameter {name}: cmdlet: {e}"))?;
        let parameter = p.parameter.clone().ok_or_else(|| {
            format!("parameter {name} has no parameter: give parameter = \"…\" (the {cmdlet} parameter whose constraint judges its values)")
        })?;
        names::validate_parameter(&parameter)
            .map_err(|e| format!("parameter {name}: parameter: {e}"))?;
        if let Some(label) = &p.label {
            valid_label(&format!("parameter {name}: label"), label)?;
        }
        if let Some(help) = &p.help {
            valid_label(&format!("parameter {name}: help"), help)?;
        }
        mapped.push((name, p, cmdlet, parameter));
    }
    // The calls: for each cmdlet, the entries that list every task parameter naming it.
    let mut calls: Vec<TaskCall> = Vec::new();
    for (name, _, cmdlet, _) in &mapped {
        if calls.iter().any(|c| names::same(&c.cmdlet, cmdlet)) {
            continue;
        }
        let wanted: Vec<&str> = mapped
            .iter()
            .filter(|(_, _, c, _)| names::same(c, cmdlet))
            .map(|(_, _, _, p)| p.as_str())
            .collect();
        let for_cmdlet: Vec<&CmdletEntry> = grant
            .entries
            .iter()
            .filter(|e| names::same(&e.name, cmdlet))
            .collect();
        if for_cmdlet.is_empty() {
            let mut granted: Vec<String> = Vec::new();
            for e in &grant.entries {
                if !granted.iter().any(|g| names::same(g, &e.name)) {
                    granted.push(e.name.clone());
                }
            }
            return Err(format!(
                "parameter {name} names {cmdlet}, which no role of grant {grant_id} allows (it allows {}); fix: name a cmdlet the grant allows, or add {cmdlet} to one of its roles",
                list_or_none(&granted)
            ));
        }
        let lists = |e: &CmdletEntry, p: &str| {
            e.parameters.iter().any(|(q, _)| names::same(q, p))
                || (e.max_result_size.is_some() && names::same(p, "ResultSize"))
        };
        if let Some(missing) = wanted
            .iter()
            .find(|p| !for_cmdlet.iter().any(|e| lists(e, p)))
        {
            let owner = mapped
                .iter()
                .find(|(_, _, c, p)| names::same(c, cmdlet) && p == missing)
                .map(|(n, ..)| n.as_str())
                .unwrap_or(name);
            return Err(format!(
                "parameter {owner} names {cmdlet} {missing}, which no role entry of grant {grant_id} lists for {cmdlet}; fix: name a parameter the entry lists, or add {missing} to it"
            ));
        }
        let entries: Vec<CmdletEntry> = for_cmdlet
            .into_iter()
            .filter(|e| wanted.iter().all(|p| lists(e, p)))
            .cloned()
            .collect();
        if entries.is_empty() {
            return Err(format!(
                "no single role entry of grant {grant_id} lists {} for {cmdlet} together, so no call passing them all could be allowed (a call is allowed by one entry; roles never merge); fix: list them in one entry",
                wanted.join(", ")
            ));
        }
        calls.push(TaskCall {
            cmdlet: entries[0].name.clone(),
            entries,
        });
    }
    let mut parameters = Vec::new();
    for (name, p, cmdlet, parameter) in mapped {
        let call = calls
            .iter()
            .position(|c| names::same(&c.cmdlet, &cmdlet))
            .expect("every cmdlet has its call");
        let entry = &calls[call].entries[0];
        let (spelled, field, sensitive) = match entry
            .parameters
            .iter()
            .find(|(q, _)| names::same(q, &parameter))
        {
            Some((spelled, constraint)) => (
                spelled.clone(),
                constraint.form_field().map_err(|e| {
                    format!(
                        "parameter {name}: {}/{spelled} ({}): {e}",
                        entry.name, entry.id
                    )
                })?,
                constraint.sensitive || names::sensitive_by_name(spelled),
            ),
            // `ResultSize` bounded by the entry's max_result_size.
            None => (
                "ResultSize".to_owned(),
                FormField::Integer {
                    min: 1,
                    max: entry.max_result_size.unwrap_or(1) as i64,
                },
                false,
            ),
        };
        parameters.push(TaskParameter {
            label: p.label.clone().unwrap_or_else(|| name.clone()),
            name,
            help: p.help.clone(),
            required: p.required.unwrap_or(true),
            sensitive,
            cmdlet: calls[call].cmdlet.clone(),
            parameter: spelled,
            field,
            call,
        });
    }
    Ok((parameters, calls))
}
