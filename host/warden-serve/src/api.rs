//! The JSON API under `/api/v1` (the route table is [`crate::openapi::API_ROUTES`]). Bearer
//! tokens or the page's session; 401 without one, 403 for anything the caller may not see or
//! do, whether or not it exists.

use crate::runs::{self, RunRefusal};
use crate::state::{ApiCaller, AppState, Shared, json_error};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use warden_policy::{FieldError, Person, Policy};
use warden_store::RunRecord;

/// How many runs a list shows.
pub const LIST_LIMIT: u32 = 200;

/// `POST /api/v1/tasks/{id}/runs`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequestBody {
    /// Parameter values by name.
    #[serde(default, deserialize_with = "unique_keys")]
    pub parameters: Map<String, Value>,
}

/// A JSON object whose keys all differ. serde_json keeps the last of a repeated key while a
/// proxy or log in front may read the first, so a parameter given twice is refused.
fn unique_keys<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of parameter values by name")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut values = Map::new();
            while let Some((name, value)) = map.next_entry::<String, Value>()? {
                if values.contains_key(&name) {
                    let shown: String = name.chars().take(64).collect();
                    return Err(serde::de::Error::custom(format_args!(
                        "parameter {shown:?} is given twice; give each parameter once"
                    )));
                }
                values.insert(name, value);
            }
            Ok(values)
        }
    }
    deserializer.deserialize_map(Unique)
}

/// The schema of [`RunRequestBody`].
pub fn run_request_schema() -> Value {
    json!({"type": "object", "additionalProperties": false,
           "properties": {"parameters": {"type": "object", "description": "values by parameter name, as GET /api/v1/tasks lists them"}}})
}

/// `approve` / `reject`'s body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (shown to the requester and kept with the run).
    #[serde(default)]
    pub comment: String,
}

/// The schema of [`DecisionBody`].
pub fn decision_schema() -> Value {
    json!({"type": "object", "additionalProperties": false,
           "properties": {"comment": {"type": "string", "maxLength": MAX_COMMENT}}})
}

/// Longest approval comment kept.
pub const MAX_COMMENT: usize = 2000;

/// A refusal as an answer.
pub fn refusal(refusal: RunRefusal) -> Response {
    match refusal {
        RunRefusal::Forbidden => json_error(StatusCode::FORBIDDEN, "forbidden"),
        RunRefusal::Fields(fields) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "parameter values outside the policy",
                        "fields": fields_for_delegate(fields)})),
        )
            .into_response(),
        RunRefusal::Conflict(current) => json_error(
            StatusCode::CONFLICT,
            &format!(
                "the run is {}, no longer pending approval",
                current.as_str()
            ),
        ),
        RunRefusal::Unavailable(why) => json_error(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

/// The field errors a delegate is shown (the API's and the form's): a field a deny rule refused
/// ([`FieldError::by_deny_rule`]: its message names the rule, its line and its reason) becomes
/// `"<parameter>: not allowed by the policy"`, so the policy's rules are not read through the
/// form; messages that only describe the allowed form (choices, range, length) stay. The
/// detail goes to the service's log.
pub fn fields_for_delegate(fields: Vec<FieldError>) -> Vec<FieldError> {
    fields
        .into_iter()
        .map(|field| {
            if !field.by_deny_rule {
                return field;
            }
            tracing::info!(parameter = %field.parameter, detail = %field.message,
                "a value refused by a policy rule (the delegate sees no rule)");
            FieldError {
                message: format!("{}: not allowed by the policy", field.parameter),
                parameter: field.parameter,
                by_deny_rule: true,
            }
        })
        .collect()
}

fn bad_body(rejection: JsonRejection) -> Response {
    // JSON of the wrong shape (a repeated, unknown or mistyped field) is as bad a request as
    // text that is not JSON; axum says 422, which this API keeps for values outside the policy.
    let status = match &rejection {
        JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
        other => other.status(),
    };
    json_error(
        status,
        &format!("the request body: {}", rejection.body_text()),
    )
}

/// `GET /api/v1/tasks`.
pub async fn list_tasks(State(state): State<AppState>, who: ApiCaller) -> Response {
    let policy = match state.policy_now() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let tasks: Vec<Value> = policy
        .tasks_for(&who.person)
        .into_iter()
        .map(|task| {
            let mut value = serde_json::to_value(task).unwrap_or(Value::Null);
            value["needs_approval"] = Value::Bool(task.needs_approval());
            value
        })
        .collect();
    Json(json!({ "tasks": tasks })).into_response()
}

/// `POST /api/v1/tasks/{id}/runs`.
pub async fn start_run(
    State(state): State<AppState>,
    Path(task): Path<String>,
    who: ApiCaller,
    body: Result<Json<RunRequestBody>, JsonRejection>,
) -> Response {
    let policy = match state.policy_now() {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Not a delegate: 403 whatever the body, so a bad body tells nothing about the task.
    if policy.task_for(&who.person, &task).is_none() {
        state.audit_refusal(
            &who.person,
            &format!("run task {task:?}"),
            "not a delegate of it, or no such task",
        );
        return refusal(RunRefusal::Forbidden);
    }
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_body(rejection),
    };
    match runs::start(&state, &policy, &who.person, &task, &body.parameters).await {
        Ok(run) => (
            StatusCode::ACCEPTED,
            Json(json!({"id": run.id.to_string(), "status": run.status.as_str()})),
        )
            .into_response(),
        Err(r) => refusal(r),
    }
}

/// `GET /api/v1/runs`.
pub async fn list_runs(State(state): State<AppState>, who: ApiCaller) -> Response {
    let store = &state.store;
    let runs = if who.operator() {
        store.all_runs(None, LIST_LIMIT).await
    } else {
        match store
            .runs_requested_by(&who.person.oid, None, LIST_LIMIT)
            .await
        {
            Ok(mut mine) => store
                .runs_decided_by(&who.person.oid, None, LIST_LIMIT)
                .await
                .map(|decided| {
                    mine.extend(
                        decided
                            .into_iter()
                            .filter(|d| d.requested_by.oid != who.person.oid),
                    );
                    mine
                }),
            Err(e) => Err(e),
        }
    };
    match runs {
        Ok(runs) => {
            Json(json!({"runs": runs.iter().map(runs::view).collect::<Vec<_>>()})).into_response()
        }
        Err(e) => refusal(e.into()),
    }
}

/// The runs waiting for a decision `who` may give (of the tasks the policy lets them approve,
/// not their own), filtered by the store before the list's limit: the page and the API list
/// the same runs.
pub async fn approvals_for(
    shared: &Shared,
    policy: &Policy,
    who: &Person,
) -> Result<Vec<RunRecord>, RunRefusal> {
    let tasks: Vec<&str> = policy
        .tasks()
        .iter()
        .filter(|task| policy.may_approve(who, task))
        .map(|task| task.id.as_str())
        .collect();
    Ok(shared
        .store
        .pending_approvals_for(&who.oid, &tasks, None, LIST_LIMIT)
        .await?)
}

/// `GET /api/v1/approvals`.
pub async fn list_approvals(State(state): State<AppState>, who: ApiCaller) -> Response {
    let policy = match state.policy_now() {
        Ok(p) => p,
        Err(r) => return r,
    };
    match approvals_for(&state, &policy, &who.person).await {
        Ok(pending) => Json(json!({"runs": pending.iter().map(runs::view).collect::<Vec<_>>()}))
            .into_response(),
        Err(r) => refusal(r),
    }
}

/// `GET /api/v1/runs/{id}`.
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: ApiCaller,
) -> Response {
    let policy = match state.policy_now() {
        Ok(p) => p,
        Err(r) => return r,
    };
    match runs::visible(&state, &policy, &who.person, who.operator(), &id).await {
        Ok(run) => Json(runs::view(&run)).into_response(),
        Err(r) => refusal(r),
    }
}

/// `?after=SEQ`.
#[derive(Debug, Deserialize)]
pub struct After {
    #[serde(default)]
    after: u64,
}

/// `GET /api/v1/runs/{id}/logs`.
pub async fn get_run_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(after): Query<After>,
    who: ApiCaller,
) -> Response {
    let policy = match state.policy_now() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let run = match runs::visible(&state, &policy, &who.person, who.operator(), &id).await {
        Ok(run) => run,
        Err(r) => return refusal(r),
    };
    match state.store.logs(run.id, after.after, 1000).await {
        Ok(lines) => Json(json!({"lines": lines})).into_response(),
        Err(e) => refusal(e.into()),
    }
}

async fn decide(
    state: AppState,
    id: String,
    who: ApiCaller,
    body: Result<Json<DecisionBody>, JsonRejection>,
    approve: bool,
) -> Response {
    let policy = match state.policy_now() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return bad_body(rejection),
    };
    if body.comment.chars().count() > MAX_COMMENT {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("comment: at most {MAX_COMMENT} characters"),
        );
    }
    match runs::decide(&state, &policy, &who.person, &id, approve, &body.comment).await {
        Ok(run) => Json(runs::view(&run)).into_response(),
        Err(r) => refusal(r),
    }
}

/// `POST /api/v1/runs/{id}/approve`.
pub async fn approve_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: ApiCaller,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    decide(state, id, who, body, true).await
}

/// `POST /api/v1/runs/{id}/reject`.
pub async fn reject_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: ApiCaller,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    decide(state, id, who, body, false).await
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(parameter: &str, message: &str) -> FieldError {
        FieldError {
            parameter: parameter.into(),
            message: message.into(),
            by_deny_rule: message.starts_with("deny["),
        }
    }

    #[test]
    fn a_rule_is_never_named_to_the_delegate() {
        let shown = fields_for_delegate(vec![
            field("identity", "deny[0] (line 12): CANARY not this one"),
            field(
                "identity",
                "deny[3] (line 40) refuses Set-Mailbox with Identity whatever the roles allow",
            ),
            field("kind", "must be one of UserMailbox, SharedMailbox"),
            field("name", "Display name is required"),
        ]);
        let messages: Vec<&str> = shown.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "identity: not allowed by the policy",
                "identity: not allowed by the policy",
                "must be one of UserMailbox, SharedMailbox",
                "Display name is required",
            ]
        );
    }
}
