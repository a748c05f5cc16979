//! Security & Compliance PowerShell over REST (what `Connect-IPPSSession` talks to), and the
//! regional hosts of both services, on the one listener: told apart by the `Host` header, since
//! both serve the same `/adminapi/{version}/{tenant}/InvokeCommand` path.
//!
//! The test cloud mirrors the real names under [`TEST_CLOUD`] (tests resolve them to loopback;
//! the certificate covers them):
//! - `ps.compliance.<suffix>` is the compliance front door: every `/adminapi` request gets
//!   `302 Found` to `https://<region>.admin.<suffix>/…`, as `ps.compliance.protection.outlook.com`
//!   answers with `<region>.admin.protection.outlook.com` (docs/protocol/exo-protocol.md §1.2.1;
//!   KelvinTegelaar/CIPP-API `Modules/CIPPCore/Public/GraphHelper/New-ExoRequest.ps1` reads the
//!   `Location` of that redirect, silverhack/monkey365 `core/utils/Get-MonkeySecCompBackendUri.ps1`
//!   maps `admin` to `ps.compliance`). Always on: a client that does not follow it cannot run a
//!   compliance cmdlet.
//! - `<region>.ps.compliance.<suffix>` is the tenant's regional host: `InvokeCommand` with a
//!   token for the compliance resource only ([`crate::exchange::auth::verify_for`]), the
//!   compliance roles of `wids`, and the cmdlets of [`cmdlets`] with state per tenant.
//! - `outlook.<suffix>` is Exchange's front door; [`ExchangeRegion`] says whether it redirects
//!   to `<region>.outlook.<suffix>` (cisagov/ScubaGear `EXORestHelper.psm1`: "Some tenants get
//!   redirected to a tenant-specific subdomain") or gives paging links on that host.
//!
//! Any other host (`localhost`, `127.0.0.1`) is plain Exchange, as before.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::Digest as _;

use crate::counters::Counter;
use crate::exchange::{
    Answer, ExchangeRequestRecord, auth, cmdlet_error, invalid_token, service_error, warnings_json,
};
use crate::state::Shared;

mod cmdlets;

pub(crate) use cmdlets::Compliance;

/// The DNS suffix of the test cloud: `outlook.exosim.test`, `ps.compliance.exosim.test` and
/// their regional hosts.
pub const TEST_CLOUD: &str = "exosim.test";

/// The region label of every tenant's Security & Compliance host (`eur02b` is the label
/// GreyCorbel/ExoHelper hard-codes: `eur02b.ps.compliance.protection.outlook.com`).
pub const COMPLIANCE_REGION: &str = "eur02b";

/// The region label of Exchange's tenant-specific host in the regional modes.
pub const EXCHANGE_REGION: &str = "nam12";

/// Entra's Compliance Administrator role template id (as in `wids`).
pub const COMPLIANCE_ADMINISTRATOR_ROLE: &str = "17315797-102d-40b4-93e0-432062caca18";

/// What Exchange's front door (`outlook.<suffix>`) does about the tenant's regional host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExchangeRegion {
    /// Serves every request itself (most tenants, and every client that never follows one).
    #[default]
    Direct,
    /// Answers `302 Found` to `<region>.outlook.<suffix>`, same path and query.
    Redirect,
    /// Serves the request but gives `@odata.nextLink`s on `<region>.outlook.<suffix>`.
    NextLinksOnRegionalHost,
}

/// Which service a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Addressed {
    /// `ps.compliance.<suffix>`.
    ComplianceFrontDoor { suffix: String },
    /// `<region>.ps.compliance.<suffix>`, the tenant's region.
    ComplianceRegional,
    /// `<other>.ps.compliance.<suffix>`: a region that is not the tenant's.
    ComplianceOtherRegion { suffix: String },
    /// `<region>.admin.<suffix>`: the host the front door's `Location` names, which is not a
    /// PowerShell endpoint (clients call `<region>.ps.compliance.<suffix>` instead).
    AdminHost,
    /// `outlook.<suffix>`.
    ExchangeFrontDoor { suffix: String },
    /// `<other>.outlook.<suffix>`: a regional Exchange host that is not the tenant's.
    ExchangeOtherRegion,
    /// Anything else: Exchange as it always was.
    Exchange,
}

fn addressed(host: &str) -> Addressed {
    let host = host.to_ascii_lowercase();
    if let Some(suffix) = host.strip_prefix("ps.compliance.") {
        return Addressed::ComplianceFrontDoor {
            suffix: suffix.to_owned(),
        };
    }
    if let Some(suffix) = host.strip_prefix("outlook.") {
        return Addressed::ExchangeFrontDoor {
            suffix: suffix.to_owned(),
        };
    }
    let Some((label, rest)) = host.split_once('.') else {
        return Addressed::Exchange;
    };
    if let Some(suffix) = rest.strip_prefix("ps.compliance.") {
        return if label == COMPLIANCE_REGION {
            Addressed::ComplianceRegional
        } else {
            Addressed::ComplianceOtherRegion {
                suffix: suffix.to_owned(),
            }
        };
    }
    if rest.starts_with("admin.") {
        return Addressed::AdminHost;
    }
    if rest.starts_with("outlook.") && label != EXCHANGE_REGION {
        return Addressed::ExchangeOtherRegion;
    }
    Addressed::Exchange
}

/// The request's host and port (`Host` header, or the URI's authority under HTTP/2).
fn host_and_port(headers: &HeaderMap, uri: &Uri) -> Option<(String, Option<u16>)> {
    let authority: axum::http::uri::Authority = match uri.authority() {
        Some(a) => a.clone(),
        None => headers.get(header::HOST)?.to_str().ok()?.parse().ok()?,
    };
    Some((authority.host().to_owned(), authority.port_u16()))
}

fn url_on(host: &str, port: Option<u16>, uri: &Uri) -> String {
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("https://{host}{port}{path}")
}

fn is_admin_api(uri: &Uri) -> bool {
    let path = uri.path();
    path.starts_with("/adminapi/") || path.starts_with("/AdminApi/")
}

/// The middleware that sends a request to the service its host names (see the module docs).
pub(crate) async fn route_by_host(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let Some((host, port)) = host_and_port(request.headers(), request.uri()) else {
        return next.run(request).await;
    };
    if !is_admin_api(request.uri()) {
        return next.run(request).await;
    }
    match addressed(&host) {
        Addressed::ComplianceFrontDoor { suffix } => {
            let location = url_on(
                &format!("{COMPLIANCE_REGION}.admin.{suffix}"),
                port,
                request.uri(),
            );
            redirect(&shared, &request, location)
        }
        Addressed::ComplianceRegional => invoke(&shared, request).await,
        // Another region's host sends the tenant to its own, as the front door does (a guess:
        // no record of the live service's answer to a stale region was found).
        Addressed::ComplianceOtherRegion { suffix } => {
            let location = url_on(
                &format!("{COMPLIANCE_REGION}.admin.{suffix}"),
                port,
                request.uri(),
            );
            redirect(&shared, &request, location)
        }
        Addressed::AdminHost | Addressed::ExchangeOtherRegion => not_found(&shared, &request),
        Addressed::ExchangeFrontDoor { suffix } => {
            let regional = format!("{EXCHANGE_REGION}.outlook.{suffix}");
            match shared.compliance.exchange_region {
                ExchangeRegion::Direct => next.run(request).await,
                ExchangeRegion::Redirect => {
                    let location = url_on(&regional, port, request.uri());
                    redirect(&shared, &request, location)
                }
                ExchangeRegion::NextLinksOnRegionalHost => {
                    // The Exchange handler builds its links from the URI's authority when it
                    // has one: give it the regional host's, the Host header stays as sent.
                    let (mut parts, body) = request.into_parts();
                    if let Ok(uri) = url_on(&regional, port, &parts.uri).parse::<Uri>() {
                        parts.uri = uri;
                    }
                    next.run(Request::from_parts(parts, body)).await
                }
            }
        }
        Addressed::Exchange => next.run(request).await,
    }
}

/// `302 Found` to `location`, logged like any Exchange request (status 302).
fn redirect(shared: &Shared, request: &Request, location: String) -> Response {
    let mut record = ExchangeRequestRecord::received(
        request.method().as_str(),
        request.uri(),
        request.headers(),
    );
    record.cmdlet = request
        .headers()
        .get("x-cmdletname")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    record.status = 302;
    record.fault = Some("regional_redirect".to_owned());
    shared.exchange.record(record);
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CONTENT_LENGTH, "0".into()),
        ],
    )
        .into_response()
}

/// `404 Not Found` for a host that serves no `/adminapi` (the `admin.` portal host, another
/// region's Exchange host), logged like any Exchange request.
fn not_found(shared: &Shared, request: &Request) -> Response {
    let mut record = ExchangeRequestRecord::received(
        request.method().as_str(),
        request.uri(),
        request.headers(),
    );
    record.status = 404;
    shared.exchange.record(record);
    let answer = service_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The resource you are looking for has been removed, had its name changed, or is temporarily unavailable.",
    );
    answer.into_response(&uuid::Uuid::new_v4().to_string(), None)
}

/// Largest body a compliance InvokeCommand reads.
const MAX_BODY: usize = 1 << 20;

/// `POST /adminapi/{beta|v1.0}/{tenant}/InvokeCommand` on a regional compliance host.
async fn invoke(shared: &Arc<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut record =
        ExchangeRequestRecord::received(parts.method.as_str(), &parts.uri, &parts.headers);
    shared.counters.bump(Counter::InvokeRequest);
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY)
        .await
        .unwrap_or_default();
    let answer = handle(
        shared,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        &mut record,
    );
    record.status = answer.status.as_u16();
    record.exception_type = answer.exception_type.clone();
    shared.exchange.record(record);
    answer.into_response(&request_id, None)
}

fn handle(
    shared: &Shared,
    method: &axum::http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut ExchangeRequestRecord,
) -> Answer {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let (version, tenant_segment) = match segments.as_slice() {
        [_, version, tenant, "InvokeCommand"] if *method == axum::http::Method::POST => {
            (*version, *tenant)
        }
        _ => {
            return service_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "Security & Compliance serves InvokeCommand only (POST /adminapi/beta/{tenant}/InvokeCommand).",
            );
        }
    };
    if version != "beta" && version != "v1.0" {
        return service_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("The API version '{version}' is not supported."),
        );
    }
    let Some(tenant_id) = shared.exchange.resolve_tenant(shared, tenant_segment) else {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        return invalid_token(shared, "The access token was issued for another tenant.");
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match auth::verify_for(
        shared,
        authorization,
        &tenant_id,
        crate::identity::unix_now(),
        true,
    ) {
        Ok(caller) => caller,
        Err(refused) => {
            shared.counters.bump(Counter::ExchangeAuthFailure);
            return invalid_token(shared, &refused.0);
        }
    };
    if !caller.has_role {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        return service_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            &format!(
                "The application {} does not have the Exchange.ManageAsApp permission on Office 365 Exchange Online.",
                caller.appid
            ),
        );
    }
    let access = cmdlets::access(&caller.wids);
    if access.is_empty() {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        return service_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The role assigned to application {} isn't supported in this scenario. Security & Compliance app-only access needs Global Administrator, Compliance Administrator, Security Administrator, Security Reader or Global Reader.",
                caller.appid
            ),
        );
    }
    let (name, params) = match crate::exchange::cmdlet_input(body, record) {
        Ok(input) => input,
        Err(answer) => return answer,
    };
    let Some(spec) = cmdlets::find(&name) else {
        return cmdlet_error(&crate::exchange::cmdlets::ExoError::command_not_found(
            &name,
        ));
    };
    record.cmdlet = Some(spec.name.to_owned());
    shared.counters.cmdlet(spec.name);
    if !access.iter().any(|a| a.allows(spec.name)) {
        return crate::exchange::not_allowed_to_call(shared, spec.name);
    }
    let ran = shared.compliance.run(shared, &tenant_id, spec, &params);
    let (rows, applied) = match ran {
        Ok(done) => done,
        Err(error) => return cmdlet_error(&error),
    };
    record.applied = applied;
    let base =
        crate::identity::addressed_base(headers, uri).unwrap_or_else(|| shared.base_url.clone());
    let context = format!(
        "{base}/adminapi/{version}/{tenant_segment}/$metadata#Collection(Exchange.GenericHashTable)"
    );
    // Paged as Exchange pages (`Prefer: odata.maxpagesize`, a signed `$skiptoken` valid only for
    // the identical body in the same tenant; the body is re-POSTed to the link).
    let (_, select_raw, skip) = crate::exchange::query_params(uri);
    let digest = crate::exchange::hex(&sha2::Sha256::digest(body));
    let start = match &skip {
        None => 0,
        Some(text) => match crate::exchange::decode_token(&shared.exchange.page_key, text) {
            Some(t) if t.t == tenant_id && t.d == digest => {
                usize::try_from(t.a).unwrap_or(usize::MAX)
            }
            _ => {
                return service_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The continuation link is not valid for this request: re-POST the identical request body to an @odata.nextLink.",
                );
            }
        },
    };
    let (page, applied_prefs) = crate::exchange::page_size(headers);
    let start = start.min(rows.len());
    let end = start.saturating_add(page).min(rows.len());
    let more = end < rows.len();
    let mut out = format!(
        "{{\"@odata.context\":{},{},\"value\":{}",
        Value::from(context),
        warnings_json(&[]),
        Value::Array(
            rows[start..end]
                .iter()
                .cloned()
                .map(Value::Object)
                .collect()
        )
    );
    if more {
        let token = crate::exchange::encode_token(
            &shared.exchange.page_key,
            &crate::exchange::PageToken {
                t: tenant_id.clone(),
                d: digest,
                a: end as u64,
                n: end as u64,
            },
        );
        let mut query = Vec::new();
        if let Some(s) = &select_raw {
            query.push(("$select", s.clone()));
        }
        query.push(("$skiptoken", token));
        let link = format!(
            "{base}{}?{}",
            uri.path(),
            serde_urlencoded::to_string(&query).unwrap_or_default()
        );
        out.push_str(&format!(",\"@odata.nextLink\":{}", Value::from(link)));
    }
    out.push('}');
    let mut answer = Answer::json(StatusCode::OK, out);
    if !applied_prefs.is_empty() {
        answer
            .headers
            .push(("preference-applied", applied_prefs.join(",")));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_apart_by_their_labels() {
        let suffix = || "exosim.test".to_owned();
        assert_eq!(
            addressed("ps.compliance.exosim.test"),
            Addressed::ComplianceFrontDoor { suffix: suffix() }
        );
        assert_eq!(
            addressed("EUR02B.ps.compliance.exosim.test"),
            Addressed::ComplianceRegional
        );
        // Only the tenant's region serves it; another region sends the client home.
        assert_eq!(
            addressed("nam01.ps.compliance.exosim.test"),
            Addressed::ComplianceOtherRegion { suffix: suffix() }
        );
        // The front door's Location names the admin host, which is no PowerShell endpoint.
        assert_eq!(addressed("eur02b.admin.exosim.test"), Addressed::AdminHost);
        assert_eq!(
            addressed("outlook.exosim.test"),
            Addressed::ExchangeFrontDoor { suffix: suffix() }
        );
        assert_eq!(addressed("nam12.outlook.exosim.test"), Addressed::Exchange);
        assert_eq!(
            addressed("apc01.outlook.exosim.test"),
            Addressed::ExchangeOtherRegion
        );
        for plain in ["localhost", "127.0.0.1", "elsewhere.exosim.test"] {
            assert_eq!(addressed(plain), Addressed::Exchange, "{plain}");
        }
    }
}
