//! Managed identity: the Azure VM IMDS endpoint (`GET /metadata/identity/oauth2/token`, header
//! `Metadata: true`) and the App Service endpoint (`GET /msi/token`, header `X-IDENTITY-HEADER`).
//!
//! Tokens are for the managed identities of the first tenant; with no selector the first one
//! answers (the "system-assigned" identity). Responses use strings for numbers, as documented
//! (docs/protocol/entra-auth.md §2.1–2.2); App Service sends no `expires_in`. Served over the
//! emulator's HTTPS (the real IMDS is plain HTTP on 169.254.169.254; clients point at it through
//! `IDENTITY_ENDPOINT`/`IMDS_ENDPOINT`). It refuses requests without the required header, and
//! never logs the identity header.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::aadsts::{AadError, json_headers};
use super::issue::{Principal, mint_access_token};
use super::{correlation_id, find_resource};
use crate::counters::Counter;
use crate::directory::ManagedIdentity;
use crate::request_log::ErrorTag;
use crate::state::Shared;

/// Why a managed-identity request is refused.
enum Refusal {
    /// A managed-identity error: `{"error": code, "error_description": text}` and a status.
    Endpoint {
        status: StatusCode,
        error: &'static str,
        description: String,
    },
    /// An Entra error the endpoint relays (unknown resource).
    Entra(AadError),
}

impl Refusal {
    fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Refusal::Endpoint {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    fn into_response(self, shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Response {
        match self {
            Refusal::Endpoint {
                status,
                error,
                description,
            } => {
                let body = json!({ "error": error, "error_description": description });
                let mut response = (status, Json(body)).into_response();
                response.extensions_mut().insert(ErrorTag(error.to_owned()));
                response
            }
            Refusal::Entra(e) => {
                e.respond(&shared.base_url, &correlation_id(headers, uri.query(), &[]))
            }
        }
    }
}

fn required<'a>(query: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Refusal> {
    query
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Refusal::bad_request(
                "invalid_request",
                format!("Required query variable '{name}' is missing"),
            )
        })
}

/// A query parameter that selects an identity, and the field it matches.
type Selector = (&'static str, fn(&ManagedIdentity) -> Option<&str>);

/// Picks the identity named by one of `selectors`; the first identity when none is given.
fn select<'a>(
    shared: &'a Shared,
    query: &HashMap<String, String>,
    selectors: &[Selector],
) -> Result<&'a ManagedIdentity, Refusal> {
    let given: Vec<_> = selectors
        .iter()
        .filter_map(|(name, field)| query.get(*name).map(|v| (*field, v.as_str())))
        .collect();
    let identities = &shared.directory.home().managed_identities;
    let not_found = || Refusal::bad_request("invalid_request", "Identity not found");
    match given.as_slice() {
        [] => identities.first().ok_or_else(not_found),
        [(field, value)] => identities
            .iter()
            .find(|mi| field(mi).is_some_and(|f| f.eq_ignore_ascii_case(value)))
            .ok_or_else(not_found),
        _ => Err(Refusal::bad_request(
            "invalid_request",
            "Only one of the identity selectors may be given",
        )),
    }
}

fn by_client_id(mi: &ManagedIdentity) -> Option<&str> {
    Some(&mi.client_id)
}

fn by_object_id(mi: &ManagedIdentity) -> Option<&str> {
    Some(&mi.object_id)
}

fn by_resource_id(mi: &ManagedIdentity) -> Option<&str> {
    mi.resource_id.as_deref()
}

/// Mints a token for `mi` and `resource`, or the AADSTS500011 error IMDS relays.
fn mint(
    shared: &Shared,
    mi: &ManagedIdentity,
    resource: &str,
) -> Result<super::issue::Issued, Refusal> {
    let tenant = shared.directory.home();
    let Some((known, audience)) = find_resource(resource) else {
        return Err(Refusal::Entra(AadError::resource_not_found(
            resource,
            &tenant.display_name,
        )));
    };
    let no_roles: [String; 0] = [];
    let principal = Principal {
        appid: &mi.client_id,
        display_name: mi.name.as_deref(),
        object_id: &mi.object_id,
        roles: if known.exchange { &mi.roles } else { &no_roles },
        wids: &mi.wids,
        appidacr: "2",
        mi_resource_id: mi.resource_id.as_deref(),
    };
    Ok(mint_access_token(shared, tenant, &audience, &principal))
}

#[derive(Serialize)]
struct ImdsBody {
    access_token: String,
    refresh_token: &'static str,
    expires_in: String,
    expires_on: String,
    ext_expires_in: String,
    not_before: String,
    resource: String,
    token_type: &'static str,
    client_id: String,
}

/// `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`
pub(crate) async fn imds(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    shared.counters.bump(Counter::Imds);
    // "Metadata" must be "true", all lower case (how-to-use-vm-token.md).
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return Refusal::bad_request("bad_request_102", "Required metadata header not specified")
            .into_response(&shared, &headers, &uri);
    }
    let result = (|| {
        required(&query, "api-version")?;
        let resource = required(&query, "resource")?;
        let mi = select(
            &shared,
            &query,
            &[
                ("client_id", by_client_id),
                ("object_id", by_object_id),
                ("msi_res_id", by_resource_id),
            ],
        )?;
        let issued = mint(&shared, mi, resource)?;
        Ok::<_, Refusal>(ImdsBody {
            expires_in: issued.lifetime_secs.to_string(),
            ext_expires_in: issued.lifetime_secs.to_string(),
            expires_on: issued.expires_on.to_string(),
            not_before: issued.not_before.to_string(),
            access_token: issued.access_token,
            refresh_token: "",
            resource: resource.to_owned(),
            token_type: "Bearer",
            client_id: mi.client_id.clone(),
        })
    })();
    match result {
        Ok(body) => (json_headers(&uuid::Uuid::new_v4().to_string()), Json(body)).into_response(),
        Err(refusal) => refusal.into_response(&shared, &headers, &uri),
    }
}

#[derive(Serialize)]
struct AppServiceBody {
    access_token: String,
    expires_on: String,
    resource: String,
    token_type: &'static str,
    client_id: String,
}

/// `GET /msi/token?api-version=2019-08-01&resource=...` with `X-IDENTITY-HEADER`.
pub(crate) async fn app_service(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    shared.counters.bump(Counter::AppService);
    let presented = headers.get("x-identity-header").map(|v| v.as_bytes());
    if presented != Some(shared.identity_header.as_bytes()) {
        // App Service answers 401 when the header is absent or wrong (observed in SDK issues);
        // the body shape is not documented, so this one only needs to be JSON.
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "statusCode": 401, "message": "Missing or invalid X-IDENTITY-HEADER" })),
        )
            .into_response();
        response
            .extensions_mut()
            .insert(ErrorTag("unauthorized_identity_header".to_owned()));
        return response;
    }
    let result = (|| {
        required(&query, "api-version")?;
        let resource = required(&query, "resource")?;
        let mi = select(
            &shared,
            &query,
            &[
                ("client_id", by_client_id),
                ("principal_id", by_object_id),
                ("object_id", by_object_id),
                ("mi_res_id", by_resource_id),
            ],
        )?;
        let issued = mint(&shared, mi, resource)?;
        Ok::<_, Refusal>(AppServiceBody {
            expires_on: issued.expires_on.to_string(),
            access_token: issued.access_token,
            resource: resource.to_owned(),
            token_type: "Bearer",
            client_id: mi.client_id.clone(),
        })
    })();
    match result {
        Ok(body) => (json_headers(&uuid::Uuid::new_v4().to_string()), Json(body)).into_response(),
        Err(refusal) => refusal.into_response(&shared, &headers, &uri),
    }
}
