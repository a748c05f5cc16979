//! `POST /adminapi/{version}/{tenant}/$batch`: at most ten InvokeCommand sub-requests, each run
//! (and logged, throttled and fault-injected) as its own call, answered together in a 200
//! `{"responses":[{"id","status","headers","body"}]}` whatever each sub-request's status — a
//! throttled one is a 429 inside the 200 (docs/fidelity.md, "$batch").
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

use super::{Answer, ExchangeRequestRecord, authenticate, run_invoke, service_error};
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
    let answer = answer(&shared, peer, &version, &tenant_segment, &headers, &body).await;
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
) -> Answer {
    let Some(tenant_id) = shared.exchange.resolve_tenant(shared, tenant_segment) else {
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
    let mut responses = Vec::with_capacity(requests.len());
    for request in &requests {
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let (status, sub_headers, sub_body) =
            sub_request(shared, peer, version, tenant_segment, headers, request).await;
        responses
            .push(json!({"id": id, "status": status, "headers": sub_headers, "body": sub_body}));
    }
    Answer::json(
        StatusCode::OK,
        json!({ "responses": responses }).to_string(),
    )
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
