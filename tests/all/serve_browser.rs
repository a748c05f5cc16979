//! `warden serve --demo` in a real browser: Debian's Chromium driven by the playwright-core that
//! tests/browser/package-lock.json pins (tests/browser/serve_flow.mjs holds the steps). The
//! screenshots of every step stay in `target/browser-artifacts/` for a person to look at.
//! Without Chromium or the installed driver the test says so and passes, unless
//! `WARDEN_REQUIRE_BROWSER` is set (CI sets it): then it fails.

use crate::support::repo_root;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("WARDEN_CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// Where the driver and browser are; `None` (with the reason printed) when this machine lacks one.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let driver = repo_root().join("tests/browser/node_modules/playwright-core/package.json");
    let missing = match (chromium(), driver.is_file()) {
        (Some(chromium), true) => return Some((chromium, driver)),
        (None, _) => "Chromium (/usr/bin/chromium; apt-get install chromium)",
        (_, false) => "playwright-core (bash tests/browser/setup.sh)",
    };
    if std::env::var_os("WARDEN_REQUIRE_BROWSER").is_some() {
        panic!("the browser test needs {missing} (WARDEN_REQUIRE_BROWSER is set)");
    }
    eprintln!(
        "SKIPPED: the browser test needs {missing}; set WARDEN_REQUIRE_BROWSER=1 to fail instead"
    );
    None
}

/// `warden serve --demo` on a free loopback port, killed when dropped.
struct Served {
    child: tokio::process::Child,
    ready_file: PathBuf,
    _state: tempfile::TempDir,
}

impl Served {
    async fn start() -> Self {
        let state = tempfile::tempdir().unwrap();
        let ready_file = state.path().join("ready.json");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["serve", "--demo", "--bind", "127.0.0.1:0", "--ready-file"])
            .arg(&ready_file)
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("warden serve starts");
        let started = Instant::now();
        while !ready_file.is_file() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "warden serve --demo wrote no ready file in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Served {
            child,
            ready_file,
            _state: state,
        }
    }
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("browser-artifacts");
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_runs_tasks_and_approver_approves_in_chromium() {
    let Some((chromium, _driver)) = browser_tools() else {
        return;
    };
    let mut served = Served::start().await;
    let artifacts = artifacts_dir();
    let script: &Path = &repo_root().join("tests/browser/serve_flow.mjs");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(repo_root().join("tests/browser"))
        .env("WARDEN_READY_FILE", &served.ready_file)
        .env("WARDEN_BROWSER_ARTIFACTS", &artifacts)
        .env("WARDEN_CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let _ = served.child.start_kill();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "the browser flow failed (screenshots in {}):\n{stdout}\n{stderr}",
        artifacts.display()
    );
    assert!(
        stdout.contains("browser flow: passed"),
        "{stdout}\n{stderr}"
    );
    let shots = std::fs::read_dir(&artifacts).unwrap().count();
    assert!(
        shots >= 8,
        "only {shots} screenshots in {}",
        artifacts.display()
    );
}
