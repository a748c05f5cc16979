//! The identity half of the emulator: Microsoft Entra ID's OIDC discovery, signing keys, the v2
//! and v1 token endpoints (client credentials with a secret, a certificate assertion or a
//! federated assertion), the managed-identity endpoints (IMDS and App Service), the emulator's
//! own external identity provider for workload identity federation, and user sign-in for the
//! tenant's service app and public client (the login form, authorization code + PKCE, refresh
//! tokens, the password grant for the public client; [`signin`] and [`delegated`]).
//!
//! No `common`/`organizations` authority for tokens or sign-in. What it implements follows
//! `docs/protocol/entra-auth.md` §1–2 and Microsoft's v2.0 protocol pages closely, including the
//! error bodies.

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};

use crate::state::Shared;

pub(crate) mod aadsts;
mod assertion;
pub(crate) mod delegated;
mod discovery;
pub(crate) mod issue;
mod managed;
pub(crate) mod redirect;
mod signin;
mod token;

/// The identity routes; merged with the others in [`crate::server`].
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery::v2_configuration),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(discovery::v1_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::v2_keys))
        .route("/{tenant}/discovery/keys", get(discovery::v1_keys))
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(token::v2).get(token::get_refused),
        )
        .route(
            "/{tenant}/oauth2/token",
            post(token::v1).get(token::get_refused),
        )
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(signin::authorize_get).post(signin::authorize_post),
        )
        .route(
            "/{tenant}/oauth2/authorize",
            get(signin::v1_authorize).post(signin::v1_authorize),
        )
        .route(
            "/{tenant}/oauth2/v2.0/logout",
            get(signin::logout_get).post(signin::logout_post),
        )
        .route("/common/userrealm/{user}", get(signin::user_realm))
        .route("/metadata/identity/oauth2/token", get(managed::imds))
        .route("/msi/token", get(managed::app_service))
        .route(
            "/_federation/.well-known/openid-configuration",
            get(discovery::federation_configuration),
        )
        .route("/_federation/jwks", get(discovery::federation_keys))
        .route("/error", get(aadsts::lookup_page))
}

/// Clock skew tolerated on assertion `nbf`/`exp`, in seconds (Entra allows five minutes).
pub(crate) const CLOCK_SKEW_SECS: i64 = 300;

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A resource (API) the simulated tenants have a service principal for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resource {
    /// The identifier as registered (aud of issued tokens keeps the caller's trailing slash).
    pub id: &'static str,
    /// Whether this is Exchange Online: app roles in the tenants file are roles on it.
    pub exchange: bool,
    /// Whether this is Security & Compliance (an identifier of the Exchange Online app, so it
    /// carries the Exchange roles, but only the compliance endpoint accepts its tokens).
    pub compliance: bool,
}

/// The resources every simulated tenant knows. Exchange Online appears once per cloud, and by
/// its app id; all of them carry the Exchange roles.
const RESOURCES: &[Resource] = &[
    Resource {
        id: "https://outlook.office365.com",
        exchange: true,
        compliance: false,
    },
    Resource {
        id: "https://outlook.office365.us",
        exchange: true,
        compliance: false,
    },
    Resource {
        id: "https://outlook-dod.office365.us",
        exchange: true,
        compliance: false,
    },
    Resource {
        id: "https://partner.outlook.cn",
        exchange: true,
        compliance: false,
    },
    Resource {
        id: "00000002-0000-0ff1-ce00-000000000000",
        exchange: true,
        compliance: false,
    },
    // Security & Compliance, per cloud (docs/protocol/exo-protocol.md §1.2; the scope
    // `https://ps.compliance.protection.outlook.com/.default` is GreyCorbel/ExoHelper's and
    // CIPP-API's; the sovereign ones follow Microsoft's Remote PowerShell hosts).
    Resource {
        id: "https://ps.compliance.protection.outlook.com",
        exchange: true,
        compliance: true,
    },
    Resource {
        id: "https://ps.compliance.protection.office365.us",
        exchange: true,
        compliance: true,
    },
    Resource {
        id: "https://l5.ps.compliance.protection.office365.us",
        exchange: true,
        compliance: true,
    },
    Resource {
        id: "https://ps.compliance.protection.partner.outlook.cn",
        exchange: true,
        compliance: true,
    },
    Resource {
        id: "https://graph.microsoft.com",
        exchange: false,
        compliance: false,
    },
    Resource {
        id: "00000003-0000-0000-c000-000000000000",
        exchange: false,
        compliance: false,
    },
    Resource {
        id: "api://AzureADTokenExchange",
        exchange: false,
        compliance: false,
    },
];

/// Finds a resource by identifier: case-insensitive, one trailing slash ignored. Returns the
/// resource and the `aud` to put in tokens.
pub(crate) fn find_resource(requested: &str) -> Option<(Resource, String)> {
    let trimmed = requested.strip_suffix('/').unwrap_or(requested);
    RESOURCES
        .iter()
        .find(|r| r.id.eq_ignore_ascii_case(trimmed))
        .map(|r| {
            let aud = if requested.ends_with('/') {
                format!("{}/", r.id)
            } else {
                r.id.to_owned()
            };
            (*r, aud)
        })
}

/// The correlation id for a response: the client's `client-request-id` (header, then query, then
/// form field, as msal-python and msal-node send it) when it is a GUID, else a fresh one.
pub(crate) fn correlation_id(
    headers: &HeaderMap,
    query: Option<&str>,
    form: &[(String, String)],
) -> String {
    let from_header = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = || {
        query
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .and_then(|pairs| {
                pairs
                    .into_iter()
                    .find(|(k, _)| k == "client-request-id")
                    .map(|(_, v)| v)
            })
    };
    let from_form = || {
        form.iter()
            .find(|(k, _)| k == "client-request-id")
            .map(|(_, v)| v.clone())
    };
    from_header
        .or_else(from_query)
        .or_else(from_form)
        .and_then(|v| crate::config::parse_guid(&v).map(|g| g.to_string()))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// `https://host:port` as the client addressed us (HTTP/2 `:authority` or `Host`).
pub(crate) fn addressed_base(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    uri.authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(axum::http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .map(|authority| format!("https://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_match_leniently_and_keep_the_slash() {
        let (r, aud) = find_resource("HTTPS://outlook.office365.com/").unwrap();
        assert!(r.exchange);
        assert_eq!(aud, "https://outlook.office365.com/");
        assert_eq!(
            find_resource("00000002-0000-0ff1-ce00-000000000000")
                .unwrap()
                .1,
            "00000002-0000-0ff1-ce00-000000000000"
        );
        assert!(
            !find_resource("https://graph.microsoft.com")
                .unwrap()
                .0
                .exchange
        );
        assert!(find_resource("https://outlook.office365.com.evil").is_none());
    }
}
