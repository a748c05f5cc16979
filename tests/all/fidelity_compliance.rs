//! Issue 15: Security & Compliance PowerShell over REST, and divergence 6 (redirects and
//! regional hosts), against exosim over real HTTPS.
//!
//! exosim tells services apart by `Host`, so these tests speak to it by the test cloud's names
//! (`outlook.exosim.test`, `ps.compliance.exosim.test` and their regional hosts), resolved to
//! its loopback address by the HTTPS client and checked against its certificate as any host
//! would be. The client is given that cloud's host table in place of Microsoft's: the rule that
//! decides where the token may go is the production one (`warden_exchange::cloud`).
//!
//! All REST-only: Remote PowerShell has no compliance endpoint (one test shows the refusal), and
//! its redirect handling is `-AllowRedirection`'s (tests/all/transports.rs).

use crate::support::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{
    CmdletRunner, Endpoint, ExchangeError, ExchangeSettings, HostSuffixes, Invocation, ParamValue,
    Parameters, RestSession, SessionConfig,
};
use warden_policy::{Policy, Principal};
use warden_runtime::{GuestOutput, RunOutcome, RunRequest, RuntimeLimits, ScriptHost};

const EXO: &str = "outlook.exosim.test";
const EXO_REGIONAL: &str = "nam12.outlook.exosim.test";
const SCC: &str = "ps.compliance.exosim.test";
const SCC_REGIONAL: &str = "eur02b.ps.compliance.exosim.test";

/// exosim with the first app also a Compliance Administrator (Exchange Administrator alone is
/// no Security & Compliance role), Exchange's front door in `region` mode.
async fn start(region: exosim::ExchangeRegion) -> Emulator {
    Emulator::start_with(|o| {
        o.exchange_region = region;
        o.tenants.tenants[0].apps[0]
            .wids
            .push(exosim::COMPLIANCE_ADMINISTRATOR_ROLE.to_owned());
    })
    .await
}

fn port(emu: &Emulator) -> u16 {
    url::Url::parse(&emu.exosim.exchange_url())
        .unwrap()
        .port()
        .unwrap()
}

/// The operator's settings for the test cloud: Exchange at `outlook.exosim.test`, Security &
/// Compliance at `ps.compliance.exosim.test`, the given host tables, every test-cloud name
/// resolved to exosim.
fn cloud_settings(
    emu: &Emulator,
    transport: Transport,
    exchange_hosts: &[&str],
    compliance_hosts: &[&str],
) -> (ExchangeSettings, warden_auth::TokenProvider) {
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let auth = settings(&env, &Default::default()).unwrap();
    let port = port(emu);
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    let resolve: Vec<(String, SocketAddr)> = [
        EXO,
        EXO_REGIONAL,
        SCC,
        SCC_REGIONAL,
        "eur02b.admin.exosim.test",
        "elsewhere.exosim.test",
    ]
    .iter()
    .map(|h| ((*h).to_owned(), loopback))
    .collect();
    // One client for identity and Exchange, as the CLI builds it, knowing the test cloud's names.
    let http = Arc::new(
        warden_auth::transport::ReqwestTransport::with_resolved(auth.ca_file.as_deref(), &resolve)
            .unwrap(),
    );
    let tokens = warden_auth::TokenProvider::new(auth.load_credential().unwrap(), http);
    let mut exchange = exchange_settings(emu, &auth, transport);
    if transport == Transport::Rest {
        exchange.url = Some(warden_auth::config::Sourced {
            value: format!("https://{EXO}:{port}"),
            source: "test".into(),
        });
    }
    exchange.compliance_url = Some(warden_auth::config::Sourced {
        value: format!("https://{SCC}:{port}"),
        source: "test".into(),
    });
    exchange.exchange_hosts = Some(HostSuffixes::new(exchange_hosts));
    exchange.compliance_hosts = Some(HostSuffixes::new(compliance_hosts));
    exchange.base_delay = Some(Duration::from_millis(10));
    (exchange, tokens)
}

/// The test cloud as Microsoft's tables describe the real one.
fn runner(emu: &Emulator, transport: Transport) -> Arc<dyn CmdletRunner> {
    let (settings, tokens) = cloud_settings(
        emu,
        transport,
        &["outlook.exosim.test"],
        &["ps.compliance.exosim.test", "admin.exosim.test"],
    );
    warden_exchange::connect(&settings, tokens).unwrap()
}

fn compliance(cmdlet: &str, pairs: &[(&str, ParamValue)]) -> Invocation {
    let parameters: Parameters = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Invocation::new(cmdlet, parameters).on(Endpoint::Compliance)
}

fn s(value: &str) -> ParamValue {
    ParamValue::String(value.to_owned())
}

/// Exchange requests exosim logged, as (host, status, cmdlet).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_calls_find_the_regional_host_from_the_front_doors_redirect_once() {
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let runner = runner(&emu, Transport::Rest);
    let none = invoke_all(&*runner, compliance("Get-ComplianceSearch", &[]))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let created = invoke_all(
        &*runner,
        compliance(
            "New-ComplianceSearch",
            &[
                ("Name", s("Phish-2026-12")),
                ("ExchangeLocation", s("All")),
                ("ContentMatchQuery", s("subject:\"Invoice overdue\"")),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(created[0]["Status"], "NotStarted");
    invoke_all(
        &*runner,
        compliance(
            "Start-ComplianceSearch",
            &[("Identity", s("Phish-2026-12"))],
        ),
    )
    .await
    .unwrap();
    let found = invoke_all(
        &*runner,
        compliance("Get-ComplianceSearch", &[("Identity", s("Phish-2026-12"))]),
    )
    .await
    .unwrap();
    assert_eq!(found[0]["Status"], "Completed");
    assert_eq!(
        found[0]["Items"],
        json!(7 * 25),
        "seven items per mailbox of 25"
    );
    let policies = invoke_all(&*runner, compliance("Get-DlpCompliancePolicy", &[]))
        .await
        .unwrap();
    assert_eq!(policies.len(), 2);
    let retention = invoke_all(&*runner, compliance("Get-RetentionCompliancePolicy", &[]))
        .await
        .unwrap();
    assert!(!retention.is_empty());

    // One redirect, to the read that asks the front door where the tenant lives (no cmdlet);
    // every call after it goes straight to the regional host.
    let seen = wire(&emu);
    assert_eq!(seen[0], (SCC.to_owned(), 302, String::new()), "{seen:?}");
    assert!(
        seen[1..]
            .iter()
            .all(|(host, status, _)| host == SCC_REGIONAL && *status == 200),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 7, "{seen:?}");

    // Exchange calls on the same runner still go to Exchange, with Exchange's token.
    let mailboxes = invoke_all(
        &*runner,
        Invocation::new(
            "Get-Mailbox",
            Parameters::from([("ResultSize".to_owned(), ParamValue::ResultSize(Some(3)))]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(mailboxes.len(), 3);
    assert_eq!(wire(&emu).last().unwrap().0, EXO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_accepts_only_a_token_for_its_own_resource() {
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let (settings, tokens) = cloud_settings(
        &emu,
        Transport::Rest,
        &["outlook.exosim.test"],
        &["ps.compliance.exosim.test", "admin.exosim.test"],
    );
    let http = tokens.transport();
    // Security & Compliance with Exchange's token, as a client without the compliance scope.
    let mut config = settings.compliance_config().unwrap();
    config.scope = warden_auth::Cloud::Public.exchange_scope();
    let session = RestSession::new(config, tokens.clone(), http.clone()).unwrap();
    let error = session
        .invoke(compliance("Get-ComplianceSearch", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExchangeError::AccessDenied { status: 401, .. })
            && error
                .to_string()
                .contains("not valid for Security & Compliance"),
        "{error}"
    );
    // Exchange with the compliance token.
    let mut config = settings.rest_config().unwrap();
    config.scope = warden_exchange::rest::compliance_scope(warden_auth::Cloud::Public);
    let session = RestSession::new(config, tokens, http).unwrap();
    let error = session
        .invoke(Invocation::new("Get-Mailbox", Parameters::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExchangeError::AccessDenied { status: 401, .. })
            && error.to_string().contains("not valid for Exchange Online"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_front_door_redirect_is_followed_within_the_cloud_and_remembered() {
    let emu = start(exosim::ExchangeRegion::Redirect).await;
    let runner = runner(&emu, Transport::Rest);
    let all = invoke_all(&*runner, Invocation::new("Get-Mailbox", Parameters::new()))
        .await
        .unwrap();
    assert_eq!(all.len(), 25);
    let again = invoke_all(
        &*runner,
        Invocation::new("Get-AcceptedDomain", Parameters::new()),
    )
    .await
    .unwrap();
    assert!(!again.is_empty());
    let seen = wire(&emu);
    assert_eq!(seen[0].0, EXO);
    assert_eq!(seen[0].1, 302);
    assert!(
        seen[1..]
            .iter()
            .all(|(h, s, _)| h == EXO_REGIONAL && *s == 200),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_links_on_a_regional_host_of_the_cloud_are_followed() {
    let emu = start(exosim::ExchangeRegion::NextLinksOnRegionalHost).await;
    let (mut settings, tokens) = cloud_settings(
        &emu,
        Transport::Rest,
        &["outlook.exosim.test"],
        &["ps.compliance.exosim.test"],
    );
    settings.page_size = Some(10);
    let runner = warden_exchange::connect(&settings, tokens).unwrap();
    let all = invoke_all(&*runner, Invocation::new("Get-Mailbox", Parameters::new()))
        .await
        .unwrap();
    assert_eq!(all.len(), 25);
    let hosts: Vec<String> = wire(&emu).into_iter().map(|(h, _, _)| h).collect();
    assert_eq!(
        hosts,
        [EXO, EXO_REGIONAL, EXO_REGIONAL],
        "three pages of ten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_or_paging_link_leaving_the_cloud_is_refused_naming_the_host_and_never_sent() {
    // The operator's cloud is `outlook.exosim.test` alone: its regional host is not in it.
    for region in [
        exosim::ExchangeRegion::Redirect,
        exosim::ExchangeRegion::NextLinksOnRegionalHost,
    ] {
        let emu = start(region).await;
        let (mut settings, tokens) = cloud_settings(
            &emu,
            Transport::Rest,
            &["exo.exosim.test"],
            &["ps.compliance.exosim.test"],
        );
        settings.page_size = Some(10);
        let runner = warden_exchange::connect(&settings, tokens).unwrap();
        let error = invoke_all(&*runner, Invocation::new("Get-Mailbox", Parameters::new()))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ExchangeError::Protocol { .. })
                && error.to_string().contains(EXO_REGIONAL)
                && error.to_string().contains("refusing to send the token"),
            "{region:?}: {error}"
        );
        let seen = wire(&emu);
        assert_eq!(seen.len(), 1, "{region:?}: {seen:?}");
        assert_eq!(seen[0].0, EXO, "{region:?}: nothing reached {EXO_REGIONAL}");
    }
    // Security & Compliance's redirect names `<region>.admin.<suffix>`: without that suffix in
    // the table, the compliance call is refused the same way.
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let (settings, tokens) = cloud_settings(
        &emu,
        Transport::Rest,
        &["outlook.exosim.test"],
        &["ps.compliance.exosim.test"],
    );
    let runner = warden_exchange::connect(&settings, tokens).unwrap();
    let error = invoke_all(&*runner, compliance("Get-ComplianceSearch", &[]))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("eur02b.admin.exosim.test"),
        "{error}"
    );
    // The read that asks where the tenant lives, then the call: both on the front door only.
    let seen = wire(&emu);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(host, _, _)| host == SCC), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_powershell_offers_no_compliance_endpoint_and_sends_nothing() {
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let runner = runner(&emu, Transport::Rps);
    let error = invoke_all(&*runner, compliance("Get-ComplianceSearch", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExchangeError::Invalid(_)) && error.to_string().contains("over REST only"),
        "{error}"
    );
    assert!(wire(&emu).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_runs_a_call_meant_for_the_other_endpoint() {
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let error = admin_session(&emu)
        .invoke(compliance("Get-ComplianceSearch", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExchangeError::Invalid(_)) && error.to_string().contains("compliance"),
        "{error}"
    );
    assert!(wire(&emu).is_empty());
    let config = SessionConfig::compliance(warden_auth::Cloud::Public, "contoso.onmicrosoft.com");
    assert_eq!(config.endpoint, Endpoint::Compliance);
    assert_eq!(
        config.scope,
        "https://ps.compliance.protection.outlook.com/.default"
    );
}

/// The example script and its grant (scripts/policy.toml), through the broker: the policy entry
/// sends Get-ComplianceSearch to Security & Compliance; purging is not granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compliance_example_script_lists_searches_and_purging_is_not_granted() {
    let emu = start(exosim::ExchangeRegion::Direct).await;
    let runner = runner(&emu, Transport::Rest);
    invoke_all(
        &*runner,
        compliance(
            "New-ComplianceSearch",
            &[("Name", s("Legal hold 7")), ("ExchangeLocation", s("All"))],
        ),
    )
    .await
    .unwrap();
    let policy_file = repo_root().join("scripts/policy.toml");
    let policy = Arc::new(
        Policy::parse(
            &std::fs::read_to_string(&policy_file).unwrap(),
            &policy_file,
        )
        .unwrap(),
    );
    let audit = AuditTrail::open(
        &emu.dir.path().join("audit.jsonl"),
        AuditKey::from_bytes([7; 32]),
    )
    .unwrap();
    let broker = Broker::new(
        policy.clone(),
        runner,
        Arc::new(audit),
        Duration::from_secs(30),
    );
    let scripts = ScriptHost::new(RuntimeLimits::default());
    let run = |name: &str, source: String, file: Option<std::path::PathBuf>| {
        let compiled = scripts.compile(name, &source).unwrap();
        let principal = match &file {
            Some(file) => Principal::script_file(file, source.as_bytes()),
            None => policy.inline_principal(warden_policy::OPERATOR, &source),
        };
        let broker = broker.clone();
        let scripts = &scripts;
        async move {
            scripts
                .run(&compiled, principal, &broker, RunRequest::new(vec![]))
                .await
                .unwrap()
        }
    };
    let file = repo_root().join("scripts/compliance-searches.rhai");
    let source = std::fs::read_to_string(&file).unwrap();
    let report = run("compliance-searches.rhai", source, Some(file)).await;
    let RunOutcome::Completed {
        output: GuestOutput::Json(rows),
    } = &report.outcome
    else {
        panic!(
            "{:?} (re-pin scripts/policy.toml if the script changed)",
            report.outcome
        )
    };
    assert_eq!(rows[0]["Name"], "Legal hold 7", "{rows}");
    assert_eq!(rows[0]["Status"], "NotStarted", "{rows}");
    assert_eq!(wire(&emu).last().unwrap().0, SCC_REGIONAL);
    // The audit's decision line names the service the call went to.
    let trail = std::fs::read_to_string(emu.dir.path().join("audit.jsonl")).unwrap();
    let decision = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["kind"] == "decision" && l["cmdlet"] == "Get-ComplianceSearch")
        .expect("a decision line for Get-ComplianceSearch");
    assert_eq!(decision["endpoint"], "compliance", "{decision}");

    // A one-liner (the operator's ad hoc grant) may not purge, nor list searches.
    let before = wire(&emu).len();
    for text in [
        r#"exo::invoke("New-ComplianceSearchAction", #{SearchName: "Legal hold 7", Purge: true})"#,
        r#"exo::invoke("Get-ComplianceSearch")"#,
    ] {
        let report = run("one-liner", text.to_owned(), None).await;
        assert!(
            !matches!(report.outcome, RunOutcome::Completed { .. }),
            "{text}: {:?}",
            report.outcome
        );
    }
    assert_eq!(wire(&emu).len(), before, "nothing refused reached exosim");
}
