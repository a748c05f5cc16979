//! `warden serve` over real HTTP: the service in this process against exosim, Bearer tokens
//! from exosim's password grant, the demo users (helpdesk, lead, outsider), real Rhai task
//! scripts through the broker, SQLite and PostgreSQL stores. Each test names the rule it holds
//! the service to; exosim's request log and the audit trail are the witnesses.

use crate::support::{Emulator, Transport, repo_root, runner_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_serve::worker::WorkerConfig;
use warden_serve::{AuthSettings, Running, ServeConfig};
use warden_store::{NewRun, PersonRef, Store};

/// The test policy: the demo's two tasks, with `lead` also a delegate (so four eyes can be
/// tried on the lead's own request).
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

[[grant]]
id = "list-mailboxes"
script = "list-mailboxes.rhai"
sha256 = "{list}"
roles = ["mailbox-reader"]

[[grant]]
id = "rename-mailbox"
script = "rename-mailbox.rhai"
sha256 = "{rename}"
roles = ["mailbox-reader", "renamer"]
[grant.budgets]
calls = 10
writes = 1

[[task]]
id = "list-mailboxes"
title = "List mailboxes"
description = "The tenant's mailboxes."
grant = "list-mailboxes"
approval = "never"
delegates = ["{delegate}", "user:lead@contoso.onmicrosoft.com"]
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
delegates = ["{delegate}", "user:lead@contoso.onmicrosoft.com"]
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
"#;

const HELPDESK_BY_GROUP: &str = "group:Helpdesk";

/// Writes the policy (with `delegate` as the helpdesk's entry) and the task scripts to `dir`.
fn write_policy(dir: &Path, delegate: &str) -> PathBuf {
    let scripts = repo_root().join("scripts/tasks");
    let mut text = POLICY.replace("{delegate}", delegate);
    for (name, key) in [("list-mailboxes", "{list}"), ("rename-mailbox", "{rename}")] {
        let source = std::fs::read(scripts.join(format!("{name}.rhai"))).unwrap();
        std::fs::write(dir.join(format!("{name}.rhai")), &source).unwrap();
        text = text.replace(key, &warden_policy::sha256_hex(&source));
    }
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One service instance over `database`, its files in `dir`.
pub(crate) async fn start(emu: &Emulator, dir: &Path, database: &str, workers: usize) -> Running {
    let policy = dir.join("policy.toml");
    if !policy.exists() {
        write_policy(dir, HELPDESK_BY_GROUP);
    }
    let key_path = dir.join("audit.key");
    let audit = AuditTrail::open(
        &dir.join("audit.jsonl"),
        AuditKey::load_or_create(&key_path).unwrap(),
    )
    .unwrap();
    let service = &emu.ready["service_app"];
    let groups = emu.ready["tenants"][0]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
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
            instance: "test".into(),
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
        rate_limit: Default::default(),
        body_limit: warden_serve::DEFAULT_BODY_LIMIT,
        shutdown_grace: Duration::from_secs(5),
        expiry_every: Duration::from_millis(200),
        sign_in_ca: Some(emu.exosim.ca_file().to_owned()),
        server_key: warden_serve::auth::ServerKey::generate(),
    })
    .await
    .expect("the service starts")
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
async fn token(emu: &Emulator, name: &str) -> String {
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
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn new(emu: &Emulator, service: &Running, name: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: service.url.clone(),
            token: token(emu, name).await,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
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

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
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

    async fn run(&self, task: &str, parameters: Value) -> String {
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
    async fn wait(&self, id: &str, until: &[&str]) -> Value {
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

const FINAL: &[&str] = &[
    "completed",
    "failed",
    "refused",
    "rejected",
    "expired",
    "outcome-unknown",
];

/// The address of one of the demo tenant's mailboxes.
pub(crate) async fn a_mailbox(emu: &Emulator) -> String {
    let found = crate::support::operator_invoke(emu, "Get-Mailbox", json!({"ResultSize": 1})).await;
    found[0]["PrimarySmtpAddress"].as_str().unwrap().to_owned()
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

/// The policy changed while a run waited for its approval: the policy of the moment it starts
/// wins, and the run is refused without a call.
#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_at_start_when_the_policy_changed_meanwhile() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("serve.db").display());
    let service = start(&emu, dir.path(), &db, 1).await;
    let helpdesk = Api::new(&emu, &service, "helpdesk").await;
    let lead = Api::new(&emu, &service, "lead").await;
    let id = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": a_mailbox(&emu).await, "display_name": "Before the change"}),
        )
        .await;
    // The operator takes the helpdesk off the task (only the lead stays a delegate).
    write_policy(dir.path(), "user:nobody@contoso.onmicrosoft.com");
    let sets_before = emu.requests_for("Set-Mailbox");
    // The approver still sees it waiting and approves it ...
    assert_eq!(
        lead.post(
            &format!("/api/v1/runs/{id}/approve"),
            json!({"comment": "ok"})
        )
        .await
        .0,
        200
    );
    // ... and it is refused when it starts.
    let run = lead.wait(&id, FINAL).await;
    assert_eq!(run["status"], "refused", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("no longer"),
        "{run}"
    );
    assert_eq!(emu.requests_for("Set-Mailbox"), sets_before);
    service.shutdown().await;
}

/// A restart loses no queued run, and never re-runs one that may have written.
#[tokio::test(flavor = "multi_thread")]
async fn serve_restart_runs_queued_runs_and_never_reruns_a_write() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("serve.db").display());
    // An instance with no workers takes the request and stops.
    let first = start(&emu, dir.path(), &db, 0).await;
    let helpdesk = Api::new(&emu, &first, "helpdesk").await;
    let queued = helpdesk.run("list-mailboxes", json!({})).await;
    assert_eq!(
        helpdesk.get(&format!("/api/v1/runs/{queued}")).await.1["status"],
        "queued"
    );
    first.shutdown().await;

    // A run this instance was running when it crashed, after it marked a write.
    let store = Store::open(&db).await.unwrap();
    let person = |name: &str| PersonRef {
        oid: user(&emu, name)["object_id"].as_str().unwrap().to_owned(),
        upn: user(&emu, name)["upn"].as_str().unwrap().to_owned(),
    };
    let cut = store
        .create_run(NewRun {
            task: "rename-mailbox".into(),
            parameters: json!({"values": {"identity": a_mailbox(&emu).await, "display_name": "Cut"}}),
            requested_by: person("helpdesk"),
            needs_approval: false,
            approval_expires_at: None,
        })
        .await
        .unwrap();
    // Oldest first: the queued read is claimed, then the write, which marks that it may have
    // written; then the process "crashes" with both running.
    assert_eq!(
        store
            .claim_next("test/0")
            .await
            .unwrap()
            .unwrap()
            .id
            .to_string(),
        queued
    );
    let claimed = store.claim_next("test/1").await.unwrap().unwrap();
    assert_eq!(claimed.id, cut.id);
    store
        .mark_may_have_written(&claimed.claim().unwrap())
        .await
        .unwrap();
    // A pending approval already past its expiry.
    let stale = store
        .create_run(NewRun {
            task: "rename-mailbox".into(),
            parameters: json!({"values": {"identity": a_mailbox(&emu).await, "display_name": "Stale"}}),
            requested_by: person("helpdesk"),
            needs_approval: true,
            approval_expires_at: Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(1)),
        })
        .await
        .unwrap();
    store.close().await;

    let sets_before = emu.requests_for("Set-Mailbox");
    // At start: the read (cut before any write) is queued again and runs; the write is not.
    let second = start(&emu, dir.path(), &db, 1).await;
    let helpdesk = Api::new(&emu, &second, "helpdesk").await;
    assert_eq!(helpdesk.wait(&queued, FINAL).await["status"], "completed");
    let run = helpdesk.wait(&cut.id.to_string(), FINAL).await;
    assert_eq!(run["status"], "outcome-unknown", "{run}");
    assert_eq!(
        helpdesk.wait(&stale.id.to_string(), FINAL).await["status"],
        "expired"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        emu.requests_for("Set-Mailbox"),
        sets_before,
        "a run that may have written is never re-run"
    );
    second.shutdown().await;
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
