//! The test control plane under `/_exosim/`: counters, fault injection (token endpoints and
//! Exchange), the request logs and federated-token minting, so an out-of-process emulator can be driven like an in-process one.
//!
//! It is unauthenticated by design — the emulator listens on loopback for tests — and it is not a
//! Microsoft API: nothing a real client would call lives here, and these requests are not logged.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::TOKEN_EXCHANGE_AUDIENCE;
use crate::exchange::faults::{ExchangeFaultsSnapshot, ExchangeFaultsUpdate};
use crate::faults::{FaultsSnapshot, FaultsUpdate};
use crate::state::Shared;
use crate::{Counters, LoggedRequest};

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_exosim/counters", get(counters))
        .route(
            "/_exosim/faults",
            get(faults).post(update_faults).delete(clear_faults),
        )
        .route("/_exosim/requests", get(requests).delete(clear_requests))
        .route("/_exosim/federated-token", post(federated_token))
        .route(
            "/_exosim/exchange-faults",
            get(exchange_faults)
                .post(update_exchange_faults)
                .delete(clear_exchange_faults),
        )
        .route(
            "/_exosim/exchange-requests",
            get(exchange_requests).delete(clear_exchange_requests),
        )
}

async fn exchange_faults(State(shared): State<Arc<Shared>>) -> Json<ExchangeFaultsSnapshot> {
    Json(shared.exchange.faults.snapshot())
}

async fn update_exchange_faults(
    State(shared): State<Arc<Shared>>,
    Json(mut update): Json<ExchangeFaultsUpdate>,
) -> Result<Json<ExchangeFaultsSnapshot>, (StatusCode, Json<serde_json::Value>)> {
    let refuse = |message: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": message })));
    if let Some(selector) = &update.tenant {
        // A selector that names no tenant would silently never fire: refuse it.
        let crate::directory::TenantLookup::Found(tenant) = shared.directory.lookup(selector)
        else {
            return Err(refuse(format!(
                "tenant '{selector}' is not a tenant of this emulator (give a tenant id or domain from the ready file)"
            )));
        };
        if update.strict_anchor.is_some() {
            return Err(refuse(
                "strict_anchor is global; send it without a tenant".to_owned(),
            ));
        }
        update.tenant = Some(tenant.id.clone());
    }
    shared.exchange.faults.apply(&update);
    Ok(Json(shared.exchange.faults.snapshot()))
}

async fn clear_exchange_faults(State(shared): State<Arc<Shared>>) -> Json<ExchangeFaultsSnapshot> {
    shared.exchange.faults.clear();
    Json(shared.exchange.faults.snapshot())
}

async fn exchange_requests(
    State(shared): State<Arc<Shared>>,
) -> Json<Vec<crate::ExchangeRequestRecord>> {
    Json(shared.exchange.log_snapshot())
}

async fn clear_exchange_requests(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    shared.exchange.clear_log();
    Json(json!({ "cleared": true }))
}

async fn counters(State(shared): State<Arc<Shared>>) -> Json<Counters> {
    Json(shared.counters.snapshot())
}

async fn faults(State(shared): State<Arc<Shared>>) -> Json<FaultsSnapshot> {
    Json(shared.faults.snapshot())
}

async fn update_faults(
    State(shared): State<Arc<Shared>>,
    Json(update): Json<FaultsUpdate>,
) -> Json<FaultsSnapshot> {
    shared.faults.apply(&update);
    Json(shared.faults.snapshot())
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<FaultsSnapshot> {
    shared.faults.clear();
    Json(shared.faults.snapshot())
}

async fn requests(State(shared): State<Arc<Shared>>) -> Json<Vec<LoggedRequest>> {
    Json(shared.log.snapshot())
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    shared.log.clear();
    Json(json!({ "cleared": true }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FederatedTokenRequest {
    subject: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    lifetime_secs: Option<u64>,
    /// Backdates `iat`/`nbf` (and so `exp`) by this many seconds, to make expired tokens.
    #[serde(default)]
    issued_secs_ago: Option<u64>,
}

async fn federated_token(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<FederatedTokenRequest>,
) -> Json<serde_json::Value> {
    let token = crate::identity::issue::mint_federated(
        &shared,
        &request.subject,
        request
            .audience
            .as_deref()
            .unwrap_or(TOKEN_EXCHANGE_AUDIENCE),
        Duration::from_secs(request.lifetime_secs.unwrap_or(3600)),
        Duration::from_secs(request.issued_secs_ago.unwrap_or(0)),
    );
    Json(json!({ "token": token }))
}
