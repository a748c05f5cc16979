//! `warden run`'s token requests: a granted run asks Entra for a token only when its guest
//! makes a call (a run that makes none sends nothing, not even with a wrong secret), a run
//! with one call asks once, and a failing token request is the call's one clear error.

use crate::support::*;
use serde_json::Value;

struct Cold {
    emu: Emulator,
    env: Env,
    probe: String,
}

impl Cold {
    async fn start(secret: Option<&str>) -> Self {
        let emu = Emulator::start().await;
        let dir = emu.dir.path();
        let secret = secret.map_or_else(|| emu.app_str(0, "client_secret"), str::to_owned);
        let env = with(
            emu.env_for(0),
            &[
                ("AZURE_CLIENT_SECRET", &secret),
                (
                    "WARDEN_AUDIT",
                    &dir.join("audit.jsonl").display().to_string(),
                ),
                (
                    "WARDEN_AUDIT_KEY",
                    &dir.join("audit.key").display().to_string(),
                ),
                ("WARDEN_CACHE_DIR", &dir.join("cache").display().to_string()),
            ],
        );
        let probe = guest("tests/guests", "probe").display().to_string();
        Self { emu, env, probe }
    }

    /// A policy granting the plugin pinned to `sha256` under the name `probe` the role
    /// `reader` (Get-Mailbox).
    fn policy(&self, sha256: &str) -> String {
        let path = self.emu.dir.path().join("policy.toml");
        std::fs::write(
            &path,
            format!(
                "version = 1\n[roles.reader]\n[[roles.reader.cmdlet]]\nname = \"Get-Mailbox\"\nmax_result_size = 5\n\n[[grant]]\nid = \"probe\"\nplugin = \"probe\"\nsha256 = \"{sha256}\"\nroles = [\"reader\"]\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    fn probe_sha256(&self) -> String {
        warden_policy::sha256_hex(&std::fs::read(&self.probe).unwrap())
    }

    async fn run(&self, policy: &str, args: &[&str]) -> std::process::Output {
        let mut argv = vec![
            "run",
            &self.probe,
            "--policy",
            policy,
            "--quiet",
            "--output",
            "json",
            "--",
        ];
        argv.extend_from_slice(args);
        warden(&argv, &self.env).await
    }
}

/// A granted run whose guest makes no call sends no token request: the token is asked for
/// at the guest's first call, not at the run's start, so Entra sees no sign-in (and, with a
/// wrong secret, no failed one) for it. The guest sleeps long enough for any request started
/// at the run's start to reach exosim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_run_that_makes_no_call_sends_no_token_request() {
    let cold = Cold::start(None).await;
    let policy = cold.policy(&cold.probe_sha256());
    let out = cold.run(&policy, &["sleep", "1500"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("slept_ms"), "{stdout}");
    assert_eq!(
        cold.emu.token_requests(),
        0,
        "a run that made no call asked for a token"
    );
}

/// A granted run with one call makes exactly one token request, and the call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_run_makes_one_token_request() {
    let cold = Cold::start(None).await;
    let policy = cold.policy(&cold.probe_sha256());
    let out = cold
        .run(&policy, &["invoke", "Get-Mailbox", r#"{"ResultSize":1}"#])
        .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(value["ok"].as_array().map(Vec::len), Some(1), "{value}");
    assert_eq!(cold.emu.token_requests(), 1);
    assert_eq!(cold.emu.requests_for("Get-Mailbox"), 1);
}

/// A wrong client secret: the guest's call fails, the guest learns only that no token could
/// be had, the operator's stderr names the credential problem, and the run made one token
/// request (a credential error is not retried). The compiled-code cache is warmed first by a
/// run that makes no call, so compiling cannot stretch the run past the provider's 5 s
/// negative cache and make a second request look like a retry (or hide one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_request_is_the_calls_one_clear_error() {
    let cold = Cold::start(Some("not-the-secret")).await;
    let policy = cold.policy(&cold.probe_sha256());
    let warm = cold.run(&policy, &["echo-args", "warm"]).await;
    assert!(warm.status.success(), "{}", text(&warm).1);
    assert_eq!(cold.emu.token_requests(), 0, "the warm-up run asked");
    let out = cold
        .run(&policy, &["invoke", "Get-Mailbox", r#"{"ResultSize":1}"#])
        .await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "the probe reports a call error itself: {stderr}"
    );
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        value["error"],
        serde_json::json!({
            "kind": "unavailable",
            "message": "the host could not obtain a token for Exchange (see the warden log)"
        }),
        "{stderr}"
    );
    assert!(
        stderr.contains("AADSTS7000215"),
        "the operator learns why: {stderr}"
    );
    assert!(!stderr.contains("not-the-secret") && !stdout.contains("not-the-secret"));
    assert_eq!(
        cold.emu.token_requests(),
        1,
        "the failing token request was sent more than once"
    );
    assert_eq!(cold.emu.requests_for("Get-Mailbox"), 0);
}
