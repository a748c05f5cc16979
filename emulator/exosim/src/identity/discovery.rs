//! OIDC discovery documents (v2 and v1), the token-signing key sets, and the emulator's own
//! external identity provider (`/_federation`) used for workload identity federation.
//!
//! Like Entra, a tenant addressed by domain gets endpoints under its GUID, and an unknown tenant
//! gets a 400 with AADSTS90002 rather than a 404. It serves metadata only; it refuses nothing
//! but unknown or malformed tenants.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

use super::aadsts::AadError;
use super::correlation_id;
use crate::counters::Counter;
use crate::directory::TenantLookup;
use crate::jose::{b64std, b64url};
use crate::pki::RsaCredential;
use crate::state::Shared;

/// The path segment to use in endpoints and the issuer's tenant part.
enum Named {
    Tenant(String),
    Alias(&'static str),
}

fn resolve(
    shared: &Shared,
    segment: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Named, Box<Response>> {
    let fail = |e: AadError| {
        Box::new(e.respond(&shared.base_url, &correlation_id(headers, uri.query(), &[])))
    };
    match shared.directory.lookup(segment) {
        TenantLookup::Found(t) => Ok(Named::Tenant(t.id.clone())),
        TenantLookup::Alias(alias) => Ok(Named::Alias(alias)),
        TenantLookup::NotFound => Err(fail(AadError::tenant_not_found(segment))),
        TenantLookup::Malformed => Err(fail(AadError::tenant_malformed(segment))),
    }
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub(crate) async fn v2_configuration(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    shared.counters.bump(Counter::Discovery);
    let named = match resolve(&shared, &tenant, &headers, &uri) {
        Ok(named) => named,
        Err(response) => return *response,
    };
    let base = &shared.base_url;
    let (segment, issuer_tenant, region) = match &named {
        Named::Tenant(id) => (id.as_str(), id.as_str(), Value::from("NA")),
        Named::Alias(alias) => (*alias, "{tenantid}", Value::Null),
    };
    let endpoint = |path: &str| format!("{base}/{segment}/{path}");
    Json(json!({
        "token_endpoint": endpoint("oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": endpoint("discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{issuer_tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": endpoint("oauth2/v2.0/authorize"),
        "device_authorization_endpoint": endpoint("oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": endpoint("oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid",
            "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": endpoint("kerberos"),
        "tenant_region_scope": region,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    }))
    .into_response()
}

/// `GET /{tenant}/.well-known/openid-configuration` (v1).
pub(crate) async fn v1_configuration(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    shared.counters.bump(Counter::Discovery);
    let named = match resolve(&shared, &tenant, &headers, &uri) {
        Ok(named) => named,
        Err(response) => return *response,
    };
    let base = &shared.base_url;
    let (segment, issuer_tenant) = match &named {
        Named::Tenant(id) => (id.as_str(), id.as_str()),
        Named::Alias(alias) => (*alias, "{tenantid}"),
    };
    let endpoint = |path: &str| format!("{base}/{segment}/{path}");
    Json(json!({
        "token_endpoint": endpoint("oauth2/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/common/discovery/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": format!("https://sts.windows.net/{issuer_tenant}/"),
        "microsoft_multi_refresh_token": true,
        "authorization_endpoint": endpoint("oauth2/authorize"),
        "device_authorization_endpoint": endpoint("oauth2/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": endpoint("oauth2/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "given_name",
            "family_name", "nickname"],
        "check_session_iframe": endpoint("oauth2/checksession"),
        "userinfo_endpoint": endpoint("openid/userinfo"),
        "kerberos_endpoint": endpoint("kerberos"),
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    }))
    .into_response()
}

/// A JWK for an RSA signing credential: `kid` = `x5t` = base64url SHA-1 of its certificate.
pub(crate) fn jwk(credential: &RsaCredential, issuer: Option<&str>) -> Value {
    let x5t = credential.thumbprints.x5t();
    let mut key = json!({
        "kty": "RSA",
        "use": "sig",
        "kid": x5t,
        "x5t": x5t,
        "n": b64url(credential.public.n_bytes()),
        "e": b64url(credential.public.e_bytes()),
        "x5c": [b64std(&credential.cert_der)],
    });
    if let (Some(issuer), Some(map)) = (issuer, key.as_object_mut()) {
        map.insert("issuer".to_owned(), Value::from(issuer));
    }
    key
}

/// `GET /{tenant}/discovery/v2.0/keys`
pub(crate) async fn v2_keys(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    shared.counters.bump(Counter::Jwks);
    let issuer_tenant = match resolve(&shared, &tenant, &headers, &uri) {
        Ok(Named::Tenant(id)) => id,
        Ok(Named::Alias(_)) => "{tenantid}".to_owned(),
        Err(response) => return *response,
    };
    let issuer = format!("{}/{issuer_tenant}/v2.0", shared.base_url);
    Json(json!({ "keys": [jwk(&shared.signing, Some(&issuer))] })).into_response()
}

/// `GET /{tenant}/discovery/keys` (v1; also `/common/discovery/keys`).
pub(crate) async fn v1_keys(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    shared.counters.bump(Counter::Jwks);
    if let Err(response) = resolve(&shared, &tenant, &headers, &uri) {
        return *response;
    }
    Json(json!({ "keys": [jwk(&shared.signing, None)] })).into_response()
}

/// `GET /_federation/.well-known/openid-configuration`: the emulator as an external IdP
/// (think Kubernetes service-account issuer or GitHub Actions).
pub(crate) async fn federation_configuration(
    State(shared): State<Arc<Shared>>,
) -> impl IntoResponse {
    shared.counters.bump(Counter::Federation);
    let issuer = shared.federation_issuer();
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]
    }))
}

/// `GET /_federation/jwks`
pub(crate) async fn federation_keys(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.counters.bump(Counter::Federation);
    Json(json!({ "keys": [jwk(&shared.federation, None)] }))
}
