//! The API's route table: the router is built from it and `/api/v1/openapi.json` is written
//! from it, so the document cannot list a route that is not served or miss one that is. What
//! the table cannot hold by construction (that each answer's status is among the documented
//! ones) `tests/all/serve_web.rs` checks by calling every operation.

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
    /// Whether it needs a signed-in caller (a session or a bearer token); a public one answers
    /// anyone, and is not counted against the caller's address.
    pub signed_in: bool,
    /// The request body's schema, if it takes one.
    pub body: Option<fn() -> Value>,
    /// Answers: status and meaning.
    pub responses: &'static [(u16, &'static str)],
    /// The handler.
    pub handler: fn() -> MethodRouter<AppState>,
}

/// Answers every signed-in operation may give, added to each one's own in the document.
const SIGNED_IN_ANSWERS: &[(u16, &str)] = &[
    (401, "no valid sign-in or bearer token"),
    (
        429,
        "too many requests from this person, or from this address without a valid sign-in; see Retry-After",
    ),
    (
        503,
        "the service's policy cannot be loaded, or its store failed, or it is stopping",
    ),
];

/// Answers every operation with a JSON body may give besides.
const BODY_ANSWERS: &[(u16, &str)] = &[
    (400, "the body is not valid JSON"),
    (413, "the body is too large"),
    (415, "the body is not sent as application/json"),
    (
        422,
        "the body does not fit the schema, or its values are outside the policy",
    ),
];

const FORBIDDEN: (u16, &str) = (
    403,
    "not allowed, or no such object (the same answer for both)",
);

/// Every operation under `/api/v1`.
pub static API_ROUTES: &[ApiRoute] = &[
    ApiRoute {
        method: "get",
        path: "/api/v1/openapi.json",
        operation: "getOpenApi",
        summary: "This document",
        signed_in: false,
        body: None,
        responses: &[(200, "the OpenAPI document")],
        handler: || get(api::openapi),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/tasks",
        operation: "listTasks",
        summary: "The caller's tasks, with their parameters (form fields derived from the policy)",
        signed_in: true,
        body: None,
        responses: &[(200, "the tasks")],
        handler: || get(api::list_tasks),
    },
    ApiRoute {
        method: "post",
        path: "/api/v1/tasks/{id}/runs",
        operation: "startRun",
        summary: "Ask for a run of a task: queued, or pending approval",
        signed_in: true,
        body: Some(api::run_request_schema),
        responses: &[
            (202, "accepted: {id, status}"),
            FORBIDDEN,
            (
                422,
                "parameter values outside the policy: {error, fields: [{parameter, message}]}",
            ),
        ],
        handler: || post(api::start_run),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs",
        operation: "listRuns",
        summary: "Runs the caller asked for, decided, or (operators) all",
        signed_in: true,
        body: None,
        responses: &[(200, "the runs")],
        handler: || get(api::list_runs),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{id}",
        operation: "getRun",
        summary: "A run: id, task, status, requested_by, approved_by, results, error",
        signed_in: true,
        body: None,
        responses: &[(200, "the run"), FORBIDDEN],
        handler: || get(api::get_run),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/runs/{id}/logs",
        operation: "getRunLogs",
        summary: "A run's log lines after `after` (a sequence number)",
        signed_in: true,
        body: None,
        responses: &[
            (200, "log lines"),
            (400, "`after` is not a sequence number"),
            FORBIDDEN,
        ],
        handler: || get(api::get_run_logs),
    },
    ApiRoute {
        method: "get",
        path: "/api/v1/approvals",
        operation: "listApprovals",
        summary: "Runs waiting for an approval the caller may give",
        signed_in: true,
        body: None,
        responses: &[(200, "the runs")],
        handler: || get(api::list_approvals),
    },
    ApiRoute {
        method: "post",
        path: "/api/v1/runs/{id}/approve",
        operation: "approveRun",
        summary: "Approve a pending run (never one's own)",
        signed_in: true,
        body: Some(api::decision_schema),
        responses: &[
            (200, "the run, now queued"),
            FORBIDDEN,
            (409, "the run is no longer pending approval"),
        ],
        handler: || post(api::approve_run),
    },
    ApiRoute {
        method: "post",
        path: "/api/v1/runs/{id}/reject",
        operation: "rejectRun",
        summary: "Reject a pending run, with a comment",
        signed_in: true,
        body: Some(api::decision_schema),
        responses: &[
            (200, "the run, now rejected"),
            FORBIDDEN,
            (409, "the run is no longer pending approval"),
        ],
        handler: || post(api::reject_run),
    },
];

/// The OpenAPI 3.1 document of [`API_ROUTES`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in API_ROUTES {
        let mut responses = Map::new();
        let common = [
            if route.signed_in {
                SIGNED_IN_ANSWERS
            } else {
                &[]
            },
            if route.body.is_some() {
                BODY_ANSWERS
            } else {
                &[]
            },
        ];
        // The route's own meaning of a status wins over the common one.
        for (status, meaning) in common.into_iter().flatten().chain(route.responses) {
            responses.insert(status.to_string(), json!({ "description": meaning }));
        }
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = if route.signed_in {
            json!([{"bearer": []}])
        } else {
            json!([])
        };
        let mut operation = json!({
            "operationId": route.operation,
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
            "security": security,
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
