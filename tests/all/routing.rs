//! The per-call routing hint (`X-AnchorMailbox`, `docs/protocol/exo-protocol.md` §1.3–1.4)
//! against exosim over HTTPS, its request log as witness: a mailbox-scoped cmdlet is routed by
//! its `-Identity` when custom routing is on, every other call carries the default anchor, and
//! a value that would break the header, or that names another tenant's mailbox, never becomes
//! a hint.

use crate::support::*;
use std::time::Duration;
use warden_auth::TokenProvider;
use warden_auth::config::Overrides;
use warden_auth::transport::{Auth, HttpRequest, Method};
use warden_exchange::{ExchangeSession, Invocation, ParamValue, Parameters, SessionConfig};

/// The emulated tenant's domain.
fn tenant_domain(emu: &Emulator) -> String {
    emu.ready["tenants"][0]["domain"]
        .as_str()
        .expect("the tenant has a domain")
        .to_owned()
}

/// A REST session for app 0 with custom routing on, its tenant named by its domain (a tenant
/// given as a GUID names no domain, so no address would route), and its token provider.
fn routed_session(emu: &Emulator) -> (ExchangeSession, TokenProvider) {
    let env = with(
        emu.env_for(0),
        &[("AZURE_CLIENT_SECRET", &emu.app_str(0, "client_secret"))],
    );
    let settings = settings(&env, &Overrides::default()).unwrap();
    let tokens = provider(&settings).unwrap();
    let mut config =
        SessionConfig::for_settings(&settings, Some(&emu.exosim.exchange_url())).unwrap();
    config.base_delay = Duration::from_millis(10);
    config.custom_routing = true;
    config.tenant = tenant_domain(emu);
    let session = ExchangeSession::new(config, tokens.clone(), tokens.transport()).unwrap();
    (session, tokens)
}

fn default_anchor(emu: &Emulator) -> String {
    format!(
        "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{}",
        emu.tenant_id()
    )
}

fn identity(value: &str) -> Parameters {
    Parameters::from([("Identity".to_owned(), ParamValue::String(value.to_owned()))])
}

/// Runs `invocation` (its outcome aside) and returns the routing headers of the one
/// `InvokeCommand` exosim logged for it.
async fn routing_of(
    emu: &Emulator,
    session: &ExchangeSession,
    invocation: Invocation,
) -> (Option<String>, Option<String>) {
    emu.exosim.clear_request_log();
    let cmdlet = invocation.cmdlet.clone();
    let _ = session.invoke(invocation).await;
    let log = emu.exosim.request_log();
    let calls: Vec<_> = log
        .iter()
        .filter(|r| r.path.ends_with("/InvokeCommand"))
        .collect();
    assert_eq!(calls.len(), 1, "one request for {cmdlet}: {calls:?}");
    let call = calls[0];
    assert_eq!(call.header("x-cmdletname"), Some(cmdlet.as_str()));
    (
        call.header("x-anchormailbox").map(str::to_owned),
        call.header("parameter-based-routing").map(str::to_owned),
    )
}

async fn first_mailbox_address(session: &ExchangeSession) -> String {
    let mailboxes = session
        .invoke(Invocation::new(
            "Get-Mailbox",
            Parameters::from([("ResultSize".to_owned(), ParamValue::ResultSize(Some(1)))]),
        ))
        .await
        .unwrap();
    mailboxes[0]["PrimarySmtpAddress"]
        .as_str()
        .expect("a mailbox has an address")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_scoped_cmdlet_is_routed_by_its_identity() {
    let emu = Emulator::start().await;
    let (session, _) = routed_session(&emu);
    let address = first_mailbox_address(&session).await;
    let statistics = session
        .invoke(Invocation::new("Get-MailboxStatistics", identity(&address)))
        .await
        .expect("exosim accepts the parameter-based hint");
    assert_eq!(statistics.len(), 1);
    let (anchor, parameter_based) = routing_of(
        &emu,
        &session,
        Invocation::new("Get-MailboxStatistics", identity(&address)),
    )
    .await;
    assert_eq!(anchor, Some(format!("SMTP:{address}")));
    assert_eq!(parameter_based.as_deref(), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_guid_is_routed_as_mbx_in_the_tenant() {
    let emu = Emulator::start().await;
    let (session, _) = routed_session(&emu);
    let mailboxes = session
        .invoke(Invocation::new(
            "Get-Mailbox",
            Parameters::from([("ResultSize".to_owned(), ParamValue::ResultSize(Some(1)))]),
        ))
        .await
        .unwrap();
    let guid = mailboxes[0]["ExchangeGuid"]
        .as_str()
        .expect("a mailbox has a GUID")
        .to_ascii_uppercase();
    let (anchor, parameter_based) = routing_of(
        &emu,
        &session,
        Invocation::new("Get-MailboxStatistics", identity(&guid)),
    )
    .await;
    assert_eq!(
        anchor,
        Some(format!(
            "MBX:{}@{}",
            guid.to_ascii_lowercase(),
            tenant_domain(&emu)
        ))
    );
    assert_eq!(parameter_based.as_deref(), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_another_tenant_s_domain_is_never_a_hint() {
    let emu = Emulator::start().await;
    let (session, _) = routed_session(&emu);
    let address = first_mailbox_address(&session).await;
    let local = address.split('@').next().unwrap();
    for foreign in [
        format!("{local}@fabrikam.onmicrosoft.com"),
        format!("{local}@sub.{}", tenant_domain(&emu)),
    ] {
        let (anchor, parameter_based) = routing_of(
            &emu,
            &session,
            Invocation::new("Get-MailboxStatistics", identity(&foreign)),
        )
        .await;
        assert_eq!(anchor, Some(default_anchor(&emu)), "{foreign}");
        assert_eq!(parameter_based, None, "{foreign}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmdlet_without_an_identity_carries_the_default_anchor() {
    let emu = Emulator::start().await;
    let (session, _) = routed_session(&emu);
    for invocation in [
        Invocation::new("Get-AcceptedDomain", Parameters::new()),
        // Not a mailbox-scoped cmdlet of the module's list, identity or not.
        Invocation::new("Get-Mailbox", identity("nobody@example.com")),
    ] {
        let (anchor, parameter_based) = routing_of(&emu, &session, invocation).await;
        assert_eq!(anchor, Some(default_anchor(&emu)));
        assert_eq!(parameter_based, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_would_break_the_header_is_never_a_hint() {
    let emu = Emulator::start().await;
    let (session, _) = routed_session(&emu);
    let address = first_mailbox_address(&session).await;
    for value in [
        format!("{address}\r\nX-Injected: 1"),
        format!("{address}\n"),
        format!("\u{f1}{address}"),
        format!("{address}:\\Calendar"),
        "Ann Smith".to_owned(),
    ] {
        let (anchor, parameter_based) = routing_of(
            &emu,
            &session,
            Invocation::new("Get-MailboxStatistics", identity(&value)),
        )
        .await;
        // The real check is `routing_of`'s "exactly one InvokeCommand", with the default
        // anchor: had the value become a hint, the http crate would refuse its CR/LF before
        // sending and no call would be logged. (An `x-injected` header in the log could never
        // be seen, so looking for one would prove nothing.)
        assert_eq!(anchor, Some(default_anchor(&emu)), "{value:?}");
        assert_eq!(parameter_based, None, "{value:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exosim_answers_a_malformed_hint_with_400_incorrect_routing_hint() {
    let emu = Emulator::start().await;
    let (session, tokens) = routed_session(&emu);
    let token = tokens
        .get_token(&session.config().scope)
        .await
        .expect("a token");
    for (hint, parameter_based) in [
        ("not-a-hint", false),
        ("XYZ:ann@contoso.com", false),
        (
            "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@x.example",
            true,
        ),
    ] {
        let mut request = HttpRequest::new(
            Method::Post,
            format!(
                "{}/adminapi/beta/{}/InvokeCommand",
                emu.exosim.exchange_url(),
                emu.tenant_id()
            ),
        );
        request.auth = Some(Auth::Bearer(token.clone()));
        request.headers = vec![
            ("content-type".into(), "application/json".into()),
            ("x-anchormailbox".into(), hint.into()),
        ];
        if parameter_based {
            request
                .headers
                .push(("parameter-based-routing".into(), "true".into()));
        }
        request.body = br#"{"CmdletInput":{"CmdletName":"Get-AcceptedDomain","Parameters":{}}}"#
            .to_vec()
            .into();
        let response = tokens.transport().send(request).await.unwrap();
        assert_eq!(response.status, 400, "{hint}");
        let body = String::from_utf8_lossy(&response.body);
        assert!(body.contains("ErrorIncorrectRoutingHint"), "{hint}: {body}");
    }
}
