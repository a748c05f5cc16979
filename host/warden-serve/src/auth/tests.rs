//! Unit tests of the auth module against a small fake identity provider over real loopback
//! HTTP: tokens signed with keys generated here (and forged ones), the sign-in flow with its
//! pending-sign-in record, sessions, CSRF. The whole flow against exosim is in
//! `tests/auth_exosim.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::*;

const TENANT: &str = "6f4a2c1e-0b7d-4e59-9a3c-2d8e1f0a7b65";
const OTHER_TENANT: &str = "0d1e2f3a-4b5c-4d6e-8f70-81a2b3c4d5e6";
const CLIENT: &str = "3c9e7a51-8d2f-4b06-a1e4-5f7d9c0b2a18";
const APP_ID_URI: &str = "api://3c9e7a51-8d2f-4b06-a1e4-5f7d9c0b2a18";
/// A canary: it must never appear in a log, error, Debug or response.
const SECRET: &str = "CANARY-client-secret-7f3e9a";
const KID: &str = "signing-key-1";
/// A client app (a CLI's registration) allowed to call the API.
const CLI_APP: &str = "7d2c4b19-3e5a-4f60-8b71-9c0d1e2f3a4b";

struct Keys {
    /// In the JWKS as [`KID`].
    tenant: rsa::PrivateKey,
    /// Nobody's: forged tokens are signed with it.
    forger: rsa::PrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        tenant: rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048).expect("key"),
        forger: rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048).expect("key"),
    })
}

fn jwk(key: &rsa::PrivateKey, kid: &str) -> Value {
    let public = key.to_public_key();
    json!({
        "kty": "RSA", "use": "sig", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.n_bytes()),
        "e": URL_SAFE_NO_PAD.encode(public.e_bytes()),
    })
}

fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signs")
}

fn rsa_key(key: &rsa::PrivateKey) -> EncodingKey {
    EncodingKey::from_rsa_der(key.to_pkcs1_der().expect("der").as_bytes())
}

/// RS256 by the tenant's key, named by [`KID`].
fn sign(claims: &Value) -> String {
    sign_with(
        Algorithm::RS256,
        &rsa_key(&keys().tenant),
        Some(KID),
        claims,
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `claims` with `changes` applied: a `null` removes the claim.
fn with(mut claims: Value, changes: Value) -> Value {
    let map = claims.as_object_mut().expect("claims are an object");
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    claims
}

// ---------------------------------------------------------------------------------------------
// A fake identity provider: discovery, JWKS (counting fetches), a token endpoint that checks the
// secret, the code and PKCE, and answers an id_token for the code's nonce.

#[derive(Default)]
struct IdpState {
    jwks: Vec<Value>,
    jwks_fetches: u32,
    /// code → (nonce, code_challenge, redirect_uri)
    codes: HashMap<String, (String, String, String)>,
    /// Changes to the id_token's claims (tests of a bad id_token).
    id_token_changes: Value,
    /// Every token request's form, as received.
    token_requests: Vec<HashMap<String, String>>,
    /// Every id_token issued (a test presents one as a bearer token).
    id_tokens: Vec<String>,
}

struct FakeIdp {
    base: Url,
    state: Arc<Mutex<IdpState>>,
}

impl FakeIdp {
    async fn start() -> FakeIdp {
        let state = Arc::new(Mutex::new(IdpState {
            jwks: vec![jwk(&keys().tenant, KID)],
            id_token_changes: json!({}),
            ..IdpState::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base: Url = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let app = Router::new()
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(idp_metadata),
            )
            .route("/keys", get(idp_keys))
            .route("/token", post(idp_token))
            .with_state((state.clone(), base.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeIdp { base, state }
    }

    fn authority(&self) -> Url {
        self.base.join(&format!("{TENANT}/v2.0")).unwrap()
    }

    fn issuer(&self) -> String {
        self.authority().to_string()
    }

    /// Valid access-token claims for this service.
    fn access_claims(&self) -> Value {
        json!({
            "iss": self.issuer(), "aud": CLIENT, "tid": TENANT,
            "oid": "0b9f3e2a-5c71-4d8e-9f60-1a2b3c4d5e6f",
            "preferred_username": "helpdesk@contoso.example", "name": "Help Desk",
            "groups": ["a1b2c3d4-0000-4000-8000-000000000001"], "roles": [],
            "scp": "Tasks.Run", "ver": "2.0", "azp": CLI_APP,
            "iat": now(), "nbf": now(), "exp": now() + 3600,
        })
    }

    fn jwks_fetches(&self) -> u32 {
        self.state.lock().unwrap().jwks_fetches
    }

    /// Issues a code for the authorize request `location` (what exosim does after the form).
    fn issue_code(&self, location: &Url) -> String {
        let param = |name: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let code = format!("code-{}", session::random_token());
        self.state.lock().unwrap().codes.insert(
            code.clone(),
            (
                param("nonce"),
                param("code_challenge"),
                param("redirect_uri"),
            ),
        );
        code
    }
}

type IdpShared = (Arc<Mutex<IdpState>>, Url);

async fn idp_metadata(State((_, base)): State<IdpShared>, Path(_tenant): Path<String>) -> Response {
    // As Entra: the issuer names the tenant by id, whatever name the request used.
    axum::Json(json!({
        "issuer": base.join(&format!("{TENANT}/v2.0")).unwrap().to_string(),
        "authorization_endpoint": base.join("authorize").unwrap().to_string(),
        "token_endpoint": base.join("token").unwrap().to_string(),
        "jwks_uri": base.join("keys").unwrap().to_string(),
    }))
    .into_response()
}

async fn idp_keys(State((state, _)): State<IdpShared>) -> Response {
    let mut state = state.lock().unwrap();
    state.jwks_fetches += 1;
    axum::Json(json!({ "keys": state.jwks })).into_response()
}

async fn idp_token(
    State((state, base)): State<IdpShared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut state = state.lock().unwrap();
    state.token_requests.push(form.clone());
    let refuse = |code: u64| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": "invalid_grant",
                "error_description": "AADSTS70008: refused (CANARY-description-text)",
                "error_codes": [code],
            })),
        )
            .into_response()
    };
    if form.get("client_secret").map(String::as_str) != Some(SECRET)
        || form.get("client_id").map(String::as_str) != Some(CLIENT)
        || form.get("grant_type").map(String::as_str) != Some("authorization_code")
    {
        return refuse(7000215);
    }
    // Single use, bound to the redirect URI and the PKCE verifier.
    let Some((nonce, challenge, redirect_uri)) =
        form.get("code").and_then(|code| state.codes.remove(code))
    else {
        return refuse(70008);
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge
        || form.get("redirect_uri") != Some(&redirect_uri)
    {
        return refuse(501481);
    }
    let issuer = base.join(&format!("{TENANT}/v2.0")).unwrap().to_string();
    let claims = with(
        json!({
            "iss": issuer, "aud": CLIENT, "tid": TENANT,
            "oid": "0b9f3e2a-5c71-4d8e-9f60-1a2b3c4d5e6f", "sub": "s",
            "preferred_username": "helpdesk@contoso.example", "name": "Help Desk",
            "groups": ["a1b2c3d4-0000-4000-8000-000000000001"], "roles": ["Warden.Operator"],
            "nonce": nonce, "ver": "2.0",
            "iat": now(), "nbf": now(), "exp": now() + 3600,
        }),
        state.id_token_changes.clone(),
    );
    let id_token = sign(&claims);
    state.id_tokens.push(id_token.clone());
    axum::Json(json!({
        "token_type": "Bearer", "scope": "openid profile", "expires_in": 3599,
        "access_token": "CANARY-graph-access-token", "id_token": id_token,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// The service under test: Auth's routes plus a protected route and a state-changing one.

struct Service {
    auth: Auth,
    sessions: Arc<MemorySessions>,
    base: Url,
}

fn config(idp: &FakeIdp, public_url: Url, secure_cookies: bool) -> AuthConfig {
    AuthConfig {
        authority: idp.authority(),
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        client_secret: SECRET.into(),
        app_id_uri: APP_ID_URI.into(),
        public_url,
        session_ttl: Duration::from_secs(3600),
        secure_cookies,
        allowed_client_apps: vec![CLI_APP.into()],
        required_scopes: vec![DEFAULT_API_SCOPE.into()],
        required_roles: vec![DEFAULT_API_ROLE.into()],
        server_key: ServerKey::generate(),
    }
}

async fn service(idp: &FakeIdp) -> Service {
    service_with(idp, |_| {}).await
}

async fn service_with(idp: &FakeIdp, change: impl FnOnce(&mut AuthConfig)) -> Service {
    let sessions = Arc::new(MemorySessions::new());
    service_with_store(idp, change, sessions.clone(), sessions).await
}

/// A service whose sessions live in `store` (`sessions` is what tests inspect).
async fn service_with_store(
    idp: &FakeIdp,
    change: impl FnOnce(&mut AuthConfig),
    sessions: Arc<MemorySessions>,
    store: Arc<dyn SessionStore>,
) -> Service {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base: Url = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let mut config = config(idp, base.clone(), false);
    change(&mut config);
    let auth = Auth::new(config, store, reqwest::Client::new())
        .await
        .expect("auth starts");
    let app = auth
        .routes::<Auth>()
        .route("/whoami", get(whoami))
        .route("/act", post(act))
        .route("/csrf", get(csrf))
        .with_state(auth.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Service {
        auth,
        sessions,
        base,
    }
}

async fn whoami(caller: Caller) -> Response {
    axum::Json(caller.person).into_response()
}

/// `GET /csrf?for=/path`: the caller's CSRF token for a form posting to that path (`/act`
/// by default).
async fn csrf(
    State(auth): State<Auth>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> String {
    auth.csrf_token(&caller, query.get("for").map_or("/act", String::as_str))
}

async fn act(
    State(auth): State<Auth>,
    caller: Caller,
    Form(form): Form<HashMap<String, String>>,
) -> Result<&'static str, AuthError> {
    auth.check_csrf(
        &caller,
        "/act",
        form.get(CSRF_FIELD).map_or("", String::as_str),
    )?;
    Ok("done")
}

/// A browser: no redirects followed, cookies kept by name (Max-Age=0 removes).
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header(header::COOKIE, self.cookie_header())
        };
        let response = request.send().await.unwrap();
        for value in response.headers().get_all(header::SET_COOKIE) {
            let cookie = cookie::Cookie::parse(value.to_str().unwrap().to_owned()).unwrap();
            if cookie.max_age() == Some(time::Duration::ZERO) {
                self.cookies.remove(cookie.name());
            } else {
                self.cookies
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
        response
    }

    async fn get(&mut self, url: Url) -> reqwest::Response {
        let request = self.http.get(url);
        self.send(request).await
    }

    async fn post_form(&mut self, url: Url, form: &[(&str, &str)]) -> reqwest::Response {
        let request = self.http.post(url).form(form);
        self.send(request).await
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .expect("a Location")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs `/signin?return_to=…` and the callback with a code the IdP issued; returns the
/// callback's answer.
async fn sign_in(
    browser: &mut Browser,
    service: &Service,
    idp: &FakeIdp,
    return_to: &str,
) -> reqwest::Response {
    let mut url = service.base.join("/signin").unwrap();
    url.query_pairs_mut().append_pair("return_to", return_to);
    let started = browser.get(url).await;
    assert_eq!(started.status(), StatusCode::FOUND);
    let authorize: Url = location(&started).parse().unwrap();
    let code = idp.issue_code(&authorize);
    let state = query_param(&authorize, "state");
    callback(browser, service, &code, &state).await
}

async fn callback(
    browser: &mut Browser,
    service: &Service,
    code: &str,
    state: &str,
) -> reqwest::Response {
    let mut url = service.base.join("/auth/callback").unwrap();
    url.query_pairs_mut()
        .append_pair("code", code)
        .append_pair("state", state);
    browser.get(url).await
}

fn query_param(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{url} has no {name}"))
}

async fn bearer(service: &Service, token: &str) -> Result<Caller, AuthError> {
    bearer_with(&service.auth, token).await
}

async fn bearer_with(auth: &Auth, token: &str) -> Result<Caller, AuthError> {
    let request = axum::http::Request::builder()
        .uri("/api/v1/tasks")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    auth.caller(&parts).await
}

/// What a rejection looks like everywhere it shows: Display, Debug, the response.
async fn shown(error: AuthError) -> String {
    let text = format!("{error} {error:?}");
    let response = error.into_response();
    let headers = format!("{:?}", response.headers());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    format!("{text} {headers} {}", String::from_utf8_lossy(&body))
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens.

async fn rejection(service: &Service, token: &str) -> TokenRejection {
    match bearer(service, token).await {
        Err(AuthError::Token(rejection)) => rejection,
        other => panic!("expected a token rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_access_token_names_the_person() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let caller = bearer(&service, &sign(&idp.access_claims()))
        .await
        .expect("accepted");
    assert!(matches!(caller.via, Via::Bearer));
    assert_eq!(caller.person.upn, "helpdesk@contoso.example");
    assert_eq!(caller.person.oid, "0b9f3e2a-5c71-4d8e-9f60-1a2b3c4d5e6f");
    assert_eq!(caller.person.tenant_id, TENANT);
    assert_eq!(
        caller.person.groups,
        ["a1b2c3d4-0000-4000-8000-000000000001"]
    );
    // The app ID URI is the other accepted audience; app-only tokens carry roles, no scp.
    let by_uri = with(idp.access_claims(), json!({ "aud": APP_ID_URI }));
    assert!(bearer(&service, &sign(&by_uri)).await.is_ok());
    let app_only = with(
        idp.access_claims(),
        json!({ "scp": null, "preferred_username": null, "roles": ["Warden.Operator"] }),
    );
    let app = bearer(&service, &sign(&app_only)).await.expect("app token");
    assert_eq!(app.person.upn, "");
    assert_eq!(app.person.roles, ["Warden.Operator"]);
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    // Signed by another key under the tenant key's kid.
    let forged = sign_with(
        Algorithm::RS256,
        &rsa_key(&keys().forger),
        Some(KID),
        &idp.access_claims(),
    );
    assert_eq!(
        rejection(&service, &forged).await,
        TokenRejection::Signature
    );
    // A valid token whose payload was swapped for another (the signature no longer covers it).
    let valid = sign(&idp.access_claims());
    let other = sign(&with(idp.access_claims(), json!({ "oid": "someone-else" })));
    let parts: Vec<&str> = valid.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_eq!(
        rejection(&service, &swapped).await,
        TokenRejection::Signature
    );
}

#[tokio::test]
async fn alg_none_and_every_algorithm_but_rs256_are_refused() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let payload = URL_SAFE_NO_PAD.encode(idp.access_claims().to_string());
    for header in [
        json!({ "alg": "none", "kid": KID }),
        json!({ "alg": "None", "kid": KID }),
        json!({ "alg": "NONE", "typ": "JWT" }),
        json!({ "kid": KID }),
        json!({ "alg": null, "kid": KID }),
        json!({ "alg": ["RS256"], "kid": KID }),
    ] {
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        for signature in ["", "AAAA"] {
            let token = format!("{header}.{payload}.{signature}");
            assert!(
                matches!(
                    rejection(&service, &token).await,
                    TokenRejection::Algorithm(_)
                ),
                "{token}"
            );
        }
    }
    // The same key, other RSA algorithms: still refused (RS256 only).
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign_with(
            alg,
            &rsa_key(&keys().tenant),
            Some(KID),
            &idp.access_claims(),
        );
        assert!(matches!(
            rejection(&service, &token).await,
            TokenRejection::Algorithm(_)
        ));
    }
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_refused() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let public = keys().tenant.to_public_key();
    let pkcs1 = public.to_pkcs1_der().unwrap();
    let n = public.n_bytes();
    let n_text = jwk(&keys().tenant, KID)["n"].as_str().unwrap().to_owned();
    let jwks_text = json!({ "keys": [jwk(&keys().tenant, KID)] }).to_string();
    // Every form of the public key an attacker might guess the verifier uses as HMAC secret.
    let secrets: [&[u8]; 4] = [
        pkcs1.as_bytes(),
        &n,
        jwks_text.as_bytes(),
        n_text.as_bytes(),
    ];
    for secret in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign_with(
                alg,
                &EncodingKey::from_secret(secret).unwrap(),
                Some(KID),
                &idp.access_claims(),
            );
            assert!(matches!(
                rejection(&service, &token).await,
                TokenRejection::Algorithm(_)
            ));
        }
    }
}

#[tokio::test]
async fn wrong_audience_issuer_or_tenant_is_refused() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let cases = [
        (
            json!({ "aud": "00000002-0000-0ff1-ce00-000000000000" }),
            TokenRejection::Audience("00000002-0000-0ff1-ce00-000000000000".into()),
        ),
        (
            json!({ "aud": "https://graph.microsoft.com" }),
            TokenRejection::Audience("https://graph.microsoft.com".into()),
        ),
        (
            json!({ "aud": ["https://graph.microsoft.com", "other"] }),
            TokenRejection::Audience("https://graph.microsoft.com other".into()),
        ),
        (
            json!({ "aud": format!("{CLIENT} ") }),
            TokenRejection::Audience(format!("{CLIENT} ")),
        ),
        (
            json!({ "iss": format!("https://sts.windows.net/{TENANT}/") }),
            TokenRejection::Issuer(format!("https://sts.windows.net/{TENANT}/")),
        ),
        (
            json!({ "iss": idp.base.join(&format!("{OTHER_TENANT}/v2.0")).unwrap().to_string() }),
            TokenRejection::Issuer(
                idp.base
                    .join(&format!("{OTHER_TENANT}/v2.0"))
                    .unwrap()
                    .to_string(),
            ),
        ),
        (
            json!({ "iss": format!("{}/", idp.issuer()) }),
            TokenRejection::Issuer(format!("{}/", idp.issuer())),
        ),
        (
            json!({ "tid": OTHER_TENANT }),
            TokenRejection::Tenant(OTHER_TENANT.into()),
        ),
    ];
    for (change, expected) in cases {
        let token = sign(&with(idp.access_claims(), change.clone()));
        assert_eq!(rejection(&service, &token).await, expected, "{change}");
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_beyond_a_small_leeway() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let skew = CLOCK_SKEW_SECONDS as i64;
    let expired = with(idp.access_claims(), json!({ "exp": now() - skew - 5 }));
    assert_eq!(
        rejection(&service, &sign(&expired)).await,
        TokenRejection::Expired
    );
    let early = with(idp.access_claims(), json!({ "nbf": now() + skew + 30 }));
    assert_eq!(
        rejection(&service, &sign(&early)).await,
        TokenRejection::NotYetValid
    );
    // Within the leeway both pass (clocks differ by seconds, not minutes).
    let just_expired = with(idp.access_claims(), json!({ "exp": now() - 10 }));
    assert!(bearer(&service, &sign(&just_expired)).await.is_ok());
    let just_early = with(idp.access_claims(), json!({ "nbf": now() + 10 }));
    assert!(bearer(&service, &sign(&just_early)).await.is_ok());
    // A time claim of another type is not read as absent.
    let text_exp = with(idp.access_claims(), json!({ "exp": "never" }));
    assert_eq!(
        rejection(&service, &sign(&text_exp)).await,
        TokenRejection::MissingClaim("exp")
    );
}

#[tokio::test]
async fn tokens_missing_a_needed_claim_are_refused() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    for (claim, expected) in [
        ("exp", TokenRejection::MissingClaim("exp")),
        ("iss", TokenRejection::MissingClaim("iss")),
        ("aud", TokenRejection::MissingClaim("aud")),
        ("tid", TokenRejection::MissingClaim("tid")),
        ("oid", TokenRejection::MissingClaim("oid")),
    ] {
        let token = sign(&with(idp.access_claims(), json!({ claim: null })));
        assert_eq!(rejection(&service, &token).await, expected, "{claim}");
    }
    // No permissions at all.
    let no_permissions = with(idp.access_claims(), json!({ "scp": null, "roles": null }));
    assert_eq!(
        rejection(&service, &sign(&no_permissions)).await,
        TokenRejection::NoPermissions
    );
    // An id_token presented as an access token: its nonce gives it away.
    let id_token_like = with(
        idp.access_claims(),
        json!({ "scp": null, "roles": null, "nonce": "n" }),
    );
    assert_eq!(
        rejection(&service, &sign(&id_token_like)).await,
        TokenRejection::NotAnAccessToken
    );
    let empty_scp = with(idp.access_claims(), json!({ "scp": " ", "roles": [] }));
    assert_eq!(
        rejection(&service, &sign(&empty_scp)).await,
        TokenRejection::NoPermissions
    );
    let no_kid = sign_with(
        Algorithm::RS256,
        &rsa_key(&keys().tenant),
        None,
        &idp.access_claims(),
    );
    assert_eq!(
        rejection(&service, &no_kid).await,
        TokenRejection::MissingKid
    );
}

#[tokio::test]
async fn malformed_tokens_and_authorization_headers_are_refused() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let valid = sign(&idp.access_claims());
    for token in [
        "x".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d.e".to_owned(),
        format!("{valid}.extra"),
        format!("eyJ.{}", valid.split_once('.').unwrap().1),
        format!("{}.{}", valid, "A".repeat(MAX_TOKEN)),
    ] {
        assert!(
            matches!(
                bearer(&service, &token).await,
                Err(AuthError::Token(TokenRejection::Malformed))
            ),
            "{token:.40}"
        );
    }
    for value in [
        format!("Bearer  {valid}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer {valid} x"),
    ] {
        let request = axum::http::Request::builder()
            .header(header::AUTHORIZATION, value)
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        assert!(matches!(
            service.auth.caller(&parts).await,
            Err(AuthError::MalformedAuthorization)
        ));
    }
    // Another scheme (or none) is not ours: it is ignored, and without a cookie nobody calls.
    for value in [format!("Basic {valid}"), valid.clone()] {
        let request = axum::http::Request::builder()
            .header(header::AUTHORIZATION, value)
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        assert!(matches!(
            service.auth.caller(&parts).await,
            Err(AuthError::NoCredentials)
        ));
    }
    // Two Authorization headers, one of them valid: refused, not guessed.
    let request = axum::http::Request::builder()
        .header(header::AUTHORIZATION, format!("Bearer {valid}"))
        .header(header::AUTHORIZATION, "Bearer x.y.z")
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    assert!(matches!(
        service.auth.caller(&parts).await,
        Err(AuthError::MalformedAuthorization)
    ));
    // "bearer" in any case is the scheme.
    let request = axum::http::Request::builder()
        .header(header::AUTHORIZATION, format!("bEaReR {valid}"))
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    assert!(service.auth.caller(&parts).await.is_ok());
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_at_most_once_a_minute() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    assert_eq!(idp.jwks_fetches(), 1, "fetched at start");
    // The provider rolls to a new key: the first token under it waits for the refetch window.
    let rolled = rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048).unwrap();
    idp.state
        .lock()
        .unwrap()
        .jwks
        .push(jwk(&rolled, "signing-key-2"));
    let under_new_key = sign_with(
        Algorithm::RS256,
        &rsa_key(&rolled),
        Some("signing-key-2"),
        &idp.access_claims(),
    );
    for _ in 0..20 {
        assert_eq!(
            rejection(&service, &under_new_key).await,
            TokenRejection::UnknownKid
        );
    }
    assert_eq!(idp.jwks_fetches(), 1, "no refetch inside the minute");
    service.auth.inner.provider.backdate_last_fetch();
    let caller = bearer(&service, &under_new_key).await;
    assert!(caller.is_ok(), "{caller:?}");
    assert_eq!(idp.jwks_fetches(), 2, "one refetch");
    // A flood of made-up kids after the refetch costs nothing more.
    let made_up = |prefix: &str| -> Vec<String> {
        (0..30)
            .map(|n| {
                sign_with(
                    Algorithm::RS256,
                    &rsa_key(&keys().forger),
                    Some(&format!("{prefix}-{n}")),
                    &idp.access_claims(),
                )
            })
            .collect()
    };
    for outcome in concurrently(&service.auth, made_up("made-up")).await {
        assert_eq!(outcome, TokenRejection::UnknownKid);
    }
    assert_eq!(idp.jwks_fetches(), 2);
    // Concurrent unknown kids past the window: still one fetch between them.
    service.auth.inner.provider.backdate_last_fetch();
    for outcome in concurrently(&service.auth, made_up("other")).await {
        assert_eq!(outcome, TokenRejection::UnknownKid);
    }
    assert_eq!(idp.jwks_fetches(), 3);
}

/// Checks each token at once, on its own task, and returns the rejections.
async fn concurrently(auth: &Auth, tokens: Vec<String>) -> Vec<TokenRejection> {
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let auth = auth.clone();
            tokio::spawn(async move {
                match bearer_with(&auth, &token).await {
                    Err(AuthError::Token(rejection)) => rejection,
                    other => panic!("expected a token rejection, got {other:?}"),
                }
            })
        })
        .collect();
    let mut rejections = Vec::new();
    for task in tasks {
        rejections.push(task.await.unwrap());
    }
    rejections
}

#[tokio::test]
async fn a_rejection_says_nothing_to_the_client_and_never_shows_the_token() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let cases = [
        sign(&with(idp.access_claims(), json!({ "aud": "other" }))),
        sign(&with(idp.access_claims(), json!({ "exp": now() - 3600 }))),
        sign_with(
            Algorithm::RS256,
            &rsa_key(&keys().forger),
            Some(KID),
            &idp.access_claims(),
        ),
        sign_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"k").unwrap(),
            Some(KID),
            &idp.access_claims(),
        ),
    ];
    for token in cases {
        let error = bearer(&service, &token).await.unwrap_err();
        let response = AuthError::from(match &error {
            AuthError::Token(rejection) => rejection.clone(),
            other => panic!("{other:?}"),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="warden", error="invalid_token""#
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&body[..], b"Unauthorized.\n", "no detail for a forger");
        let everything = shown(error).await;
        let signature = token.rsplit('.').next().unwrap();
        assert!(!everything.contains(&token) && !everything.contains(signature));
        assert!(!everything.contains(SECRET));
    }
    // No credentials at all: a challenge without an error code (RFC 6750 §3).
    let response = AuthError::NoCredentials.into_response();
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="warden""#
    );
}

#[tokio::test]
async fn nothing_prints_the_secret_a_session_id_or_a_csrf_token() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &service, &idp, "/").await;
    let session_value = browser.cookies[SESSION_COOKIE_INSECURE].clone();
    let id = SessionId::from_cookie(&session_value).unwrap();
    let caller = Caller {
        person: SignedIn::default(),
        via: Via::Session { id: id.clone() },
    };
    let token = service.auth.csrf_token(&caller, "/act");
    let printed = format!(
        "{:?} {:?} {:?} {:?} {:?}",
        service.auth,
        config(&idp, service.base.clone(), false),
        caller,
        id,
        service.auth.inner.csrf
    );
    for secret in [SECRET, &session_value, &token] {
        assert!(!printed.contains(secret), "{printed}");
    }
    // The store holds the session under the SHA-256 of the cookie's value, never the value.
    let key = format!(
        "session:{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(session_value.as_bytes()))
    );
    assert_eq!(id.store_key(), key);
    assert!(service.sessions.get(&key).await.unwrap().is_some());
    assert!(
        service
            .sessions
            .get(&session_value)
            .await
            .unwrap()
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// Sign-in.

#[tokio::test]
async fn signin_sends_an_s256_pkce_request_and_keeps_its_secrets_server_side() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    let started = browser
        .get(service.base.join("/signin?return_to=%2Fruns").unwrap())
        .await;
    assert_eq!(started.status(), StatusCode::FOUND);
    assert_eq!(started.headers()[header::CACHE_CONTROL], "no-store");
    let authorize: Url = location(&started).parse().unwrap();
    assert_eq!(
        authorize.as_str().split('?').next().unwrap(),
        idp.base.join("authorize").unwrap().as_str()
    );
    assert_eq!(query_param(&authorize, "client_id"), CLIENT);
    assert_eq!(query_param(&authorize, "response_type"), "code");
    assert_eq!(query_param(&authorize, "code_challenge_method"), "S256");
    assert_eq!(
        query_param(&authorize, "redirect_uri"),
        service.base.join("/auth/callback").unwrap().as_str()
    );
    assert!(
        query_param(&authorize, "scope")
            .split(' ')
            .any(|s| s == "openid")
    );
    for name in ["state", "nonce", "code_challenge"] {
        let value = query_param(&authorize, name);
        assert_eq!(value.len(), 43, "{name}: 256 bits, base64url");
    }
    // The verifier is nowhere in what the browser sees.
    let login_cookie = browser.cookies[LOGIN_COOKIE_INSECURE].clone();
    let seen = format!("{authorize} {login_cookie}");
    let code = idp.issue_code(&authorize);
    let done = callback(
        &mut browser,
        &service,
        &code,
        &query_param(&authorize, "state"),
    )
    .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), "/runs");
    let state = idp.state.lock().unwrap();
    let form = state.token_requests.last().unwrap();
    let verifier = &form["code_verifier"];
    assert!(!seen.contains(verifier.as_str()));
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        query_param(&authorize, "code_challenge")
    );
}

#[tokio::test]
async fn a_signed_in_browser_is_the_person_of_its_id_token() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    assert_eq!(
        browser
            .get(service.base.join("/whoami").unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let done = sign_in(&mut browser, &service, &idp, "/approvals").await;
    assert_eq!(location(&done), "/approvals");
    assert!(
        !browser.cookies.contains_key(LOGIN_COOKIE_INSECURE),
        "used up"
    );
    let person: SignedIn = browser
        .get(service.base.join("/whoami").unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(person.upn, "helpdesk@contoso.example");
    assert_eq!(person.roles, ["Warden.Operator"]);
    assert_eq!(person.tenant_id, TENANT);
}

#[tokio::test]
async fn cookies_are_host_only_httponly_lax_and_secure_over_https() {
    let idp = FakeIdp::start().await;
    // Reached over https (a proxy in front): `__Host-` names, Secure.
    let proxied = service_with(&idp, |config| {
        config.public_url = "https://warden.example/".parse().unwrap();
        config.secure_cookies = true;
    })
    .await;
    let started = Browser::new()
        .get(proxied.base.join("/signin").unwrap())
        .await;
    let set_cookie = started.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie::Cookie::parse(set_cookie).unwrap();
    assert_eq!(cookie.name(), LOGIN_COOKIE);
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.domain(), None);
    assert_eq!(proxied.auth.session_cookie_name(), SESSION_COOKIE);
    // The session cookie a secure sign-in sets, every attribute.
    let mut browser = Browser::new();
    let done = sign_in(&mut browser, &proxied, &idp, "/").await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let set: Vec<_> = done
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| cookie::Cookie::parse(v.to_str().unwrap().to_owned()).unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.name() == SESSION_COOKIE)
        .expect("a __Host- session cookie");
    assert_eq!(session.secure(), Some(true));
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(session.path(), Some("/"));
    assert_eq!(session.domain(), None);
    assert_eq!(session.max_age(), Some(time::Duration::hours(1)));
    let removed = set
        .iter()
        .find(|c| c.name() == LOGIN_COOKIE)
        .expect("the login cookie removed");
    assert_eq!(removed.max_age(), Some(time::Duration::ZERO));
    assert_eq!(removed.secure(), Some(true));

    // Plain http on loopback: no Secure, so no `__Host-` prefix (browsers would drop it).
    let local = service(&idp).await;
    let mut browser = Browser::new();
    let done = sign_in(&mut browser, &local, &idp, "/").await;
    let session = done
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| cookie::Cookie::parse(v.to_str().unwrap().to_owned()).unwrap())
        .find(|c| c.name() == SESSION_COOKIE_INSECURE)
        .expect("a session cookie");
    assert_ne!(session.secure(), Some(true));
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(session.max_age(), Some(time::Duration::hours(1)));
    assert_eq!(session.value().len(), 43, "256 bits");

    // Insecure cookies anywhere but plain-http loopback: refused at start.
    let error = Auth::new(
        AuthConfig {
            secure_cookies: false,
            ..config(&idp, "https://warden.example/".parse().unwrap(), false)
        },
        Arc::new(MemorySessions::new()),
        reqwest::Client::new(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("secure_cookies"), "{error}");
}

#[tokio::test]
async fn a_callback_with_another_state_or_no_pending_sign_in_makes_no_session() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;

    // Another state (a forged or crossed callback).
    let mut browser = Browser::new();
    let started = browser.get(service.base.join("/signin").unwrap()).await;
    let authorize: Url = location(&started).parse().unwrap();
    let code = idp.issue_code(&authorize);
    let refused = callback(&mut browser, &service, &code, "not-the-state").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(!browser.cookies.contains_key(SESSION_COOKIE_INSECURE));
    // The pending sign-in is used up by the failed attempt: the right state no longer works.
    let late = callback(
        &mut browser,
        &service,
        &code,
        &query_param(&authorize, "state"),
    )
    .await;
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);

    // A callback in a browser that never started a sign-in (login CSRF): refused.
    let mut victim = Browser::new();
    let mut attacker = Browser::new();
    let started = attacker.get(service.base.join("/signin").unwrap()).await;
    let authorize: Url = location(&started).parse().unwrap();
    let code = idp.issue_code(&authorize);
    let planted = callback(
        &mut victim,
        &service,
        &code,
        &query_param(&authorize, "state"),
    )
    .await;
    assert_eq!(planted.status(), StatusCode::UNAUTHORIZED);
    assert!(victim.cookies.is_empty());
    assert!(
        idp.state.lock().unwrap().token_requests.is_empty(),
        "no code was redeemed"
    );

    // The provider's error answer: refused, the description never echoed.
    let mut browser = Browser::new();
    let started = browser.get(service.base.join("/signin").unwrap()).await;
    let authorize: Url = location(&started).parse().unwrap();
    let mut url = service.base.join("/auth/callback").unwrap();
    url.query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "<script>CANARY</script>")
        .append_pair("state", &query_param(&authorize, "state"));
    let refused = browser.get(url).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(!refused.text().await.unwrap().contains("CANARY"));
}

#[tokio::test]
async fn a_callback_replayed_makes_no_second_session() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    let started = browser.get(service.base.join("/signin").unwrap()).await;
    let login_cookie = browser.cookies[LOGIN_COOKIE_INSECURE].clone();
    let authorize: Url = location(&started).parse().unwrap();
    let code = idp.issue_code(&authorize);
    let state = query_param(&authorize, "state");
    let first = callback(&mut browser, &service, &code, &state).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    // The same request again, login cookie and all (a captured URL, a back button).
    let mut replay = Browser::new();
    replay
        .cookies
        .insert(LOGIN_COOKIE_INSECURE.into(), login_cookie);
    let second = callback(&mut replay, &service, &code, &state).await;
    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
    assert!(!replay.cookies.contains_key(SESSION_COOKIE_INSECURE));
    assert_eq!(
        idp.state.lock().unwrap().token_requests.len(),
        1,
        "the replay is refused before any code is redeemed"
    );
}

#[tokio::test]
async fn a_bad_id_token_makes_no_session() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let (logs, _guard) = Logs::capture();
    for (change, reason) in [
        (
            json!({ "nonce": "another-sign-in's-nonce" }),
            TokenRejection::Nonce,
        ),
        (
            json!({ "nonce": null }),
            TokenRejection::MissingClaim("nonce"),
        ),
        // An id_token is for the client id only.
        (
            json!({ "aud": APP_ID_URI }),
            TokenRejection::Audience(APP_ID_URI.into()),
        ),
        (
            json!({ "aud": "another-app" }),
            TokenRejection::Audience("another-app".into()),
        ),
        (
            json!({ "tid": OTHER_TENANT }),
            TokenRejection::Tenant(OTHER_TENANT.into()),
        ),
        (
            json!({ "iss": "https://login.microsoftonline.com/common/v2.0" }),
            TokenRejection::Issuer("https://login.microsoftonline.com/common/v2.0".into()),
        ),
        (json!({ "exp": now() - 3600 }), TokenRejection::Expired),
        (
            json!({ "preferred_username": null }),
            TokenRejection::MissingClaim("preferred_username"),
        ),
        (json!({ "oid": null }), TokenRejection::MissingClaim("oid")),
    ] {
        idp.state.lock().unwrap().id_token_changes = change.clone();
        let mut browser = Browser::new();
        let done = sign_in(&mut browser, &service, &idp, "/").await;
        assert_eq!(done.status(), StatusCode::UNAUTHORIZED, "{change}");
        let logged = AuthError::from(SignInFailure::IdToken(reason)).to_string();
        assert!(
            logs.text().contains(&logged),
            "{change}: {logged}\n{}",
            logs.text()
        );
        assert!(
            !browser.cookies.contains_key(SESSION_COOKIE_INSECURE),
            "{change}"
        );
    }
    assert!(service.sessions.is_empty());
}

#[tokio::test]
async fn a_refused_code_makes_no_session_and_the_provider_text_is_not_shown() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    let started = browser.get(service.base.join("/signin").unwrap()).await;
    let authorize: Url = location(&started).parse().unwrap();
    let refused = callback(
        &mut browser,
        &service,
        "code-the-provider-never-issued",
        &query_param(&authorize, "state"),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body = refused.text().await.unwrap();
    assert!(
        !body.contains("CANARY") && !body.contains("AADSTS"),
        "{body}"
    );
    assert!(!browser.cookies.contains_key(SESSION_COOKIE_INSECURE));
}

#[tokio::test]
async fn signin_returns_only_to_local_paths() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    for (asked, returned) in [
        ("/runs/42?view=log", "/runs/42?view=log"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("/%09/evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ] {
        let mut browser = Browser::new();
        let done = sign_in(&mut browser, &service, &idp, asked).await;
        assert_eq!(location(&done), returned, "{asked}");
    }
}

#[tokio::test]
async fn signing_in_again_replaces_the_session_id() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &service, &idp, "/").await;
    let first = browser.cookies[SESSION_COOKIE_INSECURE].clone();
    sign_in(&mut browser, &service, &idp, "/").await;
    let second = browser.cookies[SESSION_COOKIE_INSECURE].clone();
    assert_ne!(first, second);
    // The old id (say, fixed by an attacker before sign-in) is dead.
    let mut old = Browser::new();
    old.cookies.insert(SESSION_COOKIE_INSECURE.into(), first);
    assert_eq!(
        old.get(service.base.join("/whoami").unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        browser
            .get(service.base.join("/whoami").unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[test]
fn stored_expiries_round_up_to_whole_seconds() {
    use time::OffsetDateTime;
    let whole = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    assert_eq!(session::unix_expiry(whole), 1_800_000_000);
    for nanos in [1, 500_000_000, 999_999_999] {
        let inside = whole + time::Duration::nanoseconds(nanos);
        assert_eq!(
            session::unix_expiry(inside),
            1_800_000_001,
            "{nanos} ns past"
        );
    }
    // Before 1970 too: -1.5 s is rounded up to -1, not down to -2.
    let before = OffsetDateTime::UNIX_EPOCH - time::Duration::milliseconds(1500);
    assert_eq!(session::unix_expiry(before), -1);
}

#[tokio::test]
async fn a_session_ends_at_its_expiry_server_side() {
    let idp = FakeIdp::start().await;
    let service = service_with(&idp, |config| config.session_ttl = Duration::from_secs(2)).await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &service, &idp, "/").await;
    let whoami = service.base.join("/whoami").unwrap();
    assert_eq!(browser.get(whoami.clone()).await.status(), StatusCode::OK);
    // Past the TTL rounded up to whole seconds (at most 3 s after signing in).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // The browser still sends the cookie (it ignores Max-Age here); the server refuses it.
    let refused = browser.get(whoami).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // A made-up id of the right shape is refused the same way.
    let mut guesser = Browser::new();
    guesser
        .cookies
        .insert(SESSION_COOKIE_INSECURE.into(), session::random_token());
    assert_eq!(
        guesser
            .get(service.base.join("/whoami").unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------------------------------------
// CSRF and sign-out.

#[tokio::test]
async fn a_form_post_needs_its_sessions_csrf_token() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut alice = Browser::new();
    sign_in(&mut alice, &service, &idp, "/").await;
    let mut bob = Browser::new();
    sign_in(&mut bob, &service, &idp, "/").await;
    let act = service.base.join("/act").unwrap();
    let token = alice
        .get(service.base.join("/csrf").unwrap())
        .await
        .text()
        .await
        .unwrap();
    let bobs = bob
        .get(service.base.join("/csrf").unwrap())
        .await
        .text()
        .await
        .unwrap();
    assert_ne!(token, bobs);
    // Alice's own token, for another form.
    let for_signout = alice
        .get(service.base.join("/csrf?for=/signout").unwrap())
        .await
        .text()
        .await
        .unwrap();
    assert_ne!(token, for_signout);
    let mut tampered = token.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (form, expected) in [
        (vec![], StatusCode::FORBIDDEN),
        (vec![("csrf", "")], StatusCode::FORBIDDEN),
        (vec![("csrf", bobs.as_str())], StatusCode::FORBIDDEN),
        (vec![("csrf", for_signout.as_str())], StatusCode::FORBIDDEN),
        (vec![("csrf", tampered.as_str())], StatusCode::FORBIDDEN),
        (vec![("csrf", "not base64 !")], StatusCode::FORBIDDEN),
        (vec![("csrf", token.as_str())], StatusCode::OK),
    ] {
        let answer = alice.post_form(act.clone(), &form).await;
        assert_eq!(answer.status(), expected, "{form:?}");
    }
    // A bearer caller has no ambient credential and needs no token.
    let request = axum::http::Request::builder()
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", sign(&idp.access_claims())),
        )
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    let caller = service.auth.caller(&parts).await.unwrap();
    assert!(service.auth.check_csrf(&caller, "/act", "").is_ok());
    assert_eq!(service.auth.csrf_token(&caller, "/act"), "");
    // A cookie caller of the API sends it in a header.
    let session_caller = Caller {
        person: SignedIn::default(),
        via: Via::Session {
            id: SessionId::from_cookie(&alice.cookies[SESSION_COOKIE_INSECURE]).unwrap(),
        },
    };
    let call = |token: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(CSRF_HEADER, HeaderValue::from_str(token).unwrap());
        let mut request = axum::http::Request::builder()
            .uri("/api/v1/runs/1/approve")
            .body(())
            .unwrap();
        *request.headers_mut() = headers;
        request.into_parts().0
    };
    let for_the_path = service
        .auth
        .csrf_token(&session_caller, "/api/v1/runs/1/approve");
    assert!(
        service
            .auth
            .check_csrf_header(&session_caller, &call(&for_the_path))
            .is_ok()
    );
    // The form's token is not the API path's.
    assert!(matches!(
        service
            .auth
            .check_csrf_header(&session_caller, &call(&token)),
        Err(AuthError::Csrf)
    ));
    let (bare, ()) = axum::http::Request::builder()
        .body(())
        .unwrap()
        .into_parts();
    assert!(matches!(
        service.auth.check_csrf_header(&session_caller, &bare),
        Err(AuthError::Csrf)
    ));
}

#[tokio::test]
async fn signout_needs_the_csrf_token_and_ends_the_session() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &service, &idp, "/").await;
    let whoami = service.base.join("/whoami").unwrap();
    let signout = service.base.join("/signout").unwrap();
    // A cross-site form posting to /signout without the token changes nothing.
    let forged = browser.post_form(signout.clone(), &[]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let forged = browser
        .post_form(signout.clone(), &[("csrf", "guess")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(browser.get(whoami.clone()).await.status(), StatusCode::OK);

    // The token of another form does not sign out either.
    let for_act = browser
        .get(service.base.join("/csrf").unwrap())
        .await
        .text()
        .await
        .unwrap();
    let forged = browser
        .post_form(signout.clone(), &[("csrf", &for_act)])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let kept = browser.cookies[SESSION_COOKIE_INSECURE].clone();
    let token = browser
        .get(service.base.join("/csrf?for=/signout").unwrap())
        .await
        .text()
        .await
        .unwrap();
    let out = browser.post_form(signout, &[("csrf", &token)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&out), "/");
    assert!(!browser.cookies.contains_key(SESSION_COOKIE_INSECURE));
    let kept_key = SessionId::from_cookie(&kept).unwrap().store_key();
    assert!(
        service.sessions.get(&kept_key).await.unwrap().is_none(),
        "deleted server-side"
    );
    // The old cookie, kept by someone, no longer works.
    let mut copy = Browser::new();
    copy.cookies.insert(SESSION_COOKIE_INSECURE.into(), kept);
    assert_eq!(copy.get(whoami).await.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn two_different_session_cookies_count_as_none() {
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, HeaderValue::from_static("a=1; s=x"));
    headers.append(header::COOKIE, HeaderValue::from_static("s=y"));
    assert_eq!(flow::cookie_value(&headers, "s"), None);
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, HeaderValue::from_static("s=x; s=x"));
    assert_eq!(flow::cookie_value(&headers, "s").as_deref(), Some("x"));
}

#[tokio::test]
async fn a_start_with_a_wrong_authority_or_config_names_the_field() {
    let idp = FakeIdp::start().await;
    let base: Url = "http://127.0.0.1:1/".parse().unwrap();
    let start = |config: AuthConfig| async move {
        Auth::new(
            config,
            Arc::new(MemorySessions::new()),
            reqwest::Client::new(),
        )
        .await
        .unwrap_err()
        .to_string()
    };
    // The metadata's issuer must be the authority itself (a domain-named authority's is not).
    let mut by_name = config(&idp, base.clone(), false);
    by_name.authority = idp.base.join("contoso.example/v2.0").unwrap();
    let error = start(by_name).await;
    assert!(
        error.contains("authority") && error.contains("fix:"),
        "{error}"
    );
    let mut plain = config(&idp, base.clone(), false);
    plain.authority = "http://login.example/t/v2.0".parse().unwrap();
    assert!(start(plain).await.contains("not https"));
    let mut empty = config(&idp, base.clone(), false);
    empty.client_secret = "".into();
    let error = start(empty).await;
    assert!(error.contains("client_secret"), "{error}");
    assert!(!error.contains(SECRET));
}

// ---------------------------------------------------------------------------------------------
// Review fixes: what an access token must be, the stateless sign-in, keys on schedule, logs.

/// The log of everything the test's runtime thread does while it captures (`#[tokio::test]` is
/// single-threaded, so the spawned servers log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// The log this thread's events go to, while it captures.
    static CAPTURED: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes an event to its thread's [`Logs`] (only capturing threads' events get this far).
struct ThreadsLogs;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadsLogs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        CAPTURED.with_borrow(Clone::clone).unwrap_or_default()
    }
}

/// Ends a capture when dropped.
struct Capture(Option<Logs>);

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURED.set(self.0.take());
    }
}

impl Logs {
    /// One process-wide subscriber, not one per test: callsite interest is cached process-wide,
    /// and threads without a thread-local subscriber cached `never` for the capturing threads.
    fn capture() -> (Logs, Capture) {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            use tracing_subscriber::Layer as _;
            use tracing_subscriber::layer::SubscriberExt as _;
            // Asked at every event whether its thread captures: never cached (`filter_fn` is).
            let capturing = tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                CAPTURED.with_borrow(Option::is_some)
            });
            let subscriber = tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .with_writer(ThreadsLogs)
                    .with_ansi(false)
                    .with_filter(capturing),
            );
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            // A callsite first met while this was being set up may have cached `never`.
            tracing::callsite::rebuild_interest_cache();
        });
        let logs = Logs::default();
        let previous = CAPTURED.replace(Some(logs.clone()));
        (logs, Capture(previous))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn the_providers_real_id_token_is_not_an_access_token() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    assert_eq!(
        sign_in(&mut browser, &service, &idp, "/").await.status(),
        StatusCode::SEE_OTHER
    );
    // The very id_token the sign-in accepted: signed by the tenant, roles Warden.Operator.
    let id_token = idp.state.lock().unwrap().id_tokens.last().unwrap().clone();
    assert_eq!(
        rejection(&service, &id_token).await,
        TokenRejection::NotAnAccessToken
    );
    // Without its nonce it still names no requesting app (azp).
    let claims = with(
        idp.access_claims(),
        json!({ "azp": null, "scp": null, "roles": ["Warden.Operator"] }),
    );
    assert_eq!(
        rejection(&service, &sign(&claims)).await,
        TokenRejection::MissingClaim("azp")
    );
    let claims = with(idp.access_claims(), json!({ "nonce": "n" }));
    assert_eq!(
        rejection(&service, &sign(&claims)).await,
        TokenRejection::NotAnAccessToken
    );
}

#[tokio::test]
async fn only_allowed_client_apps_with_a_required_scope_or_role_pass() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let base = idp.access_claims();
    for (change, refused) in [
        (
            json!({ "azp": "0f0f0f0f-1111-4222-8333-444455556666" }),
            Some(TokenRejection::ClientApp(
                "0f0f0f0f-1111-4222-8333-444455556666".into(),
            )),
        ),
        (
            json!({ "scp": "User.Read" }),
            Some(TokenRejection::NoPermissions),
        ),
        (
            json!({ "scp": "Tasks.Runner" }),
            Some(TokenRejection::NoPermissions),
        ),
        (
            json!({ "scp": null, "roles": ["Other.Role"] }),
            Some(TokenRejection::NoPermissions),
        ),
        (
            json!({ "aud": [CLIENT, "other"] }),
            Some(TokenRejection::Audience(format!("{CLIENT} other"))),
        ),
        (json!({ "scp": "User.Read Tasks.Run" }), None),
        (json!({ "scp": null, "roles": ["Warden.Operator"] }), None),
        (json!({ "azp": CLIENT }), None),
        (json!({ "aud": APP_ID_URI }), None),
    ] {
        let outcome = bearer(&service, &sign(&with(base.clone(), change.clone()))).await;
        match refused {
            Some(reason) => assert_eq!(
                outcome.err().map(|e| e.to_string()),
                Some(AuthError::Token(reason).to_string()),
                "{change}"
            ),
            None => assert!(outcome.is_ok(), "{change}: {outcome:?}"),
        }
    }
    // Nothing allowed beyond the service itself: the CLI's token is refused.
    let strict = service_with(&idp, |config| config.allowed_client_apps.clear()).await;
    assert_eq!(
        rejection(&strict, &sign(&base)).await,
        TokenRejection::ClientApp(CLI_APP.into())
    );
}

#[tokio::test]
async fn v1_access_tokens_pass_with_their_own_issuer_audience_and_appid() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let v1 = with(
        idp.access_claims(),
        json!({
            "ver": "1.0", "iss": format!("https://sts.windows.net/{TENANT}/"),
            "aud": APP_ID_URI, "azp": null, "appid": CLI_APP,
            "preferred_username": null, "upn": "helpdesk@contoso.example",
        }),
    );
    let caller = bearer(&service, &sign(&v1))
        .await
        .expect("a v1.0 token passes");
    assert_eq!(caller.person.upn, "helpdesk@contoso.example");
    for (change, reason) in [
        (
            json!({ "iss": idp.issuer() }),
            TokenRejection::Issuer(idp.issuer()),
        ),
        (
            json!({ "iss": format!("https://sts.windows.net/{OTHER_TENANT}/") }),
            TokenRejection::Issuer(format!("https://sts.windows.net/{OTHER_TENANT}/")),
        ),
        (
            json!({ "appid": null }),
            TokenRejection::MissingClaim("appid"),
        ),
        (json!({ "ver": null }), TokenRejection::MissingClaim("ver")),
        (
            json!({ "ver": "3.0" }),
            TokenRejection::Version("3.0".into()),
        ),
    ] {
        assert_eq!(
            rejection(&service, &sign(&with(v1.clone(), change.clone()))).await,
            reason,
            "{change}"
        );
    }
    // A v2.0 token with the v1.0 issuer is refused too.
    let mixed = with(
        idp.access_claims(),
        json!({ "iss": format!("https://sts.windows.net/{TENANT}/") }),
    );
    assert!(matches!(
        rejection(&service, &sign(&mixed)).await,
        TokenRejection::Issuer(_)
    ));
}

/// Entra writes the tenant GUID lower-case in the v1.0 issuer; a tenant id configured in
/// upper case must still match it (as `tid` is compared without case).
#[tokio::test]
async fn v1_issuer_matches_a_tenant_id_configured_in_upper_case() {
    let idp = FakeIdp::start().await;
    let service = service_with(&idp, |config| {
        config.tenant_id = TENANT.to_ascii_uppercase();
    })
    .await;
    let v1 = with(
        idp.access_claims(),
        json!({
            "ver": "1.0", "iss": format!("https://sts.windows.net/{TENANT}/"),
            "aud": APP_ID_URI, "azp": null, "appid": CLI_APP,
            "preferred_username": null, "upn": "helpdesk@contoso.example",
        }),
    );
    bearer(&service, &sign(&v1))
        .await
        .expect("the lower-case issuer of an upper-case configured tenant passes");
}

#[tokio::test]
async fn an_id_token_with_several_audiences_needs_azp_of_this_client() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let (logs, _guard) = Logs::capture();
    idp.state.lock().unwrap().id_token_changes = json!({ "aud": [CLIENT, "another-app"] });
    let mut browser = Browser::new();
    let done = sign_in(&mut browser, &service, &idp, "/").await;
    assert_eq!(done.status(), StatusCode::UNAUTHORIZED);
    let reason = SignInFailure::IdToken(TokenRejection::Audience(format!("{CLIENT} another-app")));
    assert!(logs.text().contains(&reason.to_string()), "{}", logs.text());
    idp.state.lock().unwrap().id_token_changes =
        json!({ "aud": [CLIENT, "another-app"], "azp": CLIENT });
    let done = sign_in(&mut browser, &service, &idp, "/").await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn signin_keeps_nothing_server_side_and_its_cookie_is_sealed() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    for _ in 0..50 {
        let started = Browser::new()
            .get(service.base.join("/signin").unwrap())
            .await;
        assert_eq!(started.status(), StatusCode::FOUND);
    }
    assert!(service.sessions.is_empty(), "no record per /signin");

    // The login cookie does not show the secrets, and a changed one does not open.
    let mut browser = Browser::new();
    let started = browser.get(service.base.join("/signin").unwrap()).await;
    let authorize: Url = location(&started).parse().unwrap();
    let sealed = browser.cookies[LOGIN_COOKIE_INSECURE].clone();
    for name in ["state", "nonce"] {
        assert!(!sealed.contains(&query_param(&authorize, name)));
    }
    let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    browser
        .cookies
        .insert(LOGIN_COOKIE_INSECURE.into(), URL_SAFE_NO_PAD.encode(&bytes));
    let code = idp.issue_code(&authorize);
    let (logs, _guard) = Logs::capture();
    let refused = callback(
        &mut browser,
        &service,
        &code,
        &query_param(&authorize, "state"),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        logs.text()
            .contains(&SignInFailure::NoPendingLogin.to_string())
    );
    // Sealed by another service (another server key): does not open here.
    let other = service_with(&idp, |_| {}).await;
    let mut browser = Browser::new();
    let started = browser.get(other.base.join("/signin").unwrap()).await;
    let authorize: Url = location(&started).parse().unwrap();
    let code = idp.issue_code(&authorize);
    let refused = callback(
        &mut browser,
        &service,
        &code,
        &query_param(&authorize, "state"),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(idp.state.lock().unwrap().token_requests.is_empty());
}

#[tokio::test]
async fn the_keys_are_refreshed_on_schedule_without_an_unknown_kid() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let token = sign(&idp.access_claims());
    assert!(bearer(&service, &token).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 1);
    // The provider withdraws the key; a day later the cached set is refreshed on first use.
    idp.state.lock().unwrap().jwks = vec![jwk(&keys().forger, "signing-key-2")];
    service
        .auth
        .inner
        .provider
        .backdate_keys(provider::KEYS_MAX_AGE);
    assert_eq!(
        rejection(&service, &token).await,
        TokenRejection::UnknownKid
    );
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "one scheduled refresh, no extra refetch"
    );
    assert_eq!(
        rejection(&service, &token).await,
        TokenRejection::UnknownKid
    );
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn the_csrf_key_is_the_server_key_not_the_client_secret() {
    let idp = FakeIdp::start().await;
    let key = ServerKey::generate();
    let one = service_with(&idp, |config| config.server_key = key.clone()).await;
    let same_key = service_with(&idp, |config| config.server_key = key.clone()).await;
    // Same client secret, another server key.
    let other_key = service(&idp).await;
    let caller = Caller {
        person: SignedIn::default(),
        via: Via::Session {
            id: SessionId::generate(),
        },
    };
    let token = one.auth.csrf_token(&caller, "/act");
    assert!(same_key.auth.check_csrf(&caller, "/act", &token).is_ok());
    assert!(matches!(
        other_key.auth.check_csrf(&caller, "/act", &token),
        Err(AuthError::Csrf)
    ));
    assert!(!format!("{:?}", config(&idp, one.base.clone(), false)).contains("ServerKey(["));
}

#[tokio::test]
async fn session_ttl_is_bounded_and_the_redirect_uri_keeps_the_path_prefix() {
    let idp = FakeIdp::start().await;
    for ttl in [
        Duration::MAX,
        MAX_SESSION_TTL + Duration::from_secs(1),
        Duration::ZERO,
    ] {
        let error = Auth::new(
            AuthConfig {
                session_ttl: ttl,
                ..config(&idp, "http://127.0.0.1:8080/".parse().unwrap(), false)
            },
            Arc::new(MemorySessions::new()),
            reqwest::Client::new(),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("session_ttl"), "{error}");
    }
    let error = Auth::new(
        AuthConfig {
            required_scopes: vec![],
            required_roles: vec![],
            ..config(&idp, "http://127.0.0.1:8080/".parse().unwrap(), false)
        },
        Arc::new(MemorySessions::new()),
        reqwest::Client::new(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("required_scopes"), "{error}");
    for (public, expected) in [
        (
            "https://example.org/warden",
            "https://example.org/warden/auth/callback",
        ),
        (
            "https://example.org/warden/",
            "https://example.org/warden/auth/callback",
        ),
        ("https://example.org/", "https://example.org/auth/callback"),
        (
            "https://example.org/a/b?x=1",
            "https://example.org/a/b/auth/callback",
        ),
    ] {
        assert_eq!(redirect_uri(&public.parse().unwrap()).as_str(), expected);
    }
}

#[tokio::test]
async fn another_authorization_scheme_leaves_cookie_sign_in_and_bad_bearer_is_invalid_request() {
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &service, &idp, "/").await;
    let whoami = service.base.join("/whoami").unwrap();
    let request = browser
        .http
        .get(whoami.clone())
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz");
    assert_eq!(browser.send(request).await.status(), StatusCode::OK);
    for malformed in [
        "Bearer",
        "Bearer  two spaces",
        "bearer a b",
        "Bearer tok\u{e9}n",
    ] {
        let request = browser
            .http
            .get(whoami.clone())
            .header(header::AUTHORIZATION, malformed.as_bytes());
        let answer = browser.send(request).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{malformed}");
        assert!(
            answer.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains(r#"error="invalid_request""#)
        );
    }
}

/// A store that never purges: whatever expiry the service gives, the record stays readable.
#[derive(Default)]
struct NeverPurges(Mutex<HashMap<String, Value>>);

#[async_trait::async_trait]
impl SessionStore for NeverPurges {
    async fn put(
        &self,
        id: &str,
        data: &Value,
        _expires_at: time::OffsetDateTime,
    ) -> Result<(), SessionStoreError> {
        self.0.lock().unwrap().insert(id.into(), data.clone());
        Ok(())
    }
    async fn get(&self, id: &str) -> Result<Option<Value>, SessionStoreError> {
        Ok(self.0.lock().unwrap().get(id).cloned())
    }
    async fn delete(&self, id: &str) -> Result<(), SessionStoreError> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }
}

#[tokio::test]
async fn nothing_in_the_log_shows_a_token_code_cookie_or_secret() {
    let (logs, _guard) = Logs::capture();
    let idp = FakeIdp::start().await;
    let service = service(&idp).await;
    let mut browser = Browser::new();
    let mut url = service.base.join("/signin").unwrap();
    url.query_pairs_mut().append_pair("return_to", "/");
    let started = browser.get(url).await;
    let login_cookie = browser.cookies[LOGIN_COOKIE_INSECURE].clone();
    let authorize: Url = location(&started).parse().unwrap();
    let code = idp.issue_code(&authorize);
    let state = query_param(&authorize, "state");
    callback(&mut browser, &service, &code, &state).await;
    let session_cookie = browser.cookies[SESSION_COOKIE_INSECURE].clone();
    // Refusals log their reason: a bad bearer, a replayed callback, a bad CSRF token.
    let forged = sign_with(
        Algorithm::RS256,
        &rsa_key(&keys().forger),
        Some(KID),
        &idp.access_claims(),
    );
    let answer = browser
        .send(
            browser
                .http
                .get(service.base.join("/whoami").unwrap())
                .bearer_auth(&forged),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let mut replay = Browser::new();
    replay
        .cookies
        .insert(LOGIN_COOKIE_INSECURE.into(), login_cookie.clone());
    callback(&mut replay, &service, &code, &state).await;
    browser
        .post_form(service.base.join("/act").unwrap(), &[(CSRF_FIELD, "wrong")])
        .await;
    let state_of_idp = idp.state.lock().unwrap();
    let form = &state_of_idp.token_requests[0];
    let id_token = state_of_idp.id_tokens[0].clone();
    let log = logs.text();
    assert!(log.contains("signed in"), "the log is captured: {log}");
    assert!(log.contains("the signature does not verify"), "{log}");
    for secret in [
        SECRET,
        &code,
        &state,
        &form["code_verifier"],
        &id_token,
        &forged,
        &login_cookie,
        &session_cookie,
        "CANARY",
    ] {
        assert!(!log.contains(secret), "the log shows a secret: {log}");
    }
}

#[tokio::test]
async fn a_session_past_its_expiry_is_refused_even_by_a_store_that_never_purges() {
    let idp = FakeIdp::start().await;
    let service = service_with_store(
        &idp,
        |config| config.session_ttl = Duration::from_secs(2),
        Arc::new(MemorySessions::new()),
        Arc::new(NeverPurges::default()),
    )
    .await;
    let mut browser = Browser::new();
    sign_in(&mut browser, &service, &idp, "/").await;
    let whoami = service.base.join("/whoami").unwrap();
    assert_eq!(browser.get(whoami.clone()).await.status(), StatusCode::OK);
    // Past the TTL rounded up to whole seconds (at most 3 s after signing in).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(browser.get(whoami).await.status(), StatusCode::UNAUTHORIZED);
}
