//! Entra's error responses: the AADSTS codes the emulator produces, with the `error` value and
//! HTTP status each comes with, rendered in the documented JSON shape.
//!
//! Shape (docs/protocol/entra-auth.md §1.6): `error`, `error_description` = `"AADSTSnnnn:
//! <message>\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ..."`, `error_codes`,
//! `timestamp`, `trace_id`, `correlation_id`, `error_uri`. Status 400, except `invalid_client`
//! (401, RFC 6749 §5.2) and the injected `temporarily_unavailable` faults (429/500/503). Messages
//! are written in our own words after Microsoft's; clients must branch on `error` and status, never
//! on the text. No message ever quotes a secret, a signature or a token.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::request_log::ErrorTag;

/// One Entra error, before it gets its trace id and timestamp.
#[derive(Debug, Clone)]
pub(crate) struct AadError {
    pub code: u32,
    pub error: &'static str,
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: &'a str,
    trace_id: &'a str,
    correlation_id: &'a str,
    error_uri: String,
}

impl AadError {
    fn new(code: u32, error: &'static str, message: impl Into<String>) -> Self {
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        AadError {
            code,
            error,
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Renders the error; `correlation_id` echoes the client's `client-request-id` when it sent one.
    pub(crate) fn respond(self, base_url: &str, correlation_id: &str) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let timestamp = entra_timestamp(time::OffsetDateTime::now_utc());
        let body = Body {
            error: self.error,
            error_description: format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.message
            ),
            error_codes: [self.code],
            timestamp: &timestamp,
            trace_id: &trace_id,
            correlation_id,
            error_uri: format!("{base_url}/error?code={}", self.code),
        };
        let mut response = (self.status, json_headers(&trace_id), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
            .extensions_mut()
            .insert(ErrorTag(format!("AADSTS{}", self.code)));
        response
    }

    // --- tenant -----------------------------------------------------------------------------

    pub(crate) fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            90002,
            "invalid_tenant",
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    pub(crate) fn tenant_malformed(tenant: &str) -> Self {
        Self::new(
            900023,
            "invalid_request",
            format!(
                "Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid external domain."
            ),
        )
    }

    pub(crate) fn tenant_alias(alias: &str) -> Self {
        Self::new(
            9001023,
            "invalid_request",
            format!(
                "The provided grant type isn't supported over the /{alias} endpoint. Client credential flows must use a tenant-specific endpoint (/{{tenant-id}} or /{{domain}})."
            ),
        )
    }

    // --- request shape ----------------------------------------------------------------------

    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::new(
            900144,
            "invalid_request",
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub(crate) fn malformed_request(detail: impl std::fmt::Display) -> Self {
        Self::new(
            9002313,
            "invalid_request",
            format!("Invalid request. Request is malformed or invalid. {detail}"),
        )
    }

    pub(crate) fn post_only() -> Self {
        Self::new(
            900561,
            "invalid_request",
            "The endpoint only accepts POST requests. Received a GET request.",
        )
    }

    pub(crate) fn unsupported_grant_type(grant: &str) -> Self {
        Self::new(
            70003,
            "unsupported_grant_type",
            format!(
                "The app requested an unsupported grant type '{grant}'. This emulator supports 'client_credentials', 'authorization_code', 'refresh_token' and 'password'."
            ),
        )
    }

    pub(crate) fn resource_parameter_on_v2() -> Self {
        Self::new(
            901002,
            "invalid_request",
            "The 'resource' request parameter is not supported. Use 'scope' with the resource's '/.default' scope on the v2.0 endpoint.",
        )
    }

    pub(crate) fn scope_without_default(scope: &str) -> Self {
        Self::new(
            1002012,
            "invalid_scope",
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    }

    pub(crate) fn multiple_resources(scope: &str) -> Self {
        Self::new(
            700022,
            "invalid_scope",
            format!(
                "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
            ),
        )
    }

    pub(crate) fn resource_not_found(resource: &str, tenant: &str) -> Self {
        Self::new(
            500011,
            "invalid_resource",
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    // --- client -----------------------------------------------------------------------------

    pub(crate) fn app_not_found(client_id: &str, tenant: &str) -> Self {
        Self::new(
            700016,
            "unauthorized_client",
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// `invalid_client` (401), as Entra really answers, although docs/protocol/entra-auth.md's
    /// table lists `invalid_request`: recorded responses show `"error":"invalid_client"` for this
    /// code.
    pub(crate) fn no_credential() -> Self {
        Self::new(
            7000218,
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    }

    pub(crate) fn wrong_secret(client_id: &str) -> Self {
        Self::new(
            7000215,
            "invalid_client",
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )
    }

    pub(crate) fn expired_secret(client_id: &str) -> Self {
        Self::new(
            7000222,
            "invalid_client",
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Create new keys for the app, or consider using certificate credentials for added security."
            ),
        )
    }

    // --- client assertions ------------------------------------------------------------------

    pub(crate) fn malformed_jwt(detail: impl std::fmt::Display) -> Self {
        Self::new(
            50027,
            "invalid_request",
            format!("JWT token is invalid or malformed. {detail}"),
        )
    }

    pub(crate) fn missing_claim(claim: &str) -> Self {
        Self::new(
            90014,
            "invalid_request",
            format!(
                "The required field '{claim}' is missing from the credential. Ensure that you have all the necessary parameters for the login request."
            ),
        )
    }

    pub(crate) fn no_key_reference() -> Self {
        Self::new(
            5002723,
            "invalid_client",
            "Invalid JWT token. No certificate SHA-1 thumbprint, certificate SHA-256 thumbprint, nor keyId specified in token header.",
        )
    }

    pub(crate) fn assertion_client_mismatch() -> Self {
        Self::new(
            700021,
            "invalid_client",
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        )
    }

    pub(crate) fn key_not_registered(client_id: &str, thumbprint: &str) -> Self {
        Self::new(
            700027,
            "invalid_client",
            format!(
                "Client assertion failed signature validation. [Reason - The certificate with identifier used to sign the client assertion is not registered on application. The key was not found., Thumbprint of key used by client: '{thumbprint}', Check the keys configured for app Id '{client_id}'.]"
            ),
        )
    }

    pub(crate) fn invalid_signature(thumbprint: &str, reason: &str) -> Self {
        Self::new(
            700027,
            "invalid_client",
            format!(
                "Client assertion failed signature validation. [Reason - {reason}, Thumbprint of key used by client: '{thumbprint}']"
            ),
        )
    }

    pub(crate) fn outside_time_window(now: i64, nbf: Option<i64>, exp: i64) -> Self {
        let at = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .map(entra_timestamp)
                .unwrap_or_else(|_| t.to_string())
        };
        let from = nbf.map_or_else(|| "(not given)".to_owned(), at);
        Self::new(
            700024,
            "invalid_client",
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {from}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                at(now),
                at(exp)
            ),
        )
    }

    pub(crate) fn federated_issuer_mismatch(issuer: &str) -> Self {
        Self::new(
            700211,
            "invalid_client",
            format!(
                "No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        )
    }

    pub(crate) fn federated_audience_mismatch(audience: &str) -> Self {
        Self::new(
            700212,
            "invalid_client",
            format!(
                "No matching federated identity record found for presented assertion audience '{audience}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        )
    }

    pub(crate) fn federated_subject_mismatch(subject: &str) -> Self {
        Self::new(
            700213,
            "invalid_client",
            format!(
                "No matching federated identity record found for presented assertion subject '{subject}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        )
    }

    // --- delegated sign-in (authorization code, refresh token, password) ----------------------
    // Codes and meanings from https://learn.microsoft.com/entra/identity-platform/reference-error-codes

    pub(crate) fn reply_url_mismatch(uri: &str, client_id: &str) -> Self {
        Self::new(
            50011,
            "invalid_request",
            format!(
                "The redirect URI '{uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal."
            ),
        )
    }

    pub(crate) fn no_reply_address(client_id: &str) -> Self {
        Self::new(
            500113,
            "invalid_request",
            format!("No reply address is registered for the application '{client_id}'."),
        )
    }

    /// The code is redeemed with another `redirect_uri` than it was issued for. Entra's answer
    /// today, as recorded in snok/django-auth-adfs#354 (2024): `invalid_client` with
    /// "AADSTS500112: The reply address '…' does not match the reply address '…' provided when
    /// requesting Authorization code." (The AADSTS50011 wording came from a 2018 v1 answer.)
    pub(crate) fn reply_url_differs(requested: &str, issued_for: &str) -> Self {
        Self::new(
            500112,
            "invalid_client",
            format!(
                "The reply address '{requested}' does not match the reply address '{issued_for}' provided when requesting Authorization code."
            ),
        )
    }

    pub(crate) fn user_not_found(tenant: &str) -> Self {
        Self::new(
            50034,
            "invalid_grant",
            format!(
                "The user account does not exist in the {tenant} directory. To sign into this application, the account must be added to the directory."
            ),
        )
    }

    pub(crate) fn bad_password() -> Self {
        Self::new(
            50126,
            "invalid_grant",
            "Error validating credentials due to invalid username or password.",
        )
    }

    pub(crate) fn login_required() -> Self {
        Self::new(
            50058,
            "login_required",
            "A silent sign-in request was sent but no user is signed in.",
        )
    }

    pub(crate) fn invalid_grant(what: &str) -> Self {
        Self::new(
            70000,
            "invalid_grant",
            format!("Provided grant is invalid or malformed: {what}"),
        )
    }

    /// An unknown (or another client's) code, worded as Entra answers it (recorded in
    /// abraunegg/onedrive#1370).
    pub(crate) fn bad_code() -> Self {
        Self::new(
            70000,
            "invalid_grant",
            "The provided value for the 'code' parameter is not valid.",
        )
    }

    /// An unknown (or another client's) refresh token (recorded in BingAds/BingAds-Python-SDK#279).
    pub(crate) fn bad_refresh_token() -> Self {
        Self::new(
            70000,
            "invalid_grant",
            "The provided value for the input parameter 'refresh_token' or 'assertion' is not valid.",
        )
    }

    /// An expired code: AADSTS70000 as recorded (spencerwooo/onedrive-cf-index#25); the error
    /// code reference keeps AADSTS70008 for expired refresh grants.
    pub(crate) fn code_expired() -> Self {
        Self::new(
            70000,
            "invalid_grant",
            "The provided value for the 'code' parameter is not valid. The code has expired.",
        )
    }

    pub(crate) fn code_redeemed() -> Self {
        Self::new(
            54005,
            "invalid_grant",
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        )
    }

    pub(crate) fn refresh_expired() -> Self {
        Self::new(
            700082,
            "invalid_grant",
            "The refresh token has expired due to inactivity. The token was issued and was inactive for too long.",
        )
    }

    pub(crate) fn pkce_mismatch() -> Self {
        Self::new(
            501481,
            "invalid_grant",
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        )
    }

    pub(crate) fn pkce_required() -> Self {
        Self::new(
            9002325,
            "invalid_request",
            "Proof Key for Code Exchange is required: send code_challenge with code_challenge_method=S256.",
        )
    }

    pub(crate) fn public_client_with_secret() -> Self {
        Self::new(
            700025,
            "invalid_client",
            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        )
    }

    pub(crate) fn grant_not_for_client(grant: &str, client_id: &str) -> Self {
        Self::new(
            70003,
            "unsupported_grant_type",
            format!(
                "The app '{client_id}' requested the grant type '{grant}', which exosim allows public clients only."
            ),
        )
    }

    pub(crate) fn consent_required(client_id: &str, resource: &str) -> Self {
        Self::new(
            65001,
            "invalid_grant",
            format!(
                "The user or administrator has not consented to use the application with ID '{client_id}' for the resource '{resource}'. Send an interactive authorization request for this user and resource."
            ),
        )
    }

    pub(crate) fn invalid_scope(scope: &str) -> Self {
        Self::new(
            70011,
            "invalid_scope",
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' isn't valid. The scope {scope} isn't valid."
            ),
        )
    }

    pub(crate) fn unsupported_response_type(response_type: &str) -> Self {
        Self::new(
            700054,
            "unsupported_response_type",
            format!(
                "response_type '{response_type}' is not enabled for the application; exosim supports 'code' only."
            ),
        )
    }

    /// AADSTS70007 "UnsupportedResponseMode" (reference-error-codes).
    pub(crate) fn unsupported_response_mode(mode: &str) -> Self {
        Self::new(
            70007,
            "invalid_request",
            format!(
                "The app returned an unsupported value of 'response_mode' ('{mode}'); exosim supports 'query' and 'form_post'."
            ),
        )
    }

    /// The `AADSTSnnnn: message` line shown on sign-in pages and in redirect errors.
    pub(crate) fn line(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.message)
    }

    // --- injected faults --------------------------------------------------------------------

    pub(crate) fn fault_unavailable(retry_after: Option<u64>) -> Self {
        let mut e = Self::new(
            90033,
            "temporarily_unavailable",
            "A transient error has occurred: the directory service is unavailable. Please try again.",
        );
        e.status = StatusCode::SERVICE_UNAVAILABLE;
        e.retry_after = retry_after;
        e
    }

    pub(crate) fn fault_throttled(retry_after: u64) -> Self {
        let mut e = Self::new(
            90055,
            "temporarily_unavailable",
            "TenantThrottlingError - There are too many incoming requests. This exception is thrown for blocked tenants.",
        );
        e.status = StatusCode::TOO_MANY_REQUESTS;
        e.retry_after = Some(retry_after);
        e
    }

    pub(crate) fn fault_internal() -> Self {
        let mut e = Self::new(
            50000,
            "temporarily_unavailable",
            "There was an error issuing a token or an issue with our sign-in service. Please try again.",
        );
        e.status = StatusCode::INTERNAL_SERVER_ERROR;
        e
    }
}

/// `2016-01-09 02:02:12Z`, the timestamp format of Entra error bodies.
pub(crate) fn entra_timestamp(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Headers Entra sends on token-endpoint responses.
pub(crate) fn json_headers(trace_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(trace_id) {
        headers.insert("x-ms-request-id", value);
    }
    headers
}

/// `GET /error?code=N`: where `error_uri` points; a one-line explanation of the code.
pub(crate) async fn lookup_page(
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let code = query.get("code").map_or("", String::as_str);
    let text = match code {
        "90002" => "Tenant not found.",
        "900023" => "Malformed tenant identifier.",
        "9001023" => "Client credentials need a tenant-specific endpoint.",
        "900144" => "A required request parameter is missing.",
        "9002313" => "The request is malformed.",
        "900561" => "The token endpoint only accepts POST.",
        "70003" => "Unsupported grant type.",
        "901002" => "The 'resource' parameter is not supported on the v2.0 endpoint.",
        "1002012" => "Client credential scopes must end in '/.default'.",
        "700022" => "One resource per request.",
        "500011" => "Resource principal not found in the tenant.",
        "700016" => "Application not found in the directory.",
        "7000218" => "No client credential in the request.",
        "7000215" => "Invalid client secret.",
        "7000222" => "Expired client secret.",
        "50027" => "Invalid or malformed JWT.",
        "90014" => "A required claim is missing from the client assertion.",
        "5002723" => "The client assertion names no key (x5t, x5t#S256 or kid).",
        "700021" => "The client assertion's iss/sub is not the client_id.",
        "700027" => "Client assertion signature validation failed, or its key is not registered.",
        "700024" => "The client assertion is outside its validity window.",
        "700211" | "700212" | "700213" => "No matching federated identity credential.",
        "90033" | "90055" | "50000" => "Transient service error; retry.",
        "50011" => "The redirect URI does not match the application's registered redirect URIs.",
        "500112" => "The redirect URI differs from the one the authorization code was issued for.",
        "500113" => "No redirect URI is registered for the application.",
        "50034" => "The user account does not exist in the directory.",
        "50126" => "Invalid username or password.",
        "50058" => "Silent sign-in requested, but no user is signed in.",
        "70000" => "Invalid or expired authorization code or refresh token, or scopes not granted.",
        "70007" => "Unsupported response_mode.",
        "70008" => "The authorization code or refresh token has expired.",
        "54005" => "The authorization code was already redeemed.",
        "700082" => "The refresh token has expired.",
        "501481" => "The PKCE code_verifier does not match the code_challenge.",
        "9002325" => "PKCE (code_challenge, S256) is required.",
        "700025" => "A public client may not send a client secret or assertion.",
        "65001" => "No consent for that resource.",
        "70011" => "Invalid scope.",
        "700054" => "Unsupported response_type.",
        _ => "Unknown code.",
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("AADSTS{code}: {text}\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_client_is_401_others_400() {
        assert_eq!(AadError::wrong_secret("x").status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            AadError::missing_parameter("scope").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AadError::fault_throttled(1).status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn timestamp_format() {
        let at = time::OffsetDateTime::from_unix_timestamp(1_452_304_932).unwrap();
        assert_eq!(entra_timestamp(at), "2016-01-09 02:02:12Z");
    }
}
