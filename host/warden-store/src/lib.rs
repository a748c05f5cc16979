//! # warden-store: durable runs, approvals, run logs and sessions
//!
//! The records `warden serve` (and the fleet workers after it) keep across restarts: each run of
//! a task with its parameters, requester, approver and outcome; the run's log lines; the signed-in
//! people's sessions. One schema (`migrations/`, brought up to date by [`Store::open`]) on an
//! embedded SQLite file (the default, no server) or on PostgreSQL (several instances sharing one
//! database). It knows nothing of HTTP, policy or Exchange.
//!
//! Every state change is one SQL statement guarded by the status it leaves (`WHERE status = …`,
//! rows affected checked), so two instances can never both claim, approve or finish a run:
//!
//! ```text
//! pending-approval ──decide──▶ queued ──claim_next──▶ running ──finish──▶ completed | failed
//!        │                       ▲                       │                 | refused | outcome-unknown
//!        ├──decide──▶ rejected   └──recover (no write)───┤
//!        └──expire_pending──▶ expired                    └──recover (may have written)──▶ outcome-unknown
//! ```
//!
//! A worker holds a running run by its [`Claim`] (worker name and `attempt`, counted up by
//! each [`Store::claim_next`]); only that claim may [`Store::mark_may_have_written`],
//! [`Store::append_log`] or [`Store::finish`], so a worker cut off while its run was recovered
//! and claimed again is refused ([`StoreError::ClaimLost`]) instead of writing twice. Workers
//! call [`Store::heartbeat`]; [`Store::recover`] takes runs back from an instance by its exact
//! name (at its own start) or from workers silent for too long ([`Stale`]); claim times,
//! heartbeats and that cutoff are the database's clock, never a host's. A run that marked
//! `may_have_written` before sending a write is never re-run: it becomes `outcome-unknown` for a
//! person to reconcile. Nobody decides their own run ([`StoreError::SelfApproval`]; the schema
//! has the same check); a decision keeps what it was based on ([`RunRecord::decided_as`], the
//! caller's JSON, for the check when the run starts). Session ids are stored as their SHA-256 only. A database URL is shown
//! (errors, `Debug`) without its password. Lists page by [`Cursor`] (keyset on `(created_at, id)`).
//!
//! SQLite: the file is created with mode 0600 (its directory 0700 when created; existing
//! `-wal`/`-shm` files are made 0600 too), WAL, a busy timeout, foreign keys on,
//! `synchronous = FULL` (a `may_have_written` mark must survive a power cut); migrations run
//! under an exclusive lock on `<file>.lock` (sqlx's SQLite migrations take none). PostgreSQL:
//! [`Store::claim_next`] takes the oldest queued run with `FOR UPDATE SKIP LOCKED`; migrations
//! take sqlx's advisory lock, so instances may start together.
//!
//! Schema: every table is `warden_*` and applied migrations are recorded in
//! `warden_migrations`, so the store may share a PostgreSQL database with other software.
//! Upgrades: a released migration is never edited (sqlx refuses a database whose applied
//! migration's checksum differs; a test pins them); changes come as new, additive migrations.
//! Upgrade instances one by one only when the new migration keeps the old code working;
//! otherwise stop every instance, start one new instance (it migrates), then the rest.
//! Migration 2 (`decided_as`) is of the second kind: the release before it sends no heartbeats
//! and does not know the migration. Runs decided before it have no [`RunRecord::decided_as`].
//! Migration 3 (fleets) is of the second kind too: a release before it would claim fleet jobs as
//! service runs, so upgrade every service instance before a fleet uses the database.
//! Migration 4 (a fleet's `summarised_at`, `summary_round`) only adds columns, yet a release
//! before it refuses a database migrated to 4 (sqlx knows no migration 4): stop every `fleet`,
//! `worker` and `serve` process sharing the database and upgrade them together.
//! Migration 5 changes nothing in the schema: it is a fence. A release before it would work a
//! dry-run fleet's jobs as ordinary ones and send their writes; knowing no migration 5, it
//! refuses to open a database migrated to 5. Stop every process sharing the database and
//! upgrade them together.
//!
//! Fleets (`warden fleet`): a [`FleetRecord`] and one job per tenant, each a row of the runs
//! table with its tenant and wave ([`FleetJob`]), so a job has a run's claims, heartbeats,
//! `may_have_written` mark and recovery. Only [`Store::claim_next_fleet_job`] takes them; it also
//! holds the fleet's cancel, failure limit and waves (see the `fleets` module).
#![deny(missing_docs)]

mod target;
#[cfg(feature = "testing")]
pub mod testing;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, SqlSafeStr};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use target::Target;
use time::OffsetDateTime;
use uuid::Uuid;

/// The file name [`Store::open_sqlite_in`] uses in the directory it is given.
pub const SQLITE_FILE_NAME: &str = "warden.db";

/// How long a SQLite writer waits for another to finish before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The state of a run. Final states never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Waiting for an approver's decision.
    PendingApproval,
    /// Waiting for a worker.
    Queued,
    /// A worker has it.
    Running,
    /// Ran to the end.
    Completed,
    /// Ran and failed.
    Failed,
    /// The policy refused it when it started (say, the policy changed while it waited).
    Refused,
    /// An approver rejected it.
    Rejected,
    /// Nobody decided before its approval expired.
    Expired,
    /// Cut off after it may have sent a write: a person must check; never re-run by itself.
    OutcomeUnknown,
}

impl RunStatus {
    /// Every status, in the order a run meets them.
    pub const ALL: [RunStatus; 9] = [
        RunStatus::PendingApproval,
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Refused,
        RunStatus::Rejected,
        RunStatus::Expired,
        RunStatus::OutcomeUnknown,
    ];

    /// The status as stored and shown: `pending-approval`, `queued`, … `outcome-unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::PendingApproval => "pending-approval",
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Refused => "refused",
            RunStatus::Rejected => "rejected",
            RunStatus::Expired => "expired",
            RunStatus::OutcomeUnknown => "outcome-unknown",
        }
    }

    /// Whether the run is over (no transition leaves this status).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunStatus::PendingApproval | RunStatus::Queued | RunStatus::Running
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the [`RunStatus`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a run status (one of pending-approval, queued, running, completed, failed, refused, rejected, expired, outcome-unknown)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_owned()))
    }
}

/// A signed-in person, as runs record them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRef {
    /// Entra object id: what identity comparisons (four eyes) use.
    pub oid: String,
    /// User principal name, for people reading the record.
    pub upn: String,
}

/// What [`Store::create_run`] records.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The task's id in the policy.
    pub task: String,
    /// The parameter values, as checked against the policy.
    pub parameters: Value,
    /// Who asked.
    pub requested_by: PersonRef,
    /// `true`: the run waits as `pending-approval`; `false`: it is queued at once.
    pub needs_approval: bool,
    /// When a pending approval expires (`None`: never).
    pub approval_expires_at: Option<OffsetDateTime>,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: Uuid,
    /// The task's id in the policy.
    pub task: String,
    /// The parameter values.
    pub parameters: Value,
    /// Where the run is.
    pub status: RunStatus,
    /// Who asked.
    pub requested_by: PersonRef,
    /// Who approved or rejected it.
    pub decided_by: Option<PersonRef>,
    /// What the decision was based on: the decider's standing (groups, roles) as the caller
    /// gave it to [`Store::decide`]; `None` before a decision (and for decisions stored before
    /// the store kept it).
    pub decided_as: Option<Value>,
    /// The approver's comment.
    pub decision_comment: Option<String>,
    /// When it was approved or rejected.
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    /// When a pending approval expires.
    #[serde(with = "time::serde::rfc3339::option")]
    pub approval_expires_at: Option<OffsetDateTime>,
    /// When it was asked for.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When a worker claimed it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final status.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// What it returned.
    pub results: Option<Value>,
    /// Why it failed or was refused.
    pub error: Option<String>,
    /// It may have sent a write (marked before the write was sent).
    pub may_have_written: bool,
    /// The worker that claimed it last.
    pub worker: Option<String>,
    /// How many times a worker claimed it (a recovered run claimed again counts up).
    pub attempt: u64,
    /// When its worker last said it is alive (see [`Store::heartbeat`]).
    #[serde(with = "time::serde::rfc3339::option")]
    pub heartbeat_at: Option<OffsetDateTime>,
}

impl RunRecord {
    /// The claim a worker holds on this run, for the steps only the holder may take
    /// ([`Store::mark_may_have_written`], [`Store::finish`], [`Store::append_log`]); `None` when
    /// the run is not running.
    pub fn claim(&self) -> Option<Claim> {
        if self.status != RunStatus::Running {
            return None;
        }
        Some(Claim {
            id: self.id,
            worker: self.worker.clone()?,
            attempt: self.attempt,
        })
    }

    /// Where a list that ends with this run goes on (see [`Cursor`]).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// A worker's hold on a running run, as [`Store::claim_next`] gave it. Once the run is recovered
/// (and perhaps claimed again, with a higher `attempt`), the old claim is refused with
/// [`StoreError::ClaimLost`]: a worker that was cut off can never mark, log or finish the run
/// that someone else now holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The run.
    pub id: Uuid,
    /// The worker holding it.
    pub worker: String,
    /// Which claim of the run this is.
    pub attempt: u64,
}

/// A place in a list of runs (keyset paging): the next page starts after the run that has it.
/// Lists are ordered by `(created_at, id)`, so paging never skips or repeats a run, and a
/// caller that filters (say, by who may approve) can page on until it has enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The run's creation time.
    pub created_at: OffsetDateTime,
    /// The run's id.
    pub id: Uuid,
}

/// Which running runs [`Store::recover`] takes back from their workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale<'a> {
    /// Every running run: only for a single instance that is the database's sole user.
    All,
    /// The runs of this instance's workers (exact name: the worker name up to its last `/`),
    /// at its own start, before its workers claim anything.
    Instance(&'a str),
    /// The service runs (not fleet jobs) whose worker has not called [`Store::heartbeat`] for
    /// this long, by the database's clock: the runs of `warden serve` instances that died and
    /// never came back. Fleet jobs are left to the fleet workers' own timing.
    SilentFor(Duration),
    /// [`Stale::SilentFor`] for fleet jobs only: what fleet workers sweep, with their own
    /// `--stale-after-secs`, never touching a service's runs.
    FleetJobsSilentFor(Duration),
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Its place in the run's log, from 1.
    pub seq: u64,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `info`, `warn`, … as the writer gave it.
    pub level: String,
    /// The text.
    pub line: String,
}

/// What [`Store::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Running runs that had not marked a write: queued again, in their old place.
    pub requeued: Vec<Uuid>,
    /// Running runs that may have written: now `outcome-unknown`, never re-run.
    pub outcome_unknown: Vec<Uuid>,
    /// The fleets of every recovered run that was a fleet job (requeued ones too), each once:
    /// the sweep may have ended one (an outcome-unknown job, or a job requeued into a
    /// cancelled or halted fleet), and no worker ends it.
    pub fleets: Vec<Uuid>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    /// What the session holds.
    pub data: Value,
    /// When it stops being returned.
    pub expires_at: OffsetDateTime,
}

/// Which database a [`Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// What went wrong in the store. Never holds a database password or a session id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL cannot be used.
    #[error(
        "the database URL {shown} cannot be used: {reason}; use `sqlite:PATH` or \
         `postgres://USER@HOST/DATABASE`"
    )]
    BadUrl {
        /// The URL without its password.
        shown: String,
        /// Why.
        reason: String,
    },
    /// The SQLite file or its directory could not be created or made private.
    #[error("preparing the database file {}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be reached.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The database, without its password.
        target: String,
        /// sqlx's error.
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("bringing the schema of {target} up to date: {source}")]
    Migrate {
        /// The database, without its password.
        target: String,
        /// sqlx's error.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("{operation}: {source}")]
    Database {
        /// What the store was doing.
        operation: &'static str,
        /// sqlx's error.
        source: sqlx::Error,
    },
    /// No run has this id.
    #[error("no run has the id {id}")]
    NotFound {
        /// The id asked for.
        id: Uuid,
    },
    /// The run is not in the status this step starts from (someone else got there first, or the
    /// step does not apply to a run in this state).
    #[error("the run is {current}, so this step does not apply to it")]
    Conflict {
        /// The run's status now.
        current: RunStatus,
    },
    /// The worker's claim on the run is gone: the run was recovered (and perhaps claimed by
    /// another worker). The worker must stop and send nothing.
    #[error(
        "worker {worker} no longer holds run {id} (claim {attempt}): it was recovered, so stop \
         without sending anything"
    )]
    ClaimLost {
        /// The run.
        id: Uuid,
        /// The worker whose claim is gone.
        worker: String,
        /// The claim it held.
        attempt: u64,
    },
    /// The approver is the person who requested the run.
    #[error("nobody may approve or reject their own run: ask another approver")]
    SelfApproval,
    /// An argument is not acceptable.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// Why, and what to give instead.
        reason: String,
    },
    /// A stored value cannot be read back.
    #[error("the stored {what} cannot be read: {reason}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store: a pool of connections to one database. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The database without its password, for errors and `Debug`.
    shown: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Runs the same code over whichever pool the store has (the SQL is the same text; `$N`
/// placeholders work on both).
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The columns a [`RunRecord`] is read from, in every `SELECT` and `RETURNING`.
macro_rules! run_columns {
    () => {
        "id, task, parameters, status, requested_by_oid, requested_by_upn, decided_by_oid, \
         decided_by_upn, decided_as, decision_comment, decided_at, approval_expires_at, \
         created_at, updated_at, started_at, finished_at, results, error, may_have_written, \
         worker, attempt, heartbeat_at"
    };
}

/// The guard of every step only a run's holder may take: `$1` id, `$2` worker, `$3` attempt.
macro_rules! held_by_claim {
    () => {
        "id = $1 AND status = 'running' AND worker = $2 AND attempt = $3"
    };
}

/// The database's clock, microseconds since the Unix epoch, read in SQL: claim times,
/// heartbeats and the stale cutoff all come from the one clock every instance shares, so the
/// instances' own clocks never matter. Both are fixed within one statement.
macro_rules! sqlite_now {
    () => {
        "CAST(unixepoch('subsec') * 1000000 AS INTEGER)"
    };
}

/// [`sqlite_now!`] for PostgreSQL (`now()` is the transaction's start on the server).
macro_rules! postgres_now {
    () => {
        "CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT)"
    };
}

/// [`Store::recover`]'s statement up to the end of its row-choosing subquery (PostgreSQL adds
/// `FOR UPDATE`), given the backend's clock ([`sqlite_now!`]): `$1` the instance or NULL, `$2`
/// the silence (microseconds) past which a heartbeat is stale, or NULL, `$3` TRUE for fleet
/// jobs only, FALSE for service runs only, NULL for both. The outer
/// `status = 'running'` re-check makes a row another recovery just took a no-op.
macro_rules! recover_sql {
    ($($now:tt)+) => {
        concat!(
            "UPDATE warden_runs SET \
             status = CASE WHEN may_have_written THEN 'outcome-unknown' ELSE 'queued' END, \
             finished_at = CASE WHEN may_have_written THEN ", $($now)+, " ELSE NULL END, \
             error = CASE WHEN may_have_written THEN COALESCE(error, 'the worker running this \
             run stopped after it may have sent a write: check its effect before running it \
             again') ELSE error END, \
             worker = CASE WHEN may_have_written THEN worker ELSE NULL END, \
             instance = CASE WHEN may_have_written THEN instance ELSE NULL END, \
             started_at = CASE WHEN may_have_written THEN started_at ELSE NULL END, \
             heartbeat_at = CASE WHEN may_have_written THEN heartbeat_at ELSE NULL END, \
             updated_at = ", $($now)+, " \
             WHERE status = 'running' AND id IN (SELECT id FROM warden_runs \
             WHERE status = 'running' AND ($1 IS NULL OR instance = $1) \
             AND ($2 IS NULL OR heartbeat_at IS NULL OR heartbeat_at < ", $($now)+, " - $2) \
             AND ($3 IS NULL OR (fleet_id IS NOT NULL) = $3) \
             ORDER BY id"
        )
    };
}

/// The keyset condition and order of the newest-first lists: `$2` the cursor's time or NULL,
/// `$3` its id, `$4` the limit.
macro_rules! newest_first_after {
    () => {
        "($2 IS NULL OR created_at < $2 OR (created_at = $2 AND id < $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    };
}

/// Reads a row of [`run_columns!`] into a [`RawRun`] (a macro: the row types of the two
/// backends share no trait that names these decodes).
macro_rules! raw_run {
    ($row:expr) => {{
        let row = $row;
        (|| -> Result<RawRun, sqlx::Error> {
            Ok(RawRun {
                id: row.try_get("id")?,
                task: row.try_get("task")?,
                parameters: row.try_get("parameters")?,
                status: row.try_get("status")?,
                requested_by_oid: row.try_get("requested_by_oid")?,
                requested_by_upn: row.try_get("requested_by_upn")?,
                decided_by_oid: row.try_get("decided_by_oid")?,
                decided_by_upn: row.try_get("decided_by_upn")?,
                decided_as: row.try_get("decided_as")?,
                decision_comment: row.try_get("decision_comment")?,
                decided_at: row.try_get("decided_at")?,
                approval_expires_at: row.try_get("approval_expires_at")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                results: row.try_get("results")?,
                error: row.try_get("error")?,
                may_have_written: row.try_get("may_have_written")?,
                worker: row.try_get("worker")?,
                attempt: row.try_get("attempt")?,
                heartbeat_at: row.try_get("heartbeat_at")?,
            })
        })()
        .map_err(db("reading a run"))
        .and_then(RawRun::into_record)
    }};
}

/// A run's columns as the database holds them.
struct RawRun {
    id: String,
    task: String,
    parameters: String,
    status: String,
    requested_by_oid: String,
    requested_by_upn: String,
    decided_by_oid: Option<String>,
    decided_by_upn: Option<String>,
    decided_as: Option<String>,
    decision_comment: Option<String>,
    decided_at: Option<i64>,
    approval_expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    results: Option<String>,
    error: Option<String>,
    may_have_written: bool,
    worker: Option<String>,
    attempt: i64,
    heartbeat_at: Option<i64>,
}

impl RawRun {
    fn into_record(self) -> Result<RunRecord, StoreError> {
        let corrupt = |what: &'static str| {
            move |error: &dyn fmt::Display| StoreError::Corrupt {
                what,
                reason: error.to_string(),
            }
        };
        let decided_by = match (self.decided_by_oid, self.decided_by_upn) {
            (Some(oid), Some(upn)) => Some(PersonRef { oid, upn }),
            _ => None,
        };
        Ok(RunRecord {
            id: Uuid::parse_str(&self.id).map_err(|e| corrupt("run id")(&e))?,
            task: self.task,
            parameters: serde_json::from_str(&self.parameters)
                .map_err(|e| corrupt("run parameters")(&e))?,
            status: self.status.parse().map_err(|e| corrupt("run status")(&e))?,
            requested_by: PersonRef {
                oid: self.requested_by_oid,
                upn: self.requested_by_upn,
            },
            decided_by,
            decided_as: self
                .decided_as
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| corrupt("the decider's standing")(&e))?,
            decision_comment: self.decision_comment,
            decided_at: self.decided_at.map(from_micros).transpose()?,
            approval_expires_at: self.approval_expires_at.map(from_micros).transpose()?,
            created_at: from_micros(self.created_at)?,
            updated_at: from_micros(self.updated_at)?,
            started_at: self.started_at.map(from_micros).transpose()?,
            finished_at: self.finished_at.map(from_micros).transpose()?,
            results: self
                .results
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| corrupt("run results")(&e))?,
            error: self.error,
            may_have_written: self.may_have_written,
            worker: self.worker,
            attempt: u64::try_from(self.attempt).map_err(|e| corrupt("run attempt")(&e))?,
            heartbeat_at: self.heartbeat_at.map(from_micros).transpose()?,
        })
    }
}

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { operation, source }
}

/// Times are stored as microseconds since the Unix epoch (PostgreSQL's own precision).
fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn from_micros(stored: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(stored) * 1000).map_err(|error| {
        StoreError::Corrupt {
            what: "time",
            reason: error.to_string(),
        }
    })
}

fn now() -> i64 {
    micros(OffsetDateTime::now_utc())
}

fn session_key(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Free text as every backend stores it: PostgreSQL's `TEXT` refuses NUL (SQLite keeps it), so
/// a guest's error or log line holding one would be stored on one backend and fail forever on
/// the other. NUL becomes U+FFFD on both.
fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn to_json(value: &Value) -> String {
    // A `Value` always serializes.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn limit(limit: u32) -> i64 {
    i64::from(limit)
}

/// The table recording which migrations ran (and their checksums).
const MIGRATIONS_TABLE: &str = "warden_migrations";

fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![
        Migration::new(
            1,
            "runs sessions".into(),
            MigrationType::Simple,
            include_str!("../migrations/0001_runs_sessions.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "decided as".into(),
            MigrationType::Simple,
            include_str!("../migrations/0002_decided_as.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "fleets".into(),
            MigrationType::Simple,
            include_str!("../migrations/0003_fleets.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "fleet summary".into(),
            MigrationType::Simple,
            include_str!("../migrations/0004_fleet_summary.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "dry run fence".into(),
            MigrationType::Simple,
            include_str!("../migrations/0005_dry_run_fence.sql").into_sql_str(),
            false,
        ),
    ]);
    // Our own name: sqlx's default `_sqlx_migrations` may belong to other software sharing
    // the PostgreSQL database (or schema), whose migrations would then clash with ours.
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    // Instances starting together on PostgreSQL wait for each other (advisory lock; sqlx's
    // SQLite lock does nothing, so `open` holds a file lock there).
    migrator.set_locking(true);
    migrator
}

fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let file_error = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::File { path, source }
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(file_error(dir))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(file_error(path)(error)),
    }
    // An existing file keeps no group or other access: it holds people's runs, and so do the
    // WAL and shared-memory files next to it (SQLite creates those with the main file's mode,
    // but files left from before keep theirs).
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = Path::new(&file);
        let mode = match std::fs::metadata(file) {
            Ok(metadata) => metadata.permissions().mode(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {
                continue;
            }
            Err(error) => return Err(file_error(file)(error)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(file_error(file))?;
        }
    }
    Ok(())
}

/// Holds `<db>.lock` exclusively while this process migrates the SQLite file: sqlx's SQLite
/// migrations take no lock, and two processes opening a fresh file would both create the tables.
async fn lock_sqlite_migrations(db: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| StoreError::File {
            path: lock_path.clone(),
            source,
        })?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|error| StoreError::File {
            path: lock_path.clone(),
            source: std::io::Error::other(error.to_string()),
        })?
        .map_err(|source| StoreError::File {
            path: lock_path,
            source,
        })
}

impl Store {
    /// Opens (and creates, for SQLite) the database at `url` and brings its schema up to date.
    ///
    /// `url` is `sqlite:PATH` (the file and its directory are created, private to this user) or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let target = Target::parse(url)?;
        let shown = target.to_string();
        let connect_error = |shown: &str| {
            let target = shown.to_owned();
            move |source| StoreError::Connect { target, source }
        };
        let mut migration_lock = None;
        let pool = match target {
            Target::Sqlite(path) => {
                create_private_file(&path)?;
                migration_lock = Some(lock_sqlite_migrations(&path).await?);
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(false)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(8)
                        .connect_with(options)
                        .await
                        .map_err(connect_error(&shown))?,
                )
            }
            Target::Postgres(url) => {
                let options = PgConnectOptions::from_url(&url)
                    .map_err(|error| StoreError::BadUrl {
                        shown: shown.clone(),
                        reason: error.to_string(),
                    })?
                    .application_name("warden");
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(10)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_with(options)
                        .await
                        .map_err(connect_error(&shown))?,
                )
            }
        };
        let store = Store { pool, shown };
        let migrated = with_pool!(store, |pool| migrator().run(pool).await);
        drop(migration_lock);
        migrated.map_err(|source| StoreError::Migrate {
            target: store.shown.clone(),
            source,
        })?;
        Ok(store)
    }

    /// Opens the SQLite store `dir/warden.db` ([`SQLITE_FILE_NAME`]), creating both if missing.
    pub async fn open_sqlite_in(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(SQLITE_FILE_NAME);
        let path = path.to_str().ok_or_else(|| StoreError::Invalid {
            what: "the state directory",
            reason: format!("{} is not UTF-8: choose another directory", dir.display()),
        })?;
        Store::open(&format!("sqlite:{path}")).await
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes every connection (waits for the ones in use). Clones of this store stop working.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await);
    }

    /// Records a new run: `pending-approval` when it needs an approval, else `queued`.
    pub async fn create_run(&self, new: NewRun) -> Result<RunRecord, StoreError> {
        if new.requested_by.oid.is_empty() {
            return Err(StoreError::Invalid {
                what: "the requester",
                reason: "a run needs the requester's object id (oid)".to_owned(),
            });
        }
        let at = now();
        let (status, queued_at, expires_at) = if new.needs_approval {
            (
                RunStatus::PendingApproval,
                None,
                new.approval_expires_at.map(micros),
            )
        } else {
            (RunStatus::Queued, Some(at), None)
        };
        let id = Uuid::new_v4().to_string();
        let parameters = to_json(&new.parameters);
        with_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "INSERT INTO warden_runs (id, task, parameters, status, requested_by_oid, \
                 requested_by_upn, approval_expires_at, created_at, updated_at, queued_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING ",
                run_columns!()
            ))
            .bind(&id)
            .bind(&new.task)
            .bind(&parameters)
            .bind(status.as_str())
            .bind(&new.requested_by.oid)
            .bind(&new.requested_by.upn)
            .bind(expires_at)
            .bind(at)
            .bind(queued_at)
            .fetch_one(pool)
            .await
            .map_err(db("recording a new run"))?;
            raw_run!(row)
        })
    }

    /// The run with this id, if any.
    pub async fn run(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let id = id.to_string();
        with_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM warden_runs WHERE id = $1"
            ))
            .bind(&id)
            .fetch_optional(pool)
            .await
            .map_err(db("reading a run"))?;
            row.map(|row| raw_run!(row)).transpose()
        })
    }

    /// The runs this person requested, newest first: up to `limit` after `after` (`None`: from
    /// the newest; else the [`RunRecord::cursor`] of the last run of the previous page).
    pub async fn runs_requested_by(
        &self,
        oid: &str,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.list(
            concat!(
                "SELECT ",
                run_columns!(),
                " FROM warden_runs WHERE requested_by_oid = $1 AND ",
                newest_first_after!()
            ),
            Some(oid),
            after,
            limit,
        )
        .await
    }

    /// The runs this person approved or rejected, newest first, paged as
    /// [`Store::runs_requested_by`].
    pub async fn runs_decided_by(
        &self,
        oid: &str,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.list(
            concat!(
                "SELECT ",
                run_columns!(),
                " FROM warden_runs WHERE decided_by_oid = $1 AND ",
                newest_first_after!()
            ),
            Some(oid),
            after,
            limit,
        )
        .await
    }

    /// Every service run, newest first (for operators), paged as [`Store::runs_requested_by`];
    /// a fleet's jobs are listed by [`Store::fleet_jobs`] instead.
    pub async fn all_runs(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.list(
            concat!(
                "SELECT ",
                run_columns!(),
                " FROM warden_runs WHERE $1 IS NULL AND fleet_id IS NULL AND ",
                newest_first_after!()
            ),
            None,
            after,
            limit,
        )
        .await
    }

    /// Runs waiting for a decision whose approval has not expired, oldest first, except the
    /// ones `exclude_requested_by` (the viewer's oid) requested, which they may not decide.
    /// Paged by `after` as [`Store::runs_requested_by`]: a caller that also filters by who may
    /// approve which task pages on until it has enough.
    pub async fn pending_approvals(
        &self,
        exclude_requested_by: &str,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (after_at, after_id) = cursor_binds(after);
        let at = now();
        with_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM warden_runs WHERE status = 'pending-approval' \
                 AND (approval_expires_at IS NULL OR approval_expires_at > $1) \
                 AND requested_by_oid <> $2 \
                 AND ($3 IS NULL OR created_at > $3 OR (created_at = $3 AND id > $4)) \
                 ORDER BY created_at, id LIMIT $5"
            ))
            .bind(at)
            .bind(exclude_requested_by)
            .bind(after_at)
            .bind(after_id)
            .bind(self::limit(limit))
            .fetch_all(pool)
            .await
            .map_err(db("listing pending approvals"))?;
            rows.into_iter().map(|row| raw_run!(row)).collect()
        })
    }

    async fn list(
        &self,
        sql: &'static str,
        oid: Option<&str>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (after_at, after_id) = cursor_binds(after);
        with_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(oid)
                .bind(after_at)
                .bind(after_id.clone())
                .bind(self::limit(limit))
                .fetch_all(pool)
                .await
                .map_err(db("listing runs"))?;
            rows.into_iter().map(|row| raw_run!(row)).collect()
        })
    }

    /// Approves (`approve`: the run is queued) or rejects a pending run, with the approver's
    /// comment and `decided_as`, what the decision was based on (the approver's groups and roles
    /// at that moment, kept so the run's start can check them against the policy again). Only from `pending-approval`, before its approval expires, and never by the
    /// person who requested it: one statement checks all three, so of two approvers racing,
    /// one wins and the other gets [`StoreError::Conflict`].
    pub async fn decide(
        &self,
        id: Uuid,
        approver: &PersonRef,
        decided_as: &Value,
        approve: bool,
        comment: &str,
    ) -> Result<RunRecord, StoreError> {
        if approver.oid.is_empty() {
            return Err(StoreError::Invalid {
                what: "the approver",
                reason: "a decision needs the approver's object id (oid)".to_owned(),
            });
        }
        let at = now();
        let (status, queued_at, finished_at) = if approve {
            (RunStatus::Queued, Some(at), None)
        } else {
            (RunStatus::Rejected, None, Some(at))
        };
        let id_text = id.to_string();
        let decided = with_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "UPDATE warden_runs SET status = $2, decided_by_oid = $3, decided_by_upn = $4, \
                 decision_comment = $5, decided_at = $6, updated_at = $6, queued_at = $7, \
                 finished_at = $8, decided_as = $9 \
                 WHERE id = $1 AND status = 'pending-approval' AND requested_by_oid <> $3 \
                 AND (approval_expires_at IS NULL OR approval_expires_at > $6) RETURNING ",
                run_columns!()
            ))
            .bind(&id_text)
            .bind(status.as_str())
            .bind(&approver.oid)
            .bind(storable(&approver.upn))
            .bind(storable(comment))
            .bind(at)
            .bind(queued_at)
            .bind(finished_at)
            .bind(to_json(decided_as))
            .fetch_optional(pool)
            .await
            .map_err(db("recording a decision"))?;
            row.map(|row| raw_run!(row)).transpose()?
        });
        if let Some(run) = decided {
            return Ok(run);
        }
        let current = self.run(id).await?.ok_or(StoreError::NotFound { id })?;
        if current.requested_by.oid == approver.oid {
            return Err(StoreError::SelfApproval);
        }
        if current.status == RunStatus::PendingApproval {
            // Its approval expired and no sweep has marked it yet: mark it now.
            self.expire_pending_at(at, Some(&id_text)).await?;
            let current = self.run(id).await?.ok_or(StoreError::NotFound { id })?;
            return Err(StoreError::Conflict {
                current: current.status,
            });
        }
        Err(StoreError::Conflict {
            current: current.status,
        })
    }

    /// Hands the oldest queued service run to `worker` (now `running`), or `None` when none
    /// waits. Fleet jobs are not service runs: [`Store::claim_next_fleet_job`] takes them.
    /// Two workers never get the same run: on PostgreSQL the candidate row is taken with
    /// `FOR UPDATE SKIP LOCKED` (others move on to the next run), on SQLite the statement holds
    /// the write lock; both re-check `status = 'queued'`. Each claim counts the run's `attempt`
    /// up; the returned record's [`RunRecord::claim`] is what the worker's later steps show.
    ///
    /// `worker` names the worker as `INSTANCE/SLOT` (say `host-1/3`); the part before the last
    /// `/` is the instance [`Stale::Instance`] recovers by.
    pub async fn claim_next(&self, worker: &str) -> Result<Option<RunRecord>, StoreError> {
        let instance = instance_of(worker)?;
        let sql = match self.backend() {
            Backend::Sqlite => concat!(
                "UPDATE warden_runs SET status = 'running', worker = $1, instance = $2, \
                 attempt = attempt + 1, started_at = ",
                sqlite_now!(),
                ", heartbeat_at = ",
                sqlite_now!(),
                ", updated_at = ",
                sqlite_now!(),
                " WHERE status = 'queued' AND id = (SELECT id FROM warden_runs \
                 WHERE status = 'queued' AND fleet_id IS NULL ORDER BY queued_at, id LIMIT 1) RETURNING ",
                run_columns!()
            ),
            Backend::Postgres => concat!(
                "UPDATE warden_runs SET status = 'running', worker = $1, instance = $2, \
                 attempt = attempt + 1, started_at = ",
                postgres_now!(),
                ", heartbeat_at = ",
                postgres_now!(),
                ", updated_at = ",
                postgres_now!(),
                " WHERE status = 'queued' AND id = (SELECT id FROM warden_runs \
                 WHERE status = 'queued' AND fleet_id IS NULL ORDER BY queued_at, id LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) RETURNING ",
                run_columns!()
            ),
        };
        Ok(with_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(worker)
                .bind(instance)
                .fetch_optional(pool)
                .await
                .map_err(db("claiming a queued run"))?;
            row.map(|row| raw_run!(row)).transpose()?
        }))
    }

    /// Says that `worker` is alive: refreshes the heartbeat of the runs it holds, so
    /// [`Stale::SilentFor`] leaves them alone. Call it well within that age while a run goes on.
    /// Returns the claims `worker` still holds: a run its worker believes it holds and that is
    /// missing here was taken back (or ended), and its worker should stop it.
    pub async fn heartbeat(&self, worker: &str) -> Result<Vec<Claim>, StoreError> {
        instance_of(worker)?;
        let sql = match self.backend() {
            Backend::Sqlite => concat!(
                "UPDATE warden_runs SET heartbeat_at = ",
                sqlite_now!(),
                " WHERE status = 'running' AND worker = $1 RETURNING id, attempt"
            ),
            Backend::Postgres => concat!(
                "UPDATE warden_runs SET heartbeat_at = ",
                postgres_now!(),
                " WHERE status = 'running' AND worker = $1 RETURNING id, attempt"
            ),
        };
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(worker)
                .fetch_all(pool)
                .await
                .map_err(db("recording a worker's heartbeat"))?
        });
        rows.into_iter()
            .map(|(id, attempt)| {
                Ok(Claim {
                    id: parse_ids(vec![id])?.remove(0),
                    worker: worker.to_owned(),
                    attempt: u64::try_from(attempt).map_err(|error| StoreError::Corrupt {
                        what: "run attempt",
                        reason: error.to_string(),
                    })?,
                })
            })
            .collect()
    }

    /// Records, durably, that a running run is about to send a write. Call it BEFORE sending:
    /// from then on [`Store::recover`] never re-runs it. Refused (and the write must not be sent)
    /// unless `claim` still holds the running run ([`StoreError::ClaimLost`] once it was
    /// recovered, [`StoreError::Conflict`] once it ended).
    pub async fn mark_may_have_written(&self, claim: &Claim) -> Result<(), StoreError> {
        let id_text = claim.id.to_string();
        let changed = with_pool!(self, |pool| {
            sqlx::query(concat!(
                "UPDATE warden_runs SET may_have_written = TRUE, updated_at = $4 WHERE ",
                held_by_claim!()
            ))
            .bind(&id_text)
            .bind(&claim.worker)
            .bind(attempt_of(claim))
            .bind(now())
            .execute(pool)
            .await
            .map_err(db("marking a run as writing"))?
            .rows_affected()
        });
        if changed == 1 {
            return Ok(());
        }
        Err(self.claim_refused(claim).await)
    }

    /// Ends a running run: `completed`, `failed`, `refused` or `outcome-unknown`, with what it
    /// returned or why it failed. Only by the worker whose `claim` holds the running run.
    pub async fn finish(
        &self,
        claim: &Claim,
        status: RunStatus,
        results: Option<Value>,
        error: Option<String>,
    ) -> Result<RunRecord, StoreError> {
        if !matches!(
            status,
            RunStatus::Completed
                | RunStatus::Failed
                | RunStatus::Refused
                | RunStatus::OutcomeUnknown
        ) {
            return Err(StoreError::Invalid {
                what: "the final status",
                reason: format!(
                    "a run finishes as completed, failed, refused or outcome-unknown, not {status}"
                ),
            });
        }
        let id_text = claim.id.to_string();
        let results = results.as_ref().map(to_json);
        let finished = with_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "UPDATE warden_runs SET status = $4, results = $5, error = $6, finished_at = $7, \
                 updated_at = $7 WHERE ",
                held_by_claim!(),
                " RETURNING ",
                run_columns!()
            ))
            .bind(&id_text)
            .bind(&claim.worker)
            .bind(attempt_of(claim))
            .bind(status.as_str())
            .bind(&results)
            .bind(error.as_deref().map(storable))
            .bind(now())
            .fetch_optional(pool)
            .await
            .map_err(db("finishing a run"))?;
            row.map(|row| raw_run!(row)).transpose()?
        });
        match finished {
            Some(run) => Ok(run),
            None => Err(self.claim_refused(claim).await),
        }
    }

    /// Why a fenced step was refused: the run is gone, the claim was taken back, or the run
    /// ended under this very claim.
    async fn claim_refused(&self, claim: &Claim) -> StoreError {
        let run = match self.run(claim.id).await {
            Ok(Some(run)) => run,
            Ok(None) => return StoreError::NotFound { id: claim.id },
            Err(error) => return error,
        };
        let same_claim =
            run.worker.as_deref() == Some(claim.worker.as_str()) && run.attempt == claim.attempt;
        if same_claim && run.status != RunStatus::Running {
            StoreError::Conflict {
                current: run.status,
            }
        } else {
            StoreError::ClaimLost {
                id: claim.id,
                worker: claim.worker.clone(),
                attempt: claim.attempt,
            }
        }
    }

    /// Appends a line to a running run's log and returns its sequence number (1, 2, … per run).
    /// Only the worker whose `claim` holds the run writes its log: the counter lives in the
    /// run's row, and a running row is one [`Store::claim_next`] never waits for.
    pub async fn append_log(
        &self,
        claim: &Claim,
        level: &str,
        line: &str,
    ) -> Result<u64, StoreError> {
        let id_text = claim.id.to_string();
        let at = now();
        let seq: Option<i64> = with_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db("appending a log line"))?;
            let seq: Option<i64> = sqlx::query_scalar(concat!(
                "UPDATE warden_runs SET log_seq = log_seq + 1 WHERE ",
                held_by_claim!(),
                " RETURNING log_seq"
            ))
            .bind(&id_text)
            .bind(&claim.worker)
            .bind(attempt_of(claim))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("appending a log line"))?;
            if let Some(seq) = seq {
                sqlx::query(
                    "INSERT INTO warden_run_logs (run_id, seq, at, level, line) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&id_text)
                .bind(seq)
                .bind(at)
                .bind(storable(level))
                .bind(storable(line))
                .execute(&mut *tx)
                .await
                .map_err(db("appending a log line"))?;
                tx.commit().await.map_err(db("appending a log line"))?;
            }
            seq
        });
        let Some(seq) = seq else {
            return Err(self.claim_refused(claim).await);
        };
        u64::try_from(seq).map_err(|error| StoreError::Corrupt {
            what: "log sequence",
            reason: error.to_string(),
        })
    }

    /// Up to `limit` log lines of a run after `after_seq` (0: from the start), in order.
    pub async fn logs(
        &self,
        id: Uuid,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<LogLine>, StoreError> {
        let id_text = id.to_string();
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, at, level, line FROM warden_run_logs WHERE run_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
            )
            .bind(&id_text)
            .bind(after)
            .bind(self::limit(limit))
            .fetch_all(pool)
            .await
            .map_err(db("reading a run's log"))?;
            rows.into_iter()
                .map(|row| {
                    let seq: i64 = row.try_get("seq").map_err(db("reading a run's log"))?;
                    Ok(LogLine {
                        seq: u64::try_from(seq).map_err(|error| StoreError::Corrupt {
                            what: "log sequence",
                            reason: error.to_string(),
                        })?,
                        at: from_micros(row.try_get("at").map_err(db("reading a run's log"))?)?,
                        level: row.try_get("level").map_err(db("reading a run's log"))?,
                        line: row.try_get("line").map_err(db("reading a run's log"))?,
                    })
                })
                .collect()
        })
    }

    /// Marks `expired` every pending run whose approval expired at or before `now`; returns them.
    pub async fn expire_pending(&self, now: OffsetDateTime) -> Result<Vec<Uuid>, StoreError> {
        self.expire_pending_at(micros(now), None).await
    }

    async fn expire_pending_at(
        &self,
        at: i64,
        only: Option<&str>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "UPDATE warden_runs SET status = 'expired', finished_at = $1, updated_at = $1 \
                 WHERE status = 'pending-approval' AND approval_expires_at IS NOT NULL \
                 AND approval_expires_at <= $1 AND ($2 IS NULL OR id = $2) RETURNING id",
            )
            .bind(at)
            .bind(only)
            .fetch_all(pool)
            .await
            .map_err(db("expiring pending approvals"))?
        });
        parse_ids(ids)
    }

    /// Takes running runs back from workers that are gone (see [`Stale`]): each is queued again
    /// if it never marked a write, or becomes `outcome-unknown` if it may have written (never
    /// re-run by itself). Their old claims are refused from then on ([`StoreError::ClaimLost`]).
    /// One statement per call; on PostgreSQL it locks the rows in id order, so recoveries
    /// running at once wait for each other instead of deadlocking.
    pub async fn recover(&self, stale: Stale<'_>) -> Result<Recovery, StoreError> {
        let micros = |age: Duration| Some(i64::try_from(age.as_micros()).unwrap_or(i64::MAX));
        let (instance, silent_for, fleet_jobs) = match stale {
            Stale::All => (None, None, None),
            Stale::Instance(instance) => {
                if instance.is_empty() {
                    return Err(StoreError::Invalid {
                        what: "the instance to recover",
                        reason: "an empty name: give the instance's name (its workers' names up \
                                 to the last `/`)"
                            .to_owned(),
                    });
                }
                (Some(instance), None, None)
            }
            Stale::SilentFor(age) => (None, micros(age), Some(false)),
            Stale::FleetJobsSilentFor(age) => (None, micros(age), Some(true)),
        };
        let sql = match self.backend() {
            Backend::Sqlite => concat!(
                recover_sql!(sqlite_now!()),
                ") RETURNING id, status, fleet_id"
            ),
            Backend::Postgres => concat!(
                recover_sql!(postgres_now!()),
                " FOR UPDATE) RETURNING id, status, fleet_id"
            ),
        };
        let rows: Vec<(String, String, Option<String>)> = with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(instance)
                .bind(silent_for)
                .bind(fleet_jobs)
                .fetch_all(pool)
                .await
                .map_err(db("recovering running runs"))?
        });
        let mut recovery = Recovery::default();
        for (id, status, fleet) in rows {
            let id = parse_ids(vec![id])?.remove(0);
            if let Some(fleet) = fleet {
                recovery.fleets.push(parse_ids(vec![fleet])?.remove(0));
            }
            if status == RunStatus::OutcomeUnknown.as_str() {
                recovery.outcome_unknown.push(id);
            } else {
                recovery.requeued.push(id);
            }
        }
        recovery.requeued.sort();
        recovery.outcome_unknown.sort();
        recovery.fleets.sort();
        recovery.fleets.dedup();
        Ok(recovery)
    }

    /// Stores (or replaces) a session. Only the id's SHA-256 is kept.
    pub async fn put_session(
        &self,
        id: &str,
        data: &Value,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let key = session_key(id);
        let data = to_json(data);
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO warden_sessions (id_sha256, data, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id_sha256) DO UPDATE SET data = excluded.data, \
                 expires_at = excluded.expires_at",
            )
            .bind(&key)
            .bind(&data)
            .bind(micros(expires_at))
            .execute(pool)
            .await
            .map_err(db("storing a session"))?;
        });
        Ok(())
    }

    /// The session with this id, unless it has expired.
    pub async fn session(&self, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let key = session_key(id);
        let row: Option<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT data, expires_at FROM warden_sessions WHERE id_sha256 = $1 AND expires_at > $2",
            )
            .bind(&key)
            .bind(now())
            .fetch_optional(pool)
            .await
            .map_err(db("reading a session"))?
        });
        row.map(|(data, expires_at)| {
            Ok(StoredSession {
                data: serde_json::from_str(&data).map_err(|error| StoreError::Corrupt {
                    what: "session",
                    reason: error.to_string(),
                })?,
                expires_at: from_micros(expires_at)?,
            })
        })
        .transpose()
    }

    /// Deletes a session (sign-out). Deleting one that does not exist is not an error.
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let key = session_key(id);
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM warden_sessions WHERE id_sha256 = $1")
                .bind(&key)
                .execute(pool)
                .await
                .map_err(db("deleting a session"))?;
        });
        Ok(())
    }

    /// Deletes every session expired at or before `now`; returns how many.
    pub async fn purge_sessions(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let at = micros(now);
        Ok(with_pool!(self, |pool| {
            sqlx::query("DELETE FROM warden_sessions WHERE expires_at <= $1")
                .bind(at)
                .execute(pool)
                .await
                .map_err(db("purging expired sessions"))?
                .rows_affected()
        }))
    }
}

/// The instance a worker belongs to: its name up to the last `/` (all of it without one).
fn instance_of(worker: &str) -> Result<&str, StoreError> {
    let instance = worker
        .rsplit_once('/')
        .map_or(worker, |(instance, _)| instance);
    if instance.is_empty() {
        return Err(StoreError::Invalid {
            what: "the worker name",
            reason: format!(
                "`{worker}` names no instance: name workers `INSTANCE/SLOT`, say `host-1/1`"
            ),
        });
    }
    Ok(instance)
}

fn cursor_binds(after: Option<Cursor>) -> (Option<i64>, Option<String>) {
    match after {
        Some(cursor) => (Some(micros(cursor.created_at)), Some(cursor.id.to_string())),
        None => (None, None),
    }
}

fn attempt_of(claim: &Claim) -> i64 {
    i64::try_from(claim.attempt).unwrap_or(i64::MAX)
}

fn parse_ids(ids: Vec<String>) -> Result<Vec<Uuid>, StoreError> {
    ids.iter()
        .map(|id| {
            Uuid::parse_str(id).map_err(|error| StoreError::Corrupt {
                what: "run id",
                reason: error.to_string(),
            })
        })
        .collect()
}

// After the macros above, which they use (`macro_rules!` scope is textual).
mod approvals;
mod fleets;
pub use fleets::{
    FleetCancel, FleetJob, FleetProgress, FleetRecord, FleetRetry, JobState, NewFleet,
};
