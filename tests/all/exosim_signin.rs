//! exosim's user sign-in over real HTTPS, as a browser and a web service would drive it (GET
//! `/authorize`, POST the login form, follow the 302 or the `form_post` page, redeem the code
//! with PKCE, check the id token against the tenant's JWKS), its refusals (wrong password, wrong
//! verifier, a code used twice, a redirect URI that is not registered, the password grant for a
//! confidential client), refresh tokens, and an independent client: msal-python's
//! PublicClientApplication gets a user token with the password grant and refreshes it
//! (tests/peers/msal_ropc_peer.py).
//!
//! Each rule exosim follows Entra ID on is held here against Microsoft's documentation (cited at
//! the test): the access token version of the app registration, localhost redirect matching,
//! sign-out redirects, what discovery advertises, scopes at redemption, the stored case of UPNs,
//! reflected input, and the AADSTS code of each refusal.

use crate::support::*;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const CALLBACK_PATH: &str = "/auth/callback";

fn b64url(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A PKCE pair: a 43-character verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let mut random = uuid::Uuid::new_v4().as_bytes().to_vec();
    random.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let verifier = b64url(random);
    let challenge = b64url(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A browser that trusts exosim's CA and does not follow redirects (the test looks at each).
fn browser(emu: &Emulator) -> reqwest::Client {
    let ca = std::fs::read(emu.exosim.ca_file()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct SignIn<'a> {
    emu: &'a Emulator,
    http: reqwest::Client,
    client_id: String,
    secret: String,
    app_id_uri: String,
    redirect_uri: String,
    verifier: String,
    challenge: String,
    nonce: String,
    state: String,
    /// The `scope` to ask for instead of [`SignIn::scope`]'s.
    scope_override: Option<String>,
}

impl<'a> SignIn<'a> {
    fn new(emu: &'a Emulator) -> Self {
        let app = &emu.ready["service_app"];
        let (verifier, challenge) = pkce();
        SignIn {
            emu,
            http: browser(emu),
            client_id: app["client_id"].as_str().unwrap().to_owned(),
            secret: app["client_secret"].as_str().unwrap().to_owned(),
            app_id_uri: app["app_id_uri"].as_str().unwrap().to_owned(),
            // The registered loopback URI, on a port of the test's choosing.
            redirect_uri: format!("http://127.0.0.1:47913{CALLBACK_PATH}"),
            verifier,
            challenge,
            nonce: uuid::Uuid::new_v4().to_string(),
            state: uuid::Uuid::new_v4().to_string(),
            scope_override: None,
        }
    }

    fn authorize_endpoint(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/authorize",
            self.emu.exosim.url(),
            self.emu.tenant_id()
        )
    }

    fn token_endpoint(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.emu.exosim.url(),
            self.emu.tenant_id()
        )
    }

    fn scope(&self) -> String {
        self.scope_override.clone().unwrap_or_else(|| {
            format!("openid profile offline_access {}/.default", self.app_id_uri)
        })
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", self.client_id.clone()),
            ("response_type", "code".into()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("scope", self.scope()),
            ("state", self.state.clone()),
            ("nonce", self.nonce.clone()),
            ("code_challenge", self.challenge.clone()),
            ("code_challenge_method", "S256".into()),
        ]
    }

    async fn get_authorize(&self, query: &[(&str, String)]) -> reqwest::Response {
        self.http
            .get(self.authorize_endpoint())
            .query(query)
            .send()
            .await
            .unwrap()
    }

    /// GET the login page, then POST its form (hidden fields as the page gave them).
    async fn sign_in(&self, login: &str, password: &str) -> reqwest::Response {
        let page = self.get_authorize(&self.query()).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        let mut form = hidden_fields(&html);
        assert!(
            html.contains("name=\"login\"") && html.contains("name=\"passwd\""),
            "{html}"
        );
        form.push(("login".into(), login.into()));
        form.push(("passwd".into(), password.into()));
        self.http
            .post(self.authorize_endpoint())
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Signs in as `upn` and returns the code from the 302 to the redirect URI.
    async fn code_for(&self, upn: &str) -> String {
        let password = user(self.emu, upn)["password"].as_str().unwrap().to_owned();
        let response = self.sign_in(upn, &password).await;
        assert_eq!(response.status(), 302, "{:?}", response.text().await);
        let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(
            location.as_str().split('?').next().unwrap(),
            self.redirect_uri,
            "the code goes to the redirect URI"
        );
        let param = |name: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(param("state").as_deref(), Some(self.state.as_str()));
        param("code").expect("a code")
    }

    async fn redeem(&self, code: &str, verifier: &str, redirect_uri: &str) -> (u16, Value) {
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", &self.client_id),
            ("client_secret", &self.secret),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        self.post_token(&form).await
    }

    async fn post_token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.token_endpoint())
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

fn user<'e>(emu: &'e Emulator, upn: &str) -> &'e Value {
    emu.ready["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"] == upn)
        .unwrap_or_else(|| panic!("{upn} is in the ready file's users"))
}

fn demo_upn(name: &str) -> String {
    format!("{name}@{}", exosim::DEMO_DOMAIN)
}

/// The hidden inputs of a page, values unescaped.
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

fn aadsts(body: &Value) -> u64 {
    body["error_codes"][0].as_u64().unwrap_or(0)
}

/// Verifies a JWT's RS256 signature against the key the discovery document's `jwks_uri` names.
async fn verify_signature(sign_in: &SignIn<'_>, token: &str) -> Value {
    let discovery: Value = sign_in
        .http
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            sign_in.emu.exosim.url(),
            sign_in.emu.tenant_id()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks: Value = sign_in
        .http
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut parts = token.split('.');
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap()
    };
    let header: Value = serde_json::from_slice(&decode(parts.next().unwrap())).unwrap();
    assert_eq!(header["alg"], "RS256");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is in the tenant's JWKS");
    let public = rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(&decode(key["n"].as_str().unwrap())),
        rsa::BoxedUint::from_be_slice_vartime(&decode(key["e"].as_str().unwrap())),
    )
    .unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    public
        .pkcs1v15_verify::<Sha256>(input.as_bytes(), &decode(signature))
        .expect("the signature verifies against the JWKS key");
    let mut tampered = input.as_bytes().to_vec();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(
        public
            .pkcs1v15_verify::<Sha256>(&tampered, &decode(signature))
            .is_err()
    );
    assert_eq!(discovery["issuer"], sign_in.emu.ready["authority"]);
    claims(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_code_flow_with_pkce_gives_verified_tokens_and_refreshes() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let lead = demo_upn("lead");
    // PKCE holds: a code is worth nothing without its verifier.
    let code = sign_in.code_for(&lead).await;
    let (other_verifier, _) = pkce();
    let (status, body) = sign_in
        .redeem(&code, &other_verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!((status, aadsts(&body)), (400, 501481), "{body}");
    assert!(body.get("access_token").is_none());

    let code = sign_in.code_for(&lead).await;
    let (status, body) = sign_in
        .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");

    let lead_info = user(&emu, &lead);
    let group_ids: Vec<&Value> = lead_info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["object_id"])
        .collect();
    let id = verify_signature(&sign_in, body["id_token"].as_str().unwrap()).await;
    let issuer = format!("{}/{}/v2.0", emu.exosim.url(), emu.tenant_id());
    assert_eq!(id["iss"], issuer.as_str());
    assert_eq!(id["aud"], sign_in.client_id.as_str());
    assert_eq!(id["tid"], emu.tenant_id().as_str());
    assert_eq!(id["oid"], lead_info["object_id"]);
    assert_eq!(id["preferred_username"], lead.as_str());
    assert_eq!(id["name"], lead_info["display_name"]);
    assert_eq!(id["nonce"], sign_in.nonce.as_str());
    assert_eq!(id["ver"], "2.0");
    assert_eq!(
        id["groups"].as_array().unwrap().iter().collect::<Vec<_>>(),
        group_ids
    );
    assert_eq!(id["roles"], serde_json::json!([exosim::DEMO_OPERATOR_ROLE]));
    assert!(id["sub"].as_str().is_some_and(|s| !s.is_empty()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(id["exp"].as_i64().unwrap() > now && id["nbf"].as_i64().unwrap() <= now);

    // The access token is for the service's own API.
    let access = verify_signature(&sign_in, body["access_token"].as_str().unwrap()).await;
    assert_eq!(access["aud"], sign_in.client_id.as_str());
    assert_eq!(access["iss"], issuer.as_str());
    assert_eq!(access["azp"], sign_in.client_id.as_str());
    assert_eq!(access["scp"], "Tasks.Run");
    assert_eq!(access["oid"], lead_info["object_id"]);
    assert_eq!(access["roles"], id["roles"]);
    assert_eq!(access["ver"], "2.0");

    // Refresh: a new access token for the same person, from the same client only.
    let refresh = body["refresh_token"]
        .as_str()
        .expect("offline_access gives one");
    let (status, refreshed) = sign_in
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &sign_in.client_id),
            ("client_secret", &sign_in.secret),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let again = verify_signature(&sign_in, refreshed["access_token"].as_str().unwrap()).await;
    assert_eq!(again["oid"], access["oid"]);
    assert_eq!(again["aud"], access["aud"]);
    assert_eq!(again["scp"], access["scp"]);
    assert_ne!(
        again["uti"], access["uti"],
        "a new token, not the old one again"
    );
    let public = emu.ready["public_client"]["client_id"].as_str().unwrap();
    let (status, other_client) = sign_in
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", public),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!(status, 400, "{other_client}");
    assert_eq!(aadsts(&other_client), 70000, "{other_client}");
    let (status, wrong_secret) = sign_in
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &sign_in.client_id),
            ("client_secret", "not-the-secret"),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!((status, aadsts(&wrong_secret)), (401, 7000215));

    // Neither the password, the code, the verifier nor a token reached the request log.
    let log = serde_json::to_string(&emu.exosim.request_log()).unwrap();
    let password = lead_info["password"].as_str().unwrap();
    for secret in [password, &code, &sign_in.verifier, refresh, &sign_in.secret] {
        assert!(!log.contains(secret), "a secret reached the request log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_code_flow_refusals() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let helpdesk = demo_upn("helpdesk");

    // A wrong password shows the form again with AADSTS50126, and no code.
    let response = sign_in.sign_in(&helpdesk, "wrong password").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("location").is_none());
    let html = response.text().await.unwrap();
    assert!(html.contains("AADSTS50126"), "{html}");
    assert!(html.contains("name=\"passwd\""), "the form again: {html}");
    // An unknown user: AADSTS50034.
    let html = sign_in
        .sign_in(&demo_upn("nobody"), "x")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("AADSTS50034"), "{html}");

    // A wrong verifier is refused, and the code is spent by the attempt.
    let code = sign_in.code_for(&helpdesk).await;
    let (other_verifier, _) = pkce();
    let (status, body) = sign_in
        .redeem(&code, &other_verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!((status, aadsts(&body)), (400, 501481), "{body}");
    let (status, body) = sign_in
        .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!((status, aadsts(&body)), (400, 54005), "{body}");

    // A code is single use.
    let code = sign_in.code_for(&helpdesk).await;
    let (status, body) = sign_in
        .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sign_in
        .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!((status, aadsts(&body)), (400, 54005), "{body}");

    // Redeemed with another redirect URI than it was issued for.
    let code = sign_in.code_for(&helpdesk).await;
    let (status, body) = sign_in
        .redeem(
            &code,
            &sign_in.verifier,
            &format!("http://127.0.0.1:47914{CALLBACK_PATH}"),
        )
        .await;
    // Entra today: invalid_client AADSTS500112 (snok/django-auth-adfs#354).
    assert_eq!((status, aadsts(&body)), (401, 500112), "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");

    // A redirect URI that is not registered gets an error PAGE, never a redirect; so do an
    // unknown client and a look-alike of the loopback host.
    for (name, value, code) in [
        ("redirect_uri", "https://evil.example/auth/callback", 50011),
        (
            "redirect_uri",
            "http://127.0.0.1.evil.example:80/auth/callback",
            50011,
        ),
        (
            "redirect_uri",
            "http://127.0.0.1:5000/auth/callback/../x",
            50011,
        ),
        ("client_id", "00000000-0000-0000-0000-00000000abcd", 700016),
    ] {
        let mut query = sign_in.query();
        query.retain(|(k, _)| *k != name);
        query.push((name, value.to_owned()));
        let response = sign_in.get_authorize(&query).await;
        assert_eq!(response.status(), 400, "{value}");
        assert!(response.headers().get("location").is_none(), "{value}");
        let html = response.text().await.unwrap();
        assert!(html.contains(&format!("AADSTS{code}")), "{value}: {html}");
        // The same through the form's hidden fields.
        let mut form: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        form.push(("login".into(), helpdesk.clone()));
        form.push(("passwd".into(), "irrelevant".into()));
        let response = sign_in
            .http
            .post(sign_in.authorize_endpoint())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "POST {value}");
        assert!(response.headers().get("location").is_none(), "POST {value}");
    }

    // Plain PKCE or none: refused by a redirect back with an error (the URI is trusted now).
    for (method, challenge) in [("plain", sign_in.verifier.as_str()), ("", "")] {
        let mut query = sign_in.query();
        query.retain(|(k, _)| !k.starts_with("code_challenge"));
        if !method.is_empty() {
            query.push(("code_challenge_method", method.to_owned()));
            query.push(("code_challenge", challenge.to_owned()));
        }
        let response = sign_in.get_authorize(&query).await;
        assert_eq!(response.status(), 302, "{method:?}");
        let (target, pairs) = location_params(&response);
        assert_eq!(target, sign_in.redirect_uri);
        assert_eq!(param(&pairs, "error"), Some("invalid_request"), "{pairs:?}");
        let expected = if method.is_empty() {
            "AADSTS9002325"
        } else {
            "AADSTS9002313"
        };
        assert!(
            param(&pairs, "error_description").is_some_and(|d| d.starts_with(expected)),
            "{pairs:?}"
        );
        assert_eq!(param(&pairs, "state"), Some(sign_in.state.as_str()));
        assert!(param(&pairs, "code").is_none(), "{pairs:?}");
    }

    // Hidden fields echo attacker-chosen values escaped; the page cannot be framed.
    let mut query = sign_in.query();
    query.retain(|(k, _)| *k != "state");
    query.push(("state", "\"><script>alert(1)</script>".to_owned()));
    let response = sign_in.get_authorize(&query).await;
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    // What is left after stripping is still escaped in the attribute.
    assert!(html.contains("value=\"&quot;&gt;alert(1)\""), "{html}");
    // Entra strips HTML from `state` before it echoes it (reply-url, "Use a state parameter").
    let echoed = hidden_fields(&html);
    assert!(
        echoed.contains(&("state".into(), "\">alert(1)".into())),
        "{echoed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_password_grant_for_the_public_client_only() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let helpdesk = demo_upn("helpdesk");
    let password = user(&emu, &helpdesk)["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let public = emu.ready["public_client"]["client_id"].as_str().unwrap();
    let scope = format!("openid profile {}/.default", sign_in.app_id_uri);
    let ropc = |client_id: &str, secret: Option<&str>, password: &str| {
        let mut form = vec![
            ("grant_type", "password".to_owned()),
            ("client_id", client_id.to_owned()),
            ("username", helpdesk.clone()),
            ("password", password.to_owned()),
            ("scope", scope.clone()),
        ];
        if let Some(secret) = secret {
            form.push(("client_secret", secret.to_owned()));
        }
        form
    };
    let post = |form: Vec<(&'static str, String)>| {
        let sign_in = &sign_in;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sign_in.post_token(&form).await
        }
    };

    let (status, body) = post(ropc(public, None, &password)).await;
    assert_eq!(status, 200, "{body}");
    let access = verify_signature(&sign_in, body["access_token"].as_str().unwrap()).await;
    assert_eq!(access["aud"], sign_in.client_id.as_str());
    assert_eq!(access["azp"], public);
    assert_eq!(access["azpacr"], "0");
    assert_eq!(access["preferred_username"], helpdesk.as_str());
    assert!(access.get("roles").is_none(), "helpdesk holds no app role");

    let (status, body) = post(ropc(public, None, "wrong")).await;
    assert_eq!((status, aadsts(&body)), (400, 50126), "{body}");
    let (status, body) = post(ropc(public, Some("a-secret"), &password)).await;
    assert_eq!((status, aadsts(&body)), (401, 700025), "{body}");

    // The service app (confidential): without its secret AADSTS7000218, with it still refused.
    let (status, body) = post(ropc(&sign_in.client_id, None, &password)).await;
    assert_eq!((status, aadsts(&body)), (401, 7000218), "{body}");
    let (status, body) = post(ropc(&sign_in.client_id, Some(&sign_in.secret), &password)).await;
    assert_eq!((status, aadsts(&body)), (400, 70003), "{body}");
    assert_eq!(body["error"], "unsupported_grant_type", "{body}");
    assert!(body.get("access_token").is_none());
}

/// An independent client: msal-python's PublicClientApplication signs the helpdesk user in with
/// the password grant against exosim's authority, then refreshes through its token cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_msal_python_gets_a_user_token_by_password() {
    let emu = Emulator::start().await;
    let helpdesk = demo_upn("helpdesk");
    let info = user(&emu, &helpdesk).clone();
    let app_id_uri = emu.ready["service_app"]["app_id_uri"].as_str().unwrap();
    let service = emu.ready["service_app"]["client_id"].as_str().unwrap();
    let public = emu.ready["public_client"]["client_id"].as_str().unwrap();
    let script = repo_root().join("tests/peers/msal_ropc_peer.py");
    let run = |password: String| {
        tokio::process::Command::new(peer_python())
            .arg(&script)
            .args([
                "--authority",
                &format!("{}/{}", emu.exosim.url(), emu.tenant_id()),
            ])
            .args(["--client-id", public])
            .args(["--scope", &format!("{app_id_uri}/.default")])
            .args(["--ca-file", &emu.ca()])
            .env("PEER_USERNAME", &helpdesk)
            .env("PEER_PASSWORD", password)
            .output()
    };
    let output = run(info["password"].as_str().unwrap().to_owned())
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "msal failed: {stdout}{stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["ok"], true, "{result}");
    let access = &result["access_claims"];
    assert_eq!(access["aud"], service);
    assert_eq!(access["azp"], public);
    assert_eq!(access["oid"], info["object_id"]);
    assert_eq!(access["preferred_username"], helpdesk.as_str());
    assert_eq!(access["tid"], emu.tenant_id().as_str());
    assert_eq!(access["scp"], "Tasks.Run");
    let helpdesk_group = &info["groups"][0]["object_id"];
    assert_eq!(access["groups"], serde_json::json!([helpdesk_group]));
    // msal checked the id token (issuer, audience, expiry) before handing out its claims.
    let id = &result["id_token_claims"];
    assert_eq!(id["aud"], public);
    assert_eq!(id["oid"], info["object_id"]);
    assert_eq!(id["preferred_username"], helpdesk.as_str());
    assert_eq!(
        id["iss"],
        format!("{}/{}/v2.0", emu.exosim.url(), emu.tenant_id()).as_str()
    );
    // msal asked exosim's home realm discovery: the peer's http_client routed the port-less
    // userrealm URL here (the public-API route, not a private switch that skips the call).
    assert!(
        emu.exosim
            .request_log()
            .iter()
            .any(|r| r.path.starts_with("/common/userrealm/")),
        "no userrealm request reached exosim"
    );
    // The refresh through msal's cache gave a token for the same person.
    assert_eq!(result["refreshed_claims"]["oid"], info["object_id"]);
    assert_ne!(result["refreshed_claims"]["uti"], access["uti"]);

    let output = run("wrong".to_owned()).await.unwrap();
    let (stdout, _) = text(&output);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(
        result["error_codes"],
        serde_json::json!([50126]),
        "{result}"
    );
}

/// The query of a `Location` header as pairs.
fn location_params(response: &reqwest::Response) -> (String, Vec<(String, String)>) {
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let pairs = location
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (
        location.as_str().split('?').next().unwrap().to_owned(),
        pairs,
    )
}

fn param<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An emulator whose demo tenant is changed by `edit` before it starts.
async fn emulator_with(edit: impl FnOnce(&mut exosim::TenantConfig)) -> Emulator {
    Emulator::start_with(|options| edit(&mut options.tenants.tenants[0])).await
}

/// A password-grant token for the service's API through the public client.
async fn ropc_token(emu: &Emulator, upn: &str, password: &str) -> Value {
    let app_id_uri = emu.ready["service_app"]["app_id_uri"].as_str().unwrap();
    ropc_token_for(emu, upn, password, app_id_uri).await
}

/// A password-grant token for the service's API, which the `scope` names as `resource` (its
/// app ID URI or its client id).
async fn ropc_token_for(emu: &Emulator, upn: &str, password: &str, resource: &str) -> Value {
    let sign_in = SignIn::new(emu);
    let public = emu.ready["public_client"]["client_id"].as_str().unwrap();
    let scope = format!("openid profile offline_access {resource}/.default");
    let (status, body) = sign_in
        .post_token(&[
            ("grant_type", "password"),
            ("client_id", public),
            ("username", upn),
            ("password", password),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Entra issues a resource app's access tokens in the version its manifest asks for, null
/// meaning v1.0: "Possible values for accesstokenAcceptedVersion are 1, 2, or null. If the
/// value is null, this defaults to 1" (learn.microsoft.com/entra/identity-platform/
/// reference-app-manifest; the claims per version: access-token-claims-reference). warden serve
/// accepts both, end to end: its API answers a v1.0 and a v2.0 token alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_access_tokens_follow_the_apps_token_version() {
    let v1 = emulator_with(|tenant| {
        tenant.service_app.as_mut().unwrap().access_token_version = None;
    })
    .await;
    let v2 = Emulator::start().await;
    assert_eq!(v1.ready["service_app"]["access_token_version"], 1);
    assert_eq!(v2.ready["service_app"]["access_token_version"], 2);
    let helpdesk = demo_upn("helpdesk");
    for (emu, version) in [(&v1, "1.0"), (&v2, "2.0")] {
        let password = user(emu, &helpdesk)["password"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = ropc_token(emu, &helpdesk, &password).await;
        let sign_in = SignIn::new(emu);
        let access = verify_signature(&sign_in, body["access_token"].as_str().unwrap()).await;
        let public = emu.ready["public_client"]["client_id"].as_str().unwrap();
        let tid = emu.tenant_id();
        assert_eq!(access["ver"], version, "{access}");
        assert_eq!(access["scp"], "Tasks.Run");
        assert_eq!(access["oid"], user(emu, &helpdesk)["object_id"]);
        if version == "1.0" {
            assert_eq!(access["iss"], format!("https://sts.windows.net/{tid}/"));
            assert_eq!(access["aud"], sign_in.app_id_uri.as_str());
            assert_eq!(access["appid"], public);
            assert_eq!(access["appidacr"], "0");
            assert_eq!(access["upn"], helpdesk.as_str());
            assert_eq!(access["unique_name"], helpdesk.as_str());
            for v2_only in ["azp", "azpacr", "preferred_username"] {
                assert!(access.get(v2_only).is_none(), "{v2_only} in v1.0: {access}");
            }
        } else {
            assert_eq!(access["iss"], emu.ready["authority"]);
            assert_eq!(access["aud"], sign_in.client_id.as_str());
            assert_eq!(access["azp"], public);
            assert_eq!(access["preferred_username"], helpdesk.as_str());
            for v1_only in ["appid", "upn", "unique_name"] {
                assert!(access.get(v1_only).is_none(), "{v1_only} in v2.0: {access}");
            }
        }
        // Named by its client id: "In v1.0 tokens, it can be the client ID or the resource URI
        // used in the request" (access-token-claims-reference, `aud`); v2.0's is the client id.
        let by_id = ropc_token_for(emu, &helpdesk, &password, &sign_in.client_id).await;
        let by_id_claims = claims(by_id["access_token"].as_str().unwrap());
        assert_eq!(by_id_claims["ver"], version, "{by_id_claims}");
        assert_eq!(
            by_id_claims["aud"],
            sign_in.client_id.as_str(),
            "{by_id_claims}"
        );
        // The id token is v2.0 whatever the API's version (the endpoint decides it).
        assert_eq!(claims(body["id_token"].as_str().unwrap())["ver"], "2.0");

        // warden serve takes either as a Bearer token for its API.
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite:{}", dir.path().join("serve.db").display());
        let service = crate::serve_api::start(emu, dir.path(), &db, 0).await;
        let response = sign_in
            .http
            .get(format!("{}/api/v1/tasks", service.url))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "a v{version} token: {text}");
        assert!(text.contains("list-mailboxes"), "{text}");
        let response = sign_in
            .http
            .get(format!("{}/api/v1/tasks", service.url))
            .bearer_auth(by_id["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "a v{version} token named by client id"
        );
        service.shutdown().await;
    }
}

/// Entra's localhost exceptions (learn.microsoft.com/entra/identity-platform/reply-url): "the
/// port component … is ignored for the purposes of matching a redirect URI", nothing else is:
/// scheme, host (`localhost` is not `127.0.0.1`), path and query must match a registered one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_localhost_redirects_match_all_but_the_port() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let registered = exosim::DEMO_SERVICE_REDIRECT_URI;
    assert_eq!(registered, format!("http://127.0.0.1{CALLBACK_PATH}"));
    let cases = [
        (format!("http://127.0.0.1{CALLBACK_PATH}"), true),
        (format!("http://127.0.0.1:1{CALLBACK_PATH}"), true),
        (format!("http://127.0.0.1:65000{CALLBACK_PATH}"), true),
        (format!("http://127.0.0.1:5000{CALLBACK_PATH}/x"), false),
        (format!("http://127.0.0.1:5000{CALLBACK_PATH}2"), false),
        ("http://127.0.0.1:5000/AUTH/callback".to_owned(), false),
        (format!("http://localhost:5000{CALLBACK_PATH}"), false),
        (format!("http://127.0.0.2:5000{CALLBACK_PATH}"), false),
        (format!("http://[::1]:5000{CALLBACK_PATH}"), false),
        (format!("https://127.0.0.1:5000{CALLBACK_PATH}"), false),
        (
            format!("http://127.0.0.1:5000{CALLBACK_PATH}?next=/"),
            false,
        ),
        (format!("http://127.0.0.1:5000{CALLBACK_PATH}#top"), false),
    ];
    for (redirect_uri, allowed) in cases {
        let mut query = sign_in.query();
        query.retain(|(k, _)| *k != "redirect_uri");
        query.push(("redirect_uri", redirect_uri.clone()));
        let response = sign_in.get_authorize(&query).await;
        let status = response.status();
        let html = response.text().await.unwrap();
        if allowed {
            assert_eq!(status, 200, "{redirect_uri}: {html}");
            assert!(html.contains("name=\"passwd\""), "{redirect_uri}");
        } else {
            assert_eq!(status, 400, "{redirect_uri} must not match {registered}");
            assert!(html.contains("AADSTS50011"), "{redirect_uri}: {html}");
        }
    }
}

/// A sign-out request: what it tries, its parameters, where it may send the browser.
type LogoutCase<'a> = (&'static str, Vec<(&'static str, String)>, Option<&'a str>);

/// Sign-out redirects only to a redirect URI registered for the client the request names, by
/// `client_id` or by its `id_token_hint` ("This URL must match one of the redirect URIs
/// registered for your application", learn.microsoft.com/entra/identity-platform/
/// v2-protocols-oidc, "Send a sign-out request"); else Entra shows its signed-out page. GET and
/// POST both work there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_logout_redirects_only_to_the_named_clients_uris() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let public = emu.ready["public_client"]["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The public client's registered URI is `http://127.0.0.1/`; the service app's is the callback.
    let public_uri = "http://127.0.0.1:5000/".to_owned();
    let service_uri = sign_in.redirect_uri.clone();
    let endpoint = format!(
        "{}/{}/oauth2/v2.0/logout",
        emu.exosim.url(),
        emu.tenant_id()
    );
    // An id token of the service app, for the hint.
    let code = sign_in.code_for(&demo_upn("lead")).await;
    let (status, body) = sign_in
        .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!(status, 200, "{body}");
    let hint = body["id_token"].as_str().unwrap().to_owned();
    // The same token with the first character of its signature changed.
    let (signed, signature) = hint.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{first}{}", &signature[1..]);

    let state = "\"><b>s</b>";
    let cases: Vec<LogoutCase<'_>> = vec![
        (
            "no client named",
            vec![("post_logout_redirect_uri", service_uri.clone())],
            None,
        ),
        (
            "another app's URI",
            vec![
                ("post_logout_redirect_uri", public_uri.clone()),
                ("client_id", sign_in.client_id.clone()),
            ],
            None,
        ),
        (
            "the client's own URI",
            vec![
                ("post_logout_redirect_uri", public_uri.clone()),
                ("client_id", public.clone()),
            ],
            Some(public_uri.as_str()),
        ),
        (
            "the hint's client",
            vec![
                ("post_logout_redirect_uri", service_uri.clone()),
                ("id_token_hint", hint.clone()),
            ],
            Some(service_uri.as_str()),
        ),
        (
            "the hint's client, another app's URI",
            vec![
                ("post_logout_redirect_uri", public_uri.clone()),
                ("id_token_hint", hint.clone()),
            ],
            None,
        ),
        (
            "a forged hint",
            vec![
                ("post_logout_redirect_uri", service_uri.clone()),
                ("id_token_hint", forged.clone()),
            ],
            None,
        ),
        (
            "an unregistered URI",
            vec![
                (
                    "post_logout_redirect_uri",
                    "https://evil.example/".to_owned(),
                ),
                ("client_id", sign_in.client_id.clone()),
            ],
            None,
        ),
    ];
    for (what, mut query, redirect) in cases {
        query.push(("state", state.to_owned()));
        let get = sign_in
            .http
            .get(&endpoint)
            .query(&query)
            .send()
            .await
            .unwrap();
        let post = sign_in
            .http
            .post(&endpoint)
            .form(&query)
            .send()
            .await
            .unwrap();
        for (method, response) in [("GET", get), ("POST", post)] {
            match redirect {
                Some(to) => {
                    assert_eq!(response.status(), 302, "{method} {what}");
                    let (target, pairs) = location_params(&response);
                    assert_eq!(target, to, "{method} {what}");
                    assert_eq!(param(&pairs, "state"), Some("\">s"), "{method} {what}");
                }
                None => {
                    assert_eq!(response.status(), 200, "{method} {what}");
                    assert!(
                        response.headers().get("location").is_none(),
                        "{method} {what}"
                    );
                    let html = response.text().await.unwrap();
                    assert!(
                        html.contains("id=\"signed-out\""),
                        "{method} {what}: {html}"
                    );
                }
            }
        }
    }
}

/// The discovery document lists only what exosim does, and everything it lists works: each
/// response mode, the response type, the PKCE method and each grant type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_discovery_advertises_only_what_works() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let discovery: Value = sign_in
        .http
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            emu.exosim.url(),
            emu.tenant_id()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = |key: &str| -> Vec<String> {
        discovery[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {discovery}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list("response_types_supported"), ["code"]);
    assert_eq!(list("code_challenge_methods_supported"), ["S256"]);
    assert_eq!(
        list("grant_types_supported"),
        [
            "authorization_code",
            "refresh_token",
            "password",
            "client_credentials"
        ]
    );
    for absent in [
        "device_authorization_endpoint",
        "kerberos_endpoint",
        "userinfo_endpoint",
    ] {
        assert!(discovery.get(absent).is_none(), "{absent}: {discovery}");
    }
    let helpdesk = demo_upn("helpdesk");
    let password = user(&emu, &helpdesk)["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let modes = list("response_modes_supported");
    assert_eq!(modes, ["query", "form_post"]);
    let mut refresh = String::new();
    for mode in &modes {
        let mut query = sign_in.query();
        query.push(("response_mode", mode.clone()));
        let page = sign_in.get_authorize(&query).await;
        assert_eq!(page.status(), 200, "{mode}");
        let mut form = hidden_fields(&page.text().await.unwrap());
        form.push(("login".into(), helpdesk.clone()));
        form.push(("passwd".into(), password.clone()));
        let response = sign_in
            .http
            .post(sign_in.authorize_endpoint())
            .form(&form)
            .send()
            .await
            .unwrap();
        let code = if mode == "query" {
            assert_eq!(response.status(), 302);
            let (target, pairs) = location_params(&response);
            assert_eq!(target, sign_in.redirect_uri);
            assert_eq!(param(&pairs, "state"), Some(sign_in.state.as_str()));
            param(&pairs, "code").unwrap().to_owned()
        } else {
            // form_post: a page whose form POSTs code and state to the redirect URI, submitted
            // by the one script its CSP allows.
            assert_eq!(response.status(), 200);
            let csp = response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(csp.contains("script-src 'sha256-"), "{csp}");
            assert!(
                csp.contains("form-action 'self' http://127.0.0.1:47913"),
                "{csp}"
            );
            let html = response.text().await.unwrap();
            assert!(
                html.contains(&format!(
                    "<form method=\"post\" action=\"{}\">",
                    sign_in.redirect_uri
                )),
                "{html}"
            );
            let fields = hidden_fields(&html);
            assert!(
                fields.contains(&("state".into(), sign_in.state.clone())),
                "{html}"
            );
            fields
                .iter()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.clone())
                .expect("a code field")
        };
        let (status, body) = sign_in
            .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
            .await;
        assert_eq!(status, 200, "{mode}: {body}");
        refresh = body["refresh_token"].as_str().unwrap().to_owned();
    }
    // Every client authentication method it lists works for the code grant and the refresh
    // grant (a client that trusts discovery must never be refused for the method).
    for method in list("token_endpoint_auth_methods_supported") {
        let code = sign_in.code_for(&helpdesk).await;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", sign_in.redirect_uri.clone()),
            ("code_verifier", sign_in.verifier.clone()),
        ];
        let mut request = sign_in.http.post(sign_in.token_endpoint());
        match method.as_str() {
            "client_secret_post" => {
                form.push(("client_id", sign_in.client_id.clone()));
                form.push(("client_secret", sign_in.secret.clone()));
            }
            "client_secret_basic" => {
                // RFC 6749 §2.3.1: both parts form-urlencoded.
                let encode = |text: &str| {
                    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
                };
                request =
                    request.basic_auth(encode(&sign_in.client_id), Some(encode(&sign_in.secret)));
            }
            other => panic!("discovery lists {other}, which this test cannot try: {discovery}"),
        }
        let response = request.form(&form).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{method}: {body}");
        assert!(body["refresh_token"].is_string(), "{method}: {body}");
    }
    // A mode it does not list is refused back to the client (AADSTS70007).
    let mut query = sign_in.query();
    query.push(("response_mode", "fragment".into()));
    let response = sign_in.get_authorize(&query).await;
    assert_eq!(response.status(), 302);
    let (_, pairs) = location_params(&response);
    assert!(
        param(&pairs, "error_description")
            .unwrap()
            .starts_with("AADSTS70007")
    );
    // The other grants it lists.
    let (status, body) = sign_in
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &sign_in.client_id),
            ("client_secret", &sign_in.secret),
            ("refresh_token", &refresh),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    ropc_token(&emu, &helpdesk, &password).await;
    let app = &emu.ready["tenants"][0]["apps"][0];
    let (status, body) = sign_in
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", app["client_id"].as_str().unwrap()),
            ("client_secret", app["client_secret"].as_str().unwrap()),
            ("scope", "https://outlook.office365.com/.default"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A token request's `scope` is checked against consent, not against the code: Entra lets the
/// app "declare the resource they want the token for during token redemption"
/// (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow). OIDC scopes may be
/// added, `{app}/.default` means every consented (here: every exposed) scope, and a scope the
/// app does not expose (AADSTS70011) or of a resource without consent (AADSTS65001) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_token_scope_at_redemption_follows_consent() {
    let emu = emulator_with(|tenant| {
        let app = tenant.service_app.as_mut().unwrap();
        app.scopes = vec!["Tasks.Run".to_owned(), "Tasks.Read".to_owned()];
    })
    .await;
    let mut sign_in = SignIn::new(&emu);
    let api = format!("{}/.default", sign_in.app_id_uri);
    let lead = demo_upn("lead");
    // Signed in for the API and a refresh token: asking less is fine.
    let code = sign_in.code_for(&lead).await;
    let (status, body) = redeem_scoped(&sign_in, &code, &format!("openid {api}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["scp"],
        "Tasks.Run Tasks.Read"
    );
    assert!(
        body.get("refresh_token").is_none(),
        "offline_access was not asked for"
    );
    assert!(body.get("id_token").is_some(), "openid was");

    // Signed in for one scope and OpenID: OIDC scopes and the app's consented scopes may be
    // added at redemption.
    sign_in.scope_override = Some(format!("openid {}/Tasks.Run", sign_in.app_id_uri));
    let code = sign_in.code_for(&lead).await;
    let widened = format!("openid profile email offline_access {api}");
    let (status, body) = redeem_scoped(&sign_in, &code, &widened).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["scp"],
        "Tasks.Run Tasks.Read",
        ".default is every consented scope"
    );
    let refresh = body["refresh_token"]
        .as_str()
        .expect("offline_access added at redemption")
        .to_owned();

    // A scope the app does not expose, or another resource's, is refused.
    for (refused, code_wanted) in [
        (format!("openid {}/Tasks.Admin", sign_in.app_id_uri), 70011),
        ("openid User.Read".to_owned(), 65001),
    ] {
        let code = sign_in.code_for(&lead).await;
        let (status, body) = redeem_scoped(&sign_in, &code, &refused).await;
        assert_eq!(
            (status, aadsts(&body)),
            (400, code_wanted),
            "{refused}: {body}"
        );
        assert!(body.get("access_token").is_none());
    }

    // A refresh token follows the same rule.
    let refresh_with = |scope: String| {
        let sign_in = &sign_in;
        let refresh = refresh.clone();
        async move {
            sign_in
                .post_token(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", &sign_in.client_id),
                    ("client_secret", &sign_in.secret),
                    ("refresh_token", &refresh),
                    ("scope", &scope),
                ])
                .await
        }
    };
    let (status, body) = refresh_with(format!("{}/Tasks.Read", sign_in.app_id_uri)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["scp"],
        "Tasks.Read"
    );
    let (status, body) = refresh_with(format!("{}/Tasks.Admin", sign_in.app_id_uri)).await;
    assert_eq!((status, aadsts(&body)), (400, 70011), "{body}");
}

/// Redeems `code` with a `scope` in the token request.
async fn redeem_scoped(sign_in: &SignIn<'_>, code: &str, scope: &str) -> (u16, Value) {
    sign_in
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &sign_in.client_id),
            ("client_secret", &sign_in.secret),
            ("code", code),
            ("redirect_uri", &sign_in.redirect_uri),
            ("code_verifier", &sign_in.verifier),
            ("scope", scope),
        ])
        .await
}

/// Entra keeps a UPN in the case it was stored with (`preferred_username`, `upn`) and matches
/// sign-in names without case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_upn_keeps_its_stored_case() {
    let stored = format!("Helpdesk@{}", exosim::DEMO_DOMAIN);
    let emu = emulator_with(|tenant| {
        tenant.users[0].upn = stored.clone();
    })
    .await;
    let info = user(&emu, &stored).clone();
    let password = info["password"].as_str().unwrap();
    let sign_in = SignIn::new(&emu);
    // The form, with the name typed in another case.
    let response = sign_in.sign_in(&stored.to_uppercase(), password).await;
    assert_eq!(response.status(), 302);
    let (_, pairs) = location_params(&response);
    let (status, body) = sign_in
        .redeem(
            param(&pairs, "code").unwrap(),
            &sign_in.verifier,
            &sign_in.redirect_uri,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["preferred_username"],
        stored.as_str()
    );
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["preferred_username"],
        stored.as_str()
    );
    // The password grant, in lower case.
    let body = ropc_token(&emu, &stored.to_lowercase(), password).await;
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["preferred_username"],
        stored.as_str()
    );
}

/// Every place `/authorize` reflects request input escapes it: HTML-escaped in pages,
/// URL-encoded in redirects, and `state` stripped of HTML as Entra does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_authorize_reflects_input_escaped() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let evil = "\"><script>alert(1)</script>'";
    let no_markup = |html: &str, what: &str| {
        assert!(!html.contains("<script>alert"), "{what}: {html}");
        assert!(!html.contains("</script>'"), "{what}: {html}");
    };
    // login_hint and nonce on the login page.
    let mut query = sign_in.query();
    query.retain(|(k, _)| *k != "nonce" && *k != "state");
    query.push(("nonce", evil.to_owned()));
    query.push(("login_hint", evil.to_owned()));
    query.push(("state", evil.to_owned()));
    let page = sign_in.get_authorize(&query).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    no_markup(&html, "login page");
    assert!(
        html.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&#39;\""),
        "{html}"
    );
    let fields = hidden_fields(&html);
    assert!(
        fields.contains(&("nonce".into(), evil.into())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("state".into(), "\">alert(1)'".into())),
        "{fields:?}"
    );
    // A redirect URI that is not registered, quoted on the error page.
    let mut query = sign_in.query();
    query.retain(|(k, _)| *k != "redirect_uri");
    query.push(("redirect_uri", format!("https://evil.example/{evil}")));
    let page = sign_in.get_authorize(&query).await;
    assert_eq!(page.status(), 400);
    no_markup(&page.text().await.unwrap(), "error page");
    // An error redirect: state stripped, everything URL-encoded.
    for mode in ["query", "form_post"] {
        let mut query = sign_in.query();
        query.retain(|(k, _)| *k != "state");
        query.push(("state", evil.to_owned()));
        query.push(("prompt", "none".to_owned()));
        query.push(("response_mode", mode.to_owned()));
        let response = sign_in.get_authorize(&query).await;
        if mode == "query" {
            assert_eq!(response.status(), 302);
            let raw = response.headers()["location"].to_str().unwrap().to_owned();
            assert!(!raw.contains(['"', '<', '>', '\'', ' ']), "{raw}");
            let (_, pairs) = location_params(&response);
            assert_eq!(param(&pairs, "state"), Some("\">alert(1)'"));
            assert_eq!(param(&pairs, "error"), Some("login_required"));
        } else {
            assert_eq!(response.status(), 200);
            let html = response.text().await.unwrap();
            no_markup(&html, "form_post page");
            assert!(
                hidden_fields(&html).contains(&("state".into(), "\">alert(1)'".into())),
                "{html}"
            );
        }
    }
}

/// Each refusal of the token endpoint carries the AADSTS code and `error` Entra answers with
/// (learn.microsoft.com/entra/identity-platform/reference-error-codes, and recorded answers
/// where the reference is silent, cited at each `AadError` constructor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_token_errors_carry_entras_codes() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let lead = demo_upn("lead");
    let (other_verifier, _) = pkce();
    let used = sign_in.code_for(&lead).await;
    let (status, body) = sign_in
        .redeem(&used, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!(status, 200, "{body}");
    let other_port = format!("http://127.0.0.1:47914{CALLBACK_PATH}");
    // A code the public client signed in for, which the service app then presents.
    let mut public = SignIn::new(&emu);
    public.client_id = emu.ready["public_client"]["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    public.redirect_uri = "http://127.0.0.1:47915/".to_owned();
    let foreign = public.code_for(&lead).await;
    struct Case {
        what: &'static str,
        needs_code: bool,
        form: Vec<(&'static str, String)>,
        expect: (u16, &'static str, u64),
    }
    let base = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", sign_in.client_id.clone()),
            ("client_secret", sign_in.secret.clone()),
            ("code", code.to_owned()),
            ("redirect_uri", sign_in.redirect_uri.clone()),
            ("code_verifier", sign_in.verifier.clone()),
        ]
    };
    let with = |mut form: Vec<(&'static str, String)>, name: &'static str, value: &str| {
        form.retain(|(k, _)| *k != name);
        if !value.is_empty() {
            form.push((name, value.to_owned()));
        }
        form
    };
    let fresh = "FRESH";
    let cases = vec![
        Case {
            what: "unknown client",
            needs_code: false,
            form: with(
                base(fresh),
                "client_id",
                "00000000-0000-0000-0000-00000000abcd",
            ),
            expect: (400, "unauthorized_client", 700016),
        },
        Case {
            what: "bad secret",
            needs_code: false,
            form: with(base(fresh), "client_secret", "not-the-secret"),
            expect: (401, "invalid_client", 7000215),
        },
        Case {
            what: "no secret",
            needs_code: false,
            form: with(base(fresh), "client_secret", ""),
            expect: (401, "invalid_client", 7000218),
        },
        Case {
            what: "bad code",
            needs_code: false,
            form: with(base(fresh), "code", "not-a-code"),
            expect: (400, "invalid_grant", 70000),
        },
        Case {
            what: "another client's code",
            needs_code: false,
            form: base(&foreign),
            expect: (400, "invalid_grant", 70000),
        },
        Case {
            what: "reused code",
            needs_code: false,
            form: base(&used),
            expect: (400, "invalid_grant", 54005),
        },
        Case {
            what: "PKCE mismatch",
            needs_code: true,
            form: with(base(fresh), "code_verifier", &other_verifier),
            expect: (400, "invalid_grant", 501481),
        },
        Case {
            what: "no verifier",
            needs_code: true,
            form: with(base(fresh), "code_verifier", ""),
            expect: (400, "invalid_request", 900144),
        },
        Case {
            what: "other redirect URI at redemption",
            needs_code: true,
            form: with(base(fresh), "redirect_uri", &other_port),
            expect: (401, "invalid_client", 500112),
        },
        Case {
            what: "bad refresh token",
            needs_code: false,
            form: vec![
                ("grant_type", "refresh_token".to_owned()),
                ("client_id", sign_in.client_id.clone()),
                ("client_secret", sign_in.secret.clone()),
                ("refresh_token", "not-a-refresh-token".to_owned()),
            ],
            expect: (400, "invalid_grant", 70000),
        },
        Case {
            what: "unsupported grant",
            needs_code: false,
            form: with(
                base(fresh),
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code",
            ),
            expect: (400, "unsupported_grant_type", 70003),
        },
    ];
    for case in cases {
        let mut form = case.form;
        if case.needs_code {
            let code = sign_in.code_for(&lead).await;
            form = with(form, "code", &code);
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = sign_in.post_token(&pairs).await;
        let (want_status, want_error, want_code) = case.expect;
        assert_eq!(
            (
                status,
                body["error"].as_str().unwrap_or_default(),
                aadsts(&body)
            ),
            (want_status, want_error, want_code),
            "{}: {body}",
            case.what
        );
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("AADSTS{want_code}:"))),
            "{}: {body}",
            case.what
        );
    }
}

/// An id token grows with its `groups` claim; sign-out must still take it as `id_token_hint`
/// (exosim caps that parameter at 16 KiB, the others at 4 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_logout_takes_the_hint_of_a_user_in_many_groups() {
    let lead = demo_upn("lead");
    let emu = emulator_with(|tenant| {
        for i in 0..200 {
            let name = format!("Many {i}");
            tenant.groups.push(exosim::GroupConfig {
                name: name.clone(),
                object_id: uuid::Uuid::new_v4().to_string(),
            });
            let user = tenant.users.iter_mut().find(|u| u.upn == lead).unwrap();
            user.groups.push(name);
        }
    })
    .await;
    let sign_in = SignIn::new(&emu);
    let code = sign_in.code_for(&lead).await;
    let (status, body) = sign_in
        .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!(status, 200, "{body}");
    let hint = body["id_token"].as_str().unwrap().to_owned();
    assert!(hint.len() > 4096, "the hint is long: {}", hint.len());
    let endpoint = format!(
        "{}/{}/oauth2/v2.0/logout",
        emu.exosim.url(),
        emu.tenant_id()
    );
    let query = [
        ("post_logout_redirect_uri", sign_in.redirect_uri.clone()),
        ("id_token_hint", hint),
    ];
    let get = sign_in
        .http
        .get(&endpoint)
        .query(&query)
        .send()
        .await
        .unwrap();
    let post = sign_in
        .http
        .post(&endpoint)
        .form(&query)
        .send()
        .await
        .unwrap();
    for (method, response) in [("GET", get), ("POST", post)] {
        assert_eq!(response.status(), 302, "{method}");
        let (target, _) = location_params(&response);
        assert_eq!(target, sign_in.redirect_uri, "{method}");
    }
}

/// An id token is proof of a sign-in to the client, never a permission to call its API: one
/// without a nonce (as the refresh grant issues it), for the service's own client id and with
/// the user's app roles, is still refused as a Bearer token by warden serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_id_token_without_nonce_is_no_bearer_for_serve() {
    let emu = Emulator::start().await;
    let sign_in = SignIn::new(&emu);
    let code = sign_in.code_for(&demo_upn("lead")).await;
    let (status, body) = sign_in
        .redeem(&code, &sign_in.verifier, &sign_in.redirect_uri)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, refreshed) = sign_in
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &sign_in.client_id),
            ("client_secret", &sign_in.secret),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let id_token = refreshed["id_token"].as_str().unwrap();
    let id = claims(id_token);
    assert!(id.get("nonce").is_none(), "{id}");
    assert_eq!(id["aud"], sign_in.client_id.as_str());
    assert!(
        id["roles"].as_array().is_some_and(|r| !r.is_empty()),
        "{id}"
    );

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("serve.db").display());
    let service = crate::serve_api::start(&emu, dir.path(), &db, 0).await;
    let call = |token: String| {
        let http = sign_in.http.clone();
        let url = format!("{}/api/v1/tasks", service.url);
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The access token of the same answer works, so the refusal is the token's kind.
    assert_eq!(
        call(refreshed["access_token"].as_str().unwrap().to_owned()).await,
        200
    );
    assert_eq!(call(id_token.to_owned()).await, 401);
    service.shutdown().await;
}
