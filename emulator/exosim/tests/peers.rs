//! exosim against clients nobody here wrote: msal-python 1.39, @azure/msal-node 7.2.3 and
//! pypsrp 0.9.1 (installed by `tests/peers/setup.sh`), run as subprocesses against an
//! in-process emulator over real HTTPS. Each msal peer gets a token with a secret and with every
//! certificate form it supports; the emulator's request log must show the assertion form that
//! peer is known to send (docs/protocol/real-peers.md §1.3); a wrong secret must surface
//! AADSTS7000215 through msal. pypsrp opens a Microsoft.Exchange runspace pool on
//! `/PowerShell-LiveID` and must get InvokeCommand's objects (§2.1).
//!
//! If the peers are not installed these tests FAIL, saying to run `tests/peers/setup.sh`; they
//! never skip silently.

#[path = "all/support.rs"]
#[allow(
    dead_code,
    reason = "shared with the main test binary, which uses all of it"
)]
mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use exosim::{ExosimOptions, LoggedRequest};
use serde_json::Value;
use support::{Env, run};

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers")
        .canonicalize()
        .expect("tests/peers exists")
}

fn require_python() -> PathBuf {
    let python = peers_dir().join(".venv/bin/python");
    let imports = python.is_file()
        && Command::new(&python)
            .args(["-c", "import msal, jwt, cryptography, requests"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        imports,
        "the msal-python peer is not installed in tests/peers/.venv: run tests/peers/setup.sh"
    );
    python
}

fn require_node() {
    let installed = peers_dir()
        .join("node_modules/@azure/msal-node/package.json")
        .is_file();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed && node,
        "the msal-node peer is not installed in tests/peers/node_modules: run tests/peers/setup.sh"
    );
}

/// Runs a peer (which bounds itself to 30 s) and parses its one JSON line; kills it after 60 s.
fn run_peer(
    env: &Env,
    program: &Path,
    script: &str,
    args: &[&str],
    secrets: &[(&str, &str)],
) -> Value {
    let ca = env.exosim.ca_file();
    let mut command = Command::new(program);
    command
        .current_dir(peers_dir())
        .arg(script)
        .args(["--authority", &format!("{}/{}", env.url(), env.tenant_id())])
        .args(["--ca-file", ca.to_str().unwrap()])
        .args(args)
        // The machine exports REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE, which requests lets win
        // over `verify=`: point the first at our CA and drop the second
        // (docs/protocol/real-peers.md §1.4).
        .env("REQUESTS_CA_BUNDLE", ca)
        .env_remove("CURL_CA_BUNDLE")
        .env("NODE_EXTRA_CA_CERTS", ca)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in secrets {
        command.env(name, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script} {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("{script} {args:?} ({status}) printed no JSON ({e}):\n{stdout}\n{stderr}")
    })
}

/// The token POSTs logged since `before`.
fn token_posts(env: &Env, before: usize) -> Vec<LoggedRequest> {
    env.exosim.request_log()[before..]
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/oauth2/v2.0/token"))
        .cloned()
        .collect()
}

#[derive(Debug)]
struct Expected {
    alg: &'static str,
    param: &'static str,
    encoding: &'static str,
    x5c: bool,
}

#[track_caller]
fn assert_token(result: &Value, env: &Env, client_id: &str, case: &str) {
    assert_eq!(result["ok"], true, "{case}: {result}");
    let claims = &result["claims"];
    assert_eq!(claims["appid"], client_id, "{case}");
    assert_eq!(claims["aud"], "https://outlook.office365.com", "{case}");
    assert_eq!(claims["tid"], env.tenant_id(), "{case}");
    assert_eq!(claims["roles"][0], exosim::EXCHANGE_MANAGE_AS_APP, "{case}");
}

#[track_caller]
fn assert_assertion_form(post: &LoggedRequest, expected: Option<&Expected>, case: &str) {
    assert_eq!(post.status, 200, "{case}: {post:?}");
    match expected {
        None => {
            assert!(post.has_form_field("client_secret"), "{case}");
            assert!(post.client_assertion.is_none(), "{case}");
        }
        Some(expected) => {
            let summary = post
                .client_assertion
                .as_ref()
                .unwrap_or_else(|| panic!("{case}: no assertion"));
            assert_eq!(
                summary.alg.as_deref(),
                Some(expected.alg),
                "{case}: {summary:?}"
            );
            assert_eq!(
                summary.thumbprint_param.as_deref(),
                Some(expected.param),
                "{case}: {summary:?}"
            );
            assert_eq!(
                summary.thumbprint_encoding.as_deref(),
                Some(expected.encoding),
                "{case}: {summary:?}"
            );
            assert_eq!(summary.has_x5c, expected.x5c, "{case}: {summary:?}");
            assert!(!post.has_form_field("client_secret"), "{case}");
        }
    }
}

#[test]
fn msal_python_gets_tokens_with_a_secret_and_every_certificate_form() {
    let python = require_python();
    let env = run(Env::start(|dir| ExosimOptions::demo(dir)));
    let app = env.app().clone();
    let secret = app.client_secret.clone().unwrap();
    let key = app.key_pem.clone().unwrap();
    let cert = app.certificate_pem.clone().unwrap();
    let pfx = app.certificate_pfx.clone().unwrap();
    let password = app.certificate_password.clone().unwrap();
    let thumbprint = app.thumbprint_sha1.clone().unwrap();
    let (key, cert, pfx) = (
        key.to_str().unwrap(),
        cert.to_str().unwrap(),
        pfx.to_str().unwrap(),
    );

    let cases: [(&str, Vec<&str>, Option<Expected>); 4] = [
        ("secret", vec![], None),
        (
            "cert",
            vec!["--key-pem", key, "--cert-pem", cert],
            Some(Expected {
                alg: "PS256",
                param: "x5t#S256",
                encoding: "base64url-padded",
                x5c: true,
            }),
        ),
        (
            "thumbprint",
            vec!["--key-pem", key, "--thumbprint", &thumbprint],
            Some(Expected {
                alg: "RS256",
                param: "x5t",
                encoding: "base64url-padded",
                x5c: false,
            }),
        ),
        (
            "pfx",
            vec!["--pfx", pfx],
            Some(Expected {
                alg: "PS256",
                param: "x5t#S256",
                encoding: "base64url-padded",
                x5c: false,
            }),
        ),
    ];
    for (credential, extra, expected) in &cases {
        let before = env.exosim.request_log().len();
        let mut args = vec![
            "--client-id",
            app.client_id.as_str(),
            "--credential",
            credential,
        ];
        args.extend(extra.iter().copied());
        let result = run_peer(
            &env,
            &python,
            "msal_python_peer.py",
            &args,
            &[
                ("PEER_CLIENT_SECRET", &secret),
                ("PEER_PFX_PASSWORD", &password),
            ],
        );
        let case = format!("msal-python {credential}");
        assert_token(&result, &env, &app.client_id, &case);
        let posts = token_posts(&env, before);
        assert_eq!(posts.len(), 1, "{case}: one token POST");
        assert_eq!(
            posts[0].header("x-client-sku"),
            Some("MSAL.Python"),
            "{case}"
        );
        assert_assertion_form(&posts[0], expected.as_ref(), &case);
        let log = env.exosim.request_log();
        assert!(
            log[before..]
                .iter()
                .any(|r| r.method == "GET"
                    && r.path.ends_with("/v2.0/.well-known/openid-configuration")),
            "{case}: msal reads discovery first"
        );
    }

    let result = run_peer(
        &env,
        &python,
        "msal_python_peer.py",
        &["--client-id", &app.client_id, "--credential", "secret"],
        &[("PEER_CLIENT_SECRET", "not-the-secret")],
    );
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"], "invalid_client");
    assert_eq!(result["error_codes"], serde_json::json!([7000215]));
    assert!(
        result["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: "),
        "{result}"
    );
}

#[test]
fn msal_node_gets_tokens_with_a_secret_and_a_certificate() {
    require_node();
    let node = PathBuf::from("node");
    let env = run(Env::start(|dir| ExosimOptions::demo(dir)));
    let app = env.app().clone();
    let secret = app.client_secret.clone().unwrap();
    let key = app.key_pem.clone().unwrap();
    let cert = app.certificate_pem.clone().unwrap();
    let (key, cert) = (key.to_str().unwrap(), cert.to_str().unwrap());

    let cases: [(&str, Vec<&str>, Option<Expected>); 2] = [
        ("secret", vec![], None),
        (
            "cert",
            vec!["--key-pem", key, "--cert-pem", cert],
            Some(Expected {
                alg: "PS256",
                param: "x5t#S256",
                encoding: "base64url",
                x5c: true,
            }),
        ),
    ];
    for (credential, extra, expected) in &cases {
        let before = env.exosim.request_log().len();
        let mut args = vec![
            "--client-id",
            app.client_id.as_str(),
            "--credential",
            credential,
        ];
        args.extend(extra.iter().copied());
        let result = run_peer(
            &env,
            &node,
            "msal_node_peer.mjs",
            &args,
            &[("PEER_CLIENT_SECRET", &secret)],
        );
        let case = format!("msal-node {credential}");
        assert_token(&result, &env, &app.client_id, &case);
        let posts = token_posts(&env, before);
        assert_eq!(posts.len(), 1, "{case}: one token POST");
        // msal-node puts its telemetry in the form body and client-request-id in the query.
        assert!(
            posts[0].has_form_field("x-client-SKU"),
            "{case}: {:?}",
            posts[0].form_fields
        );
        assert!(
            posts[0]
                .query
                .as_deref()
                .is_some_and(|q| q.contains("client-request-id=")),
            "{case}"
        );
        assert_assertion_form(&posts[0], expected.as_ref(), &case);
        if let Some(summary) = &posts[0].client_assertion {
            assert!(
                summary.claim_names.iter().any(|c| c == "nbf"),
                "msal-node sends nbf: {summary:?}"
            );
        }
    }

    let result = run_peer(
        &env,
        &node,
        "msal_node_peer.mjs",
        &["--client-id", &app.client_id, "--credential", "secret"],
        &[("PEER_CLIENT_SECRET", "not-the-secret")],
    );
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"], "invalid_client");
    assert_eq!(
        result["error_codes"],
        serde_json::json!([7000215]),
        "{result}"
    );
    assert!(
        result["error_description"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000215: "),
        "{result}"
    );
}

/// pypsrp 0.9.1 (an independent PSRP client, docs/protocol/real-peers.md §2.1) opens a
/// Microsoft.Exchange pool on `/PowerShell-LiveID` with the Basic-wrapped token, and gets exactly
/// what InvokeCommand returns for the same Get-Mailbox; its New-Mailbox -Shared lands in the
/// tenant; a missing identity reaches it as a failed pipeline with the service's error id.
#[test]
fn pypsrp_runs_exchange_cmdlets_over_remote_powershell() {
    let python = require_python();
    let imports = Command::new(&python)
        .args(["-c", "import pypsrp.powershell, spnego"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        imports,
        "pypsrp is not installed in tests/peers/.venv: run tests/peers/setup.sh"
    );
    run(async {
        let env = Env::start(|dir| ExosimOptions {
            mailboxes: 12,
            ..ExosimOptions::demo(dir)
        })
        .await;
        let app = env.app();
        let secret = app.client_secret.clone().expect("secret");
        let token = env
            .secret_token(&app.client_id, &secret, support::EXO_SCOPE)
            .await;
        assert_eq!(token.status, 200, "{}", token.text);
        let token = token.json["access_token"].as_str().unwrap().to_owned();

        let port = env.exosim.addr().port().to_string();
        let result = run_peer(
            &env,
            &python,
            "pypsrp_peer.py",
            &[
                "--port",
                &port,
                "--tenant",
                env.tenant_id(),
                "--result-size",
                "7",
                "--new-shared",
                "pypsrp-shared",
                "--missing",
                "nobody-here",
            ],
            &[("PEER_ACCESS_TOKEN", &token)],
        );
        assert_eq!(result["ok"], true, "{result}");

        // The same call over REST, annotations removed.
        let rest: Value = env
            .client
            .post(format!(
                "{}/adminapi/beta/{}/InvokeCommand",
                env.url(),
                env.tenant_id()
            ))
            .bearer_auth(&token)
            .json(&serde_json::json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": 7}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let expected: Vec<Value> = rest["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                Value::Object(
                    o.as_object()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| !k.contains('@'))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(expected.len(), 7);
        assert_eq!(result["mailboxes"], Value::Array(expected.clone()));
        assert_eq!(
            result["mailbox_types"][0],
            "Microsoft.Exchange.Data.Directory.Management.Mailbox"
        );
        assert_eq!(result["mailbox_to_string"], expected[0]["Identity"]);
        assert_eq!(result["had_errors"], false);
        assert_eq!(
            result["warnings"][0],
            "There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter."
        );

        // The write is in the tenant, and what pypsrp got back is what REST shows now.
        let created = env
            .exosim
            .mailbox(env.tenant_id(), "pypsrp-shared")
            .expect("New-Mailbox over RPS created the mailbox");
        assert_eq!(created["RecipientTypeDetails"], "SharedMailbox");
        assert_eq!(result["created"], serde_json::json!([created]));
        assert_eq!(result["created_had_errors"], false);

        let missing = &result["missing_error"];
        assert_eq!(missing["had_errors"], true, "{missing}");
        assert_eq!(missing["count"], 1);
        assert_eq!(missing["reason"], "ManagementObjectNotFoundException");
        assert!(
            missing["fq_error"]
                .as_str()
                .unwrap()
                .ends_with("Ex6F9304,Microsoft.Exchange.Management.RecipientTasks.GetMailbox"),
            "{missing}"
        );

        // Every RPS request pypsrp made was logged, with the cmdlets it ran.
        let log = env.exosim.exchange_log();
        let rps: Vec<_> = log.iter().filter(|r| r.action.is_some()).collect();
        assert!(
            rps.iter().all(|r| r.path == "/PowerShell-LiveID"),
            "{rps:?}"
        );
        assert!(
            rps.iter()
                .all(|r| r.header("user-agent") == Some("Python PSRP Client"))
        );
        let cmdlets: Vec<_> = rps
            .iter()
            .filter(|r| r.action.as_deref() == Some("Command"))
            .map(|r| r.cmdlet.clone().unwrap_or_default())
            .collect();
        assert_eq!(cmdlets, ["Get-Mailbox", "New-Mailbox", "Get-Mailbox"]);
        assert_eq!(
            rps.iter()
                .filter(|r| r.action.as_deref() == Some("Delete"))
                .count(),
            1,
            "the pool was closed"
        );
        assert_eq!(env.exosim.rps_shell_count(), 0);
    });
}
