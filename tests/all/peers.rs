//! Independent code verifies what we produce: PyJWT (with `cryptography`) checks the client
//! assertions warden-auth signs, against the certificate's public key.

use crate::support::*;
use std::time::SystemTime;
use warden_auth::CertificateKey;
use warden_auth::assertion::{AssertionAlgorithm, sign_client_assertion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_our_ps256_and_rs256_assertions() {
    let emu = Emulator::start().await;
    let pem = emu.key_and_cert_pem(0);
    let key = CertificateKey::from_file(&pem, None).unwrap();
    let client_id = emu.app_str(0, "client_id");
    let aud = format!("{}/{}/oauth2/v2.0/token", emu.exosim.url(), emu.tenant_id());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers/verify_assertion.py");
    for (algorithm, alg, header) in [
        (AssertionAlgorithm::Ps256, "PS256", "x5t#S256"),
        (AssertionAlgorithm::Rs256, "RS256", "x5t"),
    ] {
        let certificate = emu.app_str(0, "certificate_pem");
        let (sha1, sha256) = (key.thumbprint_sha1_hex(), key.thumbprint_sha256_hex());
        let verify = |token: String| {
            tokio::process::Command::new(peer_python())
                .arg(&script)
                .args([
                    certificate.as_str(),
                    alg,
                    &aud,
                    &client_id,
                    header,
                    &sha1,
                    &sha256,
                ])
                .env("ASSERTION", token)
                .output()
        };
        let assertion = sign_client_assertion(&key, &client_id, &aud, algorithm, SystemTime::now());
        let output = verify(assertion.expose().to_owned()).await.unwrap();
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "{alg}: PyJWT refused our assertion: {stdout}{stderr}"
        );
        assert!(stdout.contains("verified"), "{stdout}");

        // The same check must fail for a tampered assertion, or it proves nothing.
        let mut tampered = assertion.expose().to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let output = verify(tampered).await.unwrap();
        assert!(
            !output.status.success(),
            "{alg}: a tampered signature was accepted"
        );
    }
}

/// pypsrp (an independent Remote PowerShell client) and our RPS client, on the same exosim
/// endpoint with tokens of the same app, see the same results: the same mailboxes, the same
/// object after pypsrp's write, and the same error for a missing mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_and_our_rps_client_see_the_same_results() {
    use warden_exchange::{ExchangeError, Invocation, ParamValue, Parameters};
    let emu = Emulator::start().await;
    let (ours, tokens) = runner_for(&emu, 0, Transport::Rps);
    let token = tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
    let url = url::Url::parse(&emu.exosim.exchange_url()).unwrap();
    let script = repo_root().join("tests/peers/pypsrp_peer.py");
    let port = url.port().unwrap().to_string();
    let tenant = emu.tenant_id();
    let output = tokio::process::Command::new(peer_python())
        .arg(&script)
        .args(["--host", url.host_str().unwrap(), "--port", &port])
        .args(["--tenant", &tenant, "--ca-file", &emu.ca()])
        .args([
            "--result-size",
            "9",
            "--new-shared",
            "Peer Shared",
            "--missing",
            "nobody-here",
        ])
        .env("PEER_ACCESS_TOKEN", token.expose())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "pypsrp failed: {stdout}{stderr}");
    let theirs: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(theirs["ok"], true, "{theirs}");

    let read = |pairs: &[(&str, ParamValue)]| {
        let parameters: Parameters = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        invoke_all(ours.as_ref(), Invocation::new("Get-Mailbox", parameters))
    };
    let mailboxes = read(&[("ResultSize", ParamValue::Int(9))]).await.unwrap();
    assert_eq!(mailboxes.len(), 9);
    assert_eq!(
        serde_json::to_value(&mailboxes).unwrap(),
        theirs["mailboxes"],
        "Get-Mailbox -ResultSize 9"
    );

    let created = &theirs["created"][0];
    let alias = created["Alias"]
        .as_str()
        .expect("pypsrp's New-Mailbox returned the mailbox");
    let seen = read(&[("Identity", ParamValue::String(alias.to_owned()))])
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&seen[0]).unwrap(),
        *created,
        "our client reads back exactly what pypsrp created"
    );

    let ExchangeError::Cmdlet(error) =
        read(&[("Identity", ParamValue::String("nobody-here".into()))])
            .await
            .unwrap_err()
    else {
        panic!("a missing mailbox is a cmdlet error")
    };
    let fq_error = theirs["missing_error"]["fq_error"].as_str().unwrap();
    assert!(
        fq_error.contains(error.error_id.as_deref().unwrap()),
        "pypsrp's {fq_error} and our error id {:?}",
        error.error_id
    );
    assert!(
        fq_error.contains(error.exception_type.as_deref().unwrap()),
        "{fq_error} vs {:?}",
        error.exception_type
    );
    assert_eq!(
        theirs["missing_error"]["message"].as_str(),
        Some(error.message.as_str())
    );
}
