//! The request pipeline's classifier, case by case: each kind of failure × a read and a write,
//! over both transports, against exosim's fault injection, with exosim's request log as the
//! witness (how many times the cmdlet reached it, and whether a write was applied). The table
//! itself is `warden_exchange::pipeline::classify`; these tests hold the transports to it.
//!
//! | failure (exosim fault)            | read                  | write                    |
//! |-----------------------------------|-----------------------|--------------------------|
//! | not sent (nothing listens)        | retried, then fails   | retried, then fails      |
//! | throttled (429 / 503)             | retried, answered     | retried, answered once   |
//! | lost (reset before/after, 504)    | retried, answered     | outcome unknown, sent once |
//! | transient (500 StorageTransient)  | retried, answered     | fails, sent once         |
//! | final (object not found)          | fails, sent once      | fails, sent once         |

use crate::support::*;
use exosim::ExchangeFault;
use std::sync::Arc;
use std::time::Duration;
use warden_exchange::{CmdletKind, CmdletRunner, ExchangeError, Invocation, ParamValue};

over_both_transports!(
    not_sent_read_is_retried_then_fails_as_unreachable,
    not_sent_write_is_retried_then_fails_as_unreachable,
    throttled_429_read_is_retried_and_answered,
    throttled_429_write_is_retried_and_applied_once,
    unavailable_503_read_is_retried_and_answered,
    unavailable_503_write_is_retried_and_applied_once,
    lost_after_apply_read_is_retried_and_answered,
    lost_after_apply_write_is_outcome_unknown_and_sent_once,
    lost_before_apply_read_is_retried_and_answered,
    lost_before_apply_write_is_outcome_unknown_and_sent_once,
    gateway_timeout_504_read_is_retried_and_answered,
    gateway_timeout_504_write_is_outcome_unknown_and_sent_once,
    transient_500_read_is_retried_and_answered,
    transient_500_write_fails_and_is_sent_once,
    final_error_read_fails_and_is_sent_once,
    final_error_write_fails_and_is_sent_once,
);

/// How a case must end.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answered after `sends` requests for the cmdlet reached exosim.
    Answered { sends: usize },
    /// `OutcomeUnknown`, after exactly one request.
    OutcomeUnknown,
    /// Fails with this [`ExchangeError::kind`] after exactly one request.
    Fails(&'static str),
}

const NEW_NAME: &str = "Renamed Through The Pipeline";

fn call(kind: CmdletKind, identity: &str) -> Invocation {
    let mut parameters = vec![(
        "Identity".to_owned(),
        ParamValue::String(identity.to_owned()),
    )];
    let cmdlet = match kind {
        CmdletKind::Read => "Get-Mailbox",
        CmdletKind::Write => {
            parameters.push((
                "DisplayName".to_owned(),
                ParamValue::String(NEW_NAME.to_owned()),
            ));
            "Set-Mailbox"
        }
    };
    Invocation::new(cmdlet, parameters.into_iter().collect())
}

/// A mailbox the demo tenant has.
async fn some_mailbox(emu: &Emulator) -> String {
    operator_invoke(emu, "Get-Mailbox", serde_json::json!({"ResultSize": 1})).await[0]
        ["PrimarySmtpAddress"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs a `kind` call whose first request meets `fault` (none: a call on an object that does
/// not exist), and holds it to `expect` with exosim's request log.
async fn case(
    transport: Transport,
    fault: Option<ExchangeFault>,
    kind: CmdletKind,
    expect: Expect,
) {
    let emu = Emulator::start().await;
    let tenant = emu.tenant_id();
    let target = match fault {
        Some(_) => some_mailbox(&emu).await,
        None => "nobody-here@contoso.onmicrosoft.com".to_owned(),
    };
    let (runner, _) = runner_for(&emu, 0, transport);
    let invocation = call(kind, &target);
    let cmdlet = invocation.cmdlet.clone();
    if let Some(fault) = fault {
        emu.exosim.exchange_faults().push_for(&cmdlet, fault);
    }
    // The operator's own look-up of the target is not this call's.
    let before = calls_of(&emu, &cmdlet).len();
    let result = invoke_all(runner.as_ref(), invocation).await;
    let log = calls_of(&emu, &cmdlet).split_off(before);
    let applied = log.iter().filter(|r| r.applied).count();
    match expect {
        Expect::Answered { sends } => {
            let objects = result.unwrap_or_else(|e| panic!("{transport:?} {cmdlet}: {e}"));
            if kind == CmdletKind::Read {
                assert_eq!(objects.len(), 1, "{transport:?}: the read answered");
            }
            assert_eq!(
                log.len(),
                sends,
                "{transport:?} {cmdlet}: requests that reached exosim"
            );
        }
        Expect::OutcomeUnknown => {
            let error = result.unwrap_err();
            assert!(
                matches!(error, ExchangeError::OutcomeUnknown { .. }),
                "{transport:?} {cmdlet}: {error}"
            );
            assert_eq!(
                log.len(),
                1,
                "{transport:?}: a write that may have run is sent once"
            );
        }
        Expect::Fails(kind_word) => {
            let error = result.unwrap_err();
            assert_eq!(error.kind(), kind_word, "{transport:?} {cmdlet}: {error}");
            assert_eq!(log.len(), 1, "{transport:?} {cmdlet}: sent once");
        }
    }
    if kind == CmdletKind::Write {
        assert!(
            applied <= 1,
            "{transport:?}: the write was applied {applied} times"
        );
        let name = emu
            .exosim
            .mailbox(&tenant, &target)
            .map(|m| m["DisplayName"] == NEW_NAME);
        // The log and the tenant agree on whether the write ran.
        assert_eq!(
            name.unwrap_or(false),
            applied == 1,
            "{transport:?}: {log:?}"
        );
    }
}

/// A call of `kind` to an Exchange URL where nothing listens: the request never leaves, so a
/// read and a write alike are retried, then fail as unreachable, never as of unknown outcome.
async fn not_sent(transport: Transport, kind: CmdletKind) {
    let emu = Emulator::start().await;
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let settings = settings(&env, &Default::default()).unwrap();
    let tokens = provider(&settings).unwrap();
    // A port nothing listens on: bind one, note it, let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("https://{closed}");
    let mut exchange = exchange_settings(&emu, &settings, transport);
    exchange.url = Some(warden_auth::config::Sourced {
        value: url,
        source: "a port where nothing listens".into(),
    });
    exchange.base_delay = Some(Duration::from_millis(5));
    let runner: Arc<dyn CmdletRunner> = warden_exchange::connect(&exchange, tokens).unwrap();
    let error = invoke_all(
        runner.as_ref(),
        call(kind, "someone@contoso.onmicrosoft.com"),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "transport", "{transport:?} {kind:?}: {error}");
    assert!(
        emu.exosim.exchange_log().is_empty(),
        "nothing reached exosim"
    );
}

async fn not_sent_read_is_retried_then_fails_as_unreachable(transport: Transport) {
    not_sent(transport, CmdletKind::Read).await
}

async fn not_sent_write_is_retried_then_fails_as_unreachable(transport: Transport) {
    not_sent(transport, CmdletKind::Write).await
}

fn too_many_requests() -> Option<ExchangeFault> {
    Some(ExchangeFault::TooManyRequests {
        retry_after_secs: 0.05,
    })
}

async fn throttled_429_read_is_retried_and_answered(transport: Transport) {
    case(
        transport,
        too_many_requests(),
        CmdletKind::Read,
        Expect::Answered { sends: 2 },
    )
    .await
}

async fn throttled_429_write_is_retried_and_applied_once(transport: Transport) {
    case(
        transport,
        too_many_requests(),
        CmdletKind::Write,
        Expect::Answered { sends: 2 },
    )
    .await
}

async fn unavailable_503_read_is_retried_and_answered(transport: Transport) {
    let fault = Some(ExchangeFault::ServiceUnavailable);
    case(
        transport,
        fault,
        CmdletKind::Read,
        Expect::Answered { sends: 2 },
    )
    .await
}

async fn unavailable_503_write_is_retried_and_applied_once(transport: Transport) {
    let fault = Some(ExchangeFault::ServiceUnavailable);
    case(
        transport,
        fault,
        CmdletKind::Write,
        Expect::Answered { sends: 2 },
    )
    .await
}

async fn lost_after_apply_read_is_retried_and_answered(transport: Transport) {
    let fault = Some(ExchangeFault::ResetAfterApply);
    case(
        transport,
        fault,
        CmdletKind::Read,
        Expect::Answered { sends: 2 },
    )
    .await
}

async fn lost_after_apply_write_is_outcome_unknown_and_sent_once(transport: Transport) {
    let fault = Some(ExchangeFault::ResetAfterApply);
    case(transport, fault, CmdletKind::Write, Expect::OutcomeUnknown).await
}

async fn lost_before_apply_read_is_retried_and_answered(transport: Transport) {
    let fault = Some(ExchangeFault::ResetBeforeApply);
    case(
        transport,
        fault,
        CmdletKind::Read,
        Expect::Answered { sends: 2 },
    )
    .await
}

/// The client cannot tell a reset before the cmdlet ran from one after: it must assume the worse.
async fn lost_before_apply_write_is_outcome_unknown_and_sent_once(transport: Transport) {
    let fault = Some(ExchangeFault::ResetBeforeApply);
    case(transport, fault, CmdletKind::Write, Expect::OutcomeUnknown).await
}

async fn gateway_timeout_504_read_is_retried_and_answered(transport: Transport) {
    let fault = Some(ExchangeFault::GatewayTimeout);
    case(
        transport,
        fault,
        CmdletKind::Read,
        Expect::Answered { sends: 2 },
    )
    .await
}

async fn gateway_timeout_504_write_is_outcome_unknown_and_sent_once(transport: Transport) {
    let fault = Some(ExchangeFault::GatewayTimeout);
    case(transport, fault, CmdletKind::Write, Expect::OutcomeUnknown).await
}

async fn transient_500_read_is_retried_and_answered(transport: Transport) {
    let fault = Some(ExchangeFault::TransientServerError);
    case(
        transport,
        fault,
        CmdletKind::Read,
        Expect::Answered { sends: 2 },
    )
    .await
}

async fn transient_500_write_fails_and_is_sent_once(transport: Transport) {
    let fault = Some(ExchangeFault::TransientServerError);
    case(transport, fault, CmdletKind::Write, Expect::Fails("remote")).await
}

async fn final_error_read_fails_and_is_sent_once(transport: Transport) {
    case(transport, None, CmdletKind::Read, Expect::Fails("remote")).await
}

async fn final_error_write_fails_and_is_sent_once(transport: Transport) {
    case(transport, None, CmdletKind::Write, Expect::Fails("remote")).await
}
