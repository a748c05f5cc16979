//! OIDC discovery documents (v2 and v1), the token-signing key sets, and the emulator's own
//! external identity provider (`/_federation`) used for workload identity federation.
//!
//! Like Entra, a tenant addressed by domain gets endpoints under its GUID, and an unknown tenant
//! gets a 400 with AADSTS90002 rather than a 404. It serves metadata only; it refuses nothing
//! but unknown or malformed tenants.
//!
//! The documents list only what exosim implements, in Entra's member names: the response types,
//! modes, grant types, PKCE methods, scopes and id token claims of [`super::signin`] and
//! [`super::delegated`] (a client that trusts discovery must never be sent down a path that is
//! refused). Entra's own document also lists a device code endpoint, Kerberos, the Graph
//! userinfo endpoint, `fragment` and the implicit response types; exosim has none of them, so it
//! does not advertise them.

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

/// Client authentication every grant of the v2.0 token endpoint accepts. `private_key_jwt`
/// works for the client credentials grant only (delegated.rs refuses assertions), so a client
/// that trusts this list for a code or refresh grant must not be offered it.
const V2_AUTH_METHODS: &[&str] = &["client_secret_post", "client_secret_basic"];
/// `response_mode`s `/authorize` answers in (signin.rs `ResponseMode`).
const V2_RESPONSE_MODES: &[&str] = &["query", "form_post"];
/// `response_type`s `/authorize` accepts: the code flow only.
const V2_RESPONSE_TYPES: &[&str] = &["code"];
/// Grants the v2.0 token endpoint accepts (token.rs and delegated.rs).
const V2_GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "password",
    "client_credentials",
];
/// PKCE methods `/authorize` accepts (S256 only, an emulation choice).
const CODE_CHALLENGE_METHODS: &[&str] = &["S256"];
/// OIDC scopes a delegated request may carry besides its resource's.
const V2_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];
/// The claims of the id tokens delegated.rs issues.
const V2_ID_TOKEN_CLAIMS: &[&str] = &[
    "aud",
    "iss",
    "iat",
    "nbf",
    "exp",
    "aio",
    "groups",
    "name",
    "nonce",
    "oid",
    "preferred_username",
    "rh",
    "roles",
    "sub",
    "tid",
    "uti",
    "ver",
];

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
        "token_endpoint_auth_methods_supported": V2_AUTH_METHODS,
        "jwks_uri": endpoint("discovery/v2.0/keys"),
        "response_modes_supported": V2_RESPONSE_MODES,
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": V2_RESPONSE_TYPES,
        "grant_types_supported": V2_GRANT_TYPES,
        "code_challenge_methods_supported": CODE_CHALLENGE_METHODS,
        "scopes_supported": V2_SCOPES,
        "issuer": format!("{base}/{issuer_tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": endpoint("oauth2/v2.0/authorize"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": false,
        "end_session_endpoint": endpoint("oauth2/v2.0/logout"),
        "claims_supported": V2_ID_TOKEN_CLAIMS,
        "tenant_region_scope": region,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    }))
    .into_response()
}

/// `GET /{tenant}/.well-known/openid-configuration` (v1). exosim's v1 endpoint is the token
/// endpoint's client credentials grant only (user sign-in is v2.0), so that is the only grant it
/// lists; `authorization_endpoint` and `response_types_supported` are REQUIRED members (OIDC
/// Discovery 1.0 §3), so they name the v1.0 authorize path, which answers with an error.
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
        "authorization_endpoint": endpoint("oauth2/authorize"),
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/common/discovery/keys"),
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": ["client_credentials"],
        "issuer": format!("https://sts.windows.net/{issuer_tenant}/"),
        "microsoft_multi_refresh_token": true,
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
