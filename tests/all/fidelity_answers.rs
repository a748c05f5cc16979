//! Issue 15, the answers Exchange gives: a 2xx without `value` (divergence 1), a confirmation
//! prompt (2), booleans inside filters (3), per-cmdlet timeouts (7), a 401 that outlasts a fresh
//! token (8) and the error ids a support case needs (9). Each test runs the client against
//! exosim over real HTTP, and exosim answers as Exchange does by default, so the old client
//! fails them: it took a write's empty answer for a protocol error, a prompt for success, sent
//! `$true` in a filter, waited 960 s for every cmdlet, gave up on the second 401, and kept no
//! error id in the audit trail or the CLI's message.

use crate::support::*;
use exosim::{ExchangeFault, QueuedExchangeFault};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{CmdletRunner, ExchangeError, Invocation, ParamValue, Parameters};
use warden_policy::{Policy, Principal};
use warden_runtime::{RunRequest, RuntimeLimits, ScriptHost, TracingObserver};

fn params(value: Value) -> Parameters {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), ParamValue::from_named_json(k, v)))
        .collect()
}

async fn run(
    runner: &dyn CmdletRunner,
    cmdlet: &str,
    parameters: Value,
) -> Result<Vec<Map<String, Value>>, ExchangeError> {
    invoke_all(runner, Invocation::new(cmdlet, params(parameters))).await
}

/// The aliases of `n` user mailboxes of the demo tenant.
async fn user_mailboxes(emu: &Emulator, n: usize) -> Vec<String> {
    let found = operator_invoke(
        emu,
        "Get-Mailbox",
        json!({"RecipientTypeDetails": "UserMailbox", "ResultSize": n}),
    )
    .await;
    assert_eq!(found.len(), n, "the demo tenant has {n} user mailboxes");
    found
        .iter()
        .map(|m| m["Alias"].as_str().unwrap().to_owned())
        .collect()
}

fn mailbox(emu: &Emulator, alias: &str) -> Option<Value> {
    emu.exosim.mailbox(&emu.tenant_id(), alias)
}

/// Divergence 1: Exchange answers a write that outputs nothing without a `value` array; that
/// is zero objects, and the write counts as done.
async fn a_write_that_outputs_nothing_is_a_success(transport: Transport) {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let alias = &user_mailboxes(&emu, 1).await[0];
    let mut stream = runner.start(Invocation::new(
        "Set-Mailbox",
        params(json!({"Identity": alias, "DisplayName": "Renamed By Fidelity"})),
    ));
    // REST answers one page without `value`; RPS may answer no page at all.
    let page = stream
        .next_page()
        .await
        .unwrap_or_else(|e| panic!("a write's 2xx is a success: {e}"))
        .unwrap_or_default();
    assert!(page.objects.is_empty());
    // Read as the envelope it is, not rescued as an unreadable answer.
    assert!(
        page.warnings
            .iter()
            .all(|w| !w.contains("could not be read")),
        "{:?}",
        page.warnings
    );
    assert_eq!(
        mailbox(&emu, alias).unwrap()["DisplayName"],
        "Renamed By Fidelity"
    );
}

/// Divergence 2: a prompt means the cmdlet did not run; without `Confirm` a high-impact cmdlet
/// runs (the module's flow).
async fn a_confirmation_prompt_is_not_executed(transport: Transport) {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let aliases = user_mailboxes(&emu, 2).await;
    let error = run(
        &*runner,
        "Remove-Mailbox",
        json!({"Identity": aliases[0], "Confirm": true}),
    )
    .await
    .expect_err("a prompt is never a success");
    assert!(
        matches!(error, ExchangeError::NotExecuted { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), "not-executed");
    assert!(
        error
            .to_string()
            .contains("not executed: Exchange asked for confirmation"),
        "{error}"
    );
    assert!(mailbox(&emu, &aliases[0]).is_some(), "nothing was removed");
    if transport == Transport::Rps {
        // PowerShell's $ConfirmPreference: a runspace prompts unless -Confirm:$false.
        let error = run(&*runner, "Remove-Mailbox", json!({"Identity": aliases[1]}))
            .await
            .expect_err("a runspace prompts without -Confirm:$false");
        assert_eq!(error.kind(), "not-executed", "{error}");
        assert!(mailbox(&emu, &aliases[1]).is_some());
        run(
            &*runner,
            "Remove-Mailbox",
            json!({"Identity": aliases[1], "Confirm": false}),
        )
        .await
        .unwrap_or_else(|e| panic!("-Confirm:$false runs: {e}"));
    } else {
        run(&*runner, "Remove-Mailbox", json!({"Identity": aliases[1]}))
            .await
            .unwrap_or_else(|e| panic!("without Confirm the cmdlet runs: {e}"));
    }
    assert!(mailbox(&emu, &aliases[1]).is_none());
}

/// Divergence 3: `$true`/`$false` in a filter reach Exchange as `'True'`/`'False'` over REST
/// (exosim refuses the variables there, as the service has none to resolve); Remote PowerShell
/// takes them as they are. Either way the filter selects the same mailboxes.
async fn filter_booleans_select_what_they_say(transport: Transport) {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let all = run(&*runner, "Get-Mailbox", json!({"ResultSize": "Unlimited"}))
        .await
        .unwrap();
    for (filter, hidden) in [
        ("HiddenFromAddressListsEnabled -eq $true", true),
        ("HiddenFromAddressListsEnabled -eq $FALSE", false),
        ("(HiddenFromAddressListsEnabled -ne $True)", false),
    ] {
        let found = run(
            &*runner,
            "Get-Mailbox",
            json!({"Filter": filter, "ResultSize": "Unlimited"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{filter}: {e}"));
        let expected = all
            .iter()
            .filter(|m| m["HiddenFromAddressListsEnabled"] == hidden)
            .count();
        assert_eq!(found.len(), expected, "{filter}");
    }
}

/// exosim's REST endpoint refuses a `$true` in a filter as the service would: the client's
/// rewrite is what makes the test above pass over REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_refuses_boolean_variables_in_a_rest_filter() {
    let emu = Emulator::start().await;
    let (_, tokens) = admin_session_and_provider(&emu);
    let token = tokens.get_token(EXCHANGE_SCOPE).await.unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(emu.exosim.ca_file()).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!(
        "{}/adminapi/beta/{}/InvokeCommand",
        emu.exosim.exchange_url().trim_end_matches('/'),
        emu.tenant_id()
    );
    let anchor = format!(
        "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{}",
        emu.tenant_id()
    );
    let send = |filter: &str| {
        let body =
            json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"Filter": filter}}});
        http.post(&url)
            .bearer_auth(token.expose())
            .header("x-anchormailbox", &anchor)
            .json(&body)
            .send()
    };
    let refused = send("HiddenFromAddressListsEnabled -eq $true")
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let text = refused.text().await.unwrap();
    assert!(text.contains("Invalid filter syntax"), "{text}");
    let taken = send("HiddenFromAddressListsEnabled -eq 'True'")
        .await
        .unwrap();
    assert_eq!(taken.status(), 200);
    // An entity set's `$filter` the same way (before, exosim took the variable there).
    let entity = http
        .get(url.replace("/InvokeCommand", "/Mailbox"))
        .query(&[("$filter", "HiddenFromAddressListsEnabled -eq $true")])
        .bearer_auth(token.expose())
        .header("x-anchormailbox", &anchor)
        .send()
        .await
        .unwrap();
    assert_eq!(entity.status(), 400);
    let text = entity.text().await.unwrap();
    assert!(text.contains("Invalid filter syntax"), "{text}");
}

/// Divergence 9: the CLI prints Exchange's error id, exception and request id; a prompt exits
/// 1 (a failed command) saying it did not run.
async fn the_cli_shows_error_ids_and_refuses_a_prompt(transport: Transport) {
    let emu = Emulator::start().await;
    let env = operator_env(&emu);
    let flag = match transport {
        Transport::Rest => "rest",
        Transport::Rps => "rps",
    };
    let out = warden(
        &[
            "invoke",
            "--transport",
            flag,
            "Get-Mailbox",
            "-p",
            "Identity=nobody-here@contoso.com",
        ],
        &env,
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ManagementObjectNotFoundException"),
        "{stderr}"
    );
    assert!(stderr.contains("error id Ex"), "{stderr}");
    assert!(stderr.contains("request-id "), "{stderr}");

    let alias = &user_mailboxes(&emu, 1).await[0];
    let out = warden(
        &[
            "invoke",
            "--transport",
            flag,
            "Remove-Mailbox",
            "-p",
            &format!("Identity={alias}"),
            "-p",
            "Confirm=true",
        ],
        &env,
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not executed: Exchange asked for confirmation"),
        "{stderr}"
    );
    assert!(mailbox(&emu, alias).is_some());
}

const SCRIPT: &str = r#"
let r = #{};
try { exo::invoke("Get-Mailbox", #{Identity: ARGS[0]}); r.missing = "ok"; } catch (e) { r.missing = e; }
try { exo::invoke("Remove-Mailbox", #{Identity: ARGS[1], Confirm: true}); r.prompt = "ok"; } catch (e) { r.prompt = e; }
r
"#;

/// Divergences 2 and 9 in the audit trail: a failed call's line keeps Exchange's error id,
/// exception and request id; a prompt's line says it was not executed.
async fn the_audit_line_keeps_error_ids_and_says_not_executed(transport: Transport) {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, transport);
    let alias = user_mailboxes(&emu, 1).await.remove(0);
    let policy = format!(
        r#"version = 1
[roles.operator]
[[roles.operator.cmdlet]]
name = "Get-Mailbox"
[roles.operator.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
[[roles.operator.cmdlet]]
name = "Remove-Mailbox"
[roles.operator.cmdlet.parameters]
Identity = {{ length = [1, 256] }}
Confirm = {{ boolean = true }}

[[grant]]
id = "fidelity"
script_inline_sha256 = "{}"
roles = ["operator"]
[grant.budgets]
writes = 5
"#,
        Principal::inline_script(SCRIPT).sha256()
    );
    let audit_path = emu.dir.path().join("audit.jsonl");
    let broker = Broker::new(
        Arc::new(Policy::parse(&policy, &emu.dir.path().join("policy.toml")).unwrap()),
        runner,
        Arc::new(AuditTrail::open(&audit_path, AuditKey::from_bytes([7; 32])).unwrap()),
        Duration::from_secs(30),
    );
    let scripts = ScriptHost::new(RuntimeLimits::default());
    let compiled = scripts.compile("inline script", SCRIPT).unwrap();
    let report = scripts
        .run(
            &compiled,
            Principal::inline_script(SCRIPT),
            &broker,
            RunRequest {
                args: vec!["nobody-here@contoso.com".into(), alias.clone()],
                observer: Arc::new(TracingObserver),
                interrupt: Default::default(),
                delegation: None,
            },
        )
        .await
        .unwrap();
    let out = crate::guests::output_json(&report);
    assert_eq!(out["missing"]["kind"], "remote", "{out}");
    assert_eq!(out["prompt"]["kind"], "remote", "{out}");
    assert_eq!(out["prompt"]["exception"], "NotExecuted", "{out}");
    assert!(mailbox(&emu, &alias).is_some());

    let calls: Vec<Value> = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["kind"] == "call")
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let missing = &calls[0];
    assert_eq!(missing["outcome"]["kind"], "remote");
    assert!(
        missing["error"]["error_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("Ex")),
        "{missing}"
    );
    assert_eq!(
        missing["error"]["exception"],
        "ManagementObjectNotFoundException"
    );
    assert!(
        missing["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{missing}"
    );
    assert_eq!(calls[1]["cmdlet"], "Remove-Mailbox");
    assert_eq!(calls[1]["outcome"]["kind"], "not-executed", "{}", calls[1]);
}

/// Divergence 7 (REST; the module's per-cmdlet limits are its REST client's): a configured
/// per-cmdlet limit ends a slow write at that limit, as of unknown outcome, not at 960 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_cmdlet_timeout_cuts_a_slow_write_at_its_limit() {
    let emu = Emulator::start().await;
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let auth = settings(&env, &Default::default()).unwrap();
    let mut exchange = exchange_settings(&emu, &auth, Transport::Rest);
    exchange.base_delay = Some(Duration::from_millis(10));
    exchange
        .cmdlet_timeouts
        .insert("set-mailbox".into(), Duration::from_millis(400));
    let runner = warden_exchange::connect(&exchange, provider(&auth).unwrap()).unwrap();
    let alias = &user_mailboxes(&emu, 1).await[0];
    // The read is not slowed: the limit is per cmdlet.
    run(&*runner, "Get-Mailbox", json!({"Identity": alias}))
        .await
        .unwrap();
    emu.exosim
        .exchange_faults()
        .queue(&QueuedExchangeFault::for_cmdlet(
            "Set-Mailbox",
            0,
            ExchangeFault::SlowAnswer { delay_ms: 5_000 },
        ));
    let started = Instant::now();
    let error = run(
        &*runner,
        "Set-Mailbox",
        json!({"Identity": alias, "DisplayName": "Slow"}),
    )
    .await
    .expect_err("the answer comes after the limit");
    assert_eq!(error.kind(), "outcome-unknown", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        calls_of(&emu, "Set-Mailbox").len(),
        1,
        "a write is sent once"
    );
}

/// Divergence 8 (REST; over RPS every Command counts as a write, so no 401 is repeated there):
/// a read refused with 401 through fresh tokens tries a few more times, each with a new
/// token, and succeeds when the grant arrives; a write is never repeated, and a lasting 401
/// ends with the diagnosis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_that_outlasts_a_fresh_token_is_retried_for_reads_only() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    let alias = &user_mailboxes(&emu, 1).await[0];
    let unauthorized = |cmdlet: &str, count: usize| {
        emu.exosim.exchange_faults().queue(&QueuedExchangeFault {
            count,
            ..QueuedExchangeFault::for_cmdlet(cmdlet, 0, ExchangeFault::Unauthorized)
        });
    };
    emu.exosim.clear_exchange_log();
    let tokens_before = emu.token_requests();
    // Two 401s: the fresh token at once, then one spaced retry.
    unauthorized("Get-Mailbox", 2);
    let found = run(&*runner, "Get-Mailbox", json!({"Identity": alias}))
        .await
        .unwrap_or_else(|e| {
            let log: Vec<_> = calls_of(&emu, "Get-Mailbox")
                .iter()
                .map(|r| (r.status, r.fault.clone()))
                .collect();
            panic!("the grant arrived on the third try: {e}; {log:?}")
        });
    assert_eq!(found.len(), 1);
    let statuses: Vec<u16> = calls_of(&emu, "Get-Mailbox")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [401, 401, 200]);
    assert!(
        emu.token_requests() >= tokens_before + 2,
        "each retry has a fresh token"
    );

    // A lasting 401: the read gives up after its attempts, saying why.
    emu.exosim.clear_exchange_log();
    unauthorized("Get-Mailbox", 10);
    let error = run(&*runner, "Get-Mailbox", json!({"Identity": alias}))
        .await
        .expect_err("still refused");
    assert_eq!(error.kind(), "access-denied", "{error}");
    assert!(
        error
            .to_string()
            .contains("may not have reached Exchange yet"),
        "{error}"
    );
    assert!(error.to_string().contains("[request-id "), "{error}");
    assert_eq!(
        calls_of(&emu, "Get-Mailbox").len(),
        1 + warden_exchange::pipeline::UNAUTHORIZED_ATTEMPTS as usize
    );
    emu.exosim.exchange_faults().clear();

    // A write: the fresh token once (the 401 said it did not run), never more.
    emu.exosim.clear_exchange_log();
    unauthorized("Set-Mailbox", 10);
    let error = run(
        &*runner,
        "Set-Mailbox",
        json!({"Identity": alias, "DisplayName": "Never"}),
    )
    .await
    .expect_err("refused");
    assert_eq!(error.kind(), "access-denied", "{error}");
    let sent = calls_of(&emu, "Set-Mailbox");
    assert_eq!(sent.len(), 2, "the fresh-token retry only");
    assert!(sent.iter().all(|r| !r.applied));
    assert_ne!(mailbox(&emu, alias).unwrap()["DisplayName"], "Never");
}

over_both_transports!(
    a_write_that_outputs_nothing_is_a_success,
    a_confirmation_prompt_is_not_executed,
    filter_booleans_select_what_they_say,
    the_cli_shows_error_ids_and_refuses_a_prompt,
    the_audit_line_keeps_error_ids_and_says_not_executed,
);

/// Issue 15 review, 3: a write's 2xx that is not Exchange's envelope (a proxy's HTML page)
/// does not say the write ran or not: outcome unknown, sent once, never a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_with_an_html_page_is_of_unknown_outcome() {
    let emu = Emulator::start().await;
    let (runner, _) = runner_for(&emu, 0, Transport::Rest);
    let alias = &user_mailboxes(&emu, 1).await[0];
    emu.exosim
        .exchange_faults()
        .queue(&QueuedExchangeFault::for_cmdlet(
            "Set-Mailbox",
            0,
            ExchangeFault::HtmlAfterApply,
        ));
    let error = run(
        &*runner,
        "Set-Mailbox",
        json!({"Identity": alias, "DisplayName": "Behind A Proxy"}),
    )
    .await
    .expect_err("an HTML page is not Exchange saying the write ran");
    assert_eq!(error.kind(), "outcome-unknown", "{error}");
    let sent = calls_of(&emu, "Set-Mailbox");
    assert_eq!(sent.len(), 1, "a write is sent once");
    assert!(sent[0].applied);
}
