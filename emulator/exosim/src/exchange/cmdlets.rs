//! The cmdlets: each is data (name, parameters with their types, which are mandatory, whether it
//! writes and whether it asks for confirmation) plus a function over the tenant's [`Org`].
//!
//! Binding is strict, like the service and unlike an interactive shell: parameter names match
//! exactly (case-insensitively) with no PowerShell prefix abbreviation; values must have the
//! type the parameter takes (booleans for switches, `Unlimited` or a number for `ResultSize`,
//! hashtables with `Add`/`Remove` for multi-valued properties); OData annotations
//! (`@odata.type`, `<Param>@odata.type`) are ignored. Failures carry the exception class and text
//! of docs/protocol/exo-protocol.md §1.8.

use serde_json::{Map, Value};

use super::filter::Filter;
use super::obj::{self, BE_SERVER, Obj, Prop};
use super::store::{
    Kinds, MailboxKind, MailboxPermission, Org, Recipient, RecipientPermission, Resolve,
    format_guid,
};

/// A terminating cmdlet error, as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExoError {
    pub status: u16,
    /// `error.code`: `BadRequest`, `NotFound`.
    pub code: &'static str,
    /// First part of `details[0].message`.
    pub error_id: String,
    /// Full exception class name.
    pub class: &'static str,
    pub text: String,
}

const PBE: &str = "System.Management.Automation.ParameterBindingException";
const NOT_FOUND: &str = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException";

impl ExoError {
    fn bad(error_id: &str, class: &'static str, text: String) -> Self {
        ExoError {
            status: 400,
            code: "BadRequest",
            error_id: error_id.to_owned(),
            class,
            text,
        }
    }

    /// The short class name, for `x-ExceptionType`.
    pub(crate) fn short_class(&self) -> &'static str {
        self.class.rsplit('.').next().unwrap_or(self.class)
    }

    /// `<ErrorId>|<class>|<text>`.
    pub(crate) fn details_message(&self) -> String {
        format!("{}|{}|{}", self.error_id, self.class, self.text)
    }

    /// The 500 the service answers for a transient storage failure (the module retries those).
    pub(crate) fn transient() -> Self {
        ExoError {
            status: 500,
            code: "InternalServerError",
            error_id: "StorageTransientException".to_owned(),
            class: "Microsoft.Exchange.Data.Storage.StorageTransientException",
            text: "The operation couldn't be completed because of a transient storage error (StorageTransientException). Please try again.".to_owned(),
        }
    }

    /// The REST endpoint's refusal of `$true`/`$false` in filter parameter `name` (see
    /// [`super::filter::boolean_variable_at`]). The live text is not recorded publicly: this is
    /// the binding error an unparseable filter gets, a guess.
    pub(crate) fn filter_variable(name: &str, filter: &str, pos: usize) -> Self {
        let error = super::filter::boolean_variable_error(filter, pos);
        Self::bad(
            "ParameterBindingFailed",
            PBE,
            format!(
                "Cannot bind parameter '{name}' to the target. Exception setting \"{name}\": \"{}\"",
                error.0
            ),
        )
    }

    pub(crate) fn command_not_found(name: &str) -> Self {
        Self::bad(
            "CommandNotFoundException",
            "System.Management.Automation.CommandNotFoundException",
            format!(
                "The term '{name}' is not recognized as a name of a cmdlet, function, script file, or executable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
            ),
        )
    }

    fn parameter_not_found(name: &str) -> Self {
        Self::bad(
            "NamedParameterNotFound",
            PBE,
            format!("A parameter cannot be found that matches parameter name '{name}'."),
        )
    }

    pub(crate) fn transformation(param: &str, detail: &str) -> Self {
        Self::bad(
            "ParameterArgumentTransformationError",
            PBE,
            format!("Cannot process argument transformation on parameter '{param}'. {detail}"),
        )
    }

    fn missing(names: &[&str]) -> Self {
        Self::bad(
            "MissingMandatoryParameter",
            PBE,
            format!(
                "Cannot process command because of one or more missing mandatory parameters: {}.",
                names.join(" ")
            ),
        )
    }

    fn not_found(identity: &str) -> Self {
        // The recorded sample's text form and ErrorId (docs/protocol/exo-protocol.md §1.8).
        ExoError {
            status: 404,
            code: "NotFound",
            error_id: "Ex6F9304".to_owned(),
            class: NOT_FOUND,
            text: format!(
                "The operation couldn't be performed because object '{identity}' couldn't be found on '{BE_SERVER}'."
            ),
        }
    }

    fn ambiguous(identity: &str) -> Self {
        // The service's wording for an identity several recipients answer to, as an
        // administrator recorded it (jetzemellema.blogspot.com/2018/03, "Exchange Admin Center
        // can't handle duplicate display names"): "There are multiple recipients matching the
        // identity "Display Name". Please specify a unique value." The class is Exchange's
        // ManagementObjectAmbiguousException; (inferred) ErrorId: no sample recorded, a stable id
        // in the sample's style.
        Self::bad(
            "ExB8E29B",
            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
            format!(
                "There are multiple recipients matching the identity \"{identity}\". Please specify a unique value."
            ),
        )
    }

    fn resolve(identity: &str, why: Resolve) -> Self {
        match why {
            Resolve::NotFound => Self::not_found(identity),
            Resolve::Ambiguous => Self::ambiguous(identity),
        }
    }

    pub(crate) fn task(error_id: &str, class: &'static str, text: String) -> Self {
        Self::bad(error_id, class, text)
    }
}

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Str,
    /// A string parameter that `$null` clears (`ForwardingAddress`, `ForwardingSmtpAddress`).
    StrOrNull,
    Strs,
    Bool,
    Switch,
    ResultSize,
    Multi,
    Filter,
    /// A `[SecureString]` (or `[PSCredential]`): over REST it arrives encrypted with the
    /// service's public key ([`super::secure_string`]); a plain value is refused.
    Secure,
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    /// `$null`, where the parameter takes it (to clear a value).
    Null,
    Str(String),
    Strs(Vec<String>),
    Bool(bool),
    /// `None` is `Unlimited`.
    ResultSize(Option<u64>),
    Multi {
        replace: Option<Vec<String>>,
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// Parameters every cmdlet takes (PowerShell common parameters that make sense over REST).
const COMMON: &[(&str, Ty)] = &[
    ("ErrorAction", Ty::Str),
    ("WarningAction", Ty::Str),
    ("InformationAction", Ty::Str),
    ("Verbose", Ty::Switch),
    ("Debug", Ty::Switch),
];
/// Parameters of cmdlets that support ShouldProcess.
const SHOULD_PROCESS: &[(&str, Ty)] = &[("Confirm", Ty::Switch), ("WhatIf", Ty::Switch)];

type RunFn = fn(&mut Run<'_>) -> Result<Rows, ExoError>;

/// One cmdlet, as data.
pub(crate) struct Spec {
    pub name: &'static str,
    params: &'static [(&'static str, Ty)],
    mandatory: &'static [&'static str],
    /// Changes state (`New-`, `Set-`, `Add-`, `Remove-`).
    pub write: bool,
    /// ConfirmImpact High: prompts when `Confirm` is `true` (see [`execute`]).
    confirm_high: bool,
    /// Name of the object the confirmation prompt names.
    run: RunFn,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Spec {
    fn takes_result_size(&self) -> bool {
        self.params.iter().any(|(_, t)| *t == Ty::ResultSize)
    }
    fn should_process(&self) -> bool {
        self.write
    }
}

macro_rules! spec {
    ($name:literal, write: $write:literal, confirm: $confirm:literal, mandatory: [$($m:literal),*], params: [$(($p:literal, $t:ident)),* $(,)?], $run:path) => {
        Spec {
            name: $name,
            params: &[$(($p, Ty::$t)),*],
            mandatory: &[$($m),*],
            write: $write,
            confirm_high: $confirm,
            run: $run,
        }
    };
}

/// Every implemented cmdlet.
pub(crate) static CMDLETS: &[Spec] = &[
    spec!("Get-Mailbox", write: false, confirm: false, mandatory: [],
        params: [("Identity", Str), ("ResultSize", ResultSize), ("RecipientTypeDetails", Strs), ("Filter", Filter)], get_mailbox),
    spec!("Set-Mailbox", write: true, confirm: false, mandatory: ["Identity"],
        params: [("Identity", Str), ("DisplayName", Str), ("HiddenFromAddressListsEnabled", Bool), ("ProhibitSendQuota", Str),
                 ("GrantSendOnBehalfTo", Multi), ("EmailAddresses", Multi), ("Type", Str),
                 ("ForwardingAddress", StrOrNull), ("ForwardingSmtpAddress", StrOrNull), ("DeliverToMailboxAndForward", Bool),
                 ("Password", Secure), ("RoomMailboxPassword", Secure)], set_mailbox),
    spec!("New-Mailbox", write: true, confirm: false, mandatory: ["Name"],
        params: [("Name", Str), ("Alias", Str), ("PrimarySmtpAddress", Str), ("DisplayName", Str), ("Shared", Switch), ("Room", Switch),
                 ("MicrosoftOnlineServicesID", Str), ("Password", Secure), ("ResetPasswordOnNextLogon", Bool), ("FirstName", Str), ("LastName", Str)], new_mailbox),
    spec!("Remove-Mailbox", write: true, confirm: true, mandatory: ["Identity"],
        params: [("Identity", Str), ("Permanent", Bool)], remove_mailbox),
    spec!("Get-MailboxStatistics", write: false, confirm: false, mandatory: ["Identity"],
        params: [("Identity", Str)], get_statistics),
    spec!("Get-MailboxPermission", write: false, confirm: false, mandatory: ["Identity"],
        params: [("Identity", Str), ("User", Str), ("ResultSize", ResultSize)], get_mailbox_permission),
    spec!("Add-MailboxPermission", write: true, confirm: false, mandatory: ["Identity", "User", "AccessRights"],
        params: [("Identity", Str), ("User", Str), ("AccessRights", Strs), ("InheritanceType", Str), ("AutoMapping", Bool)], add_mailbox_permission),
    spec!("Remove-MailboxPermission", write: true, confirm: true, mandatory: ["Identity", "User", "AccessRights"],
        params: [("Identity", Str), ("User", Str), ("AccessRights", Strs), ("InheritanceType", Str)], remove_mailbox_permission),
    spec!("Get-RecipientPermission", write: false, confirm: false, mandatory: [],
        params: [("Identity", Str), ("Trustee", Str), ("AccessRights", Strs), ("ResultSize", ResultSize)], get_recipient_permission),
    spec!("Add-RecipientPermission", write: true, confirm: true, mandatory: ["Identity", "Trustee", "AccessRights"],
        params: [("Identity", Str), ("Trustee", Str), ("AccessRights", Strs)], add_recipient_permission),
    spec!("Remove-RecipientPermission", write: true, confirm: true, mandatory: ["Identity", "Trustee", "AccessRights"],
        params: [("Identity", Str), ("Trustee", Str), ("AccessRights", Strs)], remove_recipient_permission),
    spec!("Get-Recipient", write: false, confirm: false, mandatory: [],
        params: [("Identity", Str), ("ResultSize", ResultSize), ("RecipientTypeDetails", Strs), ("Filter", Filter)], get_recipient),
    spec!("Get-DistributionGroup", write: false, confirm: false, mandatory: [],
        params: [("Identity", Str), ("ResultSize", ResultSize), ("Filter", Filter)], get_distribution_group),
    spec!("Get-DistributionGroupMember", write: false, confirm: false, mandatory: ["Identity"],
        params: [("Identity", Str), ("ResultSize", ResultSize)], get_group_member),
    spec!("Add-DistributionGroupMember", write: true, confirm: false, mandatory: ["Identity", "Member"],
        params: [("Identity", Str), ("Member", Str), ("BypassSecurityGroupManagerCheck", Switch)], add_group_member),
    spec!("Remove-DistributionGroupMember", write: true, confirm: true, mandatory: ["Identity", "Member"],
        params: [("Identity", Str), ("Member", Str), ("BypassSecurityGroupManagerCheck", Switch)], remove_group_member),
    spec!("Get-AcceptedDomain", write: false, confirm: false, mandatory: [],
        params: [("Identity", Str)], get_accepted_domain),
    spec!("Get-OrganizationConfig", write: false, confirm: false, mandatory: [],
        params: [], get_organization_config),
    spec!("Set-OrganizationConfig", write: true, confirm: false, mandatory: [],
        params: [("AuditDisabled", Bool), ("MailTipsAllTipsEnabled", Bool), ("OAuth2ClientProfileEnabled", Bool)], set_organization_config),
];

/// Finds a cmdlet by name, case-insensitively (CAPTURE sends `get-mailbox`).
pub(crate) fn find(name: &str) -> Option<&'static Spec> {
    CMDLETS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Bound parameters, by canonical name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bound(Vec<(&'static str, Arg)>);

impl Bound {
    fn get(&self, name: &str) -> Option<&Arg> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
    }
    /// The bound `Identity`, whatever spelling or JSON type the caller used for it.
    pub(crate) fn identity(&self) -> Option<&str> {
        self.str("Identity")
    }
    /// Whether `name` was given as `$null`.
    fn is_null(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Arg::Null))
    }
    fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Arg::Str(s)) => Some(s),
            _ => None,
        }
    }
    fn strs(&self, name: &str) -> Option<&[String]> {
        match self.get(name) {
            Some(Arg::Strs(s)) => Some(s),
            _ => None,
        }
    }
    fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(Arg::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    /// `ResultSize`: `Some(None)` Unlimited, `None` not given.
    pub(crate) fn result_size(&self) -> Option<Option<u64>> {
        match self.get("ResultSize") {
            Some(Arg::ResultSize(r)) => Some(*r),
            _ => None,
        }
    }
}

fn is_annotation(key: &str) -> bool {
    key.contains("@odata.") || key.contains("@data.")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "System.Boolean",
        Value::Number(_) => "System.Int32",
        Value::String(_) => "System.String",
        Value::Array(_) => "System.Object[]",
        Value::Object(_) => "System.Collections.Hashtable",
    }
}

fn as_text(param: &str, value: &Value) -> Result<String, ExoError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "True" } else { "False" }.to_owned()),
        other => Err(ExoError::transformation(
            param,
            &format!(
                "Cannot convert the \"{}\" value of type \"{}\" to type \"System.String\".",
                other,
                type_name(other)
            ),
        )),
    }
}

fn as_texts(param: &str, value: &Value) -> Result<Vec<String>, ExoError> {
    match value {
        Value::Array(items) => items.iter().map(|v| as_text(param, v)).collect(),
        other => Ok(vec![as_text(param, other)?]),
    }
}

/// Turns the value a client sent for a [`Ty::Secure`] parameter into its plain text, or refuses.
pub(crate) type Unseal<'a> = &'a dyn Fn(&str, &Value) -> Result<String, ExoError>;

/// The RPS binder's answer to a SecureString parameter: a string is not a SecureString, and
/// exosim's PSRP server does not do the session-key exchange a real `<SS>` value needs.
/// PowerShell's own binder message, without echoing the value.
pub(crate) fn refuse_unencrypted(name: &str, _value: &Value) -> Result<String, ExoError> {
    Err(ExoError::transformation(
        name,
        "Cannot convert the value of type \"System.String\" to type \"System.Security.SecureString\".",
    ))
}

fn bind_one(
    name: &'static str,
    ty: Ty,
    value: &Value,
    unseal: Unseal<'_>,
) -> Result<Arg, ExoError> {
    if ty == Ty::Secure {
        // `$null` and '' are sent as they are (the module's Encrypt-Value).
        return match value {
            Value::Null => Ok(Arg::Null),
            Value::String(s) if s.is_empty() => Ok(Arg::Str(String::new())),
            other => Ok(Arg::Str(unseal(name, other)?)),
        };
    }
    if value.is_null() && ty == Ty::StrOrNull {
        return Ok(Arg::Null);
    }
    if value.is_null() && ty != Ty::Switch {
        return Err(ExoError::bad(
            "ParameterArgumentValidationErrorNullNotAllowed",
            PBE,
            format!(
                "Cannot validate argument on parameter '{name}'. The argument is null. Provide a valid value for the argument, and then try running the command again."
            ),
        ));
    }
    Ok(match ty {
        Ty::Str | Ty::Filter => Arg::Str(as_text(name, value)?),
        Ty::Secure => unreachable!("handled above"),
        Ty::StrOrNull => match as_text(name, value)? {
            // PowerShell's binder refuses an empty string where `$null` is the way to clear.
            text if text.is_empty() => {
                return Err(ExoError::bad(
                    "ParameterArgumentValidationErrorEmptyStringNotAllowed",
                    PBE,
                    format!(
                        "Cannot bind argument to parameter '{name}' because it is an empty string."
                    ),
                ));
            }
            text => Arg::Str(text),
        },
        Ty::Strs => Arg::Strs(as_texts(name, value)?),
        Ty::Switch => match value {
            Value::Bool(b) => Arg::Bool(*b),
            Value::Null => Arg::Bool(true),
            other => {
                return Err(ExoError::bad(
                    "CannotConvertArgument",
                    PBE,
                    format!(
                        "Cannot convert '{}' to the type 'System.Management.Automation.SwitchParameter' required by parameter '{name}'.",
                        type_name(other)
                    ),
                ));
            }
        },
        Ty::Bool => match value {
            Value::Bool(b) => Arg::Bool(*b),
            // PowerShell converts numbers to [bool] but never strings.
            Value::Number(n) => Arg::Bool(n.as_f64().is_some_and(|f| f != 0.0)),
            other => {
                return Err(ExoError::transformation(
                    name,
                    &format!(
                        "Cannot convert value \"{}\" to type \"System.Boolean\". Boolean parameters accept only Boolean values and numbers, such as $True, $False, 1 or 0.",
                        type_name(other)
                    ),
                ));
            }
        },
        Ty::ResultSize => {
            let parsed = match value {
                Value::String(s) if s.eq_ignore_ascii_case("unlimited") => Some(None),
                Value::String(s) => s.trim().parse::<u64>().ok().filter(|n| *n > 0).map(Some),
                Value::Number(n) => n.as_u64().filter(|n| *n > 0).map(Some),
                _ => None,
            };
            match parsed {
                Some(r) => Arg::ResultSize(r),
                None => {
                    return Err(ExoError::transformation(
                        name,
                        &format!(
                            "Cannot convert value \"{}\" to type \"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\". Error: \"Unexpected value '{}'.\"",
                            value_text(value),
                            value_text(value)
                        ),
                    ));
                }
            }
        }
        Ty::Multi => match value {
            Value::Object(map) => {
                let mut add = Vec::new();
                let mut remove = Vec::new();
                for (key, v) in map {
                    if is_annotation(key) || key == "@odata.type" {
                        continue;
                    }
                    if key.eq_ignore_ascii_case("Add") {
                        add.extend(as_texts(name, v)?);
                    } else if key.eq_ignore_ascii_case("Remove") {
                        remove.extend(as_texts(name, v)?);
                    } else {
                        return Err(ExoError::transformation(
                            name,
                            &format!(
                                "The hash table key '{key}' isn't valid. Valid keys are 'Add' and 'Remove'."
                            ),
                        ));
                    }
                }
                Arg::Multi {
                    replace: None,
                    add,
                    remove,
                }
            }
            other => Arg::Multi {
                replace: Some(as_texts(name, other)?),
                add: Vec::new(),
                remove: Vec::new(),
            },
        },
    })
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Binds `Parameters` to `spec`'s parameters: exact names (case-insensitive), typed values,
/// mandatory ones present; a SecureString parameter is always refused ([`refuse_unencrypted`]).
pub(crate) fn bind(spec: &Spec, parameters: &Map<String, Value>) -> Result<Bound, ExoError> {
    bind_with(spec, parameters, &refuse_unencrypted)
}

/// [`bind`], with SecureString parameters turned into plain text by `unseal`.
pub(crate) fn bind_with(
    spec: &Spec,
    parameters: &Map<String, Value>,
    unseal: Unseal<'_>,
) -> Result<Bound, ExoError> {
    let mut bound = Bound::default();
    let all = spec
        .params
        .iter()
        .chain(COMMON)
        .chain(if spec.should_process() {
            SHOULD_PROCESS
        } else {
            &[]
        });
    let all: Vec<&(&str, Ty)> = all.collect();
    for (key, value) in parameters {
        if key == "@odata.type" || is_annotation(key) {
            continue;
        }
        let Some((name, ty)) = all
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(key))
            .map(|p| **p)
        else {
            return Err(ExoError::parameter_not_found(key));
        };
        if bound.get(name).is_some() {
            return Err(ExoError::bad(
                "ParameterAlreadyBound",
                PBE,
                format!(
                    "Cannot bind parameter because parameter '{name}' is specified more than once."
                ),
            ));
        }
        bound.0.push((name, bind_one(name, ty, value, unseal)?));
    }
    let missing: Vec<&str> = spec
        .mandatory
        .iter()
        .copied()
        .filter(|m| bound.get(m).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(ExoError::missing(&missing));
    }
    Ok(bound)
}

/// Where a page starts and how many objects it may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paging {
    /// Key of the last object of the previous page.
    pub after: Option<u64>,
    /// At most this many objects on this page.
    pub want: usize,
}

/// What a cmdlet produced.
#[derive(Debug)]
pub(crate) enum Rows {
    /// The whole (small) result; keys are positions, paged by the caller.
    All(Vec<Obj>),
    /// One page of a large collection, keyed by serial.
    Page {
        objs: Vec<Obj>,
        last: u64,
        more: bool,
    },
}

/// One execution.
pub(crate) struct Run<'a> {
    pub org: &'a mut Org,
    pub args: Bound,
    pub paging: Paging,
    pub now: i64,
    pub warnings: Vec<String>,
    /// Non-terminating errors (`@adminapi.errors`).
    pub errors: Vec<String>,
    /// Whether state changed.
    pub applied: bool,
}

impl std::fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

/// What a run produced, including a pending confirmation.
#[derive(Debug)]
pub(crate) enum Result2 {
    Done(Rows),
    /// `@adminapi.confirmationmessage`: nothing was changed.
    Confirm(String),
}

/// Runs `spec`. A ConfirmImpact-High write answers with a prompt (and changes nothing) only
/// when the caller sent `"Confirm": true`; without `Confirm` it runs, and `WhatIf` never changes
/// anything.
///
/// This is the module's flow: for a cmdlet whose impact calls for a prompt it POSTs
/// `"Confirm": true`, the service answers `@adminapi.confirmationmessage`, and after the user
/// agrees it re-POSTs with `"Confirm": false` — so the prompt is the client's to ask for, and a
/// call without `Confirm` runs (Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`,
/// `Execute-Command`; issue 15, divergence 2).
pub(crate) fn execute(spec: &Spec, run: &mut Run<'_>) -> Result<Result2, ExoError> {
    if run.args.bool("WhatIf") == Some(true) {
        let target = run.args.str("Identity").unwrap_or("").to_owned();
        run.warnings.push(format!(
            "What if: Performing the operation \"{}\" on target \"{target}\".",
            spec.name
        ));
        return Ok(Result2::Done(Rows::All(Vec::new())));
    }
    if spec.confirm_high && run.args.bool("Confirm") == Some(true) {
        return Ok(Result2::Confirm(confirmation_prompt(spec, &run.args)));
    }
    (spec.run)(run).map(Result2::Done)
}

/// PowerShell's `ShouldProcess` prompt for `spec` on the call's `Identity`.
pub(crate) fn confirmation_prompt(spec: &Spec, args: &Bound) -> String {
    let target = args.str("Identity").unwrap_or("");
    format!(
        "Are you sure you want to perform this action?\nPerforming the operation \"{}\" on target \"{target}\".",
        spec.name
    )
}

/// Whether a Remote PowerShell runspace prompts before running `spec`: PowerShell's
/// `$ConfirmPreference` is `High` by default, so a ConfirmImpact-High cmdlet asks unless the
/// call says `-Confirm:$false` (or `-WhatIf`, which only describes). Over REST the module's
/// flow applies instead ([`execute`]: only `Confirm: true` prompts).
pub(crate) fn powershell_prompts(spec: &Spec, args: &Bound) -> bool {
    spec.confirm_high && args.bool("Confirm") != Some(false) && args.bool("WhatIf") != Some(true)
}

/// The default `ResultSize` of list cmdlets (Exchange's is 1000).
pub(crate) const DEFAULT_RESULT_SIZE: u64 = 1000;

/// The result size bound for this call: explicit, Unlimited (`None`), or the default for
/// cmdlets that take `ResultSize`.
pub(crate) fn result_size(spec: &Spec, args: &Bound) -> Option<u64> {
    match args.result_size() {
        Some(r) => r,
        None if spec.takes_result_size() => Some(DEFAULT_RESULT_SIZE),
        None => None,
    }
}

/// Whether a cmdlet is a `Get-` (read-only) cmdlet.
pub(crate) fn is_read(name: &str) -> bool {
    name.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("Get-"))
}

fn scan<T>(
    items: &[T],
    serial: impl Fn(&T) -> u64,
    paging: Paging,
    mut make: impl FnMut(&T) -> Option<Obj>,
) -> Rows {
    let start = paging
        .after
        .map_or(0, |a| items.partition_point(|x| serial(x) <= a));
    let mut objs = Vec::new();
    let mut last = paging.after.unwrap_or(0);
    let mut more = false;
    for item in &items[start..] {
        if let Some(o) = make(item) {
            if objs.len() >= paging.want {
                more = true;
                break;
            }
            last = serial(item);
            objs.push(o);
        }
    }
    Rows::Page { objs, last, more }
}

fn names(obj: &Obj) -> Vec<&'static str> {
    obj.iter().map(|(n, _)| *n).collect()
}

/// `o` if there is no filter or it matches.
fn passes(filter: &Option<Filter>, o: Obj) -> Option<Obj> {
    filter.as_ref().is_none_or(|f| f.matches(&o)).then_some(o)
}

fn filter_for(args: &Bound, sample: &Obj) -> Result<Option<Filter>, ExoError> {
    let Some(text) = args.str("Filter") else {
        return Ok(None);
    };
    Filter::parse(text, &names(sample)).map(Some).map_err(|e| {
        ExoError::bad(
            "ParameterBindingFailed",
            PBE,
            format!("Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"{}\"", e.0),
        )
    })
}

const RECIPIENT_TYPES: &[&str] = &[
    "UserMailbox",
    "SharedMailbox",
    "RoomMailbox",
    "EquipmentMailbox",
    "LinkedMailbox",
    "SchedulingMailbox",
    "TeamMailbox",
    "DiscoveryMailbox",
    "GroupMailbox",
    "MailUniversalDistributionGroup",
    "MailUniversalSecurityGroup",
    "MailContact",
    "MailUser",
    "DynamicDistributionGroup",
    "GuestMailUser",
];

fn type_set(args: &Bound) -> Result<Option<Vec<String>>, ExoError> {
    let Some(list) = args.strs("RecipientTypeDetails") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
        let Some(known) = RECIPIENT_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(item))
        else {
            return Err(ExoError::transformation(
                "RecipientTypeDetails",
                &format!(
                    "Cannot convert value \"{item}\" to type \"Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails\". Error: \"Unable to match the identifier name {item} to a valid enumerator name. Specify one of the following enumerator names and try again:\n{}\"",
                    RECIPIENT_TYPES.join(", ")
                ),
            ));
        };
        out.push((*known).to_owned());
    }
    Ok(Some(out))
}

/// The `Identity` of a Get- cmdlet that lists: the one resolver, `*` wildcards allowed.
fn listed(org: &Org, identity: &str, kinds: Kinds) -> Result<Vec<Recipient>, ExoError> {
    org.resolve(identity, kinds, true)
        .map_err(|e| ExoError::resolve(identity, e))
}

fn mailbox_index(org: &Org, identity: &str) -> Result<usize, ExoError> {
    org.resolve_mailbox(identity)
        .map_err(|e| ExoError::resolve(identity, e))
}

fn get_mailbox(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let org = &*run.org;
    if let Some(identity) = run.args.str("Identity") {
        return Ok(Rows::All(
            listed(org, identity, Kinds::Mailboxes)?
                .into_iter()
                .filter_map(|r| match r {
                    Recipient::Mailbox(i) => Some(obj::mailbox(org, &org.mailboxes[i])),
                    Recipient::Group(_) => None,
                })
                .collect(),
        ));
    }
    let types = type_set(&run.args)?;
    let sample = org.mailboxes.first().map(|m| obj::mailbox(org, m));
    let filter = match &sample {
        Some(sample) => filter_for(&run.args, sample)?,
        None => None,
    };
    Ok(scan(
        &org.mailboxes,
        |m| m.serial,
        run.paging,
        |m| {
            if let Some(types) = &types
                && !types.iter().any(|t| t == m.kind.as_str())
            {
                return None;
            }
            passes(&filter, obj::mailbox(org, m))
        },
    ))
}

fn get_recipient(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let org = &*run.org;
    if let Some(identity) = run.args.str("Identity") {
        return Ok(Rows::All(
            listed(org, identity, Kinds::Recipients)?
                .into_iter()
                .map(|r| match r {
                    Recipient::Mailbox(i) => obj::recipient_mailbox(org, &org.mailboxes[i]),
                    Recipient::Group(i) => obj::recipient_group(org, &org.groups[i]),
                })
                .collect(),
        ));
    }
    let types = type_set(&run.args)?;
    let sample = org
        .mailboxes
        .first()
        .map(|m| obj::recipient_mailbox(org, m))
        .or_else(|| org.groups.first().map(|g| obj::recipient_group(org, g)));
    let filter = match &sample {
        Some(sample) => filter_for(&run.args, sample)?,
        None => None,
    };
    // Merge mailboxes and groups by serial, both already sorted by it.
    let after = run.paging.after.unwrap_or(0);
    let mut mi = org.mailboxes.partition_point(|m| m.serial <= after);
    let mut gi = org.groups.partition_point(|g| g.serial <= after);
    let mut objs = Vec::new();
    let mut last = after;
    let mut more = false;
    loop {
        let next_m = org.mailboxes.get(mi);
        let next_g = org.groups.get(gi);
        let (serial, kind, o) = match (next_m, next_g) {
            (None, None) => break,
            (Some(m), g) if g.is_none_or(|g| m.serial < g.serial) => {
                mi += 1;
                (m.serial, m.kind.as_str(), obj::recipient_mailbox(org, m))
            }
            (_, Some(g)) => {
                gi += 1;
                (
                    g.serial,
                    "MailUniversalDistributionGroup",
                    obj::recipient_group(org, g),
                )
            }
            (Some(_), None) => unreachable!("covered by the guard above"),
        };
        if types.as_ref().is_some_and(|t| !t.iter().any(|t| t == kind)) {
            continue;
        }
        if filter.as_ref().is_some_and(|f| !f.matches(&o)) {
            continue;
        }
        if objs.len() >= run.paging.want {
            more = true;
            break;
        }
        last = serial;
        objs.push(o);
    }
    Ok(Rows::Page { objs, last, more })
}

fn get_statistics(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let identity = run.args.str("Identity").unwrap_or_default();
    let i = mailbox_index(run.org, identity)?;
    Ok(Rows::All(vec![obj::statistics(&run.org.mailboxes[i])]))
}

fn new_guid() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

fn new_mailbox(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let a = &run.args;
    let name = a.str("Name").unwrap_or_default().trim().to_owned();
    if name.is_empty() {
        return Err(ExoError::bad("ParameterArgumentValidationErrorEmptyStringNotAllowed", PBE,
            "Cannot validate argument on parameter 'Name'. The argument is null or empty. Provide an argument that is not null or empty, and then try the command again.".to_owned()));
    }
    if let Some(password) = a.str("Password") {
        super::secure_string::check_password_policy("Password", password)?;
    }
    let shared = a.bool("Shared") == Some(true);
    let room = a.bool("Room") == Some(true);
    if shared && room {
        return Err(ExoError::bad("AmbiguousParameterSet", PBE,
            "Parameter set cannot be resolved using the specified named parameters. One or more parameters issued cannot be used together or an insufficient number of parameters were provided.".to_owned()));
    }
    let kind = if shared {
        MailboxKind::SharedMailbox
    } else if room {
        MailboxKind::RoomMailbox
    } else {
        MailboxKind::UserMailbox
    };
    let alias = a.str("Alias").map(str::to_owned).unwrap_or_else(|| {
        name.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect()
    });
    if alias.is_empty()
        || !alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
    {
        return Err(ExoError::task(
            "Ex7E1C26",
            "Microsoft.Exchange.Data.DataValidationException",
            format!("The alias \"{alias}\" contains characters that aren't valid."),
        ));
    }
    let primary = a
        .str("PrimarySmtpAddress")
        .or(a.str("MicrosoftOnlineServicesID"))
        .map(str::to_owned);
    let org = &mut *run.org;
    if let Some(p) = &primary {
        let Some((local, domain)) = p
            .split_once('@')
            .filter(|(l, d)| !l.is_empty() && d.contains('.'))
        else {
            return Err(ExoError::task(
                "Ex6D9E03",
                "Microsoft.Exchange.Data.DataValidationException",
                format!(
                    "The email address \"{p}\" isn't correct. Please use this format: user name, the @ sign, followed by the domain name. For example, tonysmith@contoso.com or tony.smith@contoso.com."
                ),
            ));
        };
        let _ = local;
        if !org.accepts_domain(domain) {
            return Err(ExoError::task(
                "Ex2B7D4F",
                "Microsoft.Exchange.Management.Tasks.RecipientTaskException",
                format!("The domain {domain} isn't an accepted domain for your organization."),
            ));
        }
    }
    if org
        .mailboxes
        .iter()
        .any(|m| m.name.eq_ignore_ascii_case(&name))
        || org
            .groups
            .iter()
            .any(|g| g.name.eq_ignore_ascii_case(&name))
    {
        return Err(ExoError::task(
            "Ex9F3A0B",
            "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
            format!(
                "Active Directory operation failed on {BE_SERVER}. The object 'CN={name},OU={},OU=Microsoft Exchange Hosted Organizations,DC=NAMPR00A001,DC=PROD,DC=OUTLOOK,DC=COM' already exists.",
                org.domain
            ),
        ));
    }
    let address = primary
        .clone()
        .unwrap_or_else(|| format!("{}@{}", alias.to_ascii_lowercase(), org.domain));
    if org
        .mailboxes
        .iter()
        .any(|m| m.alias.eq_ignore_ascii_case(&alias))
        || org.address_in_use(&address)
    {
        return Err(ExoError::task(
            "Ex4C1F8A",
            "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException",
            format!(
                "The proxy address \"SMTP:{address}\" is already being used by the proxy addresses or LegacyExchangeDN. Please choose another proxy address."
            ),
        ));
    }
    let display = a
        .str("DisplayName")
        .map_or_else(|| name.clone(), str::to_owned);
    let mut rng = super::store::SplitMix::new(u64::try_from(new_guid() >> 64).unwrap_or(0));
    org.new_mailbox(
        kind,
        &name,
        &alias,
        Some(&address),
        &display,
        run.now,
        &mut rng,
    );
    run.applied = true;
    let m = org
        .mailboxes
        .last()
        .ok_or_else(|| ExoError::not_found(&name))?;
    Ok(Rows::All(vec![obj::mailbox(org, m)]))
}

fn set_mailbox(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let identity = run.args.str("Identity").unwrap_or_default().to_owned();
    let i = mailbox_index(run.org, &identity)?;
    let args = run.args.clone();
    // Resolve everything before changing anything: a failed Set- changes nothing.
    let quota = match args.str("ProhibitSendQuota") {
        Some(text) => Some(obj::parse_quota(text).map_err(|()| {
            ExoError::transformation("ProhibitSendQuota", &format!("Cannot convert value \"{text}\" to type \"Microsoft.Exchange.Data.Unlimited`1[Microsoft.Exchange.Data.ByteQuantifiedSize]\". Error: \"The value \"{text}\" isn't a valid byte quantified size.\""))
        })?),
        None => None,
    };
    let kind = match args.str("Type") {
        Some(t) if t.eq_ignore_ascii_case("Regular") => Some(MailboxKind::UserMailbox),
        Some(t) if t.eq_ignore_ascii_case("Shared") => Some(MailboxKind::SharedMailbox),
        Some(t) if t.eq_ignore_ascii_case("Room") => Some(MailboxKind::RoomMailbox),
        Some(t) => {
            return Err(ExoError::transformation(
                "Type",
                &format!(
                    "Cannot convert value \"{t}\" to type \"Microsoft.Exchange.Management.RecipientTasks.ConvertibleMailboxSubType\". Error: \"Unable to match the identifier name {t} to a valid enumerator name. Specify one of the following enumerator names and try again:\nRegular, Room, Equipment, Shared\""
                ),
            ));
        }
        None => None,
    };
    let delegates = match args.get("GrantSendOnBehalfTo") {
        Some(Arg::Multi {
            replace,
            add,
            remove,
        }) => {
            let resolve = |id: &String| -> Result<u128, ExoError> {
                match run
                    .org
                    .resolve_recipient(id)
                    .map_err(|e| ExoError::resolve(id, e))?
                {
                    Recipient::Mailbox(x) => Ok(run.org.mailboxes[x].guid),
                    Recipient::Group(x) => Ok(run.org.groups[x].guid),
                }
            };
            let mut list = match replace {
                Some(r) => r.iter().map(resolve).collect::<Result<Vec<_>, _>>()?,
                None => run.org.mailboxes[i].send_on_behalf.clone(),
            };
            for id in add {
                let g = resolve(id)?;
                if !list.contains(&g) {
                    list.push(g);
                }
            }
            for id in remove {
                let g = resolve(id)?;
                list.retain(|x| *x != g);
            }
            Some(list)
        }
        _ => None,
    };
    let addresses = match args.get("EmailAddresses") {
        Some(Arg::Multi {
            replace,
            add,
            remove,
        }) => {
            let mbx = &run.org.mailboxes[i];
            let mut list = replace.clone().unwrap_or_else(|| mbx.proxies.clone());
            for a in add {
                let bare = a.split_once(':').map_or(a.as_str(), |(_, x)| x);
                if run.org.address_in_use(bare)
                    && !mbx.proxies.iter().any(|p| p.eq_ignore_ascii_case(a))
                {
                    return Err(ExoError::task(
                        "Ex4C1F8A",
                        "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException",
                        format!(
                            "The proxy address \"{a}\" is already being used by the proxy addresses or LegacyExchangeDN. Please choose another proxy address."
                        ),
                    ));
                }
                let normal = if a.contains(':') {
                    a.clone()
                } else {
                    format!("smtp:{a}")
                };
                if !list.iter().any(|p| p.eq_ignore_ascii_case(&normal)) {
                    list.push(normal);
                }
            }
            for r in remove {
                let normal = if r.contains(':') {
                    r.clone()
                } else {
                    format!("smtp:{r}")
                };
                list.retain(|p| !p.eq_ignore_ascii_case(&normal));
            }
            if !list.iter().any(|p| p.starts_with("SMTP:")) {
                return Err(ExoError::task(
                    "Ex1A2B3C",
                    "Microsoft.Exchange.Data.DataValidationException",
                    "The primary SMTP address must be specified when modifying EmailAddresses."
                        .to_owned(),
                ));
            }
            Some(list)
        }
        _ => None,
    };
    // Forwarding: `$null` clears it (Set-Mailbox's documented way; an empty string is refused
    // by the binder); `ForwardingAddress` names a recipient of the organisation,
    // `ForwardingSmtpAddress` is an SMTP proxy address.
    let forwarding_address = if args.is_null("ForwardingAddress") {
        Some(None)
    } else {
        match args.str("ForwardingAddress") {
            Some(id) => Some(Some(
                match run
                    .org
                    .resolve_recipient(id)
                    .map_err(|e| ExoError::resolve(id, e))?
                {
                    Recipient::Mailbox(x) => run.org.mailboxes[x].guid,
                    Recipient::Group(x) => run.org.groups[x].guid,
                },
            )),
            None => None,
        }
    };
    let forwarding_smtp = if args.is_null("ForwardingSmtpAddress") {
        Some(None)
    } else {
        match args.str("ForwardingSmtpAddress") {
            Some(a) => Some(Some(smtp_proxy_address("ForwardingSmtpAddress", a)?)),
            None => None,
        }
    };
    for name in ["Password", "RoomMailboxPassword"] {
        if let Some(password) = args.str(name) {
            super::secure_string::check_password_policy(name, password)?;
        }
    }
    let m = &mut run.org.mailboxes[i];
    let before = serde_json::to_string(&*m).unwrap_or_default();
    if args.str("Password").is_some() || args.str("RoomMailboxPassword").is_some() {
        m.password_resets += 1;
    }
    if let Some(f) = forwarding_address {
        m.forwarding_address = f;
    }
    if let Some(f) = forwarding_smtp {
        m.forwarding_smtp = f;
    }
    if let Some(d) = args.bool("DeliverToMailboxAndForward") {
        m.deliver_and_forward = d;
    }
    if let Some(d) = args.str("DisplayName") {
        m.display_name = d.to_owned();
    }
    if let Some(h) = args.bool("HiddenFromAddressListsEnabled") {
        m.hidden = h;
    }
    if let Some(q) = quota {
        m.prohibit_send_quota = q;
    }
    if let Some(k) = kind {
        m.kind = k;
    }
    if let Some(d) = delegates {
        m.send_on_behalf = d;
    }
    if let Some(list) = addresses {
        if let Some(primary) = list.iter().find_map(|p| p.strip_prefix("SMTP:")) {
            m.primary_smtp = primary.to_owned();
        }
        m.proxies = list;
    }
    if serde_json::to_string(&*m).unwrap_or_default() == before {
        run.warnings.push(format!(
            "The command completed successfully but no settings of '{}' have been modified.",
            m.name
        ));
    } else {
        m.when_changed = run.now;
        run.applied = true;
    }
    Ok(Rows::All(Vec::new()))
}

fn remove_mailbox(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let identity = run.args.str("Identity").unwrap_or_default().to_owned();
    let i = mailbox_index(run.org, &identity)?;
    let org = &mut *run.org;
    let gone = org.mailboxes.remove(i).guid;
    org.mailbox_permissions
        .retain(|p| p.mailbox != gone && p.user != gone);
    org.recipient_permissions
        .retain(|p| p.mailbox != gone && p.trustee != gone);
    for g in &mut org.groups {
        g.members.retain(|m| *m != gone);
    }
    for m in &mut org.mailboxes {
        m.send_on_behalf.retain(|x| *x != gone);
    }
    run.applied = true;
    Ok(Rows::All(Vec::new()))
}

const MAILBOX_RIGHTS: &[&str] = &[
    "ChangeOwner",
    "ChangePermission",
    "DeleteItem",
    "ExternalAccount",
    "FullAccess",
    "ReadPermission",
];
const INHERITANCE: &[&str] = &["None", "All", "Descendents", "SelfAndChildren", "Children"];

fn canonical(
    param: &str,
    list: &[String],
    allowed: &[&str],
    type_name: &str,
) -> Result<Vec<String>, ExoError> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
        let Some(known) = allowed.iter().find(|a| a.eq_ignore_ascii_case(item)) else {
            return Err(ExoError::transformation(
                param,
                &format!(
                    "Cannot convert value \"{item}\" to type \"{type_name}\". Error: \"Unable to match the identifier name {item} to a valid enumerator name. Specify one of the following enumerator names and try again:\n{}\"",
                    allowed.join(", ")
                ),
            ));
        };
        if !out.iter().any(|o| o == known) {
            out.push((*known).to_owned());
        }
    }
    Ok(out)
}

fn trustee(org: &Org, identity: &str) -> Result<u128, ExoError> {
    match org
        .resolve_recipient(identity)
        .map_err(|e| ExoError::resolve(identity, e))?
    {
        Recipient::Mailbox(i) => Ok(org.mailboxes[i].guid),
        Recipient::Group(i) => Ok(org.groups[i].guid),
    }
}

fn get_mailbox_permission(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let org = &*run.org;
    let i = mailbox_index(org, run.args.str("Identity").unwrap_or_default())?;
    let m = &org.mailboxes[i];
    let user = run.args.str("User").map(|u| trustee(org, u)).transpose()?;
    let mut rows = Vec::new();
    if user.is_none() {
        rows.push(obj::mailbox_permission(
            &m.name,
            "NT AUTHORITY\\SELF",
            &["FullAccess".to_owned(), "ReadPermission".to_owned()],
            "All",
            false,
        ));
    }
    for p in org
        .mailbox_permissions
        .iter()
        .filter(|p| p.mailbox == m.guid && user.is_none_or(|u| u == p.user))
    {
        rows.push(obj::mailbox_permission(
            &m.name,
            &org.recipient_label(p.user),
            &p.rights,
            &p.inheritance,
            false,
        ));
    }
    Ok(Rows::All(rows))
}

fn add_mailbox_permission(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let a = run.args.clone();
    let org = &mut *run.org;
    let i = mailbox_index(org, a.str("Identity").unwrap_or_default())?;
    let user = trustee(org, a.str("User").unwrap_or_default())?;
    let rights = canonical(
        "AccessRights",
        a.strs("AccessRights").unwrap_or_default(),
        MAILBOX_RIGHTS,
        "Microsoft.Exchange.Management.RecipientTasks.MailboxRights[]",
    )?;
    let inheritance = canonical(
        "InheritanceType",
        &[a.str("InheritanceType").unwrap_or("All").to_owned()],
        INHERITANCE,
        "System.DirectoryServices.ActiveDirectorySecurityInheritance",
    )?
    .remove(0);
    let mailbox = org.mailboxes[i].guid;
    let name = org.mailboxes[i].name.clone();
    let label = org.recipient_label(user);
    let existing = org
        .mailbox_permissions
        .iter_mut()
        .find(|p| p.mailbox == mailbox && p.user == user && p.inheritance == inheritance);
    let row_rights = match existing {
        Some(p) => {
            let new: Vec<String> = rights
                .iter()
                .filter(|r| !p.rights.contains(r))
                .cloned()
                .collect();
            if new.is_empty() {
                run.warnings.push(format!("The appropriate access control entry is already present on the object \"{name}\" for account \"{label}\"."));
            } else {
                p.rights.extend(new);
                run.applied = true;
            }
            p.rights.clone()
        }
        None => {
            org.mailbox_permissions.push(MailboxPermission {
                mailbox,
                user,
                rights: rights.clone(),
                inheritance: inheritance.clone(),
            });
            run.applied = true;
            rights
        }
    };
    Ok(Rows::All(vec![obj::mailbox_permission(
        &name,
        &label,
        &row_rights,
        &inheritance,
        false,
    )]))
}

fn remove_mailbox_permission(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let a = run.args.clone();
    let org = &mut *run.org;
    let i = mailbox_index(org, a.str("Identity").unwrap_or_default())?;
    let user = trustee(org, a.str("User").unwrap_or_default())?;
    let rights = canonical(
        "AccessRights",
        a.strs("AccessRights").unwrap_or_default(),
        MAILBOX_RIGHTS,
        "Microsoft.Exchange.Management.RecipientTasks.MailboxRights[]",
    )?;
    let mailbox = org.mailboxes[i].guid;
    let name = org.mailboxes[i].name.clone();
    let label = org.recipient_label(user);
    let mut changed = false;
    for p in org
        .mailbox_permissions
        .iter_mut()
        .filter(|p| p.mailbox == mailbox && p.user == user)
    {
        let before = p.rights.len();
        p.rights.retain(|r| !rights.contains(r));
        changed |= p.rights.len() != before;
    }
    org.mailbox_permissions.retain(|p| !p.rights.is_empty());
    if changed {
        run.applied = true;
    } else {
        run.warnings.push(format!("Can't remove the access control entry on the object \"{name}\" for account \"{label}\" because the ACE doesn't exist on the object."));
    }
    Ok(Rows::All(Vec::new()))
}

fn send_as_only(a: &Bound) -> Result<(), ExoError> {
    canonical(
        "AccessRights",
        a.strs("AccessRights").unwrap_or(&["SendAs".to_owned()]),
        &["SendAs"],
        "Microsoft.Exchange.Management.RecipientTasks.RecipientAccessRight[]",
    )
    .map(|_| ())
}

fn get_recipient_permission(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let org = &*run.org;
    send_as_only(&run.args)?;
    let trustee_guid = run
        .args
        .str("Trustee")
        .map(|t| trustee(org, t))
        .transpose()?;
    let mut rows = Vec::new();
    let target = match run.args.str("Identity") {
        Some(id) => {
            let i = mailbox_index(org, id)?;
            if trustee_guid.is_none() {
                rows.push(obj::recipient_permission(
                    &org.mailboxes[i].name,
                    "NT AUTHORITY\\SELF",
                ));
            }
            Some(org.mailboxes[i].guid)
        }
        // Inferred: without -Identity, only explicit grants are listed (no per-mailbox SELF rows).
        None => None,
    };
    for p in org.recipient_permissions.iter().filter(|p| {
        target.is_none_or(|t| t == p.mailbox) && trustee_guid.is_none_or(|t| t == p.trustee)
    }) {
        let name = org
            .mailbox_by_guid(p.mailbox)
            .map_or_else(|| format_guid(p.mailbox), |m| m.name.clone());
        rows.push(obj::recipient_permission(
            &name,
            &org.recipient_label(p.trustee),
        ));
    }
    Ok(Rows::All(rows))
}

fn add_recipient_permission(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let a = run.args.clone();
    send_as_only(&a)?;
    let org = &mut *run.org;
    let i = mailbox_index(org, a.str("Identity").unwrap_or_default())?;
    let who = trustee(org, a.str("Trustee").unwrap_or_default())?;
    let mailbox = org.mailboxes[i].guid;
    let name = org.mailboxes[i].name.clone();
    let label = org.recipient_label(who);
    if org
        .recipient_permissions
        .iter()
        .any(|p| p.mailbox == mailbox && p.trustee == who)
    {
        run.warnings.push(format!("The appropriate access control entry is already present on the object \"{name}\" for account \"{label}\"."));
    } else {
        org.recipient_permissions.push(RecipientPermission {
            mailbox,
            trustee: who,
        });
        run.applied = true;
    }
    Ok(Rows::All(vec![obj::recipient_permission(&name, &label)]))
}

fn remove_recipient_permission(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let a = run.args.clone();
    send_as_only(&a)?;
    let org = &mut *run.org;
    let i = mailbox_index(org, a.str("Identity").unwrap_or_default())?;
    let who = trustee(org, a.str("Trustee").unwrap_or_default())?;
    let mailbox = org.mailboxes[i].guid;
    let before = org.recipient_permissions.len();
    org.recipient_permissions
        .retain(|p| !(p.mailbox == mailbox && p.trustee == who));
    if org.recipient_permissions.len() == before {
        let name = org.mailboxes[i].name.clone();
        let label = org.recipient_label(who);
        run.warnings.push(format!("Can't remove the access control entry on the object \"{name}\" for account \"{label}\" because the ACE doesn't exist on the object."));
    } else {
        run.applied = true;
    }
    Ok(Rows::All(Vec::new()))
}

fn group_index(org: &Org, identity: &str) -> Result<usize, ExoError> {
    org.resolve_group(identity)
        .map_err(|e| ExoError::resolve(identity, e))
}

fn get_distribution_group(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let org = &*run.org;
    if let Some(identity) = run.args.str("Identity") {
        return Ok(Rows::All(
            listed(org, identity, Kinds::Groups)?
                .into_iter()
                .filter_map(|r| match r {
                    Recipient::Group(i) => Some(obj::group(org, &org.groups[i])),
                    Recipient::Mailbox(_) => None,
                })
                .collect(),
        ));
    }
    let filter = match org.groups.first() {
        Some(g) => filter_for(&run.args, &obj::group(org, g))?,
        None => None,
    };
    Ok(scan(
        &org.groups,
        |g| g.serial,
        run.paging,
        |g| passes(&filter, obj::group(org, g)),
    ))
}

fn get_group_member(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let org = &*run.org;
    let i = group_index(org, run.args.str("Identity").unwrap_or_default())?;
    Ok(Rows::All(
        org.groups[i]
            .members
            .iter()
            .filter_map(|g| org.mailbox_by_guid(*g))
            .map(|m| obj::recipient_mailbox(org, m))
            .collect(),
    ))
}

fn member_change(run: &mut Run<'_>, add: bool) -> Result<Rows, ExoError> {
    let a = run.args.clone();
    let org = &mut *run.org;
    let gi = group_index(org, a.str("Identity").unwrap_or_default())?;
    let member_id = a.str("Member").unwrap_or_default();
    let mi = mailbox_index(org, member_id)?;
    let member = org.mailboxes[mi].guid;
    let member_name = org.mailboxes[mi].name.clone();
    let group = &mut org.groups[gi];
    let present = group.members.contains(&member);
    // Non-terminating errors (200 + @adminapi.errors), as the module reports them with
    // Write-Error (docs/protocol/exo-protocol.md §1.8); the ErrorIds are our own (no sample
    // recorded).
    match (add, present) {
        (true, true) => run.errors.push(format!(
            "ExC7A2E1|Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException|The recipient \"{member_name}\" is already a member of the group \"{}\".",
            group.name
        )),
        (false, false) => run.errors.push(format!(
            "Ex5B80D4|Microsoft.Exchange.Management.Tasks.MemberNotFoundException|The recipient \"{member_name}\" isn't a member of the group \"{}\".",
            group.name
        )),
        (true, false) => {
            group.members.push(member);
            group.when_changed = run.now;
            run.applied = true;
        }
        (false, true) => {
            group.members.retain(|m| *m != member);
            group.when_changed = run.now;
            run.applied = true;
        }
    }
    Ok(Rows::All(Vec::new()))
}

fn add_group_member(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    member_change(run, true)
}

fn remove_group_member(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    member_change(run, false)
}

fn get_accepted_domain(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let all = obj::accepted_domains(run.org);
    match run.args.str("Identity") {
        None => Ok(Rows::All(all)),
        Some(id) => {
            let hit: Vec<Obj> = all
                .into_iter()
                .filter(|o| {
                    o.iter().any(|(n, p)| {
                        *n == "DomainName"
                            && matches!(p, Prop::Str(s) if s.eq_ignore_ascii_case(id))
                    })
                })
                .collect();
            if hit.is_empty() {
                Err(ExoError::not_found(id))
            } else {
                Ok(Rows::All(hit))
            }
        }
    }
}

fn get_organization_config(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    Ok(Rows::All(vec![obj::organization_config(run.org)]))
}

fn set_organization_config(run: &mut Run<'_>) -> Result<Rows, ExoError> {
    let a = run.args.clone();
    let c = &mut run.org.config;
    let mut changed = false;
    for (name, slot) in [
        ("AuditDisabled", &mut c.audit_disabled),
        ("MailTipsAllTipsEnabled", &mut c.mail_tips_all_tips_enabled),
        (
            "OAuth2ClientProfileEnabled",
            &mut c.oauth2_client_profile_enabled,
        ),
    ] {
        if let Some(v) = a.bool(name)
            && *slot != v
        {
            *slot = v;
            changed = true;
        }
    }
    if changed {
        c.when_changed = run.now;
        run.applied = true;
    } else {
        run.warnings.push(format!(
            "The command completed successfully but no settings of '{}' have been modified.",
            c.name
        ));
    }
    Ok(Rows::All(Vec::new()))
}

/// An SMTP proxy address as Exchange stores it (`smtp:local@domain`): a bare address or one
/// with the `smtp:` prefix; another prefix (`X500:`) or no `local@domain` shape is refused as
/// the ProxyAddress conversion refuses it.
fn smtp_proxy_address(param: &str, text: &str) -> Result<String, ExoError> {
    let address = match text.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("smtp:") => &text[5..],
        _ => text,
    };
    let valid = address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !address.contains(char::is_whitespace)
            && !domain.contains('@')
    });
    if !valid {
        return Err(ExoError::transformation(
            param,
            &format!(
                "Cannot convert value \"{text}\" to type \"Microsoft.Exchange.Data.ProxyAddress\". Error: \"The address '{text}' is invalid.\""
            ),
        ));
    }
    Ok(format!("smtp:{address}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn binding_is_exact_and_typed() {
        let spec = find("get-MAILBOX").unwrap();
        assert!(bind(spec, &params(json!({"identity": "a", "ResultSize": "Unlimited", "@odata.type": "x", "Identity@odata.type": "#String"}))).is_ok());
        let e = bind(spec, &params(json!({"Ident": "a"}))).unwrap_err();
        assert_eq!(
            e.text,
            "A parameter cannot be found that matches parameter name 'Ident'."
        );
        let e = bind(spec, &params(json!({"ResultSize": "lots"}))).unwrap_err();
        assert_eq!(e.error_id, "ParameterArgumentTransformationError");
        let e = bind(spec, &params(json!({"Confirm": false}))).unwrap_err();
        assert_eq!(e.error_id, "NamedParameterNotFound");
        let set = find("Set-Mailbox").unwrap();
        let e = bind(
            set,
            &params(json!({"Identity": "a", "HiddenFromAddressListsEnabled": "yes"})),
        )
        .unwrap_err();
        assert!(
            e.text
                .contains("Boolean parameters accept only Boolean values"),
            "{e:?}"
        );
        assert!(
            bind(
                set,
                &params(json!({"Identity": "a", "HiddenFromAddressListsEnabled": 1}))
            )
            .is_ok()
        );
        let e = bind(set, &params(json!({}))).unwrap_err();
        assert_eq!(e.error_id, "MissingMandatoryParameter");
        let b = bind(set, &params(json!({"Identity": "a", "GrantSendOnBehalfTo": {"@odata.type": "#Exchange.GenericHashTable", "add": ["x"], "Remove": "y"}}))).unwrap();
        assert_eq!(
            b.get("GrantSendOnBehalfTo"),
            Some(&Arg::Multi {
                replace: None,
                add: vec!["x".into()],
                remove: vec!["y".into()]
            })
        );
    }
}
