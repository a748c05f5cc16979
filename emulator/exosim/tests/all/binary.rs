//! The `exosim serve` binary contract: it writes the ready file once listening, the file has the
//! documented keys and works, and bad arguments or configuration fail clearly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{EXO_SCOPE, https_client, run};

const EXE: &str = env!("CARGO_BIN_EXE_exosim");

/// Kills the child when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file(path: &Path, child: &mut Child) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text)
                .expect("the ready file is complete JSON when it appears");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exosim exited early with {status}");
        }
        assert!(Instant::now() < deadline, "no ready file after 30 s");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn serve_writes_a_ready_file_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("ready.json");
    let state_dir = dir.path().join("state");
    let child = Command::new(EXE)
        .args(["serve", "--bind", "127.0.0.1:0", "--ready-file"])
        .arg(&ready_file)
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["--token-lifetime", "42", "--refresh-in", "21"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn exosim");
    let mut guard = Guard(child);
    let ready = wait_for_file(&ready_file, &mut guard.0);

    for key in [
        "url",
        "ca_file",
        "tenants",
        "imds_endpoint",
        "identity_endpoint",
        "identity_header",
        "managed_identities",
        "federation_issuer",
        "control",
    ] {
        assert!(ready.get(key).is_some(), "ready file lacks {key}: {ready}");
    }
    let url = ready["url"].as_str().unwrap();
    assert!(url.starts_with("https://localhost:") && !url.ends_with('/'));
    assert_eq!(
        ready["ca_file"].as_str().map(Path::new),
        Some(state_dir.join("ca.pem").as_path())
    );
    let tenant = &ready["tenants"][0];
    assert_eq!(tenant["tenant_id"], exosim::DEMO_TENANT_ID);
    assert_eq!(tenant["domain"], "contoso.onmicrosoft.com");
    let apps = tenant["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 4);
    for app in apps {
        for key in [
            "client_id",
            "client_secret",
            "certificate_pfx",
            "certificate_password",
            "certificate_pem",
            "key_pem",
            "thumbprint_sha1",
            "thumbprint_sha256",
            "roles",
            "wids",
        ] {
            assert!(!app[key].is_null(), "app lacks {key}: {app}");
        }
        assert!(Path::new(app["certificate_pfx"].as_str().unwrap()).is_file());
        let sha1 = app["thumbprint_sha1"].as_str().unwrap();
        assert!(
            sha1.len() == 40
                && sha1
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
    }
    assert_eq!(apps[0]["roles"][0], exosim::EXCHANGE_MANAGE_AS_APP);
    assert_eq!(apps[0]["wids"][0], exosim::EXCHANGE_ADMINISTRATOR_ROLE);
    assert!(
        apps[1]["roles"].as_array().unwrap().is_empty(),
        "second app lacks the role"
    );
    assert!(
        apps[2]["wids"].as_array().unwrap().is_empty(),
        "third app lacks wids"
    );
    assert!(ready["managed_identities"][0]["client_id"].is_string());

    // The file describes a working server that honours --token-lifetime and --refresh-in.
    let client = https_client(Path::new(ready["ca_file"].as_str().unwrap()));
    let token_endpoint = tenant["token_endpoint"].as_str().unwrap().to_owned();
    let (client_id, secret) = (
        apps[0]["client_id"].as_str().unwrap().to_owned(),
        apps[0]["client_secret"].as_str().unwrap().to_owned(),
    );
    let body: Value = run(async {
        client
            .post(token_endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("scope", EXO_SCOPE),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["expires_in"], 42, "{body}");
    assert_eq!(body["refresh_in"], 21, "{body}");

    // SIGTERM stops it cleanly.
    #[cfg(unix)]
    {
        let pid = guard.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = guard.0.try_wait().unwrap() {
                assert!(status.success(), "exit status after SIGTERM: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "exosim did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn run_to_failure(args: &[&str]) -> (i32, String) {
    let output = Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run exosim");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_and_configuration_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let ready = ready.to_str().unwrap();

    let (code, stderr) =
        run_to_failure(&["serve", "--ready-file", ready, "--bind", "not-an-address"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--bind"), "{stderr}");

    let (code, stderr) = run_to_failure(&["serve"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--ready-file"), "{stderr}");

    let missing = dir.path().join("nope.toml");
    let (code, stderr) = run_to_failure(&[
        "serve",
        "--ready-file",
        ready,
        "--config",
        missing.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("nope.toml"), "{stderr}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[tenant]]\ntenant_id = \"x\"\ndomain = \"a.example\"\n",
    )
    .unwrap();
    let (code, stderr) = run_to_failure(&[
        "serve",
        "--ready-file",
        ready,
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("not a GUID"),
        "{stderr}"
    );

    let (code, stderr) = run_to_failure(&["serve", "--ready-file", ready, "--token-lifetime", "0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--token-lifetime"), "{stderr}");

    assert!(
        !Path::new(ready).exists(),
        "no ready file after a failed start"
    );
}

#[test]
fn bad_remote_powershell_arguments_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let ready = ready.to_str().unwrap();
    let (code, stderr) =
        run_to_failure(&["serve", "--ready-file", ready, "--onprem-basic", "no-colon"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("USER:PASSWORD"), "{stderr}");
    let (code, stderr) = run_to_failure(&["serve", "--ready-file", ready, "--rps-max-shells", "0"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("'0' is not a positive number of shells"),
        "{stderr}"
    );
    assert!(!Path::new(ready).exists());
}

/// `--tenants N` generates a fleet behind the demo tenant, `--unconsented` leaves the fleet app
/// out of some, `--tenant-mailboxes` sizes them and `--exchange-latency-ms` slows every
/// Exchange answer; out-of-range indexes fail before anything is bound.
#[test]
fn serve_generates_a_fleet_of_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("ready.json");
    // In the test's own dir: the child is killed, so it cannot remove a temporary one (which
    // would hold the fleet app's key).
    let state_dir = dir.path().join("state");
    let child = Command::new(EXE)
        .args(["serve", "--ready-file"])
        .arg(&ready_file)
        .arg("--state-dir")
        .arg(&state_dir)
        .args([
            "--tenants",
            "3",
            "--unconsented",
            "2",
            "--tenant-mailboxes",
            "2",
        ])
        .args(["--exchange-latency-ms", "150"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn exosim");
    let mut guard = Guard(child);
    let ready = wait_for_file(&ready_file, &mut guard.0);
    assert!(
        Path::new(ready["ca_file"].as_str().unwrap()).starts_with(&state_dir),
        "{ready}"
    );
    let tenants = ready["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 4);
    assert_eq!(tenants[0]["tenant_id"], exosim::DEMO_TENANT_ID);
    assert_eq!(tenants[3]["domain"], "tenant-003.onmicrosoft.com");
    assert_eq!(tenants[3]["tenant_id"], exosim::FleetConfig::tenant_id(3));
    let app = &ready["multi_tenant_apps"][0];
    assert_eq!(app["client_id"], exosim::FLEET_CLIENT_ID);
    assert_eq!(
        app["unconsented_tenant_ids"],
        serde_json::json!([exosim::FleetConfig::tenant_id(2)])
    );

    let client = https_client(Path::new(ready["ca_file"].as_str().unwrap()));
    let url = ready["url"].as_str().unwrap().to_owned();
    let secret = app["client_secret"].as_str().unwrap().to_owned();
    let (rows, elapsed, entity_elapsed) = run(async {
        let token: Value = client
            .post(format!(
                "{url}/tenant-003.onmicrosoft.com/oauth2/v2.0/token"
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", exosim::FLEET_CLIENT_ID),
                ("client_secret", &secret),
                ("scope", EXO_SCOPE),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let access_token = token["access_token"].as_str().expect("a token");
        // A global clear drops run-time settings, not the configured latency.
        let cleared = client
            .delete(format!("{url}/_exosim/exchange-faults"))
            .send()
            .await
            .unwrap();
        assert!(cleared.status().is_success());
        let started = Instant::now();
        let answer: Value = client
            .post(format!(
                "{url}/adminapi/beta/tenant-003.onmicrosoft.com/InvokeCommand"
            ))
            .bearer_auth(access_token)
            .json(&serde_json::json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let started = Instant::now();
        let entity = client
            .get(format!(
                "{url}/adminapi/beta/tenant-003.onmicrosoft.com/Mailbox"
            ))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(entity.status(), 200);
        (
            answer["value"].as_array().unwrap().len(),
            elapsed,
            started.elapsed(),
        )
    });
    assert_eq!(rows, 2, "--tenant-mailboxes");
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(
        entity_elapsed >= Duration::from_millis(150),
        "Get-EXO* entity reads are Exchange answers too: {entity_elapsed:?}"
    );

    let ready = dir.path().join("other.json");
    let ready = ready.to_str().unwrap();
    let (code, stderr) = run_to_failure(&[
        "serve",
        "--ready-file",
        ready,
        "--tenants",
        "3",
        "--unconsented",
        "5",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unconsented tenant 5"), "{stderr}");
    let (code, stderr) = run_to_failure(&["serve", "--ready-file", ready, "--unconsented", "1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--tenants"), "{stderr}");
}
