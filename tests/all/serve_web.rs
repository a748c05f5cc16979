//! `warden serve`'s web surface over real HTTP, against exosim with real Rhai task scripts:
//! live streams (a cap per person, a lifetime, `id:` and `Last-Event-ID`), the audit page's
//! kept verification, the per-address limit before authentication, approvals filtered before
//! the list's limit, policy reloads told by content, what a delegate is told when a run does
//! not complete, and the OpenAPI document against what the router answers.

use crate::serve_api::user;
use crate::support::{Emulator, Transport, runner_for};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_serve::ratelimit::{RateLimit, RequestLimits};
use warden_serve::trail_status::TrailStatus;
use warden_serve::worker::WorkerConfig;
use warden_serve::{AuthSettings, Running, ServeConfig};
use warden_store::{NewRun, PersonRef, Store};

/// The tasks of these tests: the demo's two, one that logs five lines, and one the lead may
/// not approve.
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

#DENY#

[[grant]]
id = "list-mailboxes"
script = "list-mailboxes.rhai"
sha256 = "{list-mailboxes}"
roles = ["mailbox-reader"]

[[grant]]
id = "rename-mailbox"
script = "rename-mailbox.rhai"
sha256 = "{rename-mailbox}"
roles = ["mailbox-reader", "renamer"]
[grant.budgets]
calls = 10
writes = 1

[[grant]]
id = "log-lines"
script = "log-lines.rhai"
sha256 = "{log-lines}"
roles = ["mailbox-reader"]

[[task]]
id = "list-mailboxes"
title = "List mailboxes"
description = "The tenant's mailboxes."
grant = "list-mailboxes"
approval = "never"
delegates = ["user:helpdesk@contoso.onmicrosoft.com"]
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
delegates = ["user:helpdesk@contoso.onmicrosoft.com"]
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
id = "log-lines"
title = "Five log lines"
description = "Logs five lines."
grant = "log-lines"
approval = "never"
delegates = ["user:helpdesk@contoso.onmicrosoft.com"]

[[task]]
id = "others-approve"
title = "List mailboxes, approved by someone else"
description = "The lead is not its approver."
grant = "list-mailboxes"
approval = "always"
approvers = ["user:outsider@contoso.onmicrosoft.com"]
delegates = ["user:helpdesk@contoso.onmicrosoft.com"]
"#;

const LOG_LINES: &str = "for n in 1..=5 { log::info(`line ${n}`); }\n[]\n";

/// The policy text, the task scripts written next to it and pinned.
fn policy_text(dir: &Path) -> String {
    let scripts = crate::support::repo_root().join("scripts/tasks");
    let mut text = POLICY.to_owned();
    for name in ["list-mailboxes", "rename-mailbox", "log-lines"] {
        let source = if name == "log-lines" {
            LOG_LINES.as_bytes().to_vec()
        } else {
            std::fs::read(scripts.join(format!("{name}.rhai"))).unwrap()
        };
        std::fs::write(dir.join(format!("{name}.rhai")), &source).unwrap();
        text = text.replace(&format!("{{{name}}}"), &warden_policy::sha256_hex(&source));
    }
    text
}

fn policy_path(dir: &Path) -> PathBuf {
    dir.join("policy.toml")
}

/// One service over a SQLite file (or `database`) in `dir`, with `limits`.
async fn start(
    emu: &Emulator,
    dir: &Path,
    database: Option<&str>,
    workers: usize,
    limits: RequestLimits,
) -> Running {
    let policy = policy_path(dir);
    if !policy.exists() {
        std::fs::write(&policy, policy_text(dir)).unwrap();
    }
    let sqlite = format!("sqlite:{}", dir.join("serve.db").display());
    let key_path = dir.join("audit.key");
    let audit = AuditTrail::open(
        &dir.join("audit.jsonl"),
        AuditKey::load_or_create(&key_path).unwrap(),
    )
    .unwrap();
    let service = &emu.ready["service_app"];
    let (runner, _) = runner_for(emu, 0, Transport::Rest);
    warden_serve::start(ServeConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        policy,
        database: database.unwrap_or(&sqlite).to_owned(),
        audit: Arc::new(audit),
        audit_key_path: key_path,
        auth: AuthSettings {
            authority: emu.ready["authority"].as_str().unwrap().parse().unwrap(),
            tenant_id: emu.tenant_id(),
            client_id: service["client_id"].as_str().unwrap().to_owned(),
            client_secret: service["client_secret"].as_str().unwrap().to_owned().into(),
            app_id_uri: service["app_id_uri"].as_str().unwrap().to_owned(),
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
            workers,
            instance: "web".into(),
            claims: Default::default(),
        },
        group_names: Default::default(),
        rate_limit: limits,
        body_limit: warden_serve::DEFAULT_BODY_LIMIT,
        shutdown_grace: Duration::from_secs(5),
        expiry_every: Duration::from_secs(60),
        sign_in_ca: Some(emu.exosim.ca_file().to_owned()),
        server_key: warden_serve::auth::ServerKey::generate(),
    })
    .await
    .expect("the service starts")
}

/// An access token for the service's API for demo user `name` (exosim's password grant).
async fn token(emu: &Emulator, name: &str) -> String {
    let user = user(emu, name);
    let ca = std::fs::read(emu.exosim.ca_file()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let scope = format!(
        "{}/.default",
        emu.ready["service_app"]["app_id_uri"].as_str().unwrap()
    );
    let answer: Value = client
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.exosim.url(),
            emu.tenant_id()
        ))
        .form(&[
            ("grant_type", "password"),
            (
                "client_id",
                emu.ready["public_client"]["client_id"].as_str().unwrap(),
            ),
            ("username", user["upn"].as_str().unwrap()),
            ("password", user["password"].as_str().unwrap()),
            ("scope", &scope),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {answer}"))
        .to_owned()
}

/// One person's client: the API and the page (which take the bearer token too), from one
/// local address.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn new(emu: &Emulator, service: &Running, name: &str) -> Self {
        Self::at(service, token(emu, name).await, "127.0.0.1")
    }

    fn at(service: &Running, token: String, local: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(local.parse::<IpAddr>().unwrap())
                .build()
                .unwrap(),
            base: service.url.clone(),
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get(path).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn run(&self, task: &str, parameters: Value) -> String {
        let (status, body) = self
            .post_json(
                &format!("/api/v1/tasks/{task}/runs"),
                json!({ "parameters": parameters }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..300 {
            let (status, run) = self.get_json(&format!("/api/v1/runs/{id}")).await;
            assert_eq!(status, 200, "{run}");
            if !["pending-approval", "queued", "running"].contains(&run["status"].as_str().unwrap())
            {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {id} never ended");
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// The events of a whole SSE body (comments and keep-alives left out).
fn parse_sse(body: &str) -> Vec<Sse> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            Some(Sse {
                event: event?,
                id,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            })
        })
        .collect()
}

fn log_seqs(events: &[Sse]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect()
}

/// Live streams: at most a few open per person (the next is refused with 429, another person
/// is not affected), each ending after its lifetime; every event has an `id`, and a reconnect
/// with `Last-Event-ID` (or the page's `?after=`) gets only the lines after it.
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_live_streams_are_capped_and_resume_after_the_last_event() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lifetime = Duration::from_secs(8);
    let service = start(
        &emu,
        dir.path(),
        None,
        1,
        RequestLimits {
            stream_lifetime: lifetime,
            ..RequestLimits::default()
        },
    )
    .await;
    let helpdesk = Client::new(&emu, &service, "helpdesk").await;
    let lead = Client::new(&emu, &service, "lead").await;

    // A run that waits (for its approval) keeps its streams open.
    let pending = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": crate::serve_api::a_mailbox(&emu).await, "display_name": "Streams"}),
        )
        .await;
    let events = format!("/runs/{pending}/events");
    let opened = std::time::Instant::now();
    let mut open = Vec::new();
    for n in 0..8 {
        let response = helpdesk
            .request(reqwest::Method::GET, &events)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "stream {n}");
        open.push(response);
    }
    let ninth = helpdesk
        .request(reqwest::Method::GET, &events)
        .send()
        .await
        .unwrap();
    assert!(
        opened.elapsed() < lifetime,
        "the machine is too slow for this test"
    );
    assert_eq!(ninth.status(), 429);
    let message = ninth.text().await.unwrap();
    assert!(message.contains("at most 8 per person"), "{message}");
    // Another person (the approver) is not affected.
    let theirs = lead
        .request(reqwest::Method::GET, &events)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 200);
    drop(theirs);

    // Each stream ends at its lifetime (the browser reconnects), and frees its place.
    let first = open.remove(0);
    let body = tokio::time::timeout(lifetime + Duration::from_secs(20), first.text())
        .await
        .expect("the stream ends after its lifetime")
        .unwrap();
    let first_events = parse_sse(&body);
    assert_eq!(first_events.len(), 1, "{body}");
    assert_eq!(first_events[0].event, "status");
    assert_eq!(first_events[0].data["status"], "pending-approval");
    assert_eq!(first_events[0].id.as_deref(), Some("0"), "{body}");
    let again = helpdesk
        .request(reqwest::Method::GET, &events)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the ended stream's place is free");
    drop(again);
    drop(open);

    // A run with five log lines.
    let id = helpdesk.run("log-lines", json!({})).await;
    let run = helpdesk.wait_final(&id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let events = format!("/runs/{id}/events");
    let whole = parse_sse(&helpdesk.get(&events).await.1);
    assert_eq!(log_seqs(&whole), [1, 2, 3, 4, 5], "{whole:?}");
    for event in &whole {
        let id = event.id.as_deref().expect("every event has an id");
        if event.event == "log" {
            assert_eq!(id, event.data["seq"].to_string());
        }
    }
    assert_eq!(whole.last().unwrap().event, "status");
    assert_eq!(whole.last().unwrap().id.as_deref(), Some("5"));
    // A reconnect after line 3: lines 4 and 5 only, whatever the URL's `after` says.
    let response = helpdesk
        .request(reqwest::Method::GET, &format!("{events}?after=1"))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let resumed = parse_sse(&response.text().await.unwrap());
    assert_eq!(log_seqs(&resumed), [4, 5], "{resumed:?}");
    // The page shows every line and starts its stream after them.
    let (status, page) = helpdesk.get(&format!("/runs/{id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("data-after=\"5\""), "{page}");
    assert!(page.contains("line 5"), "{page}");
    let rest = parse_sse(&helpdesk.get(&format!("{events}?after=5")).await.1);
    assert!(log_seqs(&rest).is_empty(), "{rest:?}");
    assert_eq!(rest.len(), 1, "only the status: {rest:?}");
    service.shutdown().await;
}

/// `/audit` keeps its verification: a flood of requests reads the trail once, and an edit of a
/// line after a first verification shows as broken, even when a line was appended since.
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_audit_page_keeps_its_verification_and_sees_an_edit() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&emu, dir.path(), None, 0, RequestLimits::default()).await;
    let helpdesk = Client::new(&emu, &service, "helpdesk").await;
    let outsider = Client::new(&emu, &service, "outsider").await;
    // Refusals, each an audit line.
    for _ in 0..5 {
        assert_eq!(outsider.get("/tasks/list-mailboxes").await.0, 403);
    }
    let trail = dir.path().join("audit.jsonl");
    let lines = std::fs::read_to_string(&trail).unwrap().lines().count() as u64;
    assert!(lines >= 5);
    let status = TrailStatus::of(&trail, &dir.path().join("audit.key"));
    let read_before = status.lines_read();
    for _ in 0..30 {
        let (code, page) = helpdesk.get("/audit").await;
        assert_eq!(code, 200);
        assert!(page.contains("data-audit=\"ok\""), "{page}");
    }
    assert_eq!(
        status.lines_read() - read_before,
        lines,
        "thirty requests read the trail once"
    );
    // One more refusal: only it is read.
    assert_eq!(outsider.get("/tasks/list-mailboxes").await.0, 403);
    assert!(helpdesk.get("/audit").await.1.contains("data-audit=\"ok\""));
    assert_eq!(status.lines_read() - read_before, lines + 1);

    // Someone edits the first line in place, its length kept.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = std::fs::read_to_string(&trail).unwrap();
    let first = text.lines().next().unwrap();
    let edited = first.replacen("list-mailboxes", "list-mailboxez", 1);
    assert_ne!(first, edited);
    std::fs::write(&trail, text.replacen(first, &edited, 1)).unwrap();
    // And a line appended before anyone looks: the growth does not hide the edit.
    assert_eq!(outsider.get("/tasks/list-mailboxes").await.0, 403);
    let (_, page) = helpdesk.get("/audit").await;
    assert!(page.contains("data-audit=\"tampered\""), "{page}");
    assert!(page.contains("does NOT verify (1 lines read)"), "{page}");
    service.shutdown().await;
}

/// Behind a named reverse proxy each client is limited apart, by the right-most hop the proxy
/// added to `X-Forwarded-For`; from any other peer the header changes nothing (a flood cannot
/// spread itself over made-up addresses).
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_a_trusted_proxys_clients_are_limited_apart_and_others_cannot_spoof() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(
        &emu,
        dir.path(),
        None,
        0,
        RequestLimits {
            address: RateLimit {
                burst: 3,
                per_second: 0.01,
            },
            trusted_proxies: vec!["127.0.0.4".parse().unwrap()],
            ..RequestLimits::default()
        },
    )
    .await;
    let statuses = |client: &Client, forwarded: &str| {
        let request = client
            .request(reqwest::Method::GET, "/api/v1/tasks")
            .header("x-forwarded-for", forwarded.to_owned());
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let proxy = Client::at(&service, "not-a-token".into(), "127.0.0.4");
    for _ in 0..3 {
        // The client's own claim (left) is not what counts: the hop the proxy added is.
        assert_eq!(statuses(&proxy, "198.51.100.1, 203.0.113.1").await, 401);
    }
    assert_eq!(statuses(&proxy, "198.51.100.2, 203.0.113.1").await, 429);
    // Junk on the client's side of the list does not move it to the proxy's bucket.
    assert_eq!(statuses(&proxy, "junk, 203.0.113.1").await, 429);
    assert_eq!(statuses(&proxy, "203.0.113.2").await, 401);

    let direct = Client::at(&service, "not-a-token".into(), "127.0.0.5");
    let mut seen = Vec::new();
    for n in 0..5 {
        seen.push(statuses(&direct, &format!("203.0.113.{}", 10 + n)).await);
    }
    assert_eq!(seen, [401, 401, 401, 429, 429]);
    service.shutdown().await;
}

/// Requests that do not authenticate are limited per client address before any token is
/// checked; signed-in callers do not use up their address's budget.
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_unauthenticated_floods_are_limited_per_address() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(
        &emu,
        dir.path(),
        None,
        0,
        RequestLimits {
            address: RateLimit {
                burst: 10,
                per_second: 0.01,
            },
            ..RequestLimits::default()
        },
    )
    .await;
    // Bad tokens from 127.0.0.2: refused as unauthenticated, then 429 with Retry-After,
    // long before the per-person burst (60).
    let attacker = Client::at(&service, "not-a-token".into(), "127.0.0.2");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(attacker.get("/api/v1/tasks").await.0);
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429, 429], "{statuses:?}");
    let refused = attacker
        .request(reqwest::Method::GET, "/api/v1/runs")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("this address"),
        "{body}"
    );
    // The sign-in routes are behind the same gate.
    assert_eq!(attacker.get("/signin").await.0, 429);
    assert_eq!(attacker.get("/auth/callback?code=x&state=y").await.0, 429);
    // What needs no sign-in is not.
    assert_eq!(attacker.get("/api/v1/openapi.json").await.0, 200);
    assert_eq!(attacker.get("/static/app.js").await.0, 200);

    // A signed-in person from another address makes more requests than its burst: none is
    // refused, and the address keeps its whole budget for requests without a sign-in.
    let helpdesk = Client::at(&service, token(&emu, "helpdesk").await, "127.0.0.3");
    for _ in 0..25 {
        assert_eq!(helpdesk.get("/api/v1/tasks").await.0, 200);
    }
    assert_eq!(helpdesk.get("/").await.0, 200);
    let anonymous = Client::at(&service, String::new(), "127.0.0.3");
    for _ in 0..10 {
        assert_eq!(
            anonymous
                .http
                .get(format!("{}/api/v1/tasks", service.url))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    service.shutdown().await;
}

async fn approvals_are_filtered_before_the_limit(database: Option<&str>) {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&emu, dir.path(), database, 0, RequestLimits::default()).await;
    let sqlite = format!("sqlite:{}", dir.path().join("serve.db").display());
    let store = Store::open(database.unwrap_or(&sqlite)).await.unwrap();
    let helpdesk = PersonRef {
        oid: user(&emu, "helpdesk")["object_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        upn: user(&emu, "helpdesk")["upn"].as_str().unwrap().to_owned(),
    };
    let pending = |task: &str| NewRun {
        task: task.into(),
        parameters: json!({"values": {}}),
        requested_by: helpdesk.clone(),
        needs_approval: true,
        approval_expires_at: None,
    };
    // More runs the lead may not decide than a list shows, then one the lead may.
    for _ in 0..=warden_serve::api::LIST_LIMIT {
        store.create_run(pending("others-approve")).await.unwrap();
    }
    let theirs = store.create_run(pending("rename-mailbox")).await.unwrap();
    let lead = Client::new(&emu, &service, "lead").await;
    let (status, listed) = lead.get_json("/api/v1/approvals").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [theirs.id.to_string()], "{listed}");
    let (status, page) = lead.get("/approvals").await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("/runs/{}", theirs.id)), "{page}");
    assert_eq!(page.matches("<tr><td><a href=\"/runs/").count(), 1);
    store.close().await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_web_approvals_are_filtered_before_the_limit_on_sqlite() {
    approvals_are_filtered_before_the_limit(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_web_approvals_are_filtered_before_the_limit_on_postgres() {
    let Some(server) = warden_store::testing::Postgres::shared() else {
        return;
    };
    let url = server.create_database().await;
    approvals_are_filtered_before_the_limit(Some(&url)).await;
}

/// An edit of the policy that keeps its length and its modification time is seen by the next
/// request.
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_policy_edit_with_same_length_and_time_is_seen() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&emu, dir.path(), None, 0, RequestLimits::default()).await;
    let helpdesk = Client::new(&emu, &service, "helpdesk").await;
    let task_ids = |tasks: Value| -> Vec<String> {
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = task_ids(helpdesk.get_json("/api/v1/tasks").await.1);
    assert!(before.contains(&"log-lines".to_owned()), "{before:?}");

    // The operator takes task log-lines out; a comment of the same length keeps the size, and
    // the modification time is set back.
    let path = policy_path(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let stamp = std::fs::metadata(&path).unwrap().modified().unwrap();
    let start = text.find("[[task]]\nid = \"log-lines\"").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    let removed = &text[start..end];
    let filler = format!("#{}", " ".repeat(removed.len() - 1));
    let edited = text.replacen(removed, &filler, 1);
    assert_eq!(edited.len(), text.len());
    std::fs::write(&path, &edited).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(stamp)
        .unwrap();
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (metadata.modified().unwrap(), metadata.len()),
        (stamp, text.len() as u64)
    );

    let after = task_ids(helpdesk.get_json("/api/v1/tasks").await.1);
    assert!(!after.contains(&"log-lines".to_owned()), "{after:?}");
    assert_eq!(after.len() + 1, before.len());
    assert_eq!(helpdesk.get("/tasks/log-lines").await.0, 403);
    service.shutdown().await;
}

/// A run refused or failed because of the policy tells the delegate a short reason, through
/// the API, the run's page and its log: never the policy file's path, the task's script path
/// or the rule's text. The operator finds the detail in the audit trail.
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_run_errors_tell_the_delegate_no_policy_detail() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&emu, dir.path(), None, 1, RequestLimits::default()).await;
    let helpdesk = Client::new(&emu, &service, "helpdesk").await;
    let path = policy_path(dir.path());
    let good = std::fs::read_to_string(&path).unwrap();
    let secret_dir = dir.path().display().to_string();
    let trail = dir.path().join("audit.jsonl");

    let delegate_sees = |run: &str, page: &str, canaries: &[&str]| {
        for text in [run, page] {
            assert!(
                !text.contains(&secret_dir),
                "a path reached the delegate: {text}"
            );
            for canary in canaries {
                assert!(
                    !text.contains(canary),
                    "{canary} reached the delegate: {text}"
                );
            }
        }
    };

    // 1. A deny rule on the cmdlet: the script's call is refused while it runs; the rule's
    // id, line and reason stay with the operator.
    const DENY_CALL: &str =
        "[[deny]]\ncmdlet = \"Get-Mailbox\"\nreason = \"CANARY-DENY-REASON no listing today\"\n";
    std::fs::write(&path, good.replace("#DENY#", DENY_CALL)).unwrap();
    let id = helpdesk
        .run("list-mailboxes", json!({"kind": "UserMailbox"}))
        .await;
    let run = helpdesk.wait_final(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let page = helpdesk.get(&format!("/runs/{id}")).await.1;
    delegate_sees(&run.to_string(), &page, &["CANARY-DENY-REASON", "deny[0]"]);
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("operator has the details"),
        "{run}"
    );

    // 2. A deny rule on a value, added while the run waited for its approval: refused when it
    // starts, the parameter named, the rule not.
    std::fs::write(&path, &good).unwrap();
    let lead = Client::new(&emu, &service, "lead").await;
    let id = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": crate::serve_api::a_mailbox(&emu).await, "display_name": "Denied"}),
        )
        .await;
    const DENY_VALUE: &str = "[[deny]]\ncmdlet = \"Set-Mailbox\"\nparameter = \"Identity\"\nreason = \"CANARY-VALUE-REASON not this one\"\n";
    std::fs::write(&path, good.replace("#DENY#", DENY_VALUE)).unwrap();
    let (status, approved) = lead
        .post_json(
            &format!("/api/v1/runs/{id}/approve"),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    let run = helpdesk.wait_final(&id).await;
    assert_eq!(run["status"], "refused", "{run}");
    let page = helpdesk.get(&format!("/runs/{id}")).await.1;
    delegate_sees(
        &run.to_string(),
        &page,
        &["CANARY-VALUE-REASON", "deny[0]", "(line "],
    );
    assert!(run["error"].as_str().unwrap().contains("identity"), "{run}");

    // 3. The grant's pin changed: the task's script is no longer the one the policy allows.
    let zeros = "0".repeat(64);
    let pinned =
        warden_policy::sha256_hex(&std::fs::read(dir.path().join("list-mailboxes.rhai")).unwrap());
    std::fs::write(&path, good.replacen(&pinned, &zeros, 1)).unwrap();
    let id = helpdesk.run("list-mailboxes", json!({})).await;
    let run = helpdesk.wait_final(&id).await;
    assert_eq!(run["status"], "refused", "{run}");
    let page = helpdesk.get(&format!("/runs/{id}")).await.1;
    delegate_sees(&run.to_string(), &page, &[&zeros, &pinned]);

    // 4. The policy file no longer loads when the run starts (a run queued before).
    std::fs::write(&path, &good).unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.path().join("serve.db").display()))
        .await
        .unwrap();
    std::fs::write(
        &path,
        good.replace("#DENY#", "this line = is [not toml CANARY-BROKEN-LINE"),
    )
    .unwrap();
    let queued = store
        .create_run(NewRun {
            task: "list-mailboxes".into(),
            parameters: json!({"values": {}}),
            requested_by: PersonRef {
                oid: user(&emu, "helpdesk")["object_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                upn: user(&emu, "helpdesk")["upn"].as_str().unwrap().to_owned(),
            },
            needs_approval: false,
            approval_expires_at: None,
        })
        .await
        .unwrap();
    let mut ended = None;
    for _ in 0..300 {
        let run = store.run(queued.id).await.unwrap().unwrap();
        if run.status.is_final() {
            ended = Some(run);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = ended.expect("the worker took the run");
    assert_eq!(ended.status.as_str(), "refused", "{ended:?}");
    // The delegate looks once the operator fixed the file.
    std::fs::write(&path, &good).unwrap();
    let id = queued.id.to_string();
    let run = helpdesk.get_json(&format!("/api/v1/runs/{id}")).await.1;
    let page = helpdesk.get(&format!("/runs/{id}")).await.1;
    let (_, logs) = helpdesk.get_json(&format!("/api/v1/runs/{id}/logs")).await;
    delegate_sees(&run.to_string(), &page, &["CANARY-BROKEN-LINE", "not toml"]);
    delegate_sees(&logs.to_string(), "", &["CANARY-BROKEN-LINE"]);
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("policy cannot be read"),
        "{run}"
    );
    store.close().await;

    // The operator has every detail in the audit trail.
    let audit = std::fs::read_to_string(&trail).unwrap();
    assert!(audit.contains("serve:run-failed") && audit.contains("serve:run-refused"));
    assert!(audit.contains("CANARY-DENY-REASON") && audit.contains("CANARY-VALUE-REASON"));
    assert!(
        audit.contains(&path.display().to_string()),
        "the policy's path"
    );
    service.shutdown().await;
}

/// A value a deny rule refuses at submission: the API's 422 and the form name the parameter,
/// never the rule's id, line or reason (those go to the service's log).
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_a_denied_value_at_submission_names_no_rule() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = policy_path(dir.path());
    const DENY_VALUE: &str = "[[deny]]\ncmdlet = \"Set-Mailbox\"\nparameter = \"Identity\"\nreason = \"CANARY-VALUE-REASON not this one\"\n";
    std::fs::write(&path, policy_text(dir.path()).replace("#DENY#", DENY_VALUE)).unwrap();
    let service = start(&emu, dir.path(), None, 1, RequestLimits::default()).await;
    let helpdesk = Client::new(&emu, &service, "helpdesk").await;
    let mailbox = crate::serve_api::a_mailbox(&emu).await;
    let canaries = ["CANARY-VALUE-REASON", "deny[", "(line "];

    let (status, body) = helpdesk
        .post_json(
            "/api/v1/tasks/rename-mailbox/runs",
            json!({"parameters": {"identity": mailbox, "display_name": "Denied"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let text = body.to_string();
    for canary in canaries {
        assert!(
            !text.contains(canary),
            "{canary} reached the delegate: {text}"
        );
    }
    assert_eq!(
        body["fields"][0]["message"], "identity: not allowed by the policy",
        "{body}"
    );

    let form = helpdesk.get("/tasks/rename-mailbox").await.1;
    let csrf = crate::serve_page::form_csrf(&form, "/tasks/rename-mailbox");
    let response = helpdesk
        .request(reqwest::Method::POST, "/tasks/rename-mailbox")
        .form(&[
            ("csrf", csrf.as_str()),
            ("identity", mailbox.as_str()),
            ("display_name", "Denied"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let page = response.text().await.unwrap();
    for canary in canaries {
        assert!(
            !page.contains(canary),
            "{canary} reached the delegate: {page}"
        );
    }
    assert!(page.contains("not allowed by the policy"), "{page}");
    service.shutdown().await;
}

/// Every operation of `/api/v1/openapi.json`, called for real with a valid token and a body of
/// its schema, is served (not 404/405) and answers a status the document lists; and API paths
/// the document does not list are not served.
#[tokio::test(flavor = "multi_thread")]
async fn serve_web_openapi_matches_what_is_served() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&emu, dir.path(), None, 0, RequestLimits::default()).await;
    let helpdesk = Client::new(&emu, &service, "helpdesk").await;
    let (status, document) = helpdesk.get_json("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    // Real ids: a task of the caller's and a run of theirs that waits.
    let run = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": crate::serve_api::a_mailbox(&emu).await, "display_name": "Documented"}),
        )
        .await;
    let paths = document["paths"].as_object().unwrap();
    let mut called = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let concrete = path
                .replace("/tasks/{id}", "/tasks/list-mailboxes")
                .replace("/runs/{id}", &format!("/runs/{run}"));
            assert!(
                !concrete.contains('{'),
                "a path parameter this test does not know: {path}"
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = helpdesk.request(method.clone(), &concrete);
            if operation["requestBody"].is_object() {
                let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
                // A body of the schema: each listed property, with a value of its type.
                let mut body = serde_json::Map::new();
                for (name, property) in schema["properties"].as_object().unwrap() {
                    let value = match property["type"].as_str() {
                        Some("object") => json!({}),
                        Some("string") => json!("documented"),
                        other => {
                            panic!("{path}: a property type this test does not know: {other:?}")
                        }
                    };
                    body.insert(name.clone(), value);
                }
                request = request.json(&body);
            }
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap_or_default();
            assert!(
                status != 404 && status != 405,
                "{method} {path}: {status}, not served: {text}"
            );
            assert!(
                operation["responses"].get(status.to_string()).is_some(),
                "{method} {path}: {status} is not among the documented answers {}: {text}",
                operation["responses"]
            );
            called += 1;
        }
    }
    assert!(called >= 9, "{called} operations");
    // Paths a client might guess, each with both methods: served only if documented.
    let guesses = [
        "/api/v1/openapi.json",
        "/api/v1",
        "/api/v1/",
        "/api/v1/health",
        "/api/v1/me",
        "/api/v1/tasks/{id}",
        "/api/v1/runs/{id}/events",
        "/api/v1/runs/{id}/results",
        "/api/v1/runs/{id}/results.csv",
        "/api/v1/runs/{id}/cancel",
        "/api/v1/runs/{id}/logs",
        "/api/v1/approvals/{id}",
        "/api/v1/openapi.yaml",
    ];
    for guess in guesses {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let concrete = guess
                .replace("/tasks/{id}", "/tasks/list-mailboxes")
                .replace("/runs/{id}", &format!("/runs/{run}"))
                .replace("/approvals/{id}", &format!("/approvals/{run}"));
            let status = helpdesk
                .request(method.clone(), &concrete)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let documented = document["paths"][guess][method.as_str().to_lowercase()].is_object();
            assert_eq!(
                status != 404 && status != 405,
                documented,
                "{method} {guess}: {status}, documented: {documented}"
            );
        }
    }
    service.shutdown().await;
}
