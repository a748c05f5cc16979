//! exosim's user sign-in over real HTTPS, as a browser and a web service would drive it (GET
//! `/authorize`, POST the login form, follow the 302, redeem the code with PKCE, check the id
//! token against the tenant's JWKS), its refusals (wrong password, wrong verifier, a code used
//! twice, a redirect URI that is not registered, the password grant for a confidential client),
//! refresh tokens, and an independent client: msal-python's PublicClientApplication gets a user
//! token with the password grant and refreshes it (tests/peers/msal_ropc_peer.py).

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
        format!("openid profile offline_access {}/.default", self.app_id_uri)
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
    let again = claims(refreshed["access_token"].as_str().unwrap());
    assert_eq!(again["oid"], access["oid"]);
    assert_eq!(again["aud"], access["aud"]);
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
    assert_eq!((status, aadsts(&body)), (400, 500112), "{body}");

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
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&sign_in.redirect_uri) && location.contains("error="),
            "{location}"
        );
        assert!(!location.contains("code="), "{location}");
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
    assert!(html.contains("&quot;&gt;&lt;script&gt;"), "{html}");
    let echoed = hidden_fields(&html);
    assert!(echoed.contains(&("state".into(), "\"><script>alert(1)</script>".into())));
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
    assert_eq!(status, 400, "{body}");
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
