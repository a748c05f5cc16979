//! The request log: what each client actually sent, for tests that assert the wire form
//! (headers, form field names, the JOSE header of client assertions) rather than the outcome.
//!
//! It records method, path, redacted query, header names and values, form field *names*, a
//! summary of any `client_assertion` (its JOSE header and claim names, never its signature), the
//! status and the error code. It refuses to keep values that authenticate: `Authorization`
//! (scheme kept), `X-IDENTITY-HEADER`, `secret`, cookies, and secret-bearing query parameters are
//! replaced by `[redacted]`; form values are not kept at all. The control plane
//! (`/_exosim/...`) is not logged. The log holds the latest [`MAX_ENTRIES`] requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::state::Shared;

/// Bound on kept entries: tests make hundreds of requests, not millions.
pub const MAX_ENTRIES: usize = 10_000;

/// Largest form body the emulator reads (Entra's own limit is far below this).
const MAX_FORM_BYTES: usize = 1 << 20;

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// When it arrived, Unix milliseconds.
    pub unix_ms: u64,
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query string with secret-bearing parameters redacted.
    pub query: Option<String>,
    /// Header names (lower case) and values, with credentials redacted.
    pub headers: Vec<(String, String)>,
    /// Names of the form fields, in order (values are not kept).
    pub form_fields: Vec<String>,
    /// The `client_assertion`, summarised, when one was posted.
    pub client_assertion: Option<AssertionSummary>,
    /// Response status.
    pub status: u16,
    /// Error code of the response (`AADSTS7000215`, `bad_request_102`), if it was an error.
    pub error: Option<String>,
    /// The tenant (its id) the path named (`/{tenant}/oauth2/…`, `/adminapi/{v}/{tenant}/…`),
    /// when it named a known one.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl LoggedRequest {
    /// The value of header `name` (case-insensitive), as logged.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the form had a field `name` (exact, case-sensitive).
    pub fn has_form_field(&self, name: &str) -> bool {
        self.form_fields.iter().any(|f| f == name)
    }
}

/// The parts of a client assertion that describe how it was built; no signature, no values of
/// claims other than their names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AssertionSummary {
    /// The JOSE header as sent (all of it is public: alg, typ, thumbprints, kid, x5c).
    pub header: Map<String, Value>,
    /// `alg`.
    pub alg: Option<String>,
    /// Which key reference the header carried, in the order Entra looks: `x5t#S256`, `x5t`,
    /// `kid`.
    pub thumbprint_param: Option<String>,
    /// How that thumbprint was encoded: `base64url`, `base64url-padded`, `base64`,
    /// `base64-padded` (`base64` means `+` or `/` appeared).
    pub thumbprint_encoding: Option<String>,
    /// Whether an `x5c` chain was sent.
    pub has_x5c: bool,
    /// Claim names, sorted.
    pub claim_names: Vec<String>,
    /// `exp - iat` (or `exp - nbf` without `iat`), in seconds.
    pub lifetime_secs: Option<i64>,
}

/// Error code attached to a response by a handler, for counting and logging.
#[derive(Debug, Clone)]
pub(crate) struct ErrorTag(pub String);

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Mutex<VecDeque<LoggedRequest>>,
}

impl RequestLog {
    fn push(&self, entry: LoggedRequest) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub(crate) fn snapshot(&self) -> Vec<LoggedRequest> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Middleware: buffers a form body (to read field names and the assertion header), runs the
/// handler, then counts the error code and appends the log entry.
pub(crate) async fn record(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/_exosim/") {
        return next.run(request).await;
    }
    let unix_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    let method = request.method().to_string();
    let query = request.uri().query().map(redact_query);
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes());
            (
                name.as_str().to_owned(),
                redact_header(name.as_str(), &value),
            )
        })
        .collect();
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });

    let (mut form_fields, mut client_assertion) = (Vec::new(), None);
    let request = if is_form {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
        };
        if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) {
            for (name, value) in &pairs {
                if name == "client_assertion" && client_assertion.is_none() {
                    client_assertion = summarize_assertion(value);
                }
                form_fields.push(name.clone());
            }
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };

    let response = next.run(request).await;
    let error = response.extensions().get::<ErrorTag>().map(|t| t.0.clone());
    // Method, path and outcome only: queries, headers and bodies may carry credentials.
    tracing::debug!(%method, %path, status = response.status().as_u16(), error = error.as_deref(), "request");
    if let Some(code) = &error {
        shared.counters.error(code);
    }
    let tenant_id = tenant_of_path(&shared, &path);
    shared.log.push(LoggedRequest {
        unix_ms,
        method,
        path,
        query,
        headers,
        form_fields,
        client_assertion,
        status: response.status().as_u16(),
        error,
        tenant_id,
    });
    response
}

/// The known tenant among the first path segments, as its id.
fn tenant_of_path(shared: &Shared, path: &str) -> Option<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .take(3)
        .find_map(|segment| match shared.directory.lookup(segment) {
            crate::directory::TenantLookup::Found(t) => Some(t.id.clone()),
            _ => None,
        })
}

const SECRET_QUERY_PARAMS: &[&str] = &[
    "client_secret",
    "client_assertion",
    "assertion",
    "password",
    "access_token",
    "refresh_token",
    "code",
    "code_verifier",
    "passwd",
    "id_token",
    "id_token_hint",
];

fn redact_query(query: &str) -> String {
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return "[unparseable query redacted]".to_owned();
    };
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| {
            if SECRET_QUERY_PARAMS.contains(&k.to_ascii_lowercase().as_str()) {
                (k, "[redacted]".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn redact_header(name: &str, value: &str) -> String {
    match name {
        "authorization" | "proxy-authorization" => match value.split_once(' ') {
            Some((scheme, _)) => format!("{scheme} [redacted]"),
            None => "[redacted]".to_owned(),
        },
        "x-identity-header" | "secret" | "cookie" | "set-cookie" => "[redacted]".to_owned(),
        _ => value.to_owned(),
    }
}

fn summarize_assertion(token: &str) -> Option<AssertionSummary> {
    let jws = crate::jose::parse(token).ok()?;
    let thumbprint_param = ["x5t#S256", "x5t", "kid"]
        .into_iter()
        .find(|p| jws.header.contains_key(*p))
        .map(str::to_owned);
    let thumbprint_encoding = thumbprint_param
        .as_deref()
        .filter(|p| *p != "kid")
        .and_then(|p| jws.header.get(p))
        .and_then(Value::as_str)
        .map(classify_base64);
    // NumericDate may carry a fraction (msal-python sends `time.time()` floats).
    let claim_secs = |name: &str| jws.claims.get(name).and_then(Value::as_f64);
    let lifetime_secs = claim_secs("exp").and_then(|exp| {
        claim_secs("iat")
            .or_else(|| claim_secs("nbf"))
            .map(|start| (exp - start).round() as i64)
    });
    let mut claim_names: Vec<String> = jws.claims.keys().cloned().collect();
    claim_names.sort();
    Some(AssertionSummary {
        alg: jws
            .header
            .get("alg")
            .and_then(Value::as_str)
            .map(str::to_owned),
        has_x5c: jws.header.contains_key("x5c"),
        thumbprint_param,
        thumbprint_encoding,
        claim_names,
        lifetime_secs,
        header: jws.header,
    })
}

fn classify_base64(text: &str) -> String {
    let alphabet = if text.contains(['+', '/']) {
        "base64"
    } else {
        "base64url"
    };
    if text.ends_with('=') {
        format!("{alphabet}-padded")
    } else {
        alphabet.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(
            redact_header("authorization", "Basic abc"),
            "Basic [redacted]"
        );
        assert_eq!(redact_header("x-identity-header", "s"), "[redacted]");
        assert_eq!(redact_header("client-request-id", "x"), "x");
        let q = redact_query("client-request-id=1&client_secret=s3cret");
        assert!(
            q.contains("client-request-id=1") && !q.contains("s3cret"),
            "{q}"
        );
    }

    #[test]
    fn thumbprint_encodings() {
        assert_eq!(classify_base64("ab-_"), "base64url");
        assert_eq!(classify_base64("ab=="), "base64url-padded");
        assert_eq!(classify_base64("a+b/="), "base64-padded");
    }
}
