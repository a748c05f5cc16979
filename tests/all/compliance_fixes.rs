//! Issue 15's leftovers on the Security & Compliance endpoint and SecureString parameters,
//! against exosim over real HTTPS (docs/fidelity.md, "Security & Compliance endpoint and
//! redirects"). Each test fails with the code before these fixes: a bad compliance URL stopped
//! Exchange cmdlets too, the region probe ran once per session whatever happened, `warden
//! invoke` sent compliance cmdlets to Exchange, a policy could send an Exchange cmdlet to the
//! compliance endpoint, and `RpsSession::stream` sent a SecureString it should have refused.

use crate::support::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use warden_exchange::{
    CmdletRunner, Endpoint, ExchangeError, HostSuffixes, Invocation, PageStream, ParamValue,
    Parameters,
};

const EXO: &str = "outlook.exosim.test";
const EXO_REGIONAL: &str = "nam12.outlook.exosim.test";
const SCC: &str = "ps.compliance.exosim.test";
const SCC_REGIONAL: &str = "eur02b.ps.compliance.exosim.test";

/// exosim with app 0 also a Compliance Administrator, Exchange's front door in `region` mode.
async fn start(region: exosim::ExchangeRegion) -> Emulator {
    Emulator::start_with(|o| {
        o.exchange_region = region;
        o.tenants.tenants[0].apps[0]
            .wids
            .push(exosim::COMPLIANCE_ADMINISTRATOR_ROLE.to_owned());
    })
    .await
}

/// A runner for app 0 on the test cloud's names (resolved to exosim), with its host tables.
fn cloud_runner(emu: &Emulator) -> Arc<dyn CmdletRunner> {
    cloud_runner_paged(emu, None)
}

/// The same, asking for pages of `page_size` objects.
fn cloud_runner_paged(emu: &Emulator, page_size: Option<u32>) -> Arc<dyn CmdletRunner> {
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let auth = settings(&env, &Default::default()).unwrap();
    let port = url::Url::parse(&emu.exosim.exchange_url())
        .unwrap()
        .port()
        .unwrap();
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    let resolve: Vec<(String, SocketAddr)> = [EXO, EXO_REGIONAL, SCC, SCC_REGIONAL]
        .iter()
        .map(|h| ((*h).to_owned(), loopback))
        .collect();
    let http = Arc::new(
        warden_auth::transport::ReqwestTransport::with_resolved(auth.ca_file.as_deref(), &resolve)
            .unwrap(),
    );
    let tokens = warden_auth::TokenProvider::new(auth.load_credential().unwrap(), http);
    let mut exchange = exchange_settings(emu, &auth, Transport::Rest);
    let sourced = |value: String| warden_auth::config::Sourced {
        value,
        source: "test".into(),
    };
    exchange.url = Some(sourced(format!("https://{EXO}:{port}")));
    exchange.compliance_url = Some(sourced(format!("https://{SCC}:{port}")));
    exchange.exchange_hosts = Some(HostSuffixes::new(["outlook.exosim.test"]));
    exchange.compliance_hosts = Some(HostSuffixes::new([
        "ps.compliance.exosim.test",
        "admin.exosim.test",
    ]));
    exchange.base_delay = Some(Duration::from_millis(10));
    exchange.page_size = page_size;
    warden_exchange::connect(&exchange, tokens).unwrap()
}

/// exosim's Exchange and compliance requests as (host, status, cmdlet).
fn wire(emu: &Emulator) -> Vec<(String, u16, String)> {
    emu.exosim
        .exchange_log()
        .into_iter()
        .map(|r| {
            let host = r
                .header("host")
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            (host, r.status, r.cmdlet.unwrap_or_default())
        })
        .collect()
}

fn params(value: serde_json::Value) -> Parameters {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), ParamValue::from_json(v)))
        .collect()
}

/// Fix 1: the compliance session is made when a compliance call needs it, so a compliance URL
/// that is wrong (not https here; the old `connect` refused it at once) stops only compliance
/// calls, for the library and for `warden invoke` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_compliance_url_stops_only_compliance_calls() {
    let emu = Emulator::start().await;
    for bad in ["http://scc.example", "not a url"] {
        let env = with(operator_env(&emu), &[("WARDEN_COMPLIANCE_URL", bad)]);
        let output = warden(&["invoke", "Get-Mailbox", "-p", "ResultSize=1"], &env).await;
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{bad}: {stdout}\n{stderr}");
        assert!(stdout.contains("PrimarySmtpAddress"), "{stdout}\n{stderr}");

        let output = warden(&["invoke", "Get-ComplianceSearch"], &env).await;
        let (_, stderr) = text(&output);
        assert!(!output.status.success());
        assert!(
            stderr.contains("WARDEN_COMPLIANCE_URL") && stderr.contains("fix:"),
            "{bad}: {stderr}"
        );
    }
    // The same through the library: connect succeeds, Exchange runs, compliance is refused.
    let auth = settings(
        &with(
            emu.env_for(0),
            &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
        ),
        &Default::default(),
    )
    .unwrap();
    let tokens = provider(&auth).unwrap();
    let mut exchange = exchange_settings(&emu, &auth, Transport::Rest);
    exchange.compliance_url = Some(warden_auth::config::Sourced {
        value: "http://scc.example".into(),
        source: "profile x.exchange.compliance_url".into(),
    });
    let runner = warden_exchange::connect(&exchange, tokens).expect("Exchange still connects");
    let found = invoke_all(
        &*runner,
        Invocation::new("Get-Mailbox", params(json!({"ResultSize": 1}))),
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    let error = invoke_all(
        &*runner,
        Invocation::new("Get-ComplianceSearch", Parameters::new()).on(Endpoint::Compliance),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("profile x.exchange.compliance_url"),
        "{error}"
    );
}

/// Fix 3: `warden invoke` sends a cmdlet known to be a compliance one to the compliance
/// endpoint (here `127.0.0.1`, Exchange being `localhost`); the old one sent it to Exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_invoke_sends_a_compliance_cmdlet_to_the_compliance_endpoint() {
    let emu = Emulator::start().await;
    let exchange = emu.exosim.exchange_url();
    let compliance = exchange.replace("localhost", "127.0.0.1");
    assert_ne!(exchange, compliance, "{exchange}");
    let env = with(
        operator_env(&emu),
        &[("WARDEN_COMPLIANCE_URL", compliance.as_str())],
    );
    emu.exosim.clear_exchange_log();
    // exosim serves compliance only on its regional names, so this host refuses the call; what
    // matters is where it went.
    let _ = warden(&["invoke", "Get-ComplianceSearch"], &env).await;
    let hosts: Vec<String> = calls_of(&emu, "Get-ComplianceSearch")
        .iter()
        .map(|r| r.header("host").unwrap_or_default().to_owned())
        .collect();
    assert!(!hosts.is_empty(), "{:?}", wire(&emu));
    assert!(
        hosts.iter().all(|h| h.starts_with("127.0.0.1")),
        "{hosts:?}"
    );
}

/// Fix 2: the region probe runs once per session, and again once the regional host is
/// forgotten: here it refused the tenant's token (a 401, as from a host that is no longer the
/// tenant's). The old session probed once for its whole life and kept the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_probe_runs_again_after_the_regional_host_refuses_the_token() {
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let runner = cloud_runner(&emu);
    let search =
        || Invocation::new("Get-ComplianceSearch", Parameters::new()).on(Endpoint::Compliance);
    let probes = |emu: &Emulator| {
        wire(emu)
            .iter()
            .filter(|(host, status, _)| host == SCC && *status == 302)
            .count()
    };
    invoke_all(&*runner, search()).await.unwrap();
    invoke_all(&*runner, search()).await.unwrap();
    assert_eq!(probes(&emu), 1, "{:?}", wire(&emu));
    // Every token issued so far is now refused: the regional host answers 401.
    emu.exosim.faults().expire_issued_tokens();
    invoke_all(&*runner, search()).await.unwrap();
    assert!(
        wire(&emu)
            .iter()
            .any(|(host, status, _)| host == SCC_REGIONAL && *status == 401),
        "{:?}",
        wire(&emu)
    );
    invoke_all(&*runner, search()).await.unwrap();
    assert_eq!(
        probes(&emu),
        2,
        "asked the front door again: {:?}",
        wire(&emu)
    );
    invoke_all(&*runner, search()).await.unwrap();
    assert_eq!(probes(&emu), 2, "once: {:?}", wire(&emu));
}

/// Fix 5: a front door's 302 to a write on Exchange (not only compliance) ends as of unknown
/// outcome and is never re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_302_to_a_write_on_exchange_is_outcome_unknown_and_not_resent() {
    let emu = start(exosim::ExchangeRegion::Redirect).await;
    let runner = cloud_runner(&emu);
    emu.exosim.clear_exchange_log();
    let error = invoke_all(
        &*runner,
        Invocation::new(
            "Set-Mailbox",
            params(json!({"Identity": "anyone@contoso.onmicrosoft.com", "DisplayName": "x"})),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ExchangeError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), "outcome-unknown");
    assert_eq!(
        wire(&emu),
        [(EXO.to_owned(), 302, "Set-Mailbox".to_owned())],
        "sent once, to the front door"
    );
}

/// Fix 3: a policy entry that sends a known Exchange cmdlet to the compliance endpoint is a load
/// error naming the cmdlet and the fix, as the reverse already was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_sending_an_exchange_cmdlet_to_compliance_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    for (name, says) in [
        ("Get-Mailbox", "Exchange Online cmdlet"),
        ("Get-EXOMailbox", "Exchange Online cmdlet"),
    ] {
        std::fs::write(
            &path,
            format!(
                "version = 1\n[roles.r]\n[[roles.r.cmdlet]]\nname = \"{name}\"\nendpoint = \"compliance\"\n"
            ),
        )
        .unwrap();
        let output = warden(&["policy", "check", path.to_str().unwrap()], &[]).await;
        let (stdout, stderr) = text(&output);
        assert!(!output.status.success(), "{stdout}");
        assert!(
            stderr.contains(name) && stderr.contains(says) && stderr.contains("fix:"),
            "{stderr}"
        );
    }
}

/// Fix 6: RPS refuses a SecureString when the stream is made, whichever way it is asked for:
/// the old refusal sat in `CmdletRunner::start`, and `RpsSession::stream` sent the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rps_stream_refuses_a_secure_string_when_it_is_made() {
    let emu = Emulator::start().await;
    let auth = settings(
        &with(
            emu.env_for(0),
            &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
        ),
        &Default::default(),
    )
    .unwrap();
    let tokens = provider(&auth).unwrap();
    let exchange = exchange_settings(&emu, &auth, Transport::Rps);
    let session = warden_exchange::connect::rps_session(&exchange, tokens).unwrap();
    let before = calls_of(&emu, "Set-Mailbox").len();
    let mut stream = session.stream(Invocation::new(
        "Set-Mailbox",
        params(json!({"Identity": "anyone@contoso.onmicrosoft.com", "Pass": "Canary-Prefix-1!"})),
    ));
    let error = stream.next_page().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("--transport rest"), "{text}");
    assert!(!text.contains("Canary") && !format!("{stream:?}").contains("Canary"));
    assert!(stream.next_page().await.unwrap().is_none());
    assert_eq!(calls_of(&emu, "Set-Mailbox").len(), before, "nothing sent");
}

/// Fix 4: `warden policy explain` names the endpoint an allowed call goes to and never prints a
/// sensitive value: not one the policy marks, not a SecureString parameter given by a prefix
/// (`Pass`, PowerShell's binder's `Password`), in text or JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_explain_names_the_endpoint_and_hides_sensitive_values() {
    const SOURCE: &str = "exo::invoke(\"Get-Mailbox\", #{})";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        format!(
            r#"version = 1
[roles.resetter]
[[roles.resetter.cmdlet]]
name = "Set-Mailbox"
[roles.resetter.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
Password = {{ length = [1, 256], sensitive = true }}
[[roles.resetter.cmdlet]]
name = "Get-ComplianceSearch"
endpoint = "compliance"
[[grant]]
id = "resetter"
script_inline_sha256 = "{}"
roles = ["resetter"]
"#,
            warden_vocab::sha256_hex(SOURCE.as_bytes())
        ),
    )
    .unwrap();
    let policy = path.to_str().unwrap();
    for password in ["Password", "Pass", "passw"] {
        for format in ["text", "json"] {
            let output = warden(
                &[
                    "policy",
                    "explain",
                    "--policy",
                    policy,
                    "--inline",
                    SOURCE,
                    "--output",
                    format,
                    "Set-Mailbox",
                    "-p",
                    "Identity=a",
                    "-p",
                    &format!("{password}=Canary-Explain-9!"),
                ],
                &[],
            )
            .await;
            let (stdout, stderr) = text(&output);
            assert!(
                !stdout.contains("Canary") && !stderr.contains("Canary"),
                "{password} {format}: {stdout}{stderr}"
            );
            if password == "Password" {
                assert!(output.status.success(), "{stdout}{stderr}");
                assert!(stdout.contains("(sensitive: not shown)"), "{stdout}");
                assert!(stdout.contains("exchange"), "{stdout}");
            }
        }
    }
    let output = warden(
        &[
            "policy",
            "explain",
            "--policy",
            policy,
            "--inline",
            SOURCE,
            "Get-ComplianceSearch",
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("endpoint:  compliance"), "{stdout}");
}

/// The `doctor --output json` check named `name`.
fn doctor_check(output: &std::process::Output, name: &str) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report}"))
        .clone()
}

/// Fix 8: an app with an empty `wids` refused with a 403 keeps the warning's two fixes (an Entra
/// role, or RBAC for Applications) in the Exchange check's explanation; the old one named
/// neither command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctors_403_explanation_keeps_the_empty_wids_warning() {
    let emu = Emulator::start().await;
    // App 2 holds Exchange.ManageAsApp and no Entra role, and no role assignment either.
    let env = with(
        emu.env_for(2),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(2, "client_secret"))],
    );
    let output = warden(&["doctor", "--output", "json"], &env).await;
    let exchange = doctor_check(&output, "exchange");
    assert!(
        exchange["detail"].as_str().unwrap().contains("403"),
        "{exchange}"
    );
    let fix = exchange["fix"].as_str().unwrap();
    assert!(
        fix.contains("wids is empty")
            && fix.contains("New-ManagementRoleAssignment")
            && fix.contains("Exchange Administrator"),
        "{fix}"
    );
}

/// Fix 8: a profile that speaks Remote PowerShell gets no REST `EXOModuleFile` lookup (an
/// on-premises server has none); the old doctor asked its URL over REST anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_skips_the_module_file_lookup_for_remote_powershell() {
    let emu = Emulator::start().await;
    let env = with(operator_env(&emu), &[("WARDEN_EXCHANGE_TRANSPORT", "rps")]);
    emu.exosim.clear_exchange_log();
    let output = warden(&["doctor", "--output", "json"], &env).await;
    let cmdlets = doctor_check(&output, "cmdlets");
    assert_eq!(cmdlets["status"], "skip", "{cmdlets}");
    assert!(
        emu.exosim
            .exchange_log()
            .iter()
            .all(|r| !r.path.contains("EXOModuleFile")),
        "no lookup was sent"
    );
}

/// Fix 7: exosim's compliance cmdlets page as Exchange's do (`Prefer: odata.maxpagesize`, an
/// `@odata.nextLink` the body is re-POSTed to); the old handler answered every row at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_reads_page_like_exchange_reads() {
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let runner = cloud_runner_paged(&emu, Some(1));
    emu.exosim.clear_exchange_log();
    let policies = invoke_all(
        &*runner,
        Invocation::new("Get-DlpCompliancePolicy", Parameters::new()).on(Endpoint::Compliance),
    )
    .await
    .unwrap();
    assert_eq!(policies.len(), 2, "{policies:?}");
    assert_ne!(policies[0], policies[1]);
    let pages: Vec<_> = wire(&emu)
        .into_iter()
        .filter(|(_, _, cmdlet)| cmdlet == "Get-DlpCompliancePolicy")
        .collect();
    assert_eq!(
        pages,
        vec![
            (
                SCC_REGIONAL.to_owned(),
                200,
                "Get-DlpCompliancePolicy".to_owned()
            );
            2
        ],
        "one request per page"
    );
}
