//! `warden-bench fleet`: how a fleet scales with workers.
//!
//! exosim serves `--tenants N` generated customers (the multi-tenant app consented in each)
//! and adds `--exchange-latency-ms` to every Exchange answer; a throwaway PostgreSQL
//! (`warden_store::testing::Postgres`, as the tests start one) holds the fleet. For each
//! number of workers (and each `--concurrency`), a fresh database gets the fleet from `warden
//! fleet run --no-work` (every tenant × one read), then that many `warden worker` processes
//! are started and the clock runs until the store says the fleet is done.
//!
//! Recorded per run: wall time from the workers' start, the active span (first claim to last
//! finish, from the store), tenants per second, job time percentiles, the token requests per
//! tenant from exosim's request log (one each is the goal: each tenant's job runs once, in one
//! worker, which fetches the tenant's token once), and the CPU seconds of the workers, exosim
//! and PostgreSQL (from `/proc`), which say what saturated. Like every measurement here it
//! fails only when the work was not done: a job that did not complete.

use crate::exo::ExosimProcess;
use crate::stats::percentile;
use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use warden_store::testing::Postgres;
use warden_store::{RunStatus, Store};

/// Reads each tenant's first mailbox: one Exchange call per tenant.
const READ_SCRIPT: &str = "let m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 1});\n\
                           m[0].PrimarySmtpAddress\n";
/// Linux's clock tick for `/proc/*/stat` times (`getconf CLK_TCK`; 100 on every Linux
/// architecture warden builds for).
const TICKS_PER_SECOND: f64 = 100.0;

/// Arguments of `warden-bench fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The exosim binary.
    #[arg(long)]
    exosim: PathBuf,
    /// The warden binary (`fleet run`, `worker`).
    #[arg(long)]
    warden: PathBuf,
    /// Where to write the Markdown section.
    #[arg(long)]
    markdown: PathBuf,
    /// Where to write the JSON results.
    #[arg(long)]
    json: PathBuf,
    /// Customer tenants (`exosim serve --tenants N`), one job each.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Milliseconds exosim adds to every Exchange answer.
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// Worker processes, one run per number.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Jobs each worker runs at once (`warden worker --concurrency`), one run per number and
    /// number of workers.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    concurrency: Vec<usize>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

/// One run's numbers.
struct FleetRun {
    workers: usize,
    concurrency: usize,
    wall: Duration,
    active: Duration,
    job_p50_ms: f64,
    job_p95_ms: f64,
    tokens_min: u64,
    tokens_max: u64,
    tenants_not_one_token: usize,
    exchange_calls: usize,
    cpu_workers: f64,
    cpu_exosim: f64,
    cpu_postgres: f64,
    load: String,
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    ensure!(args.tenants > 0, "--tenants must be at least 1");
    ensure!(
        args.workers.iter().chain(&args.concurrency).all(|n| *n > 0),
        "--workers and --concurrency take positive numbers"
    );
    let dir = tempfile::Builder::new()
        .prefix("warden-bench-fleet")
        .tempdir()?;
    let exo = ExosimProcess::start_with_args(
        &args.exosim,
        &dir.path().join("exosim"),
        1,
        None,
        &[
            "--tenants".to_owned(),
            args.tenants.to_string(),
            "--tenant-mailboxes".to_owned(),
            "1".to_owned(),
            "--exchange-latency-ms".to_owned(),
            args.latency_ms.to_string(),
        ],
    )
    .await?;
    eprintln!("fleet: exosim serves {} tenants", args.tenants);
    let postgres = tokio::task::spawn_blocking(Postgres::start)
        .await?
        .context("starting a throwaway PostgreSQL (install the postgresql package)")?;
    let env = write_setup(dir.path(), &exo)?;
    let mut runs = Vec::new();
    for &workers in &args.workers {
        for &concurrency in &args.concurrency {
            eprintln!("fleet: {workers} worker(s) × {concurrency} concurrent jobs");
            let run = one_run(
                &args,
                &exo,
                &postgres,
                &env,
                dir.path(),
                workers,
                concurrency,
            )
            .await
            .with_context(|| format!("{workers} worker(s) × {concurrency}"))?;
            eprintln!(
                "fleet:   {:.1} s, {:.0} tenants/s",
                run.wall.as_secs_f64(),
                args.tenants as f64 / run.wall.as_secs_f64()
            );
            runs.push(run);
        }
    }
    std::fs::write(&args.markdown, markdown(&args, &runs))?;
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&json_of(&args, &runs))?,
    )?;
    Ok(())
}

/// The config (one profile per generated tenant, the multi-tenant app's one secret), the
/// policy pinning the script, and the environment every warden process gets.
fn write_setup(dir: &Path, exo: &ExosimProcess) -> anyhow::Result<Vec<(String, String)>> {
    let app = &exo.ready["multi_tenant_apps"][0];
    let client_id = app["client_id"].as_str().context("ready: the fleet app")?;
    let secret = app["client_secret"]
        .as_str()
        .context("ready: the fleet app's secret")?;
    let mut config = String::new();
    let tenants = exo.ready["tenants"].as_array().context("ready: tenants")?;
    // The first tenant is the demo tenant; the generated customers follow.
    for tenant in &tenants[1..] {
        let id = tenant["tenant_id"].as_str().context("ready: tenant id")?;
        let domain = tenant["domain"].as_str().context("ready: domain")?;
        let name = domain.split('.').next().unwrap_or(domain);
        let _ = write!(
            config,
            "[tenants.{name}]\ntenant_id = \"{id}\"\nclient_id = \"{client_id}\"\n\
             tags = [\"customers\"]\n[tenants.{name}.credential]\nkind = \"secret\"\n\
             secret_env = \"MSP_SECRET\"\n"
        );
    }
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(path("config.toml"), config)?;
    std::fs::write(path("fleet.rhai"), READ_SCRIPT)?;
    let sha = warden_policy::sha256_hex(READ_SCRIPT.as_bytes());
    std::fs::write(
        path("policy.toml"),
        format!(
            "version = 1\n[roles.reader]\ndescription = \"one mailbox\"\n\
             [[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 10\n\
             [[grant]]\nid = \"fleet\"\nscript = \"fleet.rhai\"\nsha256 = \"{sha}\"\n\
             roles = [\"reader\"]\n[grant.budgets]\ncalls = 10\nwall_clock_secs = 120\n"
        ),
    )?;
    Ok(vec![
        ("WARDEN_CONFIG".into(), path("config.toml")),
        ("WARDEN_POLICY".into(), path("policy.toml")),
        ("WARDEN_AUDIT_KEY".into(), path("audit.key")),
        ("WARDEN_CACHE_DIR".into(), path("cache")),
        ("AZURE_AUTHORITY_HOST".into(), exo.url()),
        ("WARDEN_CA_FILE".into(), exo.ca_file().display().to_string()),
        ("WARDEN_EXCHANGE_URL".into(), exo.exchange_url()),
        ("MSP_SECRET".into(), secret.to_owned()),
        ("HOME".into(), dir.display().to_string()),
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
    ])
}

async fn one_run(
    args: &FleetArgs,
    exo: &ExosimProcess,
    postgres: &Postgres,
    env: &[(String, String)],
    dir: &Path,
    workers: usize,
    concurrency: usize,
) -> anyhow::Result<FleetRun> {
    let database = postgres.create_database().await;
    let run_dir = dir.join(format!("run-{workers}x{concurrency}"));
    std::fs::create_dir_all(&run_dir)?;
    let script = dir.join("fleet.rhai").display().to_string();
    let out = tokio::process::Command::new(&args.warden)
        .args(["fleet", "run", &script, "--tenants", "all", "--no-work"])
        .args(["--database", &database])
        .arg("--audit")
        .arg(run_dir.join("audit-record.jsonl"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "fleet run --no-work failed: {stderr}");
    let id = fleet_id(&stderr).with_context(|| format!("no fleet id in: {stderr}"))?;
    let store = Store::open(&database).await?;
    exo.clear_logs().await?;
    let cpu_exosim = exo.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let cpu_postgres = postgres_cpu(postgres.dir());
    let started = Instant::now();
    let mut children = Vec::new();
    for n in 0..workers {
        let child = tokio::process::Command::new(&args.warden)
            .args(["worker", "--database", &database])
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--audit")
            .arg(run_dir.join(format!("audit-{n}.jsonl")))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                run_dir.join(format!("worker-{n}.log")),
            )?)
            .kill_on_drop(true)
            .spawn()
            .context("starting warden worker")?;
        children.push(child);
    }
    let deadline = Duration::from_secs(args.timeout_secs);
    loop {
        if let Some((_, progress)) = store.fleet_progress(id).await?
            && progress.done
        {
            break;
        }
        for (n, child) in children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "worker {n} exited ({status}): {}",
                    std::fs::read_to_string(run_dir.join(format!("worker-{n}.log")))
                        .unwrap_or_default()
                );
            }
        }
        ensure!(
            started.elapsed() < deadline,
            "the fleet was not done within {} s",
            args.timeout_secs
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let cpu_workers: f64 = children
        .iter()
        .filter_map(|c| c.id())
        .filter_map(cpu_seconds)
        .sum();
    let cpu_exosim = exo.pid().and_then(cpu_seconds).unwrap_or(0.0) - cpu_exosim;
    let cpu_postgres = postgres_cpu(postgres.dir()) - cpu_postgres;
    for child in &mut children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    let jobs = store.fleet_jobs(id).await?;
    ensure!(jobs.len() == args.tenants, "{} jobs", jobs.len());
    if let Some(job) = jobs.iter().find(|j| j.run.status != RunStatus::Completed) {
        bail!(
            "tenant {} ended {}: {}",
            job.tenant,
            job.run.status,
            job.run.error.as_deref().unwrap_or("")
        );
    }
    let first = jobs.iter().filter_map(|j| j.run.started_at).min();
    let last = jobs.iter().filter_map(|j| j.run.finished_at).max();
    let active = match (first, last) {
        (Some(first), Some(last)) => Duration::try_from(last - first).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let mut job_ms: Vec<f64> = jobs
        .iter()
        .filter_map(|j| Some((j.run.finished_at? - j.run.started_at?).as_seconds_f64() * 1e3))
        .collect();
    job_ms.sort_by(f64::total_cmp);

    // Token requests per tenant, by the tenant each named (exosim's request log).
    let mut tokens: HashMap<String, u64> = HashMap::new();
    for request in exo.requests().await? {
        let path = request["path"].as_str().unwrap_or_default();
        if request["method"] == "POST"
            && path.ends_with("/token")
            && let Some(tenant) = request["tenant_id"].as_str()
        {
            *tokens.entry(tenant.to_ascii_lowercase()).or_insert(0) += 1;
        }
    }
    let customers: Vec<String> = exo.ready["tenants"]
        .as_array()
        .map(|t| t[1..].to_vec())
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["tenant_id"].as_str().map(str::to_ascii_lowercase))
        .collect();
    let per_tenant: Vec<u64> = customers
        .iter()
        .map(|id| tokens.get(id).copied().unwrap_or(0))
        .collect();
    let exchange_calls = exchange_calls(exo).await?;
    Ok(FleetRun {
        workers,
        concurrency,
        wall,
        active,
        job_p50_ms: percentile(&job_ms, 0.5),
        job_p95_ms: percentile(&job_ms, 0.95),
        tokens_min: per_tenant.iter().copied().min().unwrap_or(0),
        tokens_max: per_tenant.iter().copied().max().unwrap_or(0),
        tenants_not_one_token: per_tenant.iter().filter(|n| **n != 1).count(),
        exchange_calls,
        cpu_workers,
        cpu_exosim,
        cpu_postgres,
        load,
    })
}

/// `InvokeCommand` requests exosim answered in the run (one per tenant is the work).
async fn exchange_calls(exo: &ExosimProcess) -> anyhow::Result<usize> {
    let log: Vec<Value> = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            exo.ca_file(),
        )?)?)
        .build()?
        .get(format!("{}/_exosim/exchange-requests", exo.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(log.iter().filter(|r| r["cmdlet"] == "Get-Mailbox").count())
}

/// The fleet's id in `fleet run`'s output (`fleet 2b9c…`).
fn fleet_id(stderr: &str) -> Option<uuid::Uuid> {
    stderr
        .match_indices("fleet ")
        .find_map(|(at, _)| stderr.get(at + 6..at + 42)?.parse().ok())
}

/// User and system CPU seconds of a live process.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// CPU seconds of the PostgreSQL server whose data lives under `dir` and of its backends
/// (children), those alive now.
fn postgres_cpu(dir: &Path) -> f64 {
    let dir = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut parents: HashMap<u32, u32> = HashMap::new();
    let mut server = None;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        {
            parents.insert(pid, ppid);
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if stat.contains("(postgres)") && String::from_utf8_lossy(&cmdline).contains(&dir) {
            server = Some(pid);
        }
    }
    let Some(server) = server else {
        return 0.0;
    };
    parents
        .iter()
        .filter(|(pid, ppid)| **pid == server || **ppid == server)
        .filter_map(|(pid, _)| cpu_seconds(*pid))
        .sum()
}

fn markdown(args: &FleetArgs, runs: &[FleetRun]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### 11. Fleets: {} tenants × one read, {} ms per Exchange call\n",
        args.tenants, args.latency_ms
    );
    let _ = writeln!(
        md,
        "exosim serves {} generated tenants (`--tenants {} --exchange-latency-ms {}`), the \
         multi-tenant app consented in each; a throwaway PostgreSQL holds the fleet, recorded by \
         `warden fleet run --no-work` (one job per tenant: one `Get-Mailbox`). Then N `warden \
         worker --concurrency C` processes start, and the clock runs until the store says the \
         fleet is done. Every process runs on this one machine; CPU seconds are from `/proc` \
         (the workers, exosim, the PostgreSQL server and its backends). The active span is the \
         first claim to the last finish, from the store. Tokens: requests to each tenant's token \
         endpoint in exosim's log (one per tenant is the goal).\n",
        args.tenants, args.tenants, args.latency_ms
    );
    md.push_str(
        "| workers × concurrency | wall s | tenants/s | active span s | job p50 / p95 ms | tokens per tenant | Exchange calls | CPU s: workers / exosim / PostgreSQL | load (1, 5, 15 min) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let tokens = if run.tokens_min == run.tokens_max {
            format!("{} each", run.tokens_min)
        } else {
            format!(
                "{}–{} ({} tenants not 1)",
                run.tokens_min, run.tokens_max, run.tenants_not_one_token
            )
        };
        let _ = writeln!(
            md,
            "| {} × {} | {:.1} | {:.0} | {:.1} | {:.0} / {:.0} | {} | {} | {:.1} / {:.1} / {:.1} | {} |",
            run.workers,
            run.concurrency,
            run.wall.as_secs_f64(),
            args.tenants as f64 / run.wall.as_secs_f64(),
            run.active.as_secs_f64(),
            run.job_p50_ms,
            run.job_p95_ms,
            tokens,
            run.exchange_calls,
            run.cpu_workers,
            run.cpu_exosim,
            run.cpu_postgres,
            run.load
        );
    }
    let _ = writeln!(
        md,
        "\nCommand: `warden-bench fleet --exosim target/release/exosim --warden \
         target/release/warden --tenants {} --latency-ms {} --workers {} --concurrency {} \
         --markdown bench/results/fleet.md --json bench/results/fleet.json`",
        args.tenants,
        args.latency_ms,
        join(&args.workers),
        join(&args.concurrency)
    );
    md
}

fn join(numbers: &[usize]) -> String {
    numbers
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn json_of(args: &FleetArgs, runs: &[FleetRun]) -> Value {
    json!({
        "tenants": args.tenants,
        "latency_ms": args.latency_ms,
        "runs": runs.iter().map(|run| json!({
            "workers": run.workers,
            "concurrency": run.concurrency,
            "wall_secs": run.wall.as_secs_f64(),
            "tenants_per_sec": args.tenants as f64 / run.wall.as_secs_f64(),
            "active_span_secs": run.active.as_secs_f64(),
            "job_p50_ms": run.job_p50_ms,
            "job_p95_ms": run.job_p95_ms,
            "token_requests_per_tenant": {"min": run.tokens_min, "max": run.tokens_max,
                "tenants_not_one": run.tenants_not_one_token},
            "exchange_calls": run.exchange_calls,
            "cpu_secs": {"workers": run.cpu_workers, "exosim": run.cpu_exosim,
                "postgres": run.cpu_postgres},
            "load": run.load,
        })).collect::<Vec<_>>(),
    })
}
