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
