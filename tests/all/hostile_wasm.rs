//! The hostile corpus at the wasm boundary, through the `warden` binary against exosim: a
//! plugin the policy refuses is never compiled or cached, a cache directory others can write
//! is refused, and what a guest logs or fails with is bounded however it shapes it (550,000
//! empty lines, a 40 MB error). The per-run limits (memory summed across instances, instance,
//! memory and table counts, table sizes, handles, random bytes, each stop naming its limit)
//! are driven by hand-written components in host/warden-runtime/tests/component.rs.

use crate::support::*;
use std::path::{Path, PathBuf};

struct Cli {
    emu: Emulator,
    env: Env,
    cache: PathBuf,
    audit: PathBuf,
}

impl Cli {
    async fn start() -> Self {
        let emu = Emulator::start().await;
        let audit = emu.dir.path().join("audit.jsonl");
        let cache = emu.dir.path().join("cache");
        let env = with(
            emu.env_for(0),
            &[
                ("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret")),
                ("WARDEN_AUDIT", &audit.display().to_string()),
                (
                    "WARDEN_AUDIT_KEY",
                    &emu.dir.path().join("state/audit.key").display().to_string(),
                ),
                ("WARDEN_CACHE_DIR", &cache.display().to_string()),
            ],
        );
        Self {
            emu,
            env,
            cache,
            audit,
        }
    }

    /// A policy granting only the plugin at `wasm` (named `name`) a read-only role.
    fn policy_for(&self, wasm: &Path, name: &str) -> String {
        let sha = warden_policy::sha256_hex(&std::fs::read(wasm).unwrap());
        let path = self.emu.dir.path().join(format!("{name}-policy.toml"));
        std::fs::write(
            &path,
            format!(
                "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"{name}\"\nplugin = \"{name}\"\nsha256 = \"{sha}\"\nroles = [\"reader\"]\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    fn compiled(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.cache)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn limits_guest() -> (PathBuf, String) {
    let path = guest("tests/guests", "wasm-limits");
    let text = path.display().to_string();
    (path, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_the_policy_refuses_is_never_compiled_or_cached() {
    let cli = Cli::start().await;
    let (limits, limits_str) = limits_guest();
    let policy = cli.policy_for(&limits, "wasm_limits");
    let probe = guest("tests/guests", "probe").display().to_string();
    let out = warden(
        &["run", &probe, "--policy", &policy, "--", "usage"],
        &cli.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    assert!(
        cli.compiled().is_empty(),
        "a refused plugin was compiled into the cache: {:?}",
        cli.compiled()
    );
    let trail = std::fs::read_to_string(&cli.audit).unwrap();
    assert!(
        trail.contains("\"allowed\":false"),
        "the refusal is in the trail"
    );
    // The granted one is compiled and cached, its key beside the audit key.
    let out = warden(
        &[
            "run",
            &limits_str,
            "--policy",
            &policy,
            "--",
            "empty-logs",
            "1",
        ],
        &cli.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(cli.compiled().len(), 1);
    assert!(cli.emu.dir.path().join("state/cache.key").is_file());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let cli = Cli::start().await;
    let (limits, limits_str) = limits_guest();
    let policy = cli.policy_for(&limits, "wasm_limits");
    std::fs::create_dir_all(&cli.cache).unwrap();
    std::fs::set_permissions(&cli.cache, std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = warden(
        &[
            "run",
            &limits_str,
            "--policy",
            &policy,
            "--",
            "empty-logs",
            "1",
        ],
        &cli.env,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writable by group or others") && stderr.contains("chmod 700"),
        "{stderr}"
    );
    assert!(cli.compiled().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lines_cost_their_framing_and_are_capped() {
    let cli = Cli::start().await;
    let (limits, limits_str) = limits_guest();
    let policy = cli.policy_for(&limits, "wasm_limits");
    for mode in ["empty-lines", "empty-logs"] {
        let out = warden(
            &[
                "run",
                &limits_str,
                "--policy",
                &policy,
                "--",
                mode,
                "550000",
            ],
            &cli.env,
        )
        .await;
        let stderr = text(&out).1;
        assert!(
            out.status.success(),
            "{mode}: {}",
            &stderr[stderr.len().saturating_sub(500)..]
        );
        let lines = stderr.lines().count();
        assert!(
            lines <= warden_runtime::RuntimeLimits::default().max_log_lines + 10,
            "{mode}: {lines} lines, {} bytes on stderr",
            stderr.len()
        );
        assert!(
            stderr.len() < 2 * 1024 * 1024,
            "{mode}: {} bytes",
            stderr.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_megabyte_error_is_cut() {
    let cli = Cli::start().await;
    let (limits, limits_str) = limits_guest();
    let policy = cli.policy_for(&limits, "wasm_limits");
    let out = warden(
        &[
            "run",
            &limits_str,
            "--policy",
            &policy,
            "--quiet",
            "--",
            "big-err",
            "40000000",
        ],
        &cli.env,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.len() < 64 * 1024, "{} bytes on stderr", stderr.len());
    assert!(
        stderr.contains("more bytes cut"),
        "{}",
        &stderr[stderr.len() - 200..]
    );
    let trail = std::fs::metadata(&cli.audit).unwrap().len();
    assert!(trail < 64 * 1024, "{trail} bytes of trail");
}
