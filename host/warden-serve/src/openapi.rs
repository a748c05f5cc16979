//! The API's route table: the router is built from it and `/api/v1/openapi.json` is written
//! from it, so the document cannot drift from what is served.

use crate::api;
use crate::state::AppState;
use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value, json};

/// One API operation.
#[derive(Debug)]
pub struct ApiRoute {
    /// `get` or `post`.
    pub method: &'static str,
    /// The path, `{name}` for a path parameter (axum and OpenAPI share the syntax).
    pub path: &'static str,
    /// OpenAPI `operationId`.
    pub operation: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// The request body's schema, if it takes one.
    pub body: Option<fn() -> Value>,
    /// Answers: status and meaning.
    pub responses: &'static [(u16, &'static str)],
    /// The handler.
    pub handler: fn() -> MethodRouter<AppState>,
}

const AUTH_ANSWERS: [(u16, &str); 3] = [
    (401, "no valid sign-in or bearer token"),
    (
        403,
        "not allowed, or no such object (the same answer for both)",
    ),
    (429, "too many requests from this person; see Retry-After"),
];

/// Every operation under `/api/v1`.
pub static API_ROUTES: &[ApiRoute] = &[
    ApiRoute {
        method: "get",
        path: "/api/v1/tasks",
        operation: "listTasks",
        summary: "The caller's tasks, with their parameters (form fields derived from the policy)",
        body: None,
        responses: &[(200, "the tasks"), AUTH_ANSWERS[0], AUTH_ANSWERS[2]],
        handler: || get(api::list_tasks),
    },
    ApiRoute {
        method: "post",
        path: "/api/v1/tasks/{id}/runs",
        operation: "startRun",
        summary: "Ask for a run of a task: queued, or pending approval",
        body: Some(api::run_request_schema),
        responses: &[
            (202, "accepted: {id, status}"),
            (400, "the body is not the expected JSON"),
            AUTH_ANSWERS[0],
            AUTH_ANSWERS[1],
            (413, "the body is too large"),
            (
                422,
                "parameter values outside the policy: {error, fields: [{parameter, message}]}",
            ),
            AUTH_ANSWERS[2],
        ],
        handler: || post(api::start_run),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs",
        operation: "listRuns",
        summary: "Runs the caller asked for, decided, or (operators) all",
        body: None,
        responses: &[(200, "the runs"), AUTH_ANSWERS[0], AUTH_ANSWERS[2]],
        handler: || get(api::list_runs),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{id}",
        operation: "getRun",
        summary: "A run: id, task, status, requested_by, approved_by, results, error",
        body: None,
        responses: &[
            (200, "the run"),
            AUTH_ANSWERS[0],
            AUTH_ANSWERS[1],
            AUTH_ANSWERS[2],
        ],
        handler: || get(api::get_run),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{id}/logs",
        operation: "getRunLogs",
        summary: "A run's log lines after `after` (a sequence number)",
        body: None,
        responses: &[
            (200, "log lines"),
            AUTH_ANSWERS[0],
            AUTH_ANSWERS[1],
            AUTH_ANSWERS[2],
        ],
        handler: || get(api::get_run_logs),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/approvals",
        operation: "listApprovals",
        summary: "Runs waiting for an approval the caller may give",
        body: None,
        responses: &[(200, "the runs"), AUTH_ANSWERS[0], AUTH_ANSWERS[2]],
        handler: || get(api::list_approvals),
    },
    ApiRoute {
        method: "post",
        path: "/api/v1/runs/{id}/approve",
        operation: "approveRun",
        summary: "Approve a pending run (never one's own)",
        body: Some(api::decision_schema),
        responses: &[
            (200, "the run, now queued"),
            AUTH_ANSWERS[0],
            AUTH_ANSWERS[1],
            (409, "the run is no longer pending approval"),
            AUTH_ANSWERS[2],
        ],
        handler: || post(api::approve_run),
    },
    ApiRoute {
        method: "post",
        path: "/api/v1/runs/{id}/reject",
        operation: "rejectRun",
        summary: "Reject a pending run, with a comment",
        body: Some(api::decision_schema),
        responses: &[
            (200, "the run, now rejected"),
            AUTH_ANSWERS[0],
            AUTH_ANSWERS[1],
            (409, "the run is no longer pending approval"),
            AUTH_ANSWERS[2],
        ],
        handler: || post(api::reject_run),
    },
];

/// The OpenAPI 3.1 document of [`API_ROUTES`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in API_ROUTES {
        let mut responses = Map::new();
        for (status, meaning) in route.responses {
            responses.insert(status.to_string(), json!({ "description": meaning }));
        }
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "operationId": route.operation,
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
            "security": [{"bearer": []}],
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": body()}},
            });
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "warden serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Delegated Exchange Online tasks under the operator's policy. Bearer: an Entra ID access token for the service's app registration.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "paths": paths,
    })
}
