//! Fleets in the store, each test over both backends (SQLite in a temp dir, a real PostgreSQL
//! from `warden_store::testing::Postgres`): jobs claimed once and in order, waves, the failure
//! limit, cancel, retry, and recovery that never re-runs a job that may have written.

#[macro_use]
mod common;
use common::Db;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;
use warden_store::{
    FleetJob, JobState, NewFleet, NewRun, PersonRef, RunStatus, Stale, Store, StoreError,
};

over_both_backends!(
    jobs_start_in_order_and_only_the_fleet_claim_takes_them,
    a_wave_starts_only_when_the_earlier_waves_ended,
    failures_past_the_limit_hold_the_remaining_jobs,
    cancel_starts_nothing_new_and_running_jobs_finish,
    retry_requeues_failed_jobs_but_never_writers,
    a_cut_job_that_may_have_written_is_outcome_unknown_never_rerun,
    eight_workers_claim_each_job_exactly_once,
    service_and_fleet_sweeps_take_back_only_their_own,
    a_nul_in_a_guests_text_is_stored_on_both_backends,
    a_cancelled_fleet_is_not_retried,
    one_of_racing_processes_summarises_and_a_retry_reopens_it,
    the_counted_progress_is_the_progress_of_the_jobs,
    a_sweep_that_requeues_a_cancelled_fleets_last_job_reports_the_fleet,
);

fn fleet(tenants: &[(&str, u32)], max_failures: Option<u64>) -> NewFleet {
    NewFleet {
        guest: "report.rhai".to_owned(),
        guest_sha256: "00".repeat(32),
        args: vec!["--days".to_owned(), "7".to_owned()],
        selector: "all".to_owned(),
        tenants: tenants.iter().map(|(t, w)| ((*t).to_owned(), *w)).collect(),
        max_failures,
        dry_run: false,
        requested_by: PersonRef {
            oid: "local:operator".to_owned(),
            upn: "operator".to_owned(),
        },
    }
}

async fn claim(store: &Store, worker: &str, fleet: Uuid) -> Option<FleetJob> {
    store
        .claim_next_fleet_job(worker, Some(fleet))
        .await
        .unwrap()
}

async fn finish(store: &Store, job: &FleetJob, status: RunStatus) {
    let claim = job.run.claim().unwrap();
    store
        .finish(&claim, status, Some(json!({"tenant": job.tenant})), None)
        .await
        .unwrap();
}

async fn jobs_start_in_order_and_only_the_fleet_claim_takes_them(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(
            &[("contoso", 0), ("fabrikam", 0), ("northwind", 0)],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(record.args, ["--days", "7"]);
    // The service's queue never takes a fleet job, and its lists leave them out.
    assert!(store.claim_next("serve/1").await.unwrap().is_none());
    assert!(store.all_runs(None, 10).await.unwrap().is_empty());
    let mut order = Vec::new();
    while let Some(job) = claim(&store, "fleet-a/1", record.id).await {
        assert_eq!(job.run.status, RunStatus::Running);
        assert_eq!(job.run.attempt, 1);
        order.push(job.tenant.clone());
        finish(&store, &job, RunStatus::Completed).await;
    }
    assert_eq!(order, ["contoso", "fabrikam", "northwind"]);
    // Another fleet's claim, or a service run, is not mixed in.
    let service_run = store
        .create_run(NewRun {
            task: "t".to_owned(),
            parameters: json!({}),
            requested_by: PersonRef {
                oid: "oid-a".to_owned(),
                upn: "a@x".to_owned(),
            },
            needs_approval: false,
            approval_expires_at: None,
        })
        .await
        .unwrap();
    assert!(claim(&store, "fleet-a/1", record.id).await.is_none());
    assert!(
        store
            .claim_next_fleet_job("fleet-a/1", None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.claim_next("serve/1").await.unwrap().unwrap().id,
        service_run.id
    );
    let jobs = store.fleet_jobs(record.id).await.unwrap();
    let (_, progress) = record.progress(&jobs);
    assert_eq!(progress.counts[&JobState::Completed], 3);
    assert!(progress.done && !progress.halted);
}

async fn a_wave_starts_only_when_the_earlier_waves_ended(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(&[("a", 0), ("b", 1), ("c", 1), ("d", 2)], None))
        .await
        .unwrap();
    let first = claim(&store, "w/1", record.id).await.unwrap();
    assert_eq!(first.tenant, "a");
    // Wave 1 waits while wave 0 runs.
    assert!(claim(&store, "w/2", record.id).await.is_none());
    finish(&store, &first, RunStatus::Completed).await;
    let b = claim(&store, "w/1", record.id).await.unwrap();
    let c = claim(&store, "w/2", record.id).await.unwrap();
    assert_eq!((b.tenant.as_str(), c.tenant.as_str()), ("b", "c"));
    finish(&store, &b, RunStatus::Completed).await;
    assert!(
        claim(&store, "w/3", record.id).await.is_none(),
        "c still runs"
    );
    finish(&store, &c, RunStatus::Completed).await;
    assert_eq!(claim(&store, "w/3", record.id).await.unwrap().tenant, "d");
}

async fn failures_past_the_limit_hold_the_remaining_jobs(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(&[("a", 0), ("b", 0), ("c", 1), ("d", 1)], Some(1)))
        .await
        .unwrap();
    let a = claim(&store, "w/1", record.id).await.unwrap();
    finish(&store, &a, RunStatus::Failed).await;
    // One failure is tolerated: b still starts.
    let b = claim(&store, "w/1", record.id).await.unwrap();
    finish(&store, &b, RunStatus::Failed).await;
    // Two are past the limit: the next wave never starts.
    assert!(claim(&store, "w/1", record.id).await.is_none());
    let jobs = store.fleet_jobs(record.id).await.unwrap();
    let (states, progress) = record.progress(&jobs);
    assert_eq!(states[2..], [JobState::Held, JobState::Held]);
    assert!(progress.halted && progress.done);
}

async fn cancel_starts_nothing_new_and_running_jobs_finish(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(&[("a", 0), ("b", 0), ("c", 0)], None))
        .await
        .unwrap();
    let a = claim(&store, "w/1", record.id).await.unwrap();
    let cancel = store.cancel_fleet(record.id).await.unwrap();
    assert!(cancel.cancelled_now);
    let cancelled = cancel.fleet;
    assert!(cancelled.cancelled_at.is_some());
    // Again: no change, and this call did not cancel it (its caller records no cancel).
    let again = store.cancel_fleet(record.id).await.unwrap();
    assert!(!again.cancelled_now);
    assert_eq!(again.fleet.cancelled_at, cancelled.cancelled_at);
    assert!(claim(&store, "w/2", record.id).await.is_none());
    // The running job still ends under its claim.
    finish(&store, &a, RunStatus::Completed).await;
    let jobs = store.fleet_jobs(record.id).await.unwrap();
    let (states, progress) = cancelled.progress(&jobs);
    assert_eq!(
        states,
        [
            JobState::Completed,
            JobState::Cancelled,
            JobState::Cancelled
        ]
    );
    assert!(progress.done);
    assert!(matches!(
        store.cancel_fleet(Uuid::new_v4()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn retry_requeues_failed_jobs_but_never_writers(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(&[("a", 0), ("b", 0), ("c", 0), ("d", 0)], None))
        .await
        .unwrap();
    let a = claim(&store, "w/1", record.id).await.unwrap();
    finish(&store, &a, RunStatus::Failed).await;
    let b = claim(&store, "w/1", record.id).await.unwrap();
    store
        .mark_may_have_written(&b.run.claim().unwrap())
        .await
        .unwrap();
    finish(&store, &b, RunStatus::Failed).await;
    let c = claim(&store, "w/1", record.id).await.unwrap();
    store
        .mark_may_have_written(&c.run.claim().unwrap())
        .await
        .unwrap();
    // c's worker dies after marking its write.
    store.recover(Stale::Instance("w")).await.unwrap();
    let d = claim(&store, "w2/1", record.id).await.unwrap();
    assert_eq!(d.tenant, "d", "c is never handed out again");
    finish(&store, &d, RunStatus::Completed).await;

    let retry = store.retry_failed(record.id).await.unwrap();
    assert_eq!(retry.requeued, ["a"]);
    assert_eq!(retry.wrote, ["b"]);
    let again = claim(&store, "w2/1", record.id).await.unwrap();
    assert_eq!((again.tenant.as_str(), again.run.attempt), ("a", 2));
    assert!(claim(&store, "w2/1", record.id).await.is_none());
    let jobs = store.fleet_jobs(record.id).await.unwrap();
    assert_eq!(jobs[2].run.status, RunStatus::OutcomeUnknown);
    // The old claim on a is fenced off.
    assert!(matches!(
        store
            .finish(&a.run.claim().unwrap(), RunStatus::Completed, None, None)
            .await,
        Err(StoreError::ClaimLost { .. })
    ));
}

async fn a_cut_job_that_may_have_written_is_outcome_unknown_never_rerun(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(&[("reader", 0), ("writer", 0)], None))
        .await
        .unwrap();
    let reader = claim(&store, "dead/1", record.id).await.unwrap();
    let writer = claim(&store, "dead/2", record.id).await.unwrap();
    store
        .mark_may_have_written(&writer.run.claim().unwrap())
        .await
        .unwrap();
    let recovery = store.recover(Stale::Instance("dead")).await.unwrap();
    assert_eq!(recovery.requeued, [reader.run.id]);
    assert_eq!(recovery.outcome_unknown, [writer.run.id]);
    // The fleet the write was cut in comes back with the sweep, for its summary.
    assert_eq!(recovery.fleets, [record.id]);
    // The read is run again; the write never.
    let again = claim(&store, "alive/1", record.id).await.unwrap();
    assert_eq!((again.tenant.as_str(), again.run.attempt), ("reader", 2));
    assert!(claim(&store, "alive/1", record.id).await.is_none());
    // The dead worker's claims are refused.
    assert!(matches!(
        store
            .mark_may_have_written(&reader.run.claim().unwrap())
            .await,
        Err(StoreError::ClaimLost { .. })
    ));
    let jobs = store.fleet_jobs(record.id).await.unwrap();
    let (states, _) = record.progress(&jobs);
    assert_eq!(states, [JobState::Running, JobState::OutcomeUnknown]);
}

async fn eight_workers_claim_each_job_exactly_once(db: &Db) {
    let store = Arc::new(db.open().await);
    let names: Vec<String> = (0..40).map(|i| format!("tenant-{i:02}")).collect();
    let tenants: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 0)).collect();
    let record = store.create_fleet(fleet(&tenants, None)).await.unwrap();
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = store
                .claim_next_fleet_job(&format!("host-{w}/1"), Some(record.id))
                .await
                .unwrap()
            {
                finish(&store, &job, RunStatus::Completed).await;
                mine.push(job.tenant);
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for worker in workers {
        for tenant in worker.await.unwrap() {
            assert!(seen.insert(tenant.clone()), "{tenant} ran twice");
        }
    }
    assert_eq!(seen.len(), 40);
}

async fn service_and_fleet_sweeps_take_back_only_their_own(db: &Db) {
    let store = db.open().await;
    let record = store.create_fleet(fleet(&[("a", 0)], None)).await.unwrap();
    let job = claim(&store, "fleet-host:1:x/1", record.id).await.unwrap();
    store
        .create_run(NewRun {
            task: "t".to_owned(),
            parameters: json!({}),
            requested_by: PersonRef {
                oid: "oid-a".to_owned(),
                upn: "a@x".to_owned(),
            },
            needs_approval: false,
            approval_expires_at: None,
        })
        .await
        .unwrap();
    let run = store.claim_next("serve-host/1").await.unwrap().unwrap();
    // Both have been silent for longer than this age.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let short = std::time::Duration::from_millis(100);
    let long = std::time::Duration::from_secs(3600);
    // A service sweeping with its own (long) age leaves the fleet job alone however short the
    // fleet workers' age is, and the other way round.
    let service = store.recover(Stale::SilentFor(long)).await.unwrap();
    assert!(service.requeued.is_empty(), "{service:?}");
    let fleet_sweep = store
        .recover(Stale::FleetJobsSilentFor(short))
        .await
        .unwrap();
    assert_eq!(fleet_sweep.requeued, [job.run.id], "only the fleet job");
    let service = store.recover(Stale::SilentFor(short)).await.unwrap();
    assert_eq!(service.requeued, [run.id], "only the service run");
    assert_eq!(
        store.run(run.id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );
}

async fn a_nul_in_a_guests_text_is_stored_on_both_backends(db: &Db) {
    let store = db.open().await;
    let record = store.create_fleet(fleet(&[("a", 0)], None)).await.unwrap();
    let job = claim(&store, "w/1", record.id).await.unwrap();
    let claim = job.run.claim().unwrap();
    // A guest's `throw "x\0y"` and log lines: PostgreSQL's TEXT refuses NUL, so without the
    // store's rule the job's end could never be recorded there.
    store.append_log(&claim, "info", "a\0b").await.unwrap();
    let run = store
        .finish(
            &claim,
            RunStatus::Failed,
            Some(json!({"output": "p\0q"})),
            Some("x\0y".to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(run.error.as_deref(), Some("x\u{FFFD}y"));
    assert_eq!(
        run.results,
        Some(json!({"output": "p\0q"})),
        "JSON keeps it"
    );
    let logs = store.logs(job.run.id, 0, 10).await.unwrap();
    assert_eq!(logs[0].line, "a\u{FFFD}b");
}

async fn a_cancelled_fleet_is_not_retried(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(&[("a", 0), ("b", 0)], None))
        .await
        .unwrap();
    let a = claim(&store, "w/1", record.id).await.unwrap();
    finish(&store, &a, RunStatus::Failed).await;
    store.cancel_fleet(record.id).await.unwrap();
    // A retry would queue `a` where no worker starts it.
    assert!(matches!(
        store.retry_failed(record.id).await,
        Err(StoreError::Invalid {
            what: "the fleet",
            ..
        })
    ));
    let jobs = store.fleet_jobs(record.id).await.unwrap();
    assert_eq!(jobs[0].run.status, RunStatus::Failed);
}

/// Eight processes that all saw the fleet end race to write its summary: exactly one is let
/// through. A retry that queues a job opens the fleet to a new summary; one that queues
/// nothing does not.
async fn one_of_racing_processes_summarises_and_a_retry_reopens_it(db: &Db) {
    let store = Arc::new(db.open().await);
    let record = store
        .create_fleet(fleet(&[("a", 0), ("b", 0)], None))
        .await
        .unwrap();
    assert_eq!((record.summarised_at, record.summary_round), (None, 0));
    let a = claim(&store, "w1/1", record.id).await.unwrap();
    assert!(store.fleet_has_running(record.id).await.unwrap());
    finish(&store, &a, RunStatus::Failed).await;
    assert!(!store.fleet_has_running(record.id).await.unwrap());
    let b = claim(&store, "w1/1", record.id).await.unwrap();
    finish(&store, &b, RunStatus::Completed).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut racers = Vec::new();
    for _ in 0..8 {
        let store = Arc::new(db.open().await);
        let barrier = barrier.clone();
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            store.mark_fleet_summarised(record.id, 0).await.unwrap()
        }));
    }
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert!(
        store
            .fleet(record.id)
            .await
            .unwrap()
            .unwrap()
            .summarised_at
            .is_some()
    );
    assert!(!store.mark_fleet_summarised(record.id, 0).await.unwrap());
    // A writer whose trail failed gives the summary back: the next one gets it.
    store.unmark_fleet_summarised(record.id).await.unwrap();
    assert!(store.mark_fleet_summarised(record.id, 0).await.unwrap());
    // `a` is queued again: its end gets a summary of its own.
    let retry = store.retry_failed(record.id).await.unwrap();
    assert_eq!(retry.requeued, ["a"]);
    assert_eq!(
        store.fleet(record.id).await.unwrap().unwrap().summarised_at,
        None
    );
    let a = claim(&store, "w2/1", record.id).await.unwrap();
    finish(&store, &a, RunStatus::Completed).await;
    // A process that read the fleet before the retry (round 0) saw the old end: refused.
    assert!(!store.mark_fleet_summarised(record.id, 0).await.unwrap());
    assert_eq!(
        store.fleet(record.id).await.unwrap().unwrap().summary_round,
        1
    );
    assert!(store.mark_fleet_summarised(record.id, 1).await.unwrap());
    // Nothing failed, nothing queued: the summary stands.
    assert!(
        store
            .retry_failed(record.id)
            .await
            .unwrap()
            .requeued
            .is_empty()
    );
    assert!(
        store
            .fleet(record.id)
            .await
            .unwrap()
            .unwrap()
            .summarised_at
            .is_some()
    );
    assert!(
        !store
            .mark_fleet_summarised(Uuid::new_v4(), 0)
            .await
            .unwrap()
    );
}

/// [`Store::fleet_progress`] counts by status in the database; it must agree with
/// [`FleetRecord::progress`] over every job, at each step: running, queued, held past the
/// failure limit, cancelled, done.
async fn the_counted_progress_is_the_progress_of_the_jobs(db: &Db) {
    let store = db.open().await;
    let same = |record: warden_store::FleetRecord| {
        let store = store.clone();
        async move {
            let jobs = store.fleet_jobs(record.id).await.unwrap();
            let (fleet, counted) = store.fleet_progress(record.id).await.unwrap().unwrap();
            assert_eq!(fleet, record);
            let (_, read) = record.progress(&jobs);
            assert_eq!(counted, read);
            counted
        }
    };
    let record = store
        .create_fleet(fleet(&[("a", 0), ("b", 0), ("c", 1), ("d", 1)], Some(1)))
        .await
        .unwrap();
    assert!(!same(record.clone()).await.done);
    let a = claim(&store, "w/1", record.id).await.unwrap();
    assert!(!same(record.clone()).await.done);
    finish(&store, &a, RunStatus::Failed).await;
    let b = claim(&store, "w/1", record.id).await.unwrap();
    store
        .mark_may_have_written(&b.run.claim().unwrap())
        .await
        .unwrap();
    store.recover(Stale::Instance("w")).await.unwrap();
    // Two failures (failed, outcome-unknown) past a limit of one: c and d are held.
    let halted = same(record.clone()).await;
    assert!(halted.halted && halted.done, "{halted:?}");
    assert_eq!(halted.counts.get(&JobState::Held), Some(&2));

    let other = store
        .create_fleet(fleet(&[("a", 0), ("b", 0)], None))
        .await
        .unwrap();
    let a = claim(&store, "w2/1", other.id).await.unwrap();
    let cancelled = store.cancel_fleet(other.id).await.unwrap().fleet;
    assert!(!same(cancelled.clone()).await.done);
    finish(&store, &a, RunStatus::Completed).await;
    let done = same(cancelled).await;
    assert!(done.done && !done.halted, "{done:?}");
    assert_eq!(done.counts.get(&JobState::Cancelled), Some(&1));
    assert!(
        store
            .fleet_progress(Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
}

/// A sweep can end a fleet by requeueing a job: in a cancelled fleet the requeued job is
/// cancelled, so no worker ends it. The sweep reports the fleet, whose summary is then due.
async fn a_sweep_that_requeues_a_cancelled_fleets_last_job_reports_the_fleet(db: &Db) {
    let store = db.open().await;
    let record = store
        .create_fleet(fleet(&[("reader", 0)], None))
        .await
        .unwrap();
    let reader = claim(&store, "dead/1", record.id).await.unwrap();
    store.cancel_fleet(record.id).await.unwrap();
    let recovery = store.recover(Stale::Instance("dead")).await.unwrap();
    assert_eq!(recovery.requeued, [reader.run.id]);
    assert!(recovery.outcome_unknown.is_empty());
    assert_eq!(recovery.fleets, [record.id]);
    let (_, progress) = store.fleet_progress(record.id).await.unwrap().unwrap();
    assert!(progress.done, "{progress:?}");
    assert_eq!(progress.counts.get(&JobState::Cancelled), Some(&1));
}
