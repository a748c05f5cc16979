//! The store's contract, each test run over both backends: an embedded SQLite file in a temp
//! dir and a real PostgreSQL server started from the system's binaries
//! (`warden_store::testing::Postgres`).

use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_store::testing::Postgres;
use warden_store::{NewRun, PersonRef, RunRecord, RunStatus, Store, StoreError};

/// A database a test may open (and reopen, as a restarted service would).
struct Db {
    url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    _server: Option<Arc<Postgres>>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("state/warden.db").display());
        Db {
            url,
            _sqlite_dir: Some(dir),
            _server: None,
        }
    }

    async fn postgres() -> Option<Db> {
        let server = Postgres::shared()?;
        let url = server.create_database().await;
        Some(Db {
            url,
            _sqlite_dir: None,
            _server: Some(server),
        })
    }

    async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }
}

/// Each named scenario becomes `sqlite::NAME` and `postgres::NAME`.
macro_rules! over_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::Db::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = super::Db::postgres().await else { return };
                    super::$name(&db).await
                }
            )*
        }
    };
}

over_both_backends!(
    new_runs_wait_for_approval_or_queue,
    approved_run_is_claimed_and_finished,
    rejected_run_is_final_and_never_claimed,
    approving_twice_is_refused,
    nobody_decides_their_own_run,
    finishing_a_run_that_is_not_running_is_refused,
    writes_are_marked_only_on_running_runs,
    eight_workers_claim_each_run_exactly_once,
    racing_approvers_one_wins,
    racing_finishers_one_wins,
    claims_take_the_oldest_queued_first,
    recover_requeues_runs_without_writes_and_never_reruns_writers,
    recover_leaves_other_instances_runs_alone,
    pending_approvals_expire,
    logs_page_in_order,
    concurrent_log_appends_get_distinct_numbers,
    sessions_expire_and_are_deleted,
    migrations_run_twice_are_idempotent,
    reopen_keeps_every_record,
    lists_show_each_person_their_runs,
);

fn person(name: &str) -> PersonRef {
    PersonRef {
        oid: format!("oid-{name}"),
        upn: format!("{name}@contoso.test"),
    }
}

fn new_run(task: &str, by: &str, needs_approval: bool) -> NewRun {
    NewRun {
        task: task.to_owned(),
        parameters: json!({"identity": "alice@contoso.test", "display_name": "Älice ✓"}),
        requested_by: person(by),
        needs_approval,
        approval_expires_at: needs_approval
            .then(|| OffsetDateTime::now_utc() + Duration::hours(24)),
    }
}

fn conflict(result: Result<RunRecord, StoreError>) -> RunStatus {
    match result {
        Err(StoreError::Conflict { current }) => current,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn new_runs_wait_for_approval_or_queue(db: &Db) {
    let store = db.open().await;
    let pending = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    assert_eq!(pending.status, RunStatus::PendingApproval);
    assert!(pending.approval_expires_at.is_some());
    let queued = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    assert_eq!(queued.status, RunStatus::Queued);
    assert_eq!(queued.approval_expires_at, None);

    let read = store.run(pending.id).await.unwrap().unwrap();
    assert_eq!(read, pending);
    assert_eq!(read.parameters["display_name"], "Älice ✓");
    assert_eq!(read.requested_by, person("helpdesk"));
    assert_eq!(
        (
            read.decided_by,
            read.started_at,
            read.finished_at,
            read.worker
        ),
        (None, None, None, None)
    );
    assert!(!read.may_have_written);
    assert!(store.run(Uuid::new_v4()).await.unwrap().is_none());

    let mut nobody = new_run("list", "x", false);
    nobody.requested_by.oid.clear();
    assert!(matches!(
        store.create_run(nobody).await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn approved_run_is_claimed_and_finished(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    assert!(
        store.claim_next("w1").await.unwrap().is_none(),
        "a pending run is not claimable"
    );

    let approved = store
        .decide(run.id, &person("lead"), true, "looks right")
        .await
        .unwrap();
    assert_eq!(approved.status, RunStatus::Queued);
    assert_eq!(approved.decided_by, Some(person("lead")));
    assert_eq!(approved.decision_comment.as_deref(), Some("looks right"));
    assert!(approved.decided_at.is_some());

    let claimed = store.claim_next("host-a/1").await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.status), (run.id, RunStatus::Running));
    assert_eq!(claimed.worker.as_deref(), Some("host-a/1"));
    assert!(claimed.started_at.is_some());
    assert!(store.claim_next("host-a/2").await.unwrap().is_none());

    store.mark_may_have_written(run.id).await.unwrap();
    let done = store
        .finish(
            run.id,
            RunStatus::Completed,
            Some(json!([{"Name": "alice"}])),
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.results, Some(json!([{"Name": "alice"}])));
    assert!(done.may_have_written);
    assert!(done.finished_at.is_some());
    assert_eq!(store.run(run.id).await.unwrap().unwrap(), done);

    for status in [
        RunStatus::Failed,
        RunStatus::Refused,
        RunStatus::OutcomeUnknown,
    ] {
        let run = store
            .create_run(new_run("list", "helpdesk", false))
            .await
            .unwrap();
        store.claim_next("w").await.unwrap().unwrap();
        let ended = store
            .finish(run.id, status, None, Some(format!("why {status}")))
            .await
            .unwrap();
        assert_eq!(ended.status, status);
        assert_eq!(ended.error, Some(format!("why {status}")));
    }
}

async fn rejected_run_is_final_and_never_claimed(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    let rejected = store
        .decide(run.id, &person("lead"), false, "wrong mailbox")
        .await
        .unwrap();
    assert_eq!(rejected.status, RunStatus::Rejected);
    assert!(rejected.finished_at.is_some());
    assert!(store.claim_next("w").await.unwrap().is_none());
    assert_eq!(
        conflict(store.decide(run.id, &person("lead2"), true, "").await),
        RunStatus::Rejected
    );
}

async fn approving_twice_is_refused(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    store
        .decide(run.id, &person("lead"), true, "ok")
        .await
        .unwrap();
    assert_eq!(
        conflict(store.decide(run.id, &person("lead"), true, "again").await),
        RunStatus::Queued
    );
    assert_eq!(
        conflict(
            store
                .decide(run.id, &person("other-lead"), false, "no")
                .await
        ),
        RunStatus::Queued
    );
    // A run that never needed approval cannot be "approved" either.
    let queued = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    assert_eq!(
        conflict(store.decide(queued.id, &person("lead"), true, "").await),
        RunStatus::Queued
    );
    let after = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(after.decision_comment.as_deref(), Some("ok"));
    assert!(matches!(
        store
            .decide(Uuid::new_v4(), &person("lead"), true, "")
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn nobody_decides_their_own_run(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    // Same oid, even under another UPN spelling.
    let same_person = PersonRef {
        oid: "oid-helpdesk".to_owned(),
        upn: "HelpDesk@Contoso.test".to_owned(),
    };
    for approve in [true, false] {
        assert!(matches!(
            store.decide(run.id, &same_person, approve, "mine").await,
            Err(StoreError::SelfApproval)
        ));
    }
    let unchanged = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(unchanged.status, RunStatus::PendingApproval);
    assert_eq!(unchanged.decided_by, None);
    let empty = PersonRef {
        oid: String::new(),
        upn: "x@contoso.test".to_owned(),
    };
    assert!(matches!(
        store.decide(run.id, &empty, true, "").await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn finishing_a_run_that_is_not_running_is_refused(db: &Db) {
    let store = db.open().await;
    let queued = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    assert_eq!(
        conflict(
            store
                .finish(queued.id, RunStatus::Completed, None, None)
                .await
        ),
        RunStatus::Queued
    );
    let pending = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    assert_eq!(
        conflict(
            store
                .finish(pending.id, RunStatus::Failed, None, None)
                .await
        ),
        RunStatus::PendingApproval
    );
    store.claim_next("w").await.unwrap().unwrap();
    for not_final in [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::PendingApproval,
        RunStatus::Rejected,
        RunStatus::Expired,
    ] {
        assert!(
            matches!(
                store.finish(queued.id, not_final, None, None).await,
                Err(StoreError::Invalid { .. })
            ),
            "{not_final}"
        );
    }
    store
        .finish(queued.id, RunStatus::Completed, None, None)
        .await
        .unwrap();
    assert_eq!(
        conflict(store.finish(queued.id, RunStatus::Failed, None, None).await),
        RunStatus::Completed
    );
    assert!(matches!(
        store
            .finish(Uuid::new_v4(), RunStatus::Completed, None, None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn writes_are_marked_only_on_running_runs(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    assert!(matches!(
        store.mark_may_have_written(run.id).await,
        Err(StoreError::Conflict {
            current: RunStatus::Queued
        })
    ));
    store.claim_next("w").await.unwrap().unwrap();
    store.mark_may_have_written(run.id).await.unwrap();
    store
        .finish(run.id, RunStatus::Completed, None, None)
        .await
        .unwrap();
    assert!(matches!(
        store.mark_may_have_written(run.id).await,
        Err(StoreError::Conflict {
            current: RunStatus::Completed
        })
    ));
    assert!(matches!(
        store.mark_may_have_written(Uuid::new_v4()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn eight_workers_claim_each_run_exactly_once(db: &Db) {
    const RUNS: usize = 120;
    let store = db.open().await;
    let mut created = HashSet::new();
    for _ in 0..RUNS {
        created.insert(
            store
                .create_run(new_run("list", "helpdesk", false))
                .await
                .unwrap()
                .id,
        );
    }
    // Eight instances, each with its own pool, as eight service processes would have; they
    // start together.
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let instance = db.open().await;
        let start = start.clone();
        workers.push(tokio::spawn(async move {
            start.wait().await;
            let mut claimed = Vec::new();
            while let Some(run) = instance.claim_next(&format!("w{worker}")).await.unwrap() {
                assert_eq!(run.worker, Some(format!("w{worker}")));
                claimed.push(run.id);
            }
            claimed
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), RUNS, "each run claimed once: {all:?}");
    assert_eq!(unique, created);
}

async fn racing_approvers_one_wins(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    let mut racers = Vec::new();
    for racer in 0..8 {
        let instance = db.open().await;
        racers.push(tokio::spawn(async move {
            instance
                .decide(run.id, &person(&format!("lead{racer}")), racer % 2 == 0, "")
                .await
        }));
    }
    let mut wins = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn racing_finishers_one_wins(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    store.claim_next("w").await.unwrap().unwrap();
    let mut racers = Vec::new();
    for racer in 0..8 {
        let instance = db.open().await;
        racers.push(tokio::spawn(async move {
            let status = if racer % 2 == 0 {
                RunStatus::Completed
            } else {
                RunStatus::Failed
            };
            instance.finish(run.id, status, None, None).await
        }));
    }
    let mut wins = 0;
    for racer in racers {
        if racer.await.unwrap().is_ok() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

async fn claims_take_the_oldest_queued_first(db: &Db) {
    let store = db.open().await;
    let waiting = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(
            store
                .create_run(new_run("list", "helpdesk", false))
                .await
                .unwrap()
                .id,
        );
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    // Approved last, so queued last, though created first.
    store
        .decide(waiting.id, &person("lead"), true, "")
        .await
        .unwrap();
    order.push(waiting.id);
    let mut claimed = Vec::new();
    while let Some(run) = store.claim_next("w").await.unwrap() {
        claimed.push(run.id);
    }
    assert_eq!(claimed, order);
}

async fn recover_requeues_runs_without_writes_and_never_reruns_writers(db: &Db) {
    let store = db.open().await;
    let quiet = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let writer = store
        .create_run(new_run("rename", "helpdesk", false))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let later = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    store.claim_next("host-a/1").await.unwrap().unwrap();
    store.claim_next("host-a/2").await.unwrap().unwrap();
    store.mark_may_have_written(writer.id).await.unwrap();
    drop(store);

    // The service restarts.
    let store = db.open().await;
    let recovery = store.recover(None).await.unwrap();
    assert_eq!(recovery.requeued, vec![quiet.id]);
    assert_eq!(recovery.outcome_unknown, vec![writer.id]);
    let unknown = store.run(writer.id).await.unwrap().unwrap();
    assert_eq!(unknown.status, RunStatus::OutcomeUnknown);
    assert!(unknown.error.unwrap().contains("may have sent a write"));
    assert!(unknown.finished_at.is_some());
    let requeued = store.run(quiet.id).await.unwrap().unwrap();
    assert_eq!(
        (requeued.status, requeued.worker),
        (RunStatus::Queued, None)
    );

    // The requeued run goes first (its old place); the writer never comes back.
    let first = store.claim_next("host-a/3").await.unwrap().unwrap();
    let second = store.claim_next("host-a/3").await.unwrap().unwrap();
    assert_eq!((first.id, second.id), (quiet.id, later.id));
    assert!(store.claim_next("host-a/3").await.unwrap().is_none());
    // Recovering again changes nothing that is final.
    store
        .finish(first.id, RunStatus::Completed, None, None)
        .await
        .unwrap();
    let again = store.recover(None).await.unwrap();
    assert_eq!(again.requeued, vec![second.id]);
    assert!(again.outcome_unknown.is_empty());
}

async fn recover_leaves_other_instances_runs_alone(db: &Db) {
    let store = db.open().await;
    let mine = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let theirs = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let prefix_only = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    let first = store.claim_next("host-a/1").await.unwrap().unwrap();
    let second = store.claim_next("host-b/1").await.unwrap().unwrap();
    let third = store.claim_next("host-ab/1").await.unwrap().unwrap();
    assert_eq!(
        (first.id, second.id, third.id),
        (mine.id, theirs.id, prefix_only.id)
    );
    let recovery = store.recover(Some("host-a/")).await.unwrap();
    assert_eq!(recovery.requeued, vec![mine.id]);
    for other in [theirs.id, prefix_only.id] {
        assert_eq!(
            store.run(other).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    }
    // A prefix with LIKE's wildcards matches only itself.
    let none = store.recover(Some("host-%")).await.unwrap();
    assert!(none.requeued.is_empty() && none.outcome_unknown.is_empty());
}

async fn pending_approvals_expire(db: &Db) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let mut soon = new_run("rename", "helpdesk", true);
    soon.approval_expires_at = Some(now + Duration::seconds(1));
    let soon = store.create_run(soon).await.unwrap();
    let mut past = new_run("rename", "helpdesk", true);
    past.approval_expires_at = Some(now - Duration::seconds(1));
    let past = store.create_run(past).await.unwrap();
    let mut forever = new_run("rename", "helpdesk", true);
    forever.approval_expires_at = None;
    let forever = store.create_run(forever).await.unwrap();
    let later = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    let queued = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();

    // An expired request is no longer offered to approvers, and cannot be approved even before
    // a sweep marks it.
    let offered: Vec<Uuid> = store
        .pending_approvals(100)
        .await
        .unwrap()
        .iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(offered, vec![soon.id, forever.id, later.id]);
    assert_eq!(
        conflict(store.decide(past.id, &person("lead"), true, "late").await),
        RunStatus::Expired
    );

    let expired = store
        .expire_pending(now + Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(expired, vec![soon.id]);
    for (id, status) in [
        (soon.id, RunStatus::Expired),
        (past.id, RunStatus::Expired),
        (forever.id, RunStatus::PendingApproval),
        (later.id, RunStatus::PendingApproval),
        (queued.id, RunStatus::Queued),
    ] {
        let run = store.run(id).await.unwrap().unwrap();
        assert_eq!(run.status, status, "{id}");
        assert_eq!(run.finished_at.is_some(), status == RunStatus::Expired);
    }
    assert!(
        store
            .expire_pending(now + Duration::seconds(2))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn logs_page_in_order(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    let other = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    for n in 1..=25u64 {
        let level = if n.is_multiple_of(5) { "warn" } else { "info" };
        assert_eq!(
            store
                .append_log(run.id, level, &format!("line {n}"))
                .await
                .unwrap(),
            n
        );
    }
    assert_eq!(
        store
            .append_log(other.id, "info", "its own first")
            .await
            .unwrap(),
        1
    );

    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.logs(run.id, after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().seq;
        pages.push(page);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    let lines: Vec<_> = pages.into_iter().flatten().collect();
    for (index, line) in lines.iter().enumerate() {
        let n = index as u64 + 1;
        assert_eq!(line.seq, n);
        assert_eq!(line.line, format!("line {n}"));
        assert_eq!(
            line.level,
            if n.is_multiple_of(5) { "warn" } else { "info" }
        );
    }
    assert!(lines.windows(2).all(|pair| pair[0].at <= pair[1].at));
    assert_eq!(store.logs(other.id, 0, 10).await.unwrap().len(), 1);
    assert!(store.logs(run.id, u64::MAX, 10).await.unwrap().is_empty());
    assert!(matches!(
        store.append_log(Uuid::new_v4(), "info", "nowhere").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn concurrent_log_appends_get_distinct_numbers(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    let mut writers = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..10 {
                seqs.push(
                    store
                        .append_log(run.id, "info", &format!("{writer}:{n}"))
                        .await
                        .unwrap(),
                );
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for writer in writers {
        seqs.extend(writer.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=80).collect::<Vec<u64>>());
    assert_eq!(store.logs(run.id, 0, 1000).await.unwrap().len(), 80);
}

async fn sessions_expire_and_are_deleted(db: &Db) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let data = json!({"oid": "oid-helpdesk", "csrf": "x"});
    store
        .put_session("live", &data, now + Duration::hours(1))
        .await
        .unwrap();
    store
        .put_session("old", &data, now - Duration::seconds(1))
        .await
        .unwrap();
    let live = store.session("live").await.unwrap().unwrap();
    assert_eq!(live.data, data);
    assert!(
        store.session("old").await.unwrap().is_none(),
        "expired is gone"
    );
    assert!(store.session("never").await.unwrap().is_none());

    // Replacing keeps one session with the new data.
    let newer = json!({"oid": "oid-helpdesk", "csrf": "y"});
    store
        .put_session("live", &newer, now + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(store.session("live").await.unwrap().unwrap().data, newer);

    assert_eq!(store.purge_sessions(now).await.unwrap(), 1);
    assert_eq!(store.purge_sessions(now).await.unwrap(), 0);
    store.delete_session("live").await.unwrap();
    assert!(store.session("live").await.unwrap().is_none());
    store.delete_session("live").await.unwrap();
}

async fn migrations_run_twice_are_idempotent(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    store.close().await;
    // Several instances starting at once, then again one by one.
    let mut opening = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        opening.push(tokio::spawn(async move { Store::open(&url).await }));
    }
    for open in opening {
        open.await.unwrap().unwrap();
    }
    let store = db.open().await;
    assert_eq!(store.run(run.id).await.unwrap().unwrap().id, run.id);
    assert_eq!(store.all_runs(10).await.unwrap().len(), 1);
}

async fn reopen_keeps_every_record(db: &Db) {
    let store = db.open().await;
    let pending = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    let approved = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    store
        .decide(approved.id, &person("lead"), true, "ok")
        .await
        .unwrap();
    let done = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    // `approved` was queued first, then `done`: claim both, finish one.
    store.claim_next("w").await.unwrap().unwrap();
    store.claim_next("w").await.unwrap().unwrap();
    store
        .append_log(done.id, "info", "listed 3 mailboxes")
        .await
        .unwrap();
    store
        .finish(
            done.id,
            RunStatus::Completed,
            Some(json!({"count": 3})),
            None,
        )
        .await
        .unwrap();
    let expires = OffsetDateTime::now_utc() + Duration::hours(1);
    store
        .put_session("session-1", &json!({"upn": "x"}), expires)
        .await
        .unwrap();
    let before = store.all_runs(100).await.unwrap();
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.all_runs(100).await.unwrap(), before);
    assert_eq!(
        store.run(pending.id).await.unwrap().unwrap().status,
        RunStatus::PendingApproval
    );
    assert_eq!(
        store.logs(done.id, 0, 10).await.unwrap()[0].line,
        "listed 3 mailboxes"
    );
    assert_eq!(
        store.session("session-1").await.unwrap().unwrap().data,
        json!({"upn": "x"})
    );
    // The log numbering goes on where it stopped.
    assert_eq!(
        store
            .append_log(done.id, "info", "after restart")
            .await
            .unwrap(),
        2
    );
}

async fn lists_show_each_person_their_runs(db: &Db) {
    let store = db.open().await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(
            store
                .create_run(new_run("rename", "helpdesk", true))
                .await
                .unwrap()
                .id,
        );
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let theirs = store
        .create_run(new_run("list", "other", false))
        .await
        .unwrap();
    store
        .decide(mine[0], &person("lead"), true, "")
        .await
        .unwrap();
    store
        .decide(mine[1], &person("lead"), false, "")
        .await
        .unwrap();

    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|run| run.id).collect::<Vec<_>>();
    let newest_first: Vec<Uuid> = mine.iter().rev().copied().collect();
    assert_eq!(
        ids(store.runs_requested_by("oid-helpdesk", 10).await.unwrap()),
        newest_first
    );
    assert_eq!(
        ids(store.runs_requested_by("oid-helpdesk", 2).await.unwrap()),
        newest_first[..2]
    );
    assert_eq!(
        ids(store.runs_requested_by("oid-other", 10).await.unwrap()),
        vec![theirs.id]
    );
    assert_eq!(
        ids(store.runs_decided_by("oid-lead", 10).await.unwrap()),
        vec![mine[1], mine[0]]
    );
    assert!(
        store
            .runs_decided_by("oid-helpdesk", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.pending_approvals(10).await.unwrap()),
        vec![mine[2]]
    );
    assert_eq!(store.all_runs(10).await.unwrap().len(), 4);
    assert_eq!(store.all_runs(1).await.unwrap()[0].id, theirs.id);
}

#[tokio::test]
async fn sqlite_file_is_private_and_session_ids_are_not_stored() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = Store::open_sqlite_in(&state).await.unwrap();
    let secret_id = "SESSION-ID-CANARY-7f3a";
    store
        .put_session(
            secret_id,
            &json!({}),
            OffsetDateTime::now_utc() + Duration::hours(1),
        )
        .await
        .unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    let file = state.join(warden_store::SQLITE_FILE_NAME);
    assert_eq!(mode(&file), 0o600);
    let wal = state.join("warden.db-wal");
    assert!(wal.exists(), "WAL mode");
    assert_eq!(mode(&wal), 0o600);
    for path in [&file, &wal] {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes
                .windows(secret_id.len())
                .any(|window| window == secret_id.as_bytes()),
            "{} holds the session id",
            path.display()
        );
    }
    store.close().await;

    // An existing file that others could read is made private when opened.
    let loose = dir.path().join("loose.db");
    std::fs::write(&loose, b"").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&format!("sqlite:{}", loose.display()))
        .await
        .unwrap();
    assert_eq!(mode(&loose), 0o600);
}

#[tokio::test]
async fn postgres_password_never_shows() {
    let Some(server) = Postgres::shared() else {
        return;
    };
    let url = server.create_database().await;
    assert!(url.contains(server.password()));
    let store = Store::open(&url).await.unwrap();
    let debug = format!("{store:?}");
    assert!(!debug.contains(server.password()), "{debug}");
    assert!(debug.contains("127.0.0.1"), "{debug}");

    // A refused connection (wrong password, closed port) names the database, not the password.
    for bad in [
        url.replace(server.password(), "WRONG-CANARY-pw"),
        "postgres://warden:WRONG-CANARY-pw@127.0.0.1:1/warden".to_owned(),
        "postgres://warden:WRONG-CANARY-pw@127.0.0.1:1/warden?sslmode=bogus".to_owned(),
    ] {
        let error = Store::open(&bad).await.expect_err("refused");
        let text = format!("{error} {error:?}");
        assert!(!text.contains("WRONG-CANARY-pw"), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
    }
}
