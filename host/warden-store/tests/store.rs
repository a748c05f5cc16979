//! The store's contract, each test run over both backends: an embedded SQLite file in a temp
//! dir and a real PostgreSQL server started from the system's binaries
//! (`warden_store::testing::Postgres`).

#[macro_use]
mod common;
use common::Db;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_store::testing::Postgres;
use warden_store::{Claim, NewRun, PersonRef, RunRecord, RunStatus, Stale, Store, StoreError};

over_both_backends!(
    new_runs_wait_for_approval_or_queue,
    approved_run_is_claimed_and_finished,
    rejected_run_is_final_and_never_claimed,
    approving_twice_is_refused,
    nobody_decides_their_own_run,
    finishing_a_run_that_is_not_running_is_refused,
    writes_are_marked_only_on_running_runs,
    a_recovered_claim_is_fenced_off,
    eight_workers_claim_each_run_exactly_once,
    racing_approvers_one_wins,
    racing_finishers_one_wins,
    claims_take_the_oldest_queued_first,
    recover_requeues_runs_without_writes_and_never_reruns_writers,
    recover_leaves_other_instances_runs_alone,
    silent_workers_runs_are_recovered_by_age,
    concurrent_recoveries_take_each_run_once,
    pending_approvals_expire,
    logs_page_in_order,
    concurrent_log_appends_get_distinct_numbers,
    sessions_expire_and_are_deleted,
    migrations_run_twice_are_idempotent,
    reopen_keeps_every_record,
    lists_show_each_person_their_runs,
    pending_approvals_skip_the_viewers_own_and_page,
    a_run_queued_by_the_previous_release_is_read_and_claimed,
    a_release_before_dry_runs_refuses_a_migrated_database,
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

    // What the decision was based on is kept with it, for the re-check at the run's start.
    let standing = json!({"groups": ["g-leads"], "roles": ["Warden.Approver"]});
    assert_eq!(run.decided_as, None);
    let approved = store
        .decide(run.id, &person("lead"), &standing, true, "looks right")
        .await
        .unwrap();
    assert_eq!(approved.status, RunStatus::Queued);
    assert_eq!(approved.decided_by, Some(person("lead")));
    assert_eq!(approved.decided_as.as_ref(), Some(&standing));
    assert_eq!(approved.decision_comment.as_deref(), Some("looks right"));
    assert!(approved.decided_at.is_some());

    let claimed = store.claim_next("host-a/1").await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.status), (run.id, RunStatus::Running));
    assert_eq!(claimed.decided_as, Some(standing));
    assert_eq!(claimed.worker.as_deref(), Some("host-a/1"));
    assert!(claimed.started_at.is_some());
    assert!(store.claim_next("host-a/2").await.unwrap().is_none());

    assert_eq!(claimed.attempt, 1);
    let claim = claimed.claim().unwrap();
    store.mark_may_have_written(&claim).await.unwrap();
    let done = store
        .finish(
            &claim,
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
        let claim = store
            .claim_next("w")
            .await
            .unwrap()
            .unwrap()
            .claim()
            .unwrap();
        assert_eq!(claim.id, run.id);
        let ended = store
            .finish(&claim, status, None, Some(format!("why {status}")))
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
        .decide(run.id, &person("lead"), &json!({}), false, "wrong mailbox")
        .await
        .unwrap();
    assert_eq!(rejected.status, RunStatus::Rejected);
    assert!(rejected.finished_at.is_some());
    assert!(store.claim_next("w").await.unwrap().is_none());
    assert_eq!(
        conflict(
            store
                .decide(run.id, &person("lead2"), &json!({}), true, "")
                .await
        ),
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
        .decide(run.id, &person("lead"), &json!({}), true, "ok")
        .await
        .unwrap();
    assert_eq!(
        conflict(
            store
                .decide(run.id, &person("lead"), &json!({}), true, "again")
                .await
        ),
        RunStatus::Queued
    );
    assert_eq!(
        conflict(
            store
                .decide(run.id, &person("other-lead"), &json!({}), false, "no")
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
        conflict(
            store
                .decide(queued.id, &person("lead"), &json!({}), true, "")
                .await
        ),
        RunStatus::Queued
    );
    let after = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(after.decision_comment.as_deref(), Some("ok"));
    assert!(matches!(
        store
            .decide(Uuid::new_v4(), &person("lead"), &json!({}), true, "")
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
            store
                .decide(run.id, &same_person, &json!({}), approve, "mine")
                .await,
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
        store.decide(run.id, &empty, &json!({}), true, "").await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn finishing_a_run_that_is_not_running_is_refused(db: &Db) {
    let store = db.open().await;
    let queued = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    let pending = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    // A claim nobody was given holds nothing.
    for id in [queued.id, pending.id] {
        let forged = Claim {
            id,
            worker: "w".to_owned(),
            attempt: 0,
        };
        assert!(
            matches!(
                store
                    .finish(&forged, RunStatus::Completed, None, None)
                    .await,
                Err(StoreError::ClaimLost { .. })
            ),
            "{id}"
        );
    }
    let claim = store
        .claim_next("w")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    assert_eq!(claim.id, queued.id);
    for not_final in [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::PendingApproval,
        RunStatus::Rejected,
        RunStatus::Expired,
    ] {
        assert!(
            matches!(
                store.finish(&claim, not_final, None, None).await,
                Err(StoreError::Invalid { .. })
            ),
            "{not_final}"
        );
    }
    store
        .finish(&claim, RunStatus::Completed, None, None)
        .await
        .unwrap();
    assert_eq!(
        conflict(store.finish(&claim, RunStatus::Failed, None, None).await),
        RunStatus::Completed
    );
    let nowhere = Claim {
        id: Uuid::new_v4(),
        ..claim
    };
    assert!(matches!(
        store
            .finish(&nowhere, RunStatus::Completed, None, None)
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
    assert_eq!(run.claim(), None, "a queued run has no claim");
    let claim = store
        .claim_next("w")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    store.mark_may_have_written(&claim).await.unwrap();
    store
        .finish(&claim, RunStatus::Completed, None, None)
        .await
        .unwrap();
    assert!(matches!(
        store.mark_may_have_written(&claim).await,
        Err(StoreError::Conflict {
            current: RunStatus::Completed
        })
    ));
    let nowhere = Claim {
        id: Uuid::new_v4(),
        ..claim
    };
    assert!(matches!(
        store.mark_may_have_written(&nowhere).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// The review's case: host-1's worker is cut off, its run is recovered and claimed by host-2;
/// the old worker's mark, log and finish are all refused, so its write is never sent twice.
async fn a_recovered_claim_is_fenced_off(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("rename", "helpdesk", false))
        .await
        .unwrap();
    let old = store
        .claim_next("host-1/1")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    assert_eq!(old.attempt, 1);
    store.append_log(&old, "info", "starting").await.unwrap();
    let recovery = store.recover(Stale::Instance("host-1")).await.unwrap();
    assert_eq!(recovery.requeued, vec![run.id]);
    // Requeued, not yet claimed again: the old claim is already dead.
    assert!(matches!(
        store.mark_may_have_written(&old).await,
        Err(StoreError::ClaimLost { .. })
    ));
    let new = store
        .claim_next("host-2/1")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    assert_eq!((new.id, new.attempt), (run.id, 2));
    for lost in [
        store.mark_may_have_written(&old).await.err(),
        store.append_log(&old, "info", "late").await.err(),
        store
            .finish(&old, RunStatus::Completed, None, None)
            .await
            .err(),
    ] {
        assert!(
            matches!(lost, Some(StoreError::ClaimLost { attempt: 1, .. })),
            "{lost:?}"
        );
    }
    // The same worker name claiming again does not revive an old claim either.
    let stale_same_name = Claim {
        worker: "host-2/1".to_owned(),
        attempt: 1,
        ..new.clone()
    };
    assert!(matches!(
        store.mark_may_have_written(&stale_same_name).await,
        Err(StoreError::ClaimLost { .. })
    ));
    store.mark_may_have_written(&new).await.unwrap();
    assert_eq!(store.append_log(&new, "info", "writing").await.unwrap(), 2);
    let done = store
        .finish(&new, RunStatus::Completed, None, None)
        .await
        .unwrap();
    assert_eq!(
        (done.worker.as_deref(), done.attempt),
        (Some("host-2/1"), 2)
    );
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

/// Eight instances, each with its own pool, opened BEFORE any starts, released together.
async fn racing_instances(db: &Db, racers: usize) -> (Vec<Store>, Arc<tokio::sync::Barrier>) {
    let mut stores = Vec::new();
    for _ in 0..racers {
        stores.push(db.open().await);
    }
    (stores, Arc::new(tokio::sync::Barrier::new(racers)))
}

/// Exactly one winner; every loser gets a `Conflict` (a busy or other error fails the test).
fn one_winner_rest_conflict(results: Vec<Result<RunRecord, StoreError>>) {
    let mut wins = 0;
    for result in results {
        match result {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("a loser must get Conflict, got {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn racing_approvers_one_wins(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("rename", "helpdesk", true))
        .await
        .unwrap();
    let (stores, start) = racing_instances(db, 8).await;
    let mut racers = Vec::new();
    for (racer, instance) in stores.into_iter().enumerate() {
        let start = start.clone();
        racers.push(tokio::spawn(async move {
            start.wait().await;
            instance
                .decide(
                    run.id,
                    &person(&format!("lead{racer}")),
                    &json!({}),
                    racer % 2 == 0,
                    "",
                )
                .await
        }));
    }
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.await.unwrap());
    }
    one_winner_rest_conflict(results);
}

async fn racing_finishers_one_wins(db: &Db) {
    let store = db.open().await;
    store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    let claim = store
        .claim_next("w")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    let (stores, start) = racing_instances(db, 8).await;
    let mut racers = Vec::new();
    for (racer, instance) in stores.into_iter().enumerate() {
        let (start, claim) = (start.clone(), claim.clone());
        racers.push(tokio::spawn(async move {
            let status = if racer % 2 == 0 {
                RunStatus::Completed
            } else {
                RunStatus::Failed
            };
            start.wait().await;
            instance.finish(&claim, status, None, None).await
        }));
    }
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.await.unwrap());
    }
    one_winner_rest_conflict(results);
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
        .decide(waiting.id, &person("lead"), &json!({}), true, "")
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
    let writing = store.claim_next("host-a/2").await.unwrap().unwrap();
    store
        .mark_may_have_written(&writing.claim().unwrap())
        .await
        .unwrap();
    drop(store);

    // The service restarts.
    let store = db.open().await;
    let recovery = store.recover(Stale::All).await.unwrap();
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
        .finish(&first.claim().unwrap(), RunStatus::Completed, None, None)
        .await
        .unwrap();
    let again = store.recover(Stale::All).await.unwrap();
    assert_eq!(again.requeued, vec![second.id]);
    assert!(again.outcome_unknown.is_empty());
}

async fn recover_leaves_other_instances_runs_alone(db: &Db) {
    let store = db.open().await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(
            store
                .create_run(new_run("list", "helpdesk", false))
                .await
                .unwrap()
                .id,
        );
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    // `host-1` must not take `host-10`'s or `host-1x`'s runs: instance names match exactly.
    let workers = ["host-1/1", "host-10/1", "host-1x/1", "host-1/2"];
    for (worker, id) in workers.iter().zip(&runs) {
        assert_eq!(store.claim_next(worker).await.unwrap().unwrap().id, *id);
    }
    let recovery = store.recover(Stale::Instance("host-1")).await.unwrap();
    let mut own = vec![runs[0], runs[3]];
    own.sort();
    assert_eq!(recovery.requeued, own);
    for other in [runs[1], runs[2]] {
        assert_eq!(
            store.run(other).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    }
    // Wildcards match only themselves; an empty name is refused.
    for name in ["host-%", "host-_0", "host"] {
        let none = store.recover(Stale::Instance(name)).await.unwrap();
        assert!(none.requeued.is_empty() && none.outcome_unknown.is_empty());
    }
    assert!(matches!(
        store.recover(Stale::Instance("")).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.claim_next("/1").await,
        Err(StoreError::Invalid { .. })
    ));
}

/// An instance that never comes back: its runs are taken back once its workers stop beating;
/// live workers that keep beating keep theirs.
async fn silent_workers_runs_are_recovered_by_age(db: &Db) {
    // Long enough that the alive worker's heartbeat and the recovery after it (an fsync and
    // two round trips on a loaded machine) fall within it.
    const SILENCE: std::time::Duration = std::time::Duration::from_secs(2);
    let store = db.open().await;
    let gone = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    let alive = store
        .create_run(new_run("rename", "helpdesk", false))
        .await
        .unwrap();
    let gone_claim = store.claim_next("host-gone/1").await.unwrap().unwrap();
    let alive_claim = store.claim_next("host-alive/1").await.unwrap().unwrap();
    assert_eq!((gone_claim.id, alive_claim.id), (gone.id, alive.id));
    store
        .mark_may_have_written(&alive_claim.claim().unwrap())
        .await
        .unwrap();
    let young = store
        .recover(Stale::SilentFor(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(young, Default::default(), "fresh claims are not stale");

    tokio::time::sleep(SILENCE + std::time::Duration::from_millis(500)).await;
    assert_eq!(
        store.heartbeat("host-alive/1").await.unwrap(),
        vec![alive_claim.claim().unwrap()],
        "a heartbeat names the claims its worker still holds"
    );
    assert!(store.heartbeat("host-gone/2").await.unwrap().is_empty());
    let recovery = store.recover(Stale::SilentFor(SILENCE)).await.unwrap();
    assert_eq!(recovery.requeued, vec![gone.id]);
    assert!(
        store.heartbeat("host-gone/1").await.unwrap().is_empty(),
        "a taken-back claim is no longer held: its worker learns it from its heartbeat"
    );
    assert!(recovery.outcome_unknown.is_empty());
    assert_eq!(
        store.run(alive.id).await.unwrap().unwrap().status,
        RunStatus::Running
    );
    // Once it too falls silent, a run that may have written is never re-run.
    tokio::time::sleep(SILENCE + std::time::Duration::from_millis(500)).await;
    let recovery = store.recover(Stale::SilentFor(SILENCE)).await.unwrap();
    assert_eq!(recovery.outcome_unknown, vec![alive.id]);
}

/// Several instances recovering at once (with workers claiming and beating meanwhile): no
/// deadlock error, and each run is taken back by exactly one of them.
async fn concurrent_recoveries_take_each_run_once(db: &Db) {
    const RUNS: usize = 60;
    let store = db.open().await;
    for _ in 0..RUNS {
        store
            .create_run(new_run("list", "helpdesk", false))
            .await
            .unwrap();
    }
    for n in 0..RUNS {
        let run = store
            .claim_next(&format!("host-{}/{n}", n % 3))
            .await
            .unwrap()
            .unwrap();
        if n % 2 == 0 {
            store
                .mark_may_have_written(&run.claim().unwrap())
                .await
                .unwrap();
        }
    }
    let (stores, start) = racing_instances(db, 6).await;
    let mut racers = Vec::new();
    for (racer, instance) in stores.into_iter().enumerate() {
        let start = start.clone();
        racers.push(tokio::spawn(async move {
            start.wait().await;
            let mut recovered = Vec::new();
            for _ in 0..3 {
                let recovery = match racer % 3 {
                    0 => instance.recover(Stale::All).await,
                    1 => instance.recover(Stale::Instance("host-1")).await,
                    _ => {
                        instance.heartbeat("host-2/2").await.unwrap();
                        instance
                            .recover(Stale::SilentFor(std::time::Duration::ZERO))
                            .await
                    }
                }
                .unwrap();
                recovered.extend(recovery.requeued);
                recovered.extend(recovery.outcome_unknown);
            }
            recovered
        }));
    }
    let mut all = Vec::new();
    for racer in racers {
        all.extend(racer.await.unwrap());
    }
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), RUNS, "each run recovered once");
    assert_eq!(unique.len(), RUNS);
}

async fn pending_approvals_expire(db: &Db) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let mut soon = new_run("rename", "helpdesk", true);
    // Wide margins: a loaded machine may take seconds between these steps.
    soon.approval_expires_at = Some(now + Duration::seconds(60));
    let soon = store.create_run(soon).await.unwrap();
    let mut past = new_run("rename", "helpdesk", true);
    past.approval_expires_at = Some(now - Duration::seconds(60));
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
        .pending_approvals("oid-lead", None, 100)
        .await
        .unwrap()
        .iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(offered, vec![soon.id, forever.id, later.id]);
    assert_eq!(
        conflict(
            store
                .decide(past.id, &person("lead"), &json!({}), true, "late")
                .await
        ),
        RunStatus::Expired
    );

    let expired = store
        .expire_pending(now + Duration::seconds(120))
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
            .expire_pending(now + Duration::seconds(120))
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
    let claim = store
        .claim_next("w/1")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    let other_claim = store
        .claim_next("w/2")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    assert_eq!((claim.id, other_claim.id), (run.id, other.id));
    for n in 1..=25u64 {
        let level = if n.is_multiple_of(5) { "warn" } else { "info" };
        assert_eq!(
            store
                .append_log(&claim, level, &format!("line {n}"))
                .await
                .unwrap(),
            n
        );
    }
    assert_eq!(
        store
            .append_log(&other_claim, "info", "its own first")
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
    let nowhere = Claim {
        id: Uuid::new_v4(),
        ..claim.clone()
    };
    assert!(matches!(
        store.append_log(&nowhere, "info", "nowhere").await,
        Err(StoreError::NotFound { .. })
    ));
    // Logs are written only while the run runs.
    store
        .finish(&claim, RunStatus::Completed, None, None)
        .await
        .unwrap();
    assert!(matches!(
        store.append_log(&claim, "info", "after the end").await,
        Err(StoreError::Conflict {
            current: RunStatus::Completed
        })
    ));
}

async fn concurrent_log_appends_get_distinct_numbers(db: &Db) {
    let store = db.open().await;
    let run = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    let claim = store
        .claim_next("w")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (store, claim) = (store.clone(), claim.clone());
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..10 {
                seqs.push(
                    store
                        .append_log(&claim, "info", &format!("{writer}:{n}"))
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
    assert_eq!(store.all_runs(None, 10).await.unwrap().len(), 1);
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
        .decide(approved.id, &person("lead"), &json!({}), true, "ok")
        .await
        .unwrap();
    let done = store
        .create_run(new_run("list", "helpdesk", false))
        .await
        .unwrap();
    // `approved` was queued first, then `done`: claim both, finish one.
    let running = store
        .claim_next("w")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    let finishing = store
        .claim_next("w")
        .await
        .unwrap()
        .unwrap()
        .claim()
        .unwrap();
    assert_eq!((running.id, finishing.id), (approved.id, done.id));
    store
        .append_log(&finishing, "info", "listed 3 mailboxes")
        .await
        .unwrap();
    store
        .append_log(&running, "info", "renaming")
        .await
        .unwrap();
    store
        .finish(
            &finishing,
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
    let before = store.all_runs(None, 100).await.unwrap();
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.all_runs(None, 100).await.unwrap(), before);
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
            .append_log(&running, "info", "after restart")
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
        .decide(mine[0], &person("lead"), &json!({}), true, "")
        .await
        .unwrap();
    store
        .decide(mine[1], &person("lead"), &json!({}), false, "")
        .await
        .unwrap();

    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|run| run.id).collect::<Vec<_>>();
    let newest_first: Vec<Uuid> = mine.iter().rev().copied().collect();
    assert_eq!(
        ids(store
            .runs_requested_by("oid-helpdesk", None, 10)
            .await
            .unwrap()),
        newest_first
    );
    let page = store
        .runs_requested_by("oid-helpdesk", None, 2)
        .await
        .unwrap();
    let after = page.last().unwrap().cursor();
    assert_eq!(ids(page), newest_first[..2]);
    assert_eq!(
        ids(store
            .runs_requested_by("oid-helpdesk", Some(after), 2)
            .await
            .unwrap()),
        newest_first[2..]
    );
    assert_eq!(
        ids(store
            .runs_requested_by("oid-other", None, 10)
            .await
            .unwrap()),
        vec![theirs.id]
    );
    assert_eq!(
        ids(store.runs_decided_by("oid-lead", None, 10).await.unwrap()),
        vec![mine[1], mine[0]]
    );
    assert!(
        store
            .runs_decided_by("oid-helpdesk", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.pending_approvals("oid-lead", None, 10).await.unwrap()),
        vec![mine[2]]
    );
    assert_eq!(store.all_runs(None, 10).await.unwrap().len(), 4);
    let newest = store.all_runs(None, 1).await.unwrap();
    assert_eq!(newest[0].id, theirs.id);
    assert_eq!(
        store
            .all_runs(Some(newest[0].cursor()), 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// The review's case: an approver's first page must not be filled with their own requests;
/// paging by cursor reaches every pending run, each once, even with equal creation times.
async fn pending_approvals_skip_the_viewers_own_and_page(db: &Db) {
    let store = db.open().await;
    let mut own = Vec::new();
    for _ in 0..5 {
        own.push(
            store
                .create_run(new_run("rename", "lead", true))
                .await
                .unwrap()
                .id,
        );
    }
    let mut others = Vec::new();
    for _ in 0..7 {
        others.push(
            store
                .create_run(new_run("rename", "helpdesk", true))
                .await
                .unwrap()
                .id,
        );
    }
    let first = store.pending_approvals("oid-lead", None, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|run| run.requested_by.oid != "oid-lead"));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.pending_approvals("oid-lead", after, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        seen.extend(page.iter().map(|run| run.id));
    }
    let mut expected = others.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "each other person's run once: {seen:?}");
    // helpdesk sees lead's runs and not their own.
    let helpdesk: Vec<Uuid> = store
        .pending_approvals("oid-helpdesk", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(helpdesk.len(), own.len());
    assert!(helpdesk.iter().all(|id| own.contains(id)));
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

/// sqlx takes no lock around SQLite migrations: processes opening a FRESH file together must
/// still all succeed (the store holds `<db>.lock` while it migrates).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_fresh_file_opened_at_once_migrates_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("fresh.db").display());
        let start = Arc::new(tokio::sync::Barrier::new(8));
        let mut opening = Vec::new();
        for _ in 0..8 {
            let (url, start) = (url.clone(), start.clone());
            opening.push(tokio::spawn(async move {
                start.wait().await;
                Store::open(&url).await
            }));
        }
        for open in opening {
            if let Err(error) = open.await.unwrap() {
                panic!("round {round}: {error}");
            }
        }
    }
}

/// The previous release's store: migration 1 only, in the store's migrations table.
fn release_one_migrator() -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let mut migrator = Migrator::with_migrations(vec![Migration::new(
        1,
        "runs sessions".into(),
        MigrationType::Simple,
        include_str!("../migrations/0001_runs_sessions.sql").into_sql_str(),
        false,
    )]);
    migrator.dangerous_set_table_name("warden_migrations");
    migrator
}

/// A release from before dry runs (migrations 1 to 4) must not open a database migrated by
/// this one: it would work a dry-run fleet's jobs and send their writes. sqlx refuses a
/// database with an applied migration it does not know; migration 5 is that fence.
async fn a_release_before_dry_runs_refuses_a_migrated_database(db: &Db) {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use sqlx::{ConnectOptions, SqlSafeStr};
    use std::str::FromStr;
    db.open().await.close().await;
    let sources = [
        include_str!("../migrations/0001_runs_sessions.sql"),
        include_str!("../migrations/0002_decided_as.sql"),
        include_str!("../migrations/0003_fleets.sql"),
        include_str!("../migrations/0004_fleet_summary.sql"),
    ];
    let names = ["runs sessions", "decided as", "fleets", "fleet summary"];
    let mut before = Migrator::with_migrations(
        sources
            .iter()
            .zip(names)
            .enumerate()
            .map(|(i, (sql, name))| {
                Migration::new(
                    i as i64 + 1,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    before.dangerous_set_table_name("warden_migrations");
    let refused = if db.url.starts_with("sqlite:") {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        before.run(&mut conn).await
    } else {
        let mut conn = sqlx::postgres::PgConnectOptions::from_str(&db.url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        before.run(&mut conn).await
    };
    assert!(
        matches!(refused, Err(sqlx::migrate::MigrateError::VersionMissing(5))),
        "{refused:?}"
    );
}

/// A decided, queued run as the previous release (migration 1, no `decided_as`) wrote it: its
/// requester's standing still carried `group_names`.
const RELEASE_ONE_RUN: &str = "INSERT INTO warden_runs (id, task, parameters, status, \
     requested_by_oid, requested_by_upn, decided_by_oid, decided_by_upn, decision_comment, \
     decided_at, created_at, updated_at, queued_at) VALUES ($1, 'rename', \
     '{\"values\":{\"identity\":\"alice@contoso.test\"},\"requested_as\":{\"groups\":[\"g-1\"],\"group_names\":[\"Helpdesk\"],\"roles\":[]}}', \
     'queued', 'oid-helpdesk', 'helpdesk@contoso.test', 'oid-lead', 'lead@contoso.test', 'ok', \
     1765000000000000, 1765000000000000, 1765000000000000, 1765000000000000)";

/// Upgrading keeps what the previous release queued: a database at migration 1 holding a
/// decided, queued run is brought to the current schema by `Store::open`, and the run reads
/// (no `decided_as`: decided before the store kept it) and is claimed like any other.
async fn a_run_queued_by_the_previous_release_is_read_and_claimed(db: &Db) {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let id = Uuid::new_v4();
    if db.url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
            .unwrap()
            .create_if_missing(true);
        std::fs::create_dir_all(options.get_filename().parent().unwrap()).unwrap();
        let mut conn = options.connect().await.unwrap();
        release_one_migrator().run(&mut conn).await.unwrap();
        sqlx::query(RELEASE_ONE_RUN)
            .bind(id.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let options = sqlx::postgres::PgConnectOptions::from_str(&db.url).unwrap();
        let mut conn = options.connect().await.unwrap();
        release_one_migrator().run(&mut conn).await.unwrap();
        sqlx::query(RELEASE_ONE_RUN)
            .bind(id.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let store = db.open().await;
    let run = store.run(id).await.unwrap().expect("the old run");
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.decided_by, Some(person("lead")));
    assert_eq!(
        run.decided_as, None,
        "decided before the store kept the standing"
    );
    let claimed = store
        .claim_next("host-new/0")
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!((claimed.id, claimed.status), (id, RunStatus::Running));
}

/// The schema's names are the store's own (`warden_*`, migrations in `warden_migrations`), and
/// released migrations (1 to 3) are frozen: editing a released migration changes its checksum, and sqlx then
/// refuses every database that applied it. Add a new migration instead.
#[tokio::test]
async fn migration_one_is_frozen_and_tables_are_prefixed() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    Store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap()
        .close()
        .await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let checksum: Vec<u8> =
        sqlx::query_scalar("SELECT checksum FROM warden_migrations WHERE version = 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let hex: String = checksum.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, MIGRATION_1_SHA384, "migration 1 was edited: revert it");
    let checksum: Vec<u8> =
        sqlx::query_scalar("SELECT checksum FROM warden_migrations WHERE version = 2")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let hex: String = checksum.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, MIGRATION_2_SHA384, "migration 2 was edited: revert it");
    let checksum: Vec<u8> =
        sqlx::query_scalar("SELECT checksum FROM warden_migrations WHERE version = 3")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let hex: String = checksum.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, MIGRATION_3_SHA384, "migration 3 was edited: revert it");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') \
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        tables.iter().all(|name| name.starts_with("warden_")),
        "{tables:?}"
    );
}

const MIGRATION_1_SHA384: &str = "d0afe9bf4f9f5cd68b12704b16580d217190e45d7cfffc135143e16d463b5100c3df052cb8cd75237ba8093b572e3b77";
const MIGRATION_2_SHA384: &str = "e8c34674e545f8b0bb150cd74afa355704e9ac3c623a095c24790bac448073c856d333734cc7837f5b9eabc97f6d1551";
const MIGRATION_3_SHA384: &str = "35562478e0d9ebcb66470868375a620352be7122a2a47de794dba7d002dc05c52778e24206bcd8854ae6119629609885";

/// WAL and shared-memory files left with loose modes are made private too.
#[tokio::test]
async fn sqlite_wal_and_shm_files_are_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let url = format!("sqlite:{}", path.display());
    let first = Store::open(&url).await.unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
    let side_files = ["w.db-wal", "w.db-shm"].map(|name| dir.path().join(name));
    for file in &side_files {
        assert!(file.exists(), "{}", file.display());
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let second = Store::open(&url).await.unwrap();
    for file in &side_files {
        assert_eq!(mode(file) & 0o777, 0o600, "{}", file.display());
    }
    assert_eq!(
        mode(&dir.path().join("w.db.lock")) & 0o777,
        0o600,
        "the lock file"
    );
    second.close().await;
    first.close().await;
}
