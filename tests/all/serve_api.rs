//! `warden serve` over real HTTP: the service in this process against exosim, Bearer tokens
//! from exosim's password grant, the demo users (helpdesk, lead, outsider), real Rhai task
//! scripts through the broker, SQLite and PostgreSQL stores. Each test names the rule it holds
//! the service to; exosim's request log and the audit trail are the witnesses.

use crate::support::{Emulator, Transport, repo_root, runner_for};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_serve::worker::{ClaimTiming, WorkerConfig};
use warden_serve::{AuthSettings, Running, ServeConfig};

/// The shipped task policy, which these tests run (its scripts, pins, roles and deny rule).
const SHIPPED_POLICY: &str = "scripts/tasks/policy.toml";

/// The demo tenant's domain, as the shipped policy names its people.
const DOMAIN: &str = "contoso.onmicrosoft.com";

/// Who the tests' policy names, put in place of the shipped policy's people: the tests need the
/// helpdesk named by group (the group path), the lead also a delegate (four eyes tried on the
/// lead's own request), and people taken off or added while runs wait.
#[derive(Debug, Clone)]
pub(crate) struct People {
    /// Every task's `delegates`.
    pub delegates: Vec<String>,
    /// The approval task's `approvers`.
    pub approvers: Vec<String>,
}

impl Default for People {
    fn default() -> Self {
        Self {
            delegates: vec!["group:Helpdesk".into(), format!("user:lead@{DOMAIN}")],
            approvers: vec![format!("user:lead@{DOMAIN}")],
        }
    }
}

/// Writes the shipped policy with `people` in place of its own, and its task scripts, to `dir`
/// (the scripts unchanged, so the shipped pins hold).
pub(crate) fn write_policy(dir: &Path, people: &People) -> PathBuf {
    let shipped = repo_root().join(SHIPPED_POLICY);
    let mut policy: toml_edit::DocumentMut =
        std::fs::read_to_string(&shipped).unwrap().parse().unwrap();
    let list = |names: &[String]| {
        toml_edit::value(
            names
                .iter()
                .map(String::as_str)
                .collect::<toml_edit::Array>(),
        )
    };
    let tasks = policy["task"].as_array_of_tables_mut().unwrap();
    for task in tasks.iter_mut() {
        task["delegates"] = list(&people.delegates);
        if task.contains_key("approvers") {
            task["approvers"] = list(&people.approvers);
        }
    }
    for grant in policy["grant"].as_array_of_tables().unwrap().iter() {
        let script = grant["script"].as_str().unwrap();
        std::fs::copy(shipped.parent().unwrap().join(script), dir.join(script)).unwrap();
    }
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy.to_string()).unwrap();
    path
}

/// How a test's service instance differs from the usual one.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    /// Runs at once.
    pub workers: usize,
    /// Its name (its workers are `NAME/N`).
    pub name: String,
    /// What running runs get at shutdown.
    pub shutdown_grace: Duration,
    /// Its heartbeat and the stale age of its sweep.
    pub claims: ClaimTiming,
}

impl Instance {
    /// The usual instance with `workers` workers.
    pub fn with_workers(workers: usize) -> Self {
        Self {
            workers,
            name: "test".into(),
            shutdown_grace: Duration::from_secs(5),
            claims: ClaimTiming::default(),
        }
    }
}

/// One service instance over `database`, its files in `dir`.
pub(crate) async fn start(emu: &Emulator, dir: &Path, database: &str, workers: usize) -> Running {
    start_instance(emu, dir, database, Instance::with_workers(workers)).await
}

/// One service instance over `database` as `instance` says, its files (policy, audit trail) in
/// `dir`; the policy is written with the default [`People`] unless `dir` has one.
pub(crate) async fn start_instance(
    emu: &Emulator,
    dir: &Path,
    database: &str,
    instance: Instance,
) -> Running {
    let policy = dir.join("policy.toml");
    if !policy.exists() {
        write_policy(dir, &People::default());
    }
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
        database: database.to_owned(),
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
            // The API tokens of these tests come from exosim's public client (password grant).
            api_clients: vec![public_client(emu)],
        },
        workers: WorkerConfig {
            runner,
            call_timeout: Duration::from_secs(30),
            limits: Default::default(),
            workers: instance.workers,
            instance: instance.name,
            claims: instance.claims,
        },
        group_names: group_names(emu),
        rate_limit: Default::default(),
        body_limit: warden_serve::DEFAULT_BODY_LIMIT,
        shutdown_grace: instance.shutdown_grace,
        expiry_every: Duration::from_millis(200),
        sign_in_ca: Some(emu.exosim.ca_file().to_owned()),
        server_key: warden_serve::auth::ServerKey::generate(),
    })
    .await
    .expect("the service starts")
}

/// The client id of exosim's public client, whose users' tokens the tests' API calls carry.
pub(crate) fn public_client(emu: &Emulator) -> String {
    emu.ready["public_client"]["client_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The demo tenant's groups: object id → name.
pub(crate) fn group_names(emu: &Emulator) -> HashMap<String, String> {
    emu.ready["tenants"][0]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|g| {
            (
                g["object_id"].as_str().unwrap().to_owned(),
                g["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub(crate) fn user<'a>(emu: &'a Emulator, name: &str) -> &'a Value {
    emu.ready["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"].as_str().unwrap().starts_with(&format!("{name}@")))
        .unwrap_or_else(|| panic!("exosim has no user {name}"))
}

/// An access token for the service's API, for demo user `name` (exosim's password grant).
pub(crate) async fn token(emu: &Emulator, name: &str) -> String {
    let user = user(emu, name);
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(emu.exosim.ca_file()).unwrap()).unwrap(),
        )
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

/// The API as one person.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub async fn new(emu: &Emulator, service: &Running, name: &str) -> Self {
        Self::at(emu, &service.url, name).await
    }

    /// The API of the service at `url` (another process's) as demo user `name`.
    pub async fn at(emu: &Emulator, url: &str, name: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: url.to_owned(),
            token: token(emu, name).await,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn run(&self, task: &str, parameters: Value) -> String {
        let (status, body) = self
            .post(
                &format!("/api/v1/tasks/{task}/runs"),
                json!({"parameters": parameters}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// The run once it has left `pending-approval`/`queued`/`running` (or the status `until`).
    pub async fn wait(&self, id: &str, until: &[&str]) -> Value {
        for _ in 0..300 {
            let (status, run) = self.get(&format!("/api/v1/runs/{id}")).await;
            assert_eq!(status, 200, "{run}");
            if until.contains(&run["status"].as_str().unwrap()) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {id} never reached {until:?}");
    }
}

pub(crate) const FINAL: &[&str] = &[
    "completed",
    "failed",
    "refused",
    "rejected",
    "expired",
    "outcome-unknown",
];

/// The address of one of the demo tenant's user mailboxes that the shipped policy lets a
/// delegate rename (its deny rule keeps administrators' mailboxes out).
pub(crate) async fn a_mailbox(emu: &Emulator) -> String {
    let found = crate::support::operator_invoke(
        emu,
        "Get-Mailbox",
        json!({"RecipientTypeDetails": "UserMailbox"}),
    )
    .await;
    found
        .iter()
        .map(|m| m["PrimarySmtpAddress"].as_str().unwrap())
        .find(|address| !address.starts_with("admin"))
        .expect("the demo tenant has a user mailbox that is not an administrator's")
        .to_owned()
}

async fn read_task_then_write_with_approval(database: &str) {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&emu, dir.path(), database, 2).await;
    let helpdesk = Api::new(&emu, &service, "helpdesk").await;
    let lead = Api::new(&emu, &service, "lead").await;
    let outsider = Api::new(&emu, &service, "outsider").await;

    // The task list: the delegate's two tasks, with form fields from the policy; none for the
    // outsider.
    let (status, tasks) = helpdesk.get("/api/v1/tasks").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["list-mailboxes", "rename-mailbox"]);
    assert_eq!(outsider.get("/api/v1/tasks").await.1["tasks"], json!([]));

    // A read with no approval: queued at once, completed with the script's results.
    let id = helpdesk
        .run("list-mailboxes", json!({"kind": "UserMailbox"}))
        .await;
    let run = helpdesk.wait(&id, FINAL).await;
    assert_eq!(run["status"], "completed", "{run}");
    let rows = run["results"].as_array().unwrap();
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| r["RecipientTypeDetails"] == "UserMailbox"),
        "{run}"
    );
    assert_eq!(run["requested_by"]["upn"], user(&emu, "helpdesk")["upn"]);

    // A write: pending until the lead approves it; the outsider sees nothing of it, exactly as
    // of a run that does not exist.
    let mailbox = a_mailbox(&emu).await;
    let sets_before = emu.requests_for("Set-Mailbox");
    let id = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": mailbox, "display_name": "Renamed by the service"}),
        )
        .await;
    assert_eq!(
        helpdesk.get(&format!("/api/v1/runs/{id}")).await.1["status"],
        "pending-approval"
    );
    let foreign = outsider.get(&format!("/api/v1/runs/{id}")).await;
    let missing = outsider
        .get(&format!("/api/v1/runs/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(foreign.0, 403);
    assert_eq!(
        foreign, missing,
        "a foreign run must read exactly like a missing one"
    );
    assert_eq!(
        outsider
            .post(
                &format!("/api/v1/runs/{id}/approve"),
                json!({"comment": "me"})
            )
            .await
            .0,
        403
    );
    // The delegate cannot approve (not an approver).
    assert_eq!(
        helpdesk
            .post(
                &format!("/api/v1/runs/{id}/approve"),
                json!({"comment": "me"})
            )
            .await
            .0,
        403
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        emu.requests_for("Set-Mailbox"),
        sets_before,
        "nothing was sent before the approval"
    );
    let (status, approved) = lead
        .post(
            &format!("/api/v1/runs/{id}/approve"),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    let run = helpdesk.wait(&id, FINAL).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["approved_by"]["upn"], user(&emu, "lead")["upn"]);
    assert_eq!(run["may_have_written"], true);
    assert_eq!(
        emu.requests_for("Set-Mailbox"),
        sets_before + 1,
        "the write was sent once"
    );
    // Approving again: it is no longer pending.
    assert_eq!(
        lead.post(&format!("/api/v1/runs/{id}/approve"), json!({}))
            .await
            .0,
        409
    );

    // Four eyes: the lead's own request cannot be approved by the lead.
    let own = lead
        .run(
            "rename-mailbox",
            json!({"identity": mailbox, "display_name": "Lead's own"}),
        )
        .await;
    assert_eq!(
        lead.post(
            &format!("/api/v1/runs/{own}/approve"),
            json!({"comment": "mine"})
        )
        .await
        .0,
        403
    );
    assert_eq!(
        lead.get(&format!("/api/v1/runs/{own}")).await.1["status"],
        "pending-approval"
    );

    // A rejection ends it, with the comment.
    let rejected = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": mailbox, "display_name": "Not this"}),
        )
        .await;
    let (status, run) = lead
        .post(
            &format!("/api/v1/runs/{rejected}/reject"),
            json!({"comment": "wrong mailbox"}),
        )
        .await;
    assert_eq!(
        (status, run["status"].as_str()),
        (200, Some("rejected")),
        "{run}"
    );
    assert_eq!(
        helpdesk.get(&format!("/api/v1/runs/{rejected}")).await.1["decision_comment"],
        "wrong mailbox"
    );

    // Values outside the policy: refused before anything is queued, one error per field.
    let (status, body) = helpdesk
        .post(
            "/api/v1/tasks/rename-mailbox/runs",
            json!({"parameters": {"identity": "someone@fabrikam.com", "display_name": "<script>"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["parameter"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"identity") && fields.contains(&"display_name"),
        "{body}"
    );
    // Not a delegate: 403, the same answer as a task that does not exist.
    let theirs = outsider
        .post(
            "/api/v1/tasks/list-mailboxes/runs",
            json!({"parameters": {}}),
        )
        .await;
    let none = outsider
        .post("/api/v1/tasks/no-such-task/runs", json!({"parameters": {}}))
        .await;
    assert_eq!(theirs.0, 403);
    assert_eq!(theirs, none);
    // No token: 401.
    let anonymous = reqwest::get(format!("{}/api/v1/tasks", service.url))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Every refusal is in the audit trail, with who was refused.
    let trail = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let refusals = trail
        .lines()
        .filter(|l| l.contains("serve:forbidden"))
        .count();
    assert!(refusals >= 6, "{refusals} refusal lines");
    assert!(trail.contains(user(&emu, "outsider")["upn"].as_str().unwrap()));
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_tasks_with_four_eyes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    read_task_then_write_with_approval(&format!(
        "sqlite:{}",
        dir.path().join("serve.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_tasks_with_four_eyes_on_postgres() {
    let Some(server) = warden_store::testing::Postgres::shared() else {
        return;
    };
    let url = server.create_database().await;
    read_task_then_write_with_approval(&url).await;
}

/// The OpenAPI document is served and lists every route the table has.
#[tokio::test(flavor = "multi_thread")]
async fn serve_openapi_lists_the_routes() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("serve.db").display());
    let service = start(&emu, dir.path(), &db, 0).await;
    let document: Value = reqwest::get(format!("{}/api/v1/openapi.json", service.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/tasks",
        "/api/v1/tasks/{id}/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/approve",
        "/api/v1/runs/{id}/reject",
    ] {
        assert!(document["paths"][path].is_object(), "{path} missing");
    }
    service.shutdown().await;
}
