//! `POST /adminapi/{version}/{tenant}/$batch`: at most ten InvokeCommand sub-requests, each run
//! (and logged, throttled and fault-injected) as its own call, answered together in a 200
//! `{"responses":[{"id","status","headers","body"}]}` whatever each sub-request's status — a
//! throttled one is a 429 inside the 200 (docs/fidelity.md, "$batch").
//!
//! A fault queued for the cmdlet `"$batch"` hits the outer POST ([`outer_fault`]): a 429, 503,
//! 401 or reset-before-apply refuses the whole batch before any sub-request runs; a 500, 502,
//! 504 or reset-after-apply answers after every sub-request ran (writes applied), so a client
//! that re-sends the writes alone applies them twice.
//!
//! Sources: the module dump (Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`, the batch
//! request and `Deserialize-BatchRequest`); KelvinTegelaar/CIPP-API
//! `Modules/CIPPCore/Public/GraphHelper/New-ExoBulkRequest.ps1` (ten per batch; 429 inside 200).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::faults::ExchangeFault;
use super::{
    Answer, ExchangeRequestRecord, authenticate, cmdlet_error, invalid_token, run_invoke,
    server_failure, service_error, too_many,
};
use crate::counters::Counter;
use crate::state::Shared;

/// The most sub-requests one `$batch` may carry.
const MAX_BATCH: usize = 10;

pub(crate) async fn batch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((version, tenant_segment)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut record = ExchangeRequestRecord::received("POST", &uri, &headers);
    record.cmdlet = Some("$batch".to_owned());
    let answer = answer(
        &shared,
        peer,
        &version,
        &tenant_segment,
        &headers,
        &body,
        &mut record,
    )
    .await;
    record.status = answer.status.as_u16();
    record.exception_type = answer.exception_type.clone();
    shared.exchange.record(record);
    answer.into_response(&request_id, None)
}

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    version: &str,
    tenant_segment: &str,
    headers: &HeaderMap,
    body: &Bytes,
    record: &mut ExchangeRequestRecord,
) -> Answer {
    record.tenant_id = shared.exchange.resolve_tenant(shared, tenant_segment);
    let Some(tenant_id) = record.tenant_id.clone() else {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        return super::invalid_token(shared, "The access token was issued for another tenant.");
    };
    if let Err(answer) = authenticate(shared, headers, &tenant_id) {
        return answer;
    }
    let bad = |message: &str| service_error(StatusCode::BAD_REQUEST, "BadRequest", message);
    let requests = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut root)) => match root.remove("requests") {
            Some(Value::Array(items)) => items,
            _ => return bad("The $batch body has no 'requests' array."),
        },
        _ => return bad("The $batch body is not a JSON object."),
    };
    if requests.len() > MAX_BATCH {
        return bad(&format!(
            "A $batch may hold at most {MAX_BATCH} requests; this one holds {}.",
            requests.len()
        ));
    }
    let fault = shared
        .exchange
        .faults
        .take_scoped(super::batch::SCOPE, &tenant_id);
    if let Some(fault) = fault {
        record.fault = Some(fault.name().to_owned());
        shared.counters.bump(Counter::ExchangeFaultInjected);
        if let Some(refusal) = refused_before_running(shared, peer, fault) {
            return refusal;
        }
    }
    let mut responses = Vec::with_capacity(requests.len());
    for request in &requests {
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let (status, sub_headers, sub_body) =
            sub_request(shared, peer, version, tenant_segment, headers, request).await;
        responses
            .push(json!({"id": id, "status": status, "headers": sub_headers, "body": sub_body}));
    }
    if let Some(fault) = fault
        && let Some(failure) = failed_after_running(shared, peer, fault).await
    {
        return failure;
    }
    Answer::json(
        StatusCode::OK,
        json!({ "responses": responses }).to_string(),
    )
}

/// The `cmdlet` a queued fault names to hit the outer `$batch` POST.
pub(crate) const SCOPE: &str = "$batch";

/// A whole-batch fault the service gives before running anything, or `None` for the others.
fn refused_before_running(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    fault: ExchangeFault,
) -> Option<Answer> {
    Some(match fault {
        ExchangeFault::TooManyRequests { retry_after_secs } => too_many(retry_after_secs),
        ExchangeFault::ServiceUnavailable => service_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please try again later.",
        ),
        ExchangeFault::ResetBeforeApply => {
            shared.exchange.connections.kill(peer);
            service_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Reset",
                "connection reset",
            )
        }
        ExchangeFault::TokenExpired => {
            shared.faults.expire_issued_tokens();
            shared.counters.bump(Counter::ExchangeAuthFailure);
            invalid_token(shared, "The access token has expired.")
        }
        ExchangeFault::Unauthorized => {
            shared.counters.bump(Counter::ExchangeAuthFailure);
            service_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "User is not allowed to call $batch",
            )
        }
        _ => return None,
    })
}

/// A whole-batch fault given after every sub-request ran (their writes applied), or `None`.
async fn failed_after_running(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    fault: ExchangeFault,
) -> Option<Answer> {
    Some(match fault {
        ExchangeFault::ServerError | ExchangeFault::BadGateway => server_failure(fault),
        ExchangeFault::TransientServerError => {
            cmdlet_error(&super::cmdlets::ExoError::transient())
        }
        ExchangeFault::GatewayTimeout => Answer {
            status: StatusCode::GATEWAY_TIMEOUT,
            body: "<html><head><title>504 Gateway Timeout</title></head><body><h1>504 Gateway Timeout</h1></body></html>".to_owned(),
            content_type: "text/html",
            headers: Vec::new(),
            exception_type: None,
        },
        ExchangeFault::ResetAfterApply => {
            shared.exchange.connections.kill(peer);
            service_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Reset",
                "connection reset",
            )
        }
        ExchangeFault::SlowAnswer { delay_ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            return None;
        }
        _ => return None,
    })
}

/// Runs one sub-request: its status, headers and body (JSON when it is JSON).
async fn sub_request(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    version: &str,
    tenant_segment: &str,
    outer: &HeaderMap,
    request: &Value,
) -> (u16, Map<String, Value>, Value) {
    let refuse = |status: StatusCode, message: &str| {
        let answer = service_error(status, "BadRequest", message);
        let body = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        (status.as_u16(), Map::new(), body)
    };
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let url = request.get("url").and_then(Value::as_str).unwrap_or("");
    let Ok(uri) = url.parse::<Uri>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The sub-request's url is not a URL.",
        );
    };
    // Only InvokeCommand of the batch's own tenant and version may be batched here.
    let expected = format!("/{version}/{tenant_segment}/InvokeCommand");
    if !method.eq_ignore_ascii_case("POST")
        || !uri
            .path()
            .to_ascii_lowercase()
            .ends_with(&expected.to_ascii_lowercase())
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "A sub-request must be POST .../adminapi/{version}/{tenant_segment}/InvokeCommand."
            ),
        );
    }
    let mut headers = outer.clone();
    headers.remove("content-length");
    if let Some(own) = request.get("headers").and_then(Value::as_object) {
        for (name, value) in own {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(name, value);
            }
        }
    }
    let body = request
        .get("body")
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let (answer, rate) = run_invoke(
        shared,
        peer,
        "POST",
        version,
        tenant_segment,
        &uri,
        &headers,
        &Bytes::from(body),
    )
    .await;
    let mut sub_headers = Map::new();
    sub_headers.insert("content-type".into(), Value::from(answer.content_type));
    if let Some(t) = &answer.exception_type {
        sub_headers.insert("x-exceptiontype".into(), Value::from(t.clone()));
    }
    for (name, value) in &answer.headers {
        sub_headers.insert((*name).to_owned(), Value::from(value.clone()));
    }
    if let Some(rate) = rate {
        sub_headers.insert(
            "rate-limit-remaining".into(),
            Value::from(rate.remaining.to_string()),
        );
    }
    let body = serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body));
    (answer.status.as_u16(), sub_headers, body)
}
