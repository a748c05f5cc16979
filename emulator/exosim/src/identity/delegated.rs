//! Delegated (user) tokens: the clients people sign in through, the scopes they may ask for,
//! authorization codes and refresh tokens, the token endpoint's `authorization_code`,
//! `refresh_token` and `password` grants, and the id tokens and access tokens they yield.
//!
//! Follows Entra v2.0 as documented:
//! - authorization code flow and PKCE:
//!   <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow>
//! - resource owner password credentials (public clients here, see below):
//!   <https://learn.microsoft.com/entra/identity-platform/v2-oauth-ropc>
//! - id token claims: <https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference>
//! - access token claims:
//!   <https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>
//! - error codes: <https://learn.microsoft.com/entra/identity-platform/reference-error-codes>
//!
//! Codes are single use, live ten minutes, and are bound to the tenant, the client, the exact
//! `redirect_uri`, the PKCE challenge (S256 only), the nonce and the scopes the user signed in
//! for. A token request's `scope` ("a Microsoft extension to the authorization code flow,
//! intended to allow apps to declare the resource they want the token for during token
//! redemption", v2-oauth2-auth-code-flow) is checked against consent, not against the code: in
//! the emulation every scope the service app exposes is consented, so it may name any of them
//! (or `{app}/.default`, meaning all) and add OIDC scopes; a scope of another resource or one the
//! app does not expose is refused as at `/authorize`. The same holds for a refresh token. Access
//! tokens for the service app's API are v1.0 or v2.0 as its registration says
//! (`access_token_version`, null meaning 1: reference-app-manifest, access-tokens "Token
//! formats"); a v1.0 token's `aud` is the resource as the request named it, client id or app ID
//! URI (access-token-claims-reference, `aud`). Choices Entra does not
//! document (each in docs/fidelity.md "Sign-in"): a code is spent by any redemption attempt
//! that names it, even a failing one; the password grant is refused to confidential clients
//! even with their secret; `sub` is a per-app hash of the object id (Entra's is pairwise but
//! opaque); a refresh token stays valid after use until it expires (90 days).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::aadsts::{AadError, json_headers};
use super::token::{Form, check_secret, constant_time_eq};
use crate::counters::Counter;
use crate::directory::{App, PublicClient, ServiceApp, Tenant, User};
use crate::jose::{b64url, sign_rs256};
use crate::state::Shared;

/// How long an authorization code may be redeemed ("about 10 minutes", per the code flow page).
pub(crate) const CODE_LIFETIME_SECS: i64 = 600;
/// Refresh tokens' lifetime (Entra's default for non-SPA clients: 90 days).
const REFRESH_LIFETIME_SECS: i64 = 90 * 24 * 3600;
/// Id tokens live one hour.
const ID_TOKEN_LIFETIME_SECS: i64 = 3600;
/// Bounds on remembered codes and refresh tokens (expired ones are purged first).
const MAX_CODES: usize = 10_000;
const MAX_REFRESH_TOKENS: usize = 100_000;

/// Microsoft Graph's app id: the audience of tokens asked for with OIDC scopes only.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// A client people sign in through.
#[derive(Clone, Copy)]
pub(crate) enum Client<'a> {
    /// The service app: confidential (client secret), its own API's audience.
    Service(&'a ServiceApp),
    /// The public client: no secret, allowed the password grant.
    Public(&'a PublicClient),
    /// An app-only registration: confidential, no redirect URI.
    AppOnly(&'a App),
}

impl<'a> Client<'a> {
    pub(crate) fn find(tenant: &'a Tenant, client_id: &str) -> Option<Self> {
        if let Some(app) = tenant
            .service_app
            .as_ref()
            .filter(|a| a.client_id.eq_ignore_ascii_case(client_id))
        {
            return Some(Client::Service(app));
        }
        if let Some(client) = tenant
            .public_client
            .as_ref()
            .filter(|c| c.client_id.eq_ignore_ascii_case(client_id))
        {
            return Some(Client::Public(client));
        }
        tenant.app(client_id).map(Client::AppOnly)
    }

    pub(crate) fn client_id(&self) -> &'a str {
        match self {
            Client::Service(app) => &app.client_id,
            Client::Public(client) => &client.client_id,
            Client::AppOnly(app) => &app.client_id,
        }
    }

    pub(crate) fn redirect_uris(&self) -> &'a [String] {
        match self {
            Client::Service(app) => &app.redirect_uris,
            Client::Public(client) => &client.redirect_uris,
            Client::AppOnly(_) => &[],
        }
    }

    fn is_public(&self) -> bool {
        matches!(self, Client::Public(_))
    }
}

/// What a `scope` parameter asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scopes {
    openid: bool,
    offline_access: bool,
    /// The service app's permissions (`scp`), or `None` for OIDC scopes only (a Graph token).
    service: Option<Vec<String>>,
    /// Whether the request named the service app by its client id rather than its app ID URI
    /// (a v1.0 token's `aud` is the form used).
    named_by_client_id: bool,
}

/// The scopes a token request asks for: its own `scope` when it sends one, else the granted
/// ones. Entra checks a redemption's `scope` against consent, not against the code; here every
/// exposed scope of the service app is consented, so [`parse_scopes`]'s checks are the rule.
fn requested_scope<'a>(
    tenant: &Tenant,
    client_id: &str,
    requested: Option<&'a str>,
    granted: &'a str,
) -> Result<(Scopes, &'a str), AadError> {
    let scope = requested.unwrap_or(granted);
    Ok((parse_scopes(tenant, client_id, scope)?, scope))
}

/// Parses a delegated `scope`: OIDC scopes plus permissions of at most one resource, which must
/// be the tenant's service app (other resources have no consent in the emulation: AADSTS65001).
pub(crate) fn parse_scopes(
    tenant: &Tenant,
    client_id: &str,
    scope: &str,
) -> Result<Scopes, AadError> {
    let mut scopes = Scopes {
        openid: false,
        offline_access: false,
        service: None,
        named_by_client_id: false,
    };
    let mut resource: Option<String> = None;
    let mut any = false;
    for item in scope.split_ascii_whitespace() {
        any = true;
        let lower = item.to_ascii_lowercase();
        if OIDC_SCOPES.contains(&lower.as_str()) {
            scopes.openid |= lower == "openid";
            scopes.offline_access |= lower == "offline_access";
            continue;
        }
        let Some((prefix, name)) = item.rsplit_once('/') else {
            // A bare permission such as `User.Read` is Microsoft Graph's.
            return Err(AadError::consent_required(
                client_id,
                "https://graph.microsoft.com",
            ));
        };
        if resource
            .as_deref()
            .is_some_and(|r| !r.eq_ignore_ascii_case(prefix))
        {
            return Err(AadError::multiple_resources(scope));
        }
        resource = Some(prefix.to_owned());
        let service = tenant.service_app.as_ref().filter(|app| {
            prefix.eq_ignore_ascii_case(&app.app_id_uri)
                || prefix.eq_ignore_ascii_case(&app.client_id)
                || prefix.eq_ignore_ascii_case(&format!("api://{}", app.client_id))
        });
        let Some(app) = service else {
            return Err(if super::find_resource(prefix).is_some() {
                AadError::consent_required(client_id, prefix)
            } else {
                AadError::resource_not_found(prefix, &tenant.display_name)
            });
        };
        scopes.named_by_client_id = prefix.eq_ignore_ascii_case(&app.client_id);
        let granted = scopes.service.get_or_insert_with(Vec::new);
        if name == ".default" {
            for exposed in &app.scopes {
                if !granted.contains(exposed) {
                    granted.push(exposed.clone());
                }
            }
        } else {
            let Some(exposed) = app.scopes.iter().find(|s| s.eq_ignore_ascii_case(name)) else {
                return Err(AadError::invalid_scope(item));
            };
            if !granted.contains(exposed) {
                granted.push(exposed.clone());
            }
        }
    }
    if !any {
        return Err(AadError::missing_parameter("scope"));
    }
    Ok(scopes)
}

/// An issued, not yet expired authorization code.
#[derive(Debug, Clone)]
pub(crate) struct PendingCode {
    pub tenant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// base64url(SHA-256(code_verifier)), as sent with `code_challenge_method=S256`.
    pub challenge: String,
    pub nonce: Option<String>,
    pub scope: String,
    pub user_oid: String,
    pub issued_at: i64,
    redeemed: bool,
}

impl PendingCode {
    #[expect(
        clippy::too_many_arguments,
        reason = "every binding of a code is one argument"
    )]
    pub(crate) fn new(
        tenant_id: &str,
        client_id: &str,
        redirect_uri: &str,
        challenge: &str,
        nonce: Option<&str>,
        scope: &str,
        user_oid: &str,
        issued_at: i64,
    ) -> Self {
        PendingCode {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            nonce: nonce.map(str::to_owned),
            scope: scope.to_owned(),
            user_oid: user_oid.to_owned(),
            issued_at,
            redeemed: false,
        }
    }
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    tenant_id: String,
    client_id: String,
    user_oid: String,
    scope: String,
    expires_at: i64,
}

/// Authorization codes and refresh tokens handed out, keyed by their SHA-256 (a memory dump
/// or a debug print of this map reveals no usable token).
#[derive(Debug, Default)]
pub(crate) struct SignInState {
    codes: Mutex<HashMap<[u8; 32], PendingCode>>,
    refresh: Mutex<HashMap<[u8; 32], RefreshGrant>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    b64url(buf)
}

impl SignInState {
    /// Remembers `code` and returns its value for the redirect.
    pub(crate) fn new_code(&self, code: PendingCode, now: i64) -> String {
        let value = random_token(48);
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        if codes.len() >= MAX_CODES {
            codes.retain(|_, c| c.issued_at + CODE_LIFETIME_SECS > now);
            if codes.len() >= MAX_CODES
                && let Some(oldest) = codes
                    .iter()
                    .min_by_key(|(_, c)| c.issued_at)
                    .map(|(k, _)| *k)
            {
                codes.remove(&oldest);
            }
        }
        codes.insert(digest(&value), code);
        value
    }

    /// Spends `code`: the first attempt gets it, any later one AADSTS54005.
    fn redeem(&self, code: &str, now: i64) -> Result<PendingCode, AadError> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(code);
        let Some(pending) = codes.get_mut(&key) else {
            return Err(AadError::bad_code());
        };
        if pending.issued_at + CODE_LIFETIME_SECS <= now {
            codes.remove(&key);
            return Err(AadError::code_expired());
        }
        if pending.redeemed {
            return Err(AadError::code_redeemed());
        }
        // The spent entry stays until it expires, so a reuse is named as such.
        let spent = pending.clone();
        pending.redeemed = true;
        Ok(spent)
    }

    fn new_refresh_token(&self, grant: RefreshGrant, now: i64) -> String {
        let value = random_token(64);
        let mut tokens = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_REFRESH_TOKENS {
            tokens.retain(|_, g| g.expires_at > now);
            if tokens.len() >= MAX_REFRESH_TOKENS
                && let Some(oldest) = tokens
                    .iter()
                    .min_by_key(|(_, g)| g.expires_at)
                    .map(|(k, _)| *k)
            {
                tokens.remove(&oldest);
            }
        }
        tokens.insert(digest(&value), grant);
        value
    }

    fn refresh_grant(&self, token: &str, now: i64) -> Result<RefreshGrant, AadError> {
        let mut tokens = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(token);
        match tokens.get(&key) {
            None => Err(AadError::bad_refresh_token()),
            Some(grant) if grant.expires_at <= now => {
                tokens.remove(&key);
                Err(AadError::refresh_expired())
            }
            Some(grant) => Ok(grant.clone()),
        }
    }
}

/// Authenticates the client of a delegated grant: the public client sends no credential; the
/// service app and app-only apps send their client secret (body or HTTP Basic).
fn authenticate<'a>(
    tenant: &'a Tenant,
    form: &Form<'_>,
    basic: Option<&(String, String)>,
) -> Result<(Client<'a>, &'static str), AadError> {
    let client_id = match (form.get("client_id"), basic) {
        (Some(body), Some((basic_id, _))) if !body.eq_ignore_ascii_case(basic_id) => {
            return Err(AadError::malformed_request(
                "The client_id in the body differs from the one in the Authorization header.",
            ));
        }
        (Some(body), _) => body.to_owned(),
        (None, Some((basic_id, _))) => basic_id.clone(),
        (None, None) => return Err(AadError::missing_parameter("client_id")),
    };
    let Some(client) = Client::find(tenant, &client_id) else {
        return Err(AadError::app_not_found(&client_id, &tenant.display_name));
    };
    let secret = match (form.get("client_secret"), basic) {
        (Some(_), Some(_)) => {
            return Err(AadError::malformed_request(
                "The client secret was sent both in the body and in the Authorization header; use one client authentication method.",
            ));
        }
        (Some(body), None) => Some(body),
        (None, Some((_, basic_secret))) => Some(basic_secret.as_str()),
        (None, None) => None,
    };
    let assertion = form.get("client_assertion").is_some();
    match client {
        Client::Public(_) if secret.is_some() || assertion => {
            Err(AadError::public_client_with_secret())
        }
        Client::Public(_) => Ok((client, "0")),
        _ if assertion => Err(AadError::malformed_request(
            "exosim's delegated grants authenticate confidential clients with client_secret only.",
        )),
        _ if secret.is_none() => Err(AadError::no_credential()),
        Client::Service(app) => {
            let presented = secret.unwrap_or_default();
            if constant_time_eq(app.secret.value.as_bytes(), presented.as_bytes()) {
                Ok((client, "1"))
            } else {
                Err(AadError::wrong_secret(&app.client_id))
            }
        }
        Client::AppOnly(app) => {
            check_secret(app, secret.unwrap_or_default())?;
            Ok((client, "1"))
        }
    }
}

/// The token endpoint's delegated grants (`grant_type` is one of them).
pub(super) fn grant(
    shared: &Shared,
    tenant: &Tenant,
    grant_type: &str,
    form: &Form<'_>,
    basic: Option<&(String, String)>,
) -> Result<Response, AadError> {
    let now = super::unix_now();
    // Entra authenticates the client before it looks at the grant.
    let (client, azpacr) = authenticate(tenant, form, basic)?;
    let client_info = form.get("client_info") == Some("1");
    let required = |name: &str| {
        form.get(name)
            .ok_or_else(|| AadError::missing_parameter(name))
    };
    match grant_type {
        "authorization_code" => {
            let code = required("code")?;
            let redirect_uri = required("redirect_uri")?;
            let pending = shared.sign_in.redeem(code, now)?;
            if pending.tenant_id != tenant.id
                || !pending.client_id.eq_ignore_ascii_case(client.client_id())
            {
                return Err(AadError::bad_code());
            }
            // RFC 6749 §4.1.3: identical to the authorization request's.
            if pending.redirect_uri != redirect_uri {
                return Err(AadError::reply_url_differs(
                    redirect_uri,
                    &pending.redirect_uri,
                ));
            }
            let verifier = required("code_verifier")?;
            if !pkce_verifies(verifier, &pending.challenge) {
                return Err(AadError::pkce_mismatch());
            }
            let user = tenant
                .user_by_id(&pending.user_oid)
                .ok_or_else(|| AadError::invalid_grant("the user no longer exists."))?;
            let (scopes, scope) = requested_scope(
                tenant,
                client.client_id(),
                form.get("scope"),
                &pending.scope,
            )?;
            Ok(issue(
                shared,
                tenant,
                &Issue {
                    client,
                    azpacr,
                    user,
                    scopes: &scopes,
                    scope,
                    nonce: pending.nonce.as_deref(),
                    client_info,
                },
                now,
            ))
        }
        "refresh_token" => {
            let token = required("refresh_token")?;
            let grant = shared.sign_in.refresh_grant(token, now)?;
            if grant.tenant_id != tenant.id
                || !grant.client_id.eq_ignore_ascii_case(client.client_id())
            {
                return Err(AadError::bad_refresh_token());
            }
            let (scopes, scope) =
                requested_scope(tenant, client.client_id(), form.get("scope"), &grant.scope)?;
            let user = tenant
                .user_by_id(&grant.user_oid)
                .ok_or_else(|| AadError::invalid_grant("the user no longer exists."))?;
            Ok(issue(
                shared,
                tenant,
                &Issue {
                    client,
                    azpacr,
                    user,
                    scopes: &scopes,
                    scope,
                    nonce: None,
                    client_info,
                },
                now,
            ))
        }
        "password" => {
            if !client.is_public() {
                return Err(AadError::grant_not_for_client(
                    "password",
                    client.client_id(),
                ));
            }
            let username = required("username")?;
            let password = required("password")?;
            let scope = required("scope")?;
            let user = check_user(tenant, username, password)?;
            let scopes = parse_scopes(tenant, client.client_id(), scope)?;
            Ok(issue(
                shared,
                tenant,
                &Issue {
                    client,
                    azpacr,
                    user,
                    scopes: &scopes,
                    scope,
                    nonce: None,
                    client_info,
                },
                now,
            ))
        }
        other => Err(AadError::unsupported_grant_type(other)),
    }
}

/// Checks a user's sign-in name and password (the login form and the password grant).
pub(crate) fn check_user<'a>(
    tenant: &'a Tenant,
    login: &str,
    password: &str,
) -> Result<&'a User, AadError> {
    let user = tenant
        .user(login.trim())
        .ok_or_else(|| AadError::user_not_found(&tenant.display_name))?;
    if constant_time_eq(user.password.as_bytes(), password.as_bytes()) {
        Ok(user)
    } else {
        Err(AadError::bad_password())
    }
}

/// RFC 7636 §4.1 verifier syntax, then S256: base64url(SHA-256(verifier)) == challenge.
fn pkce_verifies(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed
        && constant_time_eq(
            b64url(Sha256::digest(verifier.as_bytes())).as_bytes(),
            challenge.as_bytes(),
        )
}

/// Whether `challenge` is what S256 produces: 43 base64url characters (32 bytes).
pub(crate) fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

struct Issue<'a> {
    client: Client<'a>,
    azpacr: &'static str,
    user: &'a User,
    scopes: &'a Scopes,
    scope: &'a str,
    nonce: Option<&'a str>,
    client_info: bool,
}

/// Entra's `sub` is pairwise (per app) and opaque; ours is a hash of the object id and the app.
fn pairwise_sub(object_id: &str, app_id: &str) -> String {
    b64url(Sha256::digest(format!("{object_id}:{app_id}").as_bytes()))
}

fn signed(shared: &Shared, claims: &Value) -> String {
    let x5t = shared.signing.thumbprints.x5t();
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".to_owned());
    header.kid = Some(x5t);
    sign_rs256(&shared.signing, &header, claims)
}

fn insert_list(claims: &mut Map<String, Value>, name: &str, values: &[String]) {
    if !values.is_empty() {
        claims.insert(name.to_owned(), Value::from(values.to_vec()));
    }
}

/// Mints the access token (and the id token and refresh token when asked for) and answers.
fn issue(shared: &Shared, tenant: &Tenant, what: &Issue<'_>, now: i64) -> Response {
    let (lifetime, _) = shared.faults.lifetimes();
    let lifetime_secs = lifetime.as_secs();
    let not_before = now - 300;
    let expires_on = now.saturating_add(i64::try_from(lifetime_secs).unwrap_or(i64::MAX));
    let issuer_v2 = format!("{}/{}/v2.0", shared.base_url, tenant.id);
    let user = what.user;
    let group_ids: Vec<String> = user.groups.iter().map(|g| g.object_id.clone()).collect();
    let client_id = what.client.client_id();
    let uti = || random_token(16);

    // The access token: for the service app's API (v1.0 or v2.0 as its registration says),
    // else Microsoft Graph (v1.0).
    let issuer_v1 = format!("https://sts.windows.net/{}/", tenant.id);
    let (access_claims, response_scope) = match (&what.scopes.service, &tenant.service_app) {
        (Some(scp), Some(app)) => {
            // access-token-claims-reference: v1.0 has `aud` = the app ID URI, the STS issuer,
            // `appid`/`appidacr`, `upn` and `unique_name`; v2.0 has `aud` = the client id, the
            // v2.0 issuer, `azp`/`azpacr` and `preferred_username`.
            let v2 = app.access_token_version == 2;
            let mut claims = Map::new();
            let (aud, iss) = if v2 {
                (app.client_id.clone(), issuer_v2.clone())
            } else {
                // "In v1.0 tokens, it can be the client ID or the resource URI used in the
                // request" (access-token-claims-reference, `aud`).
                let aud = if what.scopes.named_by_client_id {
                    &app.client_id
                } else {
                    &app.app_id_uri
                };
                (aud.clone(), issuer_v1.clone())
            };
            claims.insert("aud".into(), Value::from(aud));
            claims.insert("iss".into(), Value::from(iss));
            claims.insert("iat".into(), Value::from(not_before));
            claims.insert("nbf".into(), Value::from(not_before));
            claims.insert("exp".into(), Value::from(expires_on));
            claims.insert("aio".into(), Value::from(random_token(48)));
            let (client_claim, acr_claim) = if v2 {
                ("azp", "azpacr")
            } else {
                ("appid", "appidacr")
            };
            claims.insert(client_claim.into(), Value::from(client_id));
            claims.insert(acr_claim.into(), Value::from(what.azpacr));
            insert_list(&mut claims, "groups", &group_ids);
            claims.insert("name".into(), Value::from(user.display_name.clone()));
            claims.insert("oid".into(), Value::from(user.object_id.clone()));
            if v2 {
                claims.insert("preferred_username".into(), Value::from(user.upn.clone()));
            }
            claims.insert("rh".into(), Value::from(random_token(32)));
            insert_list(&mut claims, "roles", &app.roles_of(user));
            claims.insert("scp".into(), Value::from(scp.join(" ")));
            claims.insert(
                "sub".into(),
                Value::from(pairwise_sub(&user.object_id, &app.client_id)),
            );
            claims.insert("tid".into(), Value::from(tenant.id.clone()));
            if !v2 {
                claims.insert("unique_name".into(), Value::from(user.upn.clone()));
                claims.insert("upn".into(), Value::from(user.upn.clone()));
            }
            claims.insert("uti".into(), Value::from(uti()));
            claims.insert("ver".into(), Value::from(if v2 { "2.0" } else { "1.0" }));
            let scope: Vec<String> = scp
                .iter()
                .map(|s| format!("{}/{s}", app.app_id_uri))
                .collect();
            (claims, scope.join(" "))
        }
        _ => {
            let scp = "openid profile email User.Read";
            let mut claims = Map::new();
            claims.insert("aud".into(), Value::from(GRAPH_APP_ID));
            claims.insert("iss".into(), Value::from(issuer_v1));
            claims.insert("iat".into(), Value::from(not_before));
            claims.insert("nbf".into(), Value::from(not_before));
            claims.insert("exp".into(), Value::from(expires_on));
            claims.insert("appid".into(), Value::from(client_id));
            claims.insert("appidacr".into(), Value::from(what.azpacr));
            claims.insert("idtyp".into(), Value::from("user"));
            claims.insert("name".into(), Value::from(user.display_name.clone()));
            claims.insert("oid".into(), Value::from(user.object_id.clone()));
            claims.insert("scp".into(), Value::from(scp));
            claims.insert(
                "sub".into(),
                Value::from(pairwise_sub(&user.object_id, GRAPH_APP_ID)),
            );
            claims.insert("tid".into(), Value::from(tenant.id.clone()));
            claims.insert("unique_name".into(), Value::from(user.upn.clone()));
            claims.insert("upn".into(), Value::from(user.upn.clone()));
            claims.insert("uti".into(), Value::from(uti()));
            claims.insert("ver".into(), Value::from("1.0"));
            (claims, scp.to_owned())
        }
    };
    let access_token = signed(shared, &Value::Object(access_claims));
    shared.counters.bump(Counter::TokenIssued);

    let mut body = Map::new();
    body.insert("token_type".into(), Value::from("Bearer"));
    body.insert("scope".into(), Value::from(response_scope));
    body.insert("expires_in".into(), Value::from(lifetime_secs));
    body.insert("ext_expires_in".into(), Value::from(lifetime_secs));
    body.insert("access_token".into(), Value::from(access_token));
    if what.scopes.offline_access {
        let refresh = shared.sign_in.new_refresh_token(
            RefreshGrant {
                tenant_id: tenant.id.clone(),
                client_id: client_id.to_owned(),
                user_oid: user.object_id.clone(),
                scope: what.scope.to_owned(),
                expires_at: now + REFRESH_LIFETIME_SECS,
            },
            now,
        );
        body.insert("refresh_token".into(), Value::from(refresh));
    }
    if what.scopes.openid {
        let roles = match what.client {
            Client::Service(app) => app.roles_of(user),
            _ => Vec::new(),
        };
        let mut claims = Map::new();
        claims.insert("aud".into(), Value::from(client_id));
        claims.insert("iss".into(), Value::from(issuer_v2));
        claims.insert("iat".into(), Value::from(not_before));
        claims.insert("nbf".into(), Value::from(not_before));
        claims.insert("exp".into(), Value::from(now + ID_TOKEN_LIFETIME_SECS));
        claims.insert("aio".into(), Value::from(random_token(48)));
        insert_list(&mut claims, "groups", &group_ids);
        claims.insert("name".into(), Value::from(user.display_name.clone()));
        if let Some(nonce) = what.nonce {
            claims.insert("nonce".into(), Value::from(nonce));
        }
        claims.insert("oid".into(), Value::from(user.object_id.clone()));
        claims.insert("preferred_username".into(), Value::from(user.upn.clone()));
        claims.insert("rh".into(), Value::from(random_token(32)));
        insert_list(&mut claims, "roles", &roles);
        claims.insert(
            "sub".into(),
            Value::from(pairwise_sub(&user.object_id, client_id)),
        );
        claims.insert("tid".into(), Value::from(tenant.id.clone()));
        claims.insert("uti".into(), Value::from(uti()));
        claims.insert("ver".into(), Value::from("2.0"));
        body.insert(
            "id_token".into(),
            Value::from(signed(shared, &Value::Object(claims))),
        );
    }
    if what.client_info {
        let info = json!({"uid": user.object_id, "utid": tenant.id});
        body.insert(
            "client_info".into(),
            Value::from(b64url(info.to_string().as_bytes())),
        );
    }
    let trace_id = uuid::Uuid::new_v4().to_string();
    (json_headers(&trace_id), Json(Value::Object(body))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_round_trip_and_syntax() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"; // RFC 7636 appendix B
        assert!(is_s256_challenge(challenge));
        assert!(pkce_verifies(verifier, challenge));
        assert!(!pkce_verifies(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(!pkce_verifies(challenge, challenge), "plain is not S256");
        assert!(!pkce_verifies("short", challenge));
        assert!(!is_s256_challenge("plain-text-challenge"));
    }

    #[test]
    fn refresh_tokens_expire_with_700082_and_unknown_ones_are_70000() {
        let state = SignInState::default();
        let grant = RefreshGrant {
            tenant_id: "t".into(),
            client_id: "c".into(),
            user_oid: "u".into(),
            scope: "openid offline_access".into(),
            expires_at: 2000,
        };
        let token = state.new_refresh_token(grant, 1000);
        assert!(state.refresh_grant(&token, 1999).is_ok());
        let expired = state.refresh_grant(&token, 2000).unwrap_err();
        assert_eq!((expired.code, expired.error), (700082, "invalid_grant"));
        let unknown = state.refresh_grant("nope", 1000).unwrap_err();
        assert_eq!((unknown.code, unknown.error), (70000, "invalid_grant"));
    }

    #[test]
    fn codes_are_single_use_and_expire() {
        let state = SignInState::default();
        let code = |at| PendingCode::new("t", "c", "r", "x", None, "openid", "u", at);
        let value = state.new_code(code(1000), 1000);
        assert!(state.redeem(&value, 1001).is_ok());
        assert_eq!(state.redeem(&value, 1002).unwrap_err().code, 54005);
        assert_eq!(state.redeem("nope", 1002).unwrap_err().code, 70000);
        let late = state.new_code(code(1000), 1000);
        assert_eq!(
            state
                .redeem(&late, 1000 + CODE_LIFETIME_SECS)
                .unwrap_err()
                .code,
            70000
        );
    }
}
