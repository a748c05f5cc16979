//! One suite, two transports: every case here runs over REST `InvokeCommand` and over WinRM
//! Remote PowerShell (`/PowerShell-LiveID`), through the same `CmdletRunner` the broker uses,
//! against the same exosim tenant. Where the real services differ (RPS has no HTTP status per
//! cmdlet), the case says so; everything else must be identical.
//!
//! REST-only wire details (headers, `@odata.nextLink`, `$select`) stay in `exchange.rs`.

use crate::support::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use warden_auth::clock::ManualClock;
use warden_auth::config::Overrides;
use warden_auth::{RetryPolicy, TokenProvider};
use warden_exchange::{ExchangeError, Invocation, ParamValue, Parameters};

fn params(pairs: &[(&str, ParamValue)]) -> Parameters {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(value: &str) -> ParamValue {
    ParamValue::String(value.to_owned())
}

fn call(cmdlet: &str, pairs: &[(&str, ParamValue)]) -> Invocation {
    Invocation::new(cmdlet, params(pairs))
}

over_both_transports!(
    every_mailbox_arrives_once_without_annotations,
    cmdlet_errors_arrive_typed_with_exchange_details,
    writes_change_state_that_later_reads_see,
    a_parameter_value_never_becomes_code,
    missing_app_role_and_missing_directory_role_are_access_denied_and_explained,
    an_expired_token_is_re_minted_once_and_the_session_goes_on,
    a_write_reset_after_apply_is_reported_unknown_and_never_repeated,
    warden_invoke_gives_the_same_json_lines,
);

async fn every_mailbox_arrives_once_without_annotations(transport: Transport) {
    let emu = Emulator::start_with(|o| o.mailboxes = 2500).await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let mut stream = runner.start(call(
        "Get-Mailbox",
        &[("ResultSize", ParamValue::ResultSize(None))],
    ));
    let (mut seen, mut pages, mut largest) = (BTreeSet::new(), 0, 0);
    while let Some(page) = stream.next_page().await.unwrap() {
        pages += 1;
        largest = largest.max(page.objects.len());
        for object in page.objects {
            assert!(
                object.keys().all(|k| !k.contains('@')),
                "annotations are stripped: {object:?}"
            );
            let guid = object["ExchangeGuid"].as_str().unwrap().to_owned();
            assert!(seen.insert(guid), "an object came twice");
        }
    }
    assert_eq!(seen.len(), emu.exosim.mailbox_count(&emu.tenant_id()));
    assert!(
        pages > 1,
        "{transport:?}: 2,500 mailboxes came in {pages} page(s)"
    );
    assert!(
        largest <= 1000,
        "{transport:?}: a page of {largest} objects: results are not streamed"
    );
}

async fn cmdlet_errors_arrive_typed_with_exchange_details(transport: Transport) {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let cases: &[(Invocation, u16, &str)] = &[
        (
            call(
                "Get-Mailbox",
                &[("Identity", s("nobody-here@contoso.onmicrosoft.com"))],
            ),
            404,
            "ManagementObjectNotFoundException",
        ),
        (
            call("Get-Mailbox", &[("Ident", s("x"))]),
            400,
            "ParameterBindingException",
        ),
        (
            call("Get-Frobnicator", &[]),
            400,
            "CommandNotFoundException",
        ),
    ];
    for (invocation, status, exception) in cases {
        let cmdlet = &invocation.cmdlet;
        match invoke_all(runner.as_ref(), invocation.clone())
            .await
            .unwrap_err()
        {
            ExchangeError::Cmdlet(e) => {
                // RPS has no HTTP status per cmdlet; the client gives the status REST would,
                // from the error record's category and exception, so a plugin branching on
                // "404: create it" behaves the same over both.
                assert_eq!(e.status, *status, "{transport:?} {cmdlet}: {e:?}");
                if transport == Transport::Rest {
                    assert!(e.request_id.is_some(), "{cmdlet}: {e:?}");
                }
                assert_eq!(
                    e.exception_type.as_deref(),
                    Some(*exception),
                    "{cmdlet}: {e:?}"
                );
                assert_eq!(&e.cmdlet, cmdlet);
                assert!(!e.message.is_empty(), "{cmdlet}: {e:?}");
            }
            other => panic!("{transport:?} {cmdlet}: {other}"),
        }
    }
    assert_eq!(
        calls_of(&emu, "Get-Mailbox").len(),
        2,
        "cmdlet errors are not retried"
    );
}

async fn writes_change_state_that_later_reads_see(transport: Transport) {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let tenant = emu.tenant_id();
    let before = emu.exosim.mailbox_count(&tenant);
    let new_shared = || {
        call(
            "New-Mailbox",
            &[
                ("Name", s("Help Desk")),
                ("Alias", s("helpdesk")),
                ("Shared", ParamValue::Switch(true)),
            ],
        )
    };
    let created = invoke_all(runner.as_ref(), new_shared()).await.unwrap();
    assert_eq!(created.len(), 1, "New-Mailbox returns the mailbox");
    assert_eq!(created[0]["Alias"], "helpdesk");
    assert_eq!(emu.exosim.mailbox_count(&tenant), before + 1);
    let found = invoke_all(
        runner.as_ref(),
        call("Get-Mailbox", &[("Identity", s("helpdesk"))]),
    )
    .await
    .unwrap();
    assert_eq!(found[0]["RecipientTypeDetails"], "SharedMailbox");
    // The REST view of the tenant agrees with what this transport wrote.
    let rest = operator_invoke(&emu, "Get-Mailbox", json!({"Identity": "helpdesk"})).await;
    assert_eq!(rest, found, "{transport:?} and REST return the same object");

    let duplicate = invoke_all(runner.as_ref(), new_shared()).await.unwrap_err();
    assert!(matches!(duplicate, ExchangeError::Cmdlet(_)), "{duplicate}");
    invoke_all(
        runner.as_ref(),
        call(
            "Remove-Mailbox",
            &[
                ("Identity", s("helpdesk")),
                ("Confirm", ParamValue::Bool(false)),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(emu.exosim.mailbox_count(&tenant), before);
}

async fn a_parameter_value_never_becomes_code(transport: Transport) {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let tenant = emu.tenant_id();
    let mailboxes = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 2})).await;
    let (target, bystander) = (
        mailboxes[0]["PrimarySmtpAddress"]
            .as_str()
            .unwrap()
            .to_owned(),
        mailboxes[1]["PrimarySmtpAddress"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    // PowerShell that would delete the bystander if any layer pasted the value into script text.
    // Also what could break the codecs on the way: XML and CLIXML escapes (`_x0022_` must stay
    // six characters, not become a quote), CDATA ends, a line break.
    let hostile = format!(
        "x\"; Remove-Mailbox -Identity '{bystander}' -Confirm:$false; $(Remove-Mailbox {bystander}) #<Obj>&amp;_x0022_]]>\r\n`$"
    );
    invoke_all(
        runner.as_ref(),
        call(
            "Set-Mailbox",
            &[("Identity", s(&target)), ("DisplayName", s(&hostile))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        emu.exosim.mailbox(&tenant, &target).unwrap()["DisplayName"],
        json!(hostile),
        "the value arrived as one literal string"
    );
    assert!(
        emu.exosim.mailbox(&tenant, &bystander).is_some(),
        "nothing else ran"
    );
    assert!(calls_of(&emu, "Remove-Mailbox").is_empty());
}

async fn missing_app_role_and_missing_directory_role_are_access_denied_and_explained(
    transport: Transport,
) {
    let emu = Emulator::start().await;
    for (app, rest_status, needle) in [(1, 401, "Exchange.ManageAsApp"), (2, 403, "directory role")]
    {
        let (runner, _) = runner_for(&emu, app, transport);
        match invoke_all(runner.as_ref(), call("Get-Mailbox", &[]))
            .await
            .unwrap_err()
        {
            ExchangeError::AccessDenied {
                status,
                explanation,
                ..
            } => {
                // Over RPS the missing directory role is a `w:AccessDenied` SOAP fault (HTTP
                // 500): authenticated but not authorised, which the client reports as 403.
                assert_eq!(status, rest_status, "{transport:?} app {app}");
                assert!(
                    explanation.contains(needle),
                    "{transport:?} app {app}: {explanation}"
                );
            }
            other => panic!("{transport:?} app {app}: {other}"),
        }
        assert!(
            calls_of(&emu, "Get-Mailbox").iter().all(|r| !r.applied),
            "nothing ran for app {app}"
        );
    }
}

async fn an_expired_token_is_re_minted_once_and_the_session_goes_on(transport: Transport) {
    // exosim tolerates 5 s of clock skew on exp: a 1 s token is refused once 6 s have passed.
    let emu = Emulator::start_with(|o| o.token_lifetime = Duration::from_secs(1)).await;
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let settings = settings(&env, &Overrides::default()).unwrap();
    // A client clock that has stopped: the cache keeps believing its token is fresh, so only
    // the server's 401 can tell it otherwise.
    let clock = Arc::new(ManualClock::at(SystemTime::now()));
    let transport_http =
        Arc::new(warden_auth::ReqwestTransport::new(settings.ca_file.as_deref()).unwrap());
    let tokens = TokenProvider::with_options(
        settings.load_credential().unwrap(),
        transport_http,
        clock,
        RetryPolicy::default(),
    );
    // One session (for RPS: one runspace pool) across the expiry.
    let runner = runner_with(&emu, &settings, tokens, transport);
    let first = invoke_all(runner.as_ref(), call("Get-AcceptedDomain", &[]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let second = invoke_all(runner.as_ref(), call("Get-AcceptedDomain", &[]))
        .await
        .unwrap();
    assert_eq!(first, second);
    // Exactly one request was refused, and the session recovered with a fresh token. (A 1 s
    // token is also refreshed in the background once it is used near its expiry, so the
    // number of tokens issued depends on how many requests a call makes: REST 1, RPS 4.)
    let refused = emu
        .exosim
        .exchange_log()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert_eq!(
        refused, 1,
        "{transport:?}: the expired token was refused once"
    );
    assert!(
        emu.exosim.counters().tokens_issued >= 2,
        "a fresh token was minted"
    );
}

async fn a_write_reset_after_apply_is_reported_unknown_and_never_repeated(transport: Transport) {
    let emu = Emulator::start().await;
    let tenant = emu.tenant_id();
    let (runner, _) = runner_for(&emu, 0, transport);
    let target = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 1})).await[0]
        ["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    emu.exosim
        .exchange_faults()
        .push_for("Set-Mailbox", exosim::ExchangeFault::ResetAfterApply);
    let error = invoke_all(
        runner.as_ref(),
        call(
            "Set-Mailbox",
            &[
                ("Identity", s(&target)),
                ("DisplayName", s("Renamed By Test")),
            ],
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ExchangeError::OutcomeUnknown { .. }),
        "{transport:?}: {error}"
    );
    assert_eq!(
        calls_of(&emu, "Set-Mailbox").len(),
        1,
        "the write was sent once"
    );
    assert_eq!(
        emu.exosim.mailbox(&tenant, &target).unwrap()["DisplayName"],
        "Renamed By Test",
        "it did apply: that is why it must not be repeated"
    );

    // A read broken the same way is retried and succeeds.
    let reads_before = calls_of(&emu, "Get-Mailbox").len();
    emu.exosim
        .exchange_faults()
        .push_for("Get-Mailbox", exosim::ExchangeFault::ResetBeforeApply);
    let again = invoke_all(
        runner.as_ref(),
        call("Get-Mailbox", &[("Identity", s(&target))]),
    )
    .await
    .unwrap();
    assert_eq!(again[0]["DisplayName"], json!("Renamed By Test"));
    assert_eq!(
        calls_of(&emu, "Get-Mailbox").len() - reads_before,
        2,
        "one failed try, one retry"
    );
}

async fn warden_invoke_gives_the_same_json_lines(transport: Transport) {
    let emu = Emulator::start().await;
    let env = with(
        with(
            emu.env_for(0),
            &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
        ),
        &[("WARDEN_EXCHANGE_URL", &emu.exosim.exchange_url())],
    );
    let name = match transport {
        Transport::Rest => "rest",
        Transport::Rps => "rps",
    };
    let output = warden(
        &[
            "invoke",
            "--transport",
            name,
            "Get-Mailbox",
            "-p",
            "ResultSize=3",
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<Map<String, Value>> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 3})).await;
    assert_eq!(
        lines, expected,
        "{transport:?}: the CLI prints what REST returns"
    );

    let missing = warden(
        &[
            "invoke",
            "--transport",
            name,
            "Get-Mailbox",
            "-p",
            "Identity=nobody@nowhere.example",
        ],
        &env,
    )
    .await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing)
            .1
            .contains("ManagementObjectNotFoundException"),
        "{}",
        text(&missing).1
    );
}

/// The same calls over both transports give the same objects, property for property.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_return_identical_objects() {
    let emu = Emulator::start().await;
    let (rest, _) = runner_for(&emu, 0, Transport::Rest);
    let (rps, _) = runner_for(&emu, 0, Transport::Rps);
    let target = operator_invoke(&emu, "Get-Mailbox", json!({"ResultSize": 1})).await[0]
        ["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let calls = [
        call(
            "Get-Mailbox",
            &[("ResultSize", ParamValue::ResultSize(Some(25)))],
        ),
        call("Get-AcceptedDomain", &[]),
        call("Get-MailboxStatistics", &[("Identity", s(&target))]),
        call("Get-MailboxPermission", &[("Identity", s(&target))]),
        call("Get-Recipient", &[("ResultSize", ParamValue::Int(10))]),
    ];
    let mut compared = BTreeMap::new();
    for invocation in calls {
        let cmdlet = invocation.cmdlet.clone();
        let over_rest = invoke_all(rest.as_ref(), invocation.clone()).await.unwrap();
        let over_rps = invoke_all(rps.as_ref(), invocation).await.unwrap();
        assert!(!over_rest.is_empty(), "{cmdlet} returned something");
        assert_eq!(over_rps, over_rest, "{cmdlet}");
        compared.insert(cmdlet, over_rest.len());
    }
    assert_eq!(compared.len(), 5);
}

/// RPS at Exchange Online itself is refused before anything is sent, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rps_aimed_at_exchange_online_is_refused_with_the_retirement_explained() {
    let emu = Emulator::start().await;
    // No WARDEN_EXCHANGE_URL: the cloud's own host, outlook.office365.com.
    let mut env = with(
        emu.env_for(0),
        &[
            ("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret")),
            ("WARDEN_EXCHANGE_TRANSPORT", "rps"),
        ],
    );
    env.retain(|(name, _)| name != "WARDEN_EXCHANGE_URL");
    let output = warden(&["invoke", "Get-Mailbox"], &env).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("retired"), "{stderr}");
    assert!(
        stderr.contains("env WARDEN_EXCHANGE_TRANSPORT"),
        "names the input: {stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    assert_eq!(
        emu.exosim.counters().tokens_issued,
        0,
        "no token was requested"
    );

    let bad = warden(
        &["invoke", "--transport", "smoke-signals", "Get-Mailbox"],
        &env,
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).1.contains("use rest or rps"), "{}", text(&bad).1);
}

/// A profile's `[exchange]` table picks RPS, its URL, and the endpoint options, and the
/// commented example configuration parses with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_selects_rps_with_its_url_anchor_and_delegated_org() {
    let example = repo_root().join("config.example.toml");
    let file = warden_auth::config::ConfigFile::load(&example).unwrap();
    let hybrid = file.tenants["hybrid"].exchange.as_ref().unwrap();
    assert_eq!(hybrid["transport"].as_str(), Some("rps"));

    let emu = Emulator::start().await;
    let config = emu.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[tenants.lab]
tenant_id = "{tenant}"
client_id = "{client}"
authority_host = "{authority}"
[tenants.lab.credential]
kind = "secret"
secret_env = "LAB_SECRET"
[tenants.lab.exchange]
transport = "rps"
url = "{url}"
anchor = false
delegated_org = "{domain}"
"#,
            tenant = emu.tenant_id(),
            client = emu.app_str(0, "client_id"),
            authority = emu.exosim.url(),
            // A path in the URL replaces /PowerShell-LiveID (exosim matches it in any case):
            // this spelling shows the profile's path was the one used.
            url = emu.exosim.exchange_url() + "/powershell-LIVEID/",
            domain = emu.ready["tenants"][0]["domain"].as_str().unwrap(),
        ),
    )
    .unwrap();
    let env: Env = vec![
        ("WARDEN_CA_FILE".into(), emu.ca()),
        ("LAB_SECRET".into(), emu.app_str(0, "client_secret")),
    ];
    let config = config.display().to_string();
    let output = warden(
        &[
            "invoke",
            "--config",
            &config,
            "--tenant",
            "lab",
            "Get-AcceptedDomain",
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let domains: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!domains.is_empty(), "{stdout}");
    let log = emu.exosim.exchange_log();
    assert!(
        log.iter().all(|r| !r.path.contains("/adminapi/")),
        "REST was not used"
    );
    assert!(
        log.iter().all(|r| r.path == "/powershell-LIVEID"),
        "every request went to the profile's path: {log:?}"
    );
    let create = &log[0];
    let query = create.query.as_deref().unwrap_or_default();
    assert!(query.contains("BasicAuthToOAuthConversion=true"), "{query}");
    let domain = emu.ready["tenants"][0]["domain"].as_str().unwrap();
    assert!(query.contains(&format!("DelegatedOrg={domain}")), "{query}");
    assert!(
        !query.contains("email="),
        "anchor = false leaves it off: {query}"
    );
}

/// An on-premises server (`/PowerShell`) with plain Basic: the client's Basic mode works end to
/// end, a wrong password is refused without a token ever being requested, and the password
/// appears in no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_basic_reaches_an_on_premises_endpoint_and_a_wrong_password_is_refused() {
    use warden_exchange::rps::ON_PREMISES_PATH;
    use warden_exchange::{RpsAuth, RpsConfig, RpsSession};
    const PASSWORD: &str = "Onprem-Canary-7c1e9f";
    let emu = Emulator::start_with(|o| {
        o.onprem_basic = Some(exosim::OnPremBasic {
            user: "CONTOSO\\exadmin".into(),
            password: PASSWORD.into(),
        })
    })
    .await;
    let (_, tokens) = runner_for(&emu, 0, Transport::Rest);
    let session = |password: &str| {
        let mut config = RpsConfig::new(warden_auth::Cloud::Public, &emu.tenant_id());
        config.base_url = emu.exosim.exchange_url();
        config.path = ON_PREMISES_PATH.into();
        config.anchor = None;
        config.auth = RpsAuth::Basic {
            user: "CONTOSO\\exadmin".into(),
            password: password.to_owned().into(),
        };
        RpsSession::new(config, tokens.clone(), tokens.transport()).unwrap()
    };
    let domains = invoke_all(&session(PASSWORD), call("Get-AcceptedDomain", &[]))
        .await
        .unwrap();
    assert!(!domains.is_empty());
    let log = emu.exosim.exchange_log();
    assert!(log.iter().all(|r| r.path == ON_PREMISES_PATH), "{log:?}");
    assert!(
        log.iter().all(|r| r
            .query
            .as_deref()
            .is_none_or(|q| !q.contains("BasicAuthToOAuthConversion"))),
        "plain Basic does not ask for the OAuth conversion"
    );

    let refused = invoke_all(&session("wrong-password"), call("Get-AcceptedDomain", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ExchangeError::AccessDenied { status: 401, .. }),
        "{refused}"
    );
    let shown = format!("{refused} {refused:?}");
    assert!(
        !shown.contains(PASSWORD) && !shown.contains("wrong-password"),
        "{shown}"
    );
    assert_eq!(
        emu.exosim.counters().tokens_issued,
        0,
        "plain Basic never asks Entra for a token"
    );
}

/// The service redirected a Create to the tenant's server (`?PSVersion=…`): with redirection
/// allowed (PowerShell's `-AllowRedirection`, our default) the session moves there and works;
/// without it the call fails naming the target, and no command ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_create_is_followed_only_when_allowed() {
    use warden_exchange::{RpsConfig, RpsSession};
    let emu = Emulator::start_with(|o| o.rps_redirect = true).await;
    let (_, tokens) = runner_for(&emu, 0, Transport::Rest);
    let session = |allow: bool| {
        let mut config = RpsConfig::new(warden_auth::Cloud::Public, &emu.tenant_id());
        config.base_url = emu.exosim.exchange_url();
        config.allow_redirection = allow;
        RpsSession::new(config, tokens.clone(), tokens.transport()).unwrap()
    };
    let following = session(true);
    let domains = invoke_all(&following, call("Get-AcceptedDomain", &[]))
        .await
        .unwrap();
    assert!(!domains.is_empty());
    let moved_to = following.current_endpoint().await;
    assert!(
        moved_to.contains("PSVersion=5.1.17763.2867"),
        "the session moved: {moved_to}"
    );
    let log = emu.exosim.exchange_log();
    assert_eq!(log[0].status, 302, "{log:?}");
    assert!(
        log[1..]
            .iter()
            .all(|r| r.query.as_deref().is_some_and(|q| q.contains("PSVersion="))),
        "every later request went to the redirect's target: {log:?}"
    );

    let refusing = session(false);
    let error = invoke_all(&refusing, call("Get-AcceptedDomain", &[]))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("allow_redirection is off"),
        "{error}"
    );
    assert_eq!(
        calls_of(&emu, "Get-AcceptedDomain").len(),
        1,
        "only the allowed session's command ran"
    );
}
