//! `warden fleet` and `warden worker` against a real exosim serving several tenants (each with
//! its own app, domain and mailboxes), with the real binary, a real Rhai script, the fleet store
//! and exosim's request log as witnesses.

use crate::support::{Env, text, warden};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use warden_store::{JobState, RunStatus, Store};

const SECRET: &str = "Fl~eet.example-secret_value~0123456789ab";

/// exosim with `n` tenants `t0` … (domains `tN.onmicrosoft.com`), the config, policy, script
/// and environment a fleet over them needs. `fleet_more` uses it too.
pub(crate) struct FleetLab {
    pub(crate) emu: exosim::Exosim,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) env: Env,
    pub(crate) script: String,
    domains: Vec<String>,
}

impl FleetLab {
    /// `tags[i]` are tenant i's tags; `bad_secret` tenants get a wrong secret in their profile.
    async fn start(tags: &[&[&str]], bad_secret: &[usize], script: &str) -> FleetLab {
        Self::start_with(tags, bad_secret, script, |_| {}).await
    }

    async fn start_with(
        tags: &[&[&str]],
        bad_secret: &[usize],
        script: &str,
        configure: impl FnOnce(&mut exosim::ExosimOptions),
    ) -> FleetLab {
        Self::build(tags, bad_secret, script, "", 1, configure).await
    }

    /// Every tenant with the right secret, and the grant given `grant_extra` (say
    /// `tenants = ["t0"]`) and a budget of `writes`.
    pub(crate) async fn start_granting(
        tags: &[&[&str]],
        script: &str,
        grant_extra: &str,
        writes: u32,
    ) -> FleetLab {
        Self::build(tags, &[], script, grant_extra, writes, |_| {}).await
    }

    async fn build(
        tags: &[&[&str]],
        bad_secret: &[usize],
        script: &str,
        grant_extra: &str,
        writes: u32,
        configure: impl FnOnce(&mut exosim::ExosimOptions),
    ) -> FleetLab {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::new();
        let mut config = String::new();
        let domains: Vec<String> = (0..tags.len())
            .map(|i| format!("t{i}.onmicrosoft.com"))
            .collect();
        for (i, domain) in domains.iter().enumerate() {
            let client = format!("4f9e2b7c-1d3a-4c5e-8f6b-9a0c1d2e{i:04x}");
            toml.push_str(&format!(
                "[[tenant]]\ntenant_id = \"{}\"\n\
                 domain = \"{domain}\"\n[[tenant.app]]\nname = \"warden\"\nclient_id = \"{client}\"\n\
                 roles = [\"Exchange.ManageAsApp\"]\n\
                 wids = [\"29232cdf-9323-42fd-ade2-1d097af3e4de\"]\n\
                 [[tenant.app.secret]]\nvalue = \"{SECRET}\"\n",
                tenant_id(i)
            ));
            let secret_env = if bad_secret.contains(&i) {
                "FLEET_WRONG_SECRET"
            } else {
                "FLEET_SECRET"
            };
            let tag_list: Vec<String> = tags[i].iter().map(|t| format!("\"{t}\"")).collect();
            config.push_str(&format!(
                "[tenants.t{i}]\ntenant_id = \"{domain}\"\nclient_id = \"{client}\"\n\
                 tags = [{}]\n[tenants.t{i}.credential]\nkind = \"secret\"\n\
                 secret_env = \"{secret_env}\"\n",
                tag_list.join(", ")
            ));
        }
        let mut options = exosim::ExosimOptions::demo(dir.path().join("exosim"));
        options.tenants = exosim::TenantsConfig::from_toml_str(&toml).unwrap();
        options.mailboxes = 3;
        configure(&mut options);
        let emu = exosim::Exosim::start(options).await.expect("exosim starts");
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("config.toml"), config).unwrap();
        std::fs::write(path("fleet.rhai"), script).unwrap();
        let sha = warden_policy::sha256_hex(script.as_bytes());
        std::fs::write(
            path("policy.toml"),
            format!(
                "version = 1\n[roles.fleet]\ndescription = \"read and rename\"\n\
                 [[roles.fleet.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 10\n\
                 [[roles.fleet.cmdlet]]\nname = \"Set-Mailbox\"\n\
                 [roles.fleet.cmdlet.parameters]\nIdentity = {{ length = [1, 128] }}\n\
                 DisplayName = {{ length = [1, 64] }}\n\
                 [[grant]]\nid = \"fleet\"\nscript = \"fleet.rhai\"\nsha256 = \"{sha}\"\n\
                 roles = [\"fleet\"]\n{grant_extra}\n[grant.budgets]\ncalls = 100\n\
                 writes = {writes}\nwall_clock_secs = 60\n"
            ),
        )
        .unwrap();
        let env: Env = [
            ("WARDEN_CONFIG", path("config.toml")),
            ("WARDEN_POLICY", path("policy.toml")),
            ("WARDEN_AUDIT", path("audit.jsonl")),
            ("WARDEN_AUDIT_KEY", path("audit.key")),
            ("WARDEN_CACHE_DIR", path("cache")),
            ("AZURE_AUTHORITY_HOST", emu.url()),
            ("WARDEN_CA_FILE", emu.ca_file().display().to_string()),
            ("WARDEN_EXCHANGE_URL", emu.exchange_url()),
            ("FLEET_SECRET", SECRET.to_owned()),
            ("FLEET_WRONG_SECRET", "not-the-secret".to_owned()),
            (
                "WARDEN_DATABASE",
                format!("sqlite:{}", dir.path().join("fleet.db").display()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        FleetLab {
            emu,
            script: path("fleet.rhai"),
            dir,
            env,
            domains,
        }
    }

    fn store_url(&self) -> String {
        format!("sqlite:{}", self.dir.path().join("fleet.db").display())
    }

    pub(crate) async fn store(&self) -> Store {
        Store::open(&self.store_url()).await.unwrap()
    }

    /// Successful requests for `cmdlet` per tenant domain (by the Identity it named, else by
    /// the tenant in the path). Whole names only: `t1.onmicrosoft.com` is not in
    /// `x@t11.onmicrosoft.com`.
    fn calls_per_domain(&self, cmdlet: &str) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for record in self.emu.exchange_log() {
            if record.cmdlet.as_deref() != Some(cmdlet) || record.status >= 300 {
                continue;
            }
            let subject = format!(
                "{} {}",
                record.identity.clone().unwrap_or_default(),
                record.path
            );
            let names: Vec<&str> = subject.split(['@', '/', ' ']).collect();
            if let Some(domain) = self.domains.iter().find(|d| names.contains(&d.as_str())) {
                *counts.entry(domain.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Every write (`Set-Mailbox`) exosim received, per tenant profile (`t0` …): its status and
    /// whether it changed anything, whatever those were. A write sent twice shows here even
    /// when the second changed nothing (the same DisplayName again is logged not applied).
    fn writes_sent(&self) -> HashMap<String, Vec<(u16, bool)>> {
        let mut writes: HashMap<String, Vec<(u16, bool)>> = HashMap::new();
        for record in self.emu.exchange_log() {
            if record.cmdlet.as_deref() != Some("Set-Mailbox") {
                continue;
            }
            let tenant = record.tenant_id.clone().unwrap_or_default();
            let i = (0..self.domains.len())
                .find(|i| tenant.eq_ignore_ascii_case(&tenant_id(*i)))
                .unwrap_or_else(|| panic!("a write to an unknown tenant {tenant:?}"));
            writes
                .entry(format!("t{i}"))
                .or_default()
                .push((record.status, record.applied));
        }
        writes
    }
}

/// Tenant `i`'s id in a [`FleetLab`].
fn tenant_id(i: usize) -> String {
    format!("8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b{i:04x}")
}

/// Reads each tenant's first mailbox: the output names the tenant's own domain.
const READ_SCRIPT: &str = "let m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 1});\n\
                           m[0].PrimarySmtpAddress\n";

/// Reads a while, then renames one mailbox (one write per tenant).
const WRITE_SCRIPT: &str = "let m = [];\n\
    for i in 0..12 { m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 1}); }\n\
    exo::invoke(\"Set-Mailbox\", #{Identity: m[0].PrimarySmtpAddress, DisplayName: \"Fleet\"});\n\
    m[0].PrimarySmtpAddress\n";

/// The fleet id `fleet run` prints on stderr.
pub(crate) fn fleet_id(stderr: &str) -> uuid::Uuid {
    let start = stderr.find("fleet ").expect("the fleet's id is printed") + 6;
    stderr[start..start + 36].parse().expect("a fleet id")
}

async fn results_json(lab: &FleetLab, id: uuid::Uuid) -> Vec<Value> {
    let out = warden(
        &["fleet", "results", &id.to_string(), "--output", "json"],
        &lab.env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_run_covers_the_selected_tenants_each_with_its_own_session() {
    let lab = FleetLab::start(
        &[&["eu"], &["eu", "finance"], &["us"], &["eu"]],
        &[],
        READ_SCRIPT,
    )
    .await;
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "tag:eu,!t3",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let rows = results_json(&lab, fleet_id(&stderr)).await;
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| {
            (
                row["tenant"].as_str().unwrap().to_owned(),
                row["state"].as_str().unwrap().to_owned(),
                row["output"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    for (i, (tenant, state, output)) in got.iter().enumerate() {
        assert_eq!(
            (tenant.as_str(), state.as_str()),
            (["t0", "t1"][i], "completed")
        );
        // Each tenant's read went to its own organisation, with its own token.
        assert!(
            output.ends_with(&format!("@t{i}.onmicrosoft.com")),
            "{output}"
        );
    }
    let reads = lab.calls_per_domain("Get-Mailbox");
    assert!(!reads.contains_key("t2.onmicrosoft.com") && !reads.contains_key("t3.onmicrosoft.com"));
    // Every audit line names the fleet and its tenant, and the trail still verifies.
    let trail = lab.dir.path().join("audit.jsonl");
    let mut tenants_seen = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(&trail).unwrap().lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        if line["kind"] == "fleet" {
            // The fleet's own lines (recorded, summary) name it by their run id.
            assert_eq!(line["run_id"], fleet_id(&stderr).to_string(), "{line}");
            continue;
        }
        assert_eq!(
            line["fleet"]["fleet"],
            fleet_id(&stderr).to_string(),
            "{line}"
        );
        tenants_seen.insert(line["fleet"]["tenant"].as_str().unwrap().to_owned());
    }
    assert_eq!(tenants_seen.into_iter().collect::<Vec<_>>(), ["t0", "t1"]);
    let out = warden(&["audit", "verify", &trail.display().to_string()], &lab.env).await;
    assert!(out.status.success(), "{}", text(&out).1);
    // CSV rows carry the tenant too.
    let out = warden(
        &[
            "fleet",
            "results",
            &fleet_id(&stderr).to_string(),
            "--output",
            "csv",
        ],
        &lab.env,
    )
    .await;
    let csv = text(&out).0;
    assert!(csv.starts_with("tenant,state,"), "{csv}");
    assert!(csv.contains("\nt1,completed,"), "{csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tenant_or_tag_is_named_and_nothing_runs() {
    let lab = FleetLab::start(&[&["eu"], &["us"]], &[], READ_SCRIPT).await;
    for (selector, named) in [("t0,t9", "`t9`"), ("tag:apac", "tag `apac`")] {
        let out = warden(
            &["fleet", "run", &lab.script, "--tenants", selector],
            &lab.env,
        )
        .await;
        let stderr = text(&out).1;
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(named) && stderr.contains("fix:"),
            "{stderr}"
        );
    }
    assert!(lab.emu.exchange_log().is_empty());
    assert!(
        !lab.dir.path().join("fleet.db").exists(),
        "no fleet was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_token_fails_fails_alone_with_its_aadsts_code() {
    let lab = FleetLab::start(&[&[], &[], &[]], &[1], READ_SCRIPT).await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--quiet"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "one tenant failed: {stderr}");
    let rows = results_json(&lab, fleet_id(&stderr)).await;
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["completed", "failed", "completed"], "{rows:?}");
    let error = rows[1]["error"].as_str().unwrap();
    assert!(error.contains("AADSTS7000215"), "the diagnosis: {error}");
    assert!(!error.contains("not-the-secret"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_stop_at_the_failure_limit() {
    // t0 is the first wave and fails; with no failure tolerated (the default with waves), the
    // next wave never starts.
    let lab = FleetLab::start(&[&[], &[], &[], &[]], &[0], READ_SCRIPT).await;
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "all",
            "--waves",
            "1,100%",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // No --max-failures: waves stop at the first failure, and say so.
    assert!(
        stderr.contains("--waves without --max-failures"),
        "{stderr}"
    );
    assert!(stderr.contains("stopped at the failure limit"), "{stderr}");
    let rows = results_json(&lab, fleet_id(&stderr)).await;
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["failed", "held", "held", "held"]);
    assert!(
        lab.calls_per_domain("Get-Mailbox").is_empty(),
        "no later tenant was read"
    );
    // Retrying t0 lowers the failure count: the output says the held tenants start too.
    let out = warden(
        &["fleet", "retry", &fleet_id(&stderr).to_string(), "--failed"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("its 3 held tenant(s) start too (t1, t2, t3)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_status_and_retry_steer_a_recorded_fleet() {
    let lab = FleetLab::start(&[&[], &[], &[]], &[], READ_SCRIPT).await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--no-work"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let id = fleet_id(&stderr).to_string();
    let out = warden(&["fleet", "cancel", &id], &lab.env).await;
    assert!(out.status.success(), "{}", text(&out).1);
    // The trail has who recorded it, who cancelled it, and (nothing ran, so the cancel ended
    // it) its one summary; a second cancel changes nothing and records nothing.
    let out = warden(&["fleet", "cancel", &id], &lab.env).await;
    assert!(out.status.success(), "{}", text(&out).1);
    let trail = lab.dir.path().join("audit.jsonl");
    let lines = fleet_lines(&trail);
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["fleet_action"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["recorded", "cancelled", "summary"], "{lines:?}");
    assert!(
        lines.iter().all(|l| l["run_id"] == id.as_str()),
        "{lines:?}"
    );
    assert_eq!(lines[1]["fleet_action"]["by"], "local:operator");
    assert_eq!(lines[2]["fleet_action"]["counts"]["cancelled"], 3);
    assert_eq!(lines[2]["fleet_action"]["cancelled"], true);
    assert_verifies(&trail, &lab.env).await;
    let out = warden(&["fleet", "status", &id], &lab.env).await;
    let status = text(&out).0;
    assert!(
        status.contains("cancelled") && status.contains("done"),
        "{status}"
    );
    // A worker on this store starts nothing of a cancelled fleet.
    let store = lab.store().await;
    assert!(
        store
            .claim_next_fleet_job("probe/1", None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(lab.emu.exchange_log().is_empty());
    // Retry needs --failed, is refused on a cancelled fleet (its tenants would never start),
    // and an unknown id is named.
    let out = warden(&["fleet", "retry", &id], &lab.env).await;
    assert_eq!(out.status.code(), Some(1));
    let out = warden(&["fleet", "retry", &id, "--failed"], &lab.env).await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not retried") && stderr.contains("cancelled"),
        "{stderr}"
    );
    let other = uuid::Uuid::new_v4().to_string();
    let out = warden(&["fleet", "status", &other], &lab.env).await;
    assert!(
        text(&out)
            .1
            .contains(&format!("no fleet has the id {other}")),
        "{}",
        text(&out).1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reruns_failed_tenants_and_never_one_that_wrote() {
    // t0 writes; t1's token fails (before any write); t2's write fails after its mark (a 500
    // on Set-Mailbox, t0's passing first: one job at a time, in order).
    let lab = FleetLab::start(&[&[], &[], &[]], &[1], WRITE_SCRIPT).await;
    lab.emu
        .exchange_faults()
        .queue(&exosim::QueuedExchangeFault::for_cmdlet(
            "Set-Mailbox",
            1,
            exosim::ExchangeFault::ServerError,
        ));
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "all",
            "--concurrency",
            "1",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    let id = fleet_id(&stderr);
    assert_eq!(
        lab.calls_per_domain("Set-Mailbox")
            .get("t0.onmicrosoft.com"),
        Some(&1)
    );
    let rows = results_json(&lab, id).await;
    let states: Vec<(&str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["state"].as_str().unwrap(),
                r["may_have_written"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("completed", true), ("failed", false), ("failed", true)],
        "{rows:?}"
    );
    // Fix t1's secret, then retry: only t1 runs again; t2 is named, never re-run.
    let env: Env = lab
        .env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "FLEET_WRONG_SECRET" => (k.clone(), SECRET.to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let out = warden(&["fleet", "retry", &id.to_string(), "--failed"], &env).await;
    let stderr = text(&out).1;
    assert!(
        stderr.contains("1 failed tenant(s) queued again (t1)"),
        "{stderr}"
    );
    // The run's summary, then the retry: which tenants were queued again, and which were not
    // because they may have written.
    let trail = lab.dir.path().join("audit.jsonl");
    let lines = fleet_lines(&trail);
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["fleet_action"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["recorded", "summary", "retried"], "{lines:?}");
    assert_eq!(lines[1]["fleet_action"]["counts"]["completed"], 1);
    assert_eq!(lines[1]["fleet_action"]["counts"]["failed"], 2);
    let retried = &lines[2]["fleet_action"];
    assert_eq!(retried["requeued"]["names"], serde_json::json!(["t1"]));
    assert_eq!(
        retried["not_requeued_may_have_written"]["names"],
        serde_json::json!(["t2"])
    );
    assert_verifies(&trail, &lab.env).await;
    assert!(
        stderr.contains("not retried, they may have written (check their effect first): t2"),
        "{stderr}"
    );
    let mut worker = spawn_worker(&env, lab.dir.path(), &lab.store_url(), 0);
    let store = lab.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = store.fleet_jobs(id).await.unwrap();
        if jobs[1].run.status.is_final() {
            assert_eq!(jobs[1].run.status, RunStatus::Completed, "{:?}", jobs[1]);
            assert_eq!(jobs[2].run.status, RunStatus::Failed, "t2 stays failed");
            break;
        }
        if let Ok(Some(exit)) = worker.try_wait() {
            panic!(
                "the worker exited ({exit}):\n{}",
                worker_log(lab.dir.path(), 0)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "t1 did not end within 120 s of the retry: {}",
            job_states(&jobs)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The retried run ends with a new summary, in the trail of the worker that ended it.
    let worker_trail = lab.dir.path().join("audit-0.jsonl");
    let summary = wait_for_summaries(&[&worker_trail], 1).await.remove(0);
    assert_eq!(
        summary["fleet_action"]["counts"]["completed"], 2,
        "{summary}"
    );
    assert_eq!(summary["fleet_action"]["counts"]["failed"], 1, "{summary}");
    let _ = worker.start_kill();
    let writes = lab.calls_per_domain("Set-Mailbox");
    assert_eq!(
        writes.get("t0.onmicrosoft.com"),
        Some(&1),
        "t0 never wrote twice"
    );
    assert_eq!(writes.get("t1.onmicrosoft.com"), Some(&1));
    let t2_attempts = lab
        .emu
        .exchange_log()
        .iter()
        .filter(|r| {
            r.cmdlet.as_deref() == Some("Set-Mailbox")
                && format!("{} {}", r.identity.clone().unwrap_or_default(), r.path)
                    .contains("t2.onmicrosoft.com")
        })
        .count();
    assert_eq!(t2_attempts, 1, "t2's failed write was never sent again");
}

/// Every subcommand finds the store `fleet run` used from the same environment, whatever
/// `--audit` said; a reading subcommand pointed elsewhere says so and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_finds_the_store_without_the_audit_flag() {
    let lab = FleetLab::start(&[&[]], &[], READ_SCRIPT).await;
    let with_state = |state: &str| -> Env {
        let mut env: Env = lab
            .env
            .iter()
            .filter(|(k, _)| k != "WARDEN_DATABASE" && k != "WARDEN_AUDIT")
            .cloned()
            .collect();
        env.push((
            "XDG_STATE_HOME".to_owned(),
            lab.dir.path().join(state).display().to_string(),
        ));
        env
    };
    let env = with_state("state");
    let elsewhere = lab.dir.path().join("elsewhere/audit.jsonl");
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "all",
            "--no-work",
            "--audit",
            &elsewhere.display().to_string(),
        ],
        &env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let id = fleet_id(&stderr).to_string();
    for subcommand in ["status", "results"] {
        let out = warden(&["fleet", subcommand, &id], &env).await;
        assert!(out.status.success(), "{subcommand}: {}", text(&out).1);
    }
    let empty = with_state("empty");
    let out = warden(&["fleet", "status", &id], &empty).await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no fleet store at") && stderr.contains("fix:"),
        "{stderr}"
    );
    assert!(
        !lab.dir.path().join("empty/warden/fleet.db").exists(),
        "no empty store was created"
    );
}

/// The first Ctrl-C (SIGINT) lets a `warden worker`'s running jobs end and record their end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_lets_a_workers_running_jobs_end() {
    let lab = FleetLab::start(&[&[], &[], &[]], &[], READ_SCRIPT).await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--no-work"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let id = fleet_id(&stderr);
    // Each answer takes 3 s: the job is mid-call when the signal comes.
    lab.emu
        .exchange_faults()
        .set_latency(Duration::from_secs(3));
    let mut worker = spawn_worker(&lab.env, lab.dir.path(), &lab.store_url(), 0);
    let store = lab.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let running = loop {
        let jobs = store.fleet_jobs(id).await.unwrap();
        let running: Vec<String> = jobs
            .iter()
            .filter(|j| j.run.status == RunStatus::Running)
            .map(|j| j.tenant.clone())
            .collect();
        if !running.is_empty() {
            break running;
        }
        if let Ok(Some(exit)) = worker.try_wait() {
            panic!(
                "the worker exited ({exit}):\n{}",
                worker_log(lab.dir.path(), 0)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker ran no job within 120 s: {}",
            job_states(&jobs)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid = worker.id().expect("a pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(120), worker.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the worker did not stop within 120 s of Ctrl-C:\n{}",
                worker_log(lab.dir.path(), 0)
            )
        })
        .unwrap();
    assert!(exit.success(), "{exit}: {}", worker_log(lab.dir.path(), 0));
    let jobs = store.fleet_jobs(id).await.unwrap();
    for job in &jobs {
        if running.contains(&job.tenant) {
            assert_eq!(
                job.run.status,
                RunStatus::Completed,
                "{} was cut: {}",
                job.tenant,
                job_states(&jobs)
            );
        }
        assert_ne!(job.run.status, RunStatus::Running, "{}", job_states(&jobs));
    }
}

/// `fleet cancel` from a second terminal, with the environment (so the default audit trail) of
/// a `fleet run` that is working: the trail is held by the run, yet the fleet is cancelled
/// (the store first), and the cancel says so, why its line is missing and how to keep one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_working_fleet_run_that_holds_the_trail() {
    let lab = FleetLab::start(&[&[], &[], &[], &[]], &[], READ_SCRIPT).await;
    // Each answer takes 5 s: one tenant at a time, the others wait their turn, long enough for
    // a cancel started on a loaded machine to land before they start.
    lab.emu
        .exchange_faults()
        .set_latency(Duration::from_secs(5));
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
            "--quiet",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &lab.env {
        command.env(k, v);
    }
    let mut run = command.spawn().expect("warden fleet run starts");
    let store = lab.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let id = loop {
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        if stderr.contains("tenant(s)") {
            let id = fleet_id(&stderr);
            let jobs = store.fleet_jobs(id).await.unwrap();
            if jobs.iter().any(|j| j.run.status == RunStatus::Running) {
                break id;
            }
        }
        if let Ok(Some(exit)) = run.try_wait() {
            panic!("fleet run exited ({exit}) before a job ran:\n{stderr}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet run ran no job within 120 s:\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = warden(&["fleet", "cancel", &id.to_string()], &lab.env).await;
    let stderr = text(&out).1;
    assert!(
        store
            .fleet(id)
            .await
            .unwrap()
            .unwrap()
            .cancelled_at
            .is_some(),
        "the fleet was not cancelled: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "fleet {id}: cancelled; its audit line was not written"
        )) && stderr.contains("another process is writing this trail")
            && stderr.contains("fix: pass --audit FILE"),
        "{stderr}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(120), run.wait())
        .await
        .expect("fleet run ends once its running tenant ends")
        .unwrap();
    let run_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        exit.code(),
        Some(1),
        "not every tenant completed: {run_log}"
    );
    let fleet = store.fleet(id).await.unwrap().unwrap();
    let jobs = store.fleet_jobs(id).await.unwrap();
    let (states, progress) = fleet.progress(&jobs);
    assert!(progress.done, "{}", job_states(&jobs));
    assert!(
        states.contains(&JobState::Cancelled),
        "{}",
        job_states(&jobs)
    );
    // The run's trail: its record, and the summary it wrote when its last job ended.
    let trail = lab.dir.path().join("audit.jsonl");
    let lines = fleet_lines(&trail);
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["fleet_action"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["recorded", "summary"], "{lines:?}");
    assert_eq!(lines[1]["fleet_action"]["cancelled"], true);
    assert_verifies(&trail, &lab.env).await;
}

/// The `fleet` lines (a fleet's own: recorded, cancelled, retried, summary) of a trail. A last
/// line with no newline is skipped: a process SIGKILLed (or still writing) mid-line left it
/// torn; every whole line must parse.
fn fleet_lines(trail: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(trail)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["kind"] == "fleet")
        .collect()
}

/// The summary lines of these trails, once there are at least `n` (within 60 s).
async fn wait_for_summaries(trails: &[&std::path::Path], n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let summaries: Vec<Value> = trails
            .iter()
            .flat_map(|trail| fleet_lines(trail))
            .filter(|line| line["fleet_action"]["action"] == "summary")
            .collect();
        if summaries.len() >= n || tokio::time::Instant::now() >= deadline {
            assert!(
                summaries.len() >= n,
                "no summary within 60 s: {summaries:?}"
            );
            return summaries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_verifies(trail: &std::path::Path, env: &Env) {
    let out = warden(&["audit", "verify", &trail.display().to_string()], env).await;
    assert!(out.status.success(), "{}", text(&out).1);
}

/// A fleet worked by two processes at once (`fleet run` and a `warden worker`) is recorded
/// once, with who asked, the guest's digest, the selector, the tenants, waves and limit, and
/// summarised exactly once, by whichever ended its last job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_worked_by_two_processes_is_recorded_and_summarised_once() {
    let tags: Vec<&[&str]> = vec![&["eu"]; 6];
    let lab = FleetLab::start(&tags, &[], READ_SCRIPT).await;
    // Every Exchange answer takes 3 s: both processes hold jobs at once, even when the worker
    // starts slowly on a loaded machine.
    lab.emu
        .exchange_faults()
        .set_latency(Duration::from_secs(3));
    let mut worker = spawn_worker(&lab.env, lab.dir.path(), &lab.store_url(), 0);
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "tag:eu",
            "--max-failures",
            "2",
            "--concurrency",
            "2",
            // The worker's timing: with the default 60 s its sweep (every 1.5 s) would take
            // back this process's jobs between its heartbeats (every 10 s).
            "--heartbeat-secs",
            "1",
            "--stale-after-secs",
            "3",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let id = fleet_id(&stderr);
    let jobs = lab.store().await.fleet_jobs(id).await.unwrap();
    let instances: std::collections::BTreeSet<String> = jobs
        .iter()
        .map(|j| {
            let worker = j.run.worker.clone().unwrap_or_default();
            worker.split('/').next().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(
        instances.len(),
        2,
        "both processes ran jobs: {}",
        job_states(&jobs)
    );
    let own = lab.dir.path().join("audit.jsonl");
    let theirs = lab.dir.path().join("audit-0.jsonl");
    let summaries = wait_for_summaries(&[&own, &theirs], 1).await;
    // Give a second summary (a bug) time to appear before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = worker.start_kill();
    let summaries_now = wait_for_summaries(&[&own, &theirs], 1).await;
    assert_eq!(summaries_now.len(), 1, "{summaries_now:?}");
    let summary = &summaries[0];
    assert_eq!(summary["run_id"], id.to_string());
    assert_eq!(
        summary["fleet_action"]["counts"],
        serde_json::json!({"completed": 6})
    );
    assert_eq!(summary["fleet_action"]["outcome_unknown"]["count"], 0);
    let recorded = fleet_lines(&own).remove(0);
    assert_eq!(recorded["fleet_action"]["action"], "recorded", "{recorded}");
    assert_eq!(recorded["run_id"], id.to_string());
    assert_eq!(
        recorded["principal"]["sha256"],
        warden_policy::sha256_hex(READ_SCRIPT.as_bytes())
    );
    let action = &recorded["fleet_action"];
    assert_eq!(action["by"], "local:operator");
    assert_eq!(action["selector"], "tag:eu");
    assert_eq!(
        action["tenants"]["names"],
        serde_json::json!(["t0", "t1", "t2", "t3", "t4", "t5"])
    );
    assert_eq!(action["waves"], serde_json::json!([6]));
    assert_eq!(action["max_failures"], 2);
    assert!(
        fleet_lines(&theirs)
            .iter()
            .all(|l| l["fleet_action"]["action"] == "summary")
    );
    assert_verifies(&own, &lab.env).await;
    assert_verifies(&theirs, &lab.env).await;
}

/// The README's MSP walkthrough ("Try it offline: five customers on exosim"), as written: its
/// shell lines run with bash (jq and sed write the config and policy from exosim's ready file),
/// exosim serves `--tenants 5 --unconsented 4` (in process, with the options those flags set),
/// and the real `warden` runs the fleet, `status` and `results --output csv`. Every tenant uses
/// the multi-tenant app's one secret; the consented ones complete, tenant 4 fails alone.
/// Stands for the walkthrough's `cargo run -p exosim` line in the script the test runs.
const EXOSIM_STAND_IN: &str = "# exosim starts here";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_msp_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(crate::support::repo_root().join("README.md")).unwrap();
    let section = readme
        .split("### Try it offline: five customers on exosim")
        .nth(1)
        .expect("the README has the walkthrough");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the walkthrough's shell block");
    // The exosim line (with its continuation) starts the emulator, the warden lines are run
    // below through the binary; the rest is run as written, in a temporary directory.
    let mut setup = Vec::new();
    let mut warden_lines = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("cargo run -p exosim") {
            assert!(
                line.contains("--tenants 5 --unconsented 4") || {
                    let next = lines.next().unwrap_or_default();
                    next.contains("--tenants 5 --unconsented 4")
                }
            );
            // In its place the ready file appears a moment later, as exosim would write it
            // (renamed into place): the lines around it must wait for it.
            setup.push(EXOSIM_STAND_IN);
        } else if let Some(rest) = line.strip_prefix("cargo run -p warden -- ") {
            warden_lines.push(rest.to_owned());
        } else {
            setup.push(line);
        }
    }
    assert_eq!(
        warden_lines,
        [
            "fleet run /tmp/msp/largest-mailboxes.rhai --tenants tag:customers",
            "fleet status ID",
            "fleet results ID --output csv",
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let msp = dir.path().join("msp").display().to_string();
    std::fs::create_dir_all(&msp).unwrap();
    let emu = crate::support::Emulator::start_with(|options| {
        options
            .tenants
            .add_fleet(&exosim::FleetConfig {
                tenants: 5,
                unconsented: vec![4],
                mailboxes: 5,
            })
            .unwrap();
    })
    .await;
    let ready = dir.path().join("ready.json").display().to_string();
    std::fs::write(&ready, serde_json::to_string_pretty(&emu.ready).unwrap()).unwrap();
    // A ready file of an earlier run, which the walkthrough must not read.
    std::fs::write(format!("{msp}/exosim.json"), "{\"url\": \"stale\"}").unwrap();
    let stand_in = format!(
        "(sleep 1; cp {ready} /tmp/msp/.exosim.json.tmp && \
         mv /tmp/msp/.exosim.json.tmp /tmp/msp/exosim.json) &"
    );
    let script = format!("set -e\n{}\nenv\n", setup.join("\n"))
        .replace(EXOSIM_STAND_IN, &stand_in)
        .replace("/tmp/msp", &msp);
    let jq = std::process::Command::new("jq").arg("--version").output();
    assert!(
        jq.is_ok_and(|out| out.status.success()),
        "jq is not installed, and the README's walkthrough runs it: install jq (`apt-get install \
         jq`; tests/run.sh and .ci/run install it)"
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(crate::support::repo_root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the walkthrough's setup failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wanted = [
        "AZURE_AUTHORITY_HOST",
        "WARDEN_EXCHANGE_URL",
        "WARDEN_CA_FILE",
        "MSP_SECRET",
        "WARDEN_CONFIG",
        "WARDEN_POLICY",
        "WARDEN_DATABASE",
        "WARDEN_AUDIT",
    ];
    let mut env: Env = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(k, _)| wanted.contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(env.len(), wanted.len(), "{env:?}");
    env.push(("WARDEN_AUDIT_KEY".to_owned(), format!("{msp}/audit.key")));
    // One credential for every tenant: the config names the multi-tenant app only.
    let config = std::fs::read_to_string(format!("{msp}/config.toml")).unwrap();
    assert_eq!(config.matches("tenant_id = ").count(), 5, "{config}");
    assert_eq!(
        config.matches(exosim::FLEET_CLIENT_ID).count(),
        5,
        "{config}"
    );
    let run = warden_lines[0].replace("/tmp/msp", &msp);
    let args: Vec<&str> = run.split(' ').collect();
    let out = warden(&args, &env).await;
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "one tenant fails: {stderr}");
    let id = fleet_id(&stderr).to_string();
    let out = warden(&["fleet", "status", &id], &env).await;
    let status = text(&out).0;
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(
        status.contains("completed") && status.contains("done"),
        "{status}"
    );
    let out = warden(&["fleet", "results", &id, "--output", "csv"], &env).await;
    assert!(out.status.success(), "{}", text(&out).1);
    let mut csv = csv::Reader::from_reader(out.stdout.as_slice());
    let rows: Vec<(String, String, String)> = csv
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[1].to_owned(), r[4].to_owned())
        })
        .collect();
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|(t, s, _)| (t.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("tenant-001", "completed"),
            ("tenant-002", "completed"),
            ("tenant-003", "completed"),
            ("tenant-004", "failed"),
            ("tenant-005", "completed"),
        ],
        "{rows:?}"
    );
    assert!(rows[3].2.contains("AADSTS700016"), "{rows:?}");
    let out = warden(&["audit", "verify", &format!("{msp}/audit.jsonl")], &env).await;
    assert!(out.status.success(), "{}", text(&out).1);
}

/// A `warden worker` process with its own audit trail (a trail is one process's), running two
/// jobs at once.
fn spawn_worker(
    env: &Env,
    dir: &std::path::Path,
    database: &str,
    n: usize,
) -> tokio::process::Child {
    spawn_worker_running(env, dir, database, n, 2)
}

/// [`spawn_worker`] running `concurrency` jobs at once.
fn spawn_worker_running(
    env: &Env,
    dir: &std::path::Path,
    database: &str,
    n: usize,
    concurrency: u32,
) -> tokio::process::Child {
    let audit = dir.join(format!("audit-{n}.jsonl"));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args([
            "worker",
            "--database",
            database,
            "--concurrency",
            &concurrency.to_string(),
            "--heartbeat-secs",
            "1",
            "--stale-after-secs",
            "3",
            "--audit",
            &audit.display().to_string(),
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("worker-{n}.log"))).expect("a worker log file"),
        );
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("warden worker starts")
}

/// The job states of a fleet, for failure messages.
fn job_states(jobs: &[warden_store::FleetJob]) -> String {
    let states: Vec<String> = jobs
        .iter()
        .map(|j| {
            format!(
                "{} {} attempt {} by {}",
                j.tenant,
                j.run.status,
                j.run.attempt,
                j.run.worker.as_deref().unwrap_or("-")
            )
        })
        .collect();
    states.join("; ")
}

/// A worker's stderr so far (spawn_worker writes it to `worker-N.log`).
fn worker_log(dir: &std::path::Path, n: usize) -> String {
    std::fs::read_to_string(dir.join(format!("worker-{n}.log"))).unwrap_or_default()
}

/// The tenants of the scale tests: enough that three workers share the fleet for a while.
const FLEET_OF: usize = 50;

/// Every write (`Set-Mailbox`) applies at once but is answered this late: a job holds its
/// `may_have_written` mark for that long, so a kill seen during the mark lands inside it.
const SLOW_WRITE_MS: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_postgres_end_every_job_once_despite_a_kill() {
    let Some(server) = warden_store::testing::Postgres::shared() else {
        return;
    };
    let database = server.create_database().await;
    fifty_tenants_three_workers_one_killed(Some(&database)).await;
}

/// The same fleet with no database server: the embedded SQLite file the workers of one machine
/// share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_sqlite_end_every_job_once_despite_a_kill() {
    fifty_tenants_three_workers_one_killed(None).await;
}

/// 50 tenants, one write each, worked by three `warden worker` processes; one is killed with
/// SIGKILL while it holds a job that marked its write. Every job ends once (completed, failed or
/// outcome-unknown), exosim's log shows no write applied twice, and a write it shows for a
/// tenant that did not complete is reported (outcome-unknown). `database`: PostgreSQL's URL,
/// else the lab's SQLite file.
async fn fifty_tenants_three_workers_one_killed(database: Option<&str>) {
    let tags: Vec<&[&str]> = vec![&[]; FLEET_OF];
    let lab = FleetLab::start(&tags, &[], WRITE_SCRIPT).await;
    let on_postgres = database.is_some();
    let database = database.map_or_else(|| lab.store_url(), str::to_owned);
    let mut env = lab.env.clone();
    env.push(("WARDEN_DATABASE".to_owned(), database.clone()));
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--no-work"],
        &env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let id = fleet_id(&stderr);
    let store = Store::open(&database).await.unwrap();
    // Jobs stay in flight (12 reads at 100 ms), and each write's mark lasts 5 s.
    let faults = lab.emu.exchange_faults();
    faults.set_latency(Duration::from_millis(100));
    faults.queue(&exosim::QueuedExchangeFault {
        fault: exosim::ExchangeFault::SlowAnswer {
            delay_ms: SLOW_WRITE_MS,
        },
        count: FLEET_OF,
        cmdlet: Some("Set-Mailbox".to_owned()),
        after: 0,
    });
    // Six jobs at once per worker: the 50 slow jobs end in about four rounds where two took
    // about nine (80 s), and each worker still works a share of the fleet.
    let mut workers: Vec<_> = (0..3)
        .map(|n| spawn_worker_running(&lab.env, lab.dir.path(), &database, n, 6))
        .collect();
    let victim_pid = workers[0].id().expect("a pid");
    let victims = |job: &warden_store::FleetJob| {
        job.run
            .worker
            .as_deref()
            .is_some_and(|w| w.contains(&format!(":{victim_pid}:")))
    };
    let by_victim =
        |job: &&warden_store::FleetJob| job.run.status == RunStatus::Running && victims(job);
    let check_alive = |workers: &mut Vec<tokio::process::Child>, from: usize| {
        for (n, worker) in workers.iter_mut().enumerate().skip(from) {
            if let Ok(Some(exit)) = worker.try_wait() {
                panic!(
                    "worker {n} exited ({exit}):\n{}",
                    worker_log(lab.dir.path(), n)
                );
            }
        }
    };
    // Mid-run: some tenants ended, and the victim holds a job that marked its write less than
    // a second ago, so about 4 s of its 5 s answer are left when the kill lands (a job marked
    // long ago may end before the kill).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut first_seen_marked: HashMap<(String, u64), tokio::time::Instant> = HashMap::new();
    loop {
        check_alive(&mut workers, 0);
        let jobs = store.fleet_jobs(id).await.unwrap();
        let ended = jobs.iter().filter(|j| j.run.status.is_final()).count();
        let now = tokio::time::Instant::now();
        let mut fresh = false;
        for job in jobs
            .iter()
            .filter(by_victim)
            .filter(|j| j.run.may_have_written)
        {
            let seen = *first_seen_marked
                .entry((job.tenant.clone(), job.run.attempt))
                .or_insert(now);
            fresh |= now - seen < Duration::from_secs(1);
        }
        if ended >= 3 && fresh {
            break;
        }
        assert!(
            ended < jobs.len() && tokio::time::Instant::now() < deadline,
            "the victim never held a job in its write while the fleet ran: {}",
            job_states(&jobs)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut victim = workers.remove(0);
    victim.start_kill().unwrap();
    victim.wait().await.expect("the victim is reaped");
    // What the kill cut: the victim's jobs still running once it is dead, and those a survivor's
    // sweep already made outcome-unknown (it keeps the victim's name on them).
    let cut: Vec<warden_store::FleetJob> = store
        .fleet_jobs(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| {
            victims(j) && matches!(j.run.status, RunStatus::Running | RunStatus::OutcomeUnknown)
        })
        .collect();
    assert!(
        cut.iter().any(|j| j.run.may_have_written),
        "the kill cut no job in its write: {}",
        job_states(&cut)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let ended = loop {
        let jobs = store.fleet_jobs(id).await.unwrap();
        if jobs.iter().all(|j| j.run.status.is_final()) {
            break jobs;
        }
        // The survivors are workers 1 and 2, now at 0 and 1.
        for (n, worker) in workers.iter_mut().enumerate() {
            if let Ok(Some(exit)) = worker.try_wait() {
                panic!(
                    "worker {} exited ({exit}):\n{}",
                    n + 1,
                    worker_log(lab.dir.path(), n + 1)
                );
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet did not end within 600 s of the kill: {}",
            job_states(&jobs)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Exactly one summary over every worker's trail (the victim's included).
    let trails: Vec<std::path::PathBuf> = (0..3)
        .map(|n| lab.dir.path().join(format!("audit-{n}.jsonl")))
        .collect();
    let trails: Vec<&std::path::Path> = trails.iter().map(|p| p.as_path()).collect();
    wait_for_summaries(&trails, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for worker in &mut workers {
        let _ = worker.start_kill();
    }
    let summaries = wait_for_summaries(&trails, 1).await;
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let summary = &summaries[0]["fleet_action"];
    // The jobs the kill cut were taken back: one that had marked its write is outcome-unknown
    // under the victim's name (never run again), one still reading ran again elsewhere.
    for cut in &cut {
        let job = ended.iter().find(|j| j.tenant == cut.tenant).unwrap();
        if cut.run.may_have_written {
            // Outcome-unknown under the victim's name, or, when its finish landed after that
            // read (PostgreSQL, as below), completed by the victim: never run again either way.
            let ended_by = (job.run.status, job.run.attempt, &job.run.worker);
            let finished_late =
                on_postgres && ended_by == (RunStatus::Completed, cut.run.attempt, &cut.run.worker);
            assert!(
                ended_by == (RunStatus::OutcomeUnknown, cut.run.attempt, &cut.run.worker)
                    || finished_late,
                "{} was cut in its write: {}",
                cut.tenant,
                job_states(&ended)
            );
        } else {
            // Still reading when the store was read after the kill: run again elsewhere, or,
            // when its mark landed after that read (PostgreSQL commits a statement whose client
            // sent it before dying), outcome-unknown under the victim's name, never run again.
            let marked_late = (job.run.status, job.run.attempt, &job.run.worker)
                == (RunStatus::OutcomeUnknown, cut.run.attempt, &cut.run.worker)
                && job.run.may_have_written;
            assert!(
                job.run.attempt > cut.run.attempt || marked_late,
                "{}, cut by the kill, was not recovered: {}",
                cut.tenant,
                job_states(&ended)
            );
        }
    }
    let fleet = store.fleet(id).await.unwrap().unwrap();
    let (states, progress) = fleet.progress(&ended);
    assert!(progress.done, "{progress:?}");
    // `fleet status` reads the same store and the summary sums it up: both name exactly the
    // outcome-unknown tenants, and the summary's counts are the store's.
    let out = warden(&["fleet", "status", &id.to_string()], &env).await;
    let status = text(&out).0;
    assert!(status.lines().any(|l| l.trim() == "done"), "{status}");
    let unknown: std::collections::BTreeSet<String> = ended
        .iter()
        .zip(&states)
        .filter(|(_, state)| **state == JobState::OutcomeUnknown)
        .map(|(job, _)| job.tenant.clone())
        .collect();
    let named: std::collections::BTreeSet<String> = status
        .lines()
        .find_map(|l| l.strip_prefix("outcome unknown ("))
        .and_then(|l| l.split_once("): "))
        .map(|(_, names)| names.split(", ").map(str::to_owned).collect())
        .unwrap_or_default();
    assert_eq!(named, unknown, "{status}");
    let summarised: std::collections::BTreeSet<String> = summary["outcome_unknown"]["names"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(summarised, unknown, "{summary}");
    let counts: serde_json::Map<String, Value> = progress
        .counts
        .iter()
        .map(|(state, n)| (state.as_str().to_owned(), Value::from(*n)))
        .collect();
    assert_eq!(summary["counts"], Value::Object(counts), "{summary}");
    // Each job ended once, and exosim received at most one write per tenant, whatever it
    // answered: a write sent twice (the second changes nothing) is seen.
    let writes = lab.writes_sent();
    assert_eq!(ended.len(), FLEET_OF);
    for (job, state) in ended.iter().zip(&states) {
        let sent = writes.get(&job.tenant).cloned().unwrap_or_default();
        assert!(sent.len() <= 1, "{} was written {sent:?}", job.tenant);
        match state {
            JobState::Completed => {
                assert!(
                    matches!(sent[..], [(200..300, true)]),
                    "{} completed with writes {sent:?}",
                    job.tenant
                );
            }
            // Cut after its mark by the kill, or taken back by the sweep: reported, never
            // re-run; the write may or may not have landed. Nothing else ends this way.
            JobState::OutcomeUnknown => {
                assert!(job.run.may_have_written, "{}", job.tenant);
                let swept = job.run.error.as_deref().is_some_and(|e| {
                    e.contains("the worker running this run stopped after it may have sent a write")
                });
                assert!(
                    cut.iter().any(|c| c.tenant == job.tenant) || swept,
                    "{} is outcome-unknown but was not cut by the kill: {:?}",
                    job.tenant,
                    job.run.error
                );
            }
            // Only a token the loaded machine could not get in time fails a job, before any
            // write; any other failure (a guest that fails, say) is a defect.
            JobState::Failed => {
                assert!(sent.is_empty(), "{}: {sent:?}", job.tenant);
                assert!(
                    job.run
                        .error
                        .as_deref()
                        .is_some_and(|e| e.to_ascii_lowercase().contains("token")),
                    "{} failed: {:?}",
                    job.tenant,
                    job.run.error
                );
            }
            other => panic!("{} ended {other:?}: {:?}", job.tenant, job.run.error),
        }
    }
}

/// A fleet runs the guest it recorded, by its SHA-256: once the file changed, a worker that had
/// not read it yet runs none of its jobs, each failed with an error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_changed_after_the_fleet_was_recorded_is_not_run() {
    let lab = FleetLab::start(&[&[], &[]], &[], READ_SCRIPT).await;
    let out = warden(
        &["fleet", "run", &lab.script, "--tenants", "all", "--no-work"],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let id = fleet_id(&stderr);
    std::fs::write(&lab.script, format!("{READ_SCRIPT}// changed\n")).unwrap();
    let mut worker = spawn_worker(&lab.env, lab.dir.path(), &lab.store_url(), 0);
    let store = lab.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let jobs = loop {
        let jobs = store.fleet_jobs(id).await.unwrap();
        if jobs.iter().all(|j| j.run.status.is_final()) {
            break jobs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the jobs did not end: {}\n{}",
            job_states(&jobs),
            worker_log(lab.dir.path(), 0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = worker.start_kill();
    for job in &jobs {
        assert_eq!(job.run.status, RunStatus::Failed, "{}", job_states(&jobs));
        let error = job.run.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("changed since the fleet was created"),
            "{}: {error}",
            job.tenant
        );
    }
    // Nothing of the changed guest reached Exchange.
    assert!(lab.calls_per_domain("Get-Mailbox").is_empty());
}

/// t0 calls Exchange far past its tenant's rate; the others call once.
const HEAVY_T0_SCRIPT: &str = "let m = exo::invoke(\"Get-Mailbox\", #{ResultSize: 1});\n\
    if m[0].PrimarySmtpAddress.ends_with(\"@t0.onmicrosoft.com\") {\n\
        for i in 0..45 { exo::invoke(\"Get-Mailbox\", #{ResultSize: 1}); }\n\
    }\n\
    m[0].PrimarySmtpAddress\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_throttled_hard_does_not_slow_the_others() {
    let lab = FleetLab::start_with(&[&[], &[], &[], &[]], &[], HEAVY_T0_SCRIPT, |options| {
        options.throttle = Some(exosim::Throttle {
            per_second: 2.0,
            burst: 5,
        });
    })
    .await;
    let out = warden(
        &[
            "fleet",
            "run",
            &lab.script,
            "--tenants",
            "all",
            "--concurrency",
            "4",
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    let id = fleet_id(&stderr);
    let jobs = lab.store().await.fleet_jobs(id).await.unwrap();
    let took = |tenant: &str| {
        let job = jobs.iter().find(|j| j.tenant == tenant).unwrap();
        job.run.finished_at.unwrap() - job.run.started_at.unwrap()
    };
    let heavy = took("t0");
    // 46 calls at 2 a second past a burst of 5 (about 20 s, so the 3× margin below leaves a
    // light tenant's job 6 s on a loaded machine): t0 was held back by its tenant's rate (429s
    // or the session's pacing from the rate headers).
    assert!(
        heavy > time::Duration::seconds(3),
        "t0 took only {heavy}: {stderr}"
    );
    for tenant in ["t1", "t2", "t3"] {
        let job = jobs.iter().find(|j| j.tenant == tenant).unwrap();
        assert_eq!(
            job.run.status,
            RunStatus::Completed,
            "{tenant}: {:?}",
            job.run.error
        );
        // Each ran at its own tenant's pace while t0 waited out its 429s.
        assert!(
            took(tenant) * 3 < heavy,
            "{tenant} took {} while t0 took {heavy}",
            took(tenant)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_runs_as_a_fleet_too() {
    let plugin = crate::support::guest("plugins", "mailbox-report");
    let lab = FleetLab::start(&[&[], &[]], &[], READ_SCRIPT).await;
    let sha = warden_policy::sha256_hex(&std::fs::read(&plugin).unwrap());
    let policy = std::fs::read_to_string(
        crate::support::repo_root().join("plugins/mailbox-report/policy.toml"),
    )
    .unwrap()
    .replace(&"0".repeat(64), &sha);
    let policy_path = lab.dir.path().join("plugin-policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let out = warden(
        &[
            "fleet",
            "run",
            &plugin.display().to_string(),
            "--tenants",
            "all",
            "--policy",
            &policy_path.display().to_string(),
            "--quiet",
        ],
        &lab.env,
    )
    .await;
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    let rows = results_json(&lab, fleet_id(&stderr)).await;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["state"], "completed", "{row}");
        // The plugin's report lists the tenant's own mailboxes.
        assert!(
            row["output"]
                .to_string()
                .contains(&format!("@t{i}.onmicrosoft.com")),
            "{row}"
        );
    }
}
