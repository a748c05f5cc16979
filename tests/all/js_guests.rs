//! JavaScript guests (issue 18): components built from `sdk/js` with the pinned
//! componentize-js (`sdk/js/package-lock.json`, installed by tests/peers/setup.sh), run through
//! the real `warden` binary against exosim. The JS port of `mailbox-report` gives the Rust
//! plugin's output byte for byte over both transports; a JS canary guest's memory, output and
//! log hold no secret or token (the canary suite's stage); a hostile JS guest is stopped at
//! its CPU and memory limits and gets a typed error for a refused cmdlet; the `templates/js`
//! scaffold and the benchmark's loop guest build and run.
//!
//! Without the toolchain (`sdk/js/node_modules` missing) the tests say so loudly and pass,
//! unless `WARDEN_REQUIRE_GUEST_TOOLCHAINS` is set (CI sets it): then they fail.

use crate::canaries::Stage;
use crate::guest_toolchains::*;
use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;
use warden_runtime::{RunOutcome, RuntimeLimits};

/// The componentize-js version `sdk/js/package.json` pins.
const COMPONENTIZE_JS: &str = "0.23.0";

fn sdk_js() -> PathBuf {
    repo_root().join("sdk/js")
}

/// True when the pinned toolchain is installed; else [`toolchain_unavailable`].
fn toolchain_ready(test: &str) -> bool {
    let package = sdk_js().join("node_modules/@bytecodealliance/componentize-js/package.json");
    let problem = match std::fs::read_to_string(&package) {
        Err(_) => format!("{} is missing", package.display()),
        Ok(text) => {
            let version = serde_json::from_str::<Value>(&text).unwrap()["version"].clone();
            if version == COMPONENTIZE_JS {
                return true;
            }
            format!("componentize-js is {version}, not the pinned {COMPONENTIZE_JS}")
        }
    };
    toolchain_unavailable(
        test,
        &format!(
            "the JavaScript guest toolchain is not installed ({problem}); run `bash tests/peers/setup.sh`"
        ),
    );
    false
}

/// Builds a JS guest once per test process with `sdk/js/build.mjs` (the build a plugin author
/// runs) and returns its component. `entry` and `manifest` are relative to the repository.
fn js_guest(entry: &str, manifest: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(entry) {
        return path.clone();
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("js-guests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = Path::new(entry).file_stem().unwrap().to_string_lossy();
    let out = out_dir.join(format!("{}-{stem}.wasm", built.len()));
    build_js(
        &repo_root(),
        &repo_root().join(entry),
        &repo_root().join(manifest),
        &out,
    );
    built.insert(entry.to_owned(), out.clone());
    out
}

fn build_js(cwd: &Path, entry: &Path, manifest: &Path, out: &Path) {
    let output = std::process::Command::new("node")
        .current_dir(cwd)
        .arg(sdk_js().join("build.mjs"))
        .arg(entry)
        .arg("--manifest")
        .arg(manifest)
        .arg("-o")
        .arg(out)
        // This warden's `plugin embed-manifest`, when it has the command.
        .args(["--warden", env!("CARGO_BIN_EXE_warden")])
        .output()
        .expect("node runs (tests/run.sh needs it)");
    assert!(
        output.status.success(),
        "building {} failed:\n{}",
        entry.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The operator's environment over `transport`, with one compiled-code cache for every test
/// here: a 12 MB interpreter component is compiled once, not once per run.
fn js_env(emu: &Emulator, transport: Transport) -> Env {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("js-guests-cache");
    let mut env = operator_env(emu);
    env.retain(|(k, _)| k != "WARDEN_CACHE_DIR");
    let name = match transport {
        Transport::Rest => "rest",
        Transport::Rps => "rps",
    };
    with(
        env,
        &[
            ("WARDEN_CACHE_DIR", &cache.display().to_string()),
            ("WARDEN_EXCHANGE_TRANSPORT", name),
        ],
    )
}

/// `warden` with room for the first compile of an interpreter component on a busy machine
/// (the shared helper allows 60 s).
async fn warden_slow(args: &[&str], env: &[(String, String)]) -> Output {
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
    tokio::time::timeout(Duration::from_secs(900), command.output())
        .await
        .expect("warden finishes within 15 minutes")
        .expect("warden runs")
}

/// A committed policy with its unpinned grant pinned to `wasm`, written beside the emulator.
fn pinned_policy_js(emu: &Emulator, policy: &Path, wasm: &Path) -> String {
    let name = wasm.file_stem().unwrap().to_string_lossy();
    pinned_policy(emu, policy, wasm, &name)
}

/// A policy granting the plugin `name` (`wasm`) Get-Mailbox (ResultSize ≤ 5, two properties)
/// under these budgets, and nothing else. Give JS guests `wall_clock_secs = 600`: a run's wall
/// clock includes compiling the component on its first run (minutes for StarlingMonkey in a
/// debug warden on a busy machine).
fn reader_policy(emu: &Emulator, name: &str, wasm: &Path, budgets: &str) -> String {
    let sha = warden_policy::sha256_hex(&std::fs::read(wasm).unwrap());
    let path = emu.dir.path().join(format!("{name}-policy.toml"));
    std::fs::write(
        &path,
        format!(
            "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 5\noutput = [\"DisplayName\", \"PrimarySmtpAddress\"]\n\n[[grant]]\nid = \"{name}\"\nplugin = \"{name}\"\nsha256 = \"{sha}\"\nroles = [\"reader\"]\n[grant.budgets]\n{budgets}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn js_mailbox_report() -> PathBuf {
    js_guest(
        "plugins/mailbox-report-js/src/plugin.js",
        "plugins/mailbox-report-js/manifest.json",
    )
}

fn js_hostile() -> PathBuf {
    js_guest(
        "tests/guests/js-hostile/hostile.js",
        "tests/guests/js-hostile/manifest.json",
    )
}

// The port and the Rust plugin through the CLI, same tenant, same roles and budgets: JSON,
// CSV and a limited report, stdout compared byte for byte.
over_both_transports!(js_mailbox_report_prints_what_the_rust_plugin_prints);

async fn js_mailbox_report_prints_what_the_rust_plugin_prints(transport: Transport) {
    if !toolchain_ready("js_mailbox_report_prints_what_the_rust_plugin_prints") {
        return;
    }
    let js = js_mailbox_report();
    let rust = guest("plugins", "mailbox-report");
    let emu = Emulator::start().await;
    let env = js_env(&emu, transport);
    let js_policy = pinned_policy_js(
        &emu,
        &repo_root().join("plugins/mailbox-report-js/policy.toml"),
        &js,
    );
    let rust_policy = pinned_policy_js(
        &emu,
        &repo_root().join("plugins/mailbox-report/policy.toml"),
        &rust,
    );
    for args in [
        &[][..],
        &["--format", "csv"],
        &["--format=csv", "--limit", "3"],
    ] {
        let mut outputs = Vec::new();
        for (wasm, policy) in [(&js, &js_policy), (&rust, &rust_policy)] {
            let wasm = wasm.display().to_string();
            let mut argv = vec!["run", &wasm, "--policy", policy, "--output", "json", "--"];
            argv.extend_from_slice(args);
            let out = warden_slow(&argv, &env).await;
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{transport:?} {args:?}: {stderr}");
            outputs.push(stdout);
        }
        assert_eq!(
            outputs[0], outputs[1],
            "{transport:?} {args:?}: the JS port prints what the Rust plugin prints"
        );
        let report = &outputs[0];
        let rows = if args.is_empty() { 25 } else { 3 };
        assert!(
            report.matches("contoso.onmicrosoft.com").count() >= rows,
            "{transport:?} {args:?}: a whole report: {report}"
        );
        assert!(report.contains("bytes)"), "sizes are reported: {report}");
    }
    // Refusals word for word too: an unknown option, a bad value.
    for args in [
        &["--colour", "red"][..],
        &["--format", "xml"],
        &["--limit", "0"],
    ] {
        let mut errors = Vec::new();
        for (wasm, policy) in [(&js, &js_policy), (&rust, &rust_policy)] {
            let wasm = wasm.display().to_string();
            let mut argv = vec!["run", &wasm, "--policy", policy, "--output", "json", "--"];
            argv.extend_from_slice(args);
            let out = warden_slow(&argv, &env).await;
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out).1);
            // The guest's message is the `error:` line on stderr (the summary names the run).
            let (stdout, stderr) = text(&out);
            let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(error.len(), 1, "{args:?}: {stderr}");
            errors.push(format!("{stdout}{}", error[0]));
        }
        assert_eq!(errors[0], errors[1], "{args:?}: the same refusal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_hostile_guest_is_stopped_at_its_limits_and_refused_by_the_policy() {
    if !toolchain_ready("js_hostile_guest_is_stopped_at_its_limits_and_refused_by_the_policy") {
        return;
    }
    let wasm = js_hostile();
    let emu = Emulator::start().await;
    let env = js_env(&emu, Transport::Rest);
    let policy = reader_policy(
        &emu,
        "js-hostile",
        &wasm,
        "cpu_secs = 2\nmemory_mib = 64\nwall_clock_secs = 600",
    );
    let wasm = wasm.display().to_string();
    let run = |mode: &'static str| {
        let (wasm, policy, env) = (wasm.clone(), policy.clone(), env.clone());
        async move {
            warden_slow(
                &[
                    "run", &wasm, "--policy", &policy, "--output", "json", "--", mode,
                ],
                &env,
            )
            .await
        }
    };

    // A refused cmdlet: a typed error in JS (kind, rule), and nothing reaches Exchange.
    let out = run("refused").await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let ok: Value = serde_json::from_str(&stdout).unwrap();
    let value = &ok;
    assert_eq!(ok["refused"], true, "{value}");
    assert_eq!(ok["error"]["kind"], "denied", "{value}");
    assert_eq!(ok["error"]["rule"], "default-deny", "{value}");
    assert_eq!(ok["isTransient"], false, "{value}");
    assert!(
        ok["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("denied by default-deny: ")),
        "{value}"
    );
    assert_eq!(emu.requests_for("Remove-Mailbox"), 0);

    // An endless loop: stopped at the CPU limit (exit 4).
    let out = run("spin").await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    assert!(text(&out).1.contains("CPU limit"), "{}", text(&out).1);

    // Allocating without end: stopped at the memory limit, not by the machine.
    let out = run("grow").await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    assert!(
        text(&out).1.contains("memory limit of 67108864 bytes"),
        "{}",
        text(&out).1
    );
}

/// The canary suite's stage (secret and tokens known, guest memory handed over): the JS guest
/// reads mailboxes, then tries the environment, the network and every global; nothing it
/// received, logged or holds in its linear memory is a canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_canary_guest_sees_no_token_or_secret() {
    if !toolchain_ready("js_canary_guest_sees_no_token_or_secret") {
        return;
    }
    let wasm = js_guest(
        "tests/guests/js-canary/canary.js",
        "tests/guests/js-canary/manifest.json",
    );
    let stage = Stage::new(RuntimeLimits::default()).await;
    let plugin = stage.plugins.load(&wasm).unwrap();
    let policy = format!(
        "version = 1\n{}\n[[grant]]\nid = \"js-canary\"\nplugin = \"js-canary\"\nsha256 = \"{}\"\nroles = [\"reader\"]\n",
        crate::guests::ROLES,
        plugin.sha256()
    );
    let origin = stage.emu.dir.path().join("js-canary-policy.toml");
    let broker = stage.broker(
        &policy,
        &origin,
        &stage.secret_session,
        Duration::from_secs(30),
    );
    // Its static text is in its memory (a positive control for the scan).
    let report = stage
        .plugin(&plugin, &broker, &[], &[b"typeof fetch", b"process.env"])
        .await;
    let RunOutcome::Completed { .. } = &report.outcome else {
        panic!("the canary completes: {:?}", report.outcome);
    };
    let out = crate::guests::output_json(&report);
    assert_eq!(out["mailboxes"].as_array().map(Vec::len), Some(2), "{out}");
    let found = out["found"].to_string();
    // No environment object of any runtime; fetch is declared by the engine but has no backend.
    for absent in [
        "process.env: undefined",
        "Deno.env: undefined",
        "require: undefined",
    ] {
        assert!(found.contains(absent), "{absent}: {found}");
    }
    assert!(found.contains("globals: "), "{found}");
    // Calling fetch traps the engine: the run fails, and its memory is scanned all the same.
    let report = stage.plugin(&plugin, &broker, &["fetch"], &[]).await;
    assert_eq!(report.outcome.status(), "stopped", "{:?}", report.outcome);
    assert!(
        format!("{:?}", report.outcome).contains("unreachable"),
        "{:?}",
        report.outcome
    );
    stage.check_audit();
}

/// `templates/js` copied as `warden plugin new --lang js NAME` will copy it (`{{name}}` and
/// `{{name_snake}}` replaced, in contents and file names), next to the SDK as at the root of a
/// checkout; then its README's build command and run command, verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_template_builds_and_runs_with_its_readme_commands() {
    if !toolchain_ready("js_template_builds_and_runs_with_its_readme_commands") {
        return;
    }
    let name = "mailbox-lister";
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo_root().join("sdk"), root.path().join("sdk")).unwrap();
    let dir = root.path().join(name);
    scaffold(&repo_root().join("templates/js"), &dir, name);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("\n```").next().unwrap().trim())
        .collect();
    assert_eq!(commands.len(), 2, "one build and one run command: {readme}");
    assert!(!readme.contains("{{"), "every placeholder is replaced");

    let emu = Emulator::start().await;
    let warden_dir = Path::new(env!("CARGO_BIN_EXE_warden")).parent().unwrap();
    let path = format!(
        "{}:{}",
        warden_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in &commands {
        let mut shell = tokio::process::Command::new("bash");
        shell
            .args(["-euo", "pipefail", "-c", command])
            .current_dir(&dir)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", "/nonexistent");
        for (k, v) in js_env(&emu, Transport::Rest) {
            shell.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(900), shell.output())
            .await
            .expect("the command finishes")
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "`{command}`:\n{stdout}\n{stderr}");
        outputs.push((stdout, stderr));
    }
    let (stdout, stderr) = &outputs[1];
    assert_eq!(
        stdout.matches("@contoso.onmicrosoft.com").count(),
        5,
        "{stdout}"
    );
    assert!(stderr.contains("listed 5 mailboxes"), "{stderr}");
    assert!(stderr.contains("completed"), "{stderr}");

    // The component imports nothing warden refuses, and declares what it calls.
    let info = warden(
        &[
            "plugin",
            "inspect",
            &dir.join(format!("{name}.wasm")).display().to_string(),
            "--output",
            "json",
        ],
        &[],
    )
    .await;
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    let plugin = &info["plugin"];
    assert_eq!(plugin["name"], name, "{info}");
    assert!(plugin.to_string().contains("Get-Mailbox"), "{info}");
    for import in plugin["imports"].as_array().unwrap() {
        let import = import.as_str().unwrap();
        assert!(
            !import.starts_with("wasi:http") && !import.starts_with("wasi:sockets"),
            "{import}"
        );
    }
}

/// The benchmark's JS guest makes exactly the calls it is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_loop_guest_calls_get_mailbox_count_times() {
    if !toolchain_ready("js_loop_guest_calls_get_mailbox_count_times") {
        return;
    }
    let wasm = js_guest(
        "bench/guests/js-loop/loop.js",
        "bench/guests/js-loop/manifest.json",
    );
    let emu = Emulator::start().await;
    let env = js_env(&emu, Transport::Rest);
    let policy = reader_policy(&emu, "js-loop", &wasm, "calls = 100\nwall_clock_secs = 600");
    let out = warden_slow(&strs(&loop_guest_args(&wasm, &policy, 7)), &env).await;
    assert_loop_guest_made_its_calls(&out, &emu, 7);
}
