//! Python guests (issue 18): plugins built by componentize-py 0.25.1 (pinned in
//! sdk/python/requirements.txt, installed by sdk/python/setup.sh) with `warden_sdk`
//! (sdk/python) and `sdk/python/build.py`, run through the real `warden` binary against exosim.
//!
//! - the Python port of mailbox-report prints exactly what the Rust plugin prints, under the
//!   same policy, over REST and RPS, with the same calls;
//! - `warden plugin embed-manifest` writes what `plugin inspect` reads, and refuses what the host
//!   would refuse;
//! - a component importing sockets is refused naming the build flag of each toolchain;
//! - a hostile Python guest is stopped at the CPU and memory budgets and gets typed errors;
//! - a Python guest cannot find the secret or the token: not in its environment, files, forged
//!   calls, its own objects, or (read by the host after the run) its linear memory; nor does the
//!   build bake the builder's environment into the component;
//! - the `templates/python` scaffold builds and runs with its own policy (copied here with the
//!   convention's substitution; `warden plugin new` does the same copy);
//! - the benchmark's loop guest runs.
//!
//! Without the toolchain (no python3 or no PyPI) these tests say so loudly and pass, unless
//! `WARDEN_REQUIRE_GUEST_TOOLCHAINS` is set (CI sets it): then they fail.

use crate::guest_toolchains::*;
use crate::support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_policy::Policy;
use warden_runtime::{
    GuestMemory, LogLevel, LogSource, PluginHost, RunObserver, RunOutcome, RunRequest,
    RuntimeLimits,
};

/// Set in the environment of every Python build: the component must not carry it.
const BUILD_ENV_CANARY: &str = "CANARY~python-build-environment~5b1f0c";
/// The client secret exosim accepts in the canary test.
const CLIENT_SECRET: &str = "CANARY~python-guest-client-secret~9e4d2a";

// ---------------------------------------------------------------------------------------------
// The toolchain and the builds
// ---------------------------------------------------------------------------------------------

/// The toolchain's Python (sdk/python/.venv), set up once per test process; `None` when the
/// setup failed and the toolchain is not required (the caller skips, loudly).
fn python_toolchain() -> Option<PathBuf> {
    static SETUP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let setup = SETUP.get_or_init(|| {
        let sdk = repo_root().join("sdk/python");
        let output = std::process::Command::new("bash")
            .arg(sdk.join("setup.sh"))
            .output()
            .map_err(|e| format!("running sdk/python/setup.sh: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "sdk/python/setup.sh failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(sdk.join(".venv/bin/python"))
    });
    match setup {
        Ok(python) => Some(python.clone()),
        Err(e) => {
            toolchain_unavailable(
                "this Python guest test",
                &format!("the Python guest toolchain could not be set up: {e}"),
            );
            None
        }
    }
}

/// What a build depends on, hashed: the guest's files, the SDK, the build script, the WIT and
/// the pinned toolchain.
fn build_inputs_hash(dir: &Path) -> String {
    let root = repo_root();
    let mut files: Vec<PathBuf> = Vec::new();
    for d in [dir.to_path_buf(), root.join("sdk/python/warden_sdk")] {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.extend([
        root.join("sdk/python/build.py"),
        root.join("sdk/python/requirements.txt"),
        root.join("wit/plugin.wit"),
    ]);
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.file_name().unwrap().as_encoded_bytes());
        hash.update(std::fs::read(&file).unwrap());
    }
    hash.update(
        std::fs::read(env!("CARGO_BIN_EXE_warden"))
            .unwrap()
            .len()
            .to_le_bytes(),
    );
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where built Python guests are kept between test runs (each build has its own sha256, so
/// rebuilding unchanged sources would also miss the compiled-code cache).
fn python_builds_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-guests")
}

fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-guests-cache")
}

/// Compiles `wasm` into the shared cache, as the CLI would on its first run: an interpreter
/// component takes a minute or more to compile on a busy machine, longer than a CLI test waits
/// (and its first run's wall clock includes the compile).
fn warm_cache(wasm: &Path) {
    let host = PluginHost::builder(RuntimeLimits::default())
        .cache_dir(Some(shared_cache_dir()))
        .build()
        .unwrap();
    host.load(wasm).unwrap();
}

/// The compiled-code cache the CLI runs of this module share: each component compiles once.
fn shared_cache_env(env: Env) -> Env {
    let cache = shared_cache_dir();
    let mut env: Env = env
        .into_iter()
        .filter(|(k, _)| k != "WARDEN_CACHE_DIR")
        .collect();
    env.push(("WARDEN_CACHE_DIR".into(), cache.display().to_string()));
    // The key the in-process warm-up uses (`<dir>.key`): the CLI's default is beside its
    // audit key, and an entry tagged under another key is compiled again.
    let key = cache.with_file_name("python-guests-cache.key");
    env.retain(|(k, _)| k != "WARDEN_CACHE_KEY");
    env.push(("WARDEN_CACHE_KEY".into(), key.display().to_string()));
    env
}

/// Builds the Python plugin in `dir` with `sdk/python/build.py` (componentize-py, then
/// `warden plugin embed-manifest` of this warden), with a canary in the build's environment.
/// Reused while its inputs are unchanged. `extra` are more build.py arguments (they make a
/// fresh build).
fn build_python(python: &Path, dir: &Path, out: &Path, extra: &[&str]) {
    // One build at a time: componentize-py is CPU-heavy, and two tests may want one guest.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if extra.is_empty() && out.is_file() {
        return;
    }
    let partial = out.with_extension("partial.wasm");
    let output = std::process::Command::new(python)
        .arg(repo_root().join("sdk/python/build.py"))
        .arg(dir)
        .arg("-o")
        .arg(&partial)
        .arg("--warden")
        .arg(env!("CARGO_BIN_EXE_warden"))
        .args(extra)
        .env("AZURE_CLIENT_SECRET", BUILD_ENV_CANARY)
        .env("WARDEN_PY_BUILD_CANARY", BUILD_ENV_CANARY)
        .output()
        .expect("build.py runs");
    assert!(
        output.status.success(),
        "building {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, out).unwrap();
}

/// The component of the Python guest in `dir` (relative to the repository), built once.
fn python_guest(python: &Path, dir: &str) -> PathBuf {
    let source = repo_root().join(dir);
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    let builds = python_builds_dir();
    std::fs::create_dir_all(&builds).unwrap();
    let out = builds.join(format!("{name}-{}.wasm", build_inputs_hash(&source)));
    build_python(python, &source, &out, &[]);
    warm_cache(&out);
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        !holds(&bytes, BUILD_ENV_CANARY.as_bytes()),
        "{name}: the build baked its environment into the component"
    );
    out
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn sha256_of(path: &Path) -> String {
    warden_policy::sha256_hex(&std::fs::read(path).unwrap())
}

/// `; N call(s), N write(s), N object(s), N bytes` of a run's summary line.
fn usage_of(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains(" call(s), "))
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    let start = line.find(" call(s), ").unwrap();
    let head = line[..start].rsplit(' ').next().unwrap();
    let tail = &line[start..];
    format!("{head}{}", &tail[..tail.find(" bytes").unwrap()])
}

fn cli_env(emu: &Emulator, transport: Transport) -> Env {
    let env = shared_cache_env(operator_env(emu));
    match transport {
        Transport::Rest => env,
        Transport::Rps => with(env, &[("WARDEN_EXCHANGE_TRANSPORT", "rps")]),
    }
}

// ---------------------------------------------------------------------------------------------
// The port equals the Rust plugin
// ---------------------------------------------------------------------------------------------

over_both_transports!(mailbox_report_py_prints_what_the_rust_plugin_prints);

async fn mailbox_report_py_prints_what_the_rust_plugin_prints(transport: Transport) {
    let Some(python) = python_toolchain() else {
        return;
    };
    let rust_policy_file = repo_root().join("plugins/mailbox-report/policy.toml");
    let py_policy_file = repo_root().join("plugins/mailbox-report-py/policy.toml");
    // The same policy: only the plugin's name (and the comment naming it) differ.
    let same = |text: String| -> String {
        text.lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
            .replace("mailbox-report-py", "mailbox-report")
    };
    assert_eq!(
        same(std::fs::read_to_string(&py_policy_file).unwrap()),
        same(std::fs::read_to_string(&rust_policy_file).unwrap()),
        "the Python port's policy is the Rust plugin's"
    );

    let emu = Emulator::start().await;
    let env = cli_env(&emu, transport);
    let rust = guest("plugins", "mailbox-report");
    let py = python_guest(&python, "plugins/mailbox-report-py");
    let rust_policy = pinned_policy(&emu, &rust_policy_file, &rust, "rust");
    let py_policy = pinned_policy(&emu, &py_policy_file, &py, "py");

    let cases: &[&[&str]] = &[
        &["--output", "json"],
        &["--", "--format", "csv"],
        &["--output", "json", "--", "--limit", "3"],
        &["--", "--format", "csv", "--limit", "2"],
        &["--", "--format", "xml"],
        &["--", "--limit", "0"],
        &["--", "--bogus"],
    ];
    for case in cases {
        let run = |wasm: &Path, policy: &str| {
            let mut args = vec![
                "run".to_owned(),
                wasm.display().to_string(),
                "--policy".to_owned(),
                policy.to_owned(),
            ];
            args.extend(case.iter().map(|a| (*a).to_owned()));
            args
        };
        let rust_args = run(&rust, &rust_policy);
        let py_args = run(&py, &py_policy);
        let rust_out = warden(&strs(&rust_args), &env).await;
        let py_out = warden(&strs(&py_args), &env).await;
        let (rust_stdout, rust_stderr) = text(&rust_out);
        let (py_stdout, py_stderr) = text(&py_out);
        assert_eq!(
            py_out.status.code(),
            rust_out.status.code(),
            "{case:?}: exit status\nrust: {rust_stderr}\npython: {py_stderr}"
        );
        assert_eq!(
            py_out.stdout, rust_out.stdout,
            "{case:?}: output differs\nrust:\n{rust_stdout}\npython:\n{py_stdout}\npython stderr: {py_stderr}"
        );
        if rust_out.status.success() {
            assert!(
                rust_stdout.len() > 100,
                "{case:?}: a real report: {rust_stdout}"
            );
            assert_eq!(
                usage_of(&py_stderr),
                usage_of(&rust_stderr),
                "{case:?}: the same calls, objects and bytes"
            );
        } else {
            // The plugin's own error, word for word.
            let error = |stderr: &str| {
                stderr
                    .lines()
                    .find(|l| l.starts_with("error: "))
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(error(&py_stderr), error(&rust_stderr), "{case:?}");
            assert!(!error(&py_stderr).is_empty(), "{case:?}: {py_stderr}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// embed-manifest and the refusal of network imports (no Python toolchain needed)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_manifest_writes_what_inspect_reads_and_refuses_what_the_host_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let plain = guest("tests/guests", "no-manifest");
    let wasm = dir.path().join("bare.wasm");
    std::fs::copy(&plain, &wasm).unwrap();
    let wasm_str = wasm.display().to_string();
    let manifest = dir.path().join("manifest.json");
    let write = |text: &str| std::fs::write(&manifest, text).unwrap();
    let manifest_str = manifest.display().to_string();
    let env: Env = Vec::new();
    let embed = |out: Option<&str>| {
        let mut args = vec![
            "plugin",
            "embed-manifest",
            wasm_str.as_str(),
            "--manifest",
            manifest_str.as_str(),
        ];
        if let Some(out) = out {
            args.extend(["--output", out]);
        }
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let env = env.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            warden(&args, &env).await
        }
    };

    // The format is in the help.
    let help = run(vec![
        "plugin".into(),
        "embed-manifest".into(),
        "--help".into(),
    ])
    .await;
    let (help, _) = text(&help);
    assert!(
        help.contains("\"cmdlets\"") && help.contains("\"reads\""),
        "{help}"
    );

    // Unknown keys (a misspelt `cmdlets`), a bad name, a bad cmdlet name: refused, the
    // component untouched.
    let before = std::fs::read(&wasm).unwrap();
    for (bad, says) in [
        (
            r#"{"name": "x", "cmdlet": {"Get-Mailbox": []}}"#,
            "unknown field `cmdlet`",
        ),
        (r#"{"name": "bad name!"}"#, "is not 1 to 64 ASCII letters"),
        (
            r#"{"name": "x", "cmdlets": {"Get-Mailbox; rm": []}}"#,
            "not valid",
        ),
        ("not json", "not a valid manifest"),
    ] {
        write(bad);
        let out = run(embed(None)).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert!(stderr.contains(says), "{bad}: {stderr}");
        assert!(stderr.contains("fix:"), "{bad}: {stderr}");
        assert_eq!(std::fs::read(&wasm).unwrap(), before, "{bad}: untouched");
    }

    write(
        r#"{"name": "embedded", "version": "1.2.3", "description": "d",
            "cmdlets": {"Get-Mailbox": ["ResultSize"]},
            "reads": {"Get-Mailbox": ["DisplayName"]}}"#,
    );
    let mode = |path: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    std::fs::set_permissions(&wasm, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = run(embed(None)).await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(mode(&wasm), 0o644, "the component keeps its permissions");
    let info = run(vec![
        "plugin".into(),
        "inspect".into(),
        wasm_str.clone(),
        "--output".into(),
        "json".into(),
    ])
    .await;
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    let plugin = &info["plugin"];
    assert_eq!(plugin["name"], "embedded");
    assert_eq!(plugin["version"], "1.2.3");
    assert_eq!(plugin["declared"]["Get-Mailbox"][0], "ResultSize");
    assert_eq!(plugin["reads"]["Get-Mailbox"][0], "DisplayName");
    assert!(text(&out).0.contains(plugin["sha256"].as_str().unwrap()));

    // A component already carrying a manifest: refused (the host reads only one).
    let again = dir.path().join("again.wasm").display().to_string();
    let out = run(embed(Some(&again))).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("more than one `warden:manifest`"),
        "{}",
        text(&out).1
    );
    assert!(!Path::new(&again).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_sockets_is_refused_naming_each_toolchains_build_flag() {
    let emu = Emulator::start().await;
    let sockets = guest("tests/guests", "sockets");
    let policy = pinned_policy_for(&emu, &sockets);
    let out = warden(
        &["run", &sockets.display().to_string(), "--policy", &policy],
        &operator_env(&emu),
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wasi:sockets/"), "{stderr}");
    for flag in ["--stub-wasi", "disableFeatures", "fetch-event", "cargo:"] {
        assert!(stderr.contains(flag), "names {flag}: {stderr}");
    }
}

/// A policy granting the component at `wasm` (by its own name) Get-Mailbox.
fn pinned_policy_for(emu: &Emulator, wasm: &Path) -> String {
    let info = PluginHost::inspect("guest", &std::fs::read(wasm).unwrap()).unwrap();
    let path = emu.dir.path().join(format!("{}-policy.toml", info.name));
    std::fs::write(
        &path,
        format!(
            "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"g\"\nplugin = \"{}\"\nsha256 = \"{}\"\nroles = [\"reader\"]\n",
            info.name, info.sha256
        ),
    )
    .unwrap();
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// A hostile Python guest
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_python_guest_is_stopped_at_its_limits_and_gets_typed_errors() {
    let Some(python) = python_toolchain() else {
        return;
    };
    let emu = Emulator::start().await;
    let env = shared_cache_env(operator_env(&emu));
    let wasm = python_guest(&python, "tests/guests/python-hostile");
    let wasm_str = wasm.display().to_string();
    let policy = emu.dir.path().join("hostile-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"hostile\"\nplugin = \"python-hostile\"\nsha256 = \"{}\"\nroles = [\"reader\"]\n[grant.budgets]\ncpu_secs = 2\nmemory_mib = 96\nwall_clock_secs = 600\n",
            sha256_of(&wasm)
        ),
    )
    .unwrap();
    let policy = policy.display().to_string();
    let run = |action: &'static str| {
        let (wasm_str, policy, env) = (wasm_str.clone(), policy.clone(), env.clone());
        async move {
            warden(
                &["run", &wasm_str, "--policy", &policy, "-v", "--", action],
                &env,
            )
            .await
        }
    };

    let out = run("spin").await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    assert!(text(&out).1.contains("CPU limit"), "{}", text(&out).1);

    let out = run("alloc").await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    assert!(
        text(&out).1.contains("memory limit of 100663296 bytes"),
        "{}",
        text(&out).1
    );

    // A refused cmdlet is a typed error in Python (warden_sdk.errors.Denied), and never
    // reaches Exchange.
    let out = run("refused").await;
    assert!(out.status.success(), "{}", text(&out).1);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("Denied") && stdout.contains("denied"),
        "{stdout}"
    );
    assert_eq!(emu.requests_for("Remove-Mailbox"), 0);

    let out = run("invalid").await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("Invalid"), "{}", text(&out).0);
    assert_eq!(emu.requests_for("Get-Mailbox"), 0);

    // print() and an uncaught exception's traceback reach the operator's log; the run fails
    // naming the exception.
    let out = run("print").await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the plugin raised KeyError"), "{stderr}");
    assert!(stderr.contains("python-hostile: printed line"), "{stderr}");
    assert!(stderr.contains("Traceback"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Canaries: a Python guest cannot find the secret or the token
// ---------------------------------------------------------------------------------------------

/// Collects what a run reports and copies the guest memory the host hands over.
#[derive(Debug, Default)]
struct Watch {
    lines: Mutex<Vec<String>>,
    memories: Mutex<Vec<Vec<u8>>>,
}

impl RunObserver for Watch {
    fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        self.lines
            .lock()
            .unwrap()
            .push(format!("{source:?} {level} {message}"));
    }
    fn progress(&self, _done: u64, _total: Option<u64>, _label: &str) {}
    fn guest_memory(&self, memories: &[GuestMemory<'_>]) {
        let mut held = self.memories.lock().unwrap();
        held.extend(memories.iter().map(|m| m.data.to_vec()));
    }
}

/// Each canary in the forms it could leak in: raw, base64, base64url, hex.
fn forms(value: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw".into(), value.as_bytes().to_vec()),
        (
            "base64".into(),
            STANDARD
                .encode(value)
                .trim_end_matches('=')
                .as_bytes()
                .to_vec(),
        ),
        (
            "base64url".into(),
            URL_SAFE_NO_PAD.encode(value).into_bytes(),
        ),
        ("hex".into(), hex.into_bytes()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_guest_cannot_find_the_token_or_the_secret() {
    let Some(python) = python_toolchain() else {
        return;
    };
    let emu = Emulator::start_with(|o| {
        o.tenants.tenants[0].apps[0].secrets[0].value = Some(CLIENT_SECRET.to_owned());
    })
    .await;
    let wasm = python_guest(&python, "tests/guests/python-canary");
    let (runner, tokens) = runner_for(&emu, 0, Transport::Rest);
    // The very token the runner sends (they share the cache).
    let token = tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
    let token = token.expose().to_owned();
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, value) in [
        ("client secret", CLIENT_SECRET),
        ("token", token.as_str()),
        ("token signature", signature.as_str()),
        ("build environment", BUILD_ENV_CANARY),
    ] {
        for (form, bytes) in forms(value) {
            needles.push((format!("{what} ({form})"), bytes));
        }
    }

    let host = PluginHost::builder(RuntimeLimits::default())
        .cache_dir(Some(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-guests-inproc-cache"),
        ))
        .inspect_guest_memory(true)
        .build()
        .unwrap();
    let plugin = host.load(&wasm).unwrap();
    let policy = format!(
        "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 5\n\n[[grant]]\nid = \"canary\"\nplugin = \"python-canary\"\nsha256 = \"{}\"\nroles = [\"reader\"]\n[grant.budgets]\ncpu_secs = 20\nwall_clock_secs = 60\n",
        plugin.sha256()
    );
    let audit_path = emu.dir.path().join("canary-audit.jsonl");
    let broker = Broker::new(
        Arc::new(Policy::parse(&policy, Path::new("canary-policy.toml")).unwrap()),
        runner,
        Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes([3; 32])).unwrap()),
        Duration::from_secs(30),
    );

    let mut first_address = None;
    for action in ["read", "env", "files", "forged", "scan"] {
        let watch = Arc::new(Watch::default());
        let request = RunRequest {
            args: vec![action.to_owned()],
            observer: watch.clone(),
            interrupt: Default::default(),
            delegation: None,
        };
        let report = host.run(&plugin, &broker, request).await.unwrap();
        let received = format!(
            "{}\n{}",
            serde_json::to_string(&report).unwrap(),
            watch.lines.lock().unwrap().join("\n")
        );
        let memories = watch.memories.lock().unwrap();
        assert!(
            !memories.is_empty(),
            "{action}: the guest's memory was read"
        );
        for (what, needle) in &needles {
            assert!(
                !holds(received.as_bytes(), needle),
                "{action}: its results, errors or log hold the {what}"
            );
            for memory in memories.iter() {
                assert!(
                    !holds(memory, needle),
                    "{action}: its memory holds the {what}"
                );
            }
        }
        assert!(
            !received.contains("eyJ"),
            "{action}: something JWT-shaped: {received}"
        );
        let output = match &report.outcome {
            RunOutcome::Completed { output } => match output {
                warden_runtime::GuestOutput::Text(text) => text.clone(),
                other => panic!("{other:?}"),
            },
            // A WASI call of the stubbed build traps: the guest gets nothing either way.
            RunOutcome::Stopped { .. } if action == "files" => String::new(),
            other => panic!("{action}: {other:?}"),
        };
        match action {
            "read" => {
                // The positive control: what the guest was given is in the memory scanned.
                let value: Value = serde_json::from_str(&output).unwrap();
                let address = value[1]["PrimarySmtpAddress"].as_str().unwrap().to_owned();
                assert!(
                    memories.iter().any(|m| holds(m, address.as_bytes())),
                    "the memory scan sees what the guest held"
                );
                first_address = Some(address);
            }
            "env" => assert_eq!(output, "{}", "a Python guest has no environment"),
            "files" => {
                if !output.is_empty() {
                    assert!(!output.contains("ok: "), "{output}");
                }
            }
            "forged" => {
                let value: Value = serde_json::from_str(&output).unwrap();
                for case in ["authorization_parameter", "header_in_name", "token_cmdlet"] {
                    let kind = value[case]["kind"].as_str().unwrap_or_default();
                    assert!(
                        kind == "denied" || kind == "invalid",
                        "{case} was refused: {value}"
                    );
                }
            }
            "scan" => {
                let value: Value = serde_json::from_str(&output).unwrap();
                assert!(value["objects"].as_u64().unwrap() > 1000, "{value}");
                assert_eq!(value["hits"], serde_json::json!([]), "{value}");
            }
            _ => unreachable!(),
        }
    }
    assert!(first_address.is_some());
    let trail = std::fs::read_to_string(&audit_path).unwrap();
    for (what, needle) in &needles {
        assert!(
            !holds(trail.as_bytes(), needle),
            "the audit trail holds the {what}"
        );
    }
    // Only the reads reached Exchange.
    assert_eq!(emu.requests_for("Get-Mailbox"), 1);
}

// ---------------------------------------------------------------------------------------------
// The template and the benchmark's loop guest
// ---------------------------------------------------------------------------------------------

/// Copies `templates/python` into `dest` the way `warden plugin new --lang python NAME` does:
/// `{{name}}` and `{{name_snake}}` replaced in file names and contents.
/// The one command of a README's fenced block that starts with `starts`.
fn readme_command(readme: &str, starts: &str) -> String {
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.trim_start().starts_with(starts))
        .collect();
    assert_eq!(commands.len(), 1, "one `{starts}` command: {readme}");
    commands[0].trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_template_builds_and_runs_with_its_own_policy() {
    let Some(python) = python_toolchain() else {
        return;
    };
    let emu = Emulator::start().await;
    let env = shared_cache_env(operator_env(&emu));
    let dir = emu.dir.path().join("hello-py");
    scaffold(&repo_root().join("templates/python"), &dir, "hello-py");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(!readme.contains("{{"), "{readme}");

    // The README's build command, as written (WARDEN_SDK, and warden as $WARDEN).
    let build = readme_command(&readme, "\"$WARDEN_SDK/.venv/bin/python\"");
    let sdk = repo_root().join("sdk/python");
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&build)
        .current_dir(&dir)
        .env("WARDEN_SDK", &sdk)
        .env("WARDEN", env!("CARGO_BIN_EXE_warden"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{build}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let wasm = dir.join("hello-py.wasm");
    warm_cache(&wasm);
    let policy = std::fs::read_to_string(dir.join("policy.toml")).unwrap();
    assert!(
        policy.contains(&sha256_of(&wasm)),
        "pinned by the build: {policy}"
    );
    let _ = python;

    // The README's run command, as written.
    let run = readme_command(&readme, "warden run ");
    let words: Vec<&str> = run.split_whitespace().skip(1).collect();
    let words: Vec<String> = words
        .iter()
        .map(|w| match *w {
            "hello-py.wasm" => wasm.display().to_string(),
            "policy.toml" => dir.join("policy.toml").display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
    args.splice(2..2, ["--output", "json"]);
    let out = warden(&args, &env).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{run}: {stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value.as_array().map(Vec::len), Some(3), "{value}");
    assert!(value[0]["PrimarySmtpAddress"].is_string(), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_benchmark_loop_makes_its_calls() {
    let Some(python) = python_toolchain() else {
        return;
    };
    let emu = Emulator::start().await;
    let env = shared_cache_env(operator_env(&emu));
    let wasm = python_guest(&python, "bench/guests/python-loop");
    let policy = pinned_policy(
        &emu,
        &repo_root().join("bench/guests/python-loop/policy.toml"),
        &wasm,
        "loop",
    );
    let out = warden(&strs(&loop_guest_args(&wasm, &policy, 25)), &env).await;
    assert_loop_guest_made_its_calls(&out, &emu, 25);
}
