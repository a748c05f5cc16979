//! The web page: server-rendered HTML (see [`crate::html`]), forms derived from the policy's
//! task parameters, CSRF-checked posts, live run progress over SSE.

use crate::auth::SIGNOUT_PATH;
use crate::html::{self, Viewer, escape};
use crate::ratelimit::StreamSlot;
use crate::runs::{self, RunRefusal};
use crate::state::{AppState, PageCaller};
use crate::trail_status::TrailStatus;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;
use warden_policy::{FieldError, FormField, Policy, Task};
use warden_store::{RunRecord, RunStatus};

fn viewer<'a>(who: &'a PageCaller, csrf: &'a str, policy: &Policy) -> Viewer<'a> {
    Viewer {
        upn: &who.person.upn,
        csrf,
        approver: policy
            .tasks()
            .iter()
            .any(|t| policy.may_approve(&who.person, t)),
    }
}

/// A whole page for `who`, with `status`.
fn page_for(
    state: &AppState,
    who: &PageCaller,
    policy: &Policy,
    status: StatusCode,
    title: &str,
    body: &str,
) -> Response {
    let csrf = state.auth.csrf_token(&who.caller, SIGNOUT_PATH);
    (
        status,
        Html(html::page(title, Some(&viewer(who, &csrf, policy)), body)),
    )
        .into_response()
}

fn forbidden(state: &AppState, who: &PageCaller, policy: &Policy) -> Response {
    page_for(
        state,
        who,
        policy,
        StatusCode::FORBIDDEN,
        "Not allowed",
        "<p>You may not see this, or it does not exist.</p><p><a href=\"/\">Your tasks</a></p>",
    )
}

fn refusal(state: &AppState, who: &PageCaller, policy: &Policy, refusal: RunRefusal) -> Response {
    match refusal {
        RunRefusal::Forbidden | RunRefusal::Fields(_) => forbidden(state, who, policy),
        RunRefusal::Conflict(current) => page_for(
            state,
            who,
            policy,
            StatusCode::CONFLICT,
            "Already decided",
            &format!(
                "<p>The run is {}, no longer pending approval.</p>",
                escape(current.as_str())
            ),
        ),
        RunRefusal::Unavailable(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

macro_rules! policy_or_return {
    ($state:expr) => {
        match $state.policy_now() {
            Ok(p) => p,
            Err(r) => return r,
        }
    };
}

/// `GET /`: my tasks (or the sign-in link).
pub async fn home(State(state): State<AppState>, who: Result<PageCaller, Response>) -> Response {
    let who = match who {
        Ok(who) => who,
        Err(limited) if limited.status() == StatusCode::TOO_MANY_REQUESTS => return limited,
        Err(_) => {
            let body = "<p>Run the Exchange Online tasks your organisation delegated to you.</p>\
                        <p><a class=\"button\" href=\"/signin\">Sign in</a></p>";
            return Html(html::page("warden", None, body)).into_response();
        }
    };
    let policy = policy_or_return!(state);
    let tasks = policy.tasks_for(&who.person);
    let mut body = String::new();
    if tasks.is_empty() {
        body.push_str("<p>No tasks are delegated to you.</p>");
    } else {
        body.push_str("<ul class=\"tasks\">");
        for task in tasks {
            let _ = write!(
                body,
                "<li><a href=\"/tasks/{}\">{}</a><p>{}</p></li>",
                escape(&task.id),
                escape(&task.title),
                escape(&task.description)
            );
        }
        body.push_str("</ul>");
    }
    page_for(&state, &who, &policy, StatusCode::OK, "Your tasks", &body)
}

/// Where a task's form posts (its CSRF token is for this target).
fn task_action(task: &str) -> String {
    format!("/tasks/{task}")
}

/// Where a run's decision form posts (its CSRF token is for this target).
fn decide_action(run: &str) -> String {
    format!("/runs/{run}/decide")
}

fn task_form(
    task: &Task,
    csrf: &str,
    values: &Map<String, Value>,
    errors: &[FieldError],
) -> String {
    let mut out = String::new();
    if !task.description.is_empty() {
        let _ = write!(out, "<p>{}</p>", escape(&task.description));
    }
    if task.needs_approval() {
        out.push_str("<p class=\"note\">This task needs an approval before it runs.</p>");
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"{}\" novalidate><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(&task_action(&task.id)),
        escape(csrf)
    );
    for error in errors
        .iter()
        .filter(|e| !task.parameters.iter().any(|p| p.name == e.parameter))
    {
        let _ = write!(
            out,
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(&error.message)
        );
    }
    for parameter in &task.parameters {
        let id = format!("field-{}", parameter.name);
        // `{name}-error`: the id the page's contract names (tests/browser/serve_flow.mjs).
        let error_id = format!("{}-error", parameter.name);
        let error = errors.iter().find(|e| e.parameter == parameter.name);
        let given = values.get(&parameter.name);
        let described = if error.is_some() {
            format!(
                " aria-invalid=\"true\" aria-describedby=\"{}\"",
                escape(&error_id)
            )
        } else {
            String::new()
        };
        let required = if parameter.required { " required" } else { "" };
        let name = escape(&parameter.name);
        let label = escape(&parameter.label);
        let text = given.map(html::cell).unwrap_or_default();
        match &parameter.field {
            FormField::Checkbox => {
                let checked = if given.and_then(Value::as_bool).unwrap_or(false) {
                    " checked"
                } else {
                    ""
                };
                let _ = write!(
                    out,
                    "<div class=\"field\"><input type=\"checkbox\" id=\"{}\" name=\"{name}\" value=\"true\"{checked}{described}><label for=\"{}\">{label}</label>",
                    escape(&id),
                    escape(&id)
                );
            }
            FormField::Choice { options, .. } => {
                let _ = write!(
                    out,
                    "<div class=\"field\"><label for=\"{}\">{label}</label><select id=\"{}\" name=\"{name}\"{required}{described}>",
                    escape(&id),
                    escape(&id)
                );
                if !parameter.required {
                    out.push_str("<option value=\"\"></option>");
                }
                for option in options {
                    let option = warden_policy::option_text(option);
                    let selected = if option == text { " selected" } else { "" };
                    let _ = write!(
                        out,
                        "<option value=\"{0}\"{selected}>{0}</option>",
                        escape(&option)
                    );
                }
                out.push_str("</select>");
            }
            FormField::Integer { .. } => {
                let _ = write!(
                    out,
                    "<div class=\"field\"><label for=\"{}\">{label}</label><input type=\"number\" id=\"{}\" name=\"{name}\" value=\"{}\"{required}{described}>",
                    escape(&id),
                    escape(&id),
                    escape(&text)
                );
            }
            _ => {
                let _ = write!(
                    out,
                    "<div class=\"field\"><label for=\"{}\">{label}</label><input type=\"text\" id=\"{}\" name=\"{name}\" value=\"{}\"{required}{described}>",
                    escape(&id),
                    escape(&id),
                    escape(&text)
                );
            }
        }
        if let Some(help) = &parameter.help {
            let _ = write!(out, "<p class=\"help\">{}</p>", escape(help));
        }
        if let Some(error) = error {
            let _ = write!(
                out,
                "<p class=\"error\" id=\"{}\" role=\"alert\">{}</p>",
                escape(&error_id),
                escape(&error.message)
            );
        }
        out.push_str("</div>");
    }
    let _ = write!(
        out,
        "<button type=\"submit\">{}</button></form>",
        if task.needs_approval() {
            "Request approval"
        } else {
            "Run"
        }
    );
    out
}

/// `GET /tasks/{id}`: the task's form.
pub async fn task_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: PageCaller,
) -> Response {
    let policy = policy_or_return!(state);
    let Some(task) = policy.task_for(&who.person, &id) else {
        state.audit_refusal(
            &who.person,
            &format!("open task {id:?}"),
            "not a delegate of it, or no such task",
        );
        return forbidden(&state, &who, &policy);
    };
    let form_csrf = state.auth.csrf_token(&who.caller, &task_action(&task.id));
    let body = task_form(task, &form_csrf, &Map::new(), &[]);
    page_for(&state, &who, &policy, StatusCode::OK, &task.title, &body)
}

fn csrf_of(form: &[(String, String)]) -> &str {
    form.iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn bad_csrf() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the form is stale or was not sent by this site; reload the page and try again",
    )
        .into_response()
}

/// `POST /tasks/{id}`: runs it (or asks for approval).
pub async fn task_submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: PageCaller,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if state
        .auth
        .check_csrf(&who.caller, &task_action(&id), csrf_of(&form))
        .is_err()
    {
        return bad_csrf();
    }
    let policy = policy_or_return!(state);
    let Some(task) = policy.task_for(&who.person, &id) else {
        state.audit_refusal(
            &who.person,
            &format!("run task {id:?}"),
            "not a delegate of it, or no such task",
        );
        return forbidden(&state, &who, &policy);
    };
    let values = task.values_from_form(form.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    match runs::start(&state, &policy, &who.person, &id, &values).await {
        Ok(run) => Redirect::to(&format!("/runs/{}", run.id)).into_response(),
        Err(RunRefusal::Fields(errors)) => {
            let form_csrf = state.auth.csrf_token(&who.caller, &task_action(&task.id));
            let errors = crate::api::fields_for_delegate(errors);
            let body = task_form(task, &form_csrf, &values, &errors);
            page_for(
                &state,
                &who,
                &policy,
                StatusCode::UNPROCESSABLE_ENTITY,
                &task.title,
                &body,
            )
        }
        Err(other) => refusal(&state, &who, &policy, other),
    }
}

/// A section listing runs: its heading, and a table of them (or "None.").
fn runs_section(title: &str, runs: &[RunRecord]) -> String {
    let mut out = format!("<h2>{}</h2>", escape(title));
    if runs.is_empty() {
        out.push_str("<p>None.</p>");
        return out;
    }
    out.push_str(
        "<table><thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Task</th><th scope=\"col\">Status</th><th scope=\"col\">Asked by</th><th scope=\"col\">Asked at</th></tr></thead><tbody>",
    );
    for run in runs {
        let _ = write!(
            out,
            "<tr><td><a href=\"/runs/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>",
            run.id,
            escape(&run.task),
            escape(run.status.as_str()),
            escape(&run.requested_by.upn),
            escape(runs::view(run)["created_at"].as_str().unwrap_or_default()),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// How many runs a section of `/runs` shows.
const SECTION_LIMIT: u32 = 200;

/// `GET /runs`: mine, decided by me, all (operators).
pub async fn runs_page(State(state): State<AppState>, who: PageCaller) -> Response {
    let policy = policy_or_return!(state);
    let store = &state.store;
    let oid = &who.person.oid;
    let mut sections = vec![
        (
            "Asked for by you",
            store.runs_requested_by(oid, None, SECTION_LIMIT).await,
        ),
        (
            "Decided by you",
            store.runs_decided_by(oid, None, SECTION_LIMIT).await,
        ),
    ];
    if who.operator() {
        sections.push(("All runs", store.all_runs(None, SECTION_LIMIT).await));
    }
    let mut body = String::new();
    for (title, runs) in sections {
        match runs {
            Ok(runs) => body.push_str(&runs_section(title, &runs)),
            Err(e) => return refusal(&state, &who, &policy, e.into()),
        }
    }
    page_for(&state, &who, &policy, StatusCode::OK, "Runs", &body)
}

/// `GET /approvals`: the runs waiting for a decision the viewer may give.
pub async fn approvals_page(State(state): State<AppState>, who: PageCaller) -> Response {
    let policy = policy_or_return!(state);
    match crate::api::approvals_for(&state, &policy, &who.person).await {
        Ok(pending) => page_for(
            &state,
            &who,
            &policy,
            StatusCode::OK,
            "Approvals",
            &runs_section("Waiting for your decision", &pending),
        ),
        Err(r) => refusal(&state, &who, &policy, r),
    }
}

/// `GET /runs/{id}`.
pub async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: PageCaller,
) -> Response {
    let policy = policy_or_return!(state);
    let run = match runs::visible(&state, &policy, &who.person, who.operator(), &id).await {
        Ok(run) => run,
        Err(r) => return refusal(&state, &who, &policy, r),
    };
    let task = policy.tasks().iter().find(|t| t.id == run.task);
    let title = task
        .map(|t| t.title.clone())
        .unwrap_or_else(|| run.task.clone());
    let mut body = format!(
        "<p>Status: <span data-status=\"{0}\" aria-live=\"polite\">{0}</span></p><dl><dt>Run</dt><dd>{1}</dd><dt>Asked by</dt><dd>{2}</dd>",
        escape(run.status.as_str()),
        run.id,
        escape(&run.requested_by.upn)
    );
    if let Some(decided) = &run.decided_by {
        let _ = write!(body, "<dt>Decided by</dt><dd>{}</dd>", escape(&decided.upn));
        if let Some(comment) = run.decision_comment.as_deref().filter(|c| !c.is_empty()) {
            let _ = write!(body, "<dt>Comment</dt><dd>{}</dd>", escape(comment));
        }
    }
    body.push_str("</dl><h2>Parameters</h2><dl>");
    for (name, value) in runs::values(&run) {
        let label = task
            .and_then(|t| t.parameters.iter().find(|p| p.name == name))
            .map(|p| p.label.clone())
            .unwrap_or_else(|| name.clone());
        let _ = write!(
            body,
            "<dt>{}</dt><dd>{}</dd>",
            escape(&label),
            escape(&html::cell(&value))
        );
    }
    body.push_str("</dl>");
    if run.status == RunStatus::PendingApproval
        && run.requested_by.oid != who.person.oid
        && runs::may_decide(&policy, &who.person, &run)
    {
        if let Some(task) = task {
            let _ = write!(
                body,
                "<h2>Policy</h2><pre>{}</pre>",
                escape(&policy.explain_task(&runs::requester(&run, &state.group_names), &task.id))
            );
        }
        let _ = write!(
            body,
            "<h2>Decision</h2><form method=\"post\" action=\"{0}\"><input type=\"hidden\" name=\"csrf\" value=\"{1}\">\
             <label for=\"comment\">Comment</label><textarea id=\"comment\" name=\"comment\" maxlength=\"{2}\"></textarea>\
             <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button> \
             <button type=\"submit\" name=\"decision\" value=\"reject\">Reject</button></form>",
            escape(&decide_action(&run.id.to_string())),
            escape(
                &state
                    .auth
                    .csrf_token(&who.caller, &decide_action(&run.id.to_string()))
            ),
            crate::api::MAX_COMMENT
        );
    }
    if let Some(error) = &run.error {
        let _ = write!(
            body,
            "<h2>Error</h2><p class=\"error\">{}</p>",
            escape(error)
        );
    }
    if let Some(results) = &run.results {
        let _ = write!(
            body,
            "<h2>Results</h2><p><a href=\"/runs/{0}/results.csv\" download>Download CSV</a> · <a href=\"/runs/{0}/results.json\" download>Download JSON</a></p>{1}",
            run.id,
            html::results_table(results)
        );
    }
    // `data-after`: the last line shown, where the live stream starts (so none comes twice).
    let lines = state
        .store
        .logs(run.id, 0, PAGE_LOG_LINES)
        .await
        .unwrap_or_default();
    let shown = lines.last().map_or(0, |line| line.seq);
    let _ = write!(body, "<h2>Log</h2><ol id=\"log\" data-after=\"{shown}\">");
    for line in lines {
        let _ = write!(
            body,
            "<li>[{}] {}</li>",
            escape(&line.level),
            escape(&line.line)
        );
    }
    let _ = write!(body, "</ol><p><a href=\"/runs/{}\">Refresh</a></p>", run.id);
    page_for(&state, &who, &policy, StatusCode::OK, &title, &body)
}

/// Log lines a run's page shows; the live stream sends the rest.
const PAGE_LOG_LINES: u32 = 1000;

/// `POST /runs/{id}/decide` (`decision` = approve | reject, `comment`).
pub async fn decide_submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: PageCaller,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if state
        .auth
        .check_csrf(&who.caller, &decide_action(&id), csrf_of(&form))
        .is_err()
    {
        return bad_csrf();
    }
    let policy = policy_or_return!(state);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let approve = match field("decision") {
        "approve" => true,
        "reject" => false,
        _ => return (StatusCode::BAD_REQUEST, "choose Approve or Reject").into_response(),
    };
    let comment: String = field("comment")
        .chars()
        .take(crate::api::MAX_COMMENT)
        .collect();
    match runs::decide(&state, &policy, &who.person, &id, approve, &comment).await {
        Ok(run) => Redirect::to(&format!("/runs/{}", run.id)).into_response(),
        Err(r) => refusal(&state, &who, &policy, r),
    }
}

/// `GET /runs/{id}/results.json` and `.csv`.
pub async fn results_download(
    State(state): State<AppState>,
    Path((id, format)): Path<(String, String)>,
    who: PageCaller,
) -> Response {
    let policy = policy_or_return!(state);
    let run = match runs::visible(&state, &policy, &who.person, who.operator(), &id).await {
        Ok(run) => run,
        Err(r) => return refusal(&state, &who, &policy, r),
    };
    let results = run.results.clone().unwrap_or(Value::Null);
    let disposition = |ext: &str| format!("attachment; filename=\"run-{}.{ext}\"", run.id);
    match format.as_str() {
        "results.json" => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::CONTENT_DISPOSITION, disposition("json")),
            ],
            serde_json::to_string_pretty(&results).unwrap_or_default(),
        )
            .into_response(),
        "results.csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, disposition("csv")),
            ],
            html::results_csv(&results),
        )
            .into_response(),
        _ => forbidden(&state, &who, &policy),
    }
}

/// How often the SSE stream looks at the store.
const EVENTS_POLL: Duration = Duration::from_millis(300);

/// `GET /runs/{id}/events`'s query: `after`, the last log line the page already shows.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    after: u64,
}

/// `GET /runs/{id}/events`: `log` events with each line after the last one the client has
/// (`Last-Event-ID` when it reconnects, else `?after=`), `status` on connecting and when it
/// changes; every event's `id` is the last log line sent so far. Ends at a final status, or
/// after the stream lifetime (the browser reconnects). At most a few open at once per person:
/// 429 past that.
pub async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    who: PageCaller,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let policy = policy_or_return!(state);
    let run = match runs::visible(&state, &policy, &who.person, who.operator(), &id).await {
        Ok(run) => run,
        Err(r) => return refusal(&state, &who, &policy, r),
    };
    let Some(slot) = state.limiter.open_stream(&who.person.oid) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many live run views open: at most {} per person; close some run pages, then reload this one",
                state.limiter.streams_per_person()
            ),
        )
            .into_response();
    };
    // A reconnecting EventSource says what it has; its URL still holds the first `after`.
    let after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(query.after);
    let until = tokio::time::Instant::now() + state.limiter.stream_lifetime();
    Sse::new(events(state.clone(), run.id, after, until, slot))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(
    state: AppState,
    id: uuid::Uuid,
    after: u64,
    until: tokio::time::Instant,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Cursor {
        state: AppState,
        id: uuid::Uuid,
        after: u64,
        until: tokio::time::Instant,
        status: Option<RunStatus>,
        pending: std::collections::VecDeque<Event>,
        done: bool,
        /// The person's place among their open streams, freed when the stream is dropped.
        _slot: StreamSlot,
    }
    /// Queues the next log lines (at most a page); how many.
    async fn next_logs(c: &mut Cursor) -> usize {
        let Ok(lines) = c.state.store.logs(c.id, c.after, 500).await else {
            return 0;
        };
        let count = lines.len();
        for line in lines {
            c.after = c.after.max(line.seq);
            let data = serde_json::json!({"seq": line.seq, "level": line.level, "line": line.line});
            c.pending.push_back(
                Event::default()
                    .event("log")
                    .id(line.seq.to_string())
                    .data(data.to_string()),
            );
        }
        count
    }
    let cursor = Cursor {
        state,
        id,
        after,
        until,
        status: None,
        pending: Default::default(),
        done: false,
        _slot: slot,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok(event), c));
            }
            if c.done || tokio::time::Instant::now() >= c.until {
                return None;
            }
            if c.status.is_some() {
                tokio::time::sleep_until(c.until.min(tokio::time::Instant::now() + EVENTS_POLL))
                    .await;
            }
            next_logs(&mut c).await;
            match c.state.store.run(c.id).await {
                Ok(Some(run)) if Some(run.status) != c.status => {
                    c.status = Some(run.status);
                    c.done = run.status.is_final();
                    // Lines written after the fetch above and before the run ended: all of
                    // them go before the last status.
                    while c.done && next_logs(&mut c).await > 0 {}
                    let data = serde_json::json!({"status": run.status.as_str()});
                    c.pending.push_back(
                        Event::default()
                            .event("status")
                            .id(c.after.to_string())
                            .data(data.to_string()),
                    );
                }
                Ok(Some(_)) => {}
                _ => c.done = true,
            }
        }
    })
}

/// `GET /audit`: whether the audit trail verifies ([`TrailStatus`]: only what was appended
/// since the last request is read).
pub async fn audit_page(State(state): State<AppState>, who: PageCaller) -> Response {
    let policy = policy_or_return!(state);
    let report = TrailStatus::of(state.audit.path(), &state.audit_key_path)
        .report()
        .await;
    let body = match report {
        Ok(report) if report.ok() => format!(
            "<p data-audit=\"ok\">The audit trail verifies: {} lines, chain intact.</p>",
            report.lines
        ),
        Ok(report) => format!(
            "<p class=\"error\" data-audit=\"tampered\">The audit trail does NOT verify ({} lines read). Tell the operator.</p>",
            report.lines
        ),
        Err(error) => {
            tracing::error!(%error, "the audit trail cannot be verified");
            "<p class=\"error\" data-audit=\"error\">The audit trail could not be read. Tell the operator.</p>".to_owned()
        }
    };
    page_for(&state, &who, &policy, StatusCode::OK, "Audit trail", &body)
}

/// `GET /static/app.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
        .into_response()
}

/// `GET /static/app.css`.
pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/app.css"),
    )
        .into_response()
}
