//! The service's rules on runs, shared by the API and the page so they cannot differ: asking
//! for a run (values checked against the policy before anything is queued), who may see a run,
//! and approving or rejecting one (four eyes).

use crate::state::{GroupNames, Shared, names_of_groups};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;
use warden_policy::{FieldError, Person, Policy};
use warden_store::{NewRun, PersonRef, RunRecord, RunStatus, StoreError};
use warden_vocab::{DelegatedPerson, Delegation};

/// Why a request about runs was not done.
#[derive(Debug)]
pub enum RunRefusal {
    /// Not a delegate, not an approver, not theirs, or no such object: one answer for all.
    Forbidden,
    /// Values outside the policy, one error per field.
    Fields(Vec<FieldError>),
    /// The run is no longer pending approval.
    Conflict(RunStatus),
    /// The service stops, or its store or policy failed.
    Unavailable(String),
}

impl From<StoreError> for RunRefusal {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store error");
        RunRefusal::Unavailable("the service's store failed; try again later".into())
    }
}

/// Keys of a run's stored parameters: the values given, and the requester's standing as it was
/// (so the policy can be checked again for the same person when it starts).
const VALUES: &str = "values";
const REQUESTED_AS: &str = "requested_as";

/// The values a run was asked with.
pub fn values(run: &RunRecord) -> Map<String, Value> {
    run.parameters
        .get(VALUES)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// What the policy judges of a person besides their ids (group ids, app roles), as a run keeps
/// it for the requester (`requested_as`) and the approver (`decided_as`). Groups and roles come
/// from the person's token when they acted: the service cannot read Entra again when the run
/// starts. Group names are not kept: they are worked out when the run is judged, from the
/// service's `group_names` as they are then (a name moved to another group id meanwhile wins).
pub fn standing(person: &Person) -> Value {
    json!({
        "groups": person.groups,
        "roles": person.roles,
    })
}

/// The person `who` with the `standing` a run kept for them ([`standing`]), their groups named
/// by `group_names` as they are now; missing parts are empty (a decision stored before the
/// standing was kept: its user entries still match).
fn person_as(who: &PersonRef, standing: Option<&Value>, group_names: &GroupNames) -> Person {
    let of = |key: &str| -> Vec<String> {
        standing
            .and_then(|s| s.get(key))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let groups = of("groups");
    Person {
        oid: who.oid.clone(),
        upn: who.upn.clone(),
        group_names: names_of_groups(&groups, group_names),
        groups,
        roles: of("roles"),
    }
}

/// The requester with the groups and roles they had when they asked.
pub fn requester(run: &RunRecord, group_names: &GroupNames) -> Person {
    person_as(
        &run.requested_by,
        run.parameters.get(REQUESTED_AS),
        group_names,
    )
}

/// The approver with the groups and roles they had when they decided, if the run was decided.
pub fn approver(run: &RunRecord, group_names: &GroupNames) -> Option<Person> {
    run.decided_by
        .as_ref()
        .map(|who| person_as(who, run.decided_as.as_ref(), group_names))
}

fn person_ref(person: &Person) -> PersonRef {
    PersonRef {
        oid: person.oid.clone(),
        upn: person.upn.clone(),
    }
}

/// On whose behalf `run` acts, for every audit line of it: the requester, the task, the
/// approver (when it was approved), the service's run id.
pub fn delegation(run: &RunRecord) -> Delegation {
    let person = |p: &PersonRef| DelegatedPerson {
        oid: p.oid.clone(),
        upn: p.upn.clone(),
    };
    Delegation {
        person: person(&run.requested_by),
        task: run.task.clone(),
        approver: run.decided_by.as_ref().map(person),
        service_run: run.id.to_string(),
    }
}

/// Asks for a run of `task_id` with `values` for `who`.
pub async fn start(
    shared: &Shared,
    policy: &Policy,
    who: &Person,
    task_id: &str,
    values: &Map<String, Value>,
) -> Result<RunRecord, RunRefusal> {
    let Some(task) = policy.task_for(who, task_id) else {
        shared.audit_refusal(
            who,
            &format!("run task {task_id:?}"),
            "not a delegate of it, or no such task",
        );
        return Err(RunRefusal::Forbidden);
    };
    if !shared.accepting.load(std::sync::atomic::Ordering::Acquire) {
        return Err(RunRefusal::Unavailable(
            "the service is stopping; try again shortly".into(),
        ));
    }
    task.check_values(values).map_err(RunRefusal::Fields)?;
    let needs_approval = task.needs_approval();
    let expires = needs_approval.then(|| OffsetDateTime::now_utc() + task.approval_expires_after);
    let run = shared
        .store
        .create_run(NewRun {
            task: task.id.clone(),
            parameters: json!({
                VALUES: values,
                REQUESTED_AS: standing(who),
            }),
            requested_by: person_ref(who),
            needs_approval,
            approval_expires_at: expires,
        })
        .await?;
    if !needs_approval {
        shared.wake.notify_one();
    }
    Ok(run)
}

/// Whether `who` may see `run`: theirs, decided by them, waiting for an approval they may
/// give, or they are an operator.
pub fn may_see(policy: &Policy, who: &Person, operator: bool, run: &RunRecord) -> bool {
    operator
        || run.requested_by.oid == who.oid
        || run.decided_by.as_ref().is_some_and(|d| d.oid == who.oid)
        || (run.status == RunStatus::PendingApproval && may_decide(policy, who, run))
}

/// Whether the policy makes `who` an approver of `run`'s task.
pub fn may_decide(policy: &Policy, who: &Person, run: &RunRecord) -> bool {
    policy
        .tasks()
        .iter()
        .find(|t| t.id == run.task)
        .is_some_and(|task| policy.may_approve(who, task))
}

/// The run `id` if `who` may see it; missing and not visible are the same refusal.
pub async fn visible(
    shared: &Shared,
    policy: &Policy,
    who: &Person,
    operator: bool,
    id: &str,
) -> Result<RunRecord, RunRefusal> {
    let run = match Uuid::parse_str(id) {
        Ok(uuid) => shared.store.run(uuid).await?,
        Err(_) => None,
    };
    match run {
        Some(run) if may_see(policy, who, operator, &run) => Ok(run),
        _ => {
            shared.audit_refusal(
                who,
                &format!("see run {id:?}"),
                "not theirs, or no such run",
            );
            Err(RunRefusal::Forbidden)
        }
    }
}

/// Approves or rejects run `id` as `who`: only an approver of its task, never its requester,
/// only while it waits.
pub async fn decide(
    shared: &Shared,
    policy: &Policy,
    who: &Person,
    id: &str,
    approve: bool,
    comment: &str,
) -> Result<RunRecord, RunRefusal> {
    let verb = if approve { "approve" } else { "reject" };
    let run = match Uuid::parse_str(id) {
        Ok(uuid) => shared.store.run(uuid).await?,
        Err(_) => None,
    };
    let task = run
        .as_ref()
        .and_then(|run| policy.tasks().iter().find(|t| t.id == run.task));
    let (Some(run), Some(task)) = (run.as_ref(), task) else {
        shared.audit_refusal(
            who,
            &format!("{verb} run {id:?}"),
            "not an approver of its task, or no such run",
        );
        return Err(RunRefusal::Forbidden);
    };
    // An approver of the task, and never the person who asked (four eyes).
    if !policy.may_approve_run(who, task, &run.requested_by.oid) {
        let why = if run.requested_by.oid == who.oid {
            "nobody decides on their own run"
        } else {
            "not an approver of its task, or no such run"
        };
        shared.audit_refusal(who, &format!("{verb} run {id}"), why);
        return Err(RunRefusal::Forbidden);
    }
    // A run no longer waiting is told apart ("already decided") only to someone who may see
    // it: to any other approver of the task it is as absent as a missing one.
    if run.status != RunStatus::PendingApproval && !may_see(policy, who, false, run) {
        shared.audit_refusal(
            who,
            &format!("{verb} run {id}"),
            "not an approver of its task, or no such run",
        );
        return Err(RunRefusal::Forbidden);
    }
    match shared
        .store
        .decide(run.id, &person_ref(who), &standing(who), approve, comment)
        .await
    {
        Ok(decided) => {
            if approve {
                shared.wake.notify_one();
            }
            Ok(decided)
        }
        Err(StoreError::SelfApproval) => {
            shared.audit_refusal(
                who,
                &format!("{verb} run {id}"),
                "nobody decides on their own run",
            );
            Err(RunRefusal::Forbidden)
        }
        Err(StoreError::Conflict { current }) => Err(RunRefusal::Conflict(current)),
        Err(other) => Err(other.into()),
    }
}

fn time(at: &OffsetDateTime) -> Value {
    at.format(&Rfc3339)
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// A run as the API shows it.
pub fn view(run: &RunRecord) -> Value {
    let person = |p: &PersonRef| json!({"oid": p.oid, "upn": p.upn});
    let approved = matches!(
        run.status,
        RunStatus::Rejected | RunStatus::PendingApproval | RunStatus::Expired
    )
    .then_some(())
    .is_none();
    json!({
        "id": run.id.to_string(),
        "task": run.task,
        "status": run.status.as_str(),
        "parameters": values(run),
        "requested_by": person(&run.requested_by),
        "approved_by": run.decided_by.as_ref().filter(|_| approved).map(person),
        "decided_by": run.decided_by.as_ref().map(person),
        "decision_comment": run.decision_comment,
        "created_at": time(&run.created_at),
        "started_at": run.started_at.as_ref().map(time),
        "finished_at": run.finished_at.as_ref().map(time),
        "results": run.results,
        "error": run.error,
        "may_have_written": run.may_have_written,
    })
}
