//! The measurements. Each returns a Markdown section (tables with medians and spreads, ratios
//! computed within this run) and a JSON value with the raw summaries.

use crate::bare::BareHost;
use crate::exo::ExosimProcess;
use crate::host::{Host, policy_text};
use crate::stats::Summary;
use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_exchange::{Invocation, ParamValue, Parameters};
use warden_policy::Principal;

/// Arguments of `warden-bench all`.
#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// The exosim binary (release).
    #[arg(long)]
    exosim: PathBuf,
    /// The warden binary (release), for the cold-run comparison.
    #[arg(long)]
    warden: PathBuf,
    /// The probe test guest (tests/guests, wasm32-wasip2 release).
    #[arg(long)]
    probe: PathBuf,
    /// Python with msal and requests (bench/python/requirements.txt).
    #[arg(long)]
    python: PathBuf,
    /// The Python baseline script.
    #[arg(long, default_value_os_t = crate::repo_root().join("bench/python/one_call.py"))]
    python_script: PathBuf,
    /// Where to write the Markdown results.
    #[arg(long)]
    markdown: PathBuf,
    /// Where to write the JSON results.
    #[arg(long)]
    json: PathBuf,
    /// Repetitions of the 1,000-call comparison (each runs all four contenders).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Repetitions of the cold-run comparison (each is one process of each kind).
    #[arg(long, default_value_t = 15)]
    cold_reps: usize,
    /// Runs per contender in the start-cost comparison.
    #[arg(long, default_value_t = 2000)]
    start_runs: usize,
    /// Repetitions of each scale measurement.
    #[arg(long, default_value_t = 3)]
    scale_reps: usize,
    /// Mailboxes in the scale tenant.
    #[arg(long, default_value_t = 100_000)]
    scale_mailboxes: usize,
    /// Skip the scale measurement (it takes minutes).
    #[arg(long)]
    no_scale: bool,
    /// Only these sections (comma-separated), e.g. `--only cold,start`; all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

/// The sections of `warden-bench all`, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// 1. Broker overhead.
    Overhead,
    /// 2. A cold one-call run vs Python.
    Cold,
    /// 3. Per-run start vs bare wasmtime.
    Start,
    /// 4. A refused host call.
    Refusals,
    /// 5. Token single-flight and forced refresh.
    Token,
    /// 6. Scale.
    Scale,
}

impl AllArgs {
    fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

/// Arguments of `warden-bench scale-child`.
#[derive(Debug, clap::Args)]
pub struct ScaleChildArgs {
    #[arg(long)]
    ready: PathBuf,
    #[arg(long)]
    probe: PathBuf,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    plugins: usize,
}

/// Arguments of `warden-bench profile`.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    #[arg(long)]
    exosim: PathBuf,
    #[arg(long)]
    probe: PathBuf,
    /// Plugin runs of 1,000 calls each.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Also run the broker directly (no wasm) and the plain client, one each, for comparison.
    #[arg(long)]
    layers: bool,
}

/// Calls per run in the overhead comparison (the issue's 1,000).
const CALLS: usize = 1000;
/// The call both sides make: a small read, so per-call overhead is as visible as it can be.
const CALL_PARAMS: &str = r#"{"ResultSize":10}"#;
const RESULT_SIZE: u32 = 10;
/// A call the policy refuses (Set-Mailbox is not granted).
const REFUSED_CMDLET: &str = "Set-Mailbox";
const REFUSED_PARAMS: &str = r#"{"Identity":"x","DisplayName":"y"}"#;

struct Out {
    markdown: String,
    json: serde_json::Map<String, Value>,
}

pub async fn all(args: AllArgs) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let mut out = Out {
        markdown: String::new(),
        json: serde_json::Map::new(),
    };
    let exo = ExosimProcess::start(&args.exosim, &work.path().join("exosim"), 25).await?;
    eprintln!("exosim ready at {}", exo.url());

    let host = Host::new(
        &exo,
        &args.probe,
        &work.path().join("host"),
        &rhai_scripts(),
    )?;

    if args.runs(Section::Overhead) {
        eprintln!("[1/6] broker overhead: {CALLS} calls × {} reps", args.reps);
        overhead(&mut out, &exo, &host, args.reps).await?;
        save(&out, &args)?;
    }
    if args.runs(Section::Cold) {
        eprintln!("[2/6] cold run vs Python: {} reps", args.cold_reps);
        cold(&mut out, &exo, &args, host.probe.sha256(), work.path()).await?;
        save(&out, &args)?;
    }
    if args.runs(Section::Start) {
        eprintln!("[3/6] start cost: {} runs each", args.start_runs);
        start(&mut out, &host, &args.probe, args.start_runs).await?;
        save(&out, &args)?;
    }
    if args.runs(Section::Refusals) {
        eprintln!("[4/6] refused host calls");
        host_calls(&mut out, &exo, &host).await?;
        save(&out, &args)?;
    }
    if args.runs(Section::Token) {
        eprintln!("[5/6] token single-flight and forced refresh");
        token(&mut out, &exo, &args.probe, work.path()).await?;
        save(&out, &args)?;
    }
    drop(host);
    drop(exo);
    if args.runs(Section::Scale) && args.no_scale {
        out.markdown
            .push_str("\n### 6. Scale\n\nSkipped (`--no-scale`).\n");
    } else if args.runs(Section::Scale) {
        eprintln!(
            "[6/6] scale: {} mailboxes, 1 and 16 plugins",
            args.scale_mailboxes
        );
        scale(&mut out, &args, work.path()).await?;
    }

    save(&out, &args)?;
    eprintln!(
        "wrote {} and {}",
        args.markdown.display(),
        args.json.display()
    );
    Ok(())
}

/// Writes what has been measured so far (so a late failure keeps the earlier results).
fn save(out: &Out, args: &AllArgs) -> anyhow::Result<()> {
    std::fs::write(&args.markdown, &out.markdown)?;
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&Value::Object(out.json.clone()))?,
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Broker overhead (and 7: the layer breakdown by instrumentation)

/// The plain Rust client: reqwest, the provider's token, the same URL, headers and body the
/// session sends, the response parsed with serde_json.
struct PlainClient {
    client: reqwest::Client,
    url: String,
    anchor: String,
    body: Vec<u8>,
    connection_id: String,
}

impl PlainClient {
    fn new(exo: &ExosimProcess, host: &Host) -> anyhow::Result<Self> {
        let ca = std::fs::read(exo.ca_file())?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .build()?;
        let config = host.session.config();
        let parameters = Parameters::from([(
            "ResultSize".to_owned(),
            ParamValue::ResultSize(Some(RESULT_SIZE)),
        )]);
        Ok(Self {
            client,
            url: format!(
                "{}/adminapi/beta/{}/InvokeCommand",
                config.base_url, config.tenant
            ),
            anchor: config.anchor_mailbox.clone(),
            body: serde_json::to_vec(&warden_exchange::params::cmdlet_input(
                "Get-Mailbox",
                &parameters,
            ))?,
            connection_id: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// One call; returns the number of objects.
    async fn call(&self, token: &str) -> anyhow::Result<usize> {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(token)
            .header("accept", "application/json")
            .header("accept-charset", "UTF-8")
            .header("content-type", "application/json")
            .header("x-cmdletname", "Get-Mailbox")
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .header("connection-id", &self.connection_id)
            .header("prefer", format!("odata.maxpagesize={RESULT_SIZE}"))
            .header("x-anchormailbox", &self.anchor)
            .header("x-responseformat", "json")
            .header("x-serializationlevel", "Partial")
            .body(self.body.clone())
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        ensure!(status.is_success(), "plain client: HTTP {status}");
        let value: Value = serde_json::from_slice(&bytes)?;
        Ok(value["value"].as_array().map_or(0, Vec::len))
    }
}

fn spam_args(n: usize, cmdlet: &str, params: &str) -> Vec<String> {
    vec![
        "call-spam".into(),
        n.to_string(),
        cmdlet.into(),
        params.into(),
    ]
}

/// The probe making `n` calls; checks they all succeeded.
async fn plugin_calls(host: &Host, n: usize) -> anyhow::Result<Duration> {
    let args = spam_args(n, "Get-Mailbox", CALL_PARAMS);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let (_, text) = host.probe(&args).await?;
    let elapsed = started.elapsed();
    let out: Value = serde_json::from_str(&text)?;
    ensure!(
        out["succeeded"].as_u64() == Some(n as u64),
        "the plugin's calls failed: {out}"
    );
    Ok(elapsed)
}

/// The broker called directly (what the guest runtimes call), in one run.
async fn broker_calls(host: &Host, n: usize) -> anyhow::Result<Duration> {
    let run = host
        .broker
        .begin(probe_principal(host), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    for _ in 0..n {
        let objects = host
            .broker
            .invoke(&run, "Get-Mailbox", CALL_PARAMS)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(objects.len() == RESULT_SIZE as usize);
    }
    let elapsed = started.elapsed();
    host.broker
        .end(&run, &warden_broker::RunEnd::Completed { output_bytes: 0 })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(elapsed)
}

/// The Exchange session called directly (no policy, audit or shaping).
async fn session_calls(host: &Host, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..n {
        let parameters = Parameters::from([(
            "ResultSize".to_owned(),
            ParamValue::ResultSize(Some(RESULT_SIZE)),
        )]);
        let objects = host
            .session
            .invoke(Invocation::new("Get-Mailbox", parameters))
            .await?;
        ensure!(objects.len() == RESULT_SIZE as usize);
    }
    Ok(started.elapsed())
}

async fn plain_calls(plain: &PlainClient, host: &Host, n: usize) -> anyhow::Result<Duration> {
    let token = host.provider.get_token(&host.scope).await?;
    let started = Instant::now();
    for _ in 0..n {
        let objects = plain.call(token.expose()).await?;
        ensure!(objects == RESULT_SIZE as usize);
    }
    Ok(started.elapsed())
}

fn probe_principal(host: &Host) -> Principal {
    Principal::Plugin {
        name: host.probe.name().to_owned(),
        sha256: host.probe.sha256().to_owned(),
        signature: None,
    }
}

async fn overhead(
    out: &mut Out,
    exo: &ExosimProcess,
    host: &Host,
    reps: usize,
) -> anyhow::Result<()> {
    let plain = PlainClient::new(exo, host)?;
    // Warm up every path (token, connections, compiled code, page cache of the trail).
    plugin_calls(host, 50).await?;
    broker_calls(host, 50).await?;
    session_calls(host, 50).await?;
    plain_calls(&plain, host, 50).await?;
    let (mut p, mut b, mut s, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        exo.clear_logs().await?;
        // Rotate the order so drift in the machine's load is shared out.
        for k in 0..4 {
            match (rep + k) % 4 {
                0 => p.push(plugin_calls(host, CALLS).await?),
                1 => b.push(broker_calls(host, CALLS).await?),
                2 => s.push(session_calls(host, CALLS).await?),
                _ => c.push(plain_calls(&plain, host, CALLS).await?),
            }
        }
        eprintln!(
            "  rep {rep}: plugin {:.0} ms, broker {:.0} ms, session {:.0} ms, plain {:.0} ms",
            ms(p[rep]),
            ms(b[rep]),
            ms(s[rep]),
            ms(c[rep])
        );
    }
    let ratios: Vec<f64> = p.iter().zip(&c).map(|(p, c)| ms(*p) / ms(*c)).collect();
    let [sp, sb, ss, sc] = [&p, &b, &s, &c].map(|v| Summary::of_durations_ms(v));
    let ratio = sp.median / sc.median;
    let per_call = |x: &Summary, y: &Summary| (x.median - y.median) * 1000.0 / CALLS as f64;
    let md = &mut out.markdown;
    writeln!(md, "\n### 1. Broker overhead: {CALLS} Get-Mailbox calls\n")?;
    writeln!(
        md,
        "Each call is `Get-Mailbox -ResultSize {RESULT_SIZE}` ({RESULT_SIZE} objects, about 14 KB of JSON), made one after another over one keep-alive HTTPS connection to exosim on loopback. {reps} repetitions, order rotated each repetition; ms for all {CALLS} calls, median (min–max).\n"
    )?;
    writeln!(md, "| contender | ms per {CALLS} calls | µs per call |")?;
    writeln!(md, "|---|---|---|")?;
    for (name, x) in [
        (
            "plugin through warden (probe `call-spam`, PluginHost → broker → session)",
            &sp,
        ),
        (
            "broker called directly (policy, audit, shaping; no wasm)",
            &sb,
        ),
        ("ExchangeSession called directly (no broker)", &ss),
        ("plain reqwest client, same token, same request", &sc),
    ] {
        writeln!(
            md,
            "| {name} | {} | {:.0} |",
            x.show(1),
            x.median * 1000.0 / CALLS as f64
        )?;
    }
    let pr = Summary::of(&ratios);
    writeln!(
        md,
        "\n**Ratio plugin / plain: {ratio:.3}×** (medians; per-repetition ratios {:.3}–{:.3}). Goal ≤ 1.05×: **{}**.\n",
        pr.min,
        pr.max,
        if ratio <= 1.05 { "met" } else { "missed" }
    )?;
    writeln!(
        md,
        "Where the extra time per call goes (differences of medians): wasm guest and runtime {:.0} µs, broker (policy, two audit lines, shaping, budgets) {:.0} µs, Exchange session vs plain client {:.0} µs.",
        per_call(&sp, &sb),
        per_call(&sb, &ss),
        per_call(&ss, &sc)
    )?;
    out.json.insert(
        "overhead".into(),
        json!({"calls": CALLS, "plugin_ms": sp, "broker_ms": sb, "session_ms": ss, "plain_ms": sc,
               "ratio_plugin_over_plain": ratio, "paired_ratios": pr}),
    );
    Ok(())
}

/// Plugin runs only, for `perf record` (see bench/run.sh --profile).
pub async fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let exo = ExosimProcess::start(&args.exosim, &work.path().join("exosim"), 25).await?;
    let host = Host::new(&exo, &args.probe, &work.path().join("host"), &[])?;
    plugin_calls(&host, 50).await?;
    for rep in 0..args.reps {
        let t = plugin_calls(&host, CALLS).await?;
        eprintln!("plugin rep {rep}: {:.0} ms", ms(t));
    }
    if args.layers {
        let plain = PlainClient::new(&exo, &host)?;
        for rep in 0..args.reps {
            let b = broker_calls(&host, CALLS).await?;
            let s = session_calls(&host, CALLS).await?;
            let c = plain_calls(&plain, &host, CALLS).await?;
            eprintln!(
                "rep {rep}: broker {:.0} ms, session {:.0} ms, plain {:.0} ms",
                ms(b),
                ms(s),
                ms(c)
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Cold `warden run` vs a Python script

struct ColdSetup {
    warden: Vec<String>,
    python: Vec<String>,
    env: Vec<(String, String)>,
}

async fn timed_process(argv: &[String], env: &[(String, String)]) -> anyhow::Result<Duration> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    let started = Instant::now();
    let output = command.output().await?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{} failed ({}): {stdout}\n{}",
        argv[0],
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Both print the objects they got; one mailbox each.
    ensure!(
        stdout.contains("PrimarySmtpAddress") || stdout.contains("\"objects\": 1"),
        "{} printed no mailbox: {stdout}",
        argv[0]
    );
    Ok(elapsed)
}

async fn cold(
    out: &mut Out,
    exo: &ExosimProcess,
    args: &AllArgs,
    probe_sha256: &str,
    work: &Path,
) -> anyhow::Result<()> {
    let dir = work.join("cold");
    std::fs::create_dir_all(&dir)?;
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, policy_text(probe_sha256, &[]))?;
    let p = |name: &str| dir.join(name).display().to_string();
    let setup = ColdSetup {
        warden: vec![
            args.warden.display().to_string(),
            "run".into(),
            args.probe.display().to_string(),
            "--policy".into(),
            policy.display().to_string(),
            "--audit".into(),
            p("audit.jsonl"),
            "--audit-key".into(),
            p("audit.key"),
            "--cache-dir".into(),
            p("cache"),
            "--quiet".into(),
            // JSON, so the mailbox's fields are printed whole (a table cuts long cells).
            "--output".into(),
            "json".into(),
            "--".into(),
            "invoke".into(),
            "Get-Mailbox".into(),
            r#"{"ResultSize":1}"#.into(),
        ],
        python: vec![
            args.python.display().to_string(),
            args.python_script.display().to_string(),
        ],
        env: {
            let mut env = exo.env();
            // Exchange on a host name of its own: two TLS connections, as in production.
            let exchange = exo.exchange_url_own_host();
            ensure!(
                exchange != exo.url(),
                "exosim's URL {} is on neither localhost nor 127.0.0.1",
                exo.url()
            );
            for (key, value) in &mut env {
                if key.as_str() == "WARDEN_EXCHANGE_URL" {
                    value.clone_from(&exchange);
                }
            }
            env.push(("HOME".into(), dir.display().to_string()));
            env
        },
    };
    // The very first run compiles the component into the cache; later runs load it from there.
    let first = timed_process(&setup.warden, &setup.env).await?;
    timed_process(&setup.python, &setup.env).await?;
    let (mut w, mut py) = (Vec::new(), Vec::new());
    for rep in 0..args.cold_reps {
        if rep % 2 == 0 {
            w.push(timed_process(&setup.warden, &setup.env).await?);
            py.push(timed_process(&setup.python, &setup.env).await?);
        } else {
            py.push(timed_process(&setup.python, &setup.env).await?);
            w.push(timed_process(&setup.warden, &setup.env).await?);
        }
    }
    let (sw, sp) = (Summary::of_durations_ms(&w), Summary::of_durations_ms(&py));
    let ratio = sp.median / sw.median;
    let paired = Summary::of(
        &w.iter()
            .zip(&py)
            .map(|(w, p)| ms(*p) / ms(*w))
            .collect::<Vec<_>>(),
    );
    let md = &mut out.markdown;
    writeln!(
        md,
        "\n### 2. A cold one-call run: `warden run` vs Python (msal + requests)\n"
    )?;
    writeln!(
        md,
        "A new process each time, from exec to exit: get a token with the client secret, call `Get-Mailbox -ResultSize 1`, print the result. Identity and Exchange are reached under two host names (`127.0.0.1` and `localhost`, one exosim), so each contender opens two TLS connections as it would in production (login.microsoftonline.com, outlook.office365.com) instead of reusing the token's connection for the call. warden: `warden run probe.wasm -- invoke Get-Mailbox '{{\"ResultSize\":1}}'` (policy load, audit trail open, component from the compiled-code cache, token, broker, call). Python: `bench/python/one_call.py` (msal `ConfidentialClientApplication.acquire_token_for_client`, then `requests` POST InvokeCommand), pinned in `bench/python/requirements.txt`. {} runs of each, interleaved; ms, median (min–max).\n",
        args.cold_reps
    )?;
    writeln!(md, "| contender | ms |")?;
    writeln!(md, "|---|---|")?;
    writeln!(
        md,
        "| `warden run` (compiled component cached) | {} |",
        sw.show(1)
    )?;
    writeln!(md, "| Python msal + requests | {} |", sp.show(1))?;
    writeln!(
        md,
        "| `warden run`, first run (compiles the component into the cache; one sample) | {:.1} |",
        ms(first)
    )?;
    writeln!(
        md,
        "\n**Ratio Python / warden: {ratio:.1}×** (medians; per-pair {:.1}–{:.1}). Goal: warden ≥ 15× faster: **{}**.",
        paired.min,
        paired.max,
        if ratio >= 15.0 { "met" } else { "missed" }
    )?;
    out.json.insert(
        "cold".into(),
        json!({"warden_ms": sw, "python_ms": sp, "warden_first_run_ms": ms(first),
               "ratio_python_over_warden": ratio, "paired_ratios": paired}),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Per-run start cost

async fn start(out: &mut Out, host: &Host, probe: &Path, runs: usize) -> anyhow::Result<()> {
    let bare = BareHost::new(host.plugins.engine(), &std::fs::read(probe)?)?;
    let args = vec!["echo-args".to_owned()];
    let warden_once = || async {
        let started = Instant::now();
        let (_, text) = host.probe(&["echo-args"]).await?;
        let elapsed = started.elapsed();
        ensure!(text == "[]", "echo-args printed {text}");
        anyhow::Ok(elapsed)
    };
    for _ in 0..100 {
        warden_once().await?;
        bare.run(&args).await?;
    }
    let (mut w, mut b) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let block = 100;
    for i in 0..runs.div_ceil(block) {
        for _ in 0..block {
            if i % 2 == 0 {
                w.push(warden_once().await?);
                let (t, text) = bare.run(&args).await?;
                ensure!(text == "[]");
                b.push(t);
            } else {
                let (t, _) = bare.run(&args).await?;
                b.push(t);
                w.push(warden_once().await?);
            }
        }
    }
    let (sw, sb) = (Summary::of_durations_us(&w), Summary::of_durations_us(&b));
    let md = &mut out.markdown;
    writeln!(
        md,
        "\n### 3. Per-run start: a trivial plugin, compiled code already loaded\n"
    )?;
    writeln!(
        md,
        "The probe's `echo-args` (no host call) run {runs} times by each, interleaved in blocks of {block}. warden: `PluginHost::run` — broker `begin` (grant lookup, audit line), a fresh `Store` with the sandboxed WASI context, limits and log capture, instantiate from the pooling allocator, `run`, broker `end` (audit line), report. Bare: wasmtime 48 on the same `Engine` (so the same configuration and pooling allocator) with the same component, WASI linked, a fresh `Store`, instantiate, `run`. µs per run, median (p10, p90).\n"
    )?;
    writeln!(md, "| contender | µs per run |")?;
    writeln!(md, "|---|---|")?;
    writeln!(md, "| warden `PluginHost::run` | {} |", sw.show_p(1))?;
    writeln!(md, "| bare wasmtime | {} |", sb.show_p(1))?;
    writeln!(
        md,
        "\nRatio warden / bare: **{:.2}×**; warden adds {:.0} µs per run.",
        sw.median / sb.median,
        sw.median - sb.median
    )?;
    out.json.insert(
        "start".into(),
        json!({"runs": runs, "warden_us": sw, "bare_us": sb, "ratio": sw.median / sb.median}),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. A refused host call

const REFUSED_CALLS: usize = 10_000;

fn rhai_refused(n: usize) -> String {
    format!(
        "let refused = 0;\nfor i in 0..{n} {{\n    try {{ exo::invoke(\"{REFUSED_CMDLET}\", #{{Identity: \"x\", DisplayName: \"y\"}}); }} catch (e) {{ refused += 1; }}\n}}\nrefused\n"
    )
}

/// The same loop, map and `try`/`catch` with no host call (the map is thrown): Rhai's own
/// share of a refused call, so the host's share of the Rhai figure can be told apart.
fn rhai_no_call(n: usize) -> String {
    format!(
        "let refused = 0;\nfor i in 0..{n} {{\n    try {{ throw #{{Identity: \"x\", DisplayName: \"y\"}}; }} catch (e) {{ refused += 1; }}\n}}\nrefused\n"
    )
}

fn rhai_scripts() -> Vec<String> {
    vec![
        rhai_refused(0),
        rhai_refused(REFUSED_CALLS),
        rhai_no_call(REFUSED_CALLS),
    ]
}

async fn host_calls(out: &mut Out, exo: &ExosimProcess, host: &Host) -> anyhow::Result<()> {
    let before = exo.counters().await?["invoke_requests"].as_u64();
    let wasm = |n: usize| async move {
        let args = spam_args(n, REFUSED_CMDLET, REFUSED_PARAMS);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let (_, text) = host.probe(&args).await?;
        let elapsed = started.elapsed();
        let v: Value = serde_json::from_str(&text)?;
        ensure!(
            v["failed"].as_u64() == Some(n as u64)
                && (n == 0 || v["first_error"]["kind"] == "denied"),
            "{v}"
        );
        anyhow::Ok(elapsed)
    };
    let rhai = |source: String, n: usize| async move {
        let started = Instant::now();
        let (_, text) = host.script(&source).await?;
        let elapsed = started.elapsed();
        ensure!(text == n.to_string(), "the script returned {text}");
        anyhow::Ok(elapsed)
    };
    wasm(100).await?;
    rhai(rhai_refused(0), 0).await?;
    let reps = 7;
    let (mut w, mut r, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let w0 = wasm(0).await?;
        let wn = wasm(REFUSED_CALLS).await?;
        w.push(wn.saturating_sub(w0));
        let r0 = rhai(rhai_refused(0), 0).await?;
        let rn = rhai(rhai_refused(REFUSED_CALLS), REFUSED_CALLS).await?;
        r.push(rn.saturating_sub(r0));
        let fnc = rhai(rhai_no_call(REFUSED_CALLS), REFUSED_CALLS).await?;
        f.push(fnc.saturating_sub(r0));
    }
    let after = exo.counters().await?["invoke_requests"].as_u64();
    ensure!(before == after, "a refused call reached exosim");
    let per = |v: &[Duration]| {
        Summary::of(
            &v.iter()
                .map(|d| d.as_secs_f64() * 1e6 / REFUSED_CALLS as f64)
                .collect::<Vec<_>>(),
        )
    };
    let (sw, sr, sf) = (per(&w), per(&r), per(&f));
    let md = &mut out.markdown;
    writeln!(md, "\n### 4. Host-call cost: a call the policy refuses\n")?;
    writeln!(
        md,
        "`{REFUSED_CMDLET}` (not granted) called {REFUSED_CALLS} times in one run; per call = (run with {REFUSED_CALLS} calls − run with 0) / {REFUSED_CALLS}. Each refusal is a broker decision on the cmdlet's name (a lookup of the reason the grant keeps); the run's first 256 refusals write their audit lines to the trail file and later ones are only counted (in every run), so the figure is mostly the cost past that cap. No request leaves the process (exosim's request counter did not move). {reps} repetitions; µs per call, median (min–max).\n"
    )?;
    writeln!(md, "| guest | µs per refused call |")?;
    writeln!(md, "|---|---|")?;
    writeln!(
        md,
        "| wasm (probe `call-spam`, `exchange.invoke` → error) | {} |",
        sw.show(2)
    )?;
    writeln!(
        md,
        "| Rhai (`try {{ exo::invoke(…) }} catch`) | {} |",
        sr.show(2)
    )?;
    writeln!(
        md,
        "| Rhai, the same loop with no host call (`try {{ throw #{{…}} }} catch`): Rhai's own share | {} |",
        sf.show(2)
    )?;
    writeln!(
        md,
        "\nThe host's share of a Rhai refusal (Rhai's figure less its own share): {:.2} µs.",
        sr.median - sf.median
    )?;
    out.json.insert(
        "refused_call".into(),
        json!({"calls": REFUSED_CALLS, "wasm_us": sw, "rhai_us": sr, "rhai_no_call_us": sf}),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Token single-flight and a forced refresh

async fn concurrent_calls(
    host: &Host,
    run: &Arc<warden_broker::Run>,
    n: usize,
) -> (usize, Option<String>) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let broker = host.broker.clone();
            let run = run.clone();
            tokio::spawn(async move {
                broker
                    .invoke(&run, "Get-Mailbox", r#"{"ResultSize":1}"#)
                    .await
            })
        })
        .collect();
    let mut failed = 0;
    let mut first = None;
    for task in futures::future::join_all(tasks).await {
        match task {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    (failed, first)
}

async fn token(
    out: &mut Out,
    exo: &ExosimProcess,
    probe: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    const N: usize = 1000;
    // A fresh host: its provider has no token yet. Token responses are delayed 100 ms so all
    // 1,000 calls are waiting when the first response arrives.
    exo.token_faults(json!({"clear": true, "latency_ms": 100}))
        .await?;
    let host = Host::new(exo, probe, &work.join("token-a"), &[])?;
    let run = Arc::new(
        host.broker
            .begin(probe_principal(&host), None)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let before = exo.token_requests().await?;
    let started = Instant::now();
    let (failed, first) = concurrent_calls(&host, &run, N).await;
    let elapsed = started.elapsed();
    let single_flight = exo.token_requests().await? - before;
    ensure!(failed == 0, "{failed} calls failed: {first:?}");

    // Forced refresh: tokens now live 4 s; 1,000 calls in 20 waves of 50, 300 ms apart, so the
    // first token reaches its refresh point and its expiry while calls are in flight.
    exo.token_faults(json!({"clear": true, "token_lifetime_secs": 4}))
        .await?;
    let host = Host::new(exo, probe, &work.join("token-b"), &[])?;
    let run = Arc::new(
        host.broker
            .begin(probe_principal(&host), None)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let before = exo.token_requests().await?;
    let started = Instant::now();
    let mut refresh_failed = 0;
    let mut refresh_first = None;
    for _ in 0..20 {
        let (f, e) = concurrent_calls(&host, &run, N / 20).await;
        refresh_failed += f;
        if refresh_first.is_none() {
            refresh_first = e;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let span = started.elapsed();
    let refresh_tokens = exo.token_requests().await? - before;
    exo.token_faults(json!({"clear": true, "token_lifetime_secs": 3599}))
        .await?;

    let md = &mut out.markdown;
    writeln!(md, "\n### 5. Token: 1,000 concurrent invocations\n")?;
    writeln!(
        md,
        "1,000 `Broker::invoke` calls (the entry both guest runtimes use) started at once on a fresh session with no token, exosim delaying token responses by 100 ms. Then a forced refresh: tokens issued with a 4 s lifetime, 1,000 calls in 20 waves of 50 over {:.1} s, so the token passes its refresh point and its expiry mid-run.\n",
        span.as_secs_f64()
    )?;
    writeln!(md, "| what | result | must be |")?;
    writeln!(md, "|---|---|---|")?;
    writeln!(
        md,
        "| token requests for 1,000 concurrent calls | **{single_flight}** (all done in {:.0} ms) | 1 |",
        ms(elapsed)
    )?;
    writeln!(md, "| calls failed among them | {failed} | 0 |")?;
    writeln!(
        md,
        "| calls failed across the forced refresh | **{refresh_failed}** | 0 |"
    )?;
    writeln!(
        md,
        "| token requests during the refresh run ({:.1} s, 4 s tokens) | {refresh_tokens} | — |",
        span.as_secs_f64()
    )?;
    if let Some(e) = &refresh_first {
        writeln!(md, "\nFirst failure across the refresh: `{e}`")?;
    }
    out.json.insert(
        "token".into(),
        json!({"concurrent_calls": N, "token_requests": single_flight, "failed": failed,
               "refresh_failed": refresh_failed, "refresh_token_requests": refresh_tokens,
               "refresh_span_s": span.as_secs_f64()}),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. Scale

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// In its own process: `plugins` probes streaming every mailbox at once.
pub async fn scale_child(args: ScaleChildArgs) -> anyhow::Result<()> {
    let exo = ExosimProcess::attach(&args.ready)?;
    let host = Host::new(&exo, &args.probe, &args.dir, &[])?;
    host.provider.get_token(&host.scope).await?;
    let rss_before = proc_status_kib("VmHWM:").unwrap_or(0);
    let started = Instant::now();
    let runs = (0..args.plugins)
        .map(|_| host.probe(&["stream", "Get-Mailbox", r#"{"ResultSize":"Unlimited"}"#]));
    let mut objects = 0u64;
    for result in futures::future::join_all(runs).await {
        let (_, text) = result?;
        let v: Value = serde_json::from_str(&text)?;
        ensure!(v.get("error").is_none(), "the stream failed: {v}");
        objects += v["objects"].as_u64().context("objects")?;
    }
    let elapsed = started.elapsed();
    let peak = proc_status_kib("VmHWM:").unwrap_or(0);
    println!(
        "{}",
        json!({"plugins": args.plugins, "objects": objects, "secs": elapsed.as_secs_f64(),
               "rss_before_kib": rss_before, "peak_rss_kib": peak})
    );
    Ok(())
}

async fn scale(out: &mut Out, args: &AllArgs, work: &Path) -> anyhow::Result<()> {
    let exo = ExosimProcess::start(
        &args.exosim,
        &work.join("exosim-scale"),
        args.scale_mailboxes,
    )
    .await?;
    let me = std::env::current_exe()?;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for plugins in [1usize, 16] {
        let (mut rate, mut peak, mut before, mut secs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rep in 0..args.scale_reps {
            exo.clear_logs().await?;
            let output = tokio::process::Command::new(&me)
                .arg("scale-child")
                .arg("--ready")
                .arg(&exo.ready_file)
                .arg("--probe")
                .arg(&args.probe)
                .arg("--dir")
                .arg(work.join(format!("scale-{plugins}-{rep}")))
                .args(["--plugins", &plugins.to_string()])
                .output()
                .await?;
            if !output.status.success() {
                bail!(
                    "scale-child failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let v: Value = serde_json::from_slice(&output.stdout)?;
            let objects = v["objects"].as_u64().unwrap_or(0);
            ensure!(
                objects == (plugins * args.scale_mailboxes) as u64,
                "expected {} objects: {v}",
                plugins * args.scale_mailboxes
            );
            let s = v["secs"].as_f64().unwrap_or(f64::NAN);
            eprintln!(
                "  {plugins} plugin(s), rep {rep}: {objects} objects in {s:.2} s, peak RSS {} MiB",
                v["peak_rss_kib"].as_u64().unwrap_or(0) / 1024
            );
            secs.push(s);
            rate.push(objects as f64 / s);
            peak.push(v["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0);
            before.push(v["rss_before_kib"].as_f64().unwrap_or(0.0) / 1024.0);
        }
        let (sr, sp, sb, ss) = (
            Summary::of(&rate),
            Summary::of(&peak),
            Summary::of(&before),
            Summary::of(&secs),
        );
        rows.push(format!(
            "| {plugins} | {} | {} | {} | {} |",
            plugins * args.scale_mailboxes,
            ss.show(2),
            Summary::of(&rate.iter().map(|r| r.round()).collect::<Vec<_>>()).show(0),
            format_args!("{} (before the runs: {})", sp.show(0), sb.show(0))
        ));
        json_rows.push(json!({"plugins": plugins, "secs": ss, "objects_per_s": sr, "peak_rss_mib": sp, "rss_before_mib": sb}));
    }

    // The real binary, measured from outside: /usr/bin/time's maximum resident set size.
    let mut cli = Vec::new();
    if Path::new("/usr/bin/time").exists() {
        let dir = work.join("scale-cli");
        std::fs::create_dir_all(&dir)?;
        let sha = {
            let probe = warden_runtime::PluginHost::inspect("probe", &std::fs::read(&args.probe)?)?;
            probe.sha256.clone()
        };
        std::fs::write(dir.join("policy.toml"), policy_text(&sha, &[]))?;
        for _ in 0..args.scale_reps {
            let mut command = tokio::process::Command::new("/usr/bin/time");
            command
                .args(["-f", "%M %e"])
                .arg(&args.warden)
                .arg("run")
                .arg(&args.probe)
                .arg("--policy")
                .arg(dir.join("policy.toml"))
                .arg("--audit")
                .arg(dir.join("audit.jsonl"))
                .arg("--audit-key")
                .arg(dir.join("audit.key"))
                .arg("--cache-dir")
                .arg(dir.join("cache"))
                .args(["--quiet", "--", "stream", "Get-Mailbox"])
                .arg(r#"{"ResultSize":"Unlimited"}"#)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", &dir);
            for (k, v) in exo.env() {
                command.env(k, v);
            }
            let output = command.output().await?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            // The probe's JSON is printed as a table: look for the count, not the JSON.
            ensure!(
                output.status.success() && stdout.contains(&args.scale_mailboxes.to_string()),
                "warden run stream failed: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or_default().to_owned();
            let mut words = last.split_whitespace();
            let kib: f64 = words.next().unwrap_or("0").parse().unwrap_or(0.0);
            let secs: f64 = words.next().unwrap_or("0").parse().unwrap_or(0.0);
            cli.push((kib / 1024.0, secs));
        }
    }

    let md = &mut out.markdown;
    writeln!(
        md,
        "\n### 6. Scale: streaming every mailbox of a {}-mailbox tenant\n",
        args.scale_mailboxes
    )?;
    writeln!(
        md,
        "Each plugin is the probe's `stream Get-Mailbox '{{\"ResultSize\":\"Unlimited\"}}'`: pages of 1,000 through the broker, each page handed to the guest as JSON and parsed there, counted, dropped. The host runs in its own process (`warden-bench scale-child`), peak RSS is that process's `VmHWM` from procfs; exosim runs in another process (its CPU is not counted, but it shares the machine's 2 cores). {} repetitions; median (min–max).\n",
        args.scale_reps
    )?;
    writeln!(
        md,
        "| plugins at once | objects | seconds | objects per second (all plugins) | peak RSS, MiB |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for row in &rows {
        writeln!(md, "{row}")?;
    }
    if !cli.is_empty() {
        let rss = Summary::of(&cli.iter().map(|c| c.0).collect::<Vec<_>>());
        let secs = Summary::of(&cli.iter().map(|c| c.1).collect::<Vec<_>>());
        writeln!(
            md,
            "\nThe `warden` binary doing the same (one plugin, `warden run … -- stream …`, measured with `/usr/bin/time -f %M`): maximum RSS {} MiB, {} s ({:.0} objects/s).",
            rss.show(0),
            secs.show(2),
            args.scale_mailboxes as f64 / secs.median
        )?;
    }
    out.json.insert(
        "scale".into(),
        json!({"mailboxes": args.scale_mailboxes, "rows": json_rows,
               "cli": cli.iter().map(|c| json!({"max_rss_mib": c.0, "secs": c.1})).collect::<Vec<_>>()}),
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
