//! Shared test plumbing: start exosim, read its ready info, build providers, run `openssl` and
//! the `warden` binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use warden_auth::config::{AuthSettings, Environment, Overrides};
use warden_auth::{ReqwestTransport, TokenProvider};

/// Environment variables as name/value pairs.
pub type Env = Vec<(String, String)>;

pub const EXCHANGE_SCOPE: &str = "https://outlook.office365.com/.default";

/// A running emulator with its state directory.
pub struct Emulator {
    pub exosim: exosim::Exosim,
    pub ready: Value,
    pub dir: tempfile::TempDir,
}

impl Emulator {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut exosim::ExosimOptions)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut options = exosim::ExosimOptions::demo(dir.path().join("exosim"));
        configure(&mut options);
        let exosim = exosim::Exosim::start(options).await.expect("exosim starts");
        let ready = serde_json::to_value(exosim.ready_info()).unwrap();
        Self { exosim, ready, dir }
    }

    /// An emulator that can be stopped and restarted mid-test ([`exosim::Exosim::stop`],
    /// [`exosim::Exosim::restart`]): it saves its tenants to a state file, and it listens on a
    /// port below the kernel's ephemeral range, so no outgoing connection can take the port
    /// while it is down.
    pub async fn start_restartable(configure: impl Fn(&mut exosim::ExosimOptions)) -> Self {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let (first, span) = if low > 21_000 {
            (20_000u16, low - 20_000)
        } else {
            (10_000, low.saturating_sub(10_000).max(1))
        };
        for _ in 0..20 {
            let port = first + (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u16;
            let dir = tempfile::tempdir().unwrap();
            let mut options = exosim::ExosimOptions::demo(dir.path().join("exosim"));
            options.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            options.state_file = Some(dir.path().join("exosim-state.json"));
            configure(&mut options);
            match exosim::Exosim::start(options).await {
                Ok(exosim) => {
                    let ready = serde_json::to_value(exosim.ready_info()).unwrap();
                    return Self { exosim, ready, dir };
                }
                // Another process has the port: try another.
                Err(exosim::Error::Bind { .. }) => continue,
                Err(e) => panic!("exosim starts: {e}"),
            }
        }
        panic!("no free port below {low} after 20 tries");
    }

    pub fn tenant_id(&self) -> String {
        self.ready["tenants"][0]["tenant_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn app(&self, index: usize) -> &Value {
        &self.ready["tenants"][0]["apps"][index]
    }

    pub fn app_str(&self, index: usize, key: &str) -> String {
        self.app(index)[key]
            .as_str()
            .unwrap_or_else(|| panic!("app {index} has no {key}"))
            .to_owned()
    }

    pub fn ca(&self) -> String {
        self.exosim.ca_file().display().to_string()
    }

    /// The environment a user would set for app `index`, without a credential.
    pub fn env_for(&self, index: usize) -> Vec<(String, String)> {
        vec![
            ("AZURE_TENANT_ID".into(), self.tenant_id()),
            ("AZURE_CLIENT_ID".into(), self.app_str(index, "client_id")),
            ("AZURE_AUTHORITY_HOST".into(), self.exosim.url()),
            ("WARDEN_CA_FILE".into(), self.ca()),
            ("WARDEN_EXCHANGE_URL".into(), self.exosim.exchange_url()),
        ]
    }

    /// The demo app's key and certificate in one PEM file.
    pub fn key_and_cert_pem(&self, index: usize) -> PathBuf {
        let path = self.dir.path().join(format!("app{index}-key-and-cert.pem"));
        let key = std::fs::read_to_string(self.app_str(index, "key_pem")).unwrap();
        let cert = std::fs::read_to_string(self.app_str(index, "certificate_pem")).unwrap();
        std::fs::write(&path, format!("{key}{cert}")).unwrap();
        path
    }

    /// InvokeCommand requests that reached exosim for a cmdlet `matches` accepts (the cmdlet
    /// name comes from the request's header, so refused-before-parsing requests count too).
    pub fn cmdlet_requests(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.exosim
            .exchange_log()
            .iter()
            .filter(|r| r.header("x-cmdletname").is_some_and(&matches))
            .count()
    }

    /// Requests for exactly `cmdlet` (case-insensitively) that reached exosim.
    pub fn requests_for(&self, cmdlet: &str) -> usize {
        self.cmdlet_requests(|c| c.eq_ignore_ascii_case(cmdlet))
    }

    pub fn token_requests(&self) -> u64 {
        self.exosim.counters().token_requests
    }
}

pub fn with(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// The CLI's environment as an operator of app 0 with its client secret, the audit trail, its
/// key and the compiled-code cache kept in the emulator's own directory.
pub fn operator_env(emu: &Emulator) -> Env {
    let dir = emu.dir.path();
    let path = |name: &str| dir.join(name).display().to_string();
    let secret = emu.app_str(0, "client_secret");
    with(
        emu.env_for(0),
        &[
            ("AZURE_CLIENT_SECRET", &secret),
            ("WARDEN_AUDIT", &path("audit.jsonl")),
            ("WARDEN_AUDIT_KEY", &path("audit.key")),
            ("WARDEN_CACHE_DIR", &path("cache")),
        ],
    )
}

/// Resolves settings from an environment and flags, exactly as the CLI does.
pub fn settings(
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<AuthSettings, warden_auth::AuthError> {
    let env = Environment::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    AuthSettings::resolve(None, overrides, &env)
}

/// A provider for these settings, trusting exosim's CA.
pub fn provider(settings: &AuthSettings) -> Result<TokenProvider, warden_auth::AuthError> {
    let transport = Arc::new(ReqwestTransport::new(settings.ca_file.as_deref())?);
    Ok(TokenProvider::new(settings.load_credential()?, transport))
}

/// The payload claims of a JWT.
pub fn claims(token: &str) -> Value {
    Value::Object(warden_auth::diagnose::decode_claims(token).expect("a JWT"))
}

/// Runs `openssl` with these arguments, panicking with its stderr on failure.
pub fn openssl(args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI is installed (.ci/run installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the `warden` binary with exactly this environment (plus PATH and HOME).
pub async fn warden(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("COLUMNS", "200");
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.output();
    tokio::time::timeout(std::time::Duration::from_secs(60), child)
        .await
        .expect("warden finishes within 60 s")
        .expect("warden runs")
}

pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The Python of the peers' virtualenv (made by tests/peers/setup.sh).
pub fn peer_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/.venv/bin/python");
    assert!(
        python.exists(),
        "the Python peers are not installed: run `bash tests/peers/setup.sh` (the README's test command does)"
    );
    python
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the guests are built: `$CARGO_TARGET_DIR/guests` (else `target/guests`), shared by
/// the guest workspaces and the tests' fresh crates, so the SDK's dependencies build once.
/// WARDEN_GUESTS_TARGET_DIR keeps checkouts that share one CARGO_TARGET_DIR from overwriting
/// each other's guests (their uplifted .wasm files have the same names).
pub fn guests_target_dir() -> PathBuf {
    std::env::var_os("WARDEN_GUESTS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"))
                .join("guests")
        })
}

/// Builds a guest workspace (`plugins` or `tests/guests`) for wasm32-wasip2 once per test
/// process and returns the path of `crate_name`'s component. Real compiled guests, built by
/// the same plain `cargo build` a plugin author runs.
pub fn guest(workspace: &str, crate_name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<String, Result<(), String>>>> = OnceLock::new();
    let target_dir = guests_target_dir();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let result = built.entry(workspace.to_owned()).or_insert_with(|| {
        let output = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(repo_root().join(workspace).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .map_err(|e| format!("running cargo: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "building {workspace} for wasm32-wasip2 failed (is the target installed? \
                 `rustup target add wasm32-wasip2`):\n{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let path = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// An Exchange session for the demo tenant's full-admin app (app 0), with its client secret.
pub fn admin_session(emu: &Emulator) -> warden_exchange::RestSession {
    admin_session_and_provider(emu).0
}

/// The same, with a handle on the session's token provider (it shares the session's cache, so
/// a test can learn the very token the session sent).
pub fn admin_session_and_provider(emu: &Emulator) -> (warden_exchange::RestSession, TokenProvider) {
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let settings = settings(&env, &Default::default()).unwrap();
    let provider = provider(&settings).unwrap();
    let exchange = exchange_settings(emu, &settings, Transport::Rest);
    let session = warden_exchange::connect::rest_session(&exchange, provider.clone()).unwrap();
    (session, provider)
}

/// The settings [`warden_exchange::connect`] takes for `transport` to this emulator, as the CLI
/// resolves them.
pub fn exchange_settings(
    emu: &Emulator,
    settings: &AuthSettings,
    transport: Transport,
) -> warden_exchange::ExchangeSettings {
    let env =
        Environment::from_pairs([("WARDEN_EXCHANGE_URL", emu.exosim.exchange_url().as_str())]);
    let transport = match transport {
        Transport::Rest => warden_exchange::Transport::Rest,
        Transport::Rps => warden_exchange::Transport::Rps,
    };
    warden_exchange::ExchangeSettings::resolve(settings, Some(transport), &env).unwrap()
}

/// Runs a cmdlet as the operator (not through a broker) and returns its objects.
pub async fn operator_invoke(
    emu: &Emulator,
    cmdlet: &str,
    parameters: Value,
) -> Vec<serde_json::Map<String, Value>> {
    let parameters = parameters
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), warden_exchange::ParamValue::from_json(v)))
        .collect();
    admin_session(emu)
        .invoke(warden_exchange::Invocation::new(cmdlet, parameters))
        .await
        .unwrap_or_else(|e| panic!("{cmdlet}: {e}"))
}

/// The two transports every transport-agnostic test runs over: one suite, two transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// REST `InvokeCommand`.
    Rest,
    /// WinRM Remote PowerShell at exosim's `/PowerShell-LiveID`.
    Rps,
}

/// A cmdlet runner for app `app` (with its client secret) over `transport`, and its token
/// provider. Retry back-off is shortened so fault tests take milliseconds.
pub fn runner_for(
    emu: &Emulator,
    app: usize,
    transport: Transport,
) -> (Arc<dyn warden_exchange::CmdletRunner>, TokenProvider) {
    let env = with(
        emu.env_for(app),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(app, "client_secret"))],
    );
    let settings = settings(&env, &Default::default()).unwrap();
    let tokens = provider(&settings).unwrap();
    (
        runner_with(emu, &settings, tokens.clone(), transport),
        tokens,
    )
}

/// A cmdlet runner for resolved settings and a token provider, over `transport`, through
/// [`warden_exchange::connect`].
pub fn runner_with(
    emu: &Emulator,
    settings: &AuthSettings,
    tokens: TokenProvider,
    transport: Transport,
) -> Arc<dyn warden_exchange::CmdletRunner> {
    let mut exchange = exchange_settings(emu, settings, transport);
    exchange.base_delay = Some(std::time::Duration::from_millis(10));
    warden_exchange::connect(&exchange, tokens).unwrap()
}

/// Every result of a call, all pages.
pub async fn invoke_all(
    runner: &dyn warden_exchange::CmdletRunner,
    invocation: warden_exchange::Invocation,
) -> Result<Vec<serde_json::Map<String, Value>>, warden_exchange::ExchangeError> {
    let mut stream = runner.start(invocation);
    let mut all = Vec::new();
    while let Some(page) = stream.next_page().await? {
        all.extend(page.objects);
    }
    Ok(all)
}

/// Exchange requests exosim logged for `cmdlet`, over either transport (a REST request
/// refused before its body was read is matched by its `X-CmdletName` header).
pub fn calls_of(emu: &Emulator, cmdlet: &str) -> Vec<exosim::ExchangeRequestRecord> {
    emu.exosim
        .exchange_log()
        .into_iter()
        .filter(|r| {
            r.cmdlet
                .as_deref()
                .or(r.header("x-cmdletname"))
                .is_some_and(|c| c.eq_ignore_ascii_case(cmdlet))
        })
        .collect()
}

/// Runs each `async fn NAME(transport: Transport)` as two tests, `NAME::rest` and `NAME::rps`.
macro_rules! over_both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rest() {
                super::$name(crate::support::Transport::Rest).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rps() {
                super::$name(crate::support::Transport::Rps).await
            }
        }
    )*};
}
pub(crate) use over_both_transports;
