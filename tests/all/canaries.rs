//! Secret canaries (issue 6): the app's client secret and its certificate's password are set
//! to recognisable values, the certificate's private key and the very access token the session
//! holds are read back, and then every example plugin and script and the hostile probe run —
//! in-process with guest memory inspection, and through the `warden` binary at trace level.
//! Everything a guest receives, its linear memory after the run, its log lines and captured
//! stdout/stderr, the audit trail, warden's own stderr (panics included) and its `--output
//! json` results are scanned for each canary in raw, base64 (every alignment), base64url,
//! hex and form-encoded form, and for anything JWT-shaped. Every scan has a positive control,
//! so none can pass because it looked at nothing.
//!
//! One test per case: each probe action, fault and ending (`probe_*`, over REST and RPS where
//! the call reaches Exchange), each example and hostile script (`example_*`, `hostile_*`), each
//! credential the binary runs with, each echoing upstream. Each starts its own exosim; the
//! in-process tests share one compiled-code cache, so each guest is compiled once.

use crate::guests::output_json;
use crate::support::*;
use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{CmdletRunner, ExchangeSession};
use warden_policy::{Policy, Principal};
use warden_runtime::{
    GuestMemory, GuestOutput, LoadedPlugin, LogLevel, LogSource, PluginHost, RunObserver,
    RunOutcome, RunReport, RunRequest, RuntimeLimits, ScriptHost,
};

/// The app's client secret: exosim is told to accept exactly this.
const CLIENT_SECRET: &str = "CANARY~client-secret~7d3e91c4b0a5~warden.test";
/// The password of the PFX the certificate credential loads.
const PFX_PASSWORD: &str = "CANARY-pfx-password-2f8a6c1e9d/+=";
/// Static text of the probe's data segment: present in its memory from instantiation on.
const PROBE_STATIC: &[u8] = b"probe: unknown action or wrong arguments";

// ---------------------------------------------------------------------------------------------
// Scanning
// ---------------------------------------------------------------------------------------------

/// Finds many byte strings in one pass (guest memories are tens of MiB). Its `Debug` shows
/// labels, never the needles. The service's canary scans (`serve_hostile.rs`) use it too.
pub(crate) struct Scanner {
    needles: Vec<(String, Vec<u8>)>,
    /// Needle indices by their first two bytes.
    by_prefix: Vec<Vec<usize>>,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.needles.iter().map(|(label, _)| label))
            .finish()
    }
}

impl Scanner {
    pub(crate) fn new() -> Self {
        Self {
            needles: Vec::new(),
            by_prefix: vec![Vec::new(); 1 << 16],
        }
    }

    pub(crate) fn add(&mut self, label: String, needle: Vec<u8>) {
        assert!(needle.len() >= 8, "{label}: too short to be recognisable");
        self.by_prefix[usize::from(u16::from_be_bytes([needle[0], needle[1]]))]
            .push(self.needles.len());
        self.needles.push((label, needle));
    }

    /// `value` in every form it could leak in.
    pub(crate) fn canary(&mut self, what: &str, value: &[u8]) {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        self.add(format!("{what} (raw)"), value.to_vec());
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        self.add(format!("{what} (hex)"), hex.clone().into_bytes());
        self.add(format!("{what} (HEX)"), hex.to_uppercase().into_bytes());
        // Inside a larger encoded blob the value can start at any offset modulo 3: each
        // offset encodes differently, so each gets its own needle (the characters that depend
        // on the value alone).
        for (name, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE)] {
            for shift in 0..3 {
                let mut input = vec![0u8; shift];
                input.extend_from_slice(value);
                let encoded = engine.encode(&input);
                let start = if shift == 0 { 0 } else { 4 };
                let end = input.len() / 3 * 4;
                self.add(
                    format!("{what} ({name} at offset {shift})"),
                    encoded.as_bytes()[start..end].to_vec(),
                );
            }
        }
        let form = form_encode(value);
        if form != value {
            self.add(format!("{what} (form-encoded)"), form);
        }
    }

    /// Labels of the needles found in `haystack`.
    pub(crate) fn find(&self, haystack: &[u8]) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for (i, pair) in haystack.windows(2).enumerate() {
            for &n in &self.by_prefix[usize::from(u16::from_be_bytes([pair[0], pair[1]]))] {
                let (label, needle) = &self.needles[n];
                if haystack[i..].starts_with(needle) {
                    found.insert(label.clone());
                }
            }
        }
        found
    }
}

/// `application/x-www-form-urlencoded`, as a token request body carries a secret.
fn form_encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
    out
}

/// Anything shaped like a JWT: `eyJ`, then two more dot-separated base64url segments.
pub(crate) fn jwt_like(haystack: &[u8]) -> bool {
    let b64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let segment = |rest: &[u8]| rest.iter().take_while(|b| b64url(b)).count();
    (0..haystack.len()).any(|i| {
        if !haystack[i..].starts_with(b"eyJ") {
            return false;
        }
        let header = segment(&haystack[i..]);
        let after = &haystack[i + header..];
        if header < 16 || after.first() != Some(&b'.') {
            return false;
        }
        let claims = segment(&after[1..]);
        claims >= 16 && after.get(1 + claims) == Some(&b'.')
    })
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The canaries of one emulator: its app's secret and key, the PFX password, and the tokens
/// the sessions under test hold.
#[derive(Debug)]
struct Canaries(Scanner);

impl Canaries {
    fn new(emu: &Emulator, tokens: &[&str]) -> Self {
        let mut scanner = Scanner::new();
        assert_eq!(emu.app_str(0, "client_secret"), CLIENT_SECRET);
        scanner.canary("client secret", CLIENT_SECRET.as_bytes());
        scanner.canary("PFX password", PFX_PASSWORD.as_bytes());
        let key_pem = std::fs::read_to_string(emu.app_str(0, "key_pem")).unwrap();
        let body: Vec<&str> = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.concat())
            .unwrap();
        assert!(der.len() > 1000, "an RSA private key");
        scanner.canary("private key", &der);
        for (i, line) in body.iter().enumerate() {
            // Short last lines are too short to mean anything.
            if line.len() >= 32 {
                scanner.add(
                    format!("private key (PEM line {i})"),
                    line.as_bytes().to_vec(),
                );
            }
        }
        for (i, token) in tokens.iter().enumerate() {
            assert!(jwt_like(token.as_bytes()), "token {i} is a JWT");
            scanner.canary(&format!("access token {i}"), token.as_bytes());
            // The signature alone (it is what makes the token usable).
            let signature = token.rsplit('.').next().unwrap();
            scanner.canary(&format!("access token {i} signature"), signature.as_bytes());
        }
        // The forms the live values travel in are caught: the token as a header, the secret
        // in a token request's body.
        for token in tokens {
            let header = format!("authorization: Bearer {token}");
            assert!(!scanner.find(header.as_bytes()).is_empty());
        }
        let mut body = b"grant_type=client_credentials&client_secret=".to_vec();
        body.extend_from_slice(&form_encode(CLIENT_SECRET.as_bytes()));
        assert!(scanner.find(&body).contains("client secret (form-encoded)"));
        Self(scanner)
    }

    /// Fails naming the canary and where it was found, never printing its value.
    fn assert_absent(&self, place: &str, haystack: &[u8]) {
        let found = self.0.find(haystack);
        assert!(found.is_empty(), "{place} holds {found:?}");
        assert!(!jwt_like(haystack), "{place} holds something JWT-shaped");
    }

    /// Also no JWT start at all (for text a person or a guest reads).
    fn assert_absent_text(&self, place: &str, text: &str) {
        self.assert_absent(place, text.as_bytes());
        assert!(!text.contains("eyJ"), "{place} holds a JWT-like `eyJ`");
    }
}

#[test]
fn the_scanner_finds_every_planted_form_and_nothing_else() {
    // Planted canaries at every alignment, inside text, base64 blobs and hex dumps: each form
    // the checks below rely on is really found.
    let value = b"CANARY~planted~secret/with+odd=chars";
    let mut scanner = Scanner::new();
    scanner.canary("planted", value);
    let clean = b"nothing to see here, only ordinary words and numbers 0123456789".repeat(50);
    assert!(scanner.find(&clean).is_empty());
    let labels: BTreeSet<String> = scanner.needles.iter().map(|(l, _)| l.clone()).collect();
    let mut seen = BTreeSet::new();
    for prefix in 0..6 {
        let mut inner = vec![b'x'; prefix];
        inner.extend_from_slice(value);
        inner.extend_from_slice(b"tail");
        let hex: String = inner.iter().map(|b| format!("{b:02x}")).collect();
        let forms = [
            inner.clone(),
            base64::engine::general_purpose::STANDARD
                .encode(&inner)
                .into_bytes(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(&inner)
                .into_bytes(),
            hex.clone().into_bytes(),
            hex.to_uppercase().into_bytes(),
            form_encode(&inner),
        ];
        for form in forms {
            let mut haystack = clean.clone();
            haystack.extend_from_slice(&form);
            haystack.extend_from_slice(&clean);
            let found = scanner.find(&haystack);
            assert!(
                !found.is_empty(),
                "prefix {prefix}: a planted form was missed"
            );
            seen.extend(found);
        }
    }
    assert_eq!(seen, labels, "every needle matched some planted form");

    // The JWT check: a real-shaped token is caught, in text and in memory-like bytes; an
    // `eyJ` alone is not.
    let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
    assert!(jwt_like(format!("Bearer {jwt}").as_bytes()));
    let mut bytes = vec![0u8; 100];
    bytes.extend_from_slice(jwt.as_bytes());
    assert!(jwt_like(&bytes));
    assert!(!jwt_like(b"eyJ is not a token, nor is eyJabc.def.ghi"));
}

// ---------------------------------------------------------------------------------------------
// The stage: exosim with the canary secret, sessions, hosts
// ---------------------------------------------------------------------------------------------

async fn canary_emulator() -> Emulator {
    Emulator::start_with(|o| {
        let app = &mut o.tenants.tenants[0].apps[0];
        app.secrets[0].value = Some(CLIENT_SECRET.to_owned());
    })
    .await
}

/// A PFX of app 0's key and certificate, protected by the canary password.
fn canary_pfx(emu: &Emulator) -> PathBuf {
    let out = emu.dir.path().join("canary.pfx");
    let pass = format!("pass:{PFX_PASSWORD}");
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        &emu.app_str(0, "key_pem"),
        "-in",
        &emu.app_str(0, "certificate_pem"),
        "-out",
        out.to_str().unwrap(),
        "-passout",
        &pass,
    ]);
    out
}

/// The credential environment of each kind the canaries cover.
fn secret_env(emu: &Emulator) -> Env {
    with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", CLIENT_SECRET)])
}

fn certificate_env(emu: &Emulator, pfx: &Path) -> Env {
    with(
        emu.env_for(0),
        &[
            ("AZURE_CLIENT_CERTIFICATE_PATH", pfx.to_str().unwrap()),
            ("AZURE_CLIENT_CERTIFICATE_PASSWORD", PFX_PASSWORD),
        ],
    )
}

/// A session for app 0 with this credential, and a handle on its token cache.
fn session(emu: &Emulator, env: &Env) -> (Arc<ExchangeSession>, warden_auth::TokenProvider) {
    use warden_exchange::SessionConfig;
    let settings = settings(env, &Default::default()).unwrap();
    let provider = provider(&settings).unwrap();
    let mut config =
        SessionConfig::for_settings(&settings, Some(&emu.exosim.exchange_url())).unwrap();
    // Fault runs retry in milliseconds, not the module's seconds.
    config.base_delay = Duration::from_millis(10);
    config.max_delay = Duration::from_millis(50);
    let session = ExchangeSession::new(
        config,
        provider.clone(),
        Arc::new(warden_auth::ReqwestTransport::new(Some(emu.exosim.ca_file())).unwrap()),
    )
    .unwrap();
    (Arc::new(session), provider)
}

/// Budgets that stop the probe's runaways quickly.
const PROBE_BUDGETS: &str = "calls = 100\ncpu_secs = 1\nmemory_mib = 32\nwall_clock_secs = 20";

/// A policy granting the probe (`sha256`) and these inline scripts the reader role.
fn probe_policy(sha256: &str, budgets: &str, scripts: &[&str]) -> String {
    let roles = crate::guests::ROLES;
    let mut policy = format!(
        "version = 1\n{roles}\n[[grant]]\nid = \"probe\"\nplugin = \"probe\"\nsha256 = \"{sha256}\"\nroles = [\"reader\"]\n[grant.budgets]\n{budgets}\n"
    );
    for (i, script) in scripts.iter().enumerate() {
        policy.push_str(&format!(
            "\n[[grant]]\nid = \"script-{i}\"\nscript_inline_sha256 = \"{}\"\nroles = [\"reader\"]\n[grant.budgets]\n{budgets}\n",
            Principal::inline_script(script).sha256(),
        ));
    }
    policy
}

/// An example's committed policy with the zeros of its unpinned grant replaced by `sha256`.
fn example_policy(name: &str, sha256: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("plugins").join(name).join("policy.toml"))
        .unwrap();
    let zeros = "0".repeat(64);
    assert!(
        text.contains(&zeros),
        "{name}'s policy has an unpinned grant"
    );
    text.replace(&zeros, sha256)
}

/// Collects what one run reports and copies the guest memory the host hands over.
#[derive(Debug, Default)]
struct Watch {
    lines: Mutex<Vec<String>>,
    memories: Mutex<Vec<Vec<Vec<u8>>>>,
}

impl RunObserver for Watch {
    fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        self.lines
            .lock()
            .unwrap()
            .push(format!("{source:?} {level} {message}"));
    }
    fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        self.lines
            .lock()
            .unwrap()
            .push(format!("progress {done}/{total:?} {label}"));
    }
    fn guest_memory(&self, memories: &[GuestMemory<'_>]) {
        self.memories
            .lock()
            .unwrap()
            .push(memories.iter().map(|m| m.data.to_vec()).collect());
    }
}

/// One emulator with the canary secret, a session per credential kind (their tokens read
/// back up front, so the scans know them), an inspecting plugin host and a script host.
pub(crate) struct Stage {
    pub(crate) emu: Emulator,
    canaries: Canaries,
    pub(crate) secret_session: Arc<dyn CmdletRunner>,
    /// The secret session's token cache, for a second transport sending the same token.
    secret_tokens: warden_auth::TokenProvider,
    certificate_session: Arc<dyn CmdletRunner>,
    pub(crate) plugins: PluginHost,
    scripts: ScriptHost,
    audit_paths: Mutex<Vec<PathBuf>>,
    /// Runs checked so far (each has its `run-end` line in some trail).
    run_ids: Mutex<Vec<String>>,
    /// Everything guests received, for a last check across all runs.
    received: Mutex<String>,
}

impl Stage {
    pub(crate) async fn new(limits: RuntimeLimits) -> Self {
        let emu = canary_emulator().await;
        let pfx = canary_pfx(&emu);
        let (secret_session, secret_tokens) = session(&emu, &secret_env(&emu));
        let (certificate_session, certificate_tokens) = session(&emu, &certificate_env(&emu, &pfx));
        // Read back now: the sessions share these caches, so every call below sends exactly
        // these tokens (checked at the end: no further token request).
        let secret_token = secret_tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
        let certificate_token = certificate_tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
        assert_eq!(claims(certificate_token.expose())["appidacr"], "2");
        let canaries = Canaries::new(&emu, &[secret_token.expose(), certificate_token.expose()]);
        // One compiled-code cache for the module's tests (writes are atomic): each guest is
        // compiled once, not once per test.
        let plugins = PluginHost::builder(limits.clone())
            .cache_dir(Some(
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("canaries-cache"),
            ))
            .inspect_guest_memory(true)
            .build()
            .unwrap();
        Self {
            emu,
            canaries,
            secret_session,
            secret_tokens,
            certificate_session,
            plugins,
            scripts: ScriptHost::new(limits),
            audit_paths: Mutex::default(),
            run_ids: Mutex::default(),
            received: Mutex::default(),
        }
    }

    /// A broker under `policy` (parsed as if from `origin`) over `session`, auditing to a
    /// trail of its own.
    pub(crate) fn broker(
        &self,
        policy: &str,
        origin: &Path,
        runner: &Arc<dyn CmdletRunner>,
        call_timeout: Duration,
    ) -> Broker {
        let mut paths = self.audit_paths.lock().unwrap();
        let path = self
            .emu
            .dir
            .path()
            .join(format!("audit-{}.jsonl", paths.len()));
        paths.push(path.clone());
        let audit = AuditTrail::open(&path, AuditKey::from_bytes([0x5a; 32])).unwrap();
        Broker::new(
            Arc::new(Policy::parse(policy, origin).unwrap()),
            runner.clone(),
            Arc::new(audit),
            call_timeout,
        )
    }

    /// The probe reads two mailboxes, then reads them again with an address from the first
    /// answer as a value its memory must hold: data the host gave the guest is in its memory,
    /// so the memory scan reads what the guest received.
    async fn read_lands_in_guest_memory(&self, probe: &LoadedPlugin, broker: &Broker) {
        let read = ["invoke", "Get-Mailbox", r#"{"ResultSize":2}"#];
        let report = self.plugin(probe, broker, &read, &[PROBE_STATIC]).await;
        let out = output_json(&report);
        let address = out["ok"][1]["PrimarySmtpAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{out}"))
            .to_owned();
        let report = self
            .plugin(probe, broker, &read, &[address.as_bytes()])
            .await;
        assert_eq!(status(&report), "completed");
    }

    fn load(&self, workspace: &str, name: &str) -> LoadedPlugin {
        self.plugins.load(&guest(workspace, name)).unwrap()
    }

    /// Runs a plugin and checks what it received and logged and its memory. `live` are
    /// values the guest must have held (its arguments, data it was given): the memory scan
    /// must find them, or it proves nothing.
    /// Runs a plugin, returning its report and what it reported (memory included).
    async fn run_plugin(
        &self,
        plugin: &LoadedPlugin,
        broker: &Broker,
        args: &[&str],
    ) -> (RunReport, Arc<Watch>) {
        let watch = Arc::new(Watch::default());
        let request = RunRequest {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            observer: watch.clone(),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self
            .plugins
            .run(plugin, broker, request)
            .await
            .unwrap_or_else(|e| panic!("{} {args:?}: the run should start: {e}", plugin.name()));
        (report, watch)
    }

    /// Runs a plugin and checks what it received and logged and its memory. `live` are
    /// values the guest must have held (its arguments, data it was given): the memory scan
    /// must find them, or it proves nothing.
    pub(crate) async fn plugin(
        &self,
        plugin: &LoadedPlugin,
        broker: &Broker,
        args: &[&str],
        live: &[&[u8]],
    ) -> RunReport {
        let what = format!("{} {args:?}", plugin.name());
        let (report, watch) = self.run_plugin(plugin, broker, args).await;
        self.check_received(&what, &report, &watch);
        let handed_over = watch.memories.lock().unwrap();
        assert_eq!(handed_over.len(), 1, "{what}: memory handed over once");
        let memories = &handed_over[0];
        assert!(
            memories.iter().any(|m| !m.is_empty()),
            "{what}: the guest's memory was read"
        );
        for (i, memory) in memories.iter().enumerate() {
            self.canaries
                .assert_absent(&format!("{what}: guest memory {i}"), memory);
        }
        // The output, when there is one, was built in guest memory.
        let output_head = match &report.outcome {
            RunOutcome::Completed {
                output: GuestOutput::Text(text),
            } if text.len() >= 16 => Some(text.as_bytes()[..16].to_vec()),
            _ => None,
        };
        for needle in live.iter().copied().chain(output_head.as_deref()) {
            assert!(
                memories.iter().any(|m| holds(m, needle)),
                "{what}: the memory scan did not see {:?}, which the guest held",
                String::from_utf8_lossy(needle)
            );
        }
        report
    }

    /// Runs a Rhai script (no memory of its own) and checks what it received and logged.
    async fn script(
        &self,
        what: &str,
        source: &str,
        principal: Principal,
        broker: &Broker,
        args: &[&str],
    ) -> RunReport {
        let watch = Arc::new(Watch::default());
        let compiled = self.scripts.compile(what, source).unwrap();
        let request = RunRequest {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            observer: watch.clone(),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = self
            .scripts
            .run(&compiled, principal, broker, request)
            .await
            .unwrap_or_else(|e| panic!("{what}: the run should start: {e}"));
        self.check_received(what, &report, &watch);
        assert!(
            watch.memories.lock().unwrap().is_empty(),
            "{what}: scripts have no memory to hand over"
        );
        report
    }

    fn check_received(&self, what: &str, report: &RunReport, watch: &Watch) {
        let received = format!(
            "{}\n{}\n",
            serde_json::to_string(report).unwrap(),
            watch.lines.lock().unwrap().join("\n")
        );
        self.canaries
            .assert_absent_text(&format!("{what}: its results, errors and log"), &received);
        self.received.lock().unwrap().push_str(&received);
        self.run_ids.lock().unwrap().push(report.run_id.clone());
    }

    /// The audit trails, checked: every run is there, and no canary.
    pub(crate) fn check_audit(&self) {
        let mut trail = String::new();
        for path in self.audit_paths.lock().unwrap().iter() {
            if path.exists() {
                trail.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        for run_id in self.run_ids.lock().unwrap().iter() {
            assert!(
                trail.contains(run_id.as_str()),
                "run {run_id} is in the audit trail read"
            );
        }
        assert!(trail.contains("run-end:"), "{trail}");
        self.canaries.assert_absent_text("the audit trail", &trail);
    }
}

fn status(report: &RunReport) -> &'static str {
    report.outcome.status()
}

// ---------------------------------------------------------------------------------------------
// In-process: the probe, one test per answer, ending and fault
// ---------------------------------------------------------------------------------------------

/// A fresh stage with the probe granted over one transport (the secret session's token), and
/// what every probe test checks at its end.
struct ProbeStage {
    stage: Stage,
    probe: LoadedPlugin,
    policy: String,
    origin: PathBuf,
    transport: Transport,
    runner: Arc<dyn CmdletRunner>,
    /// The RPS session, closed at the end (its shell is deleted).
    rps: Option<Arc<warden_exchange::RpsSession>>,
    broker: Broker,
}

impl ProbeStage {
    async fn start(transport: Transport) -> Self {
        // Output and log budgets small enough that the floods end quickly.
        let limits = RuntimeLimits {
            max_output_bytes: 1024 * 1024,
            max_log_bytes: 64 * 1024,
            ..RuntimeLimits::default()
        };
        let stage = Stage::new(limits).await;
        let probe = stage.load("tests/guests", "probe");
        let policy = probe_policy(probe.sha256(), PROBE_BUDGETS, &[]);
        let origin = stage.emu.dir.path().join("policy.toml");
        let (runner, rps): (Arc<dyn CmdletRunner>, _) = match transport {
            Transport::Rest => (stage.secret_session.clone(), None),
            Transport::Rps => {
                use warden_exchange::{RpsConfig, RpsSession};
                let mut config = RpsConfig::new(warden_auth::Cloud::Public, &stage.emu.tenant_id());
                config.base_url = stage.emu.exosim.exchange_url();
                config.base_delay = Duration::from_millis(10);
                config.max_delay = Duration::from_millis(50);
                let rps = Arc::new(
                    RpsSession::new(
                        config,
                        stage.secret_tokens.clone(),
                        stage.secret_tokens.transport(),
                    )
                    .unwrap(),
                );
                (rps.clone(), Some(rps))
            }
        };
        let broker = stage.broker(&policy, &origin, &runner, Duration::from_secs(30));
        Self {
            stage,
            probe,
            policy,
            origin,
            transport,
            runner,
            rps,
            broker,
        }
    }

    /// The probe run with `args`, scanned (its static text must be in the memory read).
    async fn run(&self, args: &[&str]) -> RunReport {
        let report = self
            .stage
            .plugin(&self.probe, &self.broker, args, &[PROBE_STATIC])
            .await;
        eprintln!("{args:?}: {} in {:?}", status(&report), report.elapsed);
        report
    }

    /// Everything the probe received so far, for checks that a scan saw real content.
    fn received(&self) -> String {
        self.stage.received.lock().unwrap().clone()
    }

    /// The call fails under `fault` (one per attempt the session makes), and its error has
    /// this kind over REST (any kind over RPS, whose retries differ).
    async fn call_under(&self, fault: exosim::ExchangeFault, rest_kind: &str) {
        let faults = self.stage.emu.exosim.exchange_faults();
        faults.clear();
        faults.push_n(6, fault);
        let report = self.run(&PROBE_CALL).await;
        faults.clear();
        let out = output_json(&report);
        match self.transport {
            Transport::Rest => assert_eq!(out["error"]["kind"], rest_kind, "{fault:?}: {out}"),
            Transport::Rps => assert!(!out["error"]["kind"].is_null(), "{fault:?}: {out}"),
        }
    }

    /// Every call went out with the token read back at the start, over the transport under
    /// test, and the trails hold every run and no canary.
    async fn finish(self) {
        if let Some(rps) = &self.rps {
            rps.close().await.unwrap();
            assert!(
                self.stage
                    .emu
                    .exosim
                    .exchange_log()
                    .iter()
                    .all(|r| r.path.eq_ignore_ascii_case("/PowerShell-LiveID")),
                "the calls went over Remote PowerShell"
            );
        }
        assert_eq!(
            self.stage.emu.token_requests(),
            2,
            "one token per session, no more"
        );
        self.stage.check_audit();
    }
}

/// The call the fault cases make.
const PROBE_CALL: [&str; 3] = ["invoke", "Get-Mailbox", r#"{"ResultSize":1}"#];

/// Runs each `NAME: |stage| BODY;` as one test over a fresh probe stage on REST, then the
/// checks every probe test ends with.
macro_rules! cases {
    ($($name:ident: |$stage:ident| $body:expr;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let $stage = ProbeStage::start(Transport::Rest).await;
            $body;
            $stage.finish().await;
        }
    )+};
}

/// The probe's report was this status.
fn assert_status(report: &RunReport, expected: &str) {
    assert_eq!(status(report), expected, "{:?}", report.outcome);
}

/// The probe's JSON output has `value` at `pointer`.
fn assert_out(report: &RunReport, pointer: &str, value: &str) {
    let out = output_json(report);
    assert_eq!(out.pointer(pointer).unwrap_or(&Value::Null), value, "{out}");
}

over_both_transports!(
    probe_data_read_lands_in_guest_memory,
    probe_remote_error,
    probe_refused_by_role,
    probe_unknown_parameter,
    probe_stream,
    probe_exchange_throttled_429,
    probe_exchange_unavailable_503,
    probe_exchange_gateway_timeout_504,
    probe_exchange_reset_before_apply,
);

async fn probe_data_read_lands_in_guest_memory(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    probe
        .stage
        .read_lands_in_guest_memory(&probe.probe, &probe.broker)
        .await;
    probe.finish().await;
}

async fn probe_remote_error(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    let report = probe
        .run(&["invoke", "Get-Mailbox", r#"{"Identity":"nobody-at-all"}"#])
        .await;
    assert_out(&report, "/error/kind", "remote");
    assert!(
        probe.received().contains("ManagementObjectNotFound"),
        "the remote error was among what was scanned"
    );
    probe.finish().await;
}

async fn probe_refused_by_role(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    let report = probe
        .run(&["invoke", "Set-Mailbox", r#"{"Identity":"x"}"#])
        .await;
    assert_out(&report, "/error/kind", "denied");
    probe.finish().await;
}

async fn probe_unknown_parameter(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    let report = probe
        .run(&["invoke", "Get-Mailbox", r#"{"Ident":"x"}"#])
        .await;
    assert!(
        !output_json(&report)["error"].is_null(),
        "{:?}",
        report.outcome
    );
    probe.finish().await;
}

async fn probe_stream(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    let report = probe
        .run(&["stream", "Get-Recipient", r#"{"ResultSize":"Unlimited"}"#])
        .await;
    assert_status(&report, "completed");
    probe.finish().await;
}

async fn probe_exchange_throttled_429(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    let fault = exosim::ExchangeFault::TooManyRequests {
        retry_after_secs: 0.05,
    };
    probe.call_under(fault, "throttled").await;
    probe.finish().await;
}

async fn probe_exchange_unavailable_503(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    probe
        .call_under(exosim::ExchangeFault::ServiceUnavailable, "throttled")
        .await;
    probe.finish().await;
}

async fn probe_exchange_gateway_timeout_504(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    probe
        .call_under(exosim::ExchangeFault::GatewayTimeout, "remote")
        .await;
    probe.finish().await;
}

async fn probe_exchange_reset_before_apply(transport: Transport) {
    let probe = ProbeStage::start(transport).await;
    probe
        .call_under(exosim::ExchangeFault::ResetBeforeApply, "unavailable")
        .await;
    probe.finish().await;
}

cases! {
    probe_echoed_arguments_are_in_the_memory_scanned: |probe| {
        let marker = format!("live-marker-{}", uuid::Uuid::new_v4());
        let report = probe
            .stage
            .plugin(
                &probe.probe,
                &probe.broker,
                &["echo-args", &marker],
                &[marker.as_bytes()],
            )
            .await;
        assert_status(&report, "completed");
    };
    probe_memory_scan_finds_a_secret_the_guest_holds: |probe| {
        // Handed the secret as an argument (under a broker of its own, whose trail is not
        // among those checked), the probe's memory scan reports it.
        let planted = Broker::new(
            Arc::new(Policy::parse(&probe.policy, &probe.origin).unwrap()),
            probe.runner.clone(),
            Arc::new(
                AuditTrail::open(
                    &probe.stage.emu.dir.path().join("planted-audit.jsonl"),
                    AuditKey::from_bytes([1; 32]),
                )
                .unwrap(),
            ),
            Duration::from_secs(30),
        );
        let (_, watch) = probe
            .stage
            .run_plugin(&probe.probe, &planted, &["echo-args", CLIENT_SECRET])
            .await;
        let planted_found = watch.memories.lock().unwrap()[0]
            .iter()
            .any(|m| probe.stage.canaries.0.find(m).contains("client secret (raw)"));
        assert!(
            planted_found,
            "the memory scan finds a canary the guest really holds"
        );
        // The finish needs some run in the trails it reads.
        assert_status(&probe.run(&["grants"]).await, "completed");
    };
    probe_refused_by_deny_rule: |probe| {
        let report = probe
            .run(&["invoke", "Remove-Mailbox", r#"{"Identity":"x"}"#])
            .await;
        assert_out(&report, "/error/rule", "deny[0]");
    };
    probe_invalid_arguments: |probe| {
        let report = probe.run(&["invoke", "Get-Mailbox", r#"{"Identity":"#]).await;
        assert_out(&report, "/error/kind", "invalid");
    };
    probe_grants: |probe| assert_status(&probe.run(&["grants"]).await, "completed");
    probe_usage: |probe| assert_status(&probe.run(&["usage"]).await, "completed");
    probe_env: |probe| {
        let report = probe.run(&["env"]).await;
        assert_eq!(output_json(&report)["vars"], serde_json::json!({}), "{:?}", report.outcome);
    };
    probe_files: |probe| assert_status(&probe.run(&["files"]).await, "completed");
    probe_clock: |probe| assert_status(&probe.run(&["clock"]).await, "completed");
    probe_own_failure: |probe| assert_status(&probe.run(&["fail", "bye"]).await, "failed");
    probe_panic: |probe| {
        assert_status(&probe.run(&["panic"]).await, "stopped");
        assert!(
            probe.received().contains("panic on purpose"),
            "the panic message reached the log that was scanned"
        );
    };
    probe_recursion: |probe| assert_status(&probe.run(&["recurse"]).await, "stopped");
    probe_spin: |probe| assert_status(&probe.run(&["spin"]).await, "stopped");
    probe_alloc: |probe| assert_status(&probe.run(&["alloc"]).await, "stopped");
    probe_big_output: |probe| {
        assert_status(&probe.run(&["big-output", "2000000"]).await, "stopped");
    };
    probe_stdout_flood: |probe| {
        assert_status(&probe.run(&["stdout-flood"]).await, "stopped");
        assert!(
            probe.received().contains("probe stdout line"),
            "the flood was among what was scanned"
        );
    };
    probe_log_flood: |probe| {
        assert_status(&probe.run(&["log-flood"]).await, "stopped");
        assert!(
            probe.received().contains("probe log line"),
            "the flood was among what was scanned"
        );
    };
    probe_call_budget: |probe| {
        let report = probe
            .run(&["call-spam", "150", "Get-Mailbox", r#"{"ResultSize":1}"#])
            .await;
        assert_out(&report, "/first_error/kind", "budget");
    };
    probe_call_past_its_timeout: |probe| {
        let faults = probe.stage.emu.exosim.exchange_faults();
        faults.set_latency(Duration::from_secs(3));
        let impatient = probe.stage.broker(
            &probe.policy,
            &probe.origin,
            &probe.runner,
            Duration::from_millis(300),
        );
        let report = probe
            .stage
            .plugin(&probe.probe, &impatient, &PROBE_CALL, &[PROBE_STATIC])
            .await;
        faults.set_latency(Duration::ZERO);
        assert_out(&report, "/error/kind", "timeout");
    };
    probe_stopped_by_the_wall_clock_in_a_host_call: |probe| {
        // Its memory is still read.
        let faults = probe.stage.emu.exosim.exchange_faults();
        faults.set_latency(Duration::from_secs(3));
        let short = probe_policy(probe.probe.sha256(), "wall_clock_secs = 1", &[]);
        let hurried =
            probe.stage.broker(&short, &probe.origin, &probe.runner, Duration::from_secs(30));
        let report = probe
            .stage
            .plugin(
                &probe.probe,
                &hurried,
                &["call-spam", "3", "Get-Mailbox", r#"{"ResultSize":1}"#],
                &[PROBE_STATIC],
            )
            .await;
        faults.set_latency(Duration::ZERO);
        assert!(
            matches!(status(&report), "stopped" | "completed"),
            "{:?}",
            report.outcome
        );
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_entra_failing_while_a_fresh_session_fetches_its_token() {
    // The guest learns the call is unavailable, and nothing of the credential.
    let probe = ProbeStage::start(Transport::Rest).await;
    let stage = &probe.stage;
    let (fresh, _) = session(&stage.emu, &secret_env(&stage.emu));
    let fresh: Arc<dyn CmdletRunner> = fresh;
    let fresh_broker = stage.broker(
        &probe.policy,
        &probe.origin,
        &fresh,
        Duration::from_secs(30),
    );
    stage
        .emu
        .exosim
        .faults()
        .push_n(20, exosim::TokenFault::InternalServerError);
    let report = stage
        .plugin(&probe.probe, &fresh_broker, &PROBE_CALL, &[PROBE_STATIC])
        .await;
    stage.emu.exosim.faults().clear();
    assert_out(&report, "/error/kind", "unavailable");
    // The failed token requests count too: the finish's "no more tokens" does not apply.
    stage.check_audit();
}

// ---------------------------------------------------------------------------------------------
// In-process: the examples and hostile scripts, one test each
// ---------------------------------------------------------------------------------------------

/// A fresh stage and three users' addresses (read as the operator, whose token request is the
/// last one any of these tests may make).
struct ExampleStage {
    stage: Stage,
    users: Vec<String>,
    operator_tokens: u64,
}

/// The shared mailbox the `shared-mailbox` example creates.
const SHARED: &str = "canary-shared@contoso.onmicrosoft.com";

impl ExampleStage {
    async fn start() -> Self {
        let stage = Stage::new(RuntimeLimits::default()).await;
        let users: Vec<String> = operator_invoke(
            &stage.emu,
            "Get-Mailbox",
            serde_json::json!({"RecipientTypeDetails": "UserMailbox"}),
        )
        .await
        .iter()
        .map(|m| m["PrimarySmtpAddress"].as_str().unwrap().to_owned())
        .collect();
        let operator_tokens = stage.emu.token_requests();
        Self {
            stage,
            users,
            operator_tokens,
        }
    }

    /// An example plugin under its committed policy, over the certificate session; `live`
    /// (its arguments, or exosim data it reported) must be in its memory.
    async fn plugin(&self, name: &str, args: &[&str], live: &[&[u8]]) {
        let origin = repo_root().join("plugins").join(name).join("policy.toml");
        let plugin = self.stage.load("plugins", name);
        let broker = self.stage.broker(
            &example_policy(name, plugin.sha256()),
            &origin,
            &self.stage.certificate_session,
            Duration::from_secs(30),
        );
        let report = self.stage.plugin(&plugin, &broker, args, live).await;
        assert_eq!(status(&report), "completed", "{name}: {:?}", report.outcome);
    }

    /// An example script under scripts/policy.toml, over the secret session.
    async fn script(&self, name: &str, args: &[&str], expected: &str) {
        let scripts_policy = repo_root().join("scripts/policy.toml");
        let broker = self.stage.broker(
            &std::fs::read_to_string(&scripts_policy).unwrap(),
            &scripts_policy,
            &self.stage.secret_session,
            Duration::from_secs(30),
        );
        let file = repo_root().join("scripts").join(name);
        let source = std::fs::read_to_string(&file).unwrap();
        let principal = Principal::script_file(&file, source.as_bytes());
        let report = self
            .stage
            .script(
                &file.display().to_string(),
                &source,
                principal,
                &broker,
                args,
            )
            .await;
        assert_eq!(status(&report), expected, "{name}: {:?}", report.outcome);
    }

    /// A hostile inline script, granted as the probe's policy grants scripts.
    async fn hostile(&self, script: &str, expected: &str) {
        let policy = probe_policy(&"0".repeat(64), PROBE_BUDGETS, &[script]);
        let broker = self.stage.broker(
            &policy,
            &self.stage.emu.dir.path().join("policy.toml"),
            &self.stage.secret_session,
            Duration::from_secs(30),
        );
        let report = self
            .stage
            .script(
                "inline script",
                script,
                Principal::inline_script(script),
                &broker,
                &[],
            )
            .await;
        assert_eq!(status(&report), expected, "{script}: {:?}", report.outcome);
    }

    /// The `shared-mailbox` example creates [`SHARED`] with two users' access: the data the
    /// other examples then report.
    async fn create_shared(&self) {
        let args = [
            "--name",
            "Canary Shared",
            "--address",
            SHARED,
            "--full-access",
            &self.users[0],
            "--send-as",
            &self.users[1],
        ];
        self.plugin("shared-mailbox", &args, &[SHARED.as_bytes()])
            .await;
    }

    fn received(&self) -> String {
        self.stage.received.lock().unwrap().clone()
    }

    fn finish(self) {
        assert_eq!(
            self.stage.emu.token_requests(),
            self.operator_tokens,
            "the guests' calls went out with the tokens read back at the start"
        );
        self.stage.check_audit();
    }
}

/// Runs each `NAME: |stage| BODY;` as one test over a fresh example stage, then the checks
/// every such test ends with.
macro_rules! example_cases {
    ($($name:ident: |$stage:ident| $body:expr;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let $stage = ExampleStage::start().await;
            $body;
            $stage.finish();
        }
    )+};
}

example_cases! {
    example_mailbox_report: |ex| {
        ex.plugin("mailbox-report", &[], &[ex.users[0].as_bytes()]).await
    };
    example_shared_mailbox: |ex| {
        ex.create_shared().await;
        assert!(
            ex.received().contains(SHARED),
            "the plugin's own data was among what was scanned"
        );
    };
    example_permission_audit: |ex| {
        ex.create_shared().await;
        ex.plugin("permission-audit", &[], &[SHARED.as_bytes()]).await
    };
    example_permission_audit_all: |ex| {
        ex.create_shared().await;
        ex.plugin("permission-audit", &["--all"], &[SHARED.as_bytes()]).await
    };
    example_script_largest_mailboxes: |ex| {
        ex.script("largest-mailboxes.rhai", &[], "completed").await
    };
    example_script_shared_mailbox_access: |ex| {
        // With a shared mailbox and its grants to report.
        ex.create_shared().await;
        ex.script("shared-mailbox-access.rhai", &[], "completed").await
    };
    example_script_rename_mailbox: |ex| {
        let user = ex.users[2].clone();
        ex.script("rename-mailbox.rhai", &[&user, "Canary Renamed"], "completed").await
    };
    example_script_rename_mailbox_without_arguments: |ex| {
        ex.script("rename-mailbox.rhai", &[], "failed").await
    };
    hostile_script_prints_every_answer_kind: |ex| {
        ex.hostile(
            r#"let r = []; r.push(exo::invoke("Get-Mailbox", #{ResultSize: 2})); try { exo::invoke("Get-Mailbox", #{Identity: "nobody-at-all"}); } catch (e) { r.push(e); } try { exo::invoke("Set-Mailbox", #{Identity: "x"}); } catch (e) { r.push(e); } try { exo::invoke("Get-Mailbox", #{Identity: ["a", "b"]}); } catch (e) { r.push(e); } r.push(exo::grants()); r.push(exo::usage()); print(r); debug(r); r"#,
            "completed",
        )
        .await;
        assert!(
            ex.received().contains("ManagementObjectNotFound"),
            "a remote error was among what was scanned"
        );
    };
    hostile_script_throws: |ex| {
        ex.hostile(r#"debug(exo::grants()); throw "bye from a script""#, "failed").await
    };
    hostile_script_runaway: |ex| {
        ex.hostile(r#"let s = "x"; loop { s += s; }"#, "stopped").await
    };
}

// ---------------------------------------------------------------------------------------------
// The warden binary at trace level
// ---------------------------------------------------------------------------------------------

/// One `warden` invocation of the canary matrix.
struct CliRun {
    what: String,
    args: Vec<String>,
    /// Expected exit status.
    exit: i32,
}

fn cli_run(what: &str, subcommand: &str, file: &Path, policy: &Path, rest: &[&str]) -> CliRun {
    let mut args: Vec<String> = vec![
        subcommand.into(),
        file.display().to_string(),
        "--policy".into(),
        policy.display().to_string(),
        "--output".into(),
        "json".into(),
        // The highest level: dependencies (HTTP, TLS) log at trace only here.
        "-vvv".into(),
    ];
    args.extend(rest.iter().map(|a| (*a).to_owned()));
    CliRun {
        what: what.to_owned(),
        args,
        exit: 0,
    }
}

/// Each credential kind the binary runs with, as one test: every run of the matrix with it.
macro_rules! over_credentials {
    ($($name:ident: $credential:expr;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            cli_matrix($credential).await;
        }
    )+};
}

over_credentials! {
    the_warden_binary_prints_no_canary_at_trace_level_with_a_secret: "secret";
    the_warden_binary_prints_no_canary_at_trace_level_with_a_certificate: "certificate";
    the_warden_binary_prints_no_canary_at_trace_level_with_an_access_token: "access token";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_of_the_binarys_stdout_finds_a_token_it_was_asked_to_print() {
    let emu = canary_emulator().await;
    let (_, tokens) = session(&emu, &secret_env(&emu));
    let token = tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
    let token_file = emu.dir.path().join("token");
    std::fs::write(&token_file, token.expose()).unwrap();
    let canaries = Canaries::new(&emu, &[token.expose()]);
    let shown = warden(
        &[
            "token",
            "--show-token",
            "--access-token-file",
            token_file.to_str().unwrap(),
        ],
        &emu.env_for(0),
    )
    .await;
    let found = canaries.0.find(&shown.stdout);
    assert!(found.contains("access token 0 (raw)"), "{found:?}");
    assert!(jwt_like(&shown.stdout));
}

/// Every run of the matrix with one credential, at trace level: no canary in its stdout,
/// stderr or audit trail.
async fn cli_matrix(credential: &str) {
    let emu = canary_emulator().await;
    let dir = emu.dir.path().to_owned();
    let pfx = canary_pfx(&emu);
    // The access-token credential runs with a token read here: the very token that process
    // sends (it fetches none of its own; checked below).
    let (_, tokens) = session(&emu, &secret_env(&emu));
    let token = tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, token.expose()).unwrap();
    let canaries = Canaries::new(&emu, &[token.expose()]);

    let probe = guest("tests/guests", "probe");
    let probe_sha = PluginHost::inspect("probe", &std::fs::read(&probe).unwrap())
        .unwrap()
        .sha256;
    let probe_policy_file = dir.join("probe-policy.toml");
    std::fs::write(
        &probe_policy_file,
        probe_policy(
            &probe_sha,
            "calls = 20\ncpu_secs = 1\nmemory_mib = 32\nwall_clock_secs = 10",
            &[],
        ),
    )
    .unwrap();

    let mut runs = Vec::new();
    for name in ["mailbox-report", "permission-audit", "shared-mailbox"] {
        let wasm = guest("plugins", name);
        let sha = PluginHost::inspect(name, &std::fs::read(&wasm).unwrap())
            .unwrap()
            .sha256;
        let policy = dir.join(format!("{name}-policy.toml"));
        std::fs::write(&policy, example_policy(name, &sha)).unwrap();
        let args: &[&str] = match name {
            "shared-mailbox" => &[
                "--",
                "--name",
                "Canary Cli",
                "--address",
                "canary-cli@contoso.onmicrosoft.com",
            ],
            _ => &[],
        };
        runs.push(cli_run(name, "run", &wasm, &policy, args));
    }
    let scripts_policy = repo_root().join("scripts/policy.toml");
    for name in [
        "largest-mailboxes.rhai",
        "shared-mailbox-access.rhai",
        "rename-mailbox.rhai",
    ] {
        let file = repo_root().join("scripts").join(name);
        let mut run = cli_run(name, "script", &file, &scripts_policy, &[]);
        if name.starts_with("rename") {
            // Without arguments it fails with its usage: a script's own error on stderr.
            run.exit = 1;
        }
        runs.push(run);
    }
    let mut eval = cli_run(
        "eval",
        "eval",
        Path::new(r#"exo::invoke("Get-Mailbox", #{ResultSize: 10}).len()"#),
        &scripts_policy,
        &[],
    );
    eval.what = "eval one-liner".into();
    runs.push(eval);
    let probe_cases: &[(&[&str], i32)] = &[
        (&["invoke", "Get-Mailbox", r#"{"ResultSize":2}"#], 0),
        (
            &["invoke", "Get-Mailbox", r#"{"Identity":"nobody-at-all"}"#],
            0,
        ),
        (&["invoke", "Set-Mailbox", r#"{"Identity":"x"}"#], 0),
        (&["grants"], 0),
        (&["usage"], 0),
        (&["env"], 0),
        (&["files"], 0),
        (&["fail", "bye"], 1),
        (&["panic"], 1),
        (&["log-flood"], 4),
        (&["stdout-flood"], 4),
    ];
    for (args, exit) in probe_cases {
        let mut rest = vec!["--"];
        rest.extend_from_slice(args);
        let mut run = cli_run(
            &format!("probe {args:?}"),
            "run",
            &probe,
            &probe_policy_file,
            &rest,
        );
        run.exit = *exit;
        runs.push(run);
    }
    // Refused before it starts: the probe under another plugin's policy.
    let mut refused = cli_run(
        "refused probe",
        "run",
        &probe,
        &dir.join("mailbox-report-policy.toml"),
        &["--", "grants"],
    );
    refused.exit = 3;
    runs.push(refused);

    let credentials: Vec<(&str, Env, Vec<String>)> = vec![
        ("secret", secret_env(&emu), vec![]),
        ("certificate", certificate_env(&emu, &pfx), vec![]),
        (
            "access token",
            emu.env_for(0),
            vec![
                "--access-token-file".into(),
                token_file.display().to_string(),
            ],
        ),
    ];
    // Compile each plugin into the cache first, at the default log level: at trace level
    // cranelift logs its every pass (about 2 GB for one plugin), while a cached load logs a
    // few dozen KB. The runs below then load from the cache. A plugin is compiled only once
    // its policy grants it, so each is warmed up by a run under its own policy (its outcome
    // does not matter), with the audit key the runs below use (the cache key lies beside it).
    let cache_dir = dir.join("cache").display().to_string();
    let warm_audit = dir.join("audit-warm-up.jsonl").display().to_string();
    let audit_key = dir.join("audit.key").display().to_string();
    let mut warmed: Vec<&str> = Vec::new();
    for run in runs.iter().filter(|r| r.args[0] == "run") {
        let (file, policy) = (run.args[1].as_str(), run.args[3].as_str());
        if warmed.contains(&file) {
            continue;
        }
        warmed.push(file);
        let args = [
            "run",
            file,
            "--policy",
            policy,
            "--quiet",
            "--cache-dir",
            &cache_dir,
            "--audit",
            &warm_audit,
            "--audit-key",
            &audit_key,
        ];
        warden(&args, &credentials[0].1).await;
    }
    let compiled = std::fs::read_dir(&cache_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    assert_eq!(
        compiled,
        warmed.len(),
        "each plugin was compiled once, warm"
    );

    let mut trails = String::new();
    for (credential, env, extra) in credentials.iter().filter(|c| c.0 == credential) {
        let env = with(env.clone(), &[("RUST_BACKTRACE", "1")]);
        let audit = dir.join(format!("audit-{}.jsonl", credential.replace(' ', "-")));
        let files = [
            "--audit".to_owned(),
            audit.display().to_string(),
            "--audit-key".into(),
            dir.join("audit.key").display().to_string(),
        ];
        let tokens_before = emu.token_requests();
        let mut all_stderr = String::new();
        for run in &runs {
            let what = format!("{credential}: {}", run.what);
            let split = run
                .args
                .iter()
                .position(|a| a == "--")
                .unwrap_or(run.args.len());
            let mut args: Vec<&str> = run.args[..split].iter().map(String::as_str).collect();
            args.extend(files.iter().map(String::as_str));
            args.extend(extra.iter().map(String::as_str));
            if run.args[0] == "run" {
                args.extend(["--cache-dir", cache_dir.as_str()]);
            }
            args.extend(run.args[split..].iter().map(String::as_str));
            let started = std::time::Instant::now();
            let output = warden(&args, &env).await;
            let (stdout, stderr) = text(&output);
            eprintln!(
                "{what}: exit {:?} in {:?}, {} bytes of stderr",
                output.status.code(),
                started.elapsed(),
                stderr.len()
            );
            assert_eq!(
                output.status.code(),
                Some(run.exit),
                "{what}: exit status\n{stdout}\n{stderr}"
            );
            // Positive controls: the outputs are what a run prints (its summary line; a JSON
            // document for a completed run), and trace level was on (checked per credential
            // below: a script that fails before any call has no trace line to show).
            assert!(stderr.contains("run ") || run.exit == 3, "{what}: {stderr}");
            all_stderr.push_str(&stderr);
            if run.exit == 0 {
                serde_json::from_str::<Value>(&stdout).unwrap_or_else(|e| {
                    panic!("{what}: --output json gave no JSON ({e}): {stdout}")
                });
            }
            canaries.assert_absent_text(&format!("{what}: stdout"), &stdout);
            canaries.assert_absent_text(&format!("{what}: stderr"), &stderr);
            if run.what == "probe [\"panic\"]" {
                assert!(
                    stderr.contains("panic on purpose"),
                    "{what}: the panic reached stderr: {stderr}"
                );
            }
        }
        assert!(
            all_stderr.contains("TRACE"),
            "{credential}: trace lines were logged"
        );
        match *credential {
            "access token" => assert_eq!(
                emu.token_requests(),
                tokens_before,
                "the access-token runs sent the token the canaries know"
            ),
            _ => {
                assert!(
                    emu.token_requests() > tokens_before,
                    "{credential}: the runs fetched tokens with that credential"
                );
                assert!(
                    all_stderr.contains("requesting token"),
                    "{credential}: the token requests were logged"
                );
            }
        }
        trails.push_str(&std::fs::read_to_string(&audit).unwrap());
    }
    assert!(trails.contains("run-end:"), "{trails}");
    canaries.assert_absent_text("the CLI's audit trails", &trails);
}

// ---------------------------------------------------------------------------------------------
// An upstream that echoes the request
// ---------------------------------------------------------------------------------------------

/// A misconfigured intermediary (a TLS-inspecting proxy's debug page, an error handler that
/// dumps the request) between warden and Exchange: it answers every call with an error whose
/// body repeats the request's `Authorization` header — as an HTML page, or inside an
/// Exchange-shaped JSON error.
#[derive(Debug)]
struct EchoingUpstream {
    json: bool,
}

impl warden_auth::HttpTransport for EchoingUpstream {
    fn send<'life0, 'async_trait>(
        &'life0 self,
        request: warden_auth::HttpRequest,
    ) -> std::pin::Pin<
        Box<
            dyn Future<Output = Result<warden_auth::HttpResponse, warden_auth::SendFailure>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        // What the header on the wire would read.
        let authorization = request.auth.as_ref().map(|auth| auth.header_value());
        let Some(Ok(authorization)) = authorization else {
            panic!("a REST request carries valid credentials: {request:?}");
        };
        let echoed = format!("Authorization: {}", authorization.to_str().unwrap());
        let (status, body) = if self.json {
            let message = format!("Bad request: {echoed}");
            (
                400,
                serde_json::json!({"error": {"code": "BadRequest", "message": message}})
                    .to_string(),
            )
        } else {
            (502, format!("<html><pre>{echoed}</pre></html>"))
        };
        Box::pin(async move {
            Ok(warden_auth::HttpResponse {
                status,
                headers: vec![("content-type".into(), "text/html".into())],
                body: body.into_bytes(),
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_echoing_the_request_in_an_html_page_never_hands_the_token_to_a_guest() {
    echoing_upstream(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_echoing_the_request_in_a_json_error_never_hands_the_token_to_a_guest() {
    echoing_upstream(true).await
}

async fn echoing_upstream(json: bool) {
    use warden_exchange::SessionConfig;
    let stage = Stage::new(RuntimeLimits::default()).await;
    let probe = stage.load("tests/guests", "probe");
    let policy = probe_policy(probe.sha256(), PROBE_BUDGETS, &[]);
    let origin = stage.emu.dir.path().join("policy.toml");
    let settings = settings(&secret_env(&stage.emu), &Default::default()).unwrap();
    let provider = provider(&settings).unwrap();
    let mut config =
        SessionConfig::for_settings(&settings, Some(&stage.emu.exosim.exchange_url())).unwrap();
    config.base_delay = Duration::from_millis(10);
    config.max_delay = Duration::from_millis(50);
    let echoing: Arc<dyn CmdletRunner> = Arc::new(
        ExchangeSession::new(config, provider.clone(), Arc::new(EchoingUpstream { json })).unwrap(),
    );
    let broker = stage.broker(&policy, &origin, &echoing, Duration::from_secs(30));
    let report = stage
        .plugin(&probe, &broker, &PROBE_CALL, &[PROBE_STATIC])
        .await;
    let out = output_json(&report);
    assert_eq!(out["error"]["kind"], "remote", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Bearer [redacted]")),
        "the upstream echoed the header, and it was cut out: {out}"
    );
    // The token this session sent, which the upstream echoed, is a canary too.
    let token = provider.get_token(EXCHANGE_SCOPE).await.unwrap();
    let canaries = Canaries::new(&stage.emu, &[token.expose()]);
    canaries.assert_absent_text("the remote error", &out.to_string());
    stage.check_audit();
}
