//! `warden serve` under attack (issue 16's hostile-HTTP suite): the service in this process
//! against exosim, attacked over real HTTP by the people of exosim's tenant (signed in through
//! the page, or holding access tokens from exosim's password grant) and by people who are not.
//! One test per case; exosim's request log, the runs an operator sees through the API and the
//! audit trail are the witnesses.
//!
//! - `token_*`: forged, expired, early, foreign and misused tokens are 401, answered exactly as
//!   a garbage token is, and nothing runs. The claim cases are re-signed by exosim's own key
//!   ([`exosim::Exosim::sign_token`]), with a control that the unchanged claims re-signed pass.
//! - `foreign_run_*`: another person's run, through every route that names a run, is the same
//!   403 as a run that does not exist, with one audit line per try.
//! - `csrf_*`: every state-changing form and cookie API call without its token, with another
//!   session's, or with another form's, is refused and nothing is queued or decided.
//! - `return_to_*`: a sign-in asked to return off-site returns to `/` after the real callback.
//! - `body_*`: oversized, malformed, mistyped, duplicated and deeply nested bodies: 413 / 415 /
//!   400 naming what was wrong, nothing queued.
//! - `values_*`: each kind of constraint, unknown and missing parameters: 422 naming the field
//!   in the API, the error next to the field on the page, nothing queued.
//! - `flood_*`: one person over the rate gets 429 with `Retry-After`; others are unaffected.
//! - `canary_*`: the service runs with canary secrets (its Exchange credential, its own client
//!   secret, its server key, the audit key); every page and API route is driven as delegate,
//!   approver, operator and outsider, and no answer's headers or body hold a canary, a bearer
//!   token, the service's Exchange token, another person's session cookie, or anything JWT-shaped.

use crate::canaries::{Scanner, jwt_like};
use crate::serve_page::{form_action, form_csrf, inputs};
use crate::support::{
    EXCHANGE_SCOPE, Emulator, Transport, claims, operator_invoke, repo_root, runner_for,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use warden_audit::{AuditKey, AuditTrail};
use warden_serve::ratelimit::{RateLimit, RequestLimits};
use warden_serve::worker::WorkerConfig;
use warden_serve::{AuthSettings, Running, ServeConfig};

const DOMAIN: &str = "contoso.onmicrosoft.com";
/// The client secret of the app the service runs tasks as (its Exchange credential).
const APP_SECRET: &str = "CANARY~serve-app-secret~5c0ffee1d2e3~warden.test";
/// The service's own app registration's secret (it redeems sign-in codes with it).
const SERVICE_SECRET: &str = "CANARY~serve-client-secret~9a8b7c6d5e4f~warden.test";
/// The service's server key (CSRF tokens, sealed sign-in cookies).
const SERVER_KEY: [u8; 32] = *b"CANARY-server-key-0123456789abcd";
/// A second delegate of the helpdesk's tasks (same group): the closest attacker there is.
const HELPDESK2_OID: &str = "7b2d4f6a-8c0e-4a1b-9d3f-5e7a9c1b3d52";
/// An operator (the app role) who is neither delegate nor approver.
const OPERATOR_OID: &str = "8c3e5a7b-9d1f-4b2c-8e4a-6f8b0d2c4e63";
/// A second tenant with the same app registrations, people and object ids as the first.
const OTHER_TENANT: &str = "9d4f6b8c-0e2a-4c3d-9f5b-7a9c1e3d5f74";

const FINAL: &[&str] = &[
    "completed",
    "failed",
    "refused",
    "rejected",
    "expired",
    "outcome-unknown",
];

/// The demo's tasks (helpdesk by group, so `helpdesk2` is a delegate too; `lead` approves and
/// may run them), and a quota task whose parameter has a `range`.
const POLICY: &str = r#"version = 1
[roles.mailbox-reader]
[[roles.mailbox-reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]
[roles.mailbox-reader.cmdlet.parameters]
Identity = { domain = ["contoso.onmicrosoft.com"] }
RecipientTypeDetails = { one_of = ["UserMailbox", "SharedMailbox", "RoomMailbox"] }

[roles.renamer]
[[roles.renamer.cmdlet]]
name = "Set-Mailbox"
[roles.renamer.cmdlet.parameters]
Identity = { domain = ["contoso.onmicrosoft.com"] }
DisplayName = { length = [1, 64], pattern = "[\\p{L}0-9 .'-]+" }

[roles.quota-setter]
[[roles.quota-setter.cmdlet]]
name = "Set-Mailbox"
[roles.quota-setter.cmdlet.parameters]
Identity = { domain = ["contoso.onmicrosoft.com"] }
IssueWarningQuota = { range = [1, 50000] }

[[grant]]
id = "list-mailboxes"
script = "list-mailboxes.rhai"
sha256 = "{list}"
roles = ["mailbox-reader"]

[[grant]]
id = "rename-mailbox"
script = "rename-mailbox.rhai"
sha256 = "{rename}"
roles = ["mailbox-reader", "renamer", "quota-setter"]
[grant.budgets]
calls = 10
writes = 1

[[task]]
id = "list-mailboxes"
title = "List mailboxes"
description = "The tenant's mailboxes."
grant = "list-mailboxes"
approval = "never"
delegates = ["group:Helpdesk", "user:lead@contoso.onmicrosoft.com"]
[[task.parameter]]
name = "kind"
label = "Mailbox kind"
cmdlet = "Get-Mailbox"
parameter = "RecipientTypeDetails"
required = false

[[task]]
id = "rename-mailbox"
title = "Rename a mailbox"
description = "A new display name."
grant = "rename-mailbox"
approval = "writes"
approvers = ["user:lead@contoso.onmicrosoft.com"]
delegates = ["group:Helpdesk", "user:lead@contoso.onmicrosoft.com"]
[[task.parameter]]
name = "identity"
label = "Mailbox"
cmdlet = "Set-Mailbox"
parameter = "Identity"
[[task.parameter]]
name = "display_name"
label = "New display name"
cmdlet = "Set-Mailbox"
parameter = "DisplayName"

[[task]]
id = "set-quota"
title = "Set a warning quota"
description = "The quota at which a mailbox warns."
grant = "rename-mailbox"
approval = "always"
approvers = ["user:lead@contoso.onmicrosoft.com"]
delegates = ["group:Helpdesk"]
[[task.parameter]]
name = "identity"
label = "Mailbox"
cmdlet = "Set-Mailbox"
parameter = "Identity"
[[task.parameter]]
name = "quota"
label = "Warning quota"
cmdlet = "Set-Mailbox"
parameter = "IssueWarningQuota"
"#;

fn write_policy(dir: &Path) -> PathBuf {
    let scripts = repo_root().join("scripts/tasks");
    let mut text = POLICY.to_owned();
    for (name, key) in [("list-mailboxes", "{list}"), ("rename-mailbox", "{rename}")] {
        let source = std::fs::read(scripts.join(format!("{name}.rhai"))).unwrap();
        std::fs::write(dir.join(format!("{name}.rhai")), &source).unwrap();
        text = text.replace(key, &warden_policy::sha256_hex(&source));
    }
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn person(name: &str, oid: &str, groups: &[&str]) -> exosim::UserConfig {
    exosim::UserConfig {
        upn: format!("{name}@{DOMAIN}"),
        password: None,
        object_id: Some(oid.to_owned()),
        display_name: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// What a stage differs in.
#[derive(Debug, Clone, Copy)]
struct Setup {
    rate_limit: RateLimit,
    second_tenant: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            // Far above what a test sends: only the flood tests meet the limit.
            rate_limit: RateLimit {
                burst: 10_000,
                per_second: 10_000.0,
            },
            second_tenant: false,
        }
    }
}

/// An answer of the service (or of exosim, during a sign-in).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    }

    fn location(&self) -> String {
        self.header("location").unwrap_or_default()
    }

    /// Everything a client receives, as bytes to scan.
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP {}\n", self.status).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// One answer of the service, with who asked and for what.
struct Seen {
    who: String,
    what: String,
    answer: Answer,
}

/// exosim (with a helpdesk colleague and an operator added, and canary secrets), and the
/// service in this process, its files in `dir`.
struct Stage {
    emu: Emulator,
    dir: tempfile::TempDir,
    service: Running,
    base: String,
    http: reqwest::Client,
    /// The token cache of the service's Exchange session: its token is a canary.
    exchange_tokens: warden_auth::TokenProvider,
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
    /// Every answer of the service so far.
    seen: Mutex<Vec<Seen>>,
}

impl Stage {
    async fn start(setup: Setup) -> Stage {
        let emu = Emulator::start_with(|o| {
            {
                let tenant = &mut o.tenants.tenants[0];
                tenant.apps[0].secrets[0].value = Some(APP_SECRET.to_owned());
                tenant
                    .users
                    .push(person("helpdesk2", HELPDESK2_OID, &["Helpdesk"]));
                tenant.users.push(person("operator", OPERATOR_OID, &[]));
                let service = tenant.service_app.as_mut().unwrap();
                service.client_secret = Some(SERVICE_SECRET.to_owned());
                service
                    .role_assignments
                    .push(exosim::AppRoleAssignmentConfig {
                        principal: format!("operator@{DOMAIN}"),
                        role: exosim::DEMO_OPERATOR_ROLE.to_owned(),
                    });
            }
            if setup.second_tenant {
                let mut other = o.tenants.tenants[0].clone();
                other.tenant_id = OTHER_TENANT.to_owned();
                other.domain = "fabrikam.onmicrosoft.com".to_owned();
                other.display_name = Some("Fabrikam".to_owned());
                other.apps.clear();
                other.managed_identities.clear();
                if let Some(service) = other.service_app.as_mut() {
                    service.client_secret = None;
                }
                o.tenants.tenants.push(other);
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let policy = write_policy(dir.path());
        let key_path = dir.path().join("audit.key");
        let audit = AuditTrail::open(
            &dir.path().join("audit.jsonl"),
            AuditKey::load_or_create(&key_path).unwrap(),
        )
        .unwrap();
        let service_app = &emu.ready["service_app"];
        let groups = emu.ready["tenants"][0]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let (runner, exchange_tokens) = runner_for(&emu, 0, Transport::Rest);
        let database = format!("sqlite:{}", dir.path().join("serve.db").display());
        let service = warden_serve::start(ServeConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            policy,
            database,
            audit: Arc::new(audit),
            audit_key_path: key_path,
            auth: AuthSettings {
                authority: emu.ready["authority"].as_str().unwrap().parse().unwrap(),
                tenant_id: emu.tenant_id(),
                client_id: service_app["client_id"].as_str().unwrap().to_owned(),
                client_secret: service_app["client_secret"]
                    .as_str()
                    .unwrap()
                    .to_owned()
                    .into(),
                app_id_uri: service_app["app_id_uri"].as_str().unwrap().to_owned(),
                public_url: None,
                session_ttl: Duration::from_secs(3600),
                api_clients: vec![
                    emu.ready["public_client"]["client_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ],
            },
            workers: WorkerConfig {
                runner,
                call_timeout: Duration::from_secs(30),
                limits: Default::default(),
                workers: 2,
                instance: "hostile".into(),
                claims: Default::default(),
            },
            group_names: groups
                .iter()
                .map(|g| {
                    (
                        g["object_id"].as_str().unwrap().to_owned(),
                        g["name"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            // Per person as the stage says; per address always generous: every client here is
            // on 127.0.0.1, and the per-address limit has its own test (serve_web).
            rate_limit: RequestLimits {
                person: setup.rate_limit,
                address: Setup::default().rate_limit,
                ..RequestLimits::default()
            },
            body_limit: warden_serve::DEFAULT_BODY_LIMIT,
            shutdown_grace: Duration::from_secs(5),
            expiry_every: Duration::from_millis(500),
            sign_in_ca: Some(emu.exosim.ca_file().to_owned()),
            server_key: warden_serve::auth::ServerKey::from_bytes(SERVER_KEY),
        })
        .await
        .expect("the service starts");
        let ca = std::fs::read(emu.exosim.ca_file()).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Stage {
            base: service.url.clone(),
            emu,
            dir,
            service,
            http,
            exchange_tokens,
            tokens: Default::default(),
            seen: Default::default(),
        }
    }

    async fn stop(self) {
        self.service.shutdown().await;
    }

    fn user(&self, name: &str) -> &Value {
        self.emu.ready["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["upn"] == format!("{name}@{DOMAIN}"))
            .unwrap_or_else(|| panic!("exosim has no user {name}"))
    }

    fn upn(&self, name: &str) -> String {
        format!("{name}@{DOMAIN}")
    }

    /// `{app_id_uri}/.default`: the service's API.
    fn api_scope(&self) -> String {
        format!(
            "{}/.default",
            self.emu.ready["service_app"]["app_id_uri"]
                .as_str()
                .unwrap()
        )
    }

    /// exosim's password grant for `name` of tenant `tenant`, with the public client.
    async fn password_grant(&self, tenant: usize, name: &str, scope: &str) -> Value {
        let info = &self.emu.ready["tenants"][tenant];
        let user = info["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["upn"] == format!("{name}@{DOMAIN}"))
            .unwrap();
        self.http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.emu.exosim.url(),
                info["tenant_id"].as_str().unwrap()
            ))
            .form(&[
                ("grant_type", "password"),
                (
                    "client_id",
                    info["public_client"]["client_id"].as_str().unwrap(),
                ),
                ("username", user["upn"].as_str().unwrap()),
                ("password", user["password"].as_str().unwrap()),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An access token for the API, as `name` (one per person per stage).
    async fn token(&self, name: &str) -> String {
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(name) {
            return token.clone();
        }
        let answer = self.password_grant(0, name, &self.api_scope()).await;
        let token = answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token for {name}: {answer}"))
            .to_owned();
        tokens.insert(name.to_owned(), token.clone());
        token
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends `request`, keeps the answer (when it is the service's) for the canary scans.
    async fn send(&self, who: &str, what: &str, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let ours = response.url().as_str().starts_with(&self.base);
        let answer = Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        };
        if ours {
            self.seen.lock().unwrap().push(Seen {
                who: who.to_owned(),
                what: what.to_owned(),
                answer: answer.clone(),
            });
        }
        answer
    }

    fn with_token(
        request: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    async fn get(&self, who: &str, token: Option<&str>, path: &str) -> Answer {
        let request = Self::with_token(self.http.get(self.url(path)), token);
        self.send(who, &format!("GET {path}"), request).await
    }

    async fn post_json(&self, who: &str, token: Option<&str>, path: &str, body: &Value) -> Answer {
        let request = Self::with_token(self.http.post(self.url(path)), token).json(body);
        self.send(who, &format!("POST {path}"), request).await
    }

    /// A POST of exactly these bytes with this content type (none when `None`).
    async fn post_raw(
        &self,
        who: &str,
        token: Option<&str>,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut request = Self::with_token(self.http.post(self.url(path)), token).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(who, &format!("POST {path} ({content_type:?})"), request)
            .await
    }

    async fn post_form(
        &self,
        who: &str,
        token: Option<&str>,
        path: &str,
        form: &[(&str, &str)],
    ) -> Answer {
        let request = Self::with_token(self.http.post(self.url(path)), token).form(form);
        self.send(who, &format!("POST {path} (form)"), request)
            .await
    }

    /// Asks for a run as the holder of `token`; its id.
    async fn run(&self, token: &str, task: &str, parameters: Value) -> String {
        let answer = self
            .post_json(
                "fixture",
                Some(token),
                &format!("/api/v1/tasks/{task}/runs"),
                &json!({ "parameters": parameters }),
            )
            .await;
        assert_eq!(answer.status, 202, "{answer:?}");
        answer.json()["id"].as_str().unwrap().to_owned()
    }

    /// The run once its status is one of `until`.
    async fn wait(&self, token: &str, id: &str, until: &[&str]) -> Value {
        for _ in 0..300 {
            let answer = self
                .get("fixture", Some(token), &format!("/api/v1/runs/{id}"))
                .await;
            assert_eq!(answer.status, 200, "{answer:?}");
            let run = answer.json();
            if until.contains(&run["status"].as_str().unwrap()) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {id} never reached {until:?}");
    }

    /// Every run in the store, as the operator sees them.
    async fn all_runs(&self) -> Vec<Value> {
        let token = self.token("operator").await;
        let answer = self.get("fixture", Some(&token), "/api/v1/runs").await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()["runs"].as_array().unwrap().clone()
    }

    /// The audit trail's refusal lines (`serve:forbidden`) naming `upn`.
    fn refusals_of(&self, upn: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("serve:forbidden") && l.contains(upn))
            .count()
    }

    /// One of the tenant's mailboxes.
    async fn mailbox(&self) -> String {
        let found = operator_invoke(&self.emu, "Get-Mailbox", json!({"ResultSize": 1})).await;
        found[0]["PrimarySmtpAddress"].as_str().unwrap().to_owned()
    }

    /// Calls that reached Exchange, of any cmdlet.
    fn exchange_calls(&self) -> usize {
        self.emu.cmdlet_requests(|_| true)
    }

    /// Nothing was queued or sent since `runs` runs and `calls` Exchange calls (after a moment
    /// for a worker that would have picked one up).
    async fn assert_nothing_queued(&self, runs: usize, calls: usize, why: &str) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            self.all_runs().await.len(),
            runs,
            "{why}: a run was created"
        );
        assert_eq!(self.exchange_calls(), calls, "{why}: Exchange was called");
    }

    /// A person signed in through the page (the real redirect flow through exosim's login
    /// form), starting at `/signin?return_to=…`; the browser and the callback's answer.
    async fn sign_in(&self, name: &str, return_to: &str) -> (Browser<'_>, Answer) {
        let mut browser = Browser {
            stage: self,
            who: name.to_owned(),
            cookies: BTreeMap::new(),
        };
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", return_to)
            .finish();
        let started = browser.get(&format!("/signin?{query}")).await;
        assert_eq!(started.status, 302, "{started:?}");
        let authorize = started.location();
        assert!(
            authorize.starts_with(&self.emu.exosim.url()),
            "the sign-in goes to the identity provider only: {authorize}"
        );
        let redirect_uri = url::Url::parse(&authorize)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned());
        assert_eq!(
            redirect_uri.as_deref(),
            Some(format!("{}/auth/callback", self.base).as_str())
        );
        let login = browser.get(&authorize).await;
        assert_eq!(login.status, 200, "{login:?}");
        let user = self.user(name);
        let mut fields = inputs(&login.body);
        fields.retain(|(n, _)| n != "login" && n != "passwd");
        fields.push(("login".into(), user["upn"].as_str().unwrap().into()));
        fields.push(("passwd".into(), user["password"].as_str().unwrap().into()));
        let action = url::Url::parse(&authorize)
            .unwrap()
            .join(&form_action(&login.body))
            .unwrap();
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let coded = browser.post_form(action.as_str(), &fields).await;
        assert_eq!(coded.status, 302, "exosim answers the login with the code");
        let callback = coded.location();
        assert!(
            callback.starts_with(&format!("{}/auth/callback?", self.base)),
            "{callback}"
        );
        let back = browser.get(&callback).await;
        assert!(matches!(back.status, 302 | 303), "{back:?}");
        (browser, back)
    }
}

/// A browser: its cookies, no redirects followed.
struct Browser<'s> {
    stage: &'s Stage,
    who: String,
    cookies: BTreeMap<String, String>,
}

impl Browser<'_> {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, answer: &Answer) {
        for value in answer.headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.to_ascii_lowercase().contains("max-age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
    }

    /// The session cookie's value.
    fn session(&self) -> String {
        self.cookies
            .get(warden_serve::auth::SESSION_COOKIE_INSECURE)
            .cloned()
            .unwrap_or_else(|| panic!("{} has no session", self.who))
    }

    async fn send(&mut self, what: String, request: reqwest::RequestBuilder) -> Answer {
        let request = request.header("cookie", self.cookie_header());
        let answer = self.stage.send(&self.who, &what, request).await;
        self.keep_cookies(&answer);
        answer
    }

    async fn get(&mut self, path: &str) -> Answer {
        let request = self.stage.http.get(self.stage.url(path));
        self.send(format!("GET {path} (session)"), request).await
    }

    async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.stage.http.post(self.stage.url(path)).form(form);
        self.send(format!("POST {path} (session form)"), request)
            .await
    }

    /// A JSON POST with the session cookie, and `X-CSRF-Token` when given.
    async fn post_json(&mut self, path: &str, body: &Value, csrf: Option<&str>) -> Answer {
        let mut request = self.stage.http.post(self.stage.url(path)).json(body);
        if let Some(csrf) = csrf {
            request = request.header(warden_serve::auth::CSRF_HEADER, csrf);
        }
        self.send(format!("POST {path} (session JSON)"), request)
            .await
    }

    /// The page at `path` and the CSRF token of its form posting to `action`.
    async fn form_token(&mut self, path: &str, action: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, 200, "{page:?}");
        form_csrf(&page.body, action)
    }
}

// ---------------------------------------------------------------------------------------------
// Forged and misused tokens
// ---------------------------------------------------------------------------------------------

fn segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()
}

impl Stage {
    /// The claims of a real access token of `name`, to change one thing and re-sign.
    async fn real_claims(&self, name: &str) -> Map<String, Value> {
        claims(&self.token(name).await).as_object().unwrap().clone()
    }

    /// `claims` signed by exosim's token-signing key.
    fn sign(&self, claims: &Map<String, Value>) -> String {
        self.emu.exosim.sign_token(&Value::Object(claims.clone()))
    }

    /// The key id exosim signs with (its JWKS's).
    async fn kid(&self) -> String {
        header_of(&self.token("helpdesk").await)["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The tenant's JWKS key.
    async fn jwk(&self) -> Value {
        let discovery: Value = self
            .http
            .get(format!(
                "{}/.well-known/openid-configuration",
                self.emu.ready["authority"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys: Value = self
            .http
            .get(discovery["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = self.kid().await;
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap()
            .clone()
    }

    /// `claims` signed RS256 by another RSA key (app 0's certificate key), under `kid`.
    fn sign_with_another_key(&self, claims: &Map<String, Value>, kid: &str) -> String {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        let pem = std::fs::read_to_string(self.emu.app_str(0, "key_pem")).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let key = rsa::PrivateKey::from_pkcs8_der(&STANDARD.decode(body).unwrap()).unwrap();
        let der = key.to_pkcs1_der().unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
        )
        .unwrap()
    }

    /// A token the API must refuse: 401 on every API route, exactly the answer a garbage
    /// token gets (no hint of which check failed), the page sends it to sign in, and nothing
    /// is queued or sent.
    async fn assert_refused(&self, what: &str, token: &str) {
        let runs = self.all_runs().await.len();
        let calls = self.exchange_calls();
        let garbage = self
            .get("attacker", Some("not-a-token"), "/api/v1/tasks")
            .await;
        assert_eq!(garbage.status, 401, "{garbage:?}");
        for (method, path) in [
            ("GET", "/api/v1/tasks"),
            ("GET", "/api/v1/runs"),
            ("GET", "/api/v1/approvals"),
            ("POST", "/api/v1/tasks/list-mailboxes/runs"),
        ] {
            let answer = if method == "GET" {
                self.get("attacker", Some(token), path).await
            } else {
                self.post_json("attacker", Some(token), path, &json!({"parameters": {}}))
                    .await
            };
            assert_eq!(answer.status, 401, "{what}: {method} {path}: {answer:?}");
            assert_eq!(
                answer.body, garbage.body,
                "{what}: {method} {path}: the answer tells which check failed"
            );
            assert_eq!(
                answer.header("www-authenticate"),
                garbage.header("www-authenticate"),
                "{what}: {method} {path}"
            );
        }
        let page = self.get("attacker", Some(token), "/runs").await;
        assert_eq!(page.status, 303, "{what}: the page: {page:?}");
        assert!(page.location().starts_with("/signin?"), "{what}: {page:?}");
        self.assert_nothing_queued(runs, calls, what).await;
    }
}

/// One test per forged or misused token: `name(stage) { … the tokens, each with what it is }`.
macro_rules! refused_tokens {
    ($($(#[$meta:meta])* $name:ident($s:ident) $body:block)*) => {$(
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            async fn forge($s: &Stage) -> Vec<(String, String)> $body
            let stage = Stage::start(Setup { second_tenant: true, ..Setup::default() }).await;
            let forged = forge(&stage).await;
            assert!(!forged.is_empty());
            for (what, token) in &forged {
                stage.assert_refused(what, token).await;
            }
            stage.stop().await;
        }
    )*};
}

/// The control of the `token_*` cases: a real token's claims re-signed unchanged by exosim's
/// key are accepted, so each refusal below is due to the one thing the case changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_control_real_claims_re_signed_unchanged_are_accepted() {
    let stage = Stage::start(Setup::default()).await;
    let token = stage.sign(&stage.real_claims("helpdesk").await);
    let answer = stage.get("helpdesk", Some(&token), "/api/v1/tasks").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["tasks"][0]["id"], "list-mailboxes");
    let id = stage.run(&token, "list-mailboxes", json!({})).await;
    assert_eq!(stage.wait(&token, &id, FINAL).await["status"], "completed");
    stage.stop().await;
}

refused_tokens! {
    token_signed_by_another_key(s) {
        let claims = s.real_claims("helpdesk").await;
        let kid = s.kid().await;
        vec![
            ("another key under exosim's kid".into(), s.sign_with_another_key(&claims, &kid)),
            ("another key under its own kid".into(), s.sign_with_another_key(&claims, "forged-key")),
            ("another key, no kid".into(), {
                let token = s.sign_with_another_key(&claims, &kid);
                let (_, rest) = token.split_once('.').unwrap();
                format!("{}.{rest}", segment(&json!({"alg": "RS256", "typ": "JWT"})))
            }),
            ("a real token's signature on other claims".into(), {
                let real = s.token("helpdesk").await;
                let mut changed = claims.clone();
                changed.insert("oid".into(), json!(OPERATOR_OID));
                let mut parts = real.split('.');
                let header = parts.next().unwrap();
                let signature = parts.nth(1).unwrap();
                format!("{header}.{}.{signature}", segment(&Value::Object(changed)))
            }),
        ]
    }
    token_alg_none(s) {
        let real = s.token("helpdesk").await;
        let payload = real.split('.').nth(1).unwrap().to_owned();
        let signature = real.rsplit('.').next().unwrap().to_owned();
        let kid = s.kid().await;
        let mut forged = Vec::new();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = segment(&json!({"alg": alg, "typ": "JWT", "kid": kid}));
            forged.push((format!("alg {alg}, no signature"), format!("{header}.{payload}.")));
            forged.push((format!("alg {alg}, the real signature"), format!("{header}.{payload}.{signature}")));
        }
        let header = segment(&json!({"typ": "JWT", "kid": kid}));
        forged.push(("no alg".into(), format!("{header}.{payload}.{signature}")));
        forged
    }
    token_hmac_with_the_jwks_public_key_as_secret(s) {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::pkcs8::EncodePublicKey as _;
        let claims = s.real_claims("helpdesk").await;
        let jwk = s.jwk().await;
        let number = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        let public = rsa::PublicKey::new(
            rsa::BoxedUint::from_be_slice_vartime(&number("n")),
            rsa::BoxedUint::from_be_slice_vartime(&number("e")),
        )
        .unwrap();
        let pem = |label: &str, der: &[u8]| {
            let body = STANDARD.encode(der);
            let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
            format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
        };
        let spki = public.to_public_key_der().unwrap();
        let pkcs1 = public.to_pkcs1_der().unwrap();
        let secrets: Vec<(&str, Vec<u8>)> = vec![
            ("the SPKI PEM", pem("PUBLIC KEY", spki.as_bytes()).into_bytes()),
            ("the PKCS#1 PEM", pem("RSA PUBLIC KEY", pkcs1.as_bytes()).into_bytes()),
            ("the SPKI DER", spki.as_bytes().to_vec()),
            ("the JWK's JSON", jwk.to_string().into_bytes()),
            ("the modulus", number("n")),
        ];
        let kid = s.kid().await;
        let mut forged = Vec::new();
        for algorithm in [jsonwebtoken::Algorithm::HS256, jsonwebtoken::Algorithm::HS384, jsonwebtoken::Algorithm::HS512] {
            for (what, secret) in &secrets {
                let mut header = jsonwebtoken::Header::new(algorithm);
                header.kid = Some(kid.clone());
                let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret).unwrap()).unwrap();
                forged.push((format!("{algorithm:?} keyed with {what}"), token));
            }
        }
        forged
    }
    token_expired(s) {
        let mut forged = Vec::new();
        for (what, ago) in [("an hour ago", 3600), ("past the clock-skew leeway", 2 * warden_serve::auth::CLOCK_SKEW_SECONDS as i64)] {
            let mut claims = s.real_claims("helpdesk").await;
            claims.insert("exp".into(), json!(now() - ago));
            claims.insert("iat".into(), json!(now() - ago - 3600));
            claims.insert("nbf".into(), json!(now() - ago - 3600));
            forged.push((format!("expired {what}"), s.sign(&claims)));
        }
        let mut claims = s.real_claims("helpdesk").await;
        claims.remove("exp");
        forged.push(("no exp".into(), s.sign(&claims)));
        forged
    }
    token_not_yet_valid(s) {
        let mut claims = s.real_claims("helpdesk").await;
        claims.insert("nbf".into(), json!(now() + 3600));
        claims.insert("exp".into(), json!(now() + 7200));
        vec![("nbf an hour ahead".into(), s.sign(&claims))]
    }
    token_for_another_audience(s) {
        let mut forged = Vec::new();
        for (what, aud) in [
            ("another API", json!("api://someone-else")),
            ("Microsoft Graph", json!("00000003-0000-0000-c000-000000000000")),
            ("Exchange Online", json!("https://outlook.office365.com")),
            ("ours among others", json!([s.emu.ready["service_app"]["client_id"], "api://someone-else"])),
        ] {
            let mut claims = s.real_claims("helpdesk").await;
            claims.insert("aud".into(), aud);
            forged.push((format!("audience {what}"), s.sign(&claims)));
        }
        let mut claims = s.real_claims("helpdesk").await;
        claims.remove("aud");
        forged.push(("no audience".into(), s.sign(&claims)));
        // A real token exosim issued the same person for Microsoft Graph.
        let graph = s.password_grant(0, "helpdesk", "openid profile").await;
        forged.push(("a real Graph token".into(), graph["access_token"].as_str().unwrap().to_owned()));
        forged
    }
    token_from_another_issuer(s) {
        let tenant = s.emu.tenant_id();
        let mut forged = Vec::new();
        for (what, iss) in [
            ("another host", format!("https://evil.example/{tenant}/v2.0")),
            ("the v1.0 issuer on a v2.0 token", format!("https://sts.windows.net/{tenant}/")),
            ("another tenant's authority", format!("{}/{OTHER_TENANT}/v2.0", s.emu.exosim.url())),
            ("a trailing slash", format!("{}/", s.emu.ready["authority"].as_str().unwrap())),
        ] {
            let mut claims = s.real_claims("helpdesk").await;
            claims.insert("iss".into(), json!(iss));
            forged.push((format!("issuer: {what}"), s.sign(&claims)));
        }
        let mut claims = s.real_claims("helpdesk").await;
        claims.remove("iss");
        forged.push(("no issuer".into(), s.sign(&claims)));
        forged
    }
    token_of_another_tenant_id(s) {
        let mut claims = s.real_claims("helpdesk").await;
        claims.insert("tid".into(), json!(OTHER_TENANT));
        let mut none = s.real_claims("helpdesk").await;
        none.remove("tid");
        vec![("tid of another tenant".into(), s.sign(&claims)), ("no tid".into(), s.sign(&none))]
    }
    /// The same app registration, person and object id in another tenant: only `iss` and `tid`
    /// tell this real token from one of ours.
    token_from_another_tenants_app(s) {
        let answer = s.password_grant(1, "helpdesk", &s.api_scope()).await;
        let token = answer["access_token"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned();
        let theirs = claims(&token);
        assert_eq!(theirs["oid"], s.user("helpdesk")["object_id"], "the same person's object id");
        assert_eq!(theirs["aud"], s.emu.ready["service_app"]["client_id"], "the same app");
        assert_eq!(theirs["tid"], OTHER_TENANT);
        vec![("another tenant's real token".into(), token)]
    }
    token_id_token_as_access_token(s) {
        let mut forged = Vec::new();
        // The public client's real id_token (its audience is the client).
        let answer = s.password_grant(0, "helpdesk", &format!("openid profile {}", s.api_scope())).await;
        forged.push(("the public client's id_token".into(), answer["id_token"].as_str().unwrap().to_owned()));
        // The service's own id_tokens, from a code flow with its secret: with the sign-in's
        // nonce, and without one (from the refresh grant).
        let (with_nonce, refreshed) = service_id_tokens(s).await;
        assert_eq!(claims(&with_nonce)["aud"], s.emu.ready["service_app"]["client_id"]);
        assert!(claims(&refreshed).get("nonce").is_none(), "a refreshed id_token has no nonce");
        forged.push(("the service's id_token".into(), with_nonce));
        forged.push(("the service's id_token without a nonce".into(), refreshed));
        // An access token's claims with a nonce.
        let mut claims = s.real_claims("helpdesk").await;
        claims.insert("nonce".into(), json!("n-0123456789"));
        forged.push(("access claims with a nonce".into(), s.sign(&claims)));
        forged
    }
    token_without_oid(s) {
        let mut none = s.real_claims("helpdesk").await;
        none.remove("oid");
        let mut empty = s.real_claims("helpdesk").await;
        empty.insert("oid".into(), json!(""));
        let mut number = s.real_claims("helpdesk").await;
        number.insert("oid".into(), json!(7));
        vec![
            ("no oid".into(), s.sign(&none)),
            ("an empty oid".into(), s.sign(&empty)),
            ("a number for oid".into(), s.sign(&number)),
        ]
    }
    token_of_a_client_app_not_allowed(s) {
        let mut other = s.real_claims("helpdesk").await;
        other.insert("azp".into(), json!(exosim::DEMO_CLIENT_ID));
        let mut none = s.real_claims("helpdesk").await;
        none.remove("azp");
        vec![("azp of another app".into(), s.sign(&other)), ("no azp".into(), s.sign(&none))]
    }
    token_without_the_apis_permission(s) {
        let mut other = s.real_claims("helpdesk").await;
        other.insert("scp".into(), json!("User.Read Tasks.Runner"));
        let mut none = s.real_claims("helpdesk").await;
        none.remove("scp");
        none.remove("roles");
        vec![("another scope".into(), s.sign(&other)), ("no scope or role".into(), s.sign(&none))]
    }
}

/// The service's own id_tokens: the code flow with PKCE and its secret (as the service signs
/// people in), then the refresh grant.
async fn service_id_tokens(s: &Stage) -> (String, String) {
    use sha2::Digest as _;
    let service = &s.emu.ready["service_app"];
    let client_id = service["client_id"].as_str().unwrap();
    let secret = service["client_secret"].as_str().unwrap();
    let redirect_uri = exosim::DEMO_SERVICE_REDIRECT_URI;
    let verifier = "v".repeat(64);
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let tenant = format!("{}/{}", s.emu.exosim.url(), s.emu.tenant_id());
    let mut authorize = url::Url::parse(&format!("{tenant}/oauth2/v2.0/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_mode", "query")
        .append_pair("scope", "openid profile offline_access")
        .append_pair("state", "state-0123456789")
        .append_pair("nonce", "nonce-0123456789")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let login = s
        .http
        .get(authorize.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let user = s.user("helpdesk");
    let mut fields = inputs(&login);
    fields.retain(|(n, _)| n != "login" && n != "passwd");
    fields.push(("login".into(), user["upn"].as_str().unwrap().into()));
    fields.push(("passwd".into(), user["password"].as_str().unwrap().into()));
    let coded = s
        .http
        .post(authorize.join(&form_action(&login)).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(coded.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let token_endpoint = format!("{tenant}/oauth2/v2.0/token");
    let answer: Value = s
        .http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &verifier),
            ("scope", "openid profile offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let with_nonce = answer["id_token"].as_str().expect("an id_token").to_owned();
    let refreshed: Value = s
        .http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("refresh_token", answer["refresh_token"].as_str().unwrap()),
            ("scope", "openid profile offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        with_nonce,
        refreshed["id_token"]
            .as_str()
            .expect("an id_token")
            .to_owned(),
    )
}

/// Tokens under made-up key ids cost the identity provider one key fetch at most, however
/// many arrive: a forger cannot make the service hammer Entra.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flood_of_unknown_key_ids_fetches_the_keys_at_most_once() {
    let stage = Stage::start(Setup::default()).await;
    let claims = stage.real_claims("helpdesk").await;
    let signed = stage.sign_with_another_key(&claims, "made-up");
    let (_, rest) = signed.split_once('.').unwrap();
    let fetches = stage.emu.exosim.counters().jwks_requests;
    for i in 0..40 {
        let header = segment(&json!({"alg": "RS256", "typ": "JWT", "kid": format!("made-up-{i}")}));
        let token = format!("{header}.{rest}");
        let answer = stage.get("attacker", Some(&token), "/api/v1/tasks").await;
        assert_eq!(answer.status, 401);
    }
    assert!(
        stage.emu.exosim.counters().jwks_requests <= fetches + 1,
        "unknown kids made the service fetch the keys {} times",
        stage.emu.exosim.counters().jwks_requests - fetches
    );
    stage.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Other people's runs
// ---------------------------------------------------------------------------------------------

/// How a route names a run.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// `GET` this path (`{id}` replaced).
    Get(&'static str),
    /// `POST` this JSON.
    Json(&'static str, &'static str),
    /// `POST` this form.
    Form(&'static str, &'static [(&'static str, &'static str)]),
}

impl Probe {
    fn decides(self) -> bool {
        !matches!(self, Probe::Get(_))
    }

    async fn send(self, stage: &Stage, who: &str, token: &str, id: &str) -> Answer {
        match self {
            Probe::Get(path) => stage.get(who, Some(token), &path.replace("{id}", id)).await,
            Probe::Json(path, body) => {
                stage
                    .post_raw(
                        who,
                        Some(token),
                        &path.replace("{id}", id),
                        Some("application/json"),
                        body,
                    )
                    .await
            }
            Probe::Form(path, form) => {
                stage
                    .post_form(who, Some(token), &path.replace("{id}", id), form)
                    .await
            }
        }
    }
}

/// Another delegate of the same task and an outsider try helpdesk's completed read and pending
/// write through `probe` (and helpdesk their own, where it decides): each a 403 with the very
/// body a run that does not exist gets, one audit line each, and the write stays pending.
async fn foreign_run_reads_as_missing(probe: Probe) {
    let stage = Stage::start(Setup::default()).await;
    let helpdesk = stage.token("helpdesk").await;
    let read = stage.run(&helpdesk, "list-mailboxes", json!({})).await;
    stage.wait(&helpdesk, &read, FINAL).await;
    let mailbox = stage.mailbox().await;
    let write = stage
        .run(
            &helpdesk,
            "rename-mailbox",
            json!({"identity": mailbox, "display_name": "Not by you"}),
        )
        .await;
    let sets = stage.emu.requests_for("Set-Mailbox");
    let mut attackers = vec!["helpdesk2", "outsider"];
    if probe.decides() {
        // Four eyes: the requester is as foreign to the decision as anyone.
        attackers.push("helpdesk");
    }
    for attacker in attackers {
        let token = stage.token(attacker).await;
        let upn = stage.upn(attacker);
        let missing = probe
            .send(&stage, attacker, &token, &uuid::Uuid::new_v4().to_string())
            .await;
        assert_eq!(missing.status, 403, "{probe:?} as {attacker}: {missing:?}");
        let junk = probe.send(&stage, attacker, &token, "not-a-run").await;
        assert_eq!((junk.status, &junk.body), (403, &missing.body), "{probe:?}");
        let ids = if attacker == "helpdesk" {
            vec![write.as_str()]
        } else {
            vec![read.as_str(), write.as_str()]
        };
        for id in ids {
            let before = stage.refusals_of(&upn);
            let answer = probe.send(&stage, attacker, &token, id).await;
            assert_eq!(answer.status, 403, "{probe:?} as {attacker}: {answer:?}");
            assert_eq!(
                answer.body, missing.body,
                "{probe:?} as {attacker}: a foreign run must read exactly like a missing one"
            );
            assert_eq!(
                answer.header("content-type"),
                missing.header("content-type")
            );
            assert_eq!(
                stage.refusals_of(&upn),
                before + 1,
                "{probe:?} as {attacker}: one audit line for the refusal"
            );
        }
    }
    let run = stage.wait(&helpdesk, &write, &["pending-approval"]).await;
    assert!(run["decided_by"].is_null(), "{run}");
    assert_eq!(stage.emu.requests_for("Set-Mailbox"), sets);
    stage.stop().await;
}

macro_rules! foreign_run_cases {
    ($($name:ident: $probe:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            foreign_run_reads_as_missing($probe).await
        }
    )*};
}

foreign_run_cases! {
    foreign_run_api_get: Probe::Get("/api/v1/runs/{id}");
    foreign_run_api_logs: Probe::Get("/api/v1/runs/{id}/logs");
    foreign_run_page: Probe::Get("/runs/{id}");
    foreign_run_page_events: Probe::Get("/runs/{id}/events");
    foreign_run_results_json: Probe::Get("/runs/{id}/results.json");
    foreign_run_results_csv: Probe::Get("/runs/{id}/results.csv");
    foreign_run_api_approve: Probe::Json("/api/v1/runs/{id}/approve", r#"{"comment": "mine now"}"#);
    foreign_run_api_reject: Probe::Json("/api/v1/runs/{id}/reject", r#"{"comment": "no"}"#);
    foreign_run_page_approve: Probe::Form("/runs/{id}/decide", &[("decision", "approve"), ("comment", "mine now")]);
    foreign_run_page_reject: Probe::Form("/runs/{id}/decide", &[("decision", "reject"), ("comment", "no")]);
}

/// Another person's runs are in none of their lists (API and page); the operator sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_runs_are_in_no_list_of_another_person() {
    let stage = Stage::start(Setup::default()).await;
    let helpdesk = stage.token("helpdesk").await;
    let read = stage.run(&helpdesk, "list-mailboxes", json!({})).await;
    stage.wait(&helpdesk, &read, FINAL).await;
    let write = stage
        .run(
            &helpdesk,
            "rename-mailbox",
            json!({"identity": stage.mailbox().await, "display_name": "Listed"}),
        )
        .await;
    for attacker in ["helpdesk2", "outsider"] {
        let token = stage.token(attacker).await;
        for path in [
            "/api/v1/runs",
            "/api/v1/approvals",
            "/runs",
            "/approvals",
            "/",
        ] {
            let answer = stage.get(attacker, Some(&token), path).await;
            assert_eq!(answer.status, 200, "{attacker} {path}: {answer:?}");
            for id in [&read, &write] {
                assert!(
                    !answer.body.contains(id.as_str()),
                    "{attacker} sees {id} at {path}"
                );
            }
        }
    }
    let ids: Vec<Value> = stage
        .all_runs()
        .await
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert!(
        ids.contains(&json!(read)) && ids.contains(&json!(write)),
        "{ids:?}"
    );
    stage.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CSRF
// ---------------------------------------------------------------------------------------------

/// The task form: no token, another session's, this session's for other forms, garbage: each
/// refused and nothing queued; the form's own token runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_task_form() {
    let stage = Stage::start(Setup::default()).await;
    let (mut helpdesk, _) = stage.sign_in("helpdesk", "/").await;
    let (mut colleague, _) = stage.sign_in("helpdesk2", "/").await;
    let action = "/tasks/list-mailboxes";
    let own = helpdesk.form_token(action, action).await;
    let theirs = colleague.form_token(action, action).await;
    let signout = helpdesk.form_token(action, "/signout").await;
    let rename = helpdesk
        .form_token("/tasks/rename-mailbox", "/tasks/rename-mailbox")
        .await;
    let quota = helpdesk
        .form_token("/tasks/set-quota", "/tasks/set-quota")
        .await;
    let runs = stage.all_runs().await.len();
    let calls = stage.exchange_calls();
    for (what, token) in [
        ("no token", None),
        ("an empty token", Some("")),
        ("another session's token", Some(theirs.as_str())),
        ("the sign-out form's token", Some(signout.as_str())),
        ("another task's form token", Some(rename.as_str())),
        ("a third form's token", Some(quota.as_str())),
        (
            "garbage",
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
    ] {
        let mut form = vec![("kind", "UserMailbox")];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let answer = helpdesk.post_form(action, &form).await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
    }
    stage
        .assert_nothing_queued(runs, calls, "a forged form post")
        .await;
    let ran = helpdesk
        .post_form(action, &[("csrf", &own), ("kind", "UserMailbox")])
        .await;
    assert_eq!(ran.status, 303, "the form's own token: {ran:?}");
    assert_eq!(stage.all_runs().await.len(), runs + 1);
    stage.stop().await;
}

/// The decision form: the approver's other session, another run's form, the approver's other
/// forms: refused, the run still waits; its own token decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_decision_form() {
    let stage = Stage::start(Setup::default()).await;
    let helpdesk = stage.token("helpdesk").await;
    let mailbox = stage.mailbox().await;
    let one = stage
        .run(
            &helpdesk,
            "rename-mailbox",
            json!({"identity": mailbox, "display_name": "One"}),
        )
        .await;
    let two = stage
        .run(
            &helpdesk,
            "rename-mailbox",
            json!({"identity": mailbox, "display_name": "Two"}),
        )
        .await;
    let (mut lead, _) = stage.sign_in("lead", "/").await;
    let (mut lead_elsewhere, _) = stage.sign_in("lead", "/").await;
    let action = format!("/runs/{one}/decide");
    let page = format!("/runs/{one}");
    let own = lead.form_token(&page, &action).await;
    let other_session = lead_elsewhere.form_token(&page, &action).await;
    let other_run = lead
        .form_token(&format!("/runs/{two}"), &format!("/runs/{two}/decide"))
        .await;
    let signout = lead.form_token(&page, "/signout").await;
    let task_form = lead
        .form_token("/tasks/list-mailboxes", "/tasks/list-mailboxes")
        .await;
    let sets = stage.emu.requests_for("Set-Mailbox");
    for (what, token) in [
        ("no token", None),
        (
            "the approver's other session's token",
            Some(other_session.as_str()),
        ),
        ("another run's decision token", Some(other_run.as_str())),
        ("the sign-out form's token", Some(signout.as_str())),
        ("a task form's token", Some(task_form.as_str())),
    ] {
        let mut form = vec![("decision", "approve"), ("comment", "forged")];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let answer = lead.post_form(&action, &form).await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = stage.wait(&helpdesk, &one, &["pending-approval"]).await;
    assert!(run["decided_by"].is_null(), "{run}");
    assert_eq!(stage.emu.requests_for("Set-Mailbox"), sets);
    let decided = lead
        .post_form(
            &action,
            &[("csrf", &own), ("decision", "reject"), ("comment", "no")],
        )
        .await;
    assert_eq!(decided.status, 303, "{decided:?}");
    assert_eq!(
        stage.wait(&helpdesk, &one, FINAL).await["status"],
        "rejected"
    );
    stage.stop().await;
}

/// Sign-out: without its token, with another session's or another form's, the session lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_sign_out() {
    let stage = Stage::start(Setup::default()).await;
    let (mut helpdesk, _) = stage.sign_in("helpdesk", "/").await;
    let (mut colleague, _) = stage.sign_in("helpdesk2", "/").await;
    let own = helpdesk.form_token("/", "/signout").await;
    let theirs = colleague.form_token("/", "/signout").await;
    let task_form = helpdesk
        .form_token("/tasks/list-mailboxes", "/tasks/list-mailboxes")
        .await;
    for (what, token) in [
        ("no token", None),
        ("another session's token", Some(theirs.as_str())),
        ("a task form's token", Some(task_form.as_str())),
    ] {
        let mut form = Vec::new();
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let answer = helpdesk.post_form("/signout", &form).await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
        assert_eq!(
            helpdesk.get("/runs").await.status,
            200,
            "{what}: the session ended"
        );
    }
    let out = helpdesk.post_form("/signout", &[("csrf", &own)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(helpdesk.get("/runs").await.status, 303, "signed out");
    stage.stop().await;
}

/// The API with the session cookie instead of a bearer token: a state-changing call needs the
/// token for its own path in `X-CSRF-Token`; a form's token, another session's, or none is
/// refused and nothing is queued or decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_api_call_with_the_session_cookie() {
    let stage = Stage::start(Setup::default()).await;
    let helpdesk_token = stage.token("helpdesk").await;
    let pending = stage
        .run(
            &helpdesk_token,
            "rename-mailbox",
            json!({"identity": stage.mailbox().await, "display_name": "Cookie"}),
        )
        .await;
    let (mut helpdesk, _) = stage.sign_in("helpdesk", "/").await;
    let (mut colleague, _) = stage.sign_in("helpdesk2", "/").await;
    let (mut lead, _) = stage.sign_in("lead", "/").await;
    let form = helpdesk
        .form_token("/tasks/list-mailboxes", "/tasks/list-mailboxes")
        .await;
    let theirs = colleague
        .form_token("/tasks/list-mailboxes", "/tasks/list-mailboxes")
        .await;
    let decide_form = lead
        .form_token(
            &format!("/runs/{pending}"),
            &format!("/runs/{pending}/decide"),
        )
        .await;
    let runs = stage.all_runs().await.len();
    let calls = stage.exchange_calls();
    for (what, token) in [
        ("no token", None),
        ("the form's token", Some(form.as_str())),
        ("another session's token", Some(theirs.as_str())),
    ] {
        let answer = helpdesk
            .post_json(
                "/api/v1/tasks/list-mailboxes/runs",
                &json!({"parameters": {}}),
                token,
            )
            .await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
    }
    for (what, token) in [
        ("no token", None),
        ("the decision form's token", Some(decide_form.as_str())),
    ] {
        let answer = lead
            .post_json(
                &format!("/api/v1/runs/{pending}/approve"),
                &json!({"comment": "x"}),
                token,
            )
            .await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
    }
    stage
        .assert_nothing_queued(runs, calls, "a cookie API call")
        .await;
    assert_eq!(
        stage
            .wait(&helpdesk_token, &pending, &["pending-approval"])
            .await["status"],
        "pending-approval"
    );
    // Reading needs no token.
    assert_eq!(helpdesk.get("/api/v1/tasks").await.status, 200);
    stage.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The sign-in's return path
// ---------------------------------------------------------------------------------------------

/// A sign-in asked to return to `return_to` ends, after exosim's real login and the callback,
/// on this service at `expected`.
async fn sign_in_returns_to(return_to: &str, expected: &str) {
    let stage = Stage::start(Setup::default()).await;
    let (mut browser, back) = stage.sign_in("helpdesk", return_to).await;
    let location = back.location();
    assert_eq!(location, expected, "{return_to:?}");
    let resolved = url::Url::parse(&stage.base)
        .unwrap()
        .join(&location)
        .unwrap();
    assert_eq!(
        resolved.origin(),
        url::Url::parse(&stage.base).unwrap().origin(),
        "{return_to:?} left the service"
    );
    assert_eq!(browser.get(&location).await.status, 200, "signed in");
    stage.stop().await;
}

macro_rules! return_to_cases {
    ($($name:ident: $return_to:expr => $expected:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            sign_in_returns_to($return_to, $expected).await
        }
    )*};
}

return_to_cases! {
    return_to_a_local_path_is_kept: "/runs?view=mine" => "/runs?view=mine";
    return_to_another_host: "https://evil.example/" => "/";
    return_to_scheme_relative: "//evil.example/runs" => "/";
    return_to_backslash: "/\\evil.example" => "/";
    return_to_tab_inside_the_slashes: "/\t/evil.example" => "/";
    return_to_percent_encoded_slashes: "/%2F%2Fevil.example" => "/";
    return_to_double_encoded_slashes: "/%252F%252Fevil.example" => "/";
    return_to_javascript: "javascript:alert(document.cookie)" => "/";
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// A refused body: `status`, and an error naming what was wrong (any of `names`).
fn assert_bad_body(what: &str, answer: &Answer, status: u16, names: &[&str]) {
    assert_eq!(answer.status, status, "{what}: {answer:?}");
    let error = answer.json()["error"]
        .as_str()
        .unwrap_or(&answer.body)
        .to_lowercase();
    assert!(
        names.iter().any(|n| error.contains(&n.to_lowercase())),
        "{what}: the error does not say what was wrong: {error}"
    );
}

/// One test per kind of bad body: `name(stage, token) { … }`, token being the delegate's; each
/// ends with nothing queued and nothing sent.
macro_rules! body_cases {
    ($($name:ident($s:ident, $token:ident) $body:block)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            async fn case($s: &Stage, $token: String) $body
            let stage = Stage::start(Setup::default()).await;
            let token = stage.token("helpdesk").await;
            let runs = stage.all_runs().await.len();
            let calls = stage.exchange_calls();
            case(&stage, token).await;
            stage.assert_nothing_queued(runs, calls, stringify!($name)).await;
            stage.stop().await;
        }
    )*};
}

const RUNS: &str = "/api/v1/tasks/list-mailboxes/runs";

body_cases! {
    body_api_json_over_the_limit(s, token) {
        let body = json!({"parameters": {"kind": "x".repeat(warden_serve::DEFAULT_BODY_LIMIT + 1)}});
        let answer = s.post_json("helpdesk", Some(&token), RUNS, &body).await;
        assert_bad_body("JSON over the limit", &answer, 413, &["limit", "too large"]);
    }
    body_form_over_the_limit(s, token) {
        let kind = "x".repeat(warden_serve::DEFAULT_BODY_LIMIT + 1);
        let answer = s.post_form("helpdesk", Some(&token), "/tasks/list-mailboxes", &[("kind", &kind)]).await;
        assert_eq!(answer.status, 413, "{answer:?}");
        assert!(answer.body.to_lowercase().contains("limit"), "{answer:?}");
    }
    body_malformed_json(s, token) {
        for text in [r#"{"parameters": {"#, r#"{"parameters": {"kind": "UserMailbox",}}"#, "parameters=kind", "", r#"{"parameters": {}} trailing"#] {
            let answer = s.post_raw("helpdesk", Some(&token), RUNS, Some("application/json"), text.to_owned()).await;
            assert_bad_body(text, &answer, 400, &["json", "eof", "expected", "trailing"]);
        }
    }
    body_wrong_content_type(s, token) {
        for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
            let answer = s.post_raw("helpdesk", Some(&token), RUNS, content_type, r#"{"parameters": {}}"#).await;
            // 415 Unsupported Media Type: the status HTTP has for it, naming the header.
            assert_bad_body(&format!("{content_type:?}"), &answer, 415, &["content-type"]);
        }
    }
    body_duplicate_keys(s, token) {
        for (text, names) in [
            (r#"{"parameters": {}, "parameters": {"kind": "UserMailbox"}}"#, &["duplicate field", "parameters"][..]),
            (r#"{"parameters": {"kind": "UserMailbox", "kind": "EquipmentMailbox"}}"#, &["given twice"][..]),
            (r#"{"parameters": {"kind": "EquipmentMailbox", "kind": "UserMailbox"}}"#, &["given twice"][..]),
        ] {
            let answer = s.post_raw("helpdesk", Some(&token), RUNS, Some("application/json"), text).await;
            assert_bad_body(text, &answer, 400, names);
        }
    }
    body_deeply_nested_json(s, token) {
        let depth = 10_000;
        let text = format!(r#"{{"parameters": {{"kind": {}{}}}}}"#, "[".repeat(depth), "]".repeat(depth));
        let answer = s.post_raw("helpdesk", Some(&token), RUNS, Some("application/json"), text).await;
        assert_bad_body("10,000 levels", &answer, 400, &["recursion limit"]);
    }
    body_unknown_and_mistyped_fields(s, token) {
        for (text, names) in [
            (r#"{"parameters": {}, "run_as": "lead@contoso.onmicrosoft.com"}"#, &["unknown field", "run_as"][..]),
            (r#"{"parameters": {}, "approved_by": {"oid": "x"}}"#, &["unknown field"][..]),
            (r#"{"parameters": "kind=UserMailbox"}"#, &["invalid type", "object"][..]),
            (r#"{"parameters": ["UserMailbox"]}"#, &["invalid type", "object"][..]),
            (r#"["parameters"]"#, &["invalid type"][..]),
        ] {
            let answer = s.post_raw("helpdesk", Some(&token), RUNS, Some("application/json"), text).await;
            assert_bad_body(text, &answer, 400, names);
        }
    }
}

/// A decision's body with its field twice: 400, and the run still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_duplicate_keys_in_a_decision() {
    let stage = Stage::start(Setup::default()).await;
    let helpdesk = stage.token("helpdesk").await;
    let lead = stage.token("lead").await;
    let pending = stage
        .run(
            &helpdesk,
            "rename-mailbox",
            json!({"identity": stage.mailbox().await, "display_name": "Twice"}),
        )
        .await;
    for verb in ["approve", "reject"] {
        let answer = stage
            .post_raw(
                "lead",
                Some(&lead),
                &format!("/api/v1/runs/{pending}/{verb}"),
                Some("application/json"),
                r#"{"comment": "fine", "comment": "not fine"}"#,
            )
            .await;
        assert_bad_body(verb, &answer, 400, &["duplicate field"]);
    }
    let run = stage.wait(&helpdesk, &pending, &["pending-approval"]).await;
    assert!(run["decided_by"].is_null(), "{run}");
    stage.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Values outside the policy
// ---------------------------------------------------------------------------------------------

/// Each value set is refused before anything is queued: 422 with `field` named in the API,
/// and (`page`) the form again with the error next to that field.
async fn values_refused(task: &str, field: &str, page: bool, values: Vec<Value>) {
    let stage = Stage::start(Setup::default()).await;
    let token = stage.token("helpdesk").await;
    let mailbox = stage.mailbox().await;
    let runs = stage.all_runs().await.len();
    let calls = stage.exchange_calls();
    for mut parameters in values {
        if let Some(identity) = parameters.get_mut("identity")
            && *identity == "MAILBOX"
        {
            *identity = json!(mailbox);
        }
        let answer = stage
            .post_json(
                "helpdesk",
                Some(&token),
                &format!("/api/v1/tasks/{task}/runs"),
                &json!({ "parameters": parameters }),
            )
            .await;
        assert_eq!(answer.status, 422, "{parameters}: {answer:?}");
        let body = answer.json();
        let named: Vec<&str> = body["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("no fields: {body}"))
            .iter()
            .map(|f| f["parameter"].as_str().unwrap())
            .collect();
        assert!(
            named.contains(&field),
            "{parameters}: {field} is not named: {body}"
        );
        if !page {
            continue;
        }
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        // A form cannot send null: the field is left out.
        let form: Vec<(String, String)> = parameters
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), text(v)))
            .collect();
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let answer = stage
            .post_form("helpdesk", Some(&token), &format!("/tasks/{task}"), &form)
            .await;
        assert_eq!(answer.status, 422, "the page, {parameters}: {answer:?}");
        // The message sits right after the field, which points at it.
        let error_id = format!("{field}-error");
        let field_at = answer
            .body
            .find(&format!("name=\"{field}\""))
            .unwrap_or_else(|| panic!("no field {field}: {}", answer.body));
        let error_at = answer
            .body
            .find(&format!("id=\"{error_id}\""))
            .unwrap_or_else(|| panic!("no error for {field}: {}", answer.body));
        assert!(error_at > field_at, "the error comes after its field");
        let between = &answer.body[field_at..error_at];
        assert!(
            between.contains(&format!("aria-describedby=\"{error_id}\""))
                && !between.contains("class=\"field\""),
            "the error is next to its field: {between}"
        );
    }
    stage
        .assert_nothing_queued(runs, calls, "values outside the policy")
        .await;
    stage.stop().await;
}

macro_rules! values_cases {
    ($($name:ident: $task:literal, $field:literal, page: $page:expr, [$($values:tt)*];)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            values_refused($task, $field, $page, vec![$($values)*]).await
        }
    )*};
}

values_cases! {
    values_one_of: "list-mailboxes", "kind", page: true, [
        json!({"kind": "EquipmentMailbox"}),
        json!({"kind": "usermailbox; Remove-Mailbox"}),
        json!({"kind": "UserMailbox,SharedMailbox"}),
    ];
    values_range: "set-quota", "quota", page: true, [
        json!({"identity": "MAILBOX", "quota": 0}),
        json!({"identity": "MAILBOX", "quota": 50001}),
        json!({"identity": "MAILBOX", "quota": -1}),
        json!({"identity": "MAILBOX", "quota": "12abc"}),
        json!({"identity": "MAILBOX", "quota": 1.5}),
        json!({"identity": "MAILBOX", "quota": 99999999999999999999u128.to_string()}),
    ];
    values_length: "rename-mailbox", "display_name", page: true, [
        json!({"identity": "MAILBOX", "display_name": "x".repeat(65)}),
        json!({"identity": "MAILBOX", "display_name": ""}),
    ];
    values_pattern: "rename-mailbox", "display_name", page: true, [
        json!({"identity": "MAILBOX", "display_name": "<script>alert(1)</script>"}),
        json!({"identity": "MAILBOX", "display_name": "a; Remove-Mailbox x"}),
        json!({"identity": "MAILBOX", "display_name": "line\nbreak"}),
    ];
    values_domain: "rename-mailbox", "identity", page: true, [
        json!({"identity": "someone@fabrikam.com", "display_name": "Fine"}),
        json!({"identity": "someone@contoso.onmicrosoft.com.evil.example", "display_name": "Fine"}),
        json!({"identity": "contoso.onmicrosoft.com", "display_name": "Fine"}),
    ];
    values_of_the_wrong_type: "list-mailboxes", "kind", page: false, [
        json!({"kind": ["UserMailbox"]}),
        json!({"kind": {"value": "UserMailbox"}}),
        json!({"kind": true}),
        json!({"kind": 5}),
    ];
    values_unknown_parameter: "list-mailboxes", "Identity", page: false, [
        json!({"kind": "UserMailbox", "Identity": "admin@contoso.onmicrosoft.com"}),
        json!({"Identity": "admin@contoso.onmicrosoft.com"}),
    ];
    values_missing_required: "rename-mailbox", "display_name", page: true, [
        json!({"identity": "MAILBOX"}),
        json!({"identity": "MAILBOX", "display_name": null}),
    ];
}

// ---------------------------------------------------------------------------------------------
// Floods
// ---------------------------------------------------------------------------------------------

/// Five at once, then one every 20 seconds: no test here waits that long.
const FLOOD_LIMIT: RateLimit = RateLimit {
    burst: 5,
    per_second: 0.05,
};

fn assert_too_many(what: &str, answer: &Answer) {
    assert_eq!(answer.status, 429, "{what}: {answer:?}");
    let wait: u64 = answer
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After: {answer:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After is not whole seconds: {answer:?}"));
    assert!((1..=60).contains(&wait), "{what}: Retry-After {wait}");
}

/// One person over the rate on the API gets 429 with `Retry-After`; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_api_reads() {
    let stage = Stage::start(Setup {
        rate_limit: FLOOD_LIMIT,
        ..Setup::default()
    })
    .await;
    let flooder = stage.token("helpdesk").await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let answer = stage.get("helpdesk", Some(&flooder), "/api/v1/tasks").await;
        if answer.status == 429 {
            assert_too_many("an API read", &answer);
        }
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    for other in ["helpdesk2", "lead", "outsider"] {
        let token = stage.token(other).await;
        assert_eq!(
            stage.get(other, Some(&token), "/api/v1/tasks").await.status,
            200,
            "{other}"
        );
    }
    stage.stop().await;
}

/// Asking for runs over the rate: 429, and only the runs within it exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_run_requests() {
    let stage = Stage::start(Setup {
        rate_limit: FLOOD_LIMIT,
        ..Setup::default()
    })
    .await;
    let flooder = stage.token("helpdesk").await;
    let mut accepted = 0;
    for _ in 0..10 {
        let answer = stage
            .post_json("helpdesk", Some(&flooder), RUNS, &json!({"parameters": {}}))
            .await;
        match answer.status {
            202 => accepted += 1,
            _ => assert_too_many("a run request", &answer),
        }
    }
    assert_eq!(accepted, 5);
    // The operator has a bucket of their own (one read here).
    assert_eq!(stage.all_runs().await.len(), 5);
    stage.stop().await;
}

/// The page over the rate: every page, the front page included, answers 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_page_requests() {
    let stage = Stage::start(Setup {
        rate_limit: FLOOD_LIMIT,
        ..Setup::default()
    })
    .await;
    let flooder = stage.token("helpdesk").await;
    for _ in 0..5 {
        assert_eq!(
            stage.get("helpdesk", Some(&flooder), "/runs").await.status,
            200
        );
    }
    for path in [
        "/runs",
        "/",
        "/tasks/list-mailboxes",
        "/approvals",
        "/audit",
        "/api/v1/runs",
    ] {
        let answer = stage.get("helpdesk", Some(&flooder), path).await;
        assert_too_many(path, &answer);
    }
    let lead = stage.token("lead").await;
    assert_eq!(stage.get("lead", Some(&lead), "/").await.status, 200);
    stage.stop().await;
}

/// Forged tokens naming a person spend nothing of that person's allowance: the limit applies
/// only to callers who proved who they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_forged_tokens_spends_nothing_of_the_victims_rate() {
    let stage = Stage::start(Setup {
        rate_limit: FLOOD_LIMIT,
        ..Setup::default()
    })
    .await;
    let claims = stage.real_claims("helpdesk").await;
    let forged = stage.sign_with_another_key(&claims, &stage.kid().await);
    for _ in 0..20 {
        assert_eq!(
            stage
                .get("attacker", Some(&forged), "/api/v1/tasks")
                .await
                .status,
            401
        );
    }
    let helpdesk = stage.token("helpdesk").await;
    for _ in 0..5 {
        assert_eq!(
            stage
                .get("helpdesk", Some(&helpdesk), "/api/v1/tasks")
                .await
                .status,
            200
        );
    }
    stage.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Canaries
// ---------------------------------------------------------------------------------------------

/// The people of the canary scans: delegate, approver (also a delegate), operator, outsider.
const PEOPLE: [&str; 4] = ["helpdesk", "lead", "operator", "outsider"];

/// Runs in every state an answer can show: completed, pending, rejected, failed.
struct Fixtures {
    completed: String,
    pending: String,
    pending_too: String,
    rejected: String,
    failed: String,
}

async fn fixtures(stage: &Stage) -> Fixtures {
    let helpdesk = stage.token("helpdesk").await;
    let lead = stage.token("lead").await;
    let mailbox = stage.mailbox().await;
    let rename = |name: &str| json!({"identity": mailbox, "display_name": name});
    let pending = stage
        .run(&helpdesk, "rename-mailbox", rename("Pending"))
        .await;
    let pending_too = stage
        .run(&helpdesk, "rename-mailbox", rename("Pending too"))
        .await;
    let rejected = stage
        .run(&helpdesk, "rename-mailbox", rename("Rejected"))
        .await;
    let answer = stage
        .post_json(
            "fixture",
            Some(&lead),
            &format!("/api/v1/runs/{rejected}/reject"),
            &json!({"comment": "no"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // Exchange refuses the service's token for a while: the run fails with Exchange's error.
    stage
        .emu
        .exosim
        .exchange_faults()
        .push_n(20, exosim::ExchangeFault::Unauthorized);
    let failed = stage.run(&helpdesk, "list-mailboxes", json!({})).await;
    let run = stage.wait(&helpdesk, &failed, FINAL).await;
    stage.emu.exosim.exchange_faults().clear();
    assert!(
        run["status"] == "failed" && run["error"].is_string(),
        "{run}"
    );
    // After the failure, so the token the service holds now is the one it last used.
    let completed = stage
        .run(&helpdesk, "list-mailboxes", json!({"kind": "UserMailbox"}))
        .await;
    assert_eq!(
        stage.wait(&helpdesk, &completed, FINAL).await["status"],
        "completed"
    );
    Fixtures {
        completed,
        pending,
        pending_too,
        rejected,
        failed,
    }
}

/// Every page and API route, as `who`: with their session (forms with their tokens) and with
/// their bearer token.
async fn drive_everything(stage: &Stage, browser: &mut Browser<'_>, token: &str, f: &Fixtures) {
    let who = browser.who.clone();
    let runs = [
        &f.completed,
        &f.pending,
        &f.pending_too,
        &f.rejected,
        &f.failed,
    ];
    let mut paths: Vec<String> = [
        "/",
        "/tasks/list-mailboxes",
        "/tasks/rename-mailbox",
        "/tasks/set-quota",
        "/runs",
        "/approvals",
        "/audit",
        "/static/app.js",
        "/static/app.css",
        "/api/v1/openapi.json",
        "/api/v1/tasks",
        "/api/v1/runs",
        "/api/v1/approvals",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    for id in runs {
        for path in [
            "/runs/{id}",
            "/runs/{id}/results.json",
            "/runs/{id}/results.csv",
            "/api/v1/runs/{id}",
            "/api/v1/runs/{id}/logs",
        ] {
            paths.push(path.replace("{id}", id));
        }
    }
    // The live stream of each finished run (a waiting run's stream stays open).
    for id in [&f.completed, &f.rejected, &f.failed] {
        paths.push(format!("/runs/{id}/events"));
    }
    for path in &paths {
        browser.get(path).await;
        stage.get(&who, Some(token), path).await;
    }
    // Asking for runs: by the form (with its token), by the API, with good and bad values.
    let page = browser.get("/tasks/list-mailboxes").await;
    if page.status == 200 {
        let csrf = form_csrf(&page.body, "/tasks/list-mailboxes");
        let ran = browser
            .post_form(
                "/tasks/list-mailboxes",
                &[("csrf", &csrf), ("kind", "SharedMailbox")],
            )
            .await;
        assert_eq!(ran.status, 303, "{who}: {ran:?}");
        let run_page = ran.location();
        for _ in 0..100 {
            if browser
                .get(&run_page)
                .await
                .body
                .contains("data-status=\"completed\"")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser.get(&format!("{run_page}/events")).await;
        browser.get(&format!("{run_page}/results.csv")).await;
        browser
            .post_form(
                "/tasks/list-mailboxes",
                &[("csrf", &csrf), ("kind", "EquipmentMailbox")],
            )
            .await;
    }
    for parameters in [
        json!({"kind": "RoomMailbox"}),
        json!({"kind": "EquipmentMailbox"}),
    ] {
        stage
            .post_json(&who, Some(token), RUNS, &json!({"parameters": parameters}))
            .await;
    }
    // Deciding: the approver on the page and through the API; everyone else tries.
    let page = browser.get(&format!("/runs/{}", f.pending)).await;
    if page.body.contains("/decide\"") {
        let csrf = form_csrf(&page.body, &format!("/runs/{}/decide", f.pending));
        let decided = browser
            .post_form(
                &format!("/runs/{}/decide", f.pending),
                &[("csrf", &csrf), ("decision", "approve"), ("comment", "ok")],
            )
            .await;
        assert_eq!(decided.status, 303, "{who}: {decided:?}");
    }
    stage
        .post_json(
            &who,
            Some(token),
            &format!("/api/v1/runs/{}/reject", f.pending_too),
            &json!({"comment": "no"}),
        )
        .await;
    stage
        .post_json(
            &who,
            Some(token),
            &format!("/api/v1/runs/{}/approve", f.rejected),
            &json!({"comment": "again"}),
        )
        .await;
}

/// Everything the service answered `who` holds no canary: not its secrets, not any bearer
/// token, not the Exchange token, not another person's session cookie, nothing JWT-shaped.
async fn assert_no_canary_reached(stage: &Stage, who: &str, sessions: &BTreeMap<String, String>) {
    let mut scanner = Scanner::new();
    scanner.canary("the Exchange app's client secret", APP_SECRET.as_bytes());
    scanner.canary("the service's client secret", SERVICE_SECRET.as_bytes());
    scanner.canary("the server key", &SERVER_KEY);
    let audit_key = std::fs::read(stage.dir.path().join("audit.key")).unwrap();
    scanner.canary("the audit key", &audit_key);
    let asked = stage.emu.token_requests();
    let exchange = stage
        .exchange_tokens
        .get_token(EXCHANGE_SCOPE)
        .await
        .unwrap();
    let exchange = exchange.expose().to_owned();
    assert_eq!(
        stage.emu.token_requests(),
        asked,
        "the Exchange token of the scan is the one the service holds (from its cache)"
    );
    let mut tokens = vec![("the service's Exchange token".to_owned(), exchange)];
    for (name, token) in stage.tokens.lock().await.iter() {
        tokens.push((format!("{name}'s bearer token"), token.clone()));
    }
    for (what, token) in &tokens {
        scanner.canary(what, token.as_bytes());
        scanner.canary(
            &format!("{what}'s signature"),
            token.rsplit('.').next().unwrap().as_bytes(),
        );
    }
    for (name, cookie) in sessions {
        if name != who {
            scanner.canary(&format!("{name}'s session cookie"), cookie.as_bytes());
        }
    }
    // Controls: each kind of canary is found where it would leak.
    assert!(
        !scanner
            .find(format!("x-echo: {APP_SECRET}").as_bytes())
            .is_empty()
    );
    assert!(
        !scanner
            .find(format!("Bearer {}", tokens[0].1).as_bytes())
            .is_empty()
    );
    if let Some((name, cookie)) = sessions.iter().find(|(n, _)| *n != who) {
        let leak = format!("set-cookie: warden_session={cookie}; Path=/");
        assert!(
            !scanner.find(leak.as_bytes()).is_empty(),
            "{name}'s cookie control"
        );
    }
    let seen = stage.seen.lock().unwrap();
    // Their answers, and those of the runs set up for the test (bearer calls, no cookie).
    let mine: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.who == who || s.who == "fixture")
        .collect();
    assert!(
        mine.len() >= 40,
        "{who}: only {} answers were looked at",
        mine.len()
    );
    for s in &mine {
        let bytes = s.answer.bytes();
        let found = scanner.find(&bytes);
        assert!(
            found.is_empty(),
            "{who}: {} (HTTP {}) holds {found:?}",
            s.what,
            s.answer.status
        );
        assert!(
            !jwt_like(&bytes),
            "{who}: {} holds something JWT-shaped",
            s.what
        );
    }
    // The own session cookie was seen, in the callback's Set-Cookie: the scan saw headers.
    assert!(
        mine.iter().any(|s| s
            .answer
            .bytes()
            .windows(sessions[who].len())
            .any(|w| w == sessions[who].as_bytes())),
        "{who}'s own Set-Cookie was never scanned"
    );
}

/// Everyone signs in (their cookies are canaries to everyone else), `who` drives every route,
/// and nothing the service answered them holds a canary.
async fn canary_scan(who: &str) {
    let stage = Stage::start(Setup::default()).await;
    let mut browsers = Vec::new();
    for name in PEOPLE {
        stage.token(name).await;
        browsers.push(stage.sign_in(name, "/").await.0);
    }
    let sessions: BTreeMap<String, String> = browsers
        .iter()
        .map(|b| (b.who.clone(), b.session()))
        .collect();
    let f = fixtures(&stage).await;
    let token = stage.token(who).await;
    let browser = browsers.iter_mut().find(|b| b.who == who).unwrap();
    drive_everything(&stage, browser, &token, &f).await;
    assert_no_canary_reached(&stage, who, &sessions).await;
    stage.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_scan_as_the_delegate() {
    canary_scan("helpdesk").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_scan_as_the_approver() {
    canary_scan("lead").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_scan_as_the_operator() {
    canary_scan("operator").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_scan_as_the_outsider() {
    canary_scan("outsider").await
}

/// Every kind of error answer, and the sign-in's own answers: no canary in any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_scan_of_every_kind_of_error() {
    // Room for the set-up and the probes below, then a flood meets the limit.
    let stage = Stage::start(Setup {
        rate_limit: RateLimit {
            burst: 200,
            per_second: 0.5,
        },
        ..Setup::default()
    })
    .await;
    let mut browsers = Vec::new();
    for name in PEOPLE {
        stage.token(name).await;
        browsers.push(stage.sign_in(name, "/").await.0);
    }
    let sessions: BTreeMap<String, String> = browsers
        .iter()
        .map(|b| (b.who.clone(), b.session()))
        .collect();
    let f = fixtures(&stage).await;
    let who = "helpdesk";
    let token = stage.token(who).await;
    let lead = stage.token("lead").await;
    let helpdesk = &mut browsers[0];
    let mut statuses = std::collections::BTreeSet::new();
    let mut note = |answer: Answer| {
        statuses.insert(answer.status);
    };
    note(stage.get(who, Some("garbage"), "/api/v1/tasks").await); // 401
    note(stage.get(who, None, "/api/v1/runs").await); // 401
    note(
        stage
            .get(who, Some(&format!("{token}x")), "/api/v1/tasks")
            .await,
    ); // 401, a bad signature
    note(
        stage
            .get(
                who,
                Some(&token),
                &format!("/api/v1/runs/{}", uuid::Uuid::new_v4()),
            )
            .await,
    ); // 403
    note(
        helpdesk
            .post_form("/tasks/list-mailboxes", &[("kind", "UserMailbox")])
            .await,
    ); // 403 CSRF
    note(stage.get(who, Some(&token), "/no/such/route").await); // 404
    note(stage.get(who, Some(&token), "/signout").await); // 405
    note(
        stage
            .post_json(
                "fixture",
                Some(&lead),
                &format!("/api/v1/runs/{}/approve", f.rejected),
                &json!({}),
            )
            .await,
    ); // 409
    note(
        stage
            .post_raw(who, Some(&token), RUNS, Some("application/json"), "{")
            .await,
    ); // 400
    note(
        stage
            .post_raw(who, Some(&token), RUNS, Some("text/plain"), "{}")
            .await,
    ); // 415
    note(
        stage
            .post_json(
                who,
                Some(&token),
                RUNS,
                &json!({"parameters": {"kind": "x".repeat(70_000)}}),
            )
            .await,
    ); // 413
    note(
        stage
            .post_json(
                who,
                Some(&token),
                RUNS,
                &json!({"parameters": {"kind": "EquipmentMailbox"}}),
            )
            .await,
    ); // 422
    note(
        stage
            .get(who, Some(&token), "/auth/callback?code=stolen&state=guess")
            .await,
    ); // 401 sign-in
    note(
        stage
            .get(who, Some(&token), "/signin?return_to=//evil.example")
            .await,
    ); // 302
    // The failed run's error and logs, as its requester sees them.
    note(
        stage
            .get(who, Some(&token), &format!("/api/v1/runs/{}", f.failed))
            .await,
    );
    note(
        stage
            .get(
                who,
                Some(&token),
                &format!("/api/v1/runs/{}/logs", f.failed),
            )
            .await,
    );
    // The policy cannot be read: 503.
    let policy = stage.dir.path().join("policy.toml");
    let good = std::fs::read(&policy).unwrap();
    std::fs::write(&policy, b"version = [ not a policy").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    note(stage.get(who, Some(&token), "/api/v1/tasks").await);
    note(helpdesk.get("/tasks/list-mailboxes").await);
    std::fs::write(&policy, good).unwrap();
    // Over the rate: 429.
    for _ in 0..400 {
        let answer = stage.get(who, Some(&token), "/api/v1/tasks").await;
        let limited = answer.status == 429;
        note(answer);
        if limited {
            break;
        }
    }
    for status in [302, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 503] {
        assert!(
            statuses.contains(&status),
            "no {status} was provoked: {statuses:?}"
        );
    }
    assert_no_canary_reached(&stage, who, &sessions).await;
    stage.stop().await;
}
