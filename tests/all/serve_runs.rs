//! `warden serve`'s runs over time, on both databases: who a delegated run's audit lines name,
//! the re-check of requester and approver when a run starts, restarts and expiry, a crashed
//! instance's runs taken back by another's sweep, shutdown cutting runs, and a decision on a run
//! the decider may not see. The service runs in this process (and, for the crash, a real
//! `warden serve` process killed with SIGKILL) against exosim; exosim's request log, the store
//! and the audit trail are the witnesses.

use crate::serve_api::{
    Api, FINAL, Instance, People, a_mailbox, group_names, public_client, start, start_instance,
    user, write_policy,
};
use crate::support::{Emulator, operator_env, warden, with};
use exosim::ExchangeFault;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use warden_serve::worker::ClaimTiming;
use warden_store::{NewRun, PersonRef, RunStatus, Store};

/// One database for one test: a SQLite file in a temp dir, or a database of its own on the
/// test process's PostgreSQL server.
struct Database {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("sqlite:{}", dir.path().join("serve.db").display()),
            _dir: Some(dir),
        }
    }

    /// `None` (the test is skipped) when the machine has no PostgreSQL binaries, unless
    /// `WARDEN_REQUIRE_POSTGRES` asks for a failure.
    async fn postgres() -> Option<Self> {
        let server = warden_store::testing::Postgres::shared()?;
        Some(Self {
            url: server.create_database().await,
            _dir: None,
        })
    }
}

/// Each scenario as one named test per database: `serve_runs::on_sqlite::NAME` and
/// `serve_runs::on_postgres::NAME`.
macro_rules! over_both_databases {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&super::Database::sqlite()).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let Some(db) = super::Database::postgres().await else { return };
                    super::$name(&db).await
                }
            )*
        }
    };
}

over_both_databases!(
    audit_lines_of_delegated_runs_name_person_task_and_approver,
    approver_removed_while_queued_is_refused_at_start,
    requester_removed_while_queued_is_refused_at_start,
    restart_runs_queued_runs_and_never_reruns_a_write,
    pending_approvals_expire_and_cannot_be_approved,
    a_killed_instances_runs_are_taken_back_by_anothers_sweep,
    shutdown_past_its_grace_marks_a_cut_write_outcome_unknown,
    deciding_a_run_one_may_not_see_is_forbidden_not_a_conflict,
    a_worker_whose_claim_was_taken_stops_its_run,
    an_approver_by_group_is_judged_by_the_policy_at_start,
    a_task_that_now_needs_an_approval_refuses_a_queued_write,
    a_task_removed_while_queued_refuses_its_run,
);

/// The audit trail's lines, parsed.
fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The lines of the broker runs that the service's run `id` began: every line of each broker
/// run one of whose lines names `id` as its delegation's run.
fn lines_of_service_run<'a>(lines: &'a [Value], id: &str) -> Vec<&'a Value> {
    let broker_runs: Vec<&str> = lines
        .iter()
        .filter(|line| line["delegation"]["service_run"] == id)
        .map(|line| line["run_id"].as_str().unwrap())
        .collect();
    assert!(!broker_runs.is_empty(), "no audit line names run {id}");
    lines
        .iter()
        .filter(|line| broker_runs.contains(&line["run_id"].as_str().unwrap()))
        .collect()
}

/// Adds to the policy in `dir` a task for the helpdesk whose pinned script reads, then sends a
/// batch of a read and a delete the policy refuses (the mailbox reader's role has no delete).
fn add_batch_probe(dir: &Path) {
    let script = r#"// A read, then a batch of a read and a refused delete.
let who = exo::first("Get-Mailbox", #{RecipientTypeDetails: "UserMailbox"}).PrimarySmtpAddress;
exo::batch([
    #{cmdlet: "Get-Mailbox", parameters: #{Identity: who}},
    #{cmdlet: "Remove-Mailbox", parameters: #{Identity: who}},
])
"#;
    std::fs::write(dir.join("batch-probe.rhai"), script).unwrap();
    let mut policy = std::fs::read_to_string(dir.join("policy.toml")).unwrap();
    policy.push_str(&format!(
        r#"
[[grant]]
id = "batch-probe"
script = "batch-probe.rhai"
sha256 = "{}"
roles = ["mailbox-reader"]
[grant.budgets]
calls = 10

[[task]]
id = "batch-probe"
title = "Batch probe"
description = "A read, and a batch with a refused call."
grant = "batch-probe"
approval = "never"
delegates = ["group:Helpdesk"]
"#,
        warden_policy::sha256_hex(script.as_bytes())
    ));
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
}

fn person(emu: &Emulator, name: &str) -> Value {
    let user = user(emu, name);
    json!({"oid": user["object_id"], "upn": user["upn"]})
}

/// The issue's rule: the signed-in person is written in every audit line of their runs, with
/// the task id and the approver; a CLI run names nobody.
async fn audit_lines_of_delegated_runs_name_person_task_and_approver(db: &Database) {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &People::default());
    add_batch_probe(dir.path());
    let service = start(&emu, dir.path(), &db.url, 1).await;
    let helpdesk = Api::new(&emu, &service, "helpdesk").await;
    let lead = Api::new(&emu, &service, "lead").await;
    let read = helpdesk.run("list-mailboxes", json!({})).await;
    assert_eq!(helpdesk.wait(&read, FINAL).await["status"], "completed");
    let probe = helpdesk.run("batch-probe", json!({})).await;
    assert_eq!(helpdesk.wait(&probe, FINAL).await["status"], "completed");
    let write = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": a_mailbox(&emu).await, "display_name": "Named in the trail"}),
        )
        .await;
    let (status, body) = lead
        .post(&format!("/api/v1/runs/{write}/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(helpdesk.wait(&write, FINAL).await["status"], "completed");
    service.shutdown().await;

    let lines = audit_lines(&dir.path().join("audit.jsonl"));
    for (id, task, approver) in [
        (&read, "list-mailboxes", Value::Null),
        (&probe, "batch-probe", Value::Null),
        (&write, "rename-mailbox", person(&emu, "lead")),
    ] {
        let run = lines_of_service_run(&lines, id);
        let rules: Vec<&str> = run
            .iter()
            .map(|line| line["rule"].as_str().unwrap_or(""))
            .collect();
        assert!(
            rules.first().is_some_and(|r| r.starts_with("grant:"))
                && rules.last().is_some_and(|r| r == &"run-end:completed"),
            "the run's lines from its begin to its end: {rules:?}"
        );
        assert!(
            run.iter().any(|line| line["kind"] == "call"),
            "its calls are among them"
        );
        for line in &run {
            let delegation = &line["delegation"];
            assert_eq!(delegation["person"], person(&emu, "helpdesk"), "{line}");
            assert_eq!(delegation["task"], task, "{line}");
            assert_eq!(delegation["approver"], approver, "{line}");
            assert_eq!(delegation["service_run"], id.as_str(), "{line}");
        }
        if task == "batch-probe" {
            // The parts of a batch, and a call the policy refused, name them too.
            assert!(
                run.iter()
                    .any(|line| line.get("batch").is_some() && line["kind"] == "call"),
                "the batch's calls are among the probe's lines"
            );
            assert!(
                run.iter()
                    .any(|line| line["cmdlet"] == "Remove-Mailbox" && line["allowed"] == false),
                "the refused call is among the probe's lines"
            );
        }
        if task == "rename-mailbox" {
            // The lookup of the identity, the write, the read after it: each names them.
            for cmdlet in ["Get-Recipient", "Set-Mailbox", "Get-Mailbox"] {
                assert!(
                    run.iter().any(|line| line["cmdlet"] == cmdlet),
                    "{cmdlet} is among the write run's lines"
                );
            }
        }
    }

    // The same script run by the operator from the command line: its lines name nobody.
    let cli = warden(
        &[
            "script",
            &dir.path().join("list-mailboxes.rhai").display().to_string(),
            "--policy",
            &dir.path().join("policy.toml").display().to_string(),
        ],
        &operator_env(&emu),
    )
    .await;
    assert!(cli.status.success(), "{cli:?}");
    let cli_lines = audit_lines(&emu.dir.path().join("audit.jsonl"));
    assert!(
        !cli_lines.is_empty()
            && cli_lines
                .iter()
                .all(|line| line.get("delegation").is_none()),
        "a CLI run acts for nobody: {cli_lines:?}"
    );
}

/// Edits the policy file in `dir` with `change`.
fn edit_policy(dir: &Path, change: impl FnOnce(&mut toml_edit::DocumentMut)) {
    let path = dir.join("policy.toml");
    let mut policy: toml_edit::DocumentMut =
        std::fs::read_to_string(&path).unwrap().parse().unwrap();
    change(&mut policy);
    std::fs::write(&path, policy.to_string()).unwrap();
}

/// The `rename-mailbox` task of a policy.
fn rename_task(policy: &mut toml_edit::DocumentMut) -> &mut toml_edit::Table {
    policy["task"]
        .as_array_of_tables_mut()
        .unwrap()
        .iter_mut()
        .find(|task| task["id"].as_str() == Some("rename-mailbox"))
        .unwrap()
}

/// What [`queue_then_change_policy`] saw: the run as it ended, its refusal's audit line if it
/// was refused at start, and how many writes reached Exchange after the policy changed.
struct Changed {
    emu: Emulator,
    run: Value,
    refusal: Option<Value>,
    writes: usize,
}

/// With the policy `before` made it (from the default), requests a rename as the helpdesk on an
/// instance that runs nothing and has the lead approve it if it needs an approval; then
/// `after` changes the policy and an instance that runs starts: the policy of the moment the run
/// starts wins.
async fn queue_then_change_policy(
    db: &Database,
    before: impl FnOnce(&Path),
    after: impl FnOnce(&Path),
) -> Changed {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &People::default());
    before(dir.path());
    let first = start(&emu, dir.path(), &db.url, 0).await;
    let helpdesk = Api::new(&emu, &first, "helpdesk").await;
    let lead = Api::new(&emu, &first, "lead").await;
    let id = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": a_mailbox(&emu).await, "display_name": "Before the change"}),
        )
        .await;
    if helpdesk.get(&format!("/api/v1/runs/{id}")).await.1["status"] == "pending-approval" {
        let (status, run) = lead
            .post(
                &format!("/api/v1/runs/{id}/approve"),
                json!({"comment": "ok"}),
            )
            .await;
        assert_eq!(
            (status, run["status"].as_str()),
            (200, Some("queued")),
            "{run}"
        );
    }
    first.shutdown().await;

    after(dir.path());
    let sets_before = emu.requests_for("Set-Mailbox");
    let second = start(&emu, dir.path(), &db.url, 1).await;
    let helpdesk = Api::new(&emu, &second, "helpdesk").await;
    let run = helpdesk.wait(&id, FINAL).await;
    second.shutdown().await;
    let writes = emu.requests_for("Set-Mailbox") - sets_before;
    let refusal = audit_lines(&dir.path().join("audit.jsonl"))
        .into_iter()
        .find(|line| {
            line["rule"] == "serve:refused-at-start"
                && line["delegation"]["service_run"] == id.as_str()
        });
    Changed {
        emu,
        run,
        refusal,
        writes,
    }
}

/// Requests a rename as the helpdesk and has the lead approve it on an instance that runs
/// nothing, then changes the policy's people to `after` and starts an instance that runs.
/// Returns the run as it ended, the audit line of its refusal, and how many writes reached
/// Exchange meanwhile.
async fn approve_then_change_policy(
    db: &Database,
    after: People,
) -> (Emulator, Value, Value, usize) {
    let changed = queue_then_change_policy(
        db,
        |_| {},
        |dir| {
            write_policy(dir, &after);
        },
    )
    .await;
    let refusal = changed
        .refusal
        .unwrap_or_else(|| panic!("no audit line of the refusal at start: {}", changed.run));
    (changed.emu, changed.run, refusal, changed.writes)
}

/// Approvers named by group: the lead approves as a member of `Leads` (from their token) and
/// the run completes; once `Leads` is taken off the approvers while the run is queued, the same
/// approval no longer counts and the run is refused at start, nothing sent.
async fn an_approver_by_group_is_judged_by_the_policy_at_start(db: &Database) {
    let by_group = People {
        approvers: vec!["group:Leads".into()],
        ..People::default()
    };
    let kept = by_group.clone();
    let done = queue_then_change_policy(
        db,
        |dir| {
            write_policy(dir, &kept);
        },
        |_| {},
    )
    .await;
    assert_eq!(done.run["status"], "completed", "{}", done.run);
    assert_eq!(done.writes, 1);

    let removed = queue_then_change_policy(
        db,
        |dir| {
            write_policy(dir, &by_group);
        },
        |dir| {
            write_policy(
                dir,
                &People {
                    approvers: vec!["user:outsider@contoso.onmicrosoft.com".into()],
                    ..People::default()
                },
            );
        },
    )
    .await;
    assert_eq!(removed.run["status"], "refused", "{}", removed.run);
    assert!(
        removed.run["error"]
            .as_str()
            .unwrap()
            .contains("no longer an approver"),
        "{}",
        removed.run
    );
    assert_eq!(removed.writes, 0, "the write never reached Exchange");
    assert!(removed.refusal.is_some(), "the refusal is audited");
}

/// The task needed no approval when the write was queued and needs one now: refused at start.
async fn a_task_that_now_needs_an_approval_refuses_a_queued_write(db: &Database) {
    let changed = queue_then_change_policy(
        db,
        |dir| {
            edit_policy(dir, |policy| {
                let task = rename_task(policy);
                task["approval"] = toml_edit::value("never");
                task.remove("approvers");
                task.remove("approval_expires_after");
            })
        },
        |dir| {
            write_policy(dir, &People::default());
        },
    )
    .await;
    assert_eq!(changed.run["status"], "refused", "{}", changed.run);
    assert!(
        changed.run["error"]
            .as_str()
            .unwrap()
            .contains("now needs an approval"),
        "{}",
        changed.run
    );
    assert_eq!(changed.writes, 0, "the write never reached Exchange");
    assert!(changed.refusal.is_some(), "the refusal is audited");
}

/// The task was removed from the policy while its approved run was queued: refused at start.
async fn a_task_removed_while_queued_refuses_its_run(db: &Database) {
    let changed = queue_then_change_policy(
        db,
        |_| {},
        |dir| {
            edit_policy(dir, |policy| {
                policy["task"]
                    .as_array_of_tables_mut()
                    .unwrap()
                    .retain(|task| task["id"].as_str() != Some("rename-mailbox"));
            })
        },
    )
    .await;
    assert_eq!(changed.run["status"], "refused", "{}", changed.run);
    assert_eq!(changed.writes, 0, "the write never reached Exchange");
    assert!(changed.refusal.is_some(), "the refusal is audited");
}

/// The approver was taken off the task's approvers while the approved run was queued: it is
/// refused when it starts, nothing is sent, and the refusal names the approver and is audited.
async fn approver_removed_while_queued_is_refused_at_start(db: &Database) {
    let (emu, run, refusal, writes) = approve_then_change_policy(
        db,
        People {
            approvers: vec!["user:outsider@contoso.onmicrosoft.com".into()],
            ..People::default()
        },
    )
    .await;
    assert_eq!(run["status"], "refused", "{run}");
    let lead = user(&emu, "lead")["upn"].as_str().unwrap();
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains(lead) && error.contains("no longer an approver"),
        "{error}"
    );
    assert_eq!(writes, 0, "the write never reached Exchange");
    assert_eq!(refusal["delegation"]["person"], person(&emu, "helpdesk"));
    assert_eq!(refusal["delegation"]["approver"], person(&emu, "lead"));
    assert!(
        refusal["reason"].as_str().unwrap().contains(lead),
        "{refusal}"
    );
}

/// The requester was taken off the task's delegates while the approved run was queued: it is
/// refused when it starts, and the refusal says so and is audited.
async fn requester_removed_while_queued_is_refused_at_start(db: &Database) {
    let (emu, run, refusal, writes) = approve_then_change_policy(
        db,
        People {
            delegates: vec!["user:lead@contoso.onmicrosoft.com".into()],
            ..People::default()
        },
    )
    .await;
    assert_eq!(run["status"], "refused", "{run}");
    let helpdesk = user(&emu, "helpdesk")["upn"].as_str().unwrap();
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains(helpdesk) && error.contains("no longer"),
        "{error}"
    );
    assert_eq!(writes, 0, "the write never reached Exchange");
    assert_eq!(refusal["delegation"]["task"], "rename-mailbox");
    assert!(
        refusal["reason"].as_str().unwrap().contains(helpdesk),
        "{refusal}"
    );
}

fn person_ref(emu: &Emulator, name: &str) -> PersonRef {
    PersonRef {
        oid: user(emu, name)["object_id"].as_str().unwrap().to_owned(),
        upn: user(emu, name)["upn"].as_str().unwrap().to_owned(),
    }
}

/// A restart loses no queued run, and never re-runs one that may have written.
async fn restart_runs_queued_runs_and_never_reruns_a_write(db: &Database) {
    let db = &db.url;
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    // An instance with no workers takes the request and stops.
    let first = start(&emu, dir.path(), db, 0).await;
    let helpdesk = Api::new(&emu, &first, "helpdesk").await;
    let queued = helpdesk.run("list-mailboxes", json!({})).await;
    assert_eq!(
        helpdesk.get(&format!("/api/v1/runs/{queued}")).await.1["status"],
        "queued"
    );
    first.shutdown().await;

    // A run this instance was running when it crashed, after it marked a write.
    let store = Store::open(db).await.unwrap();
    let cut = store
        .create_run(NewRun {
            task: "rename-mailbox".into(),
            parameters: json!({"values": {"identity": a_mailbox(&emu).await, "display_name": "Cut"}}),
            requested_by: person_ref(&emu, "helpdesk"),
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
    store.close().await;

    let sets_before = emu.requests_for("Set-Mailbox");
    // At start: the read (cut before any write) is queued again and runs; the write is not.
    let second = start(&emu, dir.path(), db, 1).await;
    let helpdesk = Api::new(&emu, &second, "helpdesk").await;
    assert_eq!(helpdesk.wait(&queued, FINAL).await["status"], "completed");
    let run = helpdesk.wait(&cut.id.to_string(), FINAL).await;
    assert_eq!(run["status"], "outcome-unknown", "{run}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        emu.requests_for("Set-Mailbox"),
        sets_before,
        "a run that may have written is never re-run"
    );
    second.shutdown().await;
    let lines = audit_lines(&dir.path().join("audit.jsonl"));
    assert_recovery_audited(&emu, &lines, &queued, "serve:recovered");
    assert_recovery_audited(&emu, &lines, &cut.id.to_string(), "serve:outcome-unknown");
}

/// The trail has the service's `rule` line for run `id` taken back from its worker, naming the
/// run's person and task.
fn assert_recovery_audited(emu: &Emulator, lines: &[Value], id: &str, rule: &str) {
    let line = lines
        .iter()
        .find(|line| line["rule"] == rule && line["delegation"]["service_run"] == id)
        .unwrap_or_else(|| panic!("no {rule} audit line for run {id}"));
    assert_eq!(
        line["delegation"]["person"],
        person(emu, "helpdesk"),
        "{line}"
    );
    assert!(line["delegation"]["task"].is_string(), "{line}");
}

/// A pending approval past its expiry is marked `expired` by the service's sweep, drops out of
/// the approver's list, and can no longer be approved (nor is it shown to the approver).
async fn pending_approvals_expire_and_cannot_be_approved(db: &Database) {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&emu, dir.path(), &db.url, 1).await;
    let helpdesk = Api::new(&emu, &service, "helpdesk").await;
    let lead = Api::new(&emu, &service, "lead").await;
    let store = Store::open(&db.url).await.unwrap();
    let stale = store
        .create_run(NewRun {
            task: "rename-mailbox".into(),
            parameters: json!({"values": {"identity": a_mailbox(&emu).await, "display_name": "Stale"}}),
            requested_by: person_ref(&emu, "helpdesk"),
            needs_approval: true,
            approval_expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300)),
        })
        .await
        .unwrap();
    store.close().await;
    let id = stale.id.to_string();
    let run = helpdesk.wait(&id, &["expired"]).await;
    assert!(run["finished_at"].is_string(), "{run}");
    let (_, pending) = lead.get("/api/v1/approvals").await;
    assert!(
        !pending["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "{pending}"
    );
    let sets_before = emu.requests_for("Set-Mailbox");
    let late = lead
        .post(
            &format!("/api/v1/runs/{id}/approve"),
            json!({"comment": "late"}),
        )
        .await;
    let missing = lead
        .post(
            &format!("/api/v1/runs/{}/approve", uuid::Uuid::new_v4()),
            json!({"comment": "late"}),
        )
        .await;
    assert_eq!(late.0, 403, "{late:?}");
    assert_eq!(
        late, missing,
        "an expired run the lead never decided reads as missing"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        helpdesk.get(&format!("/api/v1/runs/{id}")).await.1["status"],
        "expired"
    );
    assert_eq!(emu.requests_for("Set-Mailbox"), sets_before);
    service.shutdown().await;
}

/// A real `warden serve` process over `db`, named `instance`, its files in `dir`: the same
/// policy, tenant and sign-in as the in-process instances. Returns the child and its URL.
async fn spawn_instance(
    emu: &Emulator,
    dir: &Path,
    db: &str,
    instance: &str,
    workers: u16,
) -> (tokio::process::Child, String) {
    write_policy(dir, &People::default());
    let service = &emu.ready["service_app"];
    let ready = dir.join("ready.json");
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--policy".into(),
        path("policy.toml"),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--database".into(),
        db.into(),
        "--state-dir".into(),
        path("state"),
        "--instance".into(),
        instance.into(),
        "--workers".into(),
        workers.to_string(),
        "--service-client-id".into(),
        service["client_id"].as_str().unwrap().into(),
        "--app-id-uri".into(),
        service["app_id_uri"].as_str().unwrap().into(),
        "--api-client".into(),
        public_client(emu),
        "--ready-file".into(),
        ready.display().to_string(),
        "--heartbeat-every".into(),
        "1".into(),
        "--claims-stale-after".into(),
        "4".into(),
    ];
    for (id, name) in group_names(emu) {
        args.extend(["--group".to_owned(), format!("{name}={id}")]);
    }
    let env = with(
        operator_env(emu),
        &[(
            "WARDEN_SERVE_CLIENT_SECRET",
            service["client_secret"].as_str().unwrap(),
        )],
    );
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("warden serve starts");
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let ready: Value = serde_json::from_str(&text).unwrap();
            return (child, ready["url"].as_str().unwrap().to_owned());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "warden serve exited ({status}): {}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("warden serve never wrote its ready file");
}

/// Waits until exosim has seen `count` requests for `cmdlet`.
async fn until_requested(emu: &Emulator, cmdlet: &str, count: usize) {
    for _ in 0..600 {
        if emu.requests_for(cmdlet) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{cmdlet} never reached exosim {count} time(s)");
}

/// Instance A (a real process) is killed with SIGKILL in the middle of a read and of a write.
/// While A lives, its heartbeat keeps instance B's sweep off its runs; once A is silent past the
/// stale age, B's sweep takes them back: the read is queued again and B runs it, the write
/// (marked before it was sent) becomes `outcome-unknown` and is never sent again.
async fn a_killed_instances_runs_are_taken_back_by_anothers_sweep(db: &Database) {
    let emu = Emulator::start().await;
    let mailbox = a_mailbox(&emu).await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, a_url) = spawn_instance(&emu, a_dir.path(), &db.url, "a", 2).await;
    let helpdesk = Api::at(&emu, &a_url, "helpdesk").await;
    let lead = Api::at(&emu, &a_url, "lead").await;
    // Exchange holds A's answers: A's workers stay in their calls until it is killed.
    let slow = ExchangeFault::SlowAnswer { delay_ms: 120_000 };
    let faults = emu.exosim.exchange_faults();
    faults.push_for("Get-Mailbox", slow);
    faults.push_for("Set-Mailbox", slow);
    let (reads, writes) = (
        emu.requests_for("Get-Mailbox"),
        emu.requests_for("Set-Mailbox"),
    );
    let read = helpdesk.run("list-mailboxes", json!({})).await;
    until_requested(&emu, "Get-Mailbox", reads + 1).await;
    let write = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": mailbox, "display_name": "Cut by a crash"}),
        )
        .await;
    let (status, body) = lead
        .post(&format!("/api/v1/runs/{write}/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    until_requested(&emu, "Set-Mailbox", writes + 1).await;

    // B sweeps every 200 ms for claims silent 10 s; A beats every second (a wide margin: on a
    // loaded machine, a beat can come seconds late).
    let b = start_instance(
        &emu,
        b_dir.path(),
        &db.url,
        Instance {
            name: "b".into(),
            claims: ClaimTiming::new(Duration::from_millis(200), Duration::from_secs(10)).unwrap(),
            ..Instance::with_workers(1)
        },
    )
    .await;
    let store = Store::open(&db.url).await.unwrap();
    let held_by =
        |run: &warden_store::RunRecord| (run.status, run.worker.clone().unwrap_or_default());
    tokio::time::sleep(Duration::from_secs(6)).await;
    for id in [&read, &write] {
        let run = store.run(id.parse().unwrap()).await.unwrap().unwrap();
        let (status, worker) = held_by(&run);
        assert!(
            status == RunStatus::Running && worker.starts_with("a/"),
            "a live instance keeps its runs: {run:?}"
        );
    }

    a.kill().await.unwrap();
    let helpdesk = Api::new(&emu, &b, "helpdesk").await;
    let done = helpdesk.wait(&read, FINAL).await;
    assert_eq!(done["status"], "completed", "{done}");
    let record = store.run(read.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (record.worker.as_deref(), record.attempt),
        (Some("b/0"), 2),
        "B ran the read again: {record:?}"
    );
    let cut = helpdesk.wait(&write, FINAL).await;
    assert_eq!(cut["status"], "outcome-unknown", "{cut}");
    assert_eq!(cut["may_have_written"], true, "{cut}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        emu.requests_for("Set-Mailbox"),
        writes + 1,
        "the write A may have made is never sent again"
    );
    store.close().await;
    b.shutdown().await;
    let lines = audit_lines(&b_dir.path().join("audit.jsonl"));
    assert_recovery_audited(&emu, &lines, &read, "serve:recovered");
    assert_recovery_audited(&emu, &lines, &write, "serve:outcome-unknown");
}

/// Another instance's sweep takes a run's claim while its worker waits on a slow read: the
/// worker's next heartbeat sees the claim gone and interrupts the run at once (it used to wait
/// out the read), so its single worker is free to run the run again, and the first attempt
/// never writes.
async fn a_worker_whose_claim_was_taken_stops_its_run(db: &Database) {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_instance(
        &emu,
        dir.path(),
        &db.url,
        Instance {
            name: "holder".into(),
            claims: ClaimTiming::new(Duration::from_millis(100), Duration::from_secs(60)).unwrap(),
            ..Instance::with_workers(1)
        },
    )
    .await;
    let helpdesk = Api::new(&emu, &running, "helpdesk").await;
    let reads = emu.requests_for("Get-Mailbox");
    emu.exosim.exchange_faults().push_for(
        "Get-Mailbox",
        ExchangeFault::SlowAnswer { delay_ms: 120_000 },
    );
    let id = helpdesk.run("list-mailboxes", json!({})).await;
    until_requested(&emu, "Get-Mailbox", reads + 1).await;
    // As a sweep elsewhere would: the run is queued again, its first claim is void.
    let store = Store::open(&db.url).await.unwrap();
    let taken = store
        .recover(warden_store::Stale::Instance("holder"))
        .await
        .unwrap();
    assert_eq!(taken.requeued, vec![id.parse::<uuid::Uuid>().unwrap()]);
    let started = std::time::Instant::now();
    let done = helpdesk.wait(&id, FINAL).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the first attempt was stopped, not waited out: {:?}",
        started.elapsed()
    );
    let record = store.run(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(record.attempt, 2, "{record:?}");
    store.close().await;
    running.shutdown().await;
}

/// Shutdown with a write in flight past the grace: the pool's other worker has long ended, and
/// shutdown still waits for the cut run and marks it (a second wait over finished workers used
/// to panic here, leaving the run unmarked).
async fn shutdown_past_its_grace_marks_a_cut_write_outcome_unknown(db: &Database) {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_instance(
        &emu,
        dir.path(),
        &db.url,
        Instance {
            shutdown_grace: Duration::from_millis(300),
            ..Instance::with_workers(2)
        },
    )
    .await;
    let helpdesk = Api::new(&emu, &service, "helpdesk").await;
    let lead = Api::new(&emu, &service, "lead").await;
    let id = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": a_mailbox(&emu).await, "display_name": "Cut by shutdown"}),
        )
        .await;
    let writes = emu.requests_for("Set-Mailbox");
    emu.exosim
        .exchange_faults()
        .push_for("Set-Mailbox", ExchangeFault::SlowAnswer { delay_ms: 3_000 });
    let (status, body) = lead
        .post(&format!("/api/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    until_requested(&emu, "Set-Mailbox", writes + 1).await;
    tokio::time::timeout(Duration::from_secs(60), service.shutdown())
        .await
        .expect("shutdown ends once the cut run ended");
    let store = Store::open(&db.url).await.unwrap();
    let run = store.run(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::OutcomeUnknown, "{run:?}");
    assert!(run.may_have_written, "{run:?}");
    assert!(
        run.error.as_deref().unwrap_or("").contains("shutdown"),
        "{run:?}"
    );
    store.close().await;
}

/// Another approver of the task tries to approve a run the lead already decided: they may not
/// see it, so the answer is the 403 of a run that does not exist, not a 409 that says it does.
async fn deciding_a_run_one_may_not_see_is_forbidden_not_a_conflict(db: &Database) {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &People {
            approvers: vec![
                "user:lead@contoso.onmicrosoft.com".into(),
                "user:outsider@contoso.onmicrosoft.com".into(),
            ],
            ..People::default()
        },
    );
    let service = start(&emu, dir.path(), &db.url, 1).await;
    let helpdesk = Api::new(&emu, &service, "helpdesk").await;
    let lead = Api::new(&emu, &service, "lead").await;
    let other = Api::new(&emu, &service, "outsider").await;
    let id = helpdesk
        .run(
            "rename-mailbox",
            json!({"identity": a_mailbox(&emu).await, "display_name": "Decided by the lead"}),
        )
        .await;
    let (status, body) = lead
        .post(&format!("/api/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    helpdesk.wait(&id, FINAL).await;
    for verb in ["approve", "reject"] {
        let late = other
            .post(&format!("/api/v1/runs/{id}/{verb}"), json!({}))
            .await;
        let missing = other
            .post(
                &format!("/api/v1/runs/{}/{verb}", uuid::Uuid::new_v4()),
                json!({}),
            )
            .await;
        assert_eq!(late.0, 403, "{verb}: {late:?}");
        assert_eq!(
            late, missing,
            "{verb}: a decided run reads as a missing one"
        );
    }
    // The lead, who decided it, is told why: it is no longer pending.
    assert_eq!(
        lead.post(&format!("/api/v1/runs/{id}/approve"), json!({}))
            .await
            .0,
        409
    );
    service.shutdown().await;
}
