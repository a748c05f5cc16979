//! `warden fleet` beyond running: `--dry-run` (reads run, writes are planned and never sent),
//! grants limited to tenants or tags, `fleet status --watch`, and Ctrl-C on a `fleet run`
//! that works itself. Real binary, real Rhai scripts, exosim serving several tenants; the
//! store, exosim's request log and the audit trail are the witnesses.

use crate::fleet::fleet_id;
use crate::support::{Env, text, warden};
use serde_json::Value;
use std::time::Duration;
use warden_store::RunStatus;

/// The fleet tests' lab, its grant given `grant_extra` (say `tenants = ["t0"]`) and room for
/// five writes (a dry run plans them against the grant's `writes` budget).
type Lab = crate::fleet::FleetLab;

async fn lab(tags: &[&[&str]], script: &str, grant_extra: &str) -> Lab {
    Lab::start_granting(tags, script, grant_extra, 5).await
}

impl Lab {
    /// Requests exosim received for `cmdlet`, whatever their answer.
    fn requests(&self, cmdlet: &str) -> Vec<exosim::ExchangeRequestRecord> {
        self.emu
            .exchange_log()
            .into_iter()
            .filter(|record| record.cmdlet.as_deref() == Some(cmdlet))
            .collect()
    }

    fn trail(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    async fn assert_trail_verifies(&self) {
        let out = warden(
            &["audit", "verify", &self.trail().display().to_string()],
            &self.env,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out).1);
    }
}

async fn json_out(args: &[&str], env: &Env) -> Value {
    let out = warden(args, env).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out).1);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Reads, then writes twice; the script catches a refused write and goes on, so a dry run
/// plans both.
const READ_THEN_WRITE: &str = "let m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 2});\n\
    let refused = [];\n\
    for i in 0..2 {\n\
      try {\n\
        exo::invoke(\"Set-Mailbox\", #{Identity: m[i].PrimarySmtpAddress, DisplayName: `Dry ${i}`});\n\
      } catch (e) { refused.push(`${e.kind}:${e.rule}`); }\n\
    }\n\
    `${m[0].PrimarySmtpAddress} ${refused}`\n";

/// A dry-run fleet over three tenants: every tenant's read reaches exosim, no write does (not
/// one request for the write cmdlet, whatever its answer); each tenant's job lists its two
/// planned writes with their parameters, never marks `may_have_written`, and the trail has
/// them as `dry-run` call lines and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_fleet_reads_and_plans_its_writes_without_sending_them() {
    let lab = lab(&[&[], &[], &[]], READ_THEN_WRITE, "").await;
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "all",
            "--dry-run",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stderr.contains("dry run"), "{stderr}");
    let id = fleet_id(&stderr);

    // The witness: exosim saw the reads of every tenant and not one write.
    assert!(lab.requests("Set-Mailbox").is_empty(), "a write was sent");
    // Not only that write: every request exosim logged is a cmdlet it parsed, and a read.
    let log = lab.emu.exchange_log();
    assert!(!log.is_empty());
    for record in &log {
        let cmdlet = record.cmdlet.as_deref().unwrap_or_default();
        assert!(cmdlet.starts_with("Get-"), "not a known read: {record:?}");
    }
    for i in 0..3 {
        let domain = format!("t{i}.onmicrosoft.com");
        assert!(
            lab.requests("Get-Mailbox")
                .iter()
                .any(|r| r.path.contains(&domain) && r.status < 300),
            "no read for {domain}"
        );
    }

    // The guest was told, with the dry-run rule.
    let rows = json_out(
        &["fleet", "results", &id.to_string(), "--output", "json"],
        &lab.env,
    )
    .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["state"], "completed", "{row}");
        assert_eq!(row["may_have_written"], false, "{row}");
        assert_eq!(row["planned"], 2, "{row}");
        assert!(
            row["output"].as_str().unwrap().contains("denied:dry-run"),
            "{row}"
        );
    }

    // One row per planned write: tenant, cmdlet, parameters.
    let planned = json_out(
        &[
            "fleet",
            "results",
            &id.to_string(),
            "--planned",
            "--output",
            "json",
        ],
        &lab.env,
    )
    .await;
    let planned = planned.as_array().unwrap();
    assert_eq!(planned.len(), 6, "{planned:?}");
    for i in 0..3 {
        let tenant = format!("t{i}");
        let mine: Vec<&Value> = planned.iter().filter(|p| p["tenant"] == *tenant).collect();
        assert_eq!(mine.len(), 2, "{planned:?}");
        for (n, write) in mine.iter().enumerate() {
            assert_eq!(write["cmdlet"], "Set-Mailbox");
            assert_eq!(write["parameters"]["DisplayName"], format!("Dry {n}"));
            assert!(
                write["parameters"]["Identity"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("@t{i}.onmicrosoft.com")),
                "{write}"
            );
        }
    }
    let out = warden(
        &[
            "fleet",
            "results",
            &id.to_string(),
            "--planned",
            "--output",
            "csv",
        ],
        &lab.env,
    )
    .await;
    assert_eq!(text(&out).0.lines().count(), 7, "{}", text(&out).0);

    // Never marked: a dry run cannot end outcome-unknown.
    let jobs = lab.store().await.fleet_jobs(id).await.unwrap();
    assert!(jobs.iter().all(|job| !job.run.may_have_written));
    assert!(lab.store().await.fleet(id).await.unwrap().unwrap().dry_run);

    let out = warden(&["fleet", "status", &id.to_string()], &lab.env).await;
    let status = text(&out).0;
    assert!(
        status.contains("dry run: 6 write(s) planned over 3 tenant(s), none sent"),
        "{status}"
    );

    let trail = std::fs::read_to_string(lab.trail()).unwrap();
    let dry: Vec<Value> = trail
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["kind"] == "call" && line["cmdlet"] == "Set-Mailbox")
        .collect();
    assert_eq!(dry.len(), 6, "{trail}");
    for line in &dry {
        assert_eq!(line["outcome"]["kind"], "dry-run", "{line}");
    }
    // The fleet's own lines say it was a dry run: a plan is not read as a rollout.
    let fleet_lines: Vec<Value> = trail
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["kind"] == "fleet")
        .collect();
    for action in ["recorded", "summary"] {
        let line = fleet_lines
            .iter()
            .find(|line| line["fleet_action"]["action"] == action)
            .unwrap_or_else(|| panic!("no {action} line: {trail}"));
        assert_eq!(line["fleet_action"]["dry_run"], true, "{line}");
    }
    lab.assert_trail_verifies().await;
}

/// A fleet without `--dry-run` still sends its writes (the gate is the flag's only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_without_dry_run_sends_its_writes() {
    let lab = lab(&[&[]], READ_THEN_WRITE, "").await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--quiet"],
        &lab.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert_eq!(
        lab.requests("Set-Mailbox")
            .iter()
            .filter(|r| r.status < 300)
            .count(),
        2
    );
    let id = fleet_id(&stderr);
    let out = warden(
        &["fleet", "results", &id.to_string(), "--planned"],
        &lab.env,
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("no dry run"), "{}", text(&out).1);
}

/// Reads each tenant's first mailbox.
const READ: &str = "let m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 1});\n\
                    m[0].PrimarySmtpAddress\n";

/// Requests of `cmdlet` exosim answered for tenant `i`'s organisation.
fn served_for(lab: &Lab, cmdlet: &str, i: usize) -> usize {
    let domain = format!("t{i}.onmicrosoft.com");
    lab.requests(cmdlet)
        .iter()
        .filter(|r| r.path.contains(&domain) && r.status < 300)
        .count()
}

/// A grant limited to `tag:eu`: a fleet over every tenant runs the eu ones and refuses the
/// other's job alone, saying which grant, which tenant and what to change; no request of
/// the refused tenant reaches Exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_limited_to_a_tag_refuses_the_other_tenants_jobs_alone() {
    let lab = lab(&[&["eu"], &["us"], &["eu"]], READ, "tenants = [\"tag:eu\"]").await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--quiet"],
        &lab.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}\n{stdout}");
    // Said before the fleet was recorded: which chosen tenants the grant leaves out.
    let warned = stderr
        .find("the grant leaves out 1 of the chosen tenant(s) (t1)")
        .expect(&stderr);
    assert!(warned < stderr.find("fleet ").unwrap(), "{stderr}");
    let rows = json_out(
        &[
            "fleet",
            "results",
            &fleet_id(&stderr).to_string(),
            "--output",
            "json",
        ],
        &lab.env,
    )
    .await;
    let states: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["tenant"].as_str().unwrap(),
                row["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("t0", "completed"), ("t1", "refused"), ("t2", "completed")]
    );
    let error = rows[1]["error"].as_str().unwrap();
    for says in [
        "grant:fleet/tenants",
        "grant fleet",
        "not to tenant t1",
        "add \"t1\"",
    ] {
        assert!(error.contains(says), "{says}: {error}");
    }
    assert_eq!(served_for(&lab, "Get-Mailbox", 1), 0);
    assert_eq!(served_for(&lab, "Get-Mailbox", 0), 1);
    lab.assert_trail_verifies().await;
}

/// The same for a plugin (the other runtime): a fleet of `mailbox-report` under a grant
/// limited to `tag:eu` reports the eu tenant and refuses the other's job alone, before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_grant_limited_to_a_tag_refuses_the_other_tenants_jobs_alone() {
    let lab = lab(&[&["eu"], &["us"]], READ, "").await;
    let plugin = crate::support::guest("plugins", "mailbox-report");
    let sha = warden_policy::sha256_hex(&std::fs::read(&plugin).unwrap());
    // The plugin's own example policy, its grant limited to the eu tag.
    let policy_text = std::fs::read_to_string(
        crate::support::repo_root().join("plugins/mailbox-report/policy.toml"),
    )
    .unwrap()
    .replace(&"0".repeat(64), &sha)
    .replacen(
        "roles = [\"reporter\"]",
        "roles = [\"reporter\"]\ntenants = [\"tag:eu\"]",
        1,
    );
    assert!(policy_text.contains("tenants = [\"tag:eu\"]"));
    let policy = lab.dir.path().join("policy.toml");
    std::fs::write(&policy, policy_text).unwrap();
    let out = warden(
        &[
            "fleet",
            "run",
            &plugin.display().to_string(),
            "--tenants",
            "all",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}\n{stdout}");
    let rows = json_out(
        &[
            "fleet",
            "results",
            &fleet_id(&stderr).to_string(),
            "--output",
            "json",
        ],
        &lab.env,
    )
    .await;
    assert_eq!(rows[0]["state"], "completed", "{rows}");
    assert_eq!(rows[1]["state"], "refused", "{rows}");
    let error = rows[1]["error"].as_str().unwrap();
    assert!(error.contains("grant mailbox-report"), "{error}");
    assert!(error.contains("not to tenant t1"), "{error}");
    assert_eq!(served_for(&lab, "Get-Mailbox", 1), 0);
    assert!(served_for(&lab, "Get-Mailbox", 0) > 0);
}

/// `warden script --tenant NAME` is judged the same way: the covered tenant runs, another is
/// refused before any call (exit 3), and so is a run whose tenant `--tenant-id` overrides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_run_for_a_tenant_the_grant_does_not_cover_is_refused() {
    let lab = lab(&[&["eu"], &["us"]], READ, "tenants = [\"t0\"]").await;
    let out = warden(
        &["script", &lab.script, "--tenant", "t0", "--quiet"],
        &lab.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(served_for(&lab, "Get-Mailbox", 0), 1);

    let out = warden(
        &["script", &lab.script, "--tenant", "t1", "--quiet"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not to tenant t1"), "{stderr}");
    assert_eq!(served_for(&lab, "Get-Mailbox", 1), 0);

    let out = warden(
        &[
            "script",
            &lab.script,
            "--tenant",
            "t0",
            "--tenant-id",
            "t1.onmicrosoft.com",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("names no tenant profile"), "{stderr}");
    assert_eq!(served_for(&lab, "Get-Mailbox", 1), 0);
}

/// A grant naming a tenant or tag the config lacks is a load error naming it, for a fleet and
/// a single run alike: a typo must not quietly narrow (or, by exclusion, widen) a grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_naming_an_unknown_tenant_or_tag_fails_to_load() {
    for (tenants, named) in [
        (
            "tenants = [\"t0\", \"contosso\"]",
            "\"contosso\", which is no [tenants.NAME] profile",
        ),
        (
            "tenants = [\"!tag:asia\"]",
            "tag \"asia\", which no profile",
        ),
    ] {
        let lab = lab(&[&["eu"], &["us"]], READ, tenants).await;
        let out = warden(
            &["fleet", "run", &lab.script, "--tenants", "all", "--quiet"],
            &lab.env,
        )
        .await;
        let stderr = text(&out).1;
        assert!(!out.status.success());
        assert!(stderr.contains(named), "{tenants}: {stderr}");
        assert!(stderr.contains("policy.toml:"), "{stderr}");
        let out = warden(
            &["script", &lab.script, "--tenant", "t0", "--quiet"],
            &lab.env,
        )
        .await;
        let stderr = text(&out).1;
        assert!(!out.status.success());
        assert!(stderr.contains(named), "{tenants}: {stderr}");
        assert!(lab.requests("Get-Mailbox").is_empty());
    }
}

/// `status --watch`, piped: on a finished fleet it prints the final state and exits 0; on one
/// still queued it keeps following (one JSON line per change) until the fleet ends, here by a
/// cancel, and then exits 0 with `"done": true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_follows_a_fleet_until_it_ends() {
    let lab = lab(&[&[], &[]], READ, "").await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--quiet"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let done = fleet_id(&stderr).to_string();
    let out = warden(&["fleet", "status", &done, "--watch"], &lab.env).await;
    assert!(out.status.success(), "{}", text(&out).1);
    let stdout = text(&out).0;
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "{stdout}");
    assert_eq!(last["counts"]["completed"], 2, "{stdout}");

    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--no-work"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let queued = fleet_id(&stderr).to_string();
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    watch
        .args(["fleet", "status", &queued, "--watch"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(lab.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped());
    let mut watch = watch.spawn().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("a first line within 60 s")
        .unwrap()
        .expect("a first line");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["done"], false, "{first}");
    // Nobody works the fleet: the watch cannot have ended.
    assert!(watch.try_wait().unwrap().is_none(), "the watch ended early");
    let out = warden(&["fleet", "cancel", &queued], &lab.env).await;
    assert!(out.status.success(), "{}", text(&out).1);
    let mut last = first;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the watch goes on printing or ends")
        .unwrap()
    {
        last = serde_json::from_str(&line).unwrap();
    }
    let exit = tokio::time::timeout(Duration::from_secs(60), watch.wait())
        .await
        .expect("the watch exits once the fleet ended")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["cancelled"], true, "{last}");
}

/// Ctrl-C on a `fleet run` that works itself, as on `warden worker`: the first lets the
/// running job end and be recorded and starts no other (they stay queued, and the command says
/// how to resume); the process exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_working_fleet_run_lets_its_running_jobs_end() {
    let lab = lab(&[&[], &[], &[]], READ, "").await;
    // Each answer takes 3 s: the first job is mid-call when the signal comes.
    lab.emu
        .exchange_faults()
        .set_latency(Duration::from_secs(3));
    let log = lab.dir.path().join("fleet-run.log");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args([
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "all",
            "--concurrency",
            "1",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(lab.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut run = command.spawn().unwrap();
    let store = lab.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (id, running) = loop {
        let fleets = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = fleets.find("fleet ")
            && fleets.len() >= at + 42
        {
            let id = fleet_id(&fleets);
            let jobs = store.fleet_jobs(id).await.unwrap();
            let running: Vec<String> = jobs
                .iter()
                .filter(|j| j.run.status == RunStatus::Running)
                .map(|j| j.tenant.clone())
                .collect();
            if !running.is_empty() {
                break (id, running);
            }
        }
        if let Ok(Some(exit)) = run.try_wait() {
            panic!(
                "fleet run exited ({exit}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job ran within 120 s: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid = run.id().expect("a pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(120), run.wait())
        .await
        .expect("fleet run stops after its running job ends")
        .unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    // Not every tenant completed: exit 1, by itself (not killed by the signal).
    assert_eq!(exit.code(), Some(1), "{exit}: {log}");
    assert!(log.contains("warden worker"), "{log}");
    assert!(log.contains(&format!("warden fleet cancel {id}")), "{log}");
    let jobs = store.fleet_jobs(id).await.unwrap();
    for job in &jobs {
        if running.contains(&job.tenant) {
            assert_eq!(
                job.run.status,
                RunStatus::Completed,
                "{}: {log}",
                job.tenant
            );
        }
        assert!(
            matches!(job.run.status, RunStatus::Completed | RunStatus::Queued),
            "{}: {:?}: {log}",
            job.tenant,
            job.run.status
        );
    }
    // One slot, 3 s per call: at most the job running at the signal (or one that started
    // just before it) ended; the rest never started here and wait for a worker.
    assert!(
        jobs.iter().any(|job| job.run.status == RunStatus::Queued),
        "{log}"
    );
}

/// A fleet's jobs act on their profiles' tenants: a flag that overrides the tenant or the
/// credential (`--tenant-id`, `--client-id`, `--secret-file`, …) would send every job to one
/// tenant while grants judge each by its profile's name. `fleet run` (working or not) and
/// `warden worker` refuse them before anything is recorded or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_refuses_flags_that_override_its_profiles_tenant_or_credential() {
    let lab = lab(&[&["lab"], &["prod"]], READ, "tenants = [\"tag:lab\"]").await;
    let secret = lab.dir.path().join("secret").display().to_string();
    for extra in [
        &["--tenant-id", "t1.onmicrosoft.com"][..],
        &["--client-id", "5a0e2b7c-1d3a-4c5e-8f6b-9a0c1d2e0001"],
        &["--secret-file", &secret],
        &["--tenant-id", "t1.onmicrosoft.com", "--no-work"],
    ] {
        let mut args = vec!["fleet", "run", &lab.script, "--tenants", "all", "--quiet"];
        args.extend_from_slice(extra);
        let out = warden(&args, &lab.env).await;
        let stderr = text(&out).1;
        assert!(!out.status.success(), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(extra[0])
                && stderr.contains("a fleet's tenants come from their profiles"),
            "{extra:?}: {stderr}"
        );
        assert!(stderr.contains("fix:"), "{stderr}");
    }
    // Nothing recorded.
    assert!(!lab.dir.path().join("fleet.db").exists());
    let out = warden(&["worker", "--tenant-id", "t1.onmicrosoft.com"], &lab.env).await;
    let stderr = text(&out).1;
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("a fleet's tenants come from their profiles"),
        "{stderr}"
    );
    // Nothing sent.
    assert!(lab.emu.exchange_log().is_empty());
}

/// A profile without its own `tenant_id` gets its real tenant from `AZURE_TENANT_ID`: a grant
/// limited to tenants must not judge such a run by the profile's name, so it names no tenant
/// and is refused, in a single run and in a fleet, before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_without_its_own_tenant_id_is_no_tenant_for_a_limited_grant() {
    let mut lab = lab(&[&["lab"], &["prod"]], READ, "tenants = [\"t0\"]").await;
    let config = lab.dir.path().join("config.toml");
    let text_of = std::fs::read_to_string(&config).unwrap();
    let without = text_of.replace("tenant_id = \"t0.onmicrosoft.com\"\n", "");
    assert_ne!(without, text_of);
    std::fs::write(&config, without).unwrap();
    // A stray export names another tenant: the profile `t0` would act on it.
    lab.env.push((
        "AZURE_TENANT_ID".to_owned(),
        "t1.onmicrosoft.com".to_owned(),
    ));

    let out = warden(
        &["script", &lab.script, "--tenant", "t0", "--quiet"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("grant:fleet/tenants"), "{stderr}");
    assert!(stderr.contains("without its own tenant_id"), "{stderr}");

    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--quiet"],
        &lab.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}\n{stdout}");
    let rows = json_out(
        &[
            "fleet",
            "results",
            &fleet_id(&stderr).to_string(),
            "--output",
            "json",
        ],
        &lab.env,
    )
    .await;
    for row in rows.as_array().unwrap() {
        assert_eq!(row["state"], "refused", "{row}");
    }
    assert!(
        rows[0]["error"]
            .as_str()
            .unwrap()
            .contains("without its own tenant_id"),
        "{rows}"
    );
    assert!(lab.requests("Get-Mailbox").is_empty());
}

/// `status --watch` with stderr on a terminal and stdout piped (`… --watch | jq` typed at a
/// terminal): stdout gets JSON lines, not a bar and a table, because stdout is what a program
/// reads.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_piped_prints_json_lines_even_with_stderr_on_a_terminal() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let lab = lab(&[&[]], READ, "").await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--quiet"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let id = fleet_id(&stderr).to_string();

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    // Whatever reaches the terminal is drained, so the child never blocks on it.
    let mut master = std::fs::File::from(master);
    let drain = std::thread::spawn(move || {
        let mut shown = Vec::new();
        let _ = std::io::Read::read_to_end(&mut master, &mut shown);
    });
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    watch
        .args(["fleet", "status", &id, "--watch"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(lab.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(terminal);
    let out = tokio::time::timeout(Duration::from_secs(60), watch.output())
        .await
        .expect("the watch of an ended fleet exits")
        .unwrap();
    drop(watch);
    let _ = drain.join();
    assert!(out.status.success());
    let stdout = text(&out).0;
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {stdout}")))
        .collect();
    assert_eq!(lines.last().unwrap()["done"], true, "{stdout}");
}

/// `warden serve` runs a task without a tenant profile a grant could judge, so a task on a
/// grant limited to tenants would be offered and then refused at every run: the policy
/// refuses it at load (serve, `policy check`, everywhere), naming the grant and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_grant_limited_to_tenants_is_refused_at_load() {
    let text = |tenants: &str| {
        format!(
            "version = 1\n[roles.read]\n[[roles.read.cmdlet]]\nname = \"Get-Mailbox\"\n\
             [[grant]]\nid = \"read\"\nscript = \"read.rhai\"\nsha256 = \"{}\"\n\
             roles = [\"read\"]\n{tenants}\n\
             [[task]]\nid = \"t\"\ntitle = \"T\"\ngrant = \"read\"\napproval = \"never\"\n\
             delegates = [\"user:a@contoso.com\"]\n",
            "1".repeat(64)
        )
    };
    let path = std::path::Path::new("/etc/warden/tasks.toml");
    warden_policy::Policy::parse(&text(""), path).expect("no tenants: the task loads");
    let error = warden_policy::Policy::parse(&text("tenants = [\"t0\"]"), path)
        .expect_err("refused at load")
        .to_string();
    for says in [
        "tasks.toml:",
        "grant = \"read\" is limited to tenants [t0]",
        "fix: give the task a grant without tenants",
    ] {
        assert!(error.contains(says), "{says}: {error}");
    }
}

/// Reads, then writes without catching the refusal: in a dry run the guest ends at its
/// first planned write, as most scripts written for a real run would.
const READ_THEN_WRITE_UNCAUGHT: &str = "let m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 1});\n\
    exo::invoke(\"Set-Mailbox\", #{Identity: m[0].PrimarySmtpAddress, DisplayName: \"Dry\"});\n\
    \"unreachable in a dry run\"\n";

/// A dry run over waves (whose implied limit is zero failures) of a script that does not catch
/// the dry-run refusal: each job ends `completed` at its first planned write, its plan the
/// result and the refusal noted, so the first tenant's plan does not stop the next waves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_that_ends_at_its_first_planned_write_is_no_failure() {
    let lab = lab(&[&[], &[], &[]], READ_THEN_WRITE_UNCAUGHT, "").await;
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "all",
            "--waves",
            "1,100%",
            "--dry-run",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("ended at a planned write"), "{stdout}");
    let id = fleet_id(&stderr).to_string();
    let rows = json_out(&["fleet", "results", &id, "--output", "json"], &lab.env).await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["state"], "completed", "{row}");
        assert_eq!(row["planned"], 1, "{row}");
        assert!(row["error"].is_null(), "{row}");
        assert!(
            row["dry_run_ended"].as_str().unwrap().contains("not sent"),
            "{row}"
        );
    }
    // The CSV and the table count the planned writes too.
    let out = warden(&["fleet", "results", &id, "--output", "csv"], &lab.env).await;
    let csv = text(&out).0;
    assert!(csv.lines().next().unwrap().ends_with(",planned"), "{csv}");
    assert!(
        csv.lines().skip(1).all(|line| line.ends_with(",1")),
        "{csv}"
    );
    assert!(lab.requests("Set-Mailbox").is_empty());
}

/// Reads a mailbox, then renames it (a real write).
const READ_THEN_RENAME: &str = "let m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 1});\n\
    exo::invoke(\"Set-Mailbox\", #{Identity: m[0].PrimarySmtpAddress, DisplayName: \"Renamed\"});\n\
    \"done\"\n";

/// A write in flight is let finish after the second Ctrl-C (its outcome must be known), so a
/// slow one could hold the process long after: a third Ctrl-C quits at once with exit 130 (the
/// job is left to the stale sweep), each press heard because the next listener is set up as
/// soon as the one before fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_ctrl_c_quits_a_fleet_run_whose_write_is_in_flight() {
    let lab = lab(&[&[]], READ_THEN_RENAME, "").await;
    // Only the write is slow: the read before it answers at once (a latency for every call
    // made the test wait 25 s for the read first).
    lab.emu
        .exchange_faults()
        .queue(&exosim::QueuedExchangeFault {
            fault: exosim::ExchangeFault::SlowAnswer { delay_ms: 25_000 },
            count: 1,
            cmdlet: Some("Set-Mailbox".to_owned()),
            after: 0,
        });
    let log = lab.dir.path().join("fleet-run.log");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args(["fleet", "run", &lab.script, "--tenants", "all"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(lab.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut run = command.spawn().unwrap();
    let store = lab.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    // Wait for the write to be marked: it is in flight (25 s) from then on.
    loop {
        let fleets = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = fleets.find("fleet ")
            && fleets.len() >= at + 42
        {
            let jobs = store.fleet_jobs(fleet_id(&fleets)).await.unwrap();
            if jobs.iter().any(|job| job.run.may_have_written) {
                break;
            }
        }
        assert!(run.try_wait().unwrap().is_none(), "fleet run exited early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write within 150 s: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = run.id().expect("a pid").to_string();
    // Each press is sent once the line printed after the previous one's listener was replaced
    // is in the log: a press sent before the next listener exists would be lost.
    for heard in [
        Some("stopping: no tenant starts"),
        Some("interrupting the running jobs"),
        None,
    ] {
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let Some(heard) = heard else { break };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log).unwrap().contains(heard) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {heard:?} within 60 s of Ctrl-C: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), run.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the third Ctrl-C did not quit: {}",
                std::fs::read_to_string(&log).unwrap()
            )
        })
        .unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(exit.code(), Some(130), "{exit}: {log}");
    assert!(log.contains("quitting"), "{log}");
}
