//! The Entra ID token endpoint's wire format: URLs, form bodies, success and error bodies.
//!
//! v2 (`/{tenant}/oauth2/v2.0/token`, `scope=`) and v1 (`/{tenant}/oauth2/token`,
//! `resource=`). Numbers in responses may be JSON numbers or decimal strings (v1 and managed
//! identity send strings). This module only encodes and decodes; it sends nothing and never
//! retries.

use crate::error::{AuthError, EntraError};
use crate::secret::{AccessToken, Secret};
use crate::transport::HttpResponse;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The client-assertion type for JWT bearer assertions (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How far before expiry a token is refreshed when Entra gives no `refresh_in`.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Which token endpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointVersion {
    /// `oauth2/v2.0/token` with `scope`.
    #[default]
    V2,
    /// The legacy `oauth2/token` with `resource`.
    V1,
}

impl std::str::FromStr for EndpointVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().trim_start_matches('v') {
            "2" | "2.0" => Ok(Self::V2),
            "1" | "1.0" => Ok(Self::V1),
            _ => Err(format!(
                "unknown token endpoint version '{s}'; use v2 or v1"
            )),
        }
    }
}

/// The token URL for an authority host and tenant.
pub fn token_url(authority_host: &str, tenant: &str, version: EndpointVersion) -> String {
    let host = authority_host.trim_end_matches('/');
    match version {
        EndpointVersion::V2 => format!("{host}/{tenant}/oauth2/v2.0/token"),
        EndpointVersion::V1 => format!("{host}/{tenant}/oauth2/token"),
    }
}

/// The v1 `resource` for a v2 scope: everything before the last `/.default`.
pub fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// How the client proves who it is.
#[derive(Debug)]
pub enum ClientAuth<'a> {
    /// `client_secret=`.
    Secret(&'a Secret),
    /// `client_assertion_type=jwt-bearer&client_assertion=`.
    Assertion(&'a Secret),
}

/// The form body of a client-credentials request, zeroized on drop.
pub fn client_credentials_form(
    version: EndpointVersion,
    client_id: &str,
    scope: &str,
    auth: &ClientAuth<'_>,
) -> Zeroizing<Vec<u8>> {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
    ];
    match version {
        EndpointVersion::V2 => pairs.push(("scope", scope)),
        EndpointVersion::V1 => pairs.push(("resource", scope_to_resource(scope))),
    }
    match auth {
        ClientAuth::Secret(secret) => pairs.push(("client_secret", secret.expose())),
        ClientAuth::Assertion(assertion) => {
            pairs.push(("client_assertion_type", JWT_BEARER));
            pairs.push(("client_assertion", assertion.expose()));
        }
    }
    // Each field is encoded exactly once: a double-encoded scope is AADSTS1002012.
    Zeroizing::new(
        serde_urlencoded::to_string(&pairs)
            .expect("string pairs encode")
            .into_bytes(),
    )
}

/// A number that may arrive as a JSON number or a decimal string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Lenient {
    Number(u64),
    Float(f64),
    Text(String),
}

impl Lenient {
    fn seconds(&self) -> Option<u64> {
        match self {
            Lenient::Number(n) => Some(*n),
            Lenient::Float(f) if *f >= 0.0 => Some(*f as u64),
            Lenient::Float(_) => None,
            Lenient::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<Lenient>,
    expires_on: Option<Lenient>,
    refresh_in: Option<Lenient>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
}

/// Turns a token endpoint (or managed-identity endpoint) success body into a token.
///
/// `received_at` is the client's clock when the response arrived; lifetimes are relative to
/// it, so a skewed server clock does not confuse the cache (`expires_on` is used only when no
/// `expires_in` is given, as App Service sends).
pub fn parse_token_success(
    body: &[u8],
    url: &str,
    received_at: SystemTime,
) -> Result<AccessToken, AuthError> {
    let bad = |reason: String| AuthError::BadResponse {
        url: url.to_owned(),
        reason,
    };
    let parsed: SuccessBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the token response is not the documented JSON ({e})"
        ))
    })?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("the token response has no access_token".into()))?;
    if let Some(kind) = &parsed.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(bad(format!("token_type is '{kind}', expected Bearer")));
    }
    // Untrusted numbers: a lifetime past what a clock can hold is refused, not added.
    let expires_on = if let Some(seconds) = parsed.expires_in.as_ref().and_then(Lenient::seconds) {
        received_at.checked_add(Duration::from_secs(seconds))
    } else if let Some(epoch) = parsed.expires_on.as_ref().and_then(Lenient::seconds) {
        UNIX_EPOCH.checked_add(Duration::from_secs(epoch))
    } else {
        return Err(bad(
            "the token response has neither expires_in nor expires_on".into(),
        ));
    }
    .ok_or_else(|| bad("the token response's lifetime is out of range".into()))?;
    let lifetime = expires_on.duration_since(received_at).unwrap_or_default();
    let default_refresh = received_at + lifetime.saturating_sub(REFRESH_BEFORE_EXPIRY);
    let refresh_on = match parsed.refresh_in.as_ref().and_then(Lenient::seconds) {
        Some(refresh_in) => received_at
            .checked_add(Duration::from_secs(refresh_in))
            .unwrap_or(default_refresh)
            .min(default_refresh.max(received_at)),
        None => default_refresh,
    };
    Ok(AccessToken::new(token, expires_on, refresh_on))
}

/// Turns a non-2xx token endpoint answer into an [`EntraError`], or `None` when the body is
/// not Entra's error JSON.
pub fn parse_entra_error(response: &HttpResponse, url: &str) -> Option<EntraError> {
    let body: ErrorBody = serde_json::from_slice(&response.body).ok()?;
    let error = body.error?;
    let description = body
        .error_description
        .as_deref()
        .map(|d| d.split(['\r', '\n']).next().unwrap_or(d).trim().to_owned())
        .unwrap_or_default();
    Some(EntraError {
        status: response.status,
        error,
        description,
        codes: body.error_codes,
        trace_id: body.trace_id,
        correlation_id: body.correlation_id,
        url: url.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn numbers_may_be_strings_and_refresh_in_is_honoured() {
        let now = SystemTime::now();
        let cases = [
            (
                r#"{"token_type":"Bearer","expires_in":3599,"access_token":"a"}"#,
                3599,
                3299,
            ),
            (
                r#"{"token_type":"Bearer","expires_in":"3599","access_token":"a"}"#,
                3599,
                3299,
            ),
            (
                r#"{"token_type":"Bearer","expires_in":"3600","refresh_in":"1800","access_token":"a"}"#,
                3600,
                1800,
            ),
            (
                r#"{"token_type":"Bearer","expires_in":120,"access_token":"a"}"#,
                120,
                0,
            ),
        ];
        for (body, expires, refresh) in cases {
            let token = parse_token_success(body.as_bytes(), "u", now).unwrap();
            assert_eq!(
                token.expires_on.duration_since(now).unwrap().as_secs(),
                expires,
                "{body}"
            );
            assert_eq!(
                token.refresh_on.duration_since(now).unwrap().as_secs(),
                refresh,
                "{body}"
            );
        }
    }

    #[test]
    fn app_service_expires_on_is_used_without_expires_in() {
        let now = SystemTime::now();
        let epoch = now.duration_since(UNIX_EPOCH).unwrap().as_secs() + 1000;
        let body =
            format!(r#"{{"access_token":"a","expires_on":"{epoch}","token_type":"Bearer"}}"#);
        let token = parse_token_success(body.as_bytes(), "u", now).unwrap();
        assert_eq!(token.expires_on, UNIX_EPOCH + Duration::from_secs(epoch));
    }

    #[test]
    fn malformed_success_bodies_are_refused() {
        for body in [
            "not json",
            r#"{"expires_in":1}"#,
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","expires_in":1,"token_type":"pop"}"#,
        ] {
            assert!(
                parse_token_success(body.as_bytes(), "u", SystemTime::now()).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn entra_error_keeps_first_line_codes_and_ids() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: x","error_codes":[7000215],"trace_id":"t","correlation_id":"c"}"#;
        let error = parse_entra_error(&response(401, body), "u").unwrap();
        assert_eq!(
            error.description,
            "AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(error.codes, vec![7000215]);
        assert_eq!(error.trace_id.as_deref(), Some("t"));
        assert!(parse_entra_error(&response(502, "<html>bad gateway</html>"), "u").is_none());
    }

    #[test]
    fn form_encodes_each_field_once() {
        let secret = Secret::new("a&b=c d".into());
        let body = client_credentials_form(
            EndpointVersion::V2,
            "cid",
            "https://outlook.office365.com/.default",
            &ClientAuth::Secret(&secret),
        );
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("scope=https%3A%2F%2Foutlook.office365.com%2F.default"),
            "{text}"
        );
        assert!(text.contains("client_secret=a%26b%3Dc+d"), "{text}");
        let v1 = client_credentials_form(
            EndpointVersion::V1,
            "cid",
            "https://outlook.office365.com/.default",
            &ClientAuth::Secret(&secret),
        );
        assert!(
            String::from_utf8(v1.to_vec())
                .unwrap()
                .contains("resource=https%3A%2F%2Foutlook.office365.com&")
        );
    }
}
