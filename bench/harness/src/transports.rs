//! `warden-bench transports`: the two transports side by side against one exosim process, the
//! same app, token provider and calls. REST is one HTTPS POST per page; Remote PowerShell is a
//! runspace pool opened once per session (Create + Receive) and per call a Command plus one or
//! more Receives of SOAP-wrapped, base64-encoded CLIXML. This measures what that costs.
//!
//! Like every measurement here it fails only when a contender did not do the work.

use crate::exo::ExosimProcess;
use crate::stats::Summary;
use anyhow::ensure;
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_auth::config::{AuthSettings, Environment, Overrides};
use warden_auth::{ReqwestTransport, TokenProvider};
use warden_exchange::connect::{rest_session, rps_session};
use warden_exchange::{
    CmdletRunner, ExchangeSettings, Invocation, ParamValue, Parameters, Transport, connect,
};

/// Arguments of `warden-bench transports`.
#[derive(Debug, clap::Args)]
pub struct TransportArgs {
    /// The exosim binary (release).
    #[arg(long)]
    exosim: PathBuf,
    /// Where to write the Markdown section.
    #[arg(long)]
    markdown: PathBuf,
    /// Where to write the JSON results.
    #[arg(long)]
    json: PathBuf,
    /// Repetitions (each runs both transports, order alternating).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Sequential calls per repetition.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Mailboxes in the tenant (the full read streams all of them).
    #[arg(long, default_value_t = 5000)]
    mailboxes: usize,
}

struct Sessions {
    rest: Arc<dyn CmdletRunner>,
    rps: Arc<dyn CmdletRunner>,
    /// The RPS settings (the REST ones differ only in their transport).
    exchange: ExchangeSettings,
    tokens: TokenProvider,
}

/// Both runners through [`warden_exchange::connect()`], as the CLI builds them.
fn sessions(exo: &ExosimProcess) -> anyhow::Result<Sessions> {
    let env = exo.env();
    let env = Environment::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let settings = AuthSettings::resolve(None, &Overrides::default(), &env)?;
    let tokens = TokenProvider::new(
        settings.load_credential()?,
        Arc::new(ReqwestTransport::new(settings.ca_file.as_deref())?),
    );
    let rest = ExchangeSettings::resolve(&settings, Some(Transport::Rest), &env)?;
    let exchange = ExchangeSettings::resolve(&settings, Some(Transport::Rps), &env)?;
    Ok(Sessions {
        rest: connect(&rest, tokens.clone())?,
        rps: connect(&exchange, tokens.clone())?,
        exchange,
        tokens,
    })
}

fn read(result_size: Option<u32>) -> Invocation {
    Invocation::new(
        "Get-Mailbox",
        Parameters::from([("ResultSize".to_owned(), ParamValue::ResultSize(result_size))]),
    )
}

/// `n` sequential `Get-Mailbox -ResultSize 10` calls.
async fn calls(runner: &dyn CmdletRunner, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..n {
        let mut stream = runner.start(read(Some(10)));
        let mut objects = 0;
        while let Some(page) = stream.next_page().await? {
            objects += page.objects.len();
        }
        ensure!(objects == 10, "a call returned {objects} objects, not 10");
    }
    Ok(started.elapsed())
}

/// Every mailbox of the tenant, streamed page by page.
async fn full_read(runner: &dyn CmdletRunner, expected: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = runner.start(read(None));
    let mut objects = 0;
    while let Some(page) = stream.next_page().await? {
        objects += page.objects.len();
    }
    ensure!(
        objects == expected,
        "the read returned {objects} of {expected} mailboxes"
    );
    Ok(started.elapsed())
}

pub async fn run(args: TransportArgs) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let exo =
        ExosimProcess::start(&args.exosim, &work.path().join("exosim"), args.mailboxes).await?;
    let s = sessions(&exo)?;
    // Warm up: token, connections, and the RPS pool.
    calls(s.rest.as_ref(), 20).await?;
    calls(s.rps.as_ref(), 20).await?;
    let (mut rest, mut rps, mut rest_read, mut rps_read) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        for k in 0..2 {
            if (rep + k) % 2 == 0 {
                rest.push(calls(s.rest.as_ref(), args.calls).await?);
                rest_read.push(full_read(s.rest.as_ref(), args.mailboxes).await?);
            } else {
                rps.push(calls(s.rps.as_ref(), args.calls).await?);
                rps_read.push(full_read(s.rps.as_ref(), args.mailboxes).await?);
            }
        }
        eprintln!(
            "  rep {rep}: {} calls REST {:.0} ms, RPS {:.0} ms; full read REST {:.0} ms, RPS {:.0} ms",
            args.calls,
            ms(rest[rep]),
            ms(rps[rep]),
            ms(rest_read[rep]),
            ms(rps_read[rep])
        );
    }
    // Opening a pool: the first call of a fresh RPS session, against a fresh REST session's
    // (both with the token already cached and TLS to set up).
    let (mut rest_first, mut rps_first) = (Vec::new(), Vec::new());
    for _ in 0..args.reps * 4 {
        let fresh = rest_session(&s.exchange, s.tokens.clone())?;
        rest_first.push(calls(&fresh, 1).await?);
        let fresh = rps_session(&s.exchange, s.tokens.clone())?;
        rps_first.push(calls(&fresh, 1).await?);
        fresh.close().await?;
    }

    let per_call = |v: &[Duration]| {
        Summary::of(
            &v.iter()
                .map(|d| d.as_secs_f64() * 1e6 / args.calls as f64)
                .collect::<Vec<_>>(),
        )
    };
    let (rc, pc) = (per_call(&rest), per_call(&rps));
    let (rr, pr) = (
        Summary::of_durations_ms(&rest_read),
        Summary::of_durations_ms(&rps_read),
    );
    let (rf, pf) = (
        Summary::of_durations_ms(&rest_first),
        Summary::of_durations_ms(&rps_first),
    );
    let rate = |s: &Summary| args.mailboxes as f64 / (s.median / 1000.0);
    let mut md = String::new();
    writeln!(md, "\n### 8. Transports: REST vs Remote PowerShell\n")?;
    writeln!(
        md,
        "One exosim process ({} mailboxes), one app and token provider, both transports through the `CmdletRunner` the broker uses. {} repetitions, order alternating; median (min–max).\n",
        args.mailboxes, args.reps
    )?;
    writeln!(
        md,
        "| what | REST `InvokeCommand` | Remote PowerShell | RPS / REST |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    writeln!(
        md,
        "| `Get-Mailbox -ResultSize 10`, {} sequential calls: µs per call | {} | {} | {:.2}× |",
        args.calls,
        rc.show(0),
        pc.show(0),
        pc.median / rc.median
    )?;
    writeln!(
        md,
        "| every mailbox (`-ResultSize Unlimited`), streamed: ms | {} | {} | {:.2}× |",
        rr.show(0),
        pr.show(0),
        pr.median / rr.median
    )?;
    writeln!(
        md,
        "| … as mailboxes per second | {:.0} | {:.0} | |",
        rate(&rr),
        rate(&pr)
    )?;
    writeln!(
        md,
        "| first call of a new session (RPS: opens the runspace pool): ms | {} | {} | {:.2}× |",
        rf.show(1),
        pf.show(1),
        pf.median / rf.median
    )?;
    writeln!(
        md,
        "\nA REST call is one POST; an RPS call is a Command and at least one Receive (two round trips), each answer a SOAP envelope of base64 PSRP fragments of CLIXML that both sides build and parse. The pool is opened once per session and shared by its calls."
    )?;
    std::fs::write(&args.markdown, md)?;
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&json!({
            "mailboxes": args.mailboxes, "calls": args.calls, "reps": args.reps,
            "rest_us_per_call": rc, "rps_us_per_call": pc,
            "rest_full_read_ms": rr, "rps_full_read_ms": pr,
            "rest_first_call_ms": rf, "rps_first_call_ms": pf,
        }))?,
    )?;
    eprintln!(
        "wrote {} and {}",
        args.markdown.display(),
        args.json.display()
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
