//! The browser side of sign-in: `/{tenant}/oauth2/v2.0/authorize` (a login form with fields
//! `login` and `passwd`, answered with an authorization code), `/{tenant}/oauth2/v2.0/logout`,
//! and `/common/userrealm/{user}`, which msal asks before the password grant.
//!
//! Entra's authorization code flow
//! (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow>): an unknown
//! client or a `redirect_uri` that is not registered is answered with an error PAGE, never a
//! redirect (AADSTS700016, AADSTS50011), since the redirect target is not trusted; every later
//! error goes back to the (now trusted) `redirect_uri` as `error`, `error_description` and
//! `state` (RFC 6749 §4.1.2.1), in the request's `response_mode`: `query` (a 302, the default for
//! a code) or `form_post` (a page that POSTs the fields to the redirect URI, what the code flow
//! page recommends "especially when using `http://localhost`"); `fragment` is not implemented and
//! not advertised. A wrong password shows the form again with AADSTS50126. `state` is echoed with
//! its HTML stripped: "The Microsoft Entra authorization endpoint strips HTML from the state
//! parameter" (reply-url, "Use a state parameter").
//! Emulation choices (docs/fidelity.md "Sign-in"): PKCE with S256 is required of every client
//! (Entra accepts `plain` and makes PKCE optional for confidential clients); no single sign-on
//! session is kept, so every request shows the form and `prompt=none` gets `login_required`; a
//! tenant-specific authority is required.
//!
//! The form is POSTed to the same path with the request in hidden fields, which are re-checked
//! exactly like a GET's query: they are attacker-chosen values. Everything a page echoes is
//! HTML-escaped, everything a redirect echoes is URL-encoded (`url`'s query serializer), and the
//! pages forbid framing (`frame-ancestors 'none'`, `X-Frame-Options`) and every load (a
//! `default-src 'none'` policy with one hashed style, and on the `form_post` page one hashed
//! script).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::aadsts::AadError;
use super::delegated::{Client, PendingCode, check_user, is_s256_challenge, parse_scopes};
use super::redirect;
use crate::directory::{Tenant, TenantLookup};
use crate::request_log::ErrorTag;
use crate::state::Shared;

/// Parameters of an authorization request that must appear at most once.
const SINGLE_VALUED: &[&str] = &[
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "prompt",
    "login_hint",
    "login",
    "passwd",
    "post_logout_redirect_uri",
    "id_token_hint",
];

/// Longest value accepted for any parameter but `id_token_hint`, and most parameters per
/// request.
const MAX_VALUE_BYTES: usize = 4096;
const MAX_PARAMS: usize = 64;
/// Longest `id_token_hint`: an id token grows with its `groups` claim (Entra emits up to 200
/// group ids in a JWT before it switches to an overage claim, about 8 KiB of them).
const MAX_ID_TOKEN_HINT_BYTES: usize = 16 * 1024;

/// The longest value `name` may carry.
fn max_value_bytes(name: &str) -> usize {
    if name == "id_token_hint" {
        MAX_ID_TOKEN_HINT_BYTES
    } else {
        MAX_VALUE_BYTES
    }
}

/// The `form_post` page's only script, which submits its form; its hash is what the CSP allows.
const SUBMIT_SCRIPT: &str = "document.forms[0].submit();";

/// The page's only style; its hash is what the CSP allows.
const STYLE: &str = "body{font-family:sans-serif;max-width:28rem;margin:3rem auto}\
label{display:block;margin-top:1rem}input{width:100%;padding:.4rem}\
button{margin-top:1.2rem;padding:.5rem 1.5rem}.error{color:#a00}";

/// Escapes text for HTML element content and quoted attribute values. Five characters, so no
/// crate: these are all that can end a text node or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

struct Params(Vec<(String, String)>);

impl Params {
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, AadError> {
        if pairs.len() > MAX_PARAMS {
            return Err(AadError::malformed_request("Too many parameters."));
        }
        if let Some((name, _)) = pairs.iter().find(|(k, v)| v.len() > max_value_bytes(k)) {
            return Err(AadError::malformed_request(format_args!(
                "The parameter '{}' is longer than {} bytes.",
                truncate(name),
                max_value_bytes(name)
            )));
        }
        for name in SINGLE_VALUED {
            if pairs.iter().filter(|(k, _)| k == name).count() > 1 {
                return Err(AadError::malformed_request(format_args!(
                    "The parameter '{name}' is repeated."
                )));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// `state` as Entra echoes it, HTML stripped: every closed `<…>` span is removed; a lone `<` or
/// `>` stays (how much Entra strips is not documented; what is echoed is escaped or URL-encoded
/// anyway, so a stray bracket is harmless).
fn strip_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        out.push_str(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// How the authorization response travels back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseMode {
    /// A 302 to the redirect URI with the fields in its query.
    Query,
    /// A page whose form POSTs the fields to the redirect URI.
    FormPost,
}

impl ResponseMode {
    fn name(self) -> &'static str {
        match self {
            ResponseMode::Query => "query",
            ResponseMode::FormPost => "form_post",
        }
    }
}

/// A checked authorization request.
struct AuthRequest<'a> {
    tenant: &'a Tenant,
    client: Client<'a>,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    challenge: String,
    login_hint: Option<String>,
    mode: ResponseMode,
}

/// Why an authorization request is refused: on a page (the redirect target is not trusted) or
/// by a redirect back to the client.
enum Refusal {
    Page(AadError),
    Redirect {
        to: String,
        mode: ResponseMode,
        error: AadError,
        state: Option<String>,
    },
}

fn find_tenant<'a>(shared: &'a Shared, segment: &str) -> Result<&'a Tenant, AadError> {
    match shared.directory.lookup(segment) {
        TenantLookup::Found(tenant) => Ok(tenant),
        TenantLookup::Alias(alias) => Err(AadError::malformed_request(format_args!(
            "exosim signs users in on a tenant-specific authority (/{{tenant-id}}/ or /{{domain}}/), not /{alias}/."
        ))),
        TenantLookup::NotFound => Err(AadError::tenant_not_found(segment)),
        TenantLookup::Malformed => Err(AadError::tenant_malformed(segment)),
    }
}

/// Checks a request (a GET's query or the form's hidden fields) in Entra's order.
fn check<'a>(
    shared: &'a Shared,
    segment: &str,
    params: &Params,
) -> Result<AuthRequest<'a>, Refusal> {
    let tenant = find_tenant(shared, segment).map_err(Refusal::Page)?;
    let client_id = params
        .get("client_id")
        .ok_or_else(|| Refusal::Page(AadError::missing_parameter("client_id")))?;
    let client = Client::find(tenant, client_id)
        .ok_or_else(|| Refusal::Page(AadError::app_not_found(client_id, &tenant.display_name)))?;
    if client.redirect_uris().is_empty() {
        return Err(Refusal::Page(AadError::no_reply_address(
            client.client_id(),
        )));
    }
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| Refusal::Page(AadError::missing_parameter("redirect_uri")))?;
    if !redirect::any_matches(client.redirect_uris(), redirect_uri) {
        return Err(Refusal::Page(AadError::reply_url_mismatch(
            redirect_uri,
            client.client_id(),
        )));
    }
    // From here on the redirect URI is trusted: errors go back to it.
    let state = params.get("state").map(strip_html);
    let refusal = |mode: ResponseMode, error: AadError| Refusal::Redirect {
        to: redirect_uri.to_owned(),
        mode,
        error,
        state: state.clone(),
    };
    let mode = match params.get("response_mode") {
        None | Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return Err(refusal(
                ResponseMode::Query,
                AadError::unsupported_response_mode(&truncate(other)),
            ));
        }
    };
    let back = |error: AadError| refusal(mode, error);
    match params.get("response_type") {
        Some("code") => {}
        None => return Err(back(AadError::missing_parameter("response_type"))),
        Some(other) => return Err(back(AadError::unsupported_response_type(other))),
    }
    let scope = params
        .get("scope")
        .ok_or_else(|| back(AadError::missing_parameter("scope")))?;
    parse_scopes(tenant, client.client_id(), scope).map_err(&back)?;
    let challenge = params
        .get("code_challenge")
        .ok_or_else(|| back(AadError::pkce_required()))?;
    if params.get("code_challenge_method") != Some("S256") || !is_s256_challenge(challenge) {
        return Err(back(AadError::malformed_request(
            "code_challenge_method must be S256 and code_challenge 43 base64url characters (plain is refused).",
        )));
    }
    if params.get("prompt") == Some("none") {
        return Err(back(AadError::login_required()));
    }
    Ok(AuthRequest {
        tenant,
        client,
        redirect_uri: redirect_uri.to_owned(),
        scope: scope.to_owned(),
        state: state.clone(),
        nonce: params.get("nonce").map(str::to_owned),
        challenge: challenge.to_owned(),
        login_hint: params.get("login_hint").map(str::to_owned),
        mode,
    })
}

/// Headers of every sign-in page: no caching, no framing, nothing loaded, no script but the
/// `form_post` page's own (`script`).
fn page_headers(form_target: Option<&str>, script: bool) -> HeaderMap {
    let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
    let form_action = match form_target.and_then(origin) {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let script_src = if script {
        format!("; script-src 'sha256-{}'", hash(SUBMIT_SCRIPT))
    } else {
        String::new()
    };
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{}'{script_src}; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
        hash(STYLE)
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers
}

/// `scheme://host:port` of a redirect URI, for the CSP's `form-action` (browsers apply it to
/// the redirect that follows the POST).
fn origin(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

fn html(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

fn tagged(mut response: Response, error: &AadError) -> Response {
    response
        .extensions_mut()
        .insert(ErrorTag(format!("AADSTS{}", error.code)));
    response
}

fn error_page(error: AadError) -> Response {
    let body = format!(
        "<h1>Sign in</h1><p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
        escape(&error.line())
    );
    let response = (
        StatusCode::BAD_REQUEST,
        page_headers(None, false),
        html("Sign in: error", &body),
    )
        .into_response();
    tagged(response, &error)
}

/// `to` with `pairs` appended to its query.
fn with_query(to: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(to).ok()?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
    }
    Some(url.into())
}

fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(location) => {
            let mut headers = page_headers(None, false);
            headers.insert(header::LOCATION, location);
            (StatusCode::FOUND, headers).into_response()
        }
        Err(_) => error_page(AadError::malformed_request(
            "The redirect URI is not valid.",
        )),
    }
}

/// Sends `pairs` back to the client at `to`, the way `mode` says.
fn respond_to_client(to: &str, mode: ResponseMode, pairs: &[(&str, &str)]) -> Response {
    match mode {
        ResponseMode::Query => match with_query(to, pairs) {
            Some(location) => redirect(&location),
            None => error_page(AadError::malformed_request(
                "The redirect URI is not valid.",
            )),
        },
        ResponseMode::FormPost => {
            let fields: String = pairs
                .iter()
                .map(|(name, value)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                        escape(name),
                        escape(value)
                    )
                })
                .collect();
            // Entra's page: a form that a script submits, and a button when scripts are off.
            let body = format!(
                "<form method=\"post\" action=\"{}\">{fields}\
                 <noscript><p>Script is disabled. Select Submit to continue.</p>\
                 <button type=\"submit\">Submit</button></noscript></form>\
                 <script>{SUBMIT_SCRIPT}</script>",
                escape(to)
            );
            (
                StatusCode::OK,
                page_headers(Some(to), true),
                html("Working...", &body),
            )
                .into_response()
        }
    }
}

fn refuse(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Page(error) => error_page(error),
        Refusal::Redirect {
            to,
            mode,
            error,
            state,
        } => {
            let line = error.line();
            let mut pairs = vec![("error", error.error), ("error_description", line.as_str())];
            if let Some(state) = &state {
                pairs.push(("state", state));
            }
            tagged(respond_to_client(&to, mode, &pairs), &error)
        }
    }
}

/// The login form, carrying the request in hidden fields; `error` is shown above the fields.
fn login_form(
    request: &AuthRequest<'_>,
    login: Option<&str>,
    error: Option<&AadError>,
) -> Response {
    let mut hidden = vec![
        ("client_id", Some(request.client.client_id())),
        ("response_type", Some("code")),
        ("redirect_uri", Some(request.redirect_uri.as_str())),
        ("scope", Some(request.scope.as_str())),
        ("state", request.state.as_deref()),
        ("nonce", request.nonce.as_deref()),
        ("code_challenge", Some(request.challenge.as_str())),
        ("code_challenge_method", Some("S256")),
        ("response_mode", Some(request.mode.name())),
        ("login_hint", request.login_hint.as_deref()),
    ];
    hidden.retain(|(_, v)| v.is_some());
    let hidden: String = hidden
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value.unwrap_or_default())
            )
        })
        .collect();
    let error_html = error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            escape(&e.line())
        )
    });
    let login = login.or(request.login_hint.as_deref()).unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1><p>to {tenant}</p>{error_html}\
         <form method=\"post\" action=\"/{segment}/oauth2/v2.0/authorize\">{hidden}\
         <label for=\"login\">Email, phone, or Skype</label>\
         <input id=\"login\" name=\"login\" type=\"email\" autocomplete=\"username\" required value=\"{login}\">\
         <label for=\"passwd\">Password</label>\
         <input id=\"passwd\" name=\"passwd\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\" id=\"idSIButton9\">Sign in</button></form>",
        tenant = escape(&request.tenant.display_name),
        segment = request.tenant.id,
        login = escape(login),
    );
    let response = (
        StatusCode::OK,
        page_headers(Some(&request.redirect_uri), false),
        html("Sign in to your account", &body),
    )
        .into_response();
    match error {
        Some(error) => tagged(response, error),
        None => response,
    }
}

/// `GET /{tenant}/oauth2/v2.0/authorize`
pub(crate) async fn authorize_get(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    uri: Uri,
) -> Response {
    let pairs = serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let params = match Params::parse(pairs) {
        Ok(params) => params,
        Err(error) => return error_page(error),
    };
    match check(&shared, &segment, &params) {
        Ok(request) => login_form(&request, None, None),
        Err(refusal) => refuse(refusal),
    }
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: the login form (or an authorization request sent as
/// a form, which gets the form).
pub(crate) async fn authorize_post(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    body: Bytes,
) -> Response {
    let pairs = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let params = match Params::parse(pairs) {
        Ok(params) => params,
        Err(error) => return error_page(error),
    };
    let request = match check(&shared, &segment, &params) {
        Ok(request) => request,
        Err(refusal) => return refuse(refusal),
    };
    let Some(login) = params.0.iter().find(|(k, _)| k == "login").map(|(_, v)| v) else {
        return login_form(&request, None, None);
    };
    let password = params.get("passwd").unwrap_or_default();
    let user = match check_user(request.tenant, login, password) {
        Ok(user) => user,
        Err(error) => return login_form(&request, Some(login), Some(&error)),
    };
    let now = super::unix_now();
    let code = shared.sign_in.new_code(
        PendingCode::new(
            &request.tenant.id,
            request.client.client_id(),
            &request.redirect_uri,
            &request.challenge,
            request.nonce.as_deref(),
            &request.scope,
            &user.object_id,
            now,
        ),
        now,
    );
    let mut pairs = vec![("code", code.as_str())];
    if let Some(state) = &request.state {
        pairs.push(("state", state));
    }
    respond_to_client(&request.redirect_uri, request.mode, &pairs)
}

/// `GET /{tenant}/oauth2/v2.0/logout`. Entra accepts GET and POST (v2-protocols-oidc, "Send a
/// sign-out request"). No session to end. It redirects to `post_logout_redirect_uri` (with
/// `state`) only when that is a registered redirect URI of the client the request names, by
/// `client_id` or by the audience of a valid `id_token_hint` this tenant issued ("This URL must
/// match one of the redirect URIs registered for your application", same page). Otherwise it
/// shows the signed-out page and sends the browser nowhere: no open redirect through the tenant.
pub(crate) async fn logout_get(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    uri: Uri,
) -> Response {
    let pairs = serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    logout(&shared, &segment, pairs)
}

/// `GET /{tenant}/oauth2/authorize` (v1.0): exosim signs users in on the v2.0 endpoint only,
/// so the v1.0 one, which its v1 discovery document must name (OIDC Discovery 1.0 §3), answers
/// every request with an error naming the endpoint to use.
pub(crate) async fn v1_authorize(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    AadError::malformed_request(
        "exosim signs users in on the v2.0 endpoint only: use /{tenant}/oauth2/v2.0/authorize.",
    )
    .respond(
        &shared.base_url,
        &super::correlation_id(&headers, uri.query(), &[]),
    )
}

/// `POST /{tenant}/oauth2/v2.0/logout`: the same parameters as a form.
pub(crate) async fn logout_post(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    body: Bytes,
) -> Response {
    let pairs = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    logout(&shared, &segment, pairs)
}

fn logout(shared: &Shared, segment: &str, pairs: Vec<(String, String)>) -> Response {
    let params = match Params::parse(pairs) {
        Ok(params) => params,
        Err(error) => return error_page(error),
    };
    let tenant = match find_tenant(shared, segment) {
        Ok(tenant) => tenant,
        Err(error) => return error_page(error),
    };
    let signed_out = || {
        let body = "<h1>Signed out</h1><p id=\"signed-out\">You signed out of your account.</p>";
        (
            StatusCode::OK,
            page_headers(None, false),
            html("Signed out", body),
        )
            .into_response()
    };
    let Some(target) = params.get("post_logout_redirect_uri") else {
        return signed_out();
    };
    let client_id = params.get("client_id").map(str::to_owned).or_else(|| {
        params
            .get("id_token_hint")
            .and_then(|hint| hint_audience(shared, tenant, hint))
    });
    let client = client_id.and_then(|id| Client::find(tenant, &id));
    if !client.is_some_and(|c| redirect::any_matches(c.redirect_uris(), target)) {
        return signed_out();
    }
    let state = params.get("state").map(strip_html);
    let mut pairs = Vec::new();
    if let Some(state) = &state {
        pairs.push(("state", state.as_str()));
    }
    respond_to_client(target, ResponseMode::Query, &pairs)
}

/// The `aud` of an id token this tenant issued (the emulator's signature, this tenant's `tid`).
/// An expired hint still names its client: a sign-out often comes after the token expired.
fn hint_audience(shared: &Shared, tenant: &Tenant, hint: &str) -> Option<String> {
    let jws = crate::jose::parse(hint).ok()?;
    if !jws.verify(crate::jose::Alg::Rs256, &shared.signing.public) {
        return None;
    }
    if jws.claims.get("tid").and_then(|t| t.as_str()) != Some(tenant.id.as_str()) {
        return None;
    }
    jws.claims
        .get("aud")
        .and_then(|a| a.as_str())
        .map(str::to_owned)
}

/// `GET /common/userrealm/{user}`: home realm discovery, which msal-python calls before the
/// password grant; every simulated account is "Managed" (cloud-only), so msal goes on with ROPC.
pub(crate) async fn user_realm(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
) -> Response {
    let domain = user
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let known = shared.directory.tenants.iter().any(|t| t.domain == domain);
    let body = if known {
        json!({
            "ver": "1.0",
            "account_type": "Managed",
            "domain_name": domain,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_audience_urn": "urn:federation:MicrosoftOnline",
        })
    } else {
        json!({"ver": "1.0", "account_type": "Unknown", "cloud_instance_name": "microsoftonline.com"})
    };
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(escape(r#"<script>"a'&"#), "&lt;script&gt;&quot;a&#39;&amp;");
    }

    #[test]
    fn repeated_or_huge_parameters_are_refused() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert!(Params::parse(vec![pair("redirect_uri", "a"), pair("redirect_uri", "b")]).is_err());
        assert!(Params::parse(vec![pair("state", &"x".repeat(MAX_VALUE_BYTES + 1))]).is_err());
        assert!(Params::parse(vec![pair("state", "x")]).is_ok());
        // An id token with many groups is longer than any other parameter.
        let hint = "x".repeat(MAX_VALUE_BYTES * 3);
        assert!(Params::parse(vec![pair("id_token_hint", &hint)]).is_ok());
        let too_long = "x".repeat(MAX_ID_TOKEN_HINT_BYTES + 1);
        assert!(Params::parse(vec![pair("id_token_hint", &too_long)]).is_err());
    }

    #[test]
    fn state_loses_its_html() {
        assert_eq!(strip_html("\"><script>alert(1)</script>"), "\">alert(1)");
        // Only closed spans go; a lone bracket is text.
        assert_eq!(strip_html("a<b"), "a<b");
        assert_eq!(strip_html("x>y"), "x>y");
        assert_eq!(strip_html("a<b>c<d"), "ac<d");
        assert_eq!(strip_html("1 < 2 > 0"), "1  0");
        assert_eq!(strip_html("plain-state_1.2~"), "plain-state_1.2~");
    }

    #[test]
    fn csp_allows_the_style_and_the_redirect_origin_only() {
        let headers = page_headers(Some("http://127.0.0.1:5000/auth/callback?x=1"), false);
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("form-action 'self' http://127.0.0.1:5000;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        let with_script = page_headers(None, true);
        let csp = with_script[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
    }
}
