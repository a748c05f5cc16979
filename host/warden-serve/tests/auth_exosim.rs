//! The auth module against exosim over real HTTPS: a browser signs in through exosim's own
//! login form (fields `login`/`passwd`), the service redeems the code and checks the id_token,
//! the session names the person (oid, upn, group ids); an access token exosim issues to the
//! public client for the service's API passes as `Bearer`, the id_token does not; sign-out ends
//! the session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use exosim::{Exosim, ExosimOptions};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::Value;
use url::Url;
use warden_serve::auth::{
    Auth, AuthConfig, CSRF_FIELD, Caller, DEFAULT_API_ROLE, MemorySessions, ServerKey,
};

async fn whoami(caller: Caller) -> Response {
    axum::Json(caller.person).into_response()
}

/// The caller's CSRF token for the sign-out form.
async fn csrf(State(auth): State<Auth>, caller: Caller) -> String {
    auth.csrf_token(&caller, warden_serve::auth::SIGNOUT_PATH)
}

/// A browser: redirects not followed (each hop is looked at), cookies kept by name.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let cookie_header = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookie_header.is_empty() {
            request
        } else {
            request.header(header::COOKIE, cookie_header)
        };
        let response = request.send().await.expect("the request completes");
        for value in response.headers().get_all(header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        response
    }
}

fn location(response: &reqwest::Response) -> Url {
    let base = response.url().clone();
    base.join(response.headers()[header::LOCATION].to_str().unwrap())
        .unwrap()
}

fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let unescape = |v: &str| {
        v.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    html.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once("\" value=\"").unwrap();
            let (value, _) = rest.split_once('"').unwrap();
            (name.to_owned(), unescape(value))
        })
        .collect()
}

#[tokio::test]
async fn sign_in_through_exosim_bearer_tokens_and_sign_out() {
    let state_dir = tempfile::tempdir().unwrap();
    let exo = Exosim::start(ExosimOptions::demo(state_dir.path()))
        .await
        .expect("exosim starts");
    let ready = exo.ready_info();
    let app = ready
        .sign_in
        .service_app
        .clone()
        .expect("the demo has a service app");
    let public = ready
        .sign_in
        .public_client
        .clone()
        .expect("the demo has a public client");
    let tenant_id = ready.tenants[0].tenant_id.clone();
    let user = ready
        .sign_in
        .users
        .iter()
        .find(|u| u.upn.starts_with("helpdesk@"))
        .expect("the demo's helpdesk user")
        .clone();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(exo.ca_file()).unwrap()).unwrap();
    let http = || {
        reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };

    // The service: Auth's routes, a protected route and the CSRF token.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base: Url = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let config = AuthConfig {
        authority: ready.authority.parse().unwrap(),
        tenant_id: tenant_id.clone(),
        client_id: app.client_id.clone(),
        client_secret: app.client_secret.clone().into(),
        app_id_uri: app.app_id_uri.clone(),
        public_url: base.clone(),
        session_ttl: Duration::from_secs(3600),
        secure_cookies: false,
        allowed_client_apps: vec![public.client_id.clone()],
        required_scopes: app.scopes.clone(),
        required_roles: vec![DEFAULT_API_ROLE.to_owned()],
        server_key: ServerKey::generate(),
    };
    let auth = Auth::new(config, Arc::new(MemorySessions::new()), http())
        .await
        .expect("auth starts against exosim");
    let routes = auth
        .routes::<Auth>()
        .route("/whoami", get(whoami))
        .route("/csrf", get(csrf))
        .with_state(auth.clone());
    tokio::spawn(async move { axum::serve(listener, routes).await });

    // Sign in: /signin → exosim's form → POST login/passwd → the callback → back to /whoami.
    let mut browser = Browser {
        http: http(),
        cookies: HashMap::new(),
    };
    let started = browser
        .send(
            browser
                .http
                .get(base.join("/signin?return_to=%2Fwhoami").unwrap()),
        )
        .await;
    assert_eq!(started.status(), StatusCode::FOUND);
    let authorize = location(&started);
    assert!(authorize.as_str().starts_with(&exo.url()), "{authorize}");
    let page = browser.send(browser.http.get(authorize.clone())).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let mut form = hidden_fields(&html);
    form.push(("login".into(), user.upn.clone()));
    form.push(("passwd".into(), user.password.clone()));
    let mut post_to = authorize.clone();
    post_to.set_query(None);
    let posted = browser.send(browser.http.post(post_to).form(&form)).await;
    assert_eq!(
        posted.status(),
        StatusCode::FOUND,
        "{:?}",
        posted.text().await
    );
    let back = location(&posted);
    assert_eq!(
        back.as_str().split('?').next().unwrap(),
        auth.redirect_uri().as_str()
    );
    let done = browser.send(browser.http.get(back)).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()[header::LOCATION], "/whoami");

    let me = browser
        .send(browser.http.get(base.join("/whoami").unwrap()))
        .await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["oid"], user.object_id.as_str());
    assert_eq!(me["upn"], user.upn.as_str());
    assert_eq!(me["tenant_id"], tenant_id.as_str());
    let mut groups: Vec<&str> = me["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    groups.sort_unstable();
    let mut expected: Vec<&str> = user.groups.iter().map(|g| g.object_id.as_str()).collect();
    expected.sort_unstable();
    assert!(!expected.is_empty());
    assert_eq!(groups, expected);

    // An access token for the service's API, from the public client (password grant).
    let token_endpoint = format!("{}/{tenant_id}/oauth2/v2.0/token", exo.url());
    let answer: Value = http()
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "password"),
            ("client_id", public.client_id.as_str()),
            ("username", user.upn.as_str()),
            ("password", user.password.as_str()),
            (
                "scope",
                &format!("openid profile {}/.default", app.app_id_uri),
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = answer["access_token"].as_str().expect("an access token");
    let called = http()
        .get(base.join("/whoami").unwrap())
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), StatusCode::OK);
    let caller: Value = called.json().await.unwrap();
    assert_eq!(caller["oid"], user.object_id.as_str());
    assert_eq!(caller["upn"], user.upn.as_str());
    // The id_token of the same answer is no API credential.
    let id_token = answer["id_token"].as_str().expect("an id_token");
    let refused = http()
        .get(base.join("/whoami").unwrap())
        .bearer_auth(id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // Sign out (with the CSRF token): the session is gone.
    let token = browser
        .send(browser.http.get(base.join("/csrf").unwrap()))
        .await
        .text()
        .await
        .unwrap();
    let kept = browser.cookies.clone();
    let out = browser
        .send(
            browser
                .http
                .post(base.join("/signout").unwrap())
                .form(&[(CSRF_FIELD, token.as_str())]),
        )
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let mut copy = Browser {
        http: http(),
        cookies: kept,
    };
    let after = copy
        .send(copy.http.get(base.join("/whoami").unwrap()))
        .await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}
