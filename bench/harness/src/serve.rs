//! `warden-bench serve`: what the service costs.
//!
//! 1. The API latency of the read task `list-mailboxes` (ask for a run, poll it until it has
//!    completed; its results come in that last answer) against `warden eval` of the same script
//!    (the shipped `scripts/tasks/list-mailboxes.rhai`), interleaved.
//! 2. Many delegates on one instance, each a person of exosim with a token of their own (the
//!    password grant of exosim's public client), each asking for read runs one after another for
//!    a fixed period: throughput, and submit→completed percentiles as the clients saw them and
//!    as the service recorded them (`created_at` → `finished_at`).
//!
//! exosim and `warden serve` are processes of their own, wired as an operator wires them (the
//! app's secret in the environment, the service's registration by flags); the harness is only
//! the clients. Like every measurement here it fails only when a run did not complete.

use crate::exo::ExosimProcess;
use crate::stats::{Summary, percentile};
use anyhow::{Context, bail, ensure};
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DOMAIN: &str = "contoso.onmicrosoft.com";
const TENANT: &str = "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d";
/// The app the service runs tasks as (Exchange.ManageAsApp + Exchange Administrator).
const APP: &str = "4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e3f40";
/// The service's own registration (sign-in, and the API's audience).
const SERVICE_APP: &str = "3c7a9e1f-5b2d-4e8a-9f6c-2d4e6f8a0b13";
/// The public client the delegates' tokens come from.
const PUBLIC_CLIENT: &str = "1e5b8d2a-7c4f-4a9e-8b3d-5f7a9c1e3b24";
/// The delegates' group.
const GROUP: &str = "5e9a1c3d-4f6b-4d8e-9a0c-2b3d4e5f6a74";
const EXCHANGE_ADMINISTRATOR: &str = "29232cdf-9323-42fd-ade2-1d097af3e4de";
const TASK: &str = "list-mailboxes";
const FINAL: &[&str] = &[
    "completed",
    "failed",
    "refused",
    "rejected",
    "expired",
    "outcome-unknown",
];

/// Arguments of `warden-bench serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The exosim binary.
    #[arg(long)]
    exosim: PathBuf,
    /// The warden binary: it serves, and `warden eval` is the baseline.
    #[arg(long)]
    warden: PathBuf,
    /// Where to write the Markdown section.
    #[arg(long)]
    markdown: PathBuf,
    /// Where to write the JSON results.
    #[arg(long)]
    json: PathBuf,
    /// The task's script.
    #[arg(long, default_value_os_t = crate::repo_root().join("scripts/tasks/list-mailboxes.rhai"))]
    script: PathBuf,
    /// Repetitions of the latency comparison (each one API run and one `warden eval`).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Concurrent delegates, each a person of exosim with a token of their own.
    #[arg(long, default_value_t = 200)]
    delegates: usize,
    /// How long the delegates ask for runs, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The service's workers (`warden serve --workers`).
    #[arg(long, default_value_t = 4)]
    workers: u16,
    /// How often the latency client polls its run, in milliseconds.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// How often each concurrent delegate polls its run, in milliseconds (the service allows a
    /// person 10 requests a second).
    #[arg(long, default_value_t = 200)]
    delegate_poll_ms: u64,
}

/// One tenant: the app the service runs as, the service's registration, the public client,
/// and `delegates` people in one group (passwords random; the ready file lists them).
fn tenants_toml(delegates: usize) -> String {
    let mut toml = format!(
        r#"[[tenant]]
tenant_id = "{TENANT}"
domain = "{DOMAIN}"
display_name = "Contoso"

[[tenant.app]]
name = "warden-bench"
client_id = "{APP}"
roles = ["Exchange.ManageAsApp"]
wids = ["{EXCHANGE_ADMINISTRATOR}"]

[[tenant.app.secret]]

[[tenant.group]]
name = "Delegates"
object_id = "{GROUP}"

[tenant.service_app]
client_id = "{SERVICE_APP}"
redirect_uris = ["http://127.0.0.1/auth/callback"]

[tenant.public_client]
client_id = "{PUBLIC_CLIENT}"
"#
    );
    for i in 0..delegates {
        let _ = write!(
            toml,
            "\n[[tenant.user]]\nupn = \"delegate{i}@{DOMAIN}\"\ngroups = [\"Delegates\"]\n"
        );
    }
    toml
}

/// The policy of both contenders: the script pinned as the task's grant (the service), and the
/// operator's ad hoc grant for `warden eval`, under the same role and budgets.
fn policy_toml(sha: &str) -> String {
    format!(
        r#"version = 1

[roles.mailbox-reader]
[[roles.mailbox-reader.cmdlet]]
name = "Get-Mailbox"
max_result_size = 1000
output = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails"]
[roles.mailbox-reader.cmdlet.parameters]
Identity = {{ domain = ["{DOMAIN}"] }}
RecipientTypeDetails = {{ one_of = ["UserMailbox", "SharedMailbox", "RoomMailbox"] }}

[[grant]]
id = "list-mailboxes"
script = "list-mailboxes.rhai"
sha256 = "{sha}"
roles = ["mailbox-reader"]
[grant.budgets]
calls = 5
wall_clock_secs = 60

# `warden eval`: the operator's ad hoc grant, the same role and budgets (a policy pins one
# text once, and the task's grant already pins it as a file).
[[grant]]
id = "operator-eval"
principal = "operator"
script_inline = "any"
roles = ["mailbox-reader"]
[grant.budgets]
calls = 5
wall_clock_secs = 60

[[task]]
id = "{TASK}"
title = "List mailboxes"
description = "Every mailbox of the tenant with its address and kind."
grant = "list-mailboxes"
approval = "never"
delegates = ["group:Delegates"]
[[task.parameter]]
name = "kind"
label = "Kind of mailbox"
cmdlet = "Get-Mailbox"
parameter = "RecipientTypeDetails"
required = false
"#
    )
}

/// A running `warden serve`; killed when dropped.
struct ServeProcess {
    /// Held for its `kill_on_drop`.
    _child: tokio::process::Child,
    url: String,
    log: PathBuf,
}

impl ServeProcess {
    async fn start(
        args: &ServeArgs,
        exo: &ExosimProcess,
        policy: &Path,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let ready = dir.join("serve-ready.json");
        let secret = dir.join("service.secret");
        let service_secret = exo.ready["tenants"][0]["service_app"]["client_secret"]
            .as_str()
            .context("ready: the service app's client_secret")?;
        std::fs::write(&secret, service_secret)?;
        let log = dir.join("serve.log");
        let mut child = tokio::process::Command::new(&args.warden)
            .arg("serve")
            .arg("--policy")
            .arg(policy)
            .args(["--bind", "127.0.0.1:0", "--instance", "bench"])
            .args(["--workers", &args.workers.to_string()])
            .arg("--ready-file")
            .arg(&ready)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--service-client-id", SERVICE_APP])
            .arg("--service-secret-file")
            .arg(&secret)
            .args(["--api-client", PUBLIC_CLIENT])
            .arg("--group")
            .arg(format!("Delegates={GROUP}"))
            .envs(exo.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", args.warden.display()))?;
        let started = Instant::now();
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(value) = serde_json::from_str::<Value>(&text)
                && let Some(url) = value["url"].as_str()
            {
                break url.to_owned();
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "warden serve exited before it was ready ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            ensure!(
                started.elapsed() < Duration::from_secs(120),
                "warden serve was not ready within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Self {
            _child: child,
            url,
            log,
        })
    }
}

/// An HTTP client trusting exosim's CA (the service itself is plain http on loopback).
fn client(exo: &ExosimProcess) -> anyhow::Result<reqwest::Client> {
    let ca = std::fs::read(exo.ca_file())?;
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(120))
        .build()?)
}

/// An access token for the service's API for each delegate (the public client's password
/// grant, as a script or `msal` would get one).
async fn tokens(http: &reqwest::Client, exo: &ExosimProcess) -> anyhow::Result<Vec<String>> {
    let users = exo.ready["tenants"][0]["users"]
        .as_array()
        .context("ready: users")?
        .clone();
    let endpoint = format!("{}/{TENANT}/oauth2/v2.0/token", exo.url());
    let scope = format!("api://{SERVICE_APP}/.default");
    let tokens: Vec<anyhow::Result<String>> = futures::stream::iter(users)
        .map(|user| {
            let (http, endpoint, scope) = (http.clone(), endpoint.clone(), scope.clone());
            async move {
                let answer: Value = http
                    .post(&endpoint)
                    .form(&[
                        ("grant_type", "password"),
                        ("client_id", PUBLIC_CLIENT),
                        ("username", user["upn"].as_str().unwrap_or_default()),
                        ("password", user["password"].as_str().unwrap_or_default()),
                        ("scope", &scope),
                    ])
                    .send()
                    .await?
                    .json()
                    .await?;
                answer["access_token"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no token for {}: {answer}", user["upn"]))
            }
        })
        .buffered(16)
        .collect()
        .await;
    tokens.into_iter().collect()
}

/// What a client of the API met on the way.
#[derive(Debug, Default, Clone, Copy)]
struct Refusals {
    /// 429s waited out (the client then asked again).
    too_many: u64,
}

/// A request to the API, asked again after a 429's `Retry-After`.
async fn api(
    request: impl Fn() -> reqwest::RequestBuilder,
    refusals: &mut Refusals,
) -> anyhow::Result<Value> {
    loop {
        let response = request().send().await?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            refusals.too_many += 1;
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "the API answered {status}: {body}");
        return Ok(body);
    }
}

/// One run of the task through the API: asked for, polled every `poll` until it is final.
/// The final answer (with the results).
async fn api_run(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    poll: Duration,
    refusals: &mut Refusals,
) -> anyhow::Result<Value> {
    let asked = api(
        || {
            http.post(format!("{base}/api/v1/tasks/{TASK}/runs"))
                .bearer_auth(token)
                .json(&json!({"parameters": {}}))
        },
        refusals,
    )
    .await?;
    let id = asked["id"].as_str().context("no run id")?.to_owned();
    loop {
        let run = api(
            || {
                http.get(format!("{base}/api/v1/runs/{id}"))
                    .bearer_auth(token)
            },
            refusals,
        )
        .await?;
        if FINAL.contains(&run["status"].as_str().unwrap_or_default()) {
            ensure!(
                run["status"] == "completed",
                "run {id} ended {}: {}",
                run["status"],
                run["error"]
            );
            return Ok(run);
        }
        tokio::time::sleep(poll).await;
    }
}

fn rows(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

/// `created_at` → `finished_at` of a run, as the service recorded them.
fn server_time(run: &Value) -> Option<Duration> {
    let at = |key: &str| OffsetDateTime::parse(run[key].as_str()?, &Rfc3339).ok();
    let elapsed = at("finished_at")? - at("created_at")?;
    elapsed.try_into().ok()
}

/// `warden eval` of the script's text, as an operator would type it: a process that loads the
/// policy, gets a token, connects, runs and prints. Its rows.
async fn eval_once(
    args: &ServeArgs,
    exo: &ExosimProcess,
    policy: &Path,
    source: &str,
    dir: &Path,
) -> anyhow::Result<usize> {
    let output = tokio::process::Command::new(&args.warden)
        .arg("eval")
        .arg(source)
        .arg("--policy")
        .arg(policy)
        .arg("--audit")
        .arg(dir.join("eval-audit.jsonl"))
        .arg("--audit-key")
        .arg(dir.join("eval-audit.key"))
        .args(["--output", "json", "--quiet"])
        .envs(exo.env())
        .stdin(Stdio::null())
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "warden eval failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "warden eval printed: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    Ok(rows(&printed))
}

/// (1): `reps` API runs and `reps` `warden eval`s, alternating which goes first. Each API run
/// is asked for by the next delegate (so no one's rate limit is in the way).
struct Latency {
    api_ms: Summary,
    eval_ms: Summary,
    api_server_ms: Summary,
    rows: usize,
    too_many: u64,
}

async fn latency(
    args: &ServeArgs,
    exo: &ExosimProcess,
    service: &ServeProcess,
    http: &reqwest::Client,
    tokens: &[String],
    policy: &Path,
    dir: &Path,
) -> anyhow::Result<Latency> {
    let source = std::fs::read_to_string(&args.script)?;
    let poll = Duration::from_millis(args.poll_ms);
    let mut refusals = Refusals::default();
    // Warm-up: the service's token and connections, exosim's caches, the binary in the page cache.
    let warm = api_run(http, &service.url, &tokens[0], poll, &mut refusals).await?;
    let expected = rows(&warm["results"]);
    ensure!(expected > 0, "the task returned no rows: {warm}");
    let eval_rows = eval_once(args, exo, policy, &source, dir).await?;
    ensure!(
        eval_rows == expected,
        "warden eval printed {eval_rows} rows, the API {expected}"
    );
    let (mut api_ms, mut eval_ms, mut server_ms) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        let token = &tokens[(rep + 1) % tokens.len()];
        for k in 0..2 {
            if (rep + k) % 2 == 0 {
                let started = Instant::now();
                let run = api_run(http, &service.url, token, poll, &mut refusals).await?;
                api_ms.push(started.elapsed());
                ensure!(
                    rows(&run["results"]) == expected,
                    "the API run lost rows: {run}"
                );
                if let Some(server) = server_time(&run) {
                    server_ms.push(server);
                }
            } else {
                let started = Instant::now();
                let printed = eval_once(args, exo, policy, &source, dir).await?;
                eval_ms.push(started.elapsed());
                ensure!(printed == expected, "warden eval printed {printed} rows");
            }
        }
        eprintln!(
            "  rep {rep}: API {:.1} ms, warden eval {:.1} ms",
            api_ms[rep].as_secs_f64() * 1e3,
            eval_ms[rep].as_secs_f64() * 1e3
        );
    }
    ensure!(!server_ms.is_empty(), "no run carried its timestamps");
    Ok(Latency {
        api_ms: Summary::of_durations_ms(&api_ms),
        eval_ms: Summary::of_durations_ms(&eval_ms),
        api_server_ms: Summary::of_durations_ms(&server_ms),
        rows: expected,
        too_many: refusals.too_many,
    })
}

/// One completed run of the load.
struct Sample {
    /// When the client saw it completed, from the start of the load.
    seen_at: Duration,
    /// Asked for → seen completed, by the client.
    client: Duration,
    /// `created_at` → `finished_at`, by the service.
    server: Option<Duration>,
}

/// One delegate: runs one after another until `until`.
async fn delegate(
    http: reqwest::Client,
    base: String,
    token: String,
    start: Instant,
    until: Instant,
    poll: Duration,
) -> anyhow::Result<(Vec<Sample>, Refusals)> {
    let mut samples = Vec::new();
    let mut refusals = Refusals::default();
    while Instant::now() < until {
        let asked = Instant::now();
        let run = api_run(&http, &base, &token, poll, &mut refusals).await?;
        samples.push(Sample {
            seen_at: start.elapsed(),
            client: asked.elapsed(),
            server: server_time(&run),
        });
    }
    Ok((samples, refusals))
}

/// (2): every delegate at once for `seconds`.
struct Load {
    delegates: usize,
    seconds: u64,
    completed: usize,
    in_window: usize,
    runs_per_second: f64,
    client_ms: Summary,
    client_p99_ms: f64,
    server_ms: Summary,
    server_p99_ms: f64,
    too_many: u64,
}

async fn load(
    args: &ServeArgs,
    service: &ServeProcess,
    http: &reqwest::Client,
    tokens: &[String],
) -> anyhow::Result<Load> {
    let start = Instant::now();
    let window = Duration::from_secs(args.seconds);
    let until = start + window;
    let poll = Duration::from_millis(args.delegate_poll_ms);
    let runs = tokens.iter().map(|token| {
        tokio::spawn(delegate(
            http.clone(),
            service.url.clone(),
            token.clone(),
            start,
            until,
            poll,
        ))
    });
    let mut samples = Vec::new();
    let mut too_many = 0;
    for run in futures::future::join_all(runs).await {
        let (mine, refusals) = run??;
        samples.extend(mine);
        too_many += refusals.too_many;
    }
    ensure!(!samples.is_empty(), "no run completed");
    let in_window = samples.iter().filter(|s| s.seen_at <= window).count();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let mut client: Vec<f64> = samples.iter().map(|s| ms(&s.client)).collect();
    let mut server: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.server.as_ref().map(ms))
        .collect();
    ensure!(!server.is_empty(), "no run carried its timestamps");
    client.sort_by(f64::total_cmp);
    server.sort_by(f64::total_cmp);
    Ok(Load {
        delegates: tokens.len(),
        seconds: args.seconds,
        completed: samples.len(),
        in_window,
        runs_per_second: in_window as f64 / window.as_secs_f64(),
        client_ms: Summary::of(&client),
        client_p99_ms: percentile(&client, 0.99),
        server_ms: Summary::of(&server),
        server_p99_ms: percentile(&server, 0.99),
        too_many,
    })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    ensure!(args.delegates >= 1 && args.reps >= 1 && args.seconds >= 1);
    let work = tempfile::tempdir()?;
    let config = work.path().join("tenants.toml");
    std::fs::write(&config, tenants_toml(args.delegates))?;
    let exo =
        ExosimProcess::start_with(&args.exosim, &work.path().join("exosim"), 25, Some(&config))
            .await?;
    eprintln!(
        "exosim ready at {} with {} delegates",
        exo.url(),
        args.delegates
    );
    let dir = work.path().join("serve");
    std::fs::create_dir_all(&dir)?;
    let script = std::fs::read(&args.script)
        .with_context(|| format!("reading {}", args.script.display()))?;
    std::fs::write(dir.join("list-mailboxes.rhai"), &script)?;
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, policy_toml(&warden_policy::sha256_hex(&script)))?;
    let service = ServeProcess::start(&args, &exo, &policy, &dir).await?;
    eprintln!("warden serve ready at {}", service.url);
    let http = client(&exo)?;
    let tokens = tokens(&http, &exo).await?;
    ensure!(tokens.len() == args.delegates, "{} tokens", tokens.len());

    eprintln!("[1/2] API vs warden eval: {} reps", args.reps);
    let latency = latency(&args, &exo, &service, &http, &tokens, &policy, &dir).await?;
    eprintln!(
        "[2/2] {} delegates for {} s ({} workers)",
        args.delegates, args.seconds, args.workers
    );
    let load = load(&args, &service, &http, &tokens).await?;
    let log = std::fs::read_to_string(&service.log).unwrap_or_default();
    drop(service);

    let mut md = String::new();
    writeln!(md, "\n### 10. The service: `warden serve`\n")?;
    writeln!(
        md,
        "exosim and `warden serve` as processes of their own (one tenant of 25 mailboxes, {} delegates in one group; the service with {} workers, SQLite in its state directory, the operator's wiring: the app's secret in the environment, the service's registration by flags). The task is `list-mailboxes`, the shipped `scripts/tasks/list-mailboxes.rhai`, pinned by the policy both contenders run under. Reproduce with:\n",
        args.delegates, args.workers
    )?;
    writeln!(
        md,
        "```sh\ntarget/release/warden-bench serve --exosim target/release/exosim --warden target/release/warden \\\n    --reps {} --delegates {} --seconds {} --workers {} \\\n    --markdown bench/results/serve.md --json bench/results/serve.json\n```\n",
        args.reps, args.delegates, args.seconds, args.workers
    )?;
    writeln!(
        md,
        "**The API against `warden eval`** ({} repetitions, interleaved; median (min–max), {} rows each):\n",
        args.reps, latency.rows
    )?;
    writeln!(md, "| contender | ms per run |")?;
    writeln!(md, "|---|---|")?;
    writeln!(
        md,
        "| API: `POST /api/v1/tasks/{TASK}/runs`, then `GET /api/v1/runs/{{id}}` every {} ms until completed (the results are in that answer) | {} |",
        args.poll_ms,
        latency.api_ms.show(1)
    )?;
    writeln!(
        md,
        "| … of which the service's own `created_at` → `finished_at` | {} |",
        latency.api_server_ms.show(1)
    )?;
    writeln!(
        md,
        "| `warden eval \"$(cat list-mailboxes.rhai)\" --output json` (a process: policy, token, connection, run, print) | {} |",
        latency.eval_ms.show(1)
    )?;
    writeln!(
        md,
        "| `warden eval` / API | {:.1}× |",
        latency.eval_ms.median / latency.api_ms.median
    )?;
    writeln!(
        md,
        "\n**{} concurrent delegates on one instance**, each with a token of its own asking for one read run after another for {} s (polling its run every {} ms):\n",
        load.delegates, load.seconds, args.delegate_poll_ms
    )?;
    writeln!(md, "| what | value |")?;
    writeln!(md, "|---|---|")?;
    writeln!(
        md,
        "| runs completed in the {} s window (all: {}) | {} |",
        load.seconds, load.completed, load.in_window
    )?;
    writeln!(
        md,
        "| throughput: runs per second | {:.1} |",
        load.runs_per_second
    )?;
    writeln!(
        md,
        "| submit → completed as the client saw it: p50 / p99 ms | {:.0} / {:.0} |",
        load.client_ms.median, load.client_p99_ms
    )?;
    writeln!(
        md,
        "| `created_at` → `finished_at` as the service recorded it: p50 / p99 ms | {:.0} / {:.0} |",
        load.server_ms.median, load.server_p99_ms
    )?;
    writeln!(
        md,
        "| 429 answers (each delegate stays under its 10 requests a second) | {} |",
        load.too_many + latency.too_many
    )?;
    writeln!(
        md,
        "\nThe service's figure counts from the moment the run was stored to its end, the wait for a worker included; the client's adds up to one polling interval. With more delegates than the workers keep up with, every delegate keeping one run in the queue, the wait is about the number of delegates divided by the throughput."
    )?;
    std::fs::write(&args.markdown, md)?;
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&json!({
            "reps": args.reps, "delegates": args.delegates, "seconds": args.seconds,
            "workers": args.workers, "poll_ms": args.poll_ms,
            "delegate_poll_ms": args.delegate_poll_ms, "rows": latency.rows,
            "api_ms": latency.api_ms, "api_server_ms": latency.api_server_ms,
            "eval_ms": latency.eval_ms,
            "load": {
                "completed": load.completed, "in_window": load.in_window,
                "runs_per_second": load.runs_per_second,
                "client_ms": load.client_ms, "client_p99_ms": load.client_p99_ms,
                "server_ms": load.server_ms, "server_p99_ms": load.server_p99_ms,
                "too_many": load.too_many + latency.too_many,
            },
        }))?,
    )?;
    if log.contains("panicked") {
        eprintln!("warden serve's log holds a panic:\n{log}");
    }
    eprintln!(
        "wrote {} and {}",
        args.markdown.display(),
        args.json.display()
    );
    Ok(())
}
