//! Running a pipeline: CREATE_PIPELINE to a bound cmdlet (the REST binder, RBAC and executor,
//! so state, permissions and errors are the ones InvokeCommand has), then its output as PSRP
//! messages, one page at a time.
//!
//! The runspace is what Exchange's RBAC-trimmed, no-language runspace is: one cmdlet per
//! pipeline, named parameters only, no script text. Objects go out as the plain JSON object REST
//! returns for them (annotations removed) in CLIXML, with the .NET type names the service's
//! objects carry, so a client's CLIXML-to-JSON mapping gives back exactly the REST object.

use serde_json::{Map, Value};
use uuid::Uuid;
use warden_psrp::clixml::{self, PsValue};
use warden_psrp::pipeline::{self, Command, ErrorInfo, PipelineState};
use warden_psrp::{Destination, Message, MessageType};

use crate::exchange::cmdlets::{self, ExoError, Paging, Result2};
use crate::exchange::obj::{self, BE_SERVER};
use crate::exchange::{self, Executed};
use crate::state::Shared;

use super::shells::{Job, Phase, Pipeline};

/// Objects one page of a streamed read holds: small enough that a 100,000-mailbox read never
/// holds more than this many objects (plus what fits in one envelope) in memory.
pub(crate) const PAGE: usize = 200;

/// `ErrorCategory` values (System.Management.Automation.ErrorCategory).
mod category {
    pub const NOT_SPECIFIED: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 5;
    pub const OBJECT_NOT_FOUND: i32 = 13;
    pub const OPERATION_STOPPED: i32 = 14;
    pub const PARSER_ERROR: i32 = 17;
}

const PBE: &str = "System.Management.Automation.ParameterBindingException";

/// The .NET type names (most derived first) of what a cmdlet outputs, inferred from the class
/// hierarchy of Exchange's presentation objects as deserialized objects show it
/// (`Deserialized.` is added by the receiving PowerShell, not sent): Mailbox derives from
/// MailEnabledOrgPerson, MailEnabledRecipient, ADPresentationObject, ConfigurableObject.
pub(crate) fn type_names(cmdlet: &str) -> &'static [&'static str] {
    const MAILBOX: &[&str] = &[
        "Microsoft.Exchange.Data.Directory.Management.Mailbox",
        "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
        "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
        "Microsoft.Exchange.Data.Directory.ADPresentationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    const RECIPIENT: &[&str] = &[
        "Microsoft.Exchange.Data.Directory.Management.ReducedRecipient",
        "Microsoft.Exchange.Data.Directory.ADPresentationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    const MAILBOX_PERMISSION: &[&str] = &[
        "Microsoft.Exchange.Management.RecipientTasks.MailboxAcePresentationObject",
        "Microsoft.Exchange.Management.RecipientTasks.AcePresentationObject",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    const RECIPIENT_PERMISSION: &[&str] = &[
        "Microsoft.Exchange.Management.RecipientTasks.RecipientPermission",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    const GROUP: &[&str] = &[
        "Microsoft.Exchange.Data.Directory.Management.DistributionGroup",
        "Microsoft.Exchange.Data.Directory.Management.DistributionGroupBase",
        "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
        "Microsoft.Exchange.Data.Directory.ADPresentationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    const STATISTICS: &[&str] = &[
        "Microsoft.Exchange.Management.MapiTasks.Presentation.MailboxStatistics",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    const DOMAIN: &[&str] = &[
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.AcceptedDomain",
        "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    const ORGANIZATION: &[&str] = &[
        "Microsoft.Exchange.Data.Directory.Management.OrganizationConfig",
        "Microsoft.Exchange.Data.Directory.ADPresentationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ];
    match cmdlet {
        "Get-Mailbox" | "New-Mailbox" | "Set-Mailbox" => MAILBOX,
        "Get-Recipient" | "Get-DistributionGroupMember" => RECIPIENT,
        "Get-MailboxPermission" | "Add-MailboxPermission" | "Remove-MailboxPermission" => {
            MAILBOX_PERMISSION
        }
        "Get-RecipientPermission" | "Add-RecipientPermission" | "Remove-RecipientPermission" => {
            RECIPIENT_PERMISSION
        }
        "Get-DistributionGroup" => GROUP,
        "Get-MailboxStatistics" => STATISTICS,
        "Get-AcceptedDomain" => DOMAIN,
        "Get-OrganizationConfig" => ORGANIZATION,
        _ => &[
            "System.Management.Automation.PSCustomObject",
            "System.Object",
        ],
    }
}

/// The cmdlet's .NET class, as the last part of a FullyQualifiedErrorId names it
/// (`Microsoft.Exchange.Management.RecipientTasks.GetMailbox`). The namespaces by area are
/// inferred.
fn cmdlet_class(cmdlet: &str) -> String {
    let area = if cmdlet.ends_with("AcceptedDomain") || cmdlet.ends_with("OrganizationConfig") {
        "SystemConfigurationTasks"
    } else if cmdlet.ends_with("MailboxStatistics") {
        "MapiTasks"
    } else {
        "RecipientTasks"
    };
    format!(
        "Microsoft.Exchange.Management.{area}.{}",
        cmdlet.replace('-', "")
    )
}

/// `3/10/2021 2:11:42 PM`, the en-US general date the service stamps errors with.
fn en_us_timestamp(unix: i64) -> String {
    let dt =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (hour, half) = match dt.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{}/{}/{} {hour}:{:02}:{:02} {half}",
        u8::from(dt.month()),
        dt.day(),
        dt.year(),
        dt.minute(),
        dt.second()
    )
}

/// A cmdlet failure as the ErrorRecord RPS sends. The message is REST's text; a failure inside
/// an Exchange task carries the service's decorated FullyQualifiedErrorId
/// (`[Server=…,RequestId=…,TimeStamp=…] [FailureCategory=Cmdlet-<ShortClass>] <ErrorId>,<class>`),
/// one raised by PowerShell's parameter binder only `<ErrorId>,<class>`; category NotSpecified
/// for task errors (as EXO's `CategoryInfo : NotSpecified: (:) [Get-Mailbox], …` shows).
pub(crate) fn error_info(err: &ExoError, cmdlet: &str) -> ErrorInfo {
    let class = cmdlet_class(cmdlet);
    let (fqid, category) = if err.class == PBE {
        (
            format!("{},{class}", err.error_id),
            category::INVALID_ARGUMENT,
        )
    } else {
        let server = BE_SERVER.split('.').next().unwrap_or(BE_SERVER);
        (
            format!(
                "[Server={server},RequestId={},TimeStamp={}] [FailureCategory=Cmdlet-{}] {},{class}",
                Uuid::new_v4(),
                en_us_timestamp(crate::identity::unix_now()),
                err.short_class(),
                err.error_id
            ),
            category::NOT_SPECIFIED,
        )
    };
    ErrorInfo {
        message: err.text.clone(),
        fully_qualified_error_id: fqid,
        exception_type: err.class.to_owned(),
        category,
        reason: err.short_class().to_owned(),
        target_name: String::new(),
        target_object: None,
    }
}

/// A non-terminating error as REST lists it (`ErrorId|class|text`) as an ErrorRecord.
fn listed_error(text: &str, cmdlet: &str) -> ErrorInfo {
    let mut parts = text.splitn(3, '|');
    let (id, class, message) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let short = class.rsplit('.').next().unwrap_or(class);
    let server = BE_SERVER.split('.').next().unwrap_or(BE_SERVER);
    ErrorInfo {
        message: message.to_owned(),
        fully_qualified_error_id: format!(
            "[Server={server},RequestId={},TimeStamp={}] [FailureCategory=Cmdlet-{short}] {id},{}",
            Uuid::new_v4(),
            en_us_timestamp(crate::identity::unix_now()),
            cmdlet_class(cmdlet)
        ),
        exception_type: class.to_owned(),
        category: category::NOT_SPECIFIED,
        reason: short.to_owned(),
        target_name: String::new(),
        target_object: None,
    }
}

/// What PowerShell says when a no-language runspace gets script text or a multi-command
/// pipeline (FullyQualifiedErrorId `ScriptsNotAllowed`, a ParseException).
pub(crate) fn scripts_not_allowed() -> ErrorInfo {
    ErrorInfo {
        message: "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode.".to_owned(),
        fully_qualified_error_id: "ScriptsNotAllowed".to_owned(),
        exception_type: "System.Management.Automation.ParseException".to_owned(),
        category: category::PARSER_ERROR,
        reason: "ParseException".to_owned(),
        target_name: String::new(),
        target_object: None,
    }
}

/// An unknown cmdlet, or one the caller's roles leave out of the RBAC-trimmed runspace (RPS only
/// exposes the cmdlets the caller may run, so the two look the same). Inferred: Windows PowerShell
/// 5.1's wording, which the service's runspaces used.
pub(crate) fn command_not_found(name: &str) -> ErrorInfo {
    ErrorInfo {
        message: format!(
            "The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
        ),
        fully_qualified_error_id: "CommandNotFoundException".to_owned(),
        exception_type: "System.Management.Automation.CommandNotFoundException".to_owned(),
        category: category::OBJECT_NOT_FOUND,
        reason: "CommandNotFoundException".to_owned(),
        target_name: name.to_owned(),
        target_object: Some(name.to_owned()),
    }
}

/// The error a stopped pipeline's state carries (what PowerShell sends on Stop).
pub(crate) fn pipeline_stopped() -> ErrorInfo {
    ErrorInfo {
        message: "The pipeline has been stopped.".to_owned(),
        fully_qualified_error_id: "PipelineStopped".to_owned(),
        exception_type: "System.Management.Automation.PipelineStoppedException".to_owned(),
        category: category::OPERATION_STOPPED,
        reason: "PipelineStoppedException".to_owned(),
        target_name: String::new(),
        target_object: None,
    }
}

/// A ConfirmImpact-High cmdlet without `-Confirm:$false` ([`exchange::cmdlets::powershell_prompts`];
/// over REST only `Confirm: true` prompts): the runspace has no interactive host to ask. Inferred: PowerShell's HostException text for a prompt without a UI.
fn confirmation_needed(prompt: &str) -> ErrorInfo {
    let message = prompt.replace('\n', " ");
    ErrorInfo {
        message: format!(
            "A command that prompts the user failed because the host program or the command type does not support user interaction. The host was attempting to request confirmation with the following message: {message}"
        ),
        fully_qualified_error_id: "HostException".to_owned(),
        exception_type: "System.Management.Automation.Host.HostException".to_owned(),
        category: category::NOT_SPECIFIED,
        reason: "HostException".to_owned(),
        target_name: String::new(),
        target_object: None,
    }
}

/// The parameters of one command as the JSON map the REST binder takes: each value through
/// [`clixml::to_json`] (a switch is `true` or null, a hashtable an object, a list an array).
/// A positional argument or a name given twice is a binding error, as PowerShell reports it.
pub(crate) fn parameters_json(command: &Command) -> Result<Map<String, Value>, ExoError> {
    let mut map = Map::new();
    for (name, value) in &command.parameters {
        if name.is_empty() {
            return Err(ExoError {
                status: 400,
                code: "BadRequest",
                error_id: "PositionalParameterNotFound".to_owned(),
                class: PBE,
                text: format!(
                    "A positional parameter cannot be found that accepts argument '{}'.",
                    clixml::to_json(value)
                ),
            });
        }
        if map.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(ExoError {
                status: 400,
                code: "BadRequest",
                error_id: "ParameterAlreadyBound".to_owned(),
                class: PBE,
                text: format!(
                    "Cannot bind parameter because parameter '{name}' is specified more than once. To provide multiple values to parameters that can accept multiple values, use the array syntax. For example, \"-parameter value1,value2,value3\"."
                ),
            });
        }
        let json = match value {
            // A switch given without a value.
            PsValue::Null => Value::Null,
            other => clixml::to_json(other),
        };
        map.insert(name.clone(), json);
    }
    Ok(map)
}

/// One REST object as a PSRP output value: its plain JSON in CLIXML, typed, with the
/// `ToString` PowerShell shows (the identity or name).
pub(crate) fn output_value(object: &obj::Obj, types: &[&str]) -> PsValue {
    let plain = obj::plain_object(object);
    let label = ["Identity", "Name", "DomainName"]
        .iter()
        .find_map(|k| plain.get(*k).and_then(Value::as_str).map(str::to_owned));
    let mut value = clixml::from_json_value(Value::Object(plain));
    if let PsValue::Object(o) = &mut value {
        o.type_names = types.iter().map(|t| (*t).to_owned()).collect();
        o.to_string = label;
    }
    value
}

/// Builds messages of one pipeline.
pub(crate) struct Emit {
    pub rpid: Uuid,
    pub pid: Uuid,
}

impl Emit {
    pub(crate) fn message(&self, message_type: MessageType, data: String) -> Message {
        Message {
            destination: Destination::Client,
            message_type,
            runspace_pool_id: self.rpid,
            pipeline_id: Some(self.pid),
            data,
        }
    }

    /// Queues the final state and marks the pipeline finished.
    pub(crate) fn finish(
        &self,
        pipeline: &mut Pipeline,
        state: PipelineState,
        error: Option<&ErrorInfo>,
    ) {
        if state == PipelineState::Failed {
            pipeline.failure = error.map(|e| e.reason.clone());
        }
        pipeline.outbox.push(&self.message(
            MessageType::PIPELINE_STATE,
            pipeline::pipeline_state(state, error),
        ));
        pipeline.phase = Phase::Finished;
    }
}

/// Runs the next page of a running pipeline and queues what it produced; returns whether it
/// changed the tenant's state. A write runs whole in one go (it must never run twice); a read
/// runs [`PAGE`] objects at a time, continuing after the last object of the previous page.
pub(crate) async fn next_page(
    shared: &std::sync::Arc<Shared>,
    emit: &Emit,
    pipeline: &mut Pipeline,
) -> bool {
    let Phase::Running(job) = &mut pipeline.phase else {
        return false;
    };
    let spec = job.spec;
    let Some(org) = shared.exchange.org(&job.tenant_id) else {
        let err = ExoError::command_not_found(spec.name);
        let info = error_info(&err, spec.name);
        emit.finish(pipeline, PipelineState::Failed, Some(&info));
        return false;
    };
    let remaining = job
        .bound
        .map(|b| usize::try_from(b.saturating_sub(job.returned)).unwrap_or(usize::MAX));
    let want = if spec.write {
        usize::MAX
    } else {
        remaining.map_or(PAGE, |r| r.min(PAGE))
    };
    let paging = Paging {
        after: job.after,
        want,
    };
    // A real runspace prompts before the cmdlet runs ($ConfirmPreference = High); it has no
    // host to ask, so the pipeline fails with HostException and nothing changes.
    if job.after.is_none() && exchange::cmdlets::powershell_prompts(spec, &job.args) {
        let prompt = exchange::cmdlets::confirmation_prompt(spec, &job.args);
        emit.finish(
            pipeline,
            PipelineState::Failed,
            Some(&confirmation_needed(&prompt)),
        );
        return false;
    }
    let executed = exchange::run_cmdlet(shared, org, spec, job.args.clone(), paging).await;
    let Executed {
        result,
        warnings,
        errors,
        applied,
    } = match executed {
        Ok(executed) => executed,
        Err(err) => {
            let info = error_info(&err, spec.name);
            emit.finish(pipeline, PipelineState::Failed, Some(&info));
            return false;
        }
    };
    for warning in &warnings {
        pipeline.outbox.push(&emit.message(
            MessageType::WARNING_RECORD,
            pipeline::informational_record(warning),
        ));
    }
    let rows = match result {
        Result2::Done(rows) => rows,
        Result2::Confirm(prompt) => {
            emit.finish(
                pipeline,
                PipelineState::Failed,
                Some(&confirmation_needed(&prompt)),
            );
            return applied;
        }
    };
    let (objs, last, more) = exchange::page_of(rows, job.after, want);
    let types = type_names(spec.name);
    for o in &objs {
        pipeline.outbox.push(&emit.message(
            MessageType::PIPELINE_OUTPUT,
            pipeline::pipeline_output(&output_value(o, types)),
        ));
    }
    for error in &errors {
        pipeline.outbox.push(&emit.message(
            MessageType::ERROR_RECORD,
            pipeline::error_record(&listed_error(error, spec.name)),
        ));
    }
    job.returned += objs.len() as u64;
    job.after = Some(last);
    let bound_reached = job.bound.is_some_and(|b| job.returned >= b);
    if spec.write || !more || bound_reached {
        if more && bound_reached {
            pipeline.outbox.push(&emit.message(
                MessageType::WARNING_RECORD,
                pipeline::informational_record(exchange::MORE_RESULTS),
            ));
        }
        emit.finish(pipeline, PipelineState::Completed, None);
    }
    applied
}

/// The job for a bound cmdlet.
pub(crate) fn job(spec: &'static cmdlets::Spec, args: cmdlets::Bound, tenant_id: &str) -> Job {
    let bound = cmdlets::result_size(spec, &args);
    Job {
        spec,
        args,
        tenant_id: tenant_id.to_owned(),
        after: None,
        returned: 0,
        bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_classes() {
        assert_eq!(en_us_timestamp(1_615_385_502), "3/10/2021 2:11:42 PM");
        assert_eq!(en_us_timestamp(1_615_334_400), "3/10/2021 12:00:00 AM");
        assert_eq!(
            cmdlet_class("Get-Mailbox"),
            "Microsoft.Exchange.Management.RecipientTasks.GetMailbox"
        );
        assert_eq!(
            cmdlet_class("Get-AcceptedDomain"),
            "Microsoft.Exchange.Management.SystemConfigurationTasks.GetAcceptedDomain"
        );
    }

    #[test]
    fn task_errors_carry_the_decorated_id() {
        let err = ExoError::command_not_found("Get-Nothing");
        let info = error_info(&err, "Get-Mailbox");
        assert!(
            info.fully_qualified_error_id
                .starts_with("[Server=EXOSIM01MB0001,RequestId="),
            "{info:?}"
        );
        assert!(info.fully_qualified_error_id.ends_with(
            "[FailureCategory=Cmdlet-CommandNotFoundException] CommandNotFoundException,Microsoft.Exchange.Management.RecipientTasks.GetMailbox"
        ));
    }
}
