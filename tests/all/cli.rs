//! The `warden` binary as a user runs it: token, doctor, demo, policy and audit against exosim,
//! never printing a secret. Bad input of every kind is in `bad_input.rs`.

use crate::support::*;

fn assert_no_secret(name: &str, output: &std::process::Output, secrets: &[&str]) {
    let (stdout, stderr) = text(output);
    for secret in secrets.iter().filter(|s| s.len() >= 6) {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{name}: a secret was printed:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_the_diagnosis_never_the_token() {
    let emu = Emulator::start().await;
    let secret = emu.app_str(0, "client_secret");
    let env = with(emu.env_for(0), &[("AZURE_CLIENT_SECRET", &secret)]);
    let output = warden(&["token", "-vvv"], &env).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("token acquired")
            && stdout.contains("Exchange.ManageAsApp")
            && stdout.contains("Exchange Administrator"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("eyJ") && !stderr.contains("eyJ"),
        "a JWT was printed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("requesting token"),
        "trace logging was on: {stderr}"
    );
    assert_no_secret("token -vvv", &output, &[&secret]);

    let shown = warden(&["token", "--show-token"], &env).await;
    let (stdout, stderr) = text(&shown);
    assert!(shown.status.success());
    assert!(
        stderr.contains("warning") && stderr.contains("password"),
        "{stderr}"
    );
    let token_line = stdout.lines().last().unwrap();
    assert_eq!(
        token_line.split('.').count(),
        3,
        "the token is the last line: {token_line}"
    );
    assert_eq!(claims(token_line)["tid"], emu.tenant_id());

    let json = warden(&["token", "--output", "json"], &env).await;
    let document: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("one JSON document");
    assert_eq!(document["diagnosis"]["decodable"], true);
    assert!(
        document["diagnosis"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "pass"),
        "{document}"
    );
    assert!(!String::from_utf8_lossy(&json.stdout).contains("eyJ"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_fails_the_401_story_and_warns_of_the_403_one() {
    let emu = Emulator::start().await;
    let env_of = |index: usize| {
        with(
            emu.env_for(index),
            &[("AZURE_CLIENT_SECRET", &emu.app_str(index, "client_secret"))],
        )
    };
    // No Exchange.ManageAsApp role: every call is refused (401), whatever else the app holds.
    let output = warden(&["token"], &env_of(1)).await;
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "app 1: {stdout}");
    assert!(
        stdout.contains("401") && stdout.contains("FAIL"),
        "{stdout}"
    );
    assert!(
        stderr.contains("Exchange Online would refuse it"),
        "{stderr}"
    );
    // No Entra directory role: fine when the app holds Exchange RBAC for Applications, so a
    // warning that names the 403 and both ways to grant the role, and a zero exit.
    let output = warden(&["token"], &env_of(2)).await;
    let (stdout, _) = text(&output);
    assert!(output.status.success(), "app 2: {stdout}");
    assert!(
        stdout.contains("403") && stdout.contains("WARN"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // The fix names both ways (the table wraps its cells, so read the JSON form).
    let json = warden(&["token", "--output", "json"], &env_of(2)).await;
    let document: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("one JSON document");
    let checks = document["diagnosis"]["checks"].as_array().unwrap();
    let warned = checks
        .iter()
        .find(|c| c["status"] == "warn")
        .expect("a warning");
    let text = warned.to_string();
    assert!(
        text.contains("Exchange Administrator") && text.contains("New-ServicePrincipal"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_good_setup_and_names_the_fix_for_a_bad_one() {
    let emu = Emulator::start().await;
    let password = emu.app_str(0, "certificate_password");
    let env = with(
        emu.env_for(0),
        &[
            (
                "AZURE_CLIENT_CERTIFICATE_PATH",
                &emu.app_str(0, "certificate_pfx"),
            ),
            ("AZURE_CLIENT_CERTIFICATE_PASSWORD", &password),
        ],
    );
    let output = warden(&["doctor", "--output", "json"], &env).await;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(output.status.success(), "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for expected in [
        "configuration",
        "tenant",
        "client id",
        "cloud",
        "credential",
        "authority",
        "token",
        "app role",
        "directory role",
    ] {
        assert!(
            names.contains(&expected),
            "doctor has no {expected} check: {names:?}"
        );
    }
    assert_no_secret("doctor", &output, &[&password]);

    let wrong_tenant = with(
        env.clone(),
        &[("AZURE_TENANT_ID", "0badc0de-0000-4000-8000-000000000000")],
    );
    let mut dedup = wrong_tenant.clone();
    dedup.retain(|(k, v)| k != "AZURE_TENANT_ID" || v.starts_with("0badc0de"));
    let before = emu.token_requests();
    let output = warden(&["doctor"], &dedup).await;
    let (stdout, _) = text(&output);
    assert!(!output.status.success());
    assert!(
        stdout.contains("AADSTS90002") && stdout.contains("tenant"),
        "{stdout}"
    );
    assert_eq!(
        emu.token_requests(),
        before,
        "doctor stops at discovery: no credential is sent to a tenant that does not exist"
    );
}

// tests/run.sh builds warden with the demo; cli_conventions.rs checks the product's refusal.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_every_scenario_as_described() {
    let output = warden(&["demo", "--output", "json"], &[]).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 7);
    assert!(
        scenarios.iter().all(|s| s["as_expected"] == true),
        "{report}"
    );
    let exchange = report["exchange"].as_array().unwrap();
    assert_eq!(exchange.len(), 13, "{report}");
    for step in [
        "plugin: mailbox-report --limit 5",
        "plugin: the same run over WinRM Remote PowerShell",
        "plugin: the same report with one section added",
        "script: an endless loop",
    ] {
        assert!(
            exchange.iter().any(|s| s["step"] == step),
            "{step} is shown: {report}"
        );
    }
    assert_eq!(
        report["guests"]["plugin_output"].as_array().map(Vec::len),
        Some(5),
        "{report}"
    );
    assert!(
        exchange.iter().all(|s| s["as_expected"] == true),
        "{report}"
    );
    assert_eq!(report["ok"], true);
    assert!(!stdout.contains("eyJ"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_and_explain_answer_without_running_anything() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy.example.toml");
    let example = root.to_str().unwrap();
    let check = warden(&["policy", "check", example], &[]).await;
    assert!(check.status.success(), "{}", text(&check).1);
    assert!(text(&check).0.contains("roles (5)"), "{}", text(&check).0);

    let report = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let explain = |extra: &'static [&'static str]| async move {
        let mut args = vec![
            "policy",
            "explain",
            "--policy",
            example,
            "--plugin",
            "mailbox-report",
            "--sha256",
            report,
            "--output",
            "json",
            "Get-Mailbox",
        ];
        args.extend_from_slice(extra);
        warden(&args, &[]).await
    };
    let allowed = explain(&["-p", "ResultSize=100"]).await;
    let answer: serde_json::Value =
        serde_json::from_slice(&allowed.stdout).unwrap_or_else(|_| panic!("{}", text(&allowed).0));
    assert!(
        allowed.status.success() && answer["allowed"] == true,
        "{answer}"
    );
    assert_eq!(answer["rule"], "role:reader/Get-Mailbox");
    for refused in [
        &["-p", "ResultSize=\"Unlimited\""][..],
        &["-p", "Ident=x"],
        &["-p", "Confirm=false"],
    ] {
        let output = explain(refused).await;
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(output.status.code(), Some(2), "{refused:?}: {answer}");
        assert_eq!(answer["allowed"], false, "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_tampered_line_and_hash_finds_values() {
    use warden_audit::{AuditKey, AuditTrail, Event};
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit.key");
    let key = AuditKey::load_or_create(&key_path).unwrap();
    let trail_path = dir.path().join("trail.jsonl");
    let trail = AuditTrail::open(&trail_path, AuditKey::load(&key_path).unwrap()).unwrap();
    let policy = warden_policy::Policy::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy.example.toml"),
    )
    .unwrap();
    let principal = warden_policy::Principal::Plugin {
        name: "mailbox-report".into(),
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        signature: None,
    };
    let grant = policy.grant_for(&principal, None).unwrap();
    for identity in ["alex@contoso.com", "bo@contoso.com", "cy@contoso.com"] {
        let decision = grant.check("Get-Mailbox", &format!(r#"{{"Identity":"{identity}"}}"#));
        trail
            .record(&Event::decision("run-1", &principal, &decision))
            .unwrap();
    }
    drop(trail);
    let key_arg = key_path.to_str().unwrap();
    let ok = warden(
        &[
            "audit",
            "verify",
            trail_path.to_str().unwrap(),
            "--key",
            key_arg,
        ],
        &[],
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok).1);

    let hash = warden(&["audit", "hash", "s3cret-value", "--key", key_arg], &[]).await;
    assert_eq!(
        text(&hash).0.trim(),
        warden_audit::keyed_hash(&key, "s3cret-value")
    );

    let mut bytes = std::fs::read(&trail_path).unwrap();
    let second_line = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    let at = second_line
        + bytes[second_line..]
            .windows(3)
            .position(|w| w == b"bo@")
            .unwrap();
    bytes[at] = b'B';
    std::fs::write(&trail_path, bytes).unwrap();
    let broken = warden(
        &[
            "audit",
            "verify",
            trail_path.to_str().unwrap(),
            "--key",
            key_arg,
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&broken);
    assert_eq!(broken.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("trail.jsonl:2:"),
        "the second line is named: {stdout}{stderr}"
    );
}
