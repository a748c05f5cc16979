//! `warden fleet`: one plugin or script run once per tenant of a set (`--tenants all`,
//! `tag:eu`, names, `!exclusions`). `fleet run` plans the fleet (warden-fleet), records it and
//! its jobs in the store (`--database`, `$WARDEN_DATABASE`, else SQLite in the state
//! directory), then works the jobs itself unless `--no-work`; `warden worker` works them from
//! any machine. Each job is
//! a normal guest run under the policy with its tenant's own session (token cache, throttle
//! back-off), its writes marked in the store before they are sent (serve's `MarkingRunner`).
//! `status` (`--watch`: live), `results` (`--planned`: a dry run's writes), `cancel` and
//! `retry` read and steer a fleet by its id. `--dry-run` puts every job's broker in dry-run
//! mode (writes planned, never sent); each job's broker knows its tenant, for grants limited
//! to tenants (a fleet refuses the flags that would override its profiles' tenant or
//! credential). Ctrl-C on a `fleet run` that works itself stops it as `warden worker` stops.
//! The fleet's own audit lines (recorded, cancelled, retried, and one summary when it ends)
//! are `fleet` lines ([`warden_audit::FleetAction`]); the summary's writer is chosen by the
//! store's guarded `summarised_at`, so it is written at most once however many workers saw
//! the end.

use crate::auth_args::AuthArgs;
use crate::guest_args::{
    GuestArgs, cache_dir, cache_key_beside, load_policy, open_audit, policy_path, state_dir,
    trail_paths,
};
use crate::output::{Layout, escape, escape_cut};
use crate::replay::LoggedRunner;
use anyhow::Context;
use async_trait::async_trait;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;
use warden_audit::{AuditTrail, Event, FleetAction, FleetMember};
use warden_auth::ReqwestTransport;
use warden_auth::config::{ConfigFile, Environment};
use warden_broker::Broker;
use warden_exchange::{CmdletRunner, ExchangeError, Invocation, Page, PageStream};
use warden_fleet::{Candidate, MaxFailures, Selector, Waves};
use warden_policy::{Policy, Principal};
use warden_runtime::{
    CheckedPlugin, CompiledScript, Interrupt, LoadedPlugin, PluginHost, RunOutcome, RunRequest,
    RuntimeError, RuntimeLimits, ScriptHost,
};
use warden_serve::marking::{MarkingRunner, StoreMarker};
use warden_serve::worker::{ClaimTiming, output_value};
use warden_store::{
    Claim, FleetCancel, FleetJob, FleetRecord, JobState, NewFleet, PersonRef, RunStatus, Stale,
    Store, StoreError,
};

/// Arguments of `warden fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Run a plugin or script once per selected tenant: `warden fleet run P.wasm --tenants all`.
    Run(Box<FleetRunArgs>),
    /// Counts per state, and the tenants whose writes need checking (outcome-unknown);
    /// `--watch` follows the fleet until it is done.
    Status(FleetStatusArgs),
    /// One row per tenant: its state and output or error.
    Results(FleetResultsArgs),
    /// Start no new tenant; running ones end as they would.
    Cancel(FleetCancelArgs),
    /// Queue the failed tenants again (never one that may have written).
    Retry(FleetRetryArgs),
}

/// Where the fleet store is: shared by every `fleet` subcommand and `worker`.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The fleet store: `sqlite:PATH` or `postgres://USER@HOST/DB` [default:
    /// $WARDEN_DATABASE, else sqlite: fleet.db in the state directory,
    /// ~/.local/state/warden].
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

impl DatabaseArgs {
    /// The URL: the flag, $WARDEN_DATABASE, else `fleet.db` in the state directory. Never
    /// derived from `--audit`: every subcommand must find the same store with the same
    /// environment, and only `fleet run` and `worker` take an audit trail.
    fn url(&self, env: &Environment) -> anyhow::Result<String> {
        if let Some(url) = &self.database {
            return Ok(url.clone());
        }
        if let Some(url) = env.get("WARDEN_DATABASE") {
            return Ok(url.to_owned());
        }
        let dir = state_dir(env).context(
            "no fleet store: pass --database URL or set WARDEN_DATABASE (HOME is not set)",
        )?;
        Ok(format!("sqlite:{}", dir.join("fleet.db").display()))
    }

    /// Opens the store; unless `create`, a SQLite file that does not exist is an error (a
    /// reading subcommand pointed at the wrong place must say so, not make an empty store).
    pub async fn open(&self, create: bool) -> anyhow::Result<Store> {
        let env = Environment::from_process();
        let url = self.url(&env)?;
        if !create
            && let Some(file) = sqlite_file(&url)
            && !file.exists()
        {
            anyhow::bail!(
                "no fleet store at {}\n  fix: pass the --database (or set the WARDEN_DATABASE) \
                 that `warden fleet run` used",
                file.display()
            );
        }
        Ok(Store::open(&url).await?)
    }
}

/// The file of a `sqlite:` URL (without its `?options`).
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// What a worker (`fleet run` working itself, or `warden worker`) needs.
#[derive(Debug, Args)]
pub struct WorkArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Jobs this process runs at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Directory of compiled plugins [default: $WARDEN_CACHE_DIR, else ~/.cache/warden/components].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Seconds between heartbeats of this worker's running jobs.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,
    /// Seconds of silence after which another worker's running jobs are taken back (reads
    /// queued again, possible writes marked outcome-unknown); at least three heartbeats.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stale_after_secs: u64,
}

/// Arguments of `warden fleet run`.
#[derive(Debug, Args)]
pub struct FleetRunArgs {
    /// The plugin (.wasm component) or script (.rhai).
    guest_file: PathBuf,
    /// Which tenants: `all`, profile names, `tag:TAG`, `!NAME`, `!tag:TAG`, comma-separated.
    #[arg(long, value_name = "SELECTOR")]
    tenants: String,
    /// Stop starting tenants once more than this many failed: a count or a percentage (`5%`).
    #[arg(long, value_name = "N|P%")]
    max_failures: Option<String>,
    /// Start in growing waves, each only when the last ended within the failure limit:
    /// cumulative counts or percentages, say `1,10%,100%`.
    #[arg(long, value_name = "SIZES")]
    waves: Option<String>,
    /// Only record the fleet; `warden worker` processes run it.
    #[arg(long)]
    no_work: bool,
    /// Run the reads, send no write: each write the policy allows is refused by the broker
    /// before it is sent, audited as `dry-run`, and listed by `fleet results` as planned.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    work: WorkArgs,
    /// Arguments for the guest (`run(args)`, Rhai's `ARGS`), after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// A fleet named by its id.
#[derive(Debug, Args)]
pub struct FleetIdArgs {
    /// The fleet's id (as `fleet run` printed it).
    id: Uuid,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// Arguments of `warden fleet status`.
#[derive(Debug, Args)]
pub struct FleetStatusArgs {
    #[command(flatten)]
    fleet: FleetIdArgs,
    /// Follow the fleet until it is done, then exit 0. On a terminal: a progress bar (counts
    /// per state, tenants per second, outcome-unknown tenants) on stderr, then the status.
    /// Piped: one JSON line per change on stdout, the last with `"done": true`.
    #[arg(long)]
    watch: bool,
}

/// The audit trail a steering subcommand (`cancel`, `retry`) records its line in.
#[derive(Debug, Args)]
pub struct TrailArgs {
    /// The audit trail (JSON lines, appended) [default: $WARDEN_AUDIT, else
    /// ~/.local/state/warden/audit.jsonl].
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// The audit key, created on first use [default: $WARDEN_AUDIT_KEY, else
    /// ~/.local/state/warden/audit.key].
    #[arg(long, value_name = "FILE")]
    audit_key: Option<PathBuf>,
}

impl TrailArgs {
    fn open(&self) -> anyhow::Result<AuditTrail> {
        let env = Environment::from_process();
        let (audit, key) = trail_paths(self.audit.as_deref(), self.audit_key.as_deref(), &env)?;
        open_audit(&audit, &key)
    }
}

/// Arguments of `warden fleet cancel`.
#[derive(Debug, Args)]
pub struct FleetCancelArgs {
    #[command(flatten)]
    fleet: FleetIdArgs,
    #[command(flatten)]
    trail: TrailArgs,
}

/// How `fleet results` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ResultsFormat {
    /// A table.
    #[default]
    Table,
    /// One JSON array of rows.
    Json,
    /// CSV with a header.
    Csv,
}

/// Arguments of `warden fleet results`.
#[derive(Debug, Args)]
pub struct FleetResultsArgs {
    #[command(flatten)]
    fleet: FleetIdArgs,
    /// How to print the rows.
    #[arg(long, value_enum, default_value_t)]
    output: ResultsFormat,
    /// A dry run's planned writes instead, one row per write: tenant, cmdlet, parameters (as
    /// the audit trail shows them: sensitive values keyed-hashed).
    #[arg(long)]
    planned: bool,
}

/// Arguments of `warden fleet retry`.
#[derive(Debug, Args)]
pub struct FleetRetryArgs {
    #[command(flatten)]
    fleet: FleetIdArgs,
    /// Queue the failed tenants again (required: the only kind of retry there is).
    #[arg(long, required = true)]
    failed: bool,
    #[command(flatten)]
    trail: TrailArgs,
}

/// Runs `warden fleet`.
pub async fn run(args: FleetArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        FleetCommand::Run(args) => fleet_run(*args).await,
        FleetCommand::Status(args) => status(args).await,
        FleetCommand::Results(args) => results(args).await,
        FleetCommand::Cancel(args) => cancel(args).await,
        FleetCommand::Retry(args) => retry(args).await,
    }
}

/// Who runs this command, as a fleet records its requester.
fn operator(env: &Environment) -> PersonRef {
    let user = env.get("USER").unwrap_or("operator").to_owned();
    PersonRef {
        oid: format!("local:{user}"),
        upn: user,
    }
}

/// The guest of a fleet as its `fleet` lines name it, with the SHA-256 workers check.
fn guest_principal(fleet: &FleetRecord) -> Principal {
    if is_script(Path::new(&fleet.guest)) {
        Principal::Script {
            path: Some(PathBuf::from(&fleet.guest)),
            sha256: fleet.guest_sha256.clone(),
        }
    } else {
        Principal::Plugin {
            name: fleet.guest.clone(),
            sha256: fleet.guest_sha256.clone(),
            signature: None,
        }
    }
}

/// Records a `fleet` line for `fleet`.
fn record_fleet(
    audit: &AuditTrail,
    fleet: &FleetRecord,
    action: FleetAction,
) -> anyhow::Result<()> {
    audit
        .record(&Event::fleet(
            &fleet.id.to_string(),
            &guest_principal(fleet),
            action,
        ))
        .with_context(|| format!("fleet {}: its audit line could not be written", fleet.id))
}

/// Writes the fleet's one summary line when nothing of it runs and nothing more can start,
/// unless another process did: [`Store::mark_fleet_summarised`] lets one caller through,
/// whichever worker ended the last job, and only for the round (retries) it read. At most
/// once: a process that dies between the mark and the line leaves the fleet unsummarised.
/// `true` when this call wrote it.
async fn summarise(store: &Store, audit: &AuditTrail, id: Uuid) -> anyhow::Result<bool> {
    // Asked after every job's end: the cheap count first, the whole fleet only near its end.
    if store.fleet_has_running(id).await? {
        return Ok(false);
    }
    let Some(fleet) = store.fleet(id).await? else {
        return Ok(false);
    };

    // The jobs are read after the fleet: a retry between the two shows queued jobs, one after
    // them bumps the round the mark names, so a stale end is never summarised.
    let jobs = store.fleet_jobs(id).await?;
    let (states, progress) = fleet.progress(&jobs);
    if !progress.done || !store.mark_fleet_summarised(id, fleet.summary_round).await? {
        return Ok(false);
    }
    let outcome_unknown = jobs
        .iter()
        .zip(&states)
        .filter(|(_, state)| **state == JobState::OutcomeUnknown)
        .map(|(job, _)| job.tenant.clone())
        .collect();
    let recorded = record_fleet(
        audit,
        &fleet,
        FleetAction::Summary {
            counts: progress
                .counts
                .iter()
                .map(|(state, n)| (state.as_str().to_owned(), *n))
                .collect(),
            outcome_unknown,
            halted: progress.halted,
            cancelled: fleet.cancelled_at.is_some(),
            dry_run: fleet.dry_run,
        },
    );
    if let Err(error) = recorded {
        // Not written: let another process (or a later end) write it.
        store.unmark_fleet_summarised(id).await?;
        return Err(error);
    }
    Ok(true)
}

/// What to do when a steering command's audit line cannot be written: its change stands.
const TRAIL_FIX: &str = "  fix: pass --audit FILE (a trail is one process's: a running `fleet run` or \
                         `warden worker` holds its own)";

/// An error after the store changed: says the change was made, then why its line is missing.
fn unrecorded(done: &str, error: &anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("{done}; its audit line was not written: {error:#}\n{TRAIL_FIX}")
}

async fn cancel(args: FleetCancelArgs) -> anyhow::Result<ExitCode> {
    let id = args.fleet.id;
    let store = args.fleet.database.open(false).await?;
    // The store first: the trail may be held by the very `fleet run` being cancelled, and a
    // cancel refused for that would leave it running.
    let FleetCancel {
        fleet,
        cancelled_now,
    } = store.cancel_fleet(id).await.map_err(not_found)?;
    let done = if cancelled_now {
        format!("fleet {id}: cancelled")
    } else {
        format!("fleet {id}: already cancelled")
    };
    eprintln!("{done}; no new tenant starts, running ones end as they would");
    let audit = args.trail.open().map_err(|error| {
        if cancelled_now {
            unrecorded(&done, &error)
        } else {
            // No cancel line is due, only perhaps the summary.
            anyhow::anyhow!("{done}; its summary could not be written: {error:#}\n{TRAIL_FIX}")
        }
    })?;
    // Only the call that cancelled it records it: racing cancels write one line.
    if cancelled_now {
        record_fleet(
            &audit,
            &fleet,
            FleetAction::Cancelled {
                by: operator(&Environment::from_process()).oid,
            },
        )
        .map_err(|error| unrecorded(&done, &error))?;
    }
    // Nothing was running: no worker will end a last job, so the summary is written here.
    summarise(&store, &audit, id)
        .await
        .map_err(|error| anyhow::anyhow!("{done}; its summary was not written: {error:#}"))?;
    Ok(ExitCode::SUCCESS)
}

async fn retry(args: FleetRetryArgs) -> anyhow::Result<ExitCode> {
    let id = args.fleet.id;
    let store = args.fleet.database.open(false).await?;
    let before = store
        .fleet(id)
        .await?
        .ok_or(StoreError::NotFound { id })
        .map_err(not_found)?;
    let (held_before, halted_before) = {
        let jobs = store.fleet_jobs(id).await?;
        let (states, progress) = before.progress(&jobs);
        let held: Vec<String> = jobs
            .iter()
            .zip(&states)
            .filter(|(_, state)| **state == JobState::Held)
            .map(|(job, _)| job.tenant.clone())
            .collect();
        (held, progress.halted)
    };
    // The store first, as for a cancel: the trail may be a running worker's.
    let retry = store.retry_failed(id).await.map_err(|error| match error {
        StoreError::Invalid { .. } => anyhow::anyhow!("fleet {id}: not retried: {error}"),
        other => not_found(other),
    })?;
    let done = format!(
        "fleet {id}: {} failed tenant(s) queued again",
        retry.requeued.len()
    );
    let recorded = args.trail.open().and_then(|audit| {
        record_fleet(
            &audit,
            &before,
            FleetAction::Retried {
                by: operator(&Environment::from_process()).oid,
                requeued: retry.requeued.clone(),
                not_requeued_may_have_written: retry.wrote.clone(),
            },
        )
    });
    let names = |tenants: &[String]| {
        tenants
            .iter()
            .map(|tenant| escape(tenant, Layout::Line).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "{done}{}",
        if retry.requeued.is_empty() {
            String::new()
        } else {
            format!(" ({})", names(&retry.requeued))
        }
    );
    if !retry.wrote.is_empty() {
        eprintln!(
            "not retried, they may have written (check their effect first): {}",
            names(&retry.wrote)
        );
    }
    // The retried failures no longer count: a fleet stopped at its limit starts its held
    // tenants again.
    if halted_before && !held_before.is_empty() && !retry.requeued.is_empty() {
        let jobs = store
            .fleet_jobs(id)
            .await
            .map_err(|error| anyhow::anyhow!("{done}; its fleet could not be read: {error}"))?;
        if !before.progress(&jobs).1.halted {
            eprintln!(
                "the failure limit no longer stops the fleet: its {} held tenant(s) start too \
                 ({})",
                held_before.len(),
                names(&held_before)
            );
        }
    }
    recorded.map_err(|error| unrecorded(&done, &error))?;
    Ok(ExitCode::SUCCESS)
}

fn not_found(error: StoreError) -> anyhow::Error {
    match error {
        StoreError::NotFound { id } => anyhow::anyhow!(
            "no fleet has the id {id}\n  fix: use the id `warden fleet run` printed, with the \
             same --database"
        ),
        other => other.into(),
    }
}

async fn fleet_run(args: FleetRunArgs) -> anyhow::Result<ExitCode> {
    refuse_one_tenant_flags(&args.work.guest.auth)?;
    let env = Environment::from_process();
    let selector: Selector = args.tenants.parse()?;
    let waves: Waves = match &args.waves {
        Some(waves) => waves.parse()?,
        None => Waves::single(),
    };
    let mut max_failures: Option<MaxFailures> =
        args.max_failures.as_deref().map(str::parse).transpose()?;
    // Waves are for stopping early: with no limit given, the first failure stops them.
    if args.waves.is_some() && max_failures.is_none() {
        eprintln!(
            "--waves without --max-failures: the first failure stops the next waves (give \
             --max-failures to tolerate some)"
        );
        max_failures = Some("0".parse()?);
    }
    let config = tenant_profiles(&args.work.guest.auth, &env)?;
    let candidates = candidates(&config);
    for candidate in candidates.iter().filter(|c| !Selector::can_name(&c.name)) {
        eprintln!(
            "note: profile `{}` cannot be named in --tenants (`all`, `,`, `!`, `:` or spaces at \
             either end): it is chosen by `all` or its tags only; rename it to select it by name",
            escape(&candidate.name, Layout::Line)
        );
    }
    let chosen = selector.resolve(&candidates)?;
    // The guest is checked before anything is recorded: a typo leaves no fleet behind.
    let bytes = std::fs::read(&args.guest_file).with_context(|| {
        format!(
            "{}: the plugin or script cannot be read\n  fix: check the path",
            args.guest_file.display()
        )
    })?;
    let plugin = check_guest(&args.guest_file, &bytes)?;
    // Checked now; its warnings are printed once, by the worker that loads it to run.
    let policy = load_policy(
        &policy_path(args.work.guest.policy.as_deref(), &env)?,
        args.work.guest.quiet || !args.no_work,
    )?;
    check_policy_tenants(&policy, Some(&config))?;
    let guest = std::path::absolute(&args.guest_file)
        .unwrap_or_else(|_| args.guest_file.clone())
        .display()
        .to_string();
    let principal = match &plugin {
        Some(plugin) => plugin.principal_under(&policy),
        None => Principal::script_file(Path::new(&guest), &bytes),
    };
    warn_of_tenants_the_grant_leaves_out(&policy, &principal, &config, &chosen);
    let store = args.work.database.open(true).await?;
    // The trail is opened before the fleet is recorded: one that cannot be written leaves no
    // fleet behind.
    let worker = if args.no_work {
        None
    } else {
        Some(Worker::start(&args.work, store.clone()).await?)
    };
    // Listening before the fleet exists: a Ctrl-C from then on stops the work as `warden
    // worker`'s does, never the process with jobs half recorded.
    let ctrl_c = match &worker {
        Some(_) => Some(super::run::listen_for_ctrl_c().await),
        None => None,
    };
    let audit = match &worker {
        Some(worker) => worker.audit.clone(),
        None => {
            let (audit, key) = args.work.guest.audit_paths(&env)?;
            Arc::new(open_audit(&audit, &key)?)
        }
    };
    let requested_by = operator(&env);
    let assigned = waves.assign(chosen.len());
    let mut wave_sizes: Vec<u64> = Vec::new();
    for wave in &assigned {
        let wave = *wave as usize;
        if wave_sizes.len() <= wave {
            wave_sizes.resize(wave + 1, 0);
        }
        wave_sizes[wave] += 1;
    }
    let fleet = store
        .create_fleet(NewFleet {
            guest,
            guest_sha256: warden_vocab::sha256_hex(&bytes),
            args: args.args.clone(),
            selector: selector.to_string(),
            tenants: chosen.iter().cloned().zip(assigned).collect(),
            max_failures: max_failures.map(|max| max.tolerated(chosen.len())),
            dry_run: args.dry_run,
            requested_by: requested_by.clone(),
        })
        .await?;
    let recorded = record_fleet(
        &audit,
        &fleet,
        FleetAction::Recorded {
            by: requested_by.oid,
            selector: fleet.selector.clone(),
            tenants: chosen.clone(),
            waves: wave_sizes,
            max_failures: fleet.max_failures,
            dry_run: fleet.dry_run,
        },
    );
    if let Err(error) = recorded {
        // Unrecorded in the trail, it must not run.
        store.cancel_fleet(fleet.id).await?;
        return Err(error.context(
            "the fleet was cancelled: no tenant starts from then on (a job another worker \
             already claimed runs)",
        ));
    }
    eprintln!(
        "fleet {}: {} tenant(s){}",
        fleet.id,
        chosen.len(),
        if fleet.dry_run {
            "; dry run: reads run, writes are planned, never sent"
        } else {
            ""
        }
    );
    let Some(worker) = worker else {
        eprintln!(
            "recorded only: `warden worker` processes on this store run it; `warden fleet status \
             {}` shows how far they got",
            fleet.id
        );
        return Ok(ExitCode::SUCCESS);
    };
    work_until_ctrl_c(&worker, fleet.id, ctrl_c).await?;
    let jobs = store.fleet_jobs(fleet.id).await?;
    let fleet = store.fleet(fleet.id).await?.unwrap_or(fleet);
    print_results(&fleet, &jobs, ResultsFormat::Table)?;
    if fleet.dry_run && jobs.iter().any(|job| !planned_of(job).is_empty()) {
        print_planned(&jobs, ResultsFormat::Table)?;
    }
    let (_, progress) = fleet.progress(&jobs);
    eprintln!("{}", summary_line(&fleet, &progress));
    let all_completed = progress.counts.keys().all(|s| *s == JobState::Completed);
    Ok(if all_completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::guest_args::EXIT_FAILED)
    })
}

/// Works the fleet until it is done, steered by Ctrl-C as `warden worker` is
/// ([`work_steered_by_ctrl_c`]).
async fn work_until_ctrl_c(
    worker: &Arc<Worker>,
    id: Uuid,
    ctrl_c: Option<super::run::CtrlC>,
) -> anyhow::Result<()> {
    work_steered_by_ctrl_c(
        worker,
        worker.work(Some(id)),
        ctrl_c.unwrap_or(super::run::CtrlC::Unavailable),
        &format!(
            "fleet {id}: stopping: no tenant starts here any more; running ones end first \
             (Ctrl-C again interrupts them). The rest stay queued: `warden worker` on the same \
             --database runs them, `warden fleet cancel {id}` drops them"
        ),
    )
    .await
}

/// Awaits `work` steered by Ctrl-C (`first` already listening): the first press claims
/// nothing more and lets the running jobs end (their ends recorded), printing `stopping`; the
/// second interrupts them (they end failed, or outcome-unknown when they may have written);
/// a third quits at once, exit 130 (a job left running is taken back by the other workers'
/// stale sweep). Each listener is set up as soon as the press before it came, so a quick
/// double press is never lost.
pub(crate) async fn work_steered_by_ctrl_c(
    worker: &Worker,
    work: impl Future<Output = anyhow::Result<()>>,
    first: super::run::CtrlC,
    stopping: &str,
) -> anyhow::Result<()> {
    use super::run::listen_for_ctrl_c;
    tokio::pin!(work);
    if let Some(result) = until_ctrl_c(&mut work, first).await {
        return result;
    }
    let second = listen_for_ctrl_c().await;
    eprintln!("{stopping}");
    worker.stop();
    if let Some(result) = until_ctrl_c(&mut work, second).await {
        return result;
    }
    let third = listen_for_ctrl_c().await;
    eprintln!("interrupting the running jobs (Ctrl-C again quits at once)");
    worker.interrupt_running();
    if let Some(result) = until_ctrl_c(&mut work, third).await {
        return result;
    }
    eprintln!(
        "quitting: a job still running is taken back by another worker once silent past \
         --stale-after-secs (outcome-unknown if it may have written)"
    );
    // Queued audit lines (refusals, finished calls' closing lines) go to the file first.
    if let Err(error) = worker.audit.flush() {
        eprintln!("warden: the audit trail's queued lines could not be written: {error}");
    }
    std::process::exit(130)
}

/// `work`'s result if it ends before the next Ctrl-C, else `None`.
async fn until_ctrl_c<F: Future<Output = anyhow::Result<()>> + Unpin>(
    work: &mut F,
    ctrl_c: super::run::CtrlC,
) -> Option<anyhow::Result<()>> {
    use super::run::CtrlC;
    match ctrl_c {
        CtrlC::Listening(listener) => tokio::select! {
            result = &mut *work => Some(result),
            pressed = listener => match pressed {
                Ok(()) => None,
                Err(_) => Some(work.await),
            },
        },
        CtrlC::Pressed => None,
        CtrlC::Unavailable => Some(work.await),
    }
}

/// Refuses the flags that override a profile's tenant or credential: every job of a fleet
/// would act on that one tenant (or as that one app) while grants limited to tenants judge it
/// by its profile's name and tags.
fn refuse_one_tenant_flags(auth: &AuthArgs) -> anyhow::Result<()> {
    let given: Vec<&str> = [
        ("--tenant-id", auth.tenant_id.is_some()),
        ("--client-id", auth.client_id.is_some()),
        ("--credential", auth.credential.is_some()),
        ("--certificate", auth.certificate.is_some()),
        ("--certificate-store", auth.certificate_store.is_some()),
        ("--thumbprint", auth.thumbprint.is_some()),
        ("--secret-file", auth.secret_file.is_some()),
        ("--prompt-secret", auth.prompt_secret),
        (
            "--federated-token-file",
            auth.federated_token_file.is_some(),
        ),
        ("--access-token-file", auth.access_token_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if !given.is_empty() {
        anyhow::bail!(
            "{}: a fleet's tenants come from their profiles, each job with its profile's own \
             tenant_id and credential; these flags would send every job to one tenant or as \
             one app\n  fix: drop them, and set tenant_id, client_id and credential in each \
             [tenants.NAME] profile of the config",
            given.join(", ")
        );
    }
    Ok(())
}

/// The config's profiles as `--tenants` and the check of grants' `tenants` name them.
fn candidates(config: &ConfigFile) -> Vec<Candidate> {
    config
        .tenants
        .iter()
        .map(|(name, profile)| Candidate {
            name: name.clone(),
            tags: profile.tags.clone(),
        })
        .collect()
}

/// The profiles a grant limited to tenants may judge a run as: those that set their own
/// `tenant_id`. Another profile's real tenant comes from `--tenant-id` or `AZURE_TENANT_ID`,
/// not from its name: a run as it names no tenant, and such a grant refuses it.
fn known_tenants(config: &ConfigFile) -> HashMap<String, Candidate> {
    candidates(config)
        .into_iter()
        .filter(|candidate| {
            config
                .tenants
                .get(&candidate.name)
                .is_some_and(|profile| profile.tenant_id.is_some())
        })
        .map(|candidate| (candidate.name.clone(), candidate))
        .collect()
}

/// Checks the policy's grant `tenants` against the config's profiles (an unknown name or tag
/// is an error naming it). No config file: nothing to check against, and no run has a tenant.
fn check_policy_tenants(policy: &Policy, config: Option<&ConfigFile>) -> anyhow::Result<()> {
    if let Some(config) = config {
        policy
            .check_tenants(&candidates(config))
            .map_err(|error| anyhow::anyhow!("{error}\n  fix: correct the grant's tenants, or add the profile or tag to the config"))?;
    }
    Ok(())
}

/// The tenant a single run (`warden run`, `eval`, `repl`) acts on, for grants limited to
/// tenants: the profile (`--tenant`, else the config's `default_tenant`), unless `--tenant-id`
/// overrides its tenant or it sets no `tenant_id` of its own (then none: a grant limited to
/// tenants refuses the run). Checks the
/// policy's `tenants` against the config first. A policy with no such grant needs neither.
pub(crate) fn run_tenant(
    auth: &AuthArgs,
    policy: &Policy,
    env: &Environment,
) -> anyhow::Result<Option<Candidate>> {
    if !policy.limits_tenants() {
        return Ok(None);
    }
    let Some(path) = auth.config_path(env) else {
        return Ok(None);
    };
    let config = ConfigFile::load(&path)?;
    check_policy_tenants(policy, Some(&config))?;
    if auth.tenant_id.is_some() {
        return Ok(None);
    }
    let Some(name) = auth
        .profile
        .clone()
        .or_else(|| config.default_tenant.clone())
    else {
        return Ok(None);
    };
    Ok(known_tenants(&config).remove(&name))
}

/// The config file's tenant profiles (a fleet needs them).
fn tenant_profiles(auth: &AuthArgs, env: &Environment) -> anyhow::Result<ConfigFile> {
    let path = auth.config_path(env).context(
        "a fleet needs tenant profiles and no config file was found\n  fix: pass --config FILE \
         or set WARDEN_CONFIG ([tenants.NAME] profiles; config.example.toml shows them)",
    )?;
    Ok(ConfigFile::load(&path)?)
}

fn is_script(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "rhai")
}

/// Says, before the fleet is recorded, which chosen tenants the guest's grant leaves out (its
/// `tenants`): their jobs will end `refused`, and each counts as a failure toward
/// `--max-failures` and `--waves`.
fn warn_of_tenants_the_grant_leaves_out(
    policy: &Policy,
    principal: &Principal,
    config: &ConfigFile,
    chosen: &[String],
) {
    let known = known_tenants(config);
    let mut grant = None;
    let left_out: Vec<&String> = chosen
        .iter()
        .filter(
            |name| match policy.grant_for_tenant(principal, None, known.get(name.as_str())) {
                Err(denial) if denial.rule.ends_with("/tenants") => {
                    grant = Some(denial.rule.clone());
                    true
                }
                _ => false,
            },
        )
        .collect();
    let Some(rule) = grant else {
        return;
    };
    let shown: Vec<String> = left_out
        .iter()
        .take(10)
        .map(|name| escape(name, Layout::Line).into_owned())
        .collect();
    eprintln!(
        "warning: {rule}: the grant leaves out {} of the chosen tenant(s) ({}{}): their jobs will \
         end refused, each a failure toward --max-failures and --waves\n  fix: leave them out \
         of --tenants (`!NAME`, `!tag:TAG`), or add them to the grant's tenants",
        left_out.len(),
        shown.join(", "),
        if left_out.len() > shown.len() {
            ", …"
        } else {
            ""
        }
    );
}

/// A script must compile and a plugin must be a component of our WIT, before a fleet is made;
/// the plugin, checked.
fn check_guest(path: &Path, bytes: &[u8]) -> anyhow::Result<Option<CheckedPlugin>> {
    let what = path.display().to_string();
    if is_script(path) {
        let source = std::str::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{what}: the script is not UTF-8 text"))?;
        ScriptHost::new(RuntimeLimits::default())
            .compile(&what, source)
            .map_err(crate::guest_args::runtime_error)?;
    } else {
        return PluginHost::check_bytes(&what, bytes.to_vec())
            .map(Some)
            .map_err(crate::guest_args::runtime_error);
    }
    Ok(None)
}

fn summary_line(fleet: &FleetRecord, progress: &warden_store::FleetProgress) -> String {
    let counts: Vec<String> = progress
        .counts
        .iter()
        .map(|(state, n)| format!("{n} {}", state.as_str()))
        .collect();
    let mut line = format!("fleet {}: {}", fleet.id, counts.join(", "));
    if progress.halted {
        line.push_str("; stopped at the failure limit");
    }
    if fleet.cancelled_at.is_some() {
        line.push_str("; cancelled");
    }
    line
}

/// How often `status --watch` reads the fleet.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

async fn status(args: FleetStatusArgs) -> anyhow::Result<ExitCode> {
    let id = args.fleet.id;
    let store = args.fleet.database.open(false).await?;
    let read = || async {
        let fleet = store
            .fleet(id)
            .await?
            .ok_or(StoreError::NotFound { id })
            .map_err(not_found)?;
        let jobs = store.fleet_jobs(fleet.id).await?;
        anyhow::Ok((fleet, jobs))
    };
    let (mut fleet, mut jobs) = read().await?;
    if args.watch {
        // The bar (on stderr) only for a person at a terminal; stdout piped or redirected
        // gets one JSON line per change, whatever stderr is.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new(jobs.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} ended  {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let mut last = None;
        loop {
            let watched = Watched::of(&fleet, &jobs);
            match &bar {
                Some(bar) => {
                    bar.set_length(jobs.len() as u64);
                    bar.set_position(watched.ended);
                    bar.set_message(watched.line());
                }
                None => {
                    let line = watched.json(&fleet);
                    if last.as_ref() != Some(&line) {
                        println!("{line}");
                        last = Some(line);
                    }
                }
            }
            if watched.done {
                break;
            }
            // Every job row is read each time: once a second is live enough for a person
            // and light on a store the workers share.
            tokio::time::sleep(WATCH_INTERVAL).await;
            // A store that fails for a moment (a failover) is waited out, as a worker does.
            match read().await {
                Ok(read) => (fleet, jobs) = read,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not read the fleet; trying again")
                }
            }
        }
        let Some(bar) = bar else {
            return Ok(ExitCode::SUCCESS);
        };
        bar.finish_and_clear();
    }
    print_status(&fleet, &jobs);
    Ok(ExitCode::SUCCESS)
}

/// What `status --watch` shows of a fleet each time it reads it.
struct Watched {
    counts: Vec<(JobState, u64)>,
    ended: u64,
    per_second: Option<f64>,
    outcome_unknown: Vec<String>,
    done: bool,
}

impl Watched {
    fn of(fleet: &FleetRecord, jobs: &[FleetJob]) -> Watched {
        let (states, progress) = fleet.progress(jobs);
        let ended = jobs
            .iter()
            .filter(|job| job.run.finished_at.is_some())
            .count() as u64;
        // Ended tenants over the time from the first start to the last end (now while running).
        let first = jobs.iter().filter_map(|job| job.run.started_at).min();
        let last = if progress.done {
            jobs.iter().filter_map(|job| job.run.finished_at).max()
        } else {
            Some(time::OffsetDateTime::now_utc())
        };
        let per_second = match (first, last) {
            (Some(first), Some(last)) if last > first && ended > 0 => {
                Some(ended as f64 / (last - first).as_seconds_f64())
            }
            _ => None,
        };
        Watched {
            counts: progress.counts.into_iter().collect(),
            ended,
            per_second,
            outcome_unknown: jobs
                .iter()
                .zip(&states)
                .filter(|(_, state)| **state == JobState::OutcomeUnknown)
                .map(|(job, _)| job.tenant.clone())
                .collect(),
            done: progress.done,
        }
    }

    /// One line for a terminal.
    fn line(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(state, n)| format!("{n} {}", state.as_str()))
            .collect();
        let mut line = counts.join(", ");
        if let Some(rate) = self.per_second {
            line.push_str(&format!("; {rate:.1} tenants/s"));
        }
        if !self.outcome_unknown.is_empty() {
            let names: Vec<String> = self
                .outcome_unknown
                .iter()
                .map(|tenant| escape(tenant, Layout::Line).into_owned())
                .collect();
            line.push_str(&format!("; OUTCOME UNKNOWN (check): {}", names.join(", ")));
        }
        line
    }

    /// One JSON line for a pipe (without the rate, so that an unchanged fleet is one line).
    fn json(&self, fleet: &FleetRecord) -> String {
        let counts: serde_json::Map<String, Value> = self
            .counts
            .iter()
            .map(|(state, n)| (state.as_str().to_owned(), json!(n)))
            .collect();
        json!({
            "fleet": fleet.id,
            "counts": counts,
            "ended": self.ended,
            "outcome_unknown": self.outcome_unknown,
            "cancelled": fleet.cancelled_at.is_some(),
            "done": self.done,
        })
        .to_string()
    }
}

/// `fleet status`'s report on stdout.
fn print_status(fleet: &FleetRecord, jobs: &[FleetJob]) {
    let (states, progress) = fleet.progress(jobs);
    println!("fleet {}", fleet.id);
    println!("guest     {}", escape(&fleet.guest, Layout::Line));
    println!(
        "tenants   {} ({})",
        jobs.len(),
        escape(&fleet.selector, Layout::Line)
    );
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["state", "tenants"]);
    for (state, count) in &progress.counts {
        table.add_row([state.as_str().to_owned(), count.to_string()]);
    }
    println!("{table}");
    let unknown: Vec<String> = jobs
        .iter()
        .zip(&states)
        .filter(|(_, state)| **state == JobState::OutcomeUnknown)
        .map(|(job, _)| escape(&job.tenant, Layout::Line).into_owned())
        .collect();
    if !unknown.is_empty() {
        println!(
            "outcome unknown (may have written; check these tenants before retrying anything): {}",
            unknown.join(", ")
        );
    }
    if fleet.dry_run {
        let planned: usize = jobs.iter().map(|job| planned_of(job).len()).sum();
        let tenants = jobs
            .iter()
            .filter(|job| !planned_of(job).is_empty())
            .count();
        println!(
            "dry run: {planned} write(s) planned over {tenants} tenant(s), none sent (`warden \
             fleet results {} --planned` lists them)",
            fleet.id
        );
    }
    println!(
        "{}",
        if progress.done {
            "done"
        } else if progress.halted {
            "stopped at the failure limit; running tenants are ending"
        } else {
            "in progress"
        }
    );
}

async fn results(args: FleetResultsArgs) -> anyhow::Result<ExitCode> {
    let store = args.fleet.database.open(false).await?;
    let fleet = store
        .fleet(args.fleet.id)
        .await?
        .ok_or(StoreError::NotFound { id: args.fleet.id })
        .map_err(not_found)?;
    let jobs = store.fleet_jobs(fleet.id).await?;
    if args.planned {
        if !fleet.dry_run {
            anyhow::bail!(
                "fleet {} is no dry run: it planned nothing, its writes were sent\n  fix: drop \
                 --planned (`fleet results {}` lists what each tenant did)",
                fleet.id,
                fleet.id
            );
        }
        print_planned(&jobs, args.output)?;
    } else {
        print_results(&fleet, &jobs, args.output)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A job's planned writes (a dry run's), as its worker stored them.
fn planned_of(job: &FleetJob) -> &[Value] {
    job.run
        .results
        .as_ref()
        .and_then(|results| results.get("planned"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// One row per planned write of a dry-run fleet on stdout.
fn print_planned(jobs: &[FleetJob], format: ResultsFormat) -> anyhow::Result<()> {
    let rows: Vec<Value> = jobs
        .iter()
        .flat_map(|job| {
            planned_of(job).iter().map(|write| {
                json!({
                    "tenant": job.tenant,
                    "cmdlet": write["cmdlet"],
                    "parameters": write["parameters"],
                })
            })
        })
        .collect();
    match format {
        ResultsFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        ResultsFormat::Csv => {
            let mut writer = csv::Writer::from_writer(std::io::stdout());
            writer.write_record(["tenant", "cmdlet", "parameters"])?;
            for row in &rows {
                writer.write_record([
                    row["tenant"].as_str().unwrap_or_default(),
                    row["cmdlet"].as_str().unwrap_or_default(),
                    &row["parameters"].to_string(),
                ])?;
            }
            writer.flush()?;
        }
        ResultsFormat::Table => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            table.set_header(["tenant", "planned write (not sent)", "parameters"]);
            for row in &rows {
                table.add_row([
                    escape(row["tenant"].as_str().unwrap_or_default(), Layout::Line).into_owned(),
                    escape(row["cmdlet"].as_str().unwrap_or_default(), Layout::Line).into_owned(),
                    escape_cut(&row["parameters"].to_string(), 100).0,
                ]);
            }
            println!("{table}");
        }
    }
    Ok(())
}

/// One row per tenant on stdout.
fn print_results(
    fleet: &FleetRecord,
    jobs: &[FleetJob],
    format: ResultsFormat,
) -> anyhow::Result<()> {
    let (states, _) = fleet.progress(jobs);
    let rows: Vec<Value> = jobs
        .iter()
        .zip(&states)
        .map(|(job, state)| {
            json!({
                "tenant": job.tenant,
                "state": state.as_str(),
                "wave": job.wave,
                "attempt": job.run.attempt,
                "may_have_written": job.run.may_have_written,
                "run_id": job.run.results.as_ref().and_then(|r| r.get("run_id")).cloned(),
                "output": job.run.results.as_ref().and_then(|r| r.get("output")).cloned(),
                "error": job.run.error,
                "planned": fleet.dry_run.then(|| planned_of(job).len()),
                "dry_run_ended": job.run.results.as_ref().and_then(|r| r.get("dry_run_ended")).cloned(),
            })
        })
        .collect();
    match format {
        ResultsFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        ResultsFormat::Csv => {
            let mut writer = csv::Writer::from_writer(std::io::stdout());
            // A dry run's rows add how many writes each tenant planned.
            let mut header = vec!["tenant", "state", "may_have_written", "output", "error"];
            if fleet.dry_run {
                header.push("planned");
            }
            writer.write_record(&header)?;
            for row in &rows {
                let mut record = vec![
                    row["tenant"].as_str().unwrap_or_default().to_owned(),
                    row["state"].as_str().unwrap_or_default().to_owned(),
                    row["may_have_written"].to_string(),
                    cell_text(&row["output"]),
                    row["error"]
                        .as_str()
                        .or(row["dry_run_ended"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                ];
                if fleet.dry_run {
                    record.push(row["planned"].to_string());
                }
                writer.write_record(&record)?;
            }
            writer.flush()?;
        }
        ResultsFormat::Table => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            let mut header = vec!["tenant", "state", "output or error"];
            if fleet.dry_run {
                header.push("planned");
            }
            table.set_header(header);
            for row in &rows {
                let detail = match (row["error"].as_str(), row["dry_run_ended"].as_str()) {
                    (Some(error), _) => error.to_owned(),
                    (None, Some(ended)) => format!("ended at a planned write: {ended}"),
                    (None, None) => cell_text(&row["output"]),
                };
                let mut cells = vec![
                    escape(row["tenant"].as_str().unwrap_or_default(), Layout::Line).into_owned(),
                    row["state"].as_str().unwrap_or_default().to_owned(),
                    escape_cut(&detail, 100).0,
                ];
                if fleet.dry_run {
                    cells.push(row["planned"].to_string());
                }
                table.add_row(cells);
            }
            println!("{table}");
        }
    }
    Ok(())
}

fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A running job's handle for the heartbeat and a second Ctrl-C: its claim and its interrupt.
#[derive(Debug, Clone)]
struct Active {
    claim: Claim,
    interrupt: Interrupt,
}

/// How many guests a worker keeps compiled: a long-lived `warden worker` that ran many fleets
/// keeps only the latest (an evicted one is read, checked and compiled again if needed).
const GUESTS_KEPT: usize = 8;

/// A kept guest's key: the path and SHA-256 its fleet recorded.
type GuestKey = (String, String);

/// A fleet's guest as a worker keeps it: read once, checked once against the SHA-256 the fleet
/// recorded, compiled once, then run by every job that names the same file and digest.
enum Guest {
    Script {
        script: CompiledScript,
        principal: Principal,
    },
    Plugin {
        checked: CheckedPlugin,
        bytes: Vec<u8>,
        /// Compiled once a run under the policy has compiled it (a plugin no grant allows is
        /// never compiled): the next jobs run it as it is.
        loaded: std::sync::OnceLock<LoadedPlugin>,
    },
}

/// A process working fleet jobs: its slots claim jobs, a background task keeps their claims
/// alive, stops the jobs whose claims were taken back, and takes back the jobs of workers that
/// went silent.
pub struct Worker {
    store: Store,
    policy: Arc<Policy>,
    audit: Arc<AuditTrail>,
    auth: AuthArgs,
    call_timeout: Duration,
    plugins: PluginHost,
    scripts: ScriptHost,
    /// The last [`GUESTS_KEPT`] guests read, oldest first, by the path and SHA-256 their
    /// fleets recorded.
    guests: Mutex<std::collections::VecDeque<(GuestKey, Arc<Guest>)>>,
    /// One Exchange session per tenant for the life of the process: its own token cache and
    /// throttle back-off, shared by that tenant's jobs only.
    sessions: Mutex<HashMap<String, Arc<dyn CmdletRunner>>>,
    /// One HTTPS transport per CA file, shared by every tenant's session: one client and one
    /// connection pool (up to 32 idle connections per host) for the worker, instead of a
    /// client built per tenant. A connection carries no tenant's state (each request has its
    /// own token).
    transports: Mutex<Vec<(Option<PathBuf>, Arc<ReqwestTransport>)>>,
    instance: String,
    /// Each slot's current worker name. A slot that gives up a job (its end could not be
    /// recorded) takes a new name: the heartbeat stops keeping that job alive, and the sweep
    /// takes it back like a dead worker's.
    slots: Mutex<Vec<String>>,
    renames: std::sync::atomic::AtomicU64,
    timing: ClaimTiming,
    active: Mutex<Vec<Active>>,
    /// Set on the first Ctrl-C: slots claim nothing more.
    stopping: std::sync::atomic::AtomicBool,
    /// The config's tenant profiles with their tags, for grants limited to tenants.
    tenants: HashMap<String, Candidate>,
}

impl Worker {
    /// Reads the policy, opens the audit trail, names the slots and takes back the jobs of
    /// workers silent past `--stale-after-secs`.
    pub async fn start(args: &WorkArgs, store: Store) -> anyhow::Result<Arc<Worker>> {
        refuse_one_tenant_flags(&args.guest.auth)?;
        let env = Environment::from_process();
        if args.guest.replay.is_some() || args.guest.record.is_some() {
            anyhow::bail!(
                "--replay and --record are for one tenant's run\n  fix: record with `warden run \
                 --tenant NAME --record FILE`, and run the fleet without them"
            );
        }
        let timing = ClaimTiming::new(
            Duration::from_secs(args.heartbeat_secs),
            Duration::from_secs(args.stale_after_secs),
        )
        .map_err(|_| {
            anyhow::anyhow!(
                "--stale-after-secs {} is less than three heartbeats ({} s each)\n  fix: raise \
                 it, or send heartbeats more often: a live worker's jobs would be taken back",
                args.stale_after_secs,
                args.heartbeat_secs
            )
        })?;
        let policy = load_policy(
            &policy_path(args.guest.policy.as_deref(), &env)?,
            args.guest.quiet,
        )?;
        // Tags matter only to grants limited to tenants.
        let config = match args.guest.auth.config_path(&env) {
            Some(path) if policy.limits_tenants() => Some(ConfigFile::load(&path)?),
            _ => None,
        };
        check_policy_tenants(&policy, config.as_ref())?;
        let tenants = config.as_ref().map(known_tenants).unwrap_or_default();
        let (audit_path, key_path) = args.guest.audit_paths(&env)?;
        let audit = open_audit(&audit_path, &key_path)?;
        let plugins = PluginHost::builder(RuntimeLimits::default())
            .cache_dir(cache_dir(args.cache_dir.as_deref(), false))
            .cache_key(Some(cache_key_beside(&key_path)))
            .build()
            .map_err(crate::guest_args::runtime_error)?;
        let host = env
            .get("HOSTNAME")
            .map(str::to_owned)
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_else(|| "host".to_owned());
        let instance = format!(
            "{}:{}:{}",
            host.trim().replace('/', "-"),
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let slots = (1..=args.concurrency)
            .map(|slot| format!("{instance}/{slot}"))
            .collect();
        let worker = Arc::new(Worker {
            store,
            policy: Arc::new(policy),
            audit: Arc::new(audit),
            auth: args.guest.auth.clone(),
            call_timeout: Duration::from_secs(args.guest.call_timeout.max(1)),
            plugins,
            scripts: ScriptHost::new(RuntimeLimits::default()),
            guests: Mutex::new(std::collections::VecDeque::new()),
            sessions: Mutex::new(HashMap::new()),
            transports: Mutex::new(Vec::new()),
            instance,
            slots: Mutex::new(slots),
            renames: std::sync::atomic::AtomicU64::new(0),
            timing,
            active: Mutex::new(Vec::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            tenants,
        });
        worker.recover().await?;
        Ok(worker)
    }

    async fn recover(&self) -> Result<(), StoreError> {
        let recovery = self
            .store
            .recover(Stale::FleetJobsSilentFor(self.timing.stale_after()))
            .await?;
        if !recovery.outcome_unknown.is_empty() {
            tracing::warn!(
                jobs = ?recovery.outcome_unknown,
                "jobs of a silent worker may have written: now outcome-unknown, never re-run"
            );
        }
        // A job ended by the sweep may have been its fleet's last: no worker ends it, so the
        // summary is written here.
        for fleet in recovery.fleets {
            self.summarise(fleet).await;
        }
        Ok(())
    }

    /// Claims nothing more; [`Worker::work`] returns once the running jobs ended.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Interrupts the running jobs (a second Ctrl-C): each ends as a stopped run does, failed,
    /// or outcome-unknown when it may have written.
    pub fn interrupt_running(&self) {
        for active in self.active.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            active.interrupt.interrupt();
        }
    }

    fn slot_name(&self, slot: usize) -> String {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[slot].clone()
    }

    /// Works jobs (of `fleet`, or of any fleet) until `fleet` is done, or [`Worker::stop`];
    /// with neither, forever.
    pub async fn work(self: &Arc<Self>, fleet: Option<Uuid>) -> anyhow::Result<()> {
        let keeper = {
            let worker = self.clone();
            tokio::spawn(async move { worker.keep_alive().await })
        };
        let mut slots = tokio::task::JoinSet::new();
        let count = self.slots.lock().unwrap_or_else(|p| p.into_inner()).len();
        for slot in 0..count {
            let worker = self.clone();
            slots.spawn(async move { worker.work_slot(slot, fleet).await });
        }
        let mut result = Ok(());
        while let Some(joined) = slots.join_next().await {
            if let Err(error) = joined {
                result = Err(anyhow::anyhow!("a worker slot panicked: {error}"));
            }
        }
        keeper.abort();
        result
    }

    /// Says every heartbeat that the slots are alive, stops the jobs whose claims were taken
    /// back (their reads would go on for nothing), stops every job once no heartbeat went
    /// through for `stale_after - heartbeat` (the sweeps elsewhere may take them at the next
    /// beat), and sweeps silent workers' jobs every half stale age.
    async fn keep_alive(&self) {
        let every = self.timing.heartbeat_every();
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let give_up_after = self.timing.stale_after() - every;
        let mut last_beat = tokio::time::Instant::now();
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            ticks.tick().await;
            // Taken before the beat: a job claimed after it is not judged by this beat.
            let running: Vec<Active> = self
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let names: Vec<String> = self.slots.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut held = std::collections::HashSet::new();
            let mut failed = false;
            for name in &names {
                match self.store.heartbeat(name).await {
                    Ok(claims) => held.extend(claims),
                    Err(error) => {
                        failed = true;
                        tracing::warn!(%error, "could not send a heartbeat");
                    }
                }
            }
            if failed {
                if last_beat.elapsed() >= give_up_after {
                    for job in &running {
                        tracing::error!(job = %job.claim.id, "no heartbeat for {give_up_after:?}: stopping the job before another worker takes it");
                        job.interrupt.interrupt();
                    }
                }
            } else {
                last_beat = tokio::time::Instant::now();
                for job in running.iter().filter(|job| !held.contains(&job.claim)) {
                    tracing::warn!(job = %job.claim.id, "the job's claim was taken back: stopping it");
                    job.interrupt.interrupt();
                }
            }
            if last_sweep.elapsed() >= self.timing.stale_after() / 2 {
                last_sweep = tokio::time::Instant::now();
                if let Err(error) = self.recover().await {
                    tracing::warn!(%error, "could not take back silent workers' jobs");
                }
            }
        }
    }

    /// Claims and runs jobs until `fleet` is done (forever without one) or the worker stops.
    /// A store error never ends the slot: it waits a heartbeat and tries again, so a database
    /// failover costs time, not workers.
    async fn work_slot(&self, slot: usize, fleet: Option<Uuid>) {
        let idle = Duration::from_millis(250).min(self.timing.heartbeat_every());
        while !self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            let name = self.slot_name(slot);
            let claimed = match self.store.claim_next_fleet_job(&name, fleet).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "could not claim a fleet job; trying again");
                    tokio::time::sleep(self.timing.heartbeat_every()).await;
                    continue;
                }
            };
            match claimed {
                Some(job) => {
                    if !self.run_job(job).await {
                        self.rename(slot);
                    }
                }
                None => {
                    if let Some(fleet) = fleet {
                        match self.fleet_done(fleet).await {
                            Ok(true) => return,
                            Ok(false) => {}
                            Err(error) => {
                                tracing::warn!(%error, "could not read the fleet; trying again")
                            }
                        }
                    }
                    tokio::time::sleep(idle).await;
                }
            }
        }
    }

    /// Gives the slot a new worker name, leaving its old claim to go silent.
    fn rename(&self, slot: usize) {
        let n = self
            .renames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}/{}.{}", self.instance, slot + 1, n + 1);
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[slot] = name;
    }

    /// Whether nothing of `fleet` runs and nothing more can start: its jobs counted by state in
    /// one query, asked by every idle slot.
    async fn fleet_done(&self, fleet: Uuid) -> Result<bool, StoreError> {
        let Some((_, progress)) = self.store.fleet_progress(fleet).await? else {
            return Ok(true);
        };
        if progress.done {
            // It may have ended by a sweep or a cancel, with no job ending here.
            self.summarise_ended(fleet).await;
        }
        Ok(progress.done)
    }

    /// Writes the fleet's summary if it just ended. Asked after every job's end: a fleet with
    /// a job running (nearly always, mid-fleet) costs one indexed count of its running jobs;
    /// only then are its jobs counted by status, and read in full once it is done.
    async fn summarise(&self, fleet: Uuid) {
        match self.store.fleet_has_running(fleet).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, %fleet, "could not count the fleet's running jobs for its summary");
                return;
            }
        }
        match self.store.fleet_progress(fleet).await {
            Ok(Some((_, progress))) if progress.done => self.summarise_ended(fleet).await,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, %fleet, "could not count the fleet's jobs for its summary")
            }
        }
    }

    /// Writes the summary of a fleet seen done (see [`summarise`]: it checks again, and only
    /// one process writes it); a failure is logged, the jobs' ends are recorded already.
    async fn summarise_ended(&self, fleet: Uuid) {
        if let Err(error) = summarise(&self.store, &self.audit, fleet).await {
            tracing::error!(error = %format!("{error:#}"), %fleet, "could not write the fleet's summary");
        }
    }

    /// Calls the store until it answers, while a transient error (the database unreachable or
    /// failing over) lasts less than `stale_after - heartbeat`: past that the job would be
    /// taken back anyway. The job stays this worker's meanwhile (its heartbeats go on).
    async fn patiently<T, F, Fut>(&self, what: &str, mut step: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let every = self.timing.heartbeat_every();
        let patience = self.timing.stale_after() - every;
        let started = tokio::time::Instant::now();
        loop {
            match step().await {
                Err(error @ (StoreError::Database { .. } | StoreError::Connect { .. }))
                    if started.elapsed() + every < patience =>
                {
                    tracing::warn!(%error, "{what}; trying again");
                    tokio::time::sleep(every).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a claimed job and records how it ended. `false` when the store could not be
    /// reached in time: the slot gives the job up to the sweep (a job that never wrote is
    /// queued again, one that may have written becomes outcome-unknown).
    async fn run_job(&self, job: FleetJob) -> bool {
        let Some(claim) = job.run.claim() else {
            return true;
        };
        let active = Active {
            claim: claim.clone(),
            interrupt: Interrupt::new(),
        };
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(active.clone());
        let recorded = self.run_claimed(&job, &claim, &active.interrupt).await;
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|running| running.claim != claim);
        recorded
    }

    async fn run_claimed(&self, job: &FleetJob, claim: &Claim, interrupt: &Interrupt) -> bool {
        // A store error here is the store's, not the tenant's: the job is given back, not failed.
        let fleet = match self
            .patiently("could not read the job's fleet", || {
                self.store.fleet(job.fleet)
            })
            .await
        {
            Ok(fleet) => fleet,
            Err(error) => {
                tracing::error!(%error, tenant = %job.tenant, "could not read the job's fleet: leaving the job to be taken back");
                return false;
            }
        };
        let (status, results, error) = match fleet {
            Some(fleet) => self.execute(&fleet, job, claim, interrupt).await,
            None => (
                RunStatus::Failed,
                None,
                Some("its fleet is gone".to_owned()),
            ),
        };
        match self
            .patiently("could not record the job's end", || {
                self.store
                    .finish(claim, status, results.clone(), error.clone())
            })
            .await
        {
            Ok(_) => {
                self.summarise(job.fleet).await;
                true
            }
            // Taken back while it ran (this worker looked silent): the job is someone else's
            // now, and its writes were refused once the claim was gone.
            Err(StoreError::ClaimLost { .. } | StoreError::Conflict { .. }) => {
                tracing::warn!(tenant = %job.tenant, "the job was taken back while it ran");
                true
            }
            Err(error) => {
                tracing::error!(%error, tenant = %job.tenant, "could not record the job's end: leaving it to be taken back");
                false
            }
        }
    }

    /// Runs one tenant's job; never fails the worker: every problem is the job's outcome.
    async fn execute(
        &self,
        fleet: &FleetRecord,
        job: &FleetJob,
        claim: &Claim,
        interrupt: &Interrupt,
    ) -> (RunStatus, Option<Value>, Option<String>) {
        let failed = |error: String| (RunStatus::Failed, None, Some(error));
        let guest = match self.guest(fleet) {
            Ok(guest) => guest,
            Err(error) => return failed(error),
        };
        let exchange = match self.session(&job.tenant) {
            Ok(exchange) => exchange,
            Err(error) => return failed(format!("tenant {}: {error:#}", job.tenant)),
        };
        let diagnosis = Arc::new(Mutex::new(None));
        let exchange: Arc<dyn CmdletRunner> = Arc::new(DiagnosedRunner {
            inner: exchange,
            diagnosis: diagnosis.clone(),
        });
        let marked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let marker = Arc::new(StoreMarker {
            store: self.store.clone(),
            claim: claim.clone(),
            marked: marked.clone(),
        });
        let runner: Arc<dyn CmdletRunner> = Arc::new(MarkingRunner::new(exchange, marker));
        let broker = Broker::new(
            self.policy.clone(),
            runner,
            self.audit.clone(),
            self.call_timeout,
        )
        .in_fleet(FleetMember {
            fleet: fleet.id.to_string(),
            tenant: job.tenant.clone(),
        });
        let planned = fleet
            .dry_run
            .then(|| Arc::new(warden_broker::PlannedWrites::default()));
        let broker = match &planned {
            Some(planned) => broker.dry_run(planned.clone()),
            None => broker,
        };
        // A profile gone from this worker's config, or without its own `tenant_id`, has no
        // tenant: a grant limited to tenants refuses it.
        let broker = match self.tenants.get(&job.tenant) {
            Some(tenant) => broker.for_tenant(tenant.clone()),
            None => broker,
        };
        let request = RunRequest::new(fleet.args.clone()).with_interrupt(interrupt.clone());
        let result = match &*guest {
            Guest::Script { script, principal } => {
                self.scripts
                    .run(script, principal.clone(), &broker, request)
                    .await
            }
            Guest::Plugin {
                checked,
                bytes,
                loaded,
            } => match loaded.get() {
                Some(plugin) => self.plugins.run(plugin, &broker, request).await,
                None => {
                    let result = self.plugins.run_checked(checked, &broker, request).await;
                    // It ran, so a grant allows it and it compiles (from the cache now).
                    if result.is_ok()
                        && let Ok(plugin) = self.plugins.load_bytes(&fleet.guest, bytes.clone())
                    {
                        let _ = loaded.set(plugin);
                    }
                    result
                }
            },
        };
        let wrote = marked.load(std::sync::atomic::Ordering::Acquire);
        // The guest sees only that no token could be had; the job's error says why (the
        // AADSTS code and what to do), for this tenant alone.
        let diagnosis = diagnosis.lock().unwrap_or_else(|p| p.into_inner()).take();
        let with_diagnosis = |error: String| match &diagnosis {
            Some(diagnosis) => format!("{error}; tenant {}: {diagnosis}", job.tenant),
            None => error,
        };
        let mut guest_failed = false;
        let (status, mut results, error) = match result {
            // The run's end line (and with it lines queued before it, a write's closing line
            // among them) did not reach the trail: what the run did is not on record.
            Ok(report) if !report.trail_closed => (
                if wrote {
                    RunStatus::OutcomeUnknown
                } else {
                    RunStatus::Failed
                },
                Some(json!({"run_id": report.run_id})),
                Some(
                    "the audit trail could not record the run's end: check the trail's disk \
                     and permissions"
                        .to_owned(),
                ),
            ),
            Ok(report) => {
                let run_id = json!(report.run_id);
                match report.outcome {
                    RunOutcome::Completed { output } => (
                        RunStatus::Completed,
                        Some(json!({"run_id": run_id, "output": output_value(output)})),
                        None,
                    ),
                    RunOutcome::Failed { message } => {
                        guest_failed = true;
                        (
                            RunStatus::Failed,
                            Some(json!({"run_id": run_id})),
                            Some(message),
                        )
                    }
                    // Stopped (a limit, an interrupt) after it may have written: nobody knows
                    // whether that write applied.
                    RunOutcome::Stopped { reason } => (
                        if wrote {
                            RunStatus::OutcomeUnknown
                        } else {
                            RunStatus::Failed
                        },
                        Some(json!({"run_id": run_id})),
                        Some(reason.to_string()),
                    ),
                }
            }
            Err(RuntimeError::Refused(error)) => {
                (RunStatus::Refused, None, Some(error.to_string()))
            }
            Err(error) => failed(error.to_string()),
        };
        let planned = planned.map(|planned| planned.list()).unwrap_or_default();
        if planned.is_empty() {
            return (status, results, error.map(with_diagnosis));
        }
        // A dry run predicts up to the first write its guest does not catch: a guest that
        // then fails (most do not catch the dry-run refusal) ends `completed`, its plan the
        // result and its error noted, so a plan never counts towards `--max-failures` or
        // stops `--waves`. A stop (a limit, an interrupt) or a refusal stays what it is.
        let (status, error) = match error {
            Some(message) if guest_failed => {
                let results = results.get_or_insert_with(|| json!({}));
                results["dry_run_ended"] = json!(with_diagnosis(message));
                (RunStatus::Completed, None)
            }
            error => (status, error.map(with_diagnosis)),
        };
        // A dry run's planned writes go with the job's results, whatever its end.
        let mut results = results.unwrap_or_else(|| json!({}));
        results["planned"] = json!(planned);
        (status, Some(results), error)
    }

    /// The fleet's guest: read, checked against the fleet's SHA-256 and compiled on the first
    /// job that needs it, then kept. A failure is not kept (the next job tries again); it is
    /// the job's error.
    fn guest(&self, fleet: &FleetRecord) -> Result<Arc<Guest>, String> {
        let key = (fleet.guest.clone(), fleet.guest_sha256.clone());
        if let Some((_, guest)) = self
            .guests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(kept, _)| *kept == key)
        {
            return Ok(guest.clone());
        }
        let path = PathBuf::from(&fleet.guest);
        let bytes = std::fs::read(&path)
            .map_err(|error| format!("{}: cannot be read here: {error}", fleet.guest))?;
        if warden_vocab::sha256_hex(&bytes) != fleet.guest_sha256 {
            return Err(format!(
                "{} changed since the fleet was created (its SHA-256 differs): it is not run",
                fleet.guest
            ));
        }
        let guest = if is_script(&path) {
            let source = String::from_utf8_lossy(&bytes);
            Guest::Script {
                script: self
                    .scripts
                    .compile(&fleet.guest, &source)
                    .map_err(|error| error.to_string())?,
                principal: Principal::script_file(&path, &bytes),
            }
        } else {
            Guest::Plugin {
                checked: PluginHost::check_bytes(&fleet.guest, bytes.clone())
                    .map_err(|error| error.to_string())?,
                bytes,
                loaded: std::sync::OnceLock::new(),
            }
        };
        let guest = Arc::new(guest);
        let mut guests = self.guests.lock().unwrap_or_else(|p| p.into_inner());
        // Two slots may have compiled it at once: keep one.
        if !guests.iter().any(|(kept, _)| *kept == key) {
            if guests.len() == GUESTS_KEPT {
                guests.pop_front();
            }
            guests.push_back((key, guest.clone()));
        }
        Ok(guest)
    }

    /// The HTTPS transport for sessions trusting `ca_file` (and the system roots). Made under
    /// the lock: making one only reads the CA file (the roots are the process's, the client
    /// is built at its first request).
    fn transport(&self, ca_file: Option<&Path>) -> anyhow::Result<Arc<ReqwestTransport>> {
        let mut transports = self.transports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, transport)) = transports
            .iter()
            .find(|(path, _)| path.as_deref() == ca_file)
        {
            return Ok(transport.clone());
        }
        let made = Arc::new(ReqwestTransport::new(ca_file)?);
        transports.push((ca_file.map(Path::to_path_buf), made.clone()));
        Ok(made)
    }

    /// The tenant's Exchange session, built on first use as `--tenant NAME` would build it.
    fn session(&self, tenant: &str) -> anyhow::Result<Arc<dyn CmdletRunner>> {
        if let Some(session) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            return Ok(session.clone());
        }
        // Built outside the lock: building reads the config and the credential, and other
        // tenants' slots must not wait for it (under the lock one worker used one core,
        // whatever its --concurrency).
        let env = Environment::from_process();
        let mut auth = self.auth.clone();
        auth.profile = Some(tenant.to_owned());
        let exchange = auth
            .resolve_with(&env, |ca_file| self.transport(ca_file))?
            .exchange(&env, auth.transport, None)?;
        let built: Arc<dyn CmdletRunner> = LoggedRunner::new(exchange);
        // One session per tenant: a slot that built one in the meantime keeps its own.
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(sessions.entry(tenant.to_owned()).or_insert(built).clone())
    }
}

/// Keeps the first authentication failure of a job's calls (a token refused by Entra, a role
/// missing), which the broker does not show the guest.
#[derive(Debug)]
struct DiagnosedRunner {
    inner: Arc<dyn CmdletRunner>,
    diagnosis: Arc<Mutex<Option<String>>>,
}

impl CmdletRunner for DiagnosedRunner {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        Box::new(DiagnosedPages {
            pages: self.inner.start(invocation),
            diagnosis: self.diagnosis.clone(),
        })
    }
}

#[derive(Debug)]
struct DiagnosedPages {
    pages: Box<dyn PageStream>,
    diagnosis: Arc<Mutex<Option<String>>>,
}

impl DiagnosedPages {
    fn keep(&self, result: &Result<Option<Page>, ExchangeError>) {
        if let Err(error @ (ExchangeError::Auth(_) | ExchangeError::AccessDenied { .. })) = result {
            self.diagnosis
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| error.to_string());
        }
    }
}

#[async_trait]
impl PageStream for DiagnosedPages {
    async fn next_page(&mut self) -> Result<Option<Page>, ExchangeError> {
        let result = self.pages.next_page().await;
        self.keep(&result);
        result
    }

    async fn next_page_within(
        &mut self,
        patience: Duration,
    ) -> Result<Option<Page>, ExchangeError> {
        let result = self.pages.next_page_within(patience).await;
        self.keep(&result);
        result
    }
}
