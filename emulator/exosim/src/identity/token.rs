//! The token endpoints: `POST /{tenant}/oauth2/v2.0/token` (scope) and the legacy v1
//! `POST /{tenant}/oauth2/token` (resource): the client credentials grant here, and on v2 the
//! delegated grants (`authorization_code`, `refresh_token`, `password`) in [`super::delegated`].
//!
//! Order of checks: injected faults, tenant, request shape (grant type, client id, scope or
//! resource syntax), the app, its credential (secret in the body or HTTP Basic, certificate
//! assertion, or federated assertion), then the resource. Unknown form fields, telemetry fields
//! (msal-node puts them in the body) and query strings are ignored. It refuses more than one
//! client authentication method per request (RFC 6749 §2.3) and repeated parameters.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::aadsts::{AadError, json_headers};
use super::assertion::{self, Verified};
use super::issue::{Principal, V1Body, V2Body, mint_access_token};
use super::{addressed_base, correlation_id, find_resource};
use crate::counters::Counter;
use crate::directory::{App, Tenant, TenantLookup};
use crate::faults::TokenFault;
use crate::state::Shared;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Parameters that may appear at most once.
const SINGLE_VALUED: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "resource",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "username",
    "password",
];

/// Scopes a client may add that do not name a resource.
const OIDC_SCOPES: &[&str] = &["openid", "profile", "offline_access", "email"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// `POST /{tenant}/oauth2/v2.0/token`
pub(crate) async fn v2(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    handle(&shared, Version::V2, &tenant, &headers, &uri, &body).await
}

/// `POST /{tenant}/oauth2/token`
pub(crate) async fn v1(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    handle(&shared, Version::V1, &tenant, &headers, &uri, &body).await
}

/// `GET` on a token endpoint.
pub(crate) async fn get_refused(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    AadError::post_only().respond(
        &shared.base_url,
        &correlation_id(&headers, uri.query(), &[]),
    )
}

async fn handle(
    shared: &Shared,
    version: Version,
    tenant: &str,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Response {
    shared.counters.bump(Counter::TokenRequest);
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    // A body that is not a form is treated as an empty form: the request then fails on its
    // first missing parameter, as it does at Entra.
    let form: Vec<(String, String)> = if is_form {
        serde_urlencoded::from_bytes(body).unwrap_or_default()
    } else {
        Vec::new()
    };
    let correlation = correlation_id(headers, uri.query(), &form);

    let (fault, latency) = shared.faults.next();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = fault {
        shared.counters.bump(Counter::FaultInjected);
        let error = match fault {
            TokenFault::ServiceUnavailable { retry_after_secs } => {
                AadError::fault_unavailable(retry_after_secs)
            }
            TokenFault::TooManyRequests { retry_after_secs } => {
                AadError::fault_throttled(retry_after_secs)
            }
            TokenFault::InternalServerError => AadError::fault_internal(),
        };
        return error.respond(&shared.base_url, &correlation);
    }

    match process(shared, version, tenant, headers, uri, &form) {
        Ok(response) => response,
        Err(error) => error.respond(&shared.base_url, &correlation),
    }
}

/// The form as a lookup: at most one value per single-valued parameter, empty values as absent.
pub(super) struct Form<'a>(&'a [(String, String)]);

impl Form<'_> {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn check_single_valued(&self) -> Result<(), AadError> {
        for name in SINGLE_VALUED {
            if self.0.iter().filter(|(k, _)| k == name).count() > 1 {
                return Err(AadError::malformed_request(format_args!(
                    "The parameter '{name}' is repeated."
                )));
            }
        }
        Ok(())
    }
}

fn process(
    shared: &Shared,
    version: Version,
    tenant_segment: &str,
    headers: &HeaderMap,
    uri: &Uri,
    form: &[(String, String)],
) -> Result<Response, AadError> {
    let tenant = match shared.directory.lookup(tenant_segment) {
        TenantLookup::Found(t) => t,
        TenantLookup::Alias(alias) => return Err(AadError::tenant_alias(alias)),
        TenantLookup::NotFound => return Err(AadError::tenant_not_found(tenant_segment)),
        TenantLookup::Malformed => return Err(AadError::tenant_malformed(tenant_segment)),
    };
    let form = Form(form);
    form.check_single_valued()?;

    let basic = basic_credentials(headers)?;
    match form.get("grant_type") {
        None => return Err(AadError::missing_parameter("grant_type")),
        Some("client_credentials") => {}
        Some(grant @ ("authorization_code" | "refresh_token" | "password"))
            if version == Version::V2 =>
        {
            return super::delegated::grant(shared, tenant, grant, &form, basic.as_ref());
        }
        Some(other) => return Err(AadError::unsupported_grant_type(other)),
    }

    let client_id = match (form.get("client_id"), &basic) {
        (Some(body), Some((basic_id, _))) if !body.eq_ignore_ascii_case(basic_id) => {
            return Err(AadError::malformed_request(
                "The client_id in the body differs from the one in the Authorization header.",
            ));
        }
        (Some(body), _) => body.to_owned(),
        (None, Some((basic_id, _))) => basic_id.clone(),
        (None, None) => return Err(AadError::missing_parameter("client_id")),
    };

    let requested = requested_resource(version, &form)?;

    // A multi-tenant app is known in a tenant only once consent created its service principal
    // there; before that Entra answers AADSTS700016 ("…has not been installed by the
    // administrator of the tenant or consented to…"): docs/protocol/entra-auth.md §1.6.
    let Some(known) = shared.directory.app_in(tenant, &client_id) else {
        return Err(AadError::app_not_found(&client_id, &tenant.display_name));
    };
    let app = known.registration;

    let secret = match (form.get("client_secret"), &basic) {
        (Some(_), Some(_)) => {
            return Err(AadError::malformed_request(
                "The client secret was sent both in the body and in the Authorization header; use one client authentication method.",
            ));
        }
        (Some(body), None) => Some(body.to_owned()),
        (None, Some((_, basic_secret))) => Some(basic_secret.clone()),
        (None, None) => None,
    };
    let assertion = form.get("client_assertion");
    let appidacr = match (secret, assertion) {
        (Some(_), Some(_)) => {
            return Err(AadError::malformed_request(
                "Both a client secret and a client assertion were sent; use one client authentication method.",
            ));
        }
        (None, None) => return Err(AadError::no_credential()),
        (Some(secret), None) => {
            check_secret(app, &secret)?;
            "1"
        }
        (None, Some(assertion)) => {
            match form.get("client_assertion_type") {
                None => return Err(AadError::missing_parameter("client_assertion_type")),
                Some(JWT_BEARER) => {}
                Some(other) => {
                    return Err(AadError::malformed_request(format_args!(
                        "client_assertion_type '{other}' is not supported; use '{JWT_BEARER}'."
                    )));
                }
            }
            let audiences =
                accepted_audiences(shared, version, tenant_segment, tenant, headers, uri);
            let ctx = assertion::Context {
                app,
                audiences: &audiences,
            };
            match assertion::verify(shared, &ctx, assertion)? {
                Verified::Certificate | Verified::Federated => "2",
            }
        }
    };

    let Some((resource, audience)) = find_resource(&requested) else {
        return Err(AadError::resource_not_found(
            &requested,
            &tenant.display_name,
        ));
    };
    let no_roles: [String; 0] = [];
    let principal = Principal {
        appid: &app.client_id,
        display_name: Some(&app.name),
        object_id: known.service_principal_id,
        roles: if resource.exchange {
            known.roles
        } else {
            &no_roles
        },
        wids: known.wids,
        appidacr,
        mi_resource_id: None,
    };
    let issued = mint_access_token(shared, tenant, &audience, &principal);
    let trace_id = uuid::Uuid::new_v4().to_string();
    Ok(match version {
        Version::V2 => (json_headers(&trace_id), Json(V2Body::new(issued))).into_response(),
        Version::V1 => (
            json_headers(&trace_id),
            Json(V1Body::new(issued, &requested)),
        )
            .into_response(),
    })
}

/// Client credentials from `Authorization: Basic`, form-urlencoded per RFC 6749 §2.3.1.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, AadError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = || {
        AadError::malformed_request("The Authorization header is not valid HTTP Basic credentials.")
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |text: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={text}"))
            .ok()
            .and_then(|mut pairs| pairs.pop())
            .map(|(_, v)| v)
    };
    match (unescape(id), unescape(secret)) {
        (Some(id), Some(secret)) if !id.is_empty() => Ok(Some((id, secret))),
        _ => Err(bad()),
    }
}

/// The resource the request asks for: v2 from `scope` (`{resource}/.default`), v1 from
/// `resource`. Only syntax is checked here; whether the tenant knows it comes after the client
/// is authenticated.
fn requested_resource(version: Version, form: &Form<'_>) -> Result<String, AadError> {
    match version {
        Version::V1 => form
            .get("resource")
            .map(str::to_owned)
            .ok_or_else(|| AadError::missing_parameter("resource")),
        Version::V2 => {
            if form.get("resource").is_some() {
                return Err(AadError::resource_parameter_on_v2());
            }
            let scope = form
                .get("scope")
                .ok_or_else(|| AadError::missing_parameter("scope"))?;
            let mut resources: Vec<String> = Vec::new();
            for item in scope.split_ascii_whitespace() {
                if OIDC_SCOPES.contains(&item.to_ascii_lowercase().as_str()) {
                    continue;
                }
                let Some(resource) = item.strip_suffix("/.default") else {
                    return Err(AadError::scope_without_default(item));
                };
                if !resources.iter().any(|r| r.eq_ignore_ascii_case(resource)) {
                    resources.push(resource.to_owned());
                }
            }
            match resources.len() {
                0 => Err(AadError::missing_parameter("scope")),
                1 => Ok(resources.remove(0)),
                _ => Err(AadError::multiple_resources(scope)),
            }
        }
    }
}

/// Checks a client secret against the app's secrets, in constant time per candidate.
pub(super) fn check_secret(app: &App, presented: &str) -> Result<(), AadError> {
    let now = time::OffsetDateTime::now_utc();
    let matching = app
        .secrets
        .iter()
        .find(|s| constant_time_eq(s.value.as_bytes(), presented.as_bytes()));
    match matching {
        Some(secret) if secret.is_expired(now) => Err(AadError::expired_secret(&app.client_id)),
        Some(_) => Ok(()),
        None => Err(AadError::wrong_secret(&app.client_id)),
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The URLs a client assertion's `aud` may name: this endpoint at the emulator's advertised base
/// and at the authority the client actually addressed, with the tenant as given, as GUID and as
/// domain; on v1 the v2 URL is accepted too (MSAL builds v2 audiences).
fn accepted_audiences(
    shared: &Shared,
    version: Version,
    tenant_segment: &str,
    tenant: &Tenant,
    headers: &HeaderMap,
    uri: &Uri,
) -> Vec<String> {
    let mut bases = vec![shared.base_url.clone()];
    if let Some(addressed) = addressed_base(headers, uri)
        && !bases.contains(&addressed)
    {
        bases.push(addressed);
    }
    let tenants = [tenant_segment, tenant.id.as_str(), tenant.domain.as_str()];
    let paths: &[&str] = match version {
        Version::V2 => &["oauth2/v2.0/token"],
        Version::V1 => &["oauth2/token", "oauth2/v2.0/token"],
    };
    let mut out = Vec::new();
    for base in &bases {
        for t in tenants {
            for path in paths {
                let url = format!("{base}/{t}/{path}");
                if !out.contains(&url) {
                    out.push(url);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("my%20id:a%2Bb~c");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers).unwrap(),
            Some(("my id".to_owned(), "a+b~c".to_owned()))
        );
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(basic_credentials(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&headers).unwrap(), None);
    }

    #[test]
    fn scope_parsing() {
        let form = |scope: &str| vec![("scope".to_owned(), scope.to_owned())];
        let parse =
            |scope: &str| requested_resource(Version::V2, &Form(&form(scope))).map_err(|e| e.code);
        assert_eq!(
            parse("https://outlook.office365.com/.default").unwrap(),
            "https://outlook.office365.com"
        );
        assert_eq!(
            parse("openid https://graph.microsoft.com/.default offline_access").unwrap(),
            "https://graph.microsoft.com"
        );
        assert_eq!(parse("https://graph.microsoft.com/User.Read"), Err(1002012));
        assert_eq!(
            parse("https%3A%2F%2Fgraph.microsoft.com%2F.default"),
            Err(1002012)
        );
        assert_eq!(
            parse("https://graph.microsoft.com/.default https://outlook.office365.com/.default"),
            Err(700022)
        );
        assert_eq!(parse("openid"), Err(900144));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
