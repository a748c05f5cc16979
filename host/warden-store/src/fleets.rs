//! Fleets: one plugin or script run once per tenant of a set. A fleet is a row of
//! `warden_fleets`; each tenant's job is a row of `warden_runs` with the fleet's id, its tenant
//! and its wave, so it has the claims, attempts, heartbeats, `may_have_written` mark and
//! recovery of a service run: one mechanism. [`Store::claim_next_fleet_job`] is the only claim
//! that takes them, and its one statement also holds the fleet's rules for every worker at
//! once: nothing starts in a cancelled fleet, nothing starts once failures pass the fleet's
//! limit, and a wave starts only when every job of the earlier waves has ended.

use super::{
    Backend, PersonRef, Pool, RawRun, RunRecord, RunStatus, Store, StoreError, db, from_micros,
    instance_of, now, parse_ids, storable, to_json,
};
use serde::Serialize;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;
use uuid::Uuid;

/// What [`Store::create_fleet`] records.
#[derive(Debug, Clone)]
pub struct NewFleet {
    /// The plugin or script as the operator named it.
    pub guest: String,
    /// The SHA-256 (hex) of its bytes: workers refuse a file that no longer has it.
    pub guest_sha256: String,
    /// The guest's arguments.
    pub args: Vec<String>,
    /// The `--tenants` selector, as given (for people reading the record).
    pub selector: String,
    /// The tenants' profile names with their waves (0, 1, …), in the order they start.
    pub tenants: Vec<(String, u32)>,
    /// Failures tolerated; one more stops new jobs. `None`: no limit.
    pub max_failures: Option<u64>,
    /// Reads run, writes are refused.
    pub dry_run: bool,
    /// Who asked.
    pub requested_by: PersonRef,
}

/// A fleet as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetRecord {
    /// The fleet's id.
    pub id: Uuid,
    /// The plugin or script as the operator named it.
    pub guest: String,
    /// The SHA-256 (hex) of its bytes.
    pub guest_sha256: String,
    /// The guest's arguments.
    pub args: Vec<String>,
    /// The selector as given.
    pub selector: String,
    /// Failures tolerated (`None`: no limit).
    pub max_failures: Option<u64>,
    /// Writes are refused.
    pub dry_run: bool,
    /// Who asked.
    pub requested_by: PersonRef,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was cancelled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancelled_at: Option<OffsetDateTime>,
    /// When its summary went into an audit trail ([`Store::mark_fleet_summarised`]).
    #[serde(with = "time::serde::rfc3339::option")]
    pub summarised_at: Option<OffsetDateTime>,
    /// How many retries queued jobs again: a summary is marked only for the round its writer
    /// read, so one read before a retry is refused ([`Store::mark_fleet_summarised`]).
    pub summary_round: i64,
}

/// One tenant's job of a fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetJob {
    /// The fleet it belongs to.
    pub fleet: Uuid,
    /// The tenant's profile name.
    pub tenant: String,
    /// Its wave.
    pub wave: u32,
    /// The job as a run: status, claim, `may_have_written`, results, error.
    pub run: RunRecord,
}

/// Where a job is, as people see it: its run's status, except that a queued job that can no
/// longer start says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Waiting for a worker (perhaps for its wave).
    Queued,
    /// A worker has it.
    Running,
    /// Ran to the end.
    Completed,
    /// Ran and failed (or never reached its tenant).
    Failed,
    /// The policy refused it.
    Refused,
    /// Cut off after it may have sent a write: a person must check it.
    OutcomeUnknown,
    /// Never started: the fleet was cancelled.
    Cancelled,
    /// Never started: the fleet's failures passed its limit.
    Held,
}

impl JobState {
    /// The state as shown: `queued`, … `outcome-unknown`, `cancelled`, `held`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Refused => "refused",
            JobState::OutcomeUnknown => "outcome-unknown",
            JobState::Cancelled => "cancelled",
            JobState::Held => "held",
        }
    }

    /// Whether the job counts against the fleet's failure limit.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            JobState::Failed | JobState::Refused | JobState::OutcomeUnknown
        )
    }
}

/// A fleet's jobs counted by [`JobState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetProgress {
    /// Jobs per state (states with none are left out).
    pub counts: BTreeMap<JobState, u64>,
    /// Failures passed the limit: no new job starts.
    pub halted: bool,
    /// Nothing runs and nothing more can start.
    pub done: bool,
}

impl FleetRecord {
    /// The state of each of `jobs` (this fleet's) and the counts.
    pub fn progress(&self, jobs: &[FleetJob]) -> (Vec<JobState>, FleetProgress) {
        let mut by_status = HashMap::new();
        for job in jobs {
            *by_status.entry(job.run.status).or_insert(0) += 1;
        }
        let halted = self.halted(&by_status);
        let states = jobs
            .iter()
            .map(|job| self.state_of(job.run.status, halted))
            .collect();
        (states, self.progress_of(&by_status))
    }

    /// The counts from the jobs counted by run status ([`Store::fleet_progress`]): the same
    /// rules as [`FleetRecord::progress`], without reading every job.
    pub fn progress_of(&self, by_status: &HashMap<RunStatus, u64>) -> FleetProgress {
        let halted = self.halted(by_status);
        let mut counts = BTreeMap::new();
        for (status, n) in by_status {
            *counts.entry(self.state_of(*status, halted)).or_insert(0) += n;
        }
        let running = counts.contains_key(&JobState::Running);
        let queued = counts.contains_key(&JobState::Queued);
        FleetProgress {
            done: !running && !queued,
            halted,
            counts,
        }
    }

    /// Whether the failures (failed, refused, outcome-unknown) passed the limit.
    fn halted(&self, by_status: &HashMap<RunStatus, u64>) -> bool {
        let failures: u64 = by_status
            .iter()
            .filter(|(status, _)| {
                matches!(
                    status,
                    RunStatus::Failed | RunStatus::Refused | RunStatus::OutcomeUnknown
                )
            })
            .map(|(_, n)| n)
            .sum();
        self.max_failures.is_some_and(|max| failures > max)
    }

    /// A job's state from its run's status, in this fleet (cancelled or `halted`).
    fn state_of(&self, status: RunStatus, halted: bool) -> JobState {
        match status {
            RunStatus::Queued if self.cancelled_at.is_some() => JobState::Cancelled,
            RunStatus::Queued if halted => JobState::Held,
            RunStatus::Running => JobState::Running,
            RunStatus::Completed => JobState::Completed,
            RunStatus::Refused => JobState::Refused,
            RunStatus::OutcomeUnknown => JobState::OutcomeUnknown,
            RunStatus::Queued | RunStatus::PendingApproval => JobState::Queued,
            RunStatus::Failed | RunStatus::Rejected | RunStatus::Expired => JobState::Failed,
        }
    }
}

/// What [`Store::retry_failed`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetRetry {
    /// Failed jobs that never marked a write: queued again (tenant names).
    pub requeued: Vec<String>,
    /// Failed jobs that may have written: left alone, a retry could repeat their writes.
    pub wrote: Vec<String>,
}

/// What [`Store::cancel_fleet`] did.
#[derive(Debug, Clone)]
pub struct FleetCancel {
    /// The fleet as it is now.
    pub fleet: FleetRecord,
    /// Whether this call cancelled it (`false`: it was cancelled already).
    pub cancelled_now: bool,
}

/// The columns a [`FleetJob`] is read from.
macro_rules! job_columns {
    () => {
        concat!(run_columns!(), ", fleet_id, tenant, wave")
    };
}

/// The columns a [`FleetRecord`] is read from.
macro_rules! fleet_columns {
    () => {
        "id, guest, guest_sha256, args, selector, max_failures, dry_run, requested_by_oid, \
         requested_by_upn, created_at, cancelled_at, summarised_at, summary_round"
    };
}

/// [`Store::claim_next_fleet_job`]'s statement, given the backend's clock and the lock clause
/// of its row-choosing subquery: `$1` worker, `$2` instance, `$3` the fleet or NULL (any).
macro_rules! claim_fleet_job_sql {
    ($now:expr, $lock:expr) => {
        concat!(
            "UPDATE warden_runs SET status = 'running', worker = $1, instance = $2, \
             attempt = attempt + 1, started_at = ",
            $now,
            ", heartbeat_at = ",
            $now,
            ", updated_at = ",
            $now,
            " WHERE status = 'queued' AND id = (SELECT r.id FROM warden_runs r \
             JOIN warden_fleets f ON f.id = r.fleet_id \
             WHERE r.status = 'queued' AND ($3 IS NULL OR r.fleet_id = $3) \
             AND f.cancelled_at IS NULL \
             AND (f.max_failures IS NULL OR (SELECT COUNT(*) FROM warden_runs x \
             WHERE x.fleet_id = r.fleet_id \
             AND x.status IN ('failed', 'refused', 'outcome-unknown')) <= f.max_failures) \
             AND NOT EXISTS (SELECT 1 FROM warden_runs p WHERE p.fleet_id = r.fleet_id \
             AND p.wave < r.wave AND p.status IN ('queued', 'running')) \
             ORDER BY r.queued_at, r.id LIMIT 1",
            $lock,
            ") RETURNING ",
            job_columns!()
        )
    };
}

macro_rules! raw_job {
    ($row:expr) => {{
        let row = $row;
        let fleet: Option<String> = row.try_get("fleet_id").map_err(db("reading a fleet job"))?;
        let tenant: Option<String> = row.try_get("tenant").map_err(db("reading a fleet job"))?;
        let wave: Option<i64> = row.try_get("wave").map_err(db("reading a fleet job"))?;
        let run = raw_run!(row)?;
        FleetJob {
            fleet: parse_ids(vec![fleet.unwrap_or_default()])?.remove(0),
            tenant: tenant.unwrap_or_default(),
            wave: u32::try_from(wave.unwrap_or(0)).map_err(|error| StoreError::Corrupt {
                what: "job wave",
                reason: error.to_string(),
            })?,
            run,
        }
    }};
}

macro_rules! raw_fleet {
    ($row:expr) => {{
        let row = $row;
        (|| -> Result<FleetRecord, StoreError> {
            let get = db("reading a fleet");
            let id: String = row.try_get("id").map_err(get)?;
            let args: String = row.try_get("args").map_err(db("reading a fleet"))?;
            let max_failures: Option<i64> =
                row.try_get("max_failures").map_err(db("reading a fleet"))?;
            let cancelled_at: Option<i64> =
                row.try_get("cancelled_at").map_err(db("reading a fleet"))?;
            let summarised_at: Option<i64> = row
                .try_get("summarised_at")
                .map_err(db("reading a fleet"))?;
            Ok(FleetRecord {
                id: parse_ids(vec![id])?.remove(0),
                guest: row.try_get("guest").map_err(db("reading a fleet"))?,
                guest_sha256: row.try_get("guest_sha256").map_err(db("reading a fleet"))?,
                args: serde_json::from_str(&args).map_err(|error| StoreError::Corrupt {
                    what: "fleet arguments",
                    reason: error.to_string(),
                })?,
                selector: row.try_get("selector").map_err(db("reading a fleet"))?,
                max_failures: max_failures.map(|max| u64::try_from(max).unwrap_or(0)),
                dry_run: row.try_get("dry_run").map_err(db("reading a fleet"))?,
                requested_by: PersonRef {
                    oid: row
                        .try_get("requested_by_oid")
                        .map_err(db("reading a fleet"))?,
                    upn: row
                        .try_get("requested_by_upn")
                        .map_err(db("reading a fleet"))?,
                },
                created_at: from_micros(row.try_get("created_at").map_err(db("reading a fleet"))?)?,
                cancelled_at: cancelled_at.map(from_micros).transpose()?,
                summarised_at: summarised_at.map(from_micros).transpose()?,
                summary_round: row
                    .try_get("summary_round")
                    .map_err(db("reading a fleet"))?,
            })
        })()
    }};
}

impl Store {
    /// Records a fleet and queues one job per tenant, all in one transaction (a fleet is never
    /// seen half created). Jobs are claimed in the order of `tenants`, wave by wave.
    pub async fn create_fleet(&self, new: NewFleet) -> Result<FleetRecord, StoreError> {
        if new.requested_by.oid.is_empty() {
            return Err(StoreError::Invalid {
                what: "the requester",
                reason: "a fleet needs the requester's id".to_owned(),
            });
        }
        if new.tenants.is_empty() {
            return Err(StoreError::Invalid {
                what: "the tenants",
                reason: "a fleet of no tenant: select at least one".to_owned(),
            });
        }
        let at = now();
        let id = Uuid::new_v4().to_string();
        let args = to_json(&serde_json::json!(new.args));
        let max_failures = new
            .max_failures
            .map(|max| i64::try_from(max).unwrap_or(i64::MAX));
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db("recording a fleet"))?;
            sqlx::query(
                "INSERT INTO warden_fleets (id, guest, guest_sha256, args, selector, \
                 max_failures, dry_run, requested_by_oid, requested_by_upn, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&id)
            .bind(storable(&new.guest))
            .bind(&new.guest_sha256)
            .bind(&args)
            .bind(storable(&new.selector))
            .bind(max_failures)
            .bind(new.dry_run)
            .bind(&new.requested_by.oid)
            .bind(storable(&new.requested_by.upn))
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db("recording a fleet"))?;
            for (index, (tenant, wave)) in new.tenants.iter().enumerate() {
                // One microsecond apart: claims take the oldest first, so jobs start in the
                // order given.
                let queued_at = at + i64::try_from(index).unwrap_or(i64::MAX);
                sqlx::query(
                    "INSERT INTO warden_runs (id, task, parameters, status, requested_by_oid, \
                     requested_by_upn, created_at, updated_at, queued_at, fleet_id, tenant, wave) \
                     VALUES ($1, $2, $3, 'queued', $4, $5, $6, $6, $7, $8, $9, $10)",
                )
                .bind(Uuid::new_v4().to_string())
                .bind(storable(&new.guest))
                .bind(&args)
                .bind(&new.requested_by.oid)
                .bind(storable(&new.requested_by.upn))
                .bind(at)
                .bind(queued_at)
                .bind(&id)
                .bind(storable(tenant))
                .bind(i64::from(*wave))
                .execute(&mut *tx)
                .await
                .map_err(db("queueing a fleet's jobs"))?;
            }
            tx.commit().await.map_err(db("recording a fleet"))?;
        });
        let id = parse_ids(vec![id])?.remove(0);
        self.fleet(id).await?.ok_or(StoreError::NotFound { id })
    }

    /// The fleet with this id, if any.
    pub async fn fleet(&self, id: Uuid) -> Result<Option<FleetRecord>, StoreError> {
        let id = id.to_string();
        with_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                fleet_columns!(),
                " FROM warden_fleets WHERE id = $1"
            ))
            .bind(&id)
            .fetch_optional(pool)
            .await
            .map_err(db("reading a fleet"))?;
            row.map(|row| raw_fleet!(row)).transpose()
        })
    }

    /// A fleet's jobs, by wave and tenant name (sorted here, by code point: the backends'
    /// collations differ).
    pub async fn fleet_jobs(&self, id: Uuid) -> Result<Vec<FleetJob>, StoreError> {
        let id = id.to_string();
        let mut jobs = with_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                job_columns!(),
                " FROM warden_runs WHERE fleet_id = $1"
            ))
            .bind(&id)
            .fetch_all(pool)
            .await
            .map_err(db("listing a fleet's jobs"))?;
            let mut jobs = Vec::with_capacity(rows.len());
            for row in rows {
                jobs.push(raw_job!(row));
            }
            jobs
        });
        jobs.sort_by(|a, b| (a.wave, &a.tenant, a.run.id).cmp(&(b.wave, &b.tenant, b.run.id)));
        Ok(jobs)
    }

    /// The fleet and its progress, its jobs counted by status in one aggregate query (read
    /// after the fleet, as [`FleetRecord::progress`] wants): what a worker asks when it finds
    /// nothing to claim, without reading every job. `None`: no such fleet.
    pub async fn fleet_progress(
        &self,
        id: Uuid,
    ) -> Result<Option<(FleetRecord, FleetProgress)>, StoreError> {
        let Some(fleet) = self.fleet(id).await? else {
            return Ok(None);
        };
        let id = id.to_string();
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM warden_runs WHERE fleet_id = $1 GROUP BY status",
            )
            .bind(&id)
            .fetch_all(pool)
            .await
            .map_err(db("counting a fleet's jobs"))?
        });
        let mut by_status = HashMap::new();
        for (status, n) in rows {
            let status = status
                .parse::<RunStatus>()
                .map_err(|error| StoreError::Corrupt {
                    what: "job status",
                    reason: error.to_string(),
                })?;
            by_status.insert(status, u64::try_from(n).unwrap_or(0));
        }
        let progress = fleet.progress_of(&by_status);
        Ok(Some((fleet, progress)))
    }

    /// Hands `worker` the next fleet job that may start (of `fleet`, or of any fleet), now
    /// `running`, or `None`. A job may start when its fleet is not cancelled, the fleet's
    /// failures (failed, refused, outcome-unknown) are within its limit, and no job of an
    /// earlier wave is queued or running; one statement checks all three and takes the row as
    /// [`Store::claim_next`] does (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so two workers
    /// never get the same job. Its [`RunRecord::claim`] fences the later steps.
    pub async fn claim_next_fleet_job(
        &self,
        worker: &str,
        fleet: Option<Uuid>,
    ) -> Result<Option<FleetJob>, StoreError> {
        let instance = instance_of(worker)?;
        let sql = match self.backend() {
            Backend::Sqlite => claim_fleet_job_sql!(sqlite_now!(), ""),
            Backend::Postgres => {
                claim_fleet_job_sql!(postgres_now!(), " FOR UPDATE OF r SKIP LOCKED")
            }
        };
        let fleet = fleet.map(|id| id.to_string());
        with_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(worker)
                .bind(instance)
                .bind(&fleet)
                .fetch_optional(pool)
                .await
                .map_err(db("claiming a fleet job"))?;
            Ok(match row {
                Some(row) => Some(raw_job!(row)),
                None => None,
            })
        })
    }

    /// Cancels a fleet: no job of it starts from now on; running jobs end as they would.
    /// Cancelling a cancelled fleet changes nothing; of racing cancels one is `cancelled_now`.
    pub async fn cancel_fleet(&self, id: Uuid) -> Result<FleetCancel, StoreError> {
        let id_text = id.to_string();
        let at = now();
        let changed = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE warden_fleets SET cancelled_at = $2 WHERE id = $1 AND cancelled_at IS NULL",
            )
            .bind(&id_text)
            .bind(at)
            .execute(pool)
            .await
            .map_err(db("cancelling a fleet"))?
            .rows_affected()
        });
        let fleet = self.fleet(id).await?.ok_or(StoreError::NotFound { id })?;
        Ok(FleetCancel {
            fleet,
            cancelled_now: changed == 1,
        })
    }

    /// Whether a job of the fleet is running: one indexed count, cheap enough to ask after
    /// every job's end (a fleet with a running job has not ended).
    pub async fn fleet_has_running(&self, id: Uuid) -> Result<bool, StoreError> {
        let id = id.to_string();
        let running: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM warden_runs WHERE fleet_id = $1 AND status = 'running'",
            )
            .bind(&id)
            .fetch_one(pool)
            .await
            .map_err(db("counting a fleet's running jobs"))?
        });
        Ok(running > 0)
    }

    /// Marks the fleet's summary as written, once: `true` for the one caller whose statement
    /// set it (that caller writes the summary line), `false` for every other (already
    /// summarised, no such fleet, or `round` is not the fleet's [`FleetRecord::summary_round`]
    /// any more). Cleared by [`Store::retry_failed`] when it queues jobs, which also starts a
    /// new round: a caller that read the fleet before that retry read a stale end, and is
    /// refused.
    pub async fn mark_fleet_summarised(&self, id: Uuid, round: i64) -> Result<bool, StoreError> {
        let id = id.to_string();
        let at = now();
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE warden_fleets SET summarised_at = $2 WHERE id = $1 \
                 AND summarised_at IS NULL AND summary_round = $3",
            )
            .bind(&id)
            .bind(at)
            .bind(round)
            .execute(pool)
            .await
            .map_err(db("marking a fleet summarised"))?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Undoes [`Store::mark_fleet_summarised`] when its caller could not write the summary (its
    /// audit trail failed): the next process to see the fleet end writes it instead.
    pub async fn unmark_fleet_summarised(&self, id: Uuid) -> Result<(), StoreError> {
        let id = id.to_string();
        with_pool!(self, |pool| {
            sqlx::query("UPDATE warden_fleets SET summarised_at = NULL WHERE id = $1")
                .bind(&id)
                .execute(pool)
                .await
                .map_err(db("unmarking a fleet's summary"))?;
        });
        Ok(())
    }

    /// Queues a fleet's failed jobs again, except those that may have written (a retry could
    /// repeat a write whose effect is known); outcome-unknown jobs are never retried. One
    /// statement: a job is requeued once however many retries race.
    ///
    /// Refused for a cancelled fleet: no worker starts its jobs, so the retry would queue
    /// tenants that never run. Retrying a fleet stopped at its failure limit lowers its failure
    /// count: the jobs it held may start again with the retried ones.
    pub async fn retry_failed(&self, id: Uuid) -> Result<FleetRetry, StoreError> {
        let Some(fleet) = self.fleet(id).await? else {
            return Err(StoreError::NotFound { id });
        };
        if fleet.cancelled_at.is_some() {
            return Err(cancelled());
        }
        let id_text = id.to_string();
        let at = now();
        let requeued: Vec<String> = with_pool!(self, |pool| {
            let mut tx = pool
                .begin()
                .await
                .map_err(db("retrying a fleet's failed jobs"))?;
            let requeued: Vec<String> = sqlx::query_scalar(
                "UPDATE warden_runs SET status = 'queued', queued_at = $2, updated_at = $2, \
                 started_at = NULL, finished_at = NULL, heartbeat_at = NULL, worker = NULL, \
                 instance = NULL, results = NULL, error = NULL \
                 WHERE fleet_id = $1 AND status = 'failed' AND NOT may_have_written \
                 AND NOT EXISTS (SELECT 1 FROM warden_fleets f WHERE f.id = $1 \
                 AND f.cancelled_at IS NOT NULL) RETURNING tenant",
            )
            .bind(&id_text)
            .bind(at)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("retrying a fleet's failed jobs"))?;
            // In the same transaction: the retried jobs' end is summarised again (a new
            // round, so a summariser that read the fleet before this is refused its mark), and
            // no worker can end them before the fleet is open to a new summary.
            if !requeued.is_empty() {
                sqlx::query(
                    "UPDATE warden_fleets SET summarised_at = NULL, \
                     summary_round = summary_round + 1 WHERE id = $1",
                )
                .bind(&id_text)
                .execute(&mut *tx)
                .await
                .map_err(db("retrying a fleet's failed jobs"))?;
            }
            tx.commit()
                .await
                .map_err(db("retrying a fleet's failed jobs"))?;
            requeued
        });
        if requeued.is_empty()
            && self
                .fleet(id)
                .await?
                .is_some_and(|f| f.cancelled_at.is_some())
        {
            return Err(cancelled());
        }
        let mut retry = FleetRetry {
            requeued,
            wrote: self
                .fleet_jobs(id)
                .await?
                .into_iter()
                .filter(|job| job.run.status == RunStatus::Failed && job.run.may_have_written)
                .map(|job| job.tenant)
                .collect(),
        };
        retry.requeued.sort();
        Ok(retry)
    }
}

/// Why a cancelled fleet is not retried.
fn cancelled() -> StoreError {
    StoreError::Invalid {
        what: "the fleet",
        reason: "it was cancelled, and no worker starts a cancelled fleet's jobs: run a new \
                 fleet over the tenants that failed"
            .to_owned(),
    }
}
