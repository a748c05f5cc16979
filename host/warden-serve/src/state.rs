//! What every handler and worker shares, and who is calling: the caller extractors that turn a
//! session cookie or a bearer token into a person (401 / a sign-in redirect otherwise), with
//! the per-person rate limit applied before anything else is done for them.

use crate::auth::{Auth, Caller};
use crate::policy_source::PolicySource;
use crate::ratelimit::RateLimiter;
use crate::runs;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::Notify;
use warden_audit::{AuditTrail, Event};
use warden_policy::{Decision, Person, Policy, Principal};
use warden_store::{Recovery, Store};
use warden_vocab::Delegation;

/// The app role that sees every run.
pub const OPERATOR_ROLE: &str = "Warden.Operator";

/// Shared state (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Auth {
        state.auth.clone()
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    /// The policy file, read again when it changes.
    pub policy: PolicySource,
    /// Runs, approvals, logs, sessions.
    pub store: Store,
    /// Sign-in and tokens.
    pub auth: Auth,
    /// The audit trail (refusals of the service's own, and every run's lines).
    pub audit: Arc<AuditTrail>,
    /// Its key file, for the verification shown on the audit page.
    pub audit_key_path: PathBuf,
    /// Requests per person.
    pub limiter: RateLimiter,
    /// Wakes a worker when a run is queued.
    pub wake: Arc<Notify>,
    /// Group object id → display name, for policies that name groups by name.
    pub group_names: GroupNames,
    /// False once shutdown began: no run is started or accepted.
    pub accepting: AtomicBool,
}

impl Shared {
    /// The policy now, or a 503 naming why it cannot be read.
    #[allow(
        clippy::result_large_err,
        reason = "the error is the handler's answer itself (axum's Response), returned at once"
    )]
    pub fn policy_now(&self) -> Result<Arc<Policy>, Response> {
        self.policy.current().map_err(|error| {
            tracing::error!(%error, "the policy cannot be loaded; refusing requests");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the service's policy cannot be loaded; the operator has been told",
            )
                .into_response()
        })
    }

    /// The policy's view of a signed-in person.
    pub fn person(&self, caller: &Caller) -> Person {
        let signed = &caller.person;
        Person {
            oid: signed.oid.clone(),
            upn: signed.upn.clone(),
            groups: signed.groups.clone(),
            group_names: names_of_groups(&signed.groups, &self.group_names),
            roles: signed.roles.clone(),
        }
    }

    /// Writes a refusal of the service's own (a 403) to the audit trail: who, what, why.
    pub fn audit_refusal(&self, person: &Person, what: &str, reason: &str) {
        let id = uuid::Uuid::new_v4().to_string();
        self.audit_service_refusal(Event::decision(
            &id,
            &Principal::ad_hoc(format!("user:{}", person.upn), ""),
            &service_refusal(
                "serve:forbidden",
                format!("{what}: {reason} (oid {})", person.oid),
            ),
        ));
    }

    /// Writes to the audit trail that a run was refused when it was to start (the policy
    /// changed while it waited): the line names the run's person, task and approver.
    pub fn audit_refused_at_start(&self, delegation: &Delegation, reason: &str) {
        self.audit_service_refusal(
            Event::decision(
                &delegation.service_run,
                &Principal::ad_hoc(format!("user:{}", delegation.person.upn), ""),
                &service_refusal("serve:refused-at-start", reason.to_owned()),
            )
            .delegated(Some(&self.audit.bind_delegation(delegation))),
        );
    }

    /// Writes to the audit trail what became of runs taken back from a worker that stopped
    /// (this instance's recovery at start, or the sweep of silent instances): a
    /// `serve:recovered` line for each run queued again, a `serve:outcome-unknown` line for
    /// each that may have written. Each names the run's person, task and approver.
    pub async fn audit_recovery(&self, recovery: &Recovery) {
        let kinds = [
            (
                &recovery.requeued,
                "serve:recovered",
                "its worker stopped before any write: queued again",
            ),
            (
                &recovery.outcome_unknown,
                "serve:outcome-unknown",
                "its worker stopped after it may have sent a write: never re-run by itself",
            ),
        ];
        for (ids, rule, reason) in kinds {
            for id in ids {
                match self.store.run(*id).await {
                    Ok(Some(run)) => self.audit_service_refusal(
                        Event::decision(
                            &id.to_string(),
                            &Principal::ad_hoc(format!("user:{}", run.requested_by.upn), ""),
                            &service_refusal(rule, reason.to_owned()),
                        )
                        .delegated(Some(&self.audit.bind_delegation(&runs::delegation(&run)))),
                    ),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, run = %id, "could not read a recovered run to audit it")
                    }
                }
            }
        }
    }

    fn audit_service_refusal(&self, event: Event) {
        if let Err(error) = self.audit.record(&event) {
            tracing::error!(%error, "could not write a refusal to the audit trail");
        }
    }
}

/// Entra group object ids to the names tasks may use for them (`--group-name`).
pub type GroupNames = HashMap<String, String>;

/// The names `group_names` gives the groups `groups` (ids without a name are left out).
pub fn names_of_groups(groups: &[String], group_names: &GroupNames) -> Vec<String> {
    groups
        .iter()
        .filter_map(|id| group_names.get(id).cloned())
        .collect()
}

/// A refusal of the service's own, as an audit line's decision.
fn service_refusal(rule: &str, reason: String) -> Decision {
    Decision {
        allowed: false,
        rule: rule.to_owned(),
        reason,
        cmdlet: "(serve)".into(),
        parameters: Default::default(),
        sensitive: Vec::new(),
        write: false,
    }
}

/// A signed-in caller of the API: 401 without a valid token or session, 429 over the rate.
#[derive(Debug)]
pub struct ApiCaller {
    /// The caller as authenticated.
    pub caller: Caller,
    /// As the policy sees them.
    pub person: Person,
}

/// A signed-in caller of the page: sent to sign in without a session.
#[derive(Debug)]
pub struct PageCaller {
    /// The caller as authenticated.
    pub caller: Caller,
    /// As the policy sees them.
    pub person: Person,
}

impl ApiCaller {
    /// Whether they hold the operator role.
    pub fn operator(&self) -> bool {
        self.person.roles.iter().any(|r| r == OPERATOR_ROLE)
    }
}

impl PageCaller {
    /// Whether they hold the operator role.
    pub fn operator(&self) -> bool {
        self.person.roles.iter().any(|r| r == OPERATOR_ROLE)
    }
}

/// A JSON error answer: `{"error": message}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// 429 with `Retry-After` (whole seconds, at least 1): `wait` is what the rate limit said.
pub fn too_many(wait: std::time::Duration) -> Response {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests; wait and try again",
    );
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(value) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let caller = match state.auth.caller(parts).await {
            Ok(caller) => caller,
            Err(error) => {
                tracing::debug!(%error, "unauthenticated API request");
                let mut response = json_error(
                    StatusCode::UNAUTHORIZED,
                    "sign in: send an Entra ID access token for this service as Authorization: Bearer",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Err(response);
            }
        };
        state.limiter.check(&caller.person.oid).map_err(too_many)?;
        // A cookie is sent by the browser on its own: a state-changing API call made with one
        // needs the CSRF token in its header (a bearer token is never ambient).
        if matches!(caller.via, crate::auth::Via::Session { .. })
            && !parts.method.is_safe()
            && state.auth.check_csrf_header(&caller, parts).is_err()
        {
            return Err(json_error(StatusCode::FORBIDDEN, "forbidden"));
        }
        let person = state.person(&caller);
        Ok(Self { caller, person })
    }
}

impl FromRequestParts<AppState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Ok(caller) = state.auth.caller(parts).await else {
            // Back to this page after sign-in; the sign-in route accepts local paths only.
            let here = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            return Err(Redirect::to(&Auth::signin_path(here)).into_response());
        };
        state.limiter.check(&caller.person.oid).map_err(too_many)?;
        let person = state.person(&caller);
        Ok(Self { caller, person })
    }
}
