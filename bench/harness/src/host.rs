//! The warden side, assembled the way `warden run` (and tests/all/guests.rs) assembles it: an
//! Exchange session with the admin app's client secret, a policy granting the probe by sha256
//! (and inline Rhai scripts by theirs), an audit trail, a broker, the plugin and script hosts.

use crate::exo::ExosimProcess;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_auth::config::{AuthSettings, Environment, Overrides};
use warden_auth::{ReqwestTransport, TokenProvider};
use warden_broker::Broker;
use warden_exchange::{ExchangeSettings, RestSession, Transport};
use warden_policy::{Policy, Principal};
use warden_runtime::{
    GuestOutput, LoadedPlugin, LogLevel, LogSource, PluginHost, RunObserver, RunOutcome, RunReport,
    RunRequest, RuntimeLimits, ScriptHost,
};

/// Budgets large enough that no measurement is cut short by one.
const BUDGETS: &str = "calls = 10000000\nobjects = 1000000000\noutput_bytes = 1000000000000\nwall_clock_secs = 3600\ncpu_secs = 3600\n";

/// The role every benchmark grant gets: Get-Mailbox with a bounded or unlimited ResultSize, no
/// output shaping (so warden hands the guest what a plain client would get). Set-Mailbox is not
/// granted: calling it is the refused call of the host-call benchmark.
const ROLES: &str = r#"
[roles.bench]
[[roles.bench.cmdlet]]
name = "Get-Mailbox"
[roles.bench.cmdlet.parameters]
ResultSize = { range = [1, 1000] }
Identity = { length = [1, 256] }

[[roles.bench.cmdlet]]
name = "Get-Mailbox"
[roles.bench.cmdlet.parameters]
ResultSize = { one_of = ["Unlimited"] }
"#;

/// The policy text granting the probe (by sha256) and `scripts` (inline, by sha256).
pub fn policy_text(probe_sha256: &str, scripts: &[String]) -> String {
    let mut policy = format!(
        "version = 1\n{ROLES}\n[[grant]]\nid = \"probe\"\nplugin = \"probe\"\nsha256 = \"{probe_sha256}\"\nroles = [\"bench\"]\n[grant.budgets]\n{BUDGETS}"
    );
    for (i, script) in scripts.iter().enumerate() {
        policy.push_str(&format!(
            "\n[[grant]]\nid = \"script-{i}\"\nscript_inline_sha256 = \"{}\"\nroles = [\"bench\"]\n[grant.budgets]\n{BUDGETS}",
            Principal::inline_script(script).sha256()
        ));
    }
    policy
}

/// A token provider and an Exchange session for the admin app, as the CLI resolves them.
pub fn session(exo: &ExosimProcess) -> anyhow::Result<(RestSession, TokenProvider, String)> {
    let env = exo.env();
    let env = Environment::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let settings = AuthSettings::resolve(None, &Overrides::default(), &env)?;
    let transport = Arc::new(ReqwestTransport::new(settings.ca_file.as_deref())?);
    let provider = TokenProvider::new(settings.load_credential()?, transport);
    let exchange = ExchangeSettings::resolve(&settings, Some(Transport::Rest), &env)?;
    let session = warden_exchange::connect::rest_session(&exchange, provider.clone())?;
    Ok((session, provider, settings.exchange_scope()))
}

/// Guest log lines are dropped (the probe logs nothing in these runs).
#[derive(Debug, Default)]
pub struct Quiet;

impl RunObserver for Quiet {
    fn log(&self, _source: LogSource, _level: LogLevel, _message: &str) {}
    fn progress(&self, _done: u64, _total: Option<u64>, _label: &str) {}
}

pub struct Host {
    pub plugins: PluginHost,
    pub scripts: ScriptHost,
    pub probe: LoadedPlugin,
    pub broker: Broker,
    pub session: RestSession,
    pub provider: TokenProvider,
    pub scope: String,
}

impl Host {
    /// Everything under `dir` (policy, audit trail and key, compiled-code cache).
    pub fn new(
        exo: &ExosimProcess,
        probe: &Path,
        dir: &Path,
        scripts: &[String],
    ) -> anyhow::Result<Host> {
        std::fs::create_dir_all(dir)?;
        let plugins = PluginHost::new(RuntimeLimits::default(), Some(dir.join("cache")))?;
        let probe = plugins
            .load(probe)
            .with_context(|| format!("loading {}", probe.display()))?;
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, policy_text(probe.sha256(), scripts))?;
        let policy = Arc::new(Policy::load(&policy_path)?);
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
        let audit = Arc::new(AuditTrail::open(
            &dir.join(format!("audit-{}.jsonl", uuid::Uuid::new_v4())),
            AuditKey::from_bytes(key),
        )?);
        let (session, provider, scope) = session(exo)?;
        let broker = Broker::new(
            policy,
            Arc::new(session.clone()),
            audit,
            Duration::from_secs(120),
        );
        Ok(Host {
            plugins,
            scripts: ScriptHost::new(RuntimeLimits::default()),
            probe,
            broker,
            session,
            provider,
            scope,
        })
    }

    /// Runs the probe with `args`; an error unless it completed.
    pub async fn probe(&self, args: &[&str]) -> anyhow::Result<(RunReport, String)> {
        let request = RunRequest {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            observer: Arc::new(Quiet),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self.plugins.run(&self.probe, &self.broker, request).await?;
        let text = completed_text(&report)?;
        Ok((report, text))
    }

    /// Runs an inline script (granted at construction).
    pub async fn script(&self, source: &str) -> anyhow::Result<(RunReport, String)> {
        let compiled = self.scripts.compile("inline script", source)?;
        let request = RunRequest {
            args: Vec::new(),
            observer: Arc::new(Quiet),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self
            .scripts
            .run(
                &compiled,
                Principal::inline_script(source),
                &self.broker,
                request,
            )
            .await?;
        let text = completed_text(&report)?;
        Ok((report, text))
    }
}

fn completed_text(report: &RunReport) -> anyhow::Result<String> {
    match &report.outcome {
        RunOutcome::Completed {
            output: GuestOutput::Text(text),
        } => Ok(text.clone()),
        RunOutcome::Completed {
            output: GuestOutput::Json(value),
        } => Ok(value.to_string()),
        other => anyhow::bail!("the run did not complete: {other:?}"),
    }
}
