//! The flags every guest-running subcommand shares (policy, audit trail, call timeout, output)
//! and wiring them into a broker. Inputs are checked in the order that avoids partial effects:
//! the guest, the policy, the settings and the credential are read before the audit trail is
//! opened (so a mistake in any of them leaves no trail or key behind), and the audit trail is
//! opened before any request is sent.

use crate::auth_args::AuthArgs;
use crate::output::{Layout, ResultFormat, RunDisplay, escape};
use crate::replay::{LoggedRunner, Recorder, ReplayRunner};
use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_auth::config::Environment;
use warden_broker::Broker;
use warden_exchange::CmdletRunner;
use warden_policy::{Policy, PolicyError};
use warden_runtime::{RunOutcome, RunReport, RuntimeError, StopReason};

/// Exit status of a run that finished with the guest's own error, a panic or a trap (and of
/// any error of warden's own).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a run the policy refused to start.
pub const EXIT_REFUSED: u8 = 3;
/// Exit status of a run stopped at a limit.
pub const EXIT_STOPPED: u8 = 4;

/// Flags shared by `run`, `script` and `eval`.
#[derive(Debug, Args)]
pub struct GuestArgs {
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The policy [default: $WARDEN_POLICY, else ~/.config/warden/policy.toml]. Without one
    /// nothing may run (default deny).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The audit trail (JSON lines, appended) [default: $WARDEN_AUDIT, else
    /// ~/.local/state/warden/audit.jsonl].
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// The audit key, created on first use [default: $WARDEN_AUDIT_KEY, else
    /// ~/.local/state/warden/audit.key].
    #[arg(long, value_name = "FILE")]
    pub audit_key: Option<PathBuf>,
    /// Time limit of each cmdlet call, in seconds (the grant's wall clock caps it further).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub call_timeout: u64,
    /// How to print the guest's output.
    #[arg(long, value_enum, default_value_t)]
    pub output: ResultFormat,
    /// No progress bar, guest log lines or summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Answer every cmdlet call from a recording (written by --record) instead of Exchange:
    /// no tenant and no credential needed; the policy, budgets and audit trail are the real
    /// ones. A call the recording does not have fails, naming the cmdlet and parameters.
    #[arg(long, value_name = "FILE", conflicts_with = "record")]
    pub replay: Option<PathBuf>,
    /// Write every cmdlet call of this run, with Exchange's answers, to FILE (JSON lines) for
    /// --replay. It holds the parameters as sent and the objects returned, never a token.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// What a run needs from the command line, ready to use.
#[derive(Debug)]
pub struct GuestContext {
    /// The broker in front of the Exchange session.
    pub broker: Broker,
    /// The broker's audit trail: a second Ctrl-C writes its queued lines before quitting.
    pub audit: Arc<AuditTrail>,
    /// Where the audit lines went.
    pub audit_path: PathBuf,
    /// The audit key file: the compiled-code cache's key goes beside it.
    pub audit_key_path: PathBuf,
    /// The recording this run replays or writes, if any.
    tape: Option<Tape>,
}

/// A run's recorded answers: replayed from, or recorded to, a file.
#[derive(Debug)]
enum Tape {
    Replay(Arc<ReplayRunner>),
    Record(Arc<Recorder>, PathBuf),
}

pub fn state_dir(env: &Environment) -> Option<PathBuf> {
    env.get("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .map(|base| base.join("warden"))
}

/// The policy file: --policy, then $WARDEN_POLICY, then ~/.config/warden/policy.toml.
pub fn policy_path(flag: Option<&Path>, env: &Environment) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(path) = env.get("WARDEN_POLICY") {
        return Ok(PathBuf::from(path));
    }
    let default = env
        .get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|base| base.join("warden/policy.toml"));
    match default {
        Some(path) if path.is_file() => Ok(path),
        _ => anyhow::bail!(
            "no policy was given, and without one nothing may run\n  fix: pass --policy FILE or \
             set WARDEN_POLICY (policy.example.toml shows the format)"
        ),
    }
}

/// A run that never started, with a plugin or script problem laid out like every other input
/// error: what is wrong with which file, then `fix:`.
pub fn runtime_error(error: RuntimeError) -> anyhow::Error {
    match error {
        // `what` (a file name its author chose) and `problem` (which may quote the guest)
        // are one line each: the final print keeps line breaks for the `fix:` line only.
        RuntimeError::Load { what, problem, fix } => anyhow::anyhow!(
            "{}: {}\n  fix: {fix}",
            escape(&what, Layout::Line),
            escape(&problem, Layout::Line)
        ),
        other => other.into(),
    }
}

/// A policy that failed to load, as `FILE[:LINE]: reason` followed by the fix.
pub fn policy_error(error: PolicyError) -> anyhow::Error {
    let fix = match &error {
        PolicyError::Read { .. } => "check the path given with --policy or WARDEN_POLICY",
        PolicyError::Invalid { .. } => {
            "correct that line (policy.example.toml shows every field; `warden policy check \
             FILE` checks a policy without running anything)"
        }
    };
    anyhow::anyhow!("{error}\n  fix: {fix}")
}

/// Loads a policy, printing its warnings.
pub fn load_policy(path: &Path, quiet: bool) -> anyhow::Result<Policy> {
    let policy = Policy::load(path).map_err(policy_error)?;
    if !quiet {
        for warning in policy.warnings() {
            eprintln!(
                "policy warning: {}",
                escape(&warning.to_string(), Layout::Line)
            );
        }
    }
    Ok(policy)
}

impl GuestArgs {
    /// The audit trail and its key: the flags, then $WARDEN_AUDIT / $WARDEN_AUDIT_KEY, then the
    /// state directory. A replay's trail is a sibling of the live one unless named.
    pub fn audit_paths(&self, env: &Environment) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (audit_path, key_path) =
            trail_paths(self.audit.as_deref(), self.audit_key.as_deref(), env)?;
        // A replay's calls never reached Exchange: unless a trail is named for it, they go to
        // a sibling of the live trail, so the live one never records a change that did not
        // happen (the key stays the same, so `audit verify` checks both).
        let audit_path = match (&self.replay, &self.audit) {
            (Some(_), None) => {
                let stem = audit_path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "audit".into());
                audit_path.with_file_name(format!("{stem}.replay.jsonl"))
            }
            _ => audit_path,
        };
        Ok((audit_path, key_path))
    }

    /// Starts reading the system's trusted roots in the background when this run will reach
    /// Exchange (not a replay): its HTTPS client then finds them read instead of reading them
    /// on the way to the first call.
    pub fn preload_system_roots(&self) {
        if self.replay.is_none() {
            warden_auth::transport::preload_system_roots();
        }
    }

    /// Reads the policy, resolves the credential, opens the audit trail and builds the broker.
    pub async fn broker(&self) -> anyhow::Result<GuestContext> {
        let env = Environment::from_process();
        let policy = load_policy(&policy_path(self.policy.as_deref(), &env)?, self.quiet)?;
        // Grants limited to tenants judge the profile this run uses.
        let tenant = crate::commands::fleet::run_tenant(&self.auth, &policy, &env)?;

        let (audit_path, key_path) = self.audit_paths(&env)?;
        // Nothing is sent until a guest calls, so the session is built before the trail opens.
        // A replay needs no tenant: no credential is resolved.
        let (exchange, tape): (Arc<dyn CmdletRunner>, _) = match &self.replay {
            Some(path) => {
                let replay = ReplayRunner::load(path)?;
                (replay.clone(), Some(Tape::Replay(replay)))
            }
            None => {
                let exchange =
                    self.auth
                        .resolve(&env)?
                        .exchange(&env, self.auth.transport, None)?;
                match &self.record {
                    Some(path) => {
                        let recorder = Recorder::new(exchange);
                        (recorder.clone(), Some(Tape::Record(recorder, path.clone())))
                    }
                    None => (exchange, None),
                }
            }
        };
        let exchange: Arc<dyn CmdletRunner> = LoggedRunner::new(exchange);

        let audit = Arc::new(open_audit(&audit_path, &key_path)?);
        let broker = Broker::new(
            Arc::new(policy),
            exchange,
            audit.clone(),
            Duration::from_secs(self.call_timeout.max(1)),
        );
        let broker = match tenant {
            Some(tenant) => broker.for_tenant(tenant),
            None => broker,
        };
        Ok(GuestContext {
            broker,
            audit,
            audit_path,
            audit_key_path: key_path,
            tape,
        })
    }

    /// Prints a run's output and summary and picks the exit status.
    pub fn finish(
        &self,
        result: Result<RunReport, RuntimeError>,
        context: &GuestContext,
        display: &RunDisplay,
    ) -> anyhow::Result<ExitCode> {
        display.clear();
        let tape_failed = match &result {
            // Never started: no call was made, and an existing recording stays as it was.
            Err(RuntimeError::Refused(_)) => false,
            // A recording that cannot be written fails the command, but never hides what the
            // run did (its output, refusals and summary still follow).
            _ => self.close_tape(context).unwrap_or_else(|error| {
                eprintln!("error: {}", escape(&format!("{error:#}"), Layout::Line));
                true
            }),
        };
        let report = match result {
            Ok(report) => report,
            Err(RuntimeError::Refused(error)) => {
                let error = error.to_string();
                eprintln!("error: run refused: {}", escape(&error, Layout::Line));
                eprintln!("(audit: {})", context.audit_path.display());
                return Ok(ExitCode::from(EXIT_REFUSED));
            }
            Err(other) => return Err(runtime_error(other)),
        };
        let summary = format!(
            "run {} (grant {}): {} in {:.2} s; {} call(s), {} write(s), {} object(s), {} bytes{}; audit: {}",
            report.run_id,
            report.grant_id,
            report.outcome.status(),
            report.elapsed.as_secs_f64(),
            report.usage.calls,
            report.usage.writes,
            report.usage.objects,
            report.usage.output_bytes,
            if report.log_bytes_dropped > 0 || report.log_lines_dropped > 0 {
                format!(
                    "; {} log line(s), {} bytes dropped at the cap",
                    report.log_lines_dropped, report.log_bytes_dropped
                )
            } else {
                String::new()
            },
            context.audit_path.display()
        );
        let code = match &report.outcome {
            RunOutcome::Completed { output } => {
                crate::output::print_guest_output(output, self.output)?;
                ExitCode::SUCCESS
            }
            // The guest's own words (and, in a trap, names it chose): one escaped line each,
            // shown even with --quiet.
            RunOutcome::Failed { message } => {
                eprintln!("error: the guest failed: {}", escape(message, Layout::Line));
                ExitCode::from(EXIT_FAILED)
            }
            // A panic or trap is the guest's failure, not a limit it reached.
            RunOutcome::Stopped {
                reason: StopReason::Trap { message },
            } => {
                eprintln!(
                    "error: the guest failed: it trapped: {}",
                    escape(message, Layout::Line)
                );
                ExitCode::from(EXIT_FAILED)
            }
            RunOutcome::Stopped { reason } => {
                let reason = reason.to_string();
                eprintln!("error: {}", escape(&reason, Layout::Line));
                ExitCode::from(EXIT_STOPPED)
            }
        };
        if !self.quiet {
            eprintln!("{}", escape(&summary, Layout::Line));
        }
        if tape_failed && code == ExitCode::SUCCESS {
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Ok(code)
    }

    /// Writes the recording, or names the calls a replay did not have; true when a replayed
    /// call was missing (the run cannot have seen what Exchange would have answered).
    fn close_tape(&self, context: &GuestContext) -> anyhow::Result<bool> {
        match &context.tape {
            None => Ok(false),
            Some(Tape::Record(recorder, path)) => {
                let calls = recorder.write(path)?;
                if !self.quiet {
                    eprintln!("recorded {calls} call(s) to {}", path.display());
                }
                Ok(false)
            }
            Some(Tape::Replay(replay)) => {
                let misses = replay.misses();
                for miss in &misses {
                    eprintln!(
                        "error: replay: not in the recording: {}",
                        escape(miss, Layout::Line)
                    );
                }
                if !misses.is_empty() {
                    eprintln!("  fix: record the run again with --record against exosim");
                }
                Ok(!misses.is_empty())
            }
        }
    }
}

/// The audit trail and its key: the flags, then $WARDEN_AUDIT / $WARDEN_AUDIT_KEY, then the
/// state directory.
pub fn trail_paths(
    audit: Option<&Path>,
    audit_key: Option<&Path>,
    env: &Environment,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let audit_path = match (audit, env.get("WARDEN_AUDIT")) {
        (Some(path), _) => path.to_owned(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => state_dir(env)
            .context("no audit trail: pass --audit FILE or set WARDEN_AUDIT (HOME is not set)")?
            .join("audit.jsonl"),
    };
    let key_path = match audit_key {
        Some(path) => path.to_owned(),
        None => warden_audit::default_key_path(
            env.get("WARDEN_AUDIT_KEY").map(Into::into),
            env.get("HOME").map(Into::into),
        )
        .context("no audit key: pass --audit-key FILE or set WARDEN_AUDIT_KEY")?,
    };
    Ok((audit_path, key_path))
}

/// Opens (creating them private) the audit trail and its key.
pub fn open_audit(audit_path: &Path, key_path: &Path) -> anyhow::Result<AuditTrail> {
    for path in [audit_path, key_path] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)?;
        }
    }
    let key = AuditKey::load_or_create(key_path)?;
    Ok(AuditTrail::open(audit_path, key)?)
}

/// Creates a directory (and parents) readable by the owner only.
fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// The compiled-code cache: --cache-dir, $WARDEN_CACHE_DIR, else ~/.cache/warden/components.
pub fn cache_dir(flag: Option<&Path>, disabled: bool) -> Option<PathBuf> {
    if disabled {
        return None;
    }
    if let Some(path) = flag {
        return Some(path.to_owned());
    }
    let env = Environment::from_process();
    if let Some(path) = env.get("WARDEN_CACHE_DIR") {
        return Some(PathBuf::from(path));
    }
    env.get("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("warden/components"))
}

/// The compiled-code cache's key: --cache-key, $WARDEN_CACHE_KEY, else `cache.key` beside the
/// audit key (in warden's state directory, outside the cache directory it protects).
pub fn cache_key_path(flag: Option<&Path>, context: &GuestContext) -> PathBuf {
    if let Some(path) = flag {
        return path.to_owned();
    }
    cache_key_beside(&context.audit_key_path)
}

/// $WARDEN_CACHE_KEY, else `cache.key` beside the audit key at `audit_key_path`.
pub fn cache_key_beside(audit_key_path: &Path) -> PathBuf {
    match Environment::from_process().get("WARDEN_CACHE_KEY") {
        Some(path) => PathBuf::from(path),
        None => audit_key_path.with_file_name("cache.key"),
    }
}
