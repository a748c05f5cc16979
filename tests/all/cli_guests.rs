//! The guest subcommands end to end through the `warden` binary: `run`, `script`, `eval` and
//! `plugin inspect`, their output formats and exit statuses. Bad guest files and scripts are in
//! `bad_input.rs`.

use crate::support::*;
use serde_json::Value;

struct Cli {
    emu: Emulator,
    env: Env,
}

impl Cli {
    async fn start() -> Self {
        let emu = Emulator::start().await;
        let audit = emu.dir.path().join("audit.jsonl").display().to_string();
        let key = emu.dir.path().join("audit.key").display().to_string();
        let secret = emu.app_str(0, "client_secret");
        let env = with(
            emu.env_for(0),
            &[
                ("AZURE_CLIENT_SECRET", &secret),
                ("WARDEN_AUDIT", &audit),
                ("WARDEN_AUDIT_KEY", &key),
                (
                    "WARDEN_CACHE_DIR",
                    &emu.dir.path().join("cache").display().to_string(),
                ),
            ],
        );
        Self { emu, env }
    }

    /// A policy granting the plugin at `wasm` the role `reader` (Get-Mailbox, ResultSize ≤ 5).
    fn policy_for(&self, wasm: &std::path::Path, name: &str) -> String {
        let sha = warden_policy::sha256_hex(&std::fs::read(wasm).unwrap());
        let path = self.emu.dir.path().join(format!("{name}-policy.toml"));
        std::fs::write(
            &path,
            format!(
                "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 5\noutput = [\"DisplayName\", \"PrimarySmtpAddress\"]\n\n[[grant]]\nid = \"{name}\"\nplugin = \"{name}\"\nsha256 = \"{sha}\"\nroles = [\"reader\"]\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_run_prints_a_plugins_output_and_exits_by_outcome() {
    let cli = Cli::start().await;
    let probe = guest("tests/guests", "probe");
    let probe_str = probe.display().to_string();
    let info = warden(
        &["plugin", "inspect", &probe_str, "--output", "json"],
        &cli.env,
    )
    .await;
    let name = serde_json::from_slice::<Value>(&info.stdout).unwrap()["plugin"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let policy = cli.policy_for(&probe, &name);

    let out = warden(
        &[
            "run",
            &probe_str,
            "--policy",
            &policy,
            "--output",
            "json",
            "--",
            "invoke",
            "Get-Mailbox",
            r#"{"ResultSize":2}"#,
        ],
        &cli.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(value["ok"].as_array().map(Vec::len), Some(2), "{value}");
    assert!(
        stderr.contains("completed"),
        "the summary names the outcome: {stderr}"
    );

    // The guest's own error: exit 1, its message on stderr.
    let out = warden(
        &[
            "run",
            &probe_str,
            "--policy",
            &policy,
            "--",
            "fail",
            "no such mailbox",
        ],
        &cli.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("no such mailbox"));

    // Stopped at a limit: exit 4.
    let tight = std::fs::read_to_string(&policy).unwrap() + "[grant.budgets]\ncpu_secs = 1\n";
    std::fs::write(&policy, tight).unwrap();
    let out = warden(
        &["run", &probe_str, "--policy", &policy, "--", "spin"],
        &cli.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    assert!(text(&out).1.contains("CPU limit"), "{}", text(&out).1);

    // Another plugin under this policy: refused (exit 3), naming its hash to pin.
    let other = guest("plugins", "mailbox-report");
    let out = warden(
        &["run", &other.display().to_string(), "--policy", &policy],
        &cli.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    let sha = warden_policy::sha256_hex(&std::fs::read(&other).unwrap());
    assert!(text(&out).1.contains("default-deny"), "{}", text(&out).1);
    assert!(
        text(&out).1.contains(&sha),
        "the refusal names the hash to pin: {}",
        text(&out).1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_and_script_print_table_json_or_csv() {
    let cli = Cli::start().await;
    let policy = repo_root()
        .join("scripts/policy.toml")
        .display()
        .to_string();
    let one_liner = r#"exo::invoke("Get-Mailbox", #{ResultSize: 10}).len()"#;
    let out = warden(
        &["eval", one_liner, "--policy", &policy, "--output", "json"],
        &cli.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0.trim(), "10");

    let three = r#"exo::invoke("Get-Mailbox", #{ResultSize: 3}).map(|m| m.PrimarySmtpAddress)"#;
    let out = warden(
        &["eval", three, "--policy", &policy, "--output", "json"],
        &cli.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let addresses: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(addresses.as_array().map(Vec::len), Some(3), "{addresses}");

    // A one-liner nobody pinned gets nothing where no ad hoc grant admits it (scripts/policy.toml
    // has one for the operator: cut here), and the refusal says what to pin.
    let pinned_only = cli.emu.dir.path().join("pinned-only.toml");
    let full = std::fs::read_to_string(&policy).unwrap();
    let cut = full
        .find("# Ad hoc one-liners:")
        .expect("the ad hoc grant's comment");
    std::fs::write(&pinned_only, &full[..cut]).unwrap();
    let pinned_only = pinned_only.display().to_string();
    let out = warden(
        &[
            "eval",
            "exo::invoke(\"Get-Mailbox\")",
            "--policy",
            &pinned_only,
        ],
        &cli.env,
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let pin = warden_policy::Principal::inline_script("exo::invoke(\"Get-Mailbox\")")
        .sha256()
        .to_owned();
    assert!(text(&out).1.contains(&pin), "{}", text(&out).1);

    let script = repo_root()
        .join("scripts/largest-mailboxes.rhai")
        .display()
        .to_string();
    let out = warden(
        &[
            "script", &script, "--policy", &policy, "--output", "csv", "--quiet",
        ],
        &cli.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // Rhai object maps keep their keys sorted.
    assert_eq!(lines[0], "Items,Mailbox,Size", "{stdout}");
    assert_eq!(lines.len(), 11, "{stdout}");
    assert!(stderr.is_empty(), "--quiet: {stderr}");

    let out = warden(&["script", &script, "--policy", &policy], &cli.env).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("Mailbox") && stdout.contains('│'),
        "a table: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_inspect_shows_identity_needs_and_the_grant() {
    let cli = Cli::start().await;
    let plugin = guest("plugins", "mailbox-report").display().to_string();
    let policy = repo_root()
        .join("plugins/mailbox-report/policy.toml")
        .display()
        .to_string();
    let out = warden(
        &[
            "plugin", "inspect", &plugin, "--policy", &policy, "--output", "json",
        ],
        &cli.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["plugin"]["name"], "mailbox-report");
    assert_eq!(value["plugin"]["wit_package"], "warden:plugin@0.1.0");
    assert_eq!(
        value["plugin"]["declared"]["Get-MailboxStatistics"],
        serde_json::json!(["Identity"])
    );
    // The committed policy is unpinned (zeros), so it grants this build nothing.
    assert_eq!(value["policy"]["granted"], false, "{value}");
    let pinned = cli.emu.dir.path().join("pinned.toml");
    std::fs::write(
        &pinned,
        std::fs::read_to_string(&policy).unwrap().replace(
            "0000000000000000000000000000000000000000000000000000000000000000",
            value["plugin"]["sha256"].as_str().unwrap(),
        ),
    )
    .unwrap();
    let out = warden(
        &[
            "plugin",
            "inspect",
            &plugin,
            "--policy",
            &pinned.display().to_string(),
        ],
        &cli.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("granted by   grant mailbox-report"),
        "{stdout}"
    );
    assert!(stdout.contains("Get-MailboxStatistics"), "{stdout}");
}
