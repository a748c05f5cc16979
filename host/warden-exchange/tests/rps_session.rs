//! The RPS client against a scripted server built from warden-psrp's server-side builders: the
//! request sequence of a call, pages, typed errors, the 401 re-mint, access-denied faults,
//! redirects, the write-safety rule, fragmentation of a large parameter, `ResultSize`, a lost
//! pool, throttling within the caller's patience, and no credential in any Debug or error.

mod common;
use common::Sts;

use async_trait::async_trait;
use base64::Engine;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;
use warden_auth::credential::CredentialKind;
use warden_auth::endpoint::EndpointVersion;
use warden_auth::transport::{
    Auth, BasicPassword, HttpRequest, HttpResponse, HttpTransport, Method, SendFailure,
};
use warden_auth::{Credential, Secret, TokenProvider};
use warden_exchange::{
    CmdletRunner, ExchangeError, Invocation, ParamValue, Parameters, RpsAuth, RpsConfig, RpsSession,
};
use warden_psrp::clixml;
use warden_psrp::message::{Destination, Message, MessageType};
use warden_psrp::pipeline::{self, ErrorInfo, PipelineState, RunspacePoolState};
use warden_psrp::wsman::{self, CommandState, Fault, Request, RequestBody, StreamChunk};
use warden_psrp::{Defragmenter, fragment_message};

const TENANT: &str = "contoso.onmicrosoft.com";
const BASE: &str = "https://rps.example";
/// What every token starts with: no Debug or error output may contain it.
const CANARY: &str = "CANARYTOKEN";

type Answer = Result<HttpResponse, SendFailure>;
type Play = Box<dyn FnOnce(&mut State, &Request) -> Answer + Send>;

/// What the server learnt from the client so far.
#[derive(Debug)]
struct State {
    rpid: Option<Uuid>,
    shell_id: Option<Uuid>,
    pipeline_id: Option<Uuid>,
    command_id: Option<Uuid>,
    inbound: Defragmenter,
    /// Messages the client sent, reassembled.
    received: Vec<Message>,
    /// The `Authorization` header of the request being answered (for servers that echo it).
    authorization: String,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    url: String,
    action: String,
    authorization: String,
    headers: Vec<(String, String)>,
    body: RequestBody,
    /// Bytes of the envelope.
    len: usize,
}

/// Plays scripted answers (built from each request) and records what was sent.
#[derive(Default)]
struct Server {
    script: Mutex<VecDeque<Play>>,
    state: Mutex<Option<State>>,
    seen: Mutex<Vec<Seen>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Server")
    }
}

impl Server {
    fn new(script: Vec<Play>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            state: Mutex::new(Some(State {
                rpid: None,
                shell_id: None,
                pipeline_id: None,
                command_id: None,
                inbound: Defragmenter::new(64 << 20),
                received: Vec::new(),
                authorization: String::new(),
            })),
            seen: Mutex::new(Vec::new()),
        })
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn actions(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| s.action.rsplit('/').next().unwrap().to_owned())
            .collect()
    }
    fn received(&self) -> Vec<Message> {
        self.state
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .received
            .clone()
    }
    fn left(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

/// The `Authorization` header the real transport would put on the wire.
fn wire_authorization(request: &HttpRequest) -> String {
    let auth = request
        .auth
        .as_ref()
        .expect("every RPS request authenticates");
    let value = auth.header_value().expect("a valid header value");
    value.to_str().unwrap().to_owned()
}

#[async_trait]
impl HttpTransport for Server {
    async fn send(&self, request: HttpRequest) -> Answer {
        let body = std::str::from_utf8(&request.body).expect("a SOAP envelope is UTF-8");
        let parsed = wsman::parse_request(body).expect("the client sends WS-Management");
        self.seen.lock().unwrap().push(Seen {
            url: request.url.clone(),
            action: parsed.header.action.clone(),
            authorization: wire_authorization(&request),
            headers: request.headers.clone(),
            body: parsed.body.clone(),
            len: request.body.len(),
        });
        let mut guard = self.state.lock().unwrap();
        let state = guard.as_mut().unwrap();
        state.authorization = wire_authorization(&request);
        let mut take = |data: &[u8]| {
            for bytes in state.inbound.push(data).expect("fragments in order") {
                state
                    .received
                    .push(Message::decode(&bytes).expect("a PSRP message"));
            }
        };
        match &parsed.body {
            RequestBody::Create {
                creation_fragments, ..
            } => take(creation_fragments),
            RequestBody::Command { arguments, .. } => take(arguments),
            RequestBody::Send { streams } => {
                for chunk in streams {
                    take(&chunk.data);
                }
            }
            _ => {}
        }
        match &parsed.body {
            RequestBody::Create { shell_id, .. } => {
                state.shell_id = *shell_id;
                state.rpid = state.received.last().map(|m| m.runspace_pool_id);
            }
            RequestBody::Command { command_id, .. } => {
                state.command_id = *command_id;
                state.pipeline_id = *command_id;
            }
            _ => {}
        }
        let play = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("no answer scripted for {}", parsed.header.action));
        play(state, &parsed)
    }
}

fn ok(body: String) -> Answer {
    Ok(HttpResponse {
        status: 200,
        headers: vec![],
        body: body.into_bytes(),
    })
}

fn status(code: u16, headers: &[(&str, &str)]) -> Play {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    Box::new(move |_, _| {
        Ok(HttpResponse {
            status: code,
            headers,
            body: Vec::new(),
        })
    })
}

fn failure(f: SendFailure) -> Play {
    Box::new(move |_, _| Err(f))
}

fn created() -> Play {
    Box::new(|s, r| ok(wsman::create_response(&r.header, s.shell_id.unwrap())))
}

/// Fragments of server messages as one stdout chunk.
fn chunk(s: &State, pipeline: bool, messages: &[(MessageType, String)]) -> StreamChunk {
    let mut data = Vec::new();
    for (i, (message_type, body)) in messages.iter().enumerate() {
        let bytes = Message {
            destination: Destination::Client,
            message_type: *message_type,
            runspace_pool_id: s.rpid.unwrap(),
            pipeline_id: if pipeline { s.pipeline_id } else { None },
            data: body.clone(),
        }
        .encode();
        for f in fragment_message(1000 + i as u64, &bytes, 32_000) {
            data.extend_from_slice(&f);
        }
    }
    StreamChunk {
        name: "stdout".into(),
        command_id: if pipeline { s.command_id } else { None },
        data,
        end: false,
    }
}

fn pool_state(state: RunspacePoolState, error: Option<ErrorInfo>) -> Play {
    Box::new(move |s, r| {
        let messages = [
            (
                MessageType::SESSION_CAPABILITY,
                pipeline::session_capability(&Default::default()),
            ),
            (
                MessageType::APPLICATION_PRIVATE_DATA,
                pipeline::application_private_data(),
            ),
            (
                MessageType::RUNSPACEPOOL_STATE,
                pipeline::runspace_pool_state(state, error.as_ref()),
            ),
        ];
        let c = chunk(s, false, &messages);
        ok(wsman::receive_response(&r.header, &[c], None))
    })
}

fn opened() -> Vec<Play> {
    vec![created(), pool_state(RunspacePoolState::Opened, None)]
}

fn command_ok() -> Play {
    Box::new(|s, r| ok(wsman::command_response(&r.header, s.command_id.unwrap())))
}

fn sent() -> Play {
    Box::new(|_, r| ok(wsman::send_response(&r.header)))
}

fn signaled() -> Play {
    Box::new(|_, r| ok(wsman::signal_response(&r.header)))
}

fn deleted() -> Play {
    Box::new(|_, r| ok(wsman::delete_response(&r.header)))
}

/// What one Receive answer of a pipeline carries.
#[derive(Default)]
struct Out {
    objects: Vec<Value>,
    warnings: Vec<&'static str>,
    errors: Vec<ErrorInfo>,
    end: Option<(PipelineState, Option<ErrorInfo>)>,
}

fn output(out: Out) -> Play {
    Box::new(move |s, r| {
        let mut messages = Vec::new();
        for object in &out.objects {
            messages.push((
                MessageType::PIPELINE_OUTPUT,
                clixml::serialize(&clixml::from_json(object)),
            ));
        }
        for warning in &out.warnings {
            messages.push((
                MessageType::WARNING_RECORD,
                pipeline::informational_record(warning),
            ));
        }
        for error in &out.errors {
            messages.push((MessageType::ERROR_RECORD, pipeline::error_record(error)));
        }
        let mut state = None;
        if let Some((end, error)) = &out.end {
            messages.push((
                MessageType::PIPELINE_STATE,
                pipeline::pipeline_state(*end, error.as_ref()),
            ));
            state = Some(CommandState {
                command_id: s.command_id.unwrap(),
                state: wsman::command_state::DONE.into(),
                exit_code: Some(0),
            });
        }
        let c = chunk(s, true, &messages);
        ok(wsman::receive_response(&r.header, &[c], state.as_ref()))
    })
}

fn completed(objects: Vec<Value>) -> Play {
    output(Out {
        objects,
        end: Some((PipelineState::Completed, None)),
        ..Out::default()
    })
}

fn fault(code: &str, subcode: &str, reason: &str, wsman_code: Option<u32>) -> Play {
    let f = Fault {
        code: code.into(),
        subcode: Some(subcode.into()),
        reason: reason.into(),
        wsman_code,
        message: None,
    };
    Box::new(move |_, r| {
        Ok(HttpResponse {
            status: 500,
            headers: vec![],
            body: wsman::fault(Some(r.header.message_id), &f).into_bytes(),
        })
    })
}

fn timed_out() -> Play {
    fault(
        "s:Receiver",
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
        Some(2_150_858_793),
    )
}

fn config() -> RpsConfig {
    let mut config = RpsConfig::new(warden_auth::Cloud::Public, TENANT);
    config.base_url = BASE.into();
    config.base_delay = Duration::from_millis(1);
    config.max_delay = Duration::from_millis(5);
    config
}

fn tokens() -> (TokenProvider, Arc<Sts>) {
    let sts = Arc::new(Sts::issuing(CANARY));
    let credential = Credential {
        authority_host: "https://login.example".into(),
        tenant: TENANT.into(),
        client_id: "22222222-2222-2222-2222-222222222222".into(),
        endpoint_version: EndpointVersion::V2,
        kind: CredentialKind::ClientSecret(Secret::new("s".into())),
    };
    (TokenProvider::new(credential, sts.clone()), sts)
}

fn session_with(config: RpsConfig, server: Arc<Server>) -> (RpsSession, Arc<Sts>) {
    let (tokens, sts) = tokens();
    (RpsSession::new(config, tokens, server).unwrap(), sts)
}

fn session(server: Arc<Server>) -> (RpsSession, Arc<Sts>) {
    session_with(config(), server)
}

fn call(cmdlet: &str, parameters: &[(&str, ParamValue)]) -> Invocation {
    Invocation::new(
        cmdlet,
        parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<Parameters>(),
    )
}

async fn collect(
    session: &RpsSession,
    invocation: Invocation,
) -> Result<Vec<warden_exchange::Page>, ExchangeError> {
    let mut stream = session.start(invocation);
    let mut pages = Vec::new();
    while let Some(page) = stream.next_page().await? {
        pages.push(page);
    }
    Ok(pages)
}

fn objects(pages: &[warden_exchange::Page]) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|p| p.objects.iter().cloned().map(Value::Object))
        .collect()
}

/// The commands of the CREATE_PIPELINE messages the server received.
fn pipelines(server: &Server) -> Vec<Vec<pipeline::Command>> {
    server
        .received()
        .iter()
        .filter(|m| m.message_type == MessageType::CREATE_PIPELINE)
        .map(|m| pipeline::parse_create_pipeline(&m.data).unwrap())
        .collect()
}

fn not_found() -> ErrorInfo {
    ErrorInfo {
        message: "The operation couldn't be performed because object 'ghost@contoso.com' couldn't be found on 'BN8PR05A001DC01.NAMPR05A001.PROD.OUTLOOK.COM'.".into(),
        fully_qualified_error_id: "[Server=BN8PR05MB1234,RequestId=6b1a5f0e-77a4-4c4e-9d55-0c8f3e0f1a2b,TimeStamp=Tue, 28 Mar 2023 13:55:04 GMT] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] 9F3A7B21,Microsoft.Exchange.Management.RecipientTasks.GetMailbox".into(),
        exception_type: "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException".into(),
        category: 13,
        reason: "ManagementObjectNotFoundException".into(),
        target_name: "ghost@contoso.com".into(),
        target_object: Some("ghost@contoso.com".into()),
    }
}

#[tokio::test]
async fn a_call_opens_the_pool_once_and_returns_pages() {
    let mut script = opened();
    script.extend([
        command_ok(),
        timed_out(),
        output(Out {
            objects: vec![json!({"Name": "alex", "RecipientTypeDetails": "UserMailbox"})],
            warnings: vec![
                "The command completed successfully but no settings have been modified.",
            ],
            ..Out::default()
        }),
        completed(vec![json!({"Name": "bea", "Size": 12})]),
        // A second call reuses the pool.
        command_ok(),
        completed(vec![json!({"Name": "cy"})]),
        deleted(),
    ]);
    let server = Server::new(script);
    let (session, sts) = session(server.clone());
    let pages = collect(
        &session,
        call(
            "Get-Mailbox",
            &[("Identity", ParamValue::String("alex@contoso.com".into()))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(
        objects(&pages),
        vec![
            json!({"Name": "alex", "RecipientTypeDetails": "UserMailbox"}),
            json!({"Name": "bea", "Size": 12})
        ]
    );
    assert_eq!(
        pages[0].warnings,
        vec!["The command completed successfully but no settings have been modified."]
    );
    assert!(pages[1].warnings.is_empty());
    let second = collect(&session, call("Get-User", &[])).await.unwrap();
    assert_eq!(objects(&second), vec![json!({"Name": "cy"})]);
    session.close().await.unwrap();
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Command", "Receive", "Receive", "Receive", "Command", "Receive",
            "Delete"
        ]
    );
    assert_eq!(server.left(), 0);

    // The wire: the endpoint, the headers, Basic with the bearer token fetched per request.
    let seen = server.seen();
    let endpoint = format!(
        "{BASE}/PowerShell-LiveID?BasicAuthToOAuthConversion=true&email=SystemMailbox%7Bbb558c35-97f1-4cb9-8ff7-d53741dc928c%7D%40{TENANT}"
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("OAuthUser@{TENANT}:Bearer {CANARY}-0"))
    );
    for s in &seen {
        assert_eq!(s.url, endpoint);
        assert_eq!(s.authorization, basic);
        assert!(s.headers.contains(&(
            "content-type".into(),
            "application/soap+xml;charset=UTF-8".into()
        )));
        assert!(
            s.headers
                .contains(&("accept-encoding".into(), "identity".into()))
        );
    }
    assert_eq!(sts.issued.load(Ordering::SeqCst), 1);

    // The pool: SESSION_CAPABILITY + INIT_RUNSPACEPOOL(1, max_concurrency).
    let received = server.received();
    assert_eq!(received[0].message_type, MessageType::SESSION_CAPABILITY);
    assert_eq!(received[1].message_type, MessageType::INIT_RUNSPACEPOOL);
    assert_eq!(
        pipeline::parse_init_runspace_pool(&received[1].data).unwrap(),
        (1, 8)
    );
    // The call: one cmdlet by name with named parameters, never script.
    let pipelines = pipelines(&server);
    assert_eq!(pipelines.len(), 2);
    assert_eq!(
        pipelines[0],
        vec![pipeline::Command {
            name: "Get-Mailbox".into(),
            is_script: false,
            parameters: vec![(
                "Identity".into(),
                clixml::PsValue::String("alex@contoso.com".into())
            )],
        }]
    );
}

#[tokio::test]
async fn a_failed_pipeline_is_a_typed_cmdlet_error() {
    let mut script = opened();
    script.extend([
        command_ok(),
        output(Out {
            end: Some((PipelineState::Failed, Some(not_found()))),
            ..Out::default()
        }),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(
        &session,
        call(
            "Get-Mailbox",
            &[("Identity", ParamValue::String("ghost@contoso.com".into()))],
        ),
    )
    .await
    .unwrap_err();
    let ExchangeError::Cmdlet(error) = error else {
        panic!("expected a cmdlet error, got {error:?}");
    };
    assert_eq!(error.cmdlet, "Get-Mailbox");
    assert_eq!(error.status, 404);
    assert_eq!(error.code, "NotFound");
    assert_eq!(error.error_id.as_deref(), Some("9F3A7B21"));
    assert_eq!(
        error.exception_type.as_deref(),
        Some("ManagementObjectNotFoundException")
    );
    assert_eq!(error.message, not_found().message);
    assert_eq!(
        error.request_id.as_deref(),
        Some("6b1a5f0e-77a4-4c4e-9d55-0c8f3e0f1a2b")
    );
    assert_eq!(error.server.as_deref(), Some("BN8PR05MB1234"));
}

#[tokio::test]
async fn non_terminating_errors_come_with_the_page() {
    let mut script = opened();
    script.extend([
        command_ok(),
        output(Out {
            objects: vec![json!({"Name": "alex"})],
            errors: vec![not_found()],
            end: Some((PipelineState::Completed, None)),
            ..Out::default()
        }),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let pages = collect(&session, call("Get-Recipient", &[])).await.unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(objects(&pages), vec![json!({"Name": "alex"})]);
    assert_eq!(pages[0].errors.len(), 1);
    assert_eq!(pages[0].errors[0]["message"], json!(not_found().message));
    assert_eq!(pages[0].errors[0]["error_id"], "9F3A7B21");
    assert_eq!(
        pages[0].errors[0]["exception_type"],
        "ManagementObjectNotFoundException"
    );
    assert_eq!(pages[0].errors[0]["category"], "ObjectNotFound");
}

#[tokio::test]
async fn a_401_mints_one_fresh_token_then_is_access_denied() {
    let server = Server::new(vec![
        status(401, &[("www-authenticate", "Basic realm=\"x\"")]),
        status(401, &[]),
    ]);
    let (session, sts) = session(server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err();
    let ExchangeError::AccessDenied {
        status,
        explanation,
        ..
    } = &error
    else {
        panic!("expected access denied, got {error:?}");
    };
    assert_eq!(*status, 401);
    assert!(!explanation.is_empty());
    assert_eq!(server.actions(), ["Create", "Create"]);
    assert_eq!(sts.issued.load(Ordering::SeqCst), 2);
    let seen = server.seen();
    let first = base64::engine::general_purpose::STANDARD
        .encode(format!("OAuthUser@{TENANT}:Bearer {CANARY}-0"));
    let second = base64::engine::general_purpose::STANDARD
        .encode(format!("OAuthUser@{TENANT}:Bearer {CANARY}-1"));
    assert_eq!(seen[0].authorization, format!("Basic {first}"));
    assert_eq!(seen[1].authorization, format!("Basic {second}"));
    assert!(!error.to_string().contains(CANARY));
}

#[tokio::test]
async fn an_access_denied_fault_is_access_denied() {
    let mut script = opened();
    script.push(fault(
        "s:Sender",
        "w:AccessDenied",
        "Access is denied: the user isn't assigned to any management roles.",
        Some(5),
    ));
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Set-Mailbox", &[]))
        .await
        .unwrap_err();
    let ExchangeError::AccessDenied {
        cmdlet,
        status,
        message,
        explanation,
        ..
    } = &error
    else {
        panic!("expected access denied, got {error:?}");
    };
    assert_eq!(cmdlet, "Set-Mailbox");
    assert_eq!(*status, 403);
    assert_eq!(
        message,
        "Access is denied: the user isn't assigned to any management roles."
    );
    assert!(
        explanation.contains("authenticated but not authorised"),
        "{explanation}"
    );
    assert_eq!(server.actions(), ["Create", "Receive", "Command"]);
}

#[tokio::test]
async fn other_faults_are_protocol_errors_naming_reason_and_code() {
    let mut script = opened();
    script.push(fault(
        "s:Sender",
        "w:SchemaValidationError",
        "The SOAP XML in the message does not match the corresponding XML schema definition.",
        Some(2_150_858_817),
    ));
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "protocol");
    let text = error.to_string();
    assert!(
        text.contains("does not match the corresponding XML schema"),
        "{text}"
    );
    assert!(text.contains("w:SchemaValidationError"), "{text}");
    assert!(text.contains("2150858817"), "{text}");
    assert!(!text.contains("<s:Envelope"), "{text}");
}

#[tokio::test]
async fn a_broken_pool_says_why() {
    let server = Server::new(vec![
        created(),
        pool_state(
            RunspacePoolState::Broken,
            Some(ErrorInfo {
                message: "Connecting to remote server failed: the tenant is not provisioned."
                    .into(),
                ..ErrorInfo::default()
            }),
        ),
    ]);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("Broken"), "{error}");
    assert!(error.contains("the tenant is not provisioned"), "{error}");
}

#[tokio::test]
async fn a_redirect_of_create_moves_the_session() {
    let moved = "https://nam12.rps.example/PowerShell-LiveID?PSVersion=5.1";
    let mut script = vec![status(302, &[("location", moved)])];
    script.extend(opened());
    script.extend([command_ok(), completed(vec![json!({"Name": "a"})])]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let pages = collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(objects(&pages), vec![json!({"Name": "a"})]);
    let urls: Vec<String> = server.seen().iter().map(|s| s.url.clone()).collect();
    assert!(urls[0].starts_with(BASE));
    assert_eq!(&urls[1..], [moved, moved, moved, moved]);
    assert_eq!(session.current_endpoint().await, moved);
}

#[tokio::test]
async fn a_redirect_to_http_is_refused() {
    let server = Server::new(vec![status(
        302,
        &[("location", "http://evil.example/PowerShell-LiveID")],
    )]);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not https"), "{error}");
    assert_eq!(server.actions(), ["Create"]);
}

#[tokio::test]
async fn a_redirect_is_refused_when_redirection_is_off() {
    let server = Server::new(vec![status(
        307,
        &[("location", "https://other.example/PowerShell-LiveID")],
    )]);
    let mut config = config();
    config.allow_redirection = false;
    let (session, _) = session_with(config, server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("allow_redirection is off"), "{error}");
    assert_eq!(server.actions(), ["Create"]);
}

#[tokio::test]
async fn a_redirect_of_a_command_is_refused() {
    let mut script = opened();
    script.push(status(
        302,
        &[("location", "https://other.example/PowerShell-LiveID")],
    ));
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Set-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "protocol");
    assert!(error.to_string().contains("only the Create"), "{error}");
    assert_eq!(server.actions(), ["Create", "Receive", "Command"]);
}

#[tokio::test]
async fn a_write_whose_command_was_lost_is_never_repeated() {
    let mut script = opened();
    script.push(failure(SendFailure::Ambiguous("connection reset".into())));
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(
        &session,
        call(
            "Set-Mailbox",
            &[
                ("Identity", ParamValue::String("alex".into())),
                ("HiddenFromAddressListsEnabled", ParamValue::Switch(true)),
            ],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "outcome-unknown", "{error}");
    assert!(error.to_string().contains("connection reset"), "{error}");
    assert_eq!(server.actions(), ["Create", "Receive", "Command"]);
}

#[tokio::test]
async fn a_write_whose_results_were_lost_is_of_unknown_outcome() {
    let mut script = opened();
    script.extend([command_ok(), failure(SendFailure::TimedOut)]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Remove-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "outcome-unknown", "{error}");
    assert_eq!(
        server.actions(),
        ["Create", "Receive", "Command", "Receive"]
    );
}

#[tokio::test]
async fn a_read_whose_command_was_lost_runs_again() {
    let mut script = opened();
    script.extend([
        failure(SendFailure::TimedOut),
        command_ok(),
        completed(vec![json!({"Name": "a"})]),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let pages = collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(objects(&pages), vec![json!({"Name": "a"})]);
    assert_eq!(
        server.actions(),
        ["Create", "Receive", "Command", "Command", "Receive"]
    );
}

#[tokio::test]
async fn a_command_that_never_left_is_sent_again_even_for_a_write() {
    let mut script = opened();
    script.extend([
        failure(SendFailure::NotSent("connection refused".into())),
        status(503, &[("retry-after", "0.01")]),
        command_ok(),
        completed(vec![]),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let pages = collect(&session, call("Set-Mailbox", &[])).await.unwrap();
    assert!(pages.is_empty());
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Command", "Command", "Command", "Receive"
        ]
    );
}

#[tokio::test]
async fn a_lost_pool_is_reopened_and_the_command_sent_again() {
    let mut script = opened();
    script.extend([command_ok(), completed(vec![json!({"n": 1})])]);
    script.push(fault(
        "s:Sender",
        "w:InvalidSelectors",
        "The request for the Windows Remote Shell with ShellId 1234 failed because the shell was not found on the server.",
        Some(2_150_858_843),
    ));
    script.extend(opened());
    script.extend([command_ok(), completed(vec![json!({"n": 2})])]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    let pages = collect(&session, call("Set-Mailbox", &[])).await.unwrap();
    assert_eq!(objects(&pages), vec![json!({"n": 2})]);
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Command", "Receive", "Command", "Create", "Receive", "Command",
            "Receive"
        ]
    );
}

#[tokio::test]
async fn a_large_parameter_is_fragmented_and_reassembles() {
    let mut config = config();
    config.max_envelope_size = 16_384;
    let big: String = (0..60_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut script = opened();
    script.push(command_ok());
    // 60 kB of text in fragments of < 16 kB: the Command carries one, Sends the rest; then
    // the Receive completes the pipeline.
    for _ in 0..12 {
        script.push(Box::new(|s, r| match r.body {
            RequestBody::Send { .. } => sent()(s, r),
            _ => completed(vec![])(s, r),
        }));
    }
    let server = Server::new(script);
    let (session, _) = session_with(config, server.clone());
    let mut stream = session.start(call(
        "Set-Mailbox",
        &[
            ("Identity", ParamValue::String("alex".into())),
            ("Notes", ParamValue::String(big.clone())),
        ],
    ));
    while stream.next_page().await.unwrap().is_some() {}
    let actions = server.actions();
    let sends = actions.iter().filter(|a| *a == "Send").count();
    assert!(sends >= 4, "{actions:?}");
    assert_eq!(actions[2], "Command");
    assert_eq!(actions.last().unwrap(), "Receive");
    // Every envelope fits the size we asked for; every Send carries stream `pr` of the command.
    for s in server.seen() {
        assert!(s.len <= 16_384, "{} bytes", s.len);
        if let RequestBody::Send { streams } = &s.body {
            assert_eq!(streams.len(), 1);
            assert_eq!(streams[0].name, "pr");
            assert!(streams[0].command_id.is_some());
        }
    }
    let pipelines = pipelines(&server);
    assert_eq!(pipelines.len(), 1);
    let notes = pipelines[0][0]
        .parameters
        .iter()
        .find(|(n, _)| n == "Notes")
        .map(|(_, v)| v.clone());
    assert_eq!(notes, Some(clixml::PsValue::String(big)));
    assert_eq!(server.left(), 12 - sends - 1);
}

#[tokio::test]
async fn result_size_stops_reading_and_signals_the_read() {
    let mut script = opened();
    script.extend([
        command_ok(),
        output(Out {
            objects: vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})],
            ..Out::default()
        }),
        signaled(),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let pages = collect(
        &session,
        call(
            "Get-Mailbox",
            &[("ResultSize", ParamValue::ResultSize(Some(2)))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(objects(&pages), vec![json!({"n": 1}), json!({"n": 2})]);
    assert_eq!(
        server.actions(),
        ["Create", "Receive", "Command", "Receive", "Signal"]
    );
    let signal = server.seen().pop().unwrap();
    let RequestBody::Signal { code, .. } = signal.body else {
        panic!("a Signal");
    };
    assert_eq!(code, wsman::signal_code::PS_CRTL_C);
    assert_eq!(
        pipelines(&server)[0][0].parameters,
        vec![("ResultSize".into(), clixml::PsValue::I32(2))]
    );
}

#[tokio::test]
async fn a_wait_that_would_outlast_the_callers_patience_is_not_started() {
    let mut script = opened();
    script.push(status(429, &[("retry-after", "30")]));
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let mut stream = session.start(call("Set-Mailbox", &[]));
    let started = std::time::Instant::now();
    let error = stream
        .next_page_within(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(error.kind(), "throttled", "{error}");
    assert_eq!(server.actions(), ["Create", "Receive", "Command"]);
}

#[tokio::test]
async fn plain_basic_sends_the_password_and_no_conversion_flag() {
    let mut config = config();
    config.path = "/PowerShell".into();
    config.anchor = None;
    config.auth = RpsAuth::Basic {
        user: "CONTOSO\\admin".into(),
        password: secrecy::SecretString::from(format!("{CANARY}-password")),
    };
    let mut script = opened();
    script.extend([command_ok(), completed(vec![])]);
    let server = Server::new(script);
    let (session, sts) = session_with(config, server.clone());
    collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].url, format!("{BASE}/PowerShell"));
    assert_eq!(
        seen[0].authorization,
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("CONTOSO\\admin:{CANARY}-password"))
        )
    );
    assert_eq!(sts.issued.load(Ordering::SeqCst), 0);
    assert!(!format!("{session:?}").contains(CANARY));
}

#[tokio::test]
async fn no_credential_in_debug_or_errors() {
    let mut script = opened();
    script.extend([
        command_ok(),
        output(Out {
            end: Some((
                PipelineState::Failed,
                Some(ErrorInfo {
                    // A server that echoes the credentials back.
                    message: format!(
                        "bad request: Authorization: Bearer {CANARY}-0-abcdefghijklmnop"
                    ),
                    ..not_found()
                }),
            )),
            ..Out::default()
        }),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let mut stream = session.start(call("Get-Mailbox", &[]));
    let error = stream.next_page().await.unwrap_err();
    for text in [
        format!("{session:?}"),
        format!("{stream:?}"),
        format!("{error:?}"),
        error.to_string(),
        format!("{:?}", session.config()),
    ] {
        assert!(!text.contains(CANARY), "{text}");
    }
    let mut request = HttpRequest::new(Method::Post, BASE);
    request.auth = Some(Auth::Basic {
        user: "OAuthUser@x".into(),
        password: BasicPassword::Secret(secrecy::SecretString::from(CANARY.to_owned())),
    });
    let header = wire_authorization(&request);
    let shown = format!("{request:?}");
    assert!(!shown.contains(CANARY), "{shown}");
    assert!(!shown.contains(&header["Basic ".len()..]), "{shown}");
}

#[tokio::test]
async fn http_urls_are_refused_at_construction() {
    let mut config = config();
    config.base_url = "http://rps.example".into();
    let (tokens, _) = tokens();
    let http = tokens.transport();
    let error = RpsSession::new(config, tokens, http)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("'http://rps.example' is not https"),
        "{error}"
    );
}

#[tokio::test]
async fn a_read_that_lost_an_answer_before_its_first_page_runs_again() {
    let mut script = opened();
    script.extend([
        command_ok(),
        failure(SendFailure::Ambiguous("connection reset".into())),
        signaled(),
        command_ok(),
        completed(vec![json!({"Name": "a"})]),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let pages = collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(objects(&pages), vec![json!({"Name": "a"})]);
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Command", "Receive", "Signal", "Command", "Receive"
        ]
    );
    assert_eq!(pipelines(&server).len(), 2);
}

#[tokio::test]
async fn a_read_that_lost_an_answer_after_a_page_fails_instead_of_skipping_results() {
    let mut script = opened();
    script.extend([
        command_ok(),
        output(Out {
            objects: vec![json!({"n": 1})],
            ..Out::default()
        }),
        failure(SendFailure::Ambiguous("connection reset".into())),
        signaled(),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let mut stream = session.start(call("Get-Mailbox", &[]));
    let first = stream.next_page().await.unwrap().unwrap();
    assert_eq!(first.objects.len(), 1);
    let error = stream.next_page().await.unwrap_err();
    assert_eq!(error.kind(), "transport", "{error}");
    assert!(
        error.to_string().contains("rest of the results are lost"),
        "{error}"
    );
    assert!(stream.next_page().await.unwrap().is_none());
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Command", "Receive", "Receive", "Signal"
        ]
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_starts_over_with_a_new_shell() {
    let mut script = vec![failure(SendFailure::TimedOut), deleted()];
    script.extend(opened());
    script.extend([command_ok(), completed(vec![])]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(
        server.actions(),
        [
            "Create", "Delete", "Create", "Receive", "Command", "Receive"
        ]
    );
    let shells: Vec<Option<Uuid>> = server
        .seen()
        .iter()
        .filter_map(|s| match &s.body {
            RequestBody::Create { shell_id, .. } => Some(*shell_id),
            _ => None,
        })
        .collect();
    assert_eq!(shells.len(), 2);
    assert_ne!(shells[0], shells[1]);
}

/// Answers Commands and Receives of interleaved pipelines by the request's own command id.
fn any_pipeline(objects: Vec<Value>) -> Play {
    Box::new(move |s, r| match &r.body {
        RequestBody::Command { command_id, .. } => {
            ok(wsman::command_response(&r.header, command_id.unwrap()))
        }
        RequestBody::Receive { command_id, .. } => {
            let id = command_id.expect("a pipeline's Receive");
            let mut messages: Vec<(MessageType, String)> = objects
                .iter()
                .map(|o| {
                    (
                        MessageType::PIPELINE_OUTPUT,
                        clixml::serialize(&clixml::from_json(o)),
                    )
                })
                .collect();
            messages.push((
                MessageType::PIPELINE_STATE,
                pipeline::pipeline_state(PipelineState::Completed, None),
            ));
            let mut data = Vec::new();
            for (i, (message_type, body)) in messages.iter().enumerate() {
                let bytes = Message {
                    destination: Destination::Client,
                    message_type: *message_type,
                    runspace_pool_id: s.rpid.unwrap(),
                    pipeline_id: Some(id),
                    data: body.clone(),
                }
                .encode();
                for f in fragment_message(2000 + i as u64, &bytes, 32_000) {
                    data.extend_from_slice(&f);
                }
            }
            let chunk = StreamChunk {
                name: "stdout".into(),
                command_id: Some(id),
                data,
                end: true,
            };
            let state = CommandState {
                command_id: id,
                state: wsman::command_state::DONE.into(),
                exit_code: Some(0),
            };
            ok(wsman::receive_response(&r.header, &[chunk], Some(&state)))
        }
        other => panic!("unexpected {other:?}"),
    })
}

#[tokio::test]
async fn concurrent_calls_share_one_pool_opened_once() {
    let mut script = opened();
    for _ in 0..6 {
        script.push(any_pipeline(vec![json!({"ok": true})]));
    }
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let (a, b, c) = tokio::join!(
        collect(&session, call("Get-Mailbox", &[])),
        collect(&session, call("Get-User", &[])),
        collect(&session, call("Get-Group", &[])),
    );
    for pages in [a, b, c] {
        assert_eq!(objects(&pages.unwrap()), vec![json!({"ok": true})]);
    }
    let actions = server.actions();
    assert_eq!(actions.iter().filter(|a| *a == "Create").count(), 1);
    assert_eq!(actions.iter().filter(|a| *a == "Command").count(), 3);
}

#[tokio::test]
async fn no_more_pipelines_than_runspaces() {
    let mut script = opened();
    script.extend([
        command_ok(),
        output(Out {
            objects: vec![json!({"n": 1})],
            ..Out::default()
        }),
        output(Out {
            end: Some((PipelineState::Completed, None)),
            ..Out::default()
        }),
        command_ok(),
        completed(vec![json!({"n": 2})]),
    ]);
    let mut config = config();
    config.max_concurrency = 1;
    let server = Server::new(script);
    let (session, _) = session_with(config, server.clone());
    let mut first = session.start(call("Get-Mailbox", &[]));
    assert!(first.next_page().await.unwrap().is_some());
    // The only runspace is busy: the second call waits, and gives up within its patience
    // without sending anything.
    let mut second = session.start(call("Get-User", &[]));
    let error = second
        .next_page_within(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("nothing was sent"), "{error}");
    assert_eq!(
        server.actions(),
        ["Create", "Receive", "Command", "Receive"]
    );
    assert!(first.next_page().await.unwrap().is_none());
    let mut third = session.start(call("Get-User", &[]));
    let page = third.next_page().await.unwrap().unwrap();
    assert_eq!(Value::Object(page.objects[0].clone()), json!({"n": 2}));
    // INIT_RUNSPACEPOOL asked for exactly one runspace.
    assert_eq!(
        pipeline::parse_init_runspace_pool(&server.received()[1].data).unwrap(),
        (1, 1)
    );
}

#[tokio::test]
async fn a_long_lived_pool_sends_the_providers_current_token() {
    let mut script = opened();
    script.extend([
        command_ok(),
        completed(vec![]),
        command_ok(),
        completed(vec![]),
    ]);
    let server = Server::new(script);
    let (tokens, sts) = tokens();
    let session = RpsSession::new(config(), tokens.clone(), server.clone()).unwrap();
    collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    // The token is renewed (here: dropped from the cache) while the pool stays open.
    let scope = session.config().scope.clone();
    let current = tokens.get_token(&scope).await.unwrap();
    tokens.invalidate(&scope, &current);
    collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(sts.issued.load(Ordering::SeqCst), 2);
    let tokens_sent: Vec<String> = server
        .seen()
        .iter()
        .map(|s| {
            let encoded = s.authorization.strip_prefix("Basic ").unwrap();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            String::from_utf8(decoded)
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Command", "Receive", "Command", "Receive"
        ]
    );
    let first = format!("{CANARY}-0");
    let second = format!("{CANARY}-1");
    assert_eq!(
        tokens_sent,
        [
            first.clone(),
            first.clone(),
            first.clone(),
            first,
            second.clone(),
            second
        ]
    );
}

#[tokio::test]
async fn a_failed_write_is_its_error_and_a_stopped_write_is_of_unknown_outcome() {
    let mut script = opened();
    script.extend([
        command_ok(),
        output(Out {
            end: Some((PipelineState::Failed, Some(not_found()))),
            ..Out::default()
        }),
        command_ok(),
        output(Out {
            end: Some((PipelineState::Stopped, None)),
            ..Out::default()
        }),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let failed = collect(&session, call("Set-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(failed.kind(), "remote", "{failed}");
    let stopped = collect(&session, call("Set-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(stopped.kind(), "outcome-unknown", "{stopped}");
    assert!(
        stopped.to_string().contains("stopped the pipeline"),
        "{stopped}"
    );
}

#[tokio::test]
async fn parameters_travel_as_typed_values() {
    let mut script = opened();
    script.extend([command_ok(), completed(vec![])]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    collect(
        &session,
        call(
            "Set-Mailbox",
            &[
                (
                    "Identity",
                    ParamValue::String("alex; Remove-Mailbox x".into()),
                ),
                ("HiddenFromAddressListsEnabled", ParamValue::Switch(true)),
                ("IssueWarningQuota", ParamValue::Int(5_000_000_000)),
                ("RetainDeletedItemsFor", ParamValue::Int(14)),
                (
                    "EmailAddresses",
                    ParamValue::HashTable(
                        [(
                            "Add".to_owned(),
                            ParamValue::String("smtp:a@contoso.com".into()),
                        )]
                        .into(),
                    ),
                ),
                ("Notes", ParamValue::Null),
            ],
        ),
    )
    .await
    .unwrap();
    let commands = &pipelines(&server)[0];
    assert_eq!(commands.len(), 1);
    assert!(!commands[0].is_script);
    let value = |name: &str| {
        commands[0]
            .parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // Text that looks like script is a string value, nothing more.
    assert_eq!(
        value("Identity"),
        clixml::PsValue::String("alex; Remove-Mailbox x".into())
    );
    assert_eq!(
        value("HiddenFromAddressListsEnabled"),
        clixml::PsValue::Bool(true)
    );
    assert_eq!(
        value("IssueWarningQuota"),
        clixml::PsValue::I64(5_000_000_000)
    );
    assert_eq!(value("RetainDeletedItemsFor"), clixml::PsValue::I32(14));
    assert_eq!(value("Notes"), clixml::PsValue::Null);
    let clixml::PsValue::Object(table) = value("EmailAddresses") else {
        panic!("a hashtable is an object");
    };
    assert_eq!(
        table.dict,
        Some(vec![(
            clixml::PsValue::String("Add".into()),
            clixml::PsValue::String("smtp:a@contoso.com".into())
        )])
    );
}

fn transient() -> ErrorInfo {
    ErrorInfo {
        message: "Active Directory operation failed on DC01. This error is not retriable.".into(),
        fully_qualified_error_id: "[Server=BN8PR05MB1234,RequestId=r-7] 8D2E1A3C,Microsoft.Exchange.Management.RecipientTasks.GetMailbox".into(),
        exception_type: "Microsoft.Exchange.Data.Directory.ADServerSettingsChangedException".into(),
        category: 0,
        ..ErrorInfo::default()
    }
}

#[tokio::test]
async fn a_read_failed_by_a_transient_exception_runs_again_a_write_does_not() {
    let failed = || {
        output(Out {
            end: Some((PipelineState::Failed, Some(transient()))),
            ..Out::default()
        })
    };
    let mut script = opened();
    script.extend([
        command_ok(),
        failed(),
        command_ok(),
        completed(vec![json!({"Name": "a"})]),
        command_ok(),
        failed(),
    ]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let pages = collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(objects(&pages), vec![json!({"Name": "a"})]);
    let error = collect(&session, call("Set-Mailbox", &[]))
        .await
        .unwrap_err();
    let ExchangeError::Cmdlet(error) = error else {
        panic!("expected the cmdlet's error, got {error:?}");
    };
    assert_eq!(error.status, 500);
    assert_eq!(
        error.exception_type.as_deref(),
        Some("ADServerSettingsChangedException")
    );
    assert_eq!(error.error_id.as_deref(), Some("8D2E1A3C"));
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Command", "Receive", "Command", "Receive", "Command", "Receive"
        ]
    );
}

#[tokio::test]
async fn a_read_still_failing_transiently_returns_the_cmdlet_error() {
    let mut config = config();
    config.max_attempts = 2;
    let mut script = opened();
    for _ in 0..2 {
        script.push(command_ok());
        script.push(output(Out {
            end: Some((PipelineState::Failed, Some(transient()))),
            ..Out::default()
        }));
    }
    let server = Server::new(script);
    let (session, _) = session_with(config, server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "remote", "{error}");
    assert_eq!(server.left(), 0);
}

// ---- Review fixes: write safety after the Command was accepted, the opening's idle pause,
// ---- redirects of plain Basic credentials, Basic headers echoed in error texts.

/// A 200 whose body is not WS-Management (a front end's HTML page).
fn html_200() -> Play {
    Box::new(|_, _| {
        Ok(HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/html".into())],
            body: b"<html><body>Welcome</body></html>".to_vec(),
        })
    })
}

/// A CommandResponse relating to another request.
fn command_for_another_request() -> Play {
    Box::new(|s, r| {
        let mut header = r.header.clone();
        header.message_id = Uuid::new_v4();
        ok(wsman::command_response(&header, s.command_id.unwrap()))
    })
}

/// A Receive answer whose output object is not CLIXML.
fn corrupt_output() -> Play {
    Box::new(|s, r| {
        let c = chunk(
            s,
            true,
            &[(
                MessageType::PIPELINE_OUTPUT,
                "<Obj RefId=\"0\"><broken".into(),
            )],
        );
        ok(wsman::receive_response(&r.header, &[c], None))
    })
}

fn set_mailbox() -> Invocation {
    call(
        "Set-Mailbox",
        &[
            ("Identity", ParamValue::String("alex".into())),
            ("HiddenFromAddressListsEnabled", ParamValue::Switch(true)),
        ],
    )
}

#[tokio::test]
async fn a_write_whose_command_got_an_unusable_answer_is_of_unknown_outcome() {
    // Each answer says the server took the Command (a 2xx) without saying what became of it.
    for (what, answer, needle) in [
        ("html", html_200(), "not WS-Management"),
        (
            "relates-to",
            command_for_another_request(),
            "relates to another request",
        ),
        ("send-response", sent(), "SendResponse"),
    ] {
        let mut script = opened();
        script.push(answer);
        let server = Server::new(script);
        let (session, _) = session(server.clone());
        let error = collect(&session, set_mailbox()).await.unwrap_err();
        assert_eq!(error.kind(), "outcome-unknown", "{what}: {error}");
        assert!(error.to_string().contains(needle), "{what}: {error}");
        // Never sent again, and nothing stops it.
        assert_eq!(server.actions(), ["Create", "Receive", "Command"], "{what}");
    }
}

#[tokio::test]
async fn a_read_whose_command_got_an_unusable_answer_is_still_a_protocol_error() {
    for (what, answer) in [
        ("html", html_200()),
        ("relates-to", command_for_another_request()),
        ("send-response", sent()),
    ] {
        let mut script = opened();
        script.push(answer);
        let server = Server::new(script);
        let (session, _) = session(server.clone());
        let error = collect(&session, call("Get-Mailbox", &[]))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), "protocol", "{what}: {error}");
        assert_eq!(server.actions(), ["Create", "Receive", "Command"], "{what}");
    }
}

#[tokio::test]
async fn a_write_whose_output_does_not_decode_is_of_unknown_outcome() {
    let mut script = opened();
    script.extend([command_ok(), corrupt_output()]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(&session, set_mailbox()).await.unwrap_err();
    assert_eq!(error.kind(), "outcome-unknown", "{error}");
    assert!(error.to_string().contains("an output object"), "{error}");
    // The write is left to finish: no Signal, no second Command.
    assert_eq!(
        server.actions(),
        ["Create", "Receive", "Command", "Receive"]
    );
}

#[tokio::test]
async fn a_read_whose_output_does_not_decode_is_still_a_protocol_error() {
    let mut script = opened();
    script.extend([command_ok(), corrupt_output(), signaled()]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "protocol", "{error}");
    assert!(error.to_string().contains("an output object"), "{error}");
    assert_eq!(
        server.actions(),
        ["Create", "Receive", "Command", "Receive", "Signal"]
    );
}

/// The Sends of a large pipeline: SendResponse until the last fragment completes it, then HTML.
fn sends_then_html_on_the_last() -> Vec<Play> {
    (0..12)
        .map(|_| -> Play {
            Box::new(|s, r| {
                let complete = s
                    .received
                    .iter()
                    .any(|m| m.message_type == MessageType::CREATE_PIPELINE);
                if complete {
                    html_200()(s, r)
                } else {
                    sent()(s, r)
                }
            })
        })
        .collect()
}

fn large(cmdlet: &str) -> Invocation {
    let big: String = (0..60_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    call(cmdlet, &[("Notes", ParamValue::String(big))])
}

#[tokio::test]
async fn a_write_whose_last_send_got_an_unusable_answer_is_of_unknown_outcome() {
    let mut config = config();
    config.max_envelope_size = 16_384;
    let mut script = opened();
    script.push(command_ok());
    script.extend(sends_then_html_on_the_last());
    let server = Server::new(script);
    let (session, _) = session_with(config, server.clone());
    let error = collect(&session, large("Set-Mailbox")).await.unwrap_err();
    assert_eq!(error.kind(), "outcome-unknown", "{error}");
    assert!(error.to_string().contains("not WS-Management"), "{error}");
    let actions = server.actions();
    assert!(
        actions.iter().filter(|a| *a == "Send").count() >= 2,
        "{actions:?}"
    );
    // Not stopped, not repeated.
    assert_eq!(
        actions.last().map(String::as_str),
        Some("Send"),
        "{actions:?}"
    );
    assert_eq!(actions.iter().filter(|a| *a == "Command").count(), 1);
}

#[tokio::test]
async fn a_read_whose_last_send_got_an_unusable_answer_is_still_a_protocol_error() {
    let mut config = config();
    config.max_envelope_size = 16_384;
    let mut script = opened();
    script.push(command_ok());
    script.extend(sends_then_html_on_the_last());
    let server = Server::new(script);
    let (session, _) = session_with(config, server.clone());
    let error = collect(&session, large("Get-Mailbox")).await.unwrap_err();
    assert_eq!(error.kind(), "protocol", "{error}");
    let actions = server.actions();
    assert_eq!(actions.iter().filter(|a| *a == "Command").count(), 1);
}

/// A Receive answer with nothing in it, at once.
fn empty_receive() -> Play {
    Box::new(|_, r| ok(wsman::receive_response(&r.header, &[], None)))
}

#[tokio::test(start_paused = true)]
async fn the_opening_pauses_between_empty_answers() {
    let mut script = vec![created()];
    for _ in 0..4 {
        script.push(empty_receive());
    }
    script.push(pool_state(RunspacePoolState::Opened, None));
    script.extend([command_ok(), completed(vec![json!({"Name": "a"})])]);
    let server = Server::new(script);
    let (session, _) = session(server.clone());
    let began = tokio::time::Instant::now();
    let pages = collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(objects(&pages), vec![json!({"Name": "a"})]);
    // 50, 100, 200 and 400 ms: the pipeline's idle pause, not a busy loop.
    let waited = began.elapsed();
    assert!(waited >= Duration::from_millis(750), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(
        server.actions(),
        [
            "Create", "Receive", "Receive", "Receive", "Receive", "Receive", "Command", "Receive"
        ]
    );
}

fn basic_config() -> RpsConfig {
    let mut config = config();
    config.path = "/PowerShell".into();
    config.anchor = None;
    config.auth = RpsAuth::Basic {
        user: "CONTOSO\\admin".into(),
        password: secrecy::SecretString::from(format!("{CANARY}-password")),
    };
    config
}

#[tokio::test]
async fn plain_basic_credentials_are_not_redirected_to_another_host() {
    let server = Server::new(vec![status(
        302,
        &[("location", "https://elsewhere.example/PowerShell")],
    )]);
    let config = basic_config();
    assert!(config.allow_redirection, "on by default");
    let (session, _) = session_with(config, server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "protocol");
    let text = error.to_string();
    assert!(
        text.contains(
            "refused a redirect of the plain-Basic credentials from rps.example to elsewhere.example; set the endpoint URL to elsewhere.example if you trust it"
        ),
        "{text}"
    );
    assert_eq!(server.actions(), ["Create"]);
}

#[tokio::test]
async fn plain_basic_credentials_follow_a_redirect_on_the_same_host() {
    let moved = "https://RPS.example/PowerShell-Proxy";
    let mut script = vec![status(307, &[("location", moved)])];
    script.extend(opened());
    script.extend([command_ok(), completed(vec![])]);
    let server = Server::new(script);
    let (session, _) = session_with(basic_config(), server.clone());
    collect(&session, call("Get-Mailbox", &[])).await.unwrap();
    let urls: Vec<String> = server.seen().iter().map(|s| s.url.clone()).collect();
    assert_eq!(urls[0], format!("{BASE}/PowerShell"));
    assert!(urls[1].ends_with("/PowerShell-Proxy"), "{urls:?}");
}

#[tokio::test]
async fn oauth_follows_an_https_redirect_to_another_host_but_not_http() {
    let moved = "https://elsewhere.example/PowerShell-LiveID";
    let mut script = vec![status(302, &[("location", moved)])];
    script.extend(opened());
    script.extend([command_ok(), completed(vec![])]);
    let server = Server::new(script);
    let (followed, _) = session(server.clone());
    collect(&followed, call("Get-Mailbox", &[])).await.unwrap();
    assert_eq!(followed.current_endpoint().await, moved);
    let server = Server::new(vec![status(
        302,
        &[("location", "http://elsewhere.example/PowerShell-LiveID")],
    )]);
    let (session, _) = session(server.clone());
    let error = collect(&session, call("Get-Mailbox", &[]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not https"), "{error}");
}

/// A server that echoes the request's `Authorization` header (its base64 `user:password`) in
/// every text it sends back: a warning, a non-terminating error, a terminating ErrorRecord and
/// a fault's reason.
fn echoing_script() -> Vec<Play> {
    let echo = |s: &State| format!("bad request: Authorization: {}", s.authorization);
    let mut script = opened();
    script.push(command_ok());
    script.push(Box::new(move |s, r| {
        let warning = echo(s);
        let error = ErrorInfo {
            message: echo(s),
            target_name: echo(s),
            ..not_found()
        };
        let c = chunk(
            s,
            true,
            &[
                (
                    MessageType::PIPELINE_OUTPUT,
                    clixml::serialize(&clixml::from_json(&json!({"Name": "a"}))),
                ),
                (
                    MessageType::WARNING_RECORD,
                    pipeline::informational_record(&warning),
                ),
                (MessageType::ERROR_RECORD, pipeline::error_record(&error)),
            ],
        );
        ok(wsman::receive_response(&r.header, &[c], None))
    }));
    script.push(Box::new(move |s, r| {
        let error = ErrorInfo {
            message: echo(s),
            ..not_found()
        };
        output(Out {
            end: Some((PipelineState::Failed, Some(error))),
            ..Out::default()
        })(s, r)
    }));
    // The second call: the Command is refused with a fault that echoes the header.
    script.push(Box::new(move |s, r| {
        let f = Fault {
            code: "s:Sender".into(),
            subcode: Some("w:SchemaValidationError".into()),
            reason: echo(s),
            wsman_code: None,
            message: Some(format!("detail: {}", echo(s))),
        };
        Ok(HttpResponse {
            status: 500,
            headers: vec![],
            body: wsman::fault(Some(r.header.message_id), &f).into_bytes(),
        })
    }));
    script
}

#[tokio::test]
async fn an_echoed_basic_header_is_redacted_everywhere() {
    for (what, config, secret) in [
        ("oauth", config(), format!("{CANARY}-0")),
        ("basic", basic_config(), format!("{CANARY}-password")),
    ] {
        let server = Server::new(echoing_script());
        let (session, _) = session_with(config, server.clone());
        let mut stream = session.start(call("Get-Mailbox", &[]));
        let page = stream.next_page().await.unwrap().unwrap();
        let error = stream.next_page().await.unwrap_err();
        let fault = collect(&session, call("Get-Mailbox", &[]))
            .await
            .unwrap_err();
        // What the server echoed: the header's base64 form.
        let authorization = server.seen()[0].authorization.clone();
        let blob = authorization.strip_prefix("Basic ").unwrap().to_owned();
        assert!(blob.len() > 16, "{what}");
        assert_eq!(error.kind(), "remote", "{what}: {error}");
        assert_eq!(fault.kind(), "protocol", "{what}: {fault}");
        assert_eq!(page.warnings.len(), 1, "{what}");
        assert_eq!(page.errors.len(), 1, "{what}");
        let texts = [
            error.to_string(),
            format!("{error:?}"),
            fault.to_string(),
            format!("{fault:?}"),
            serde_json::to_string(&page.errors).unwrap(),
            serde_json::to_string(&page.warnings).unwrap(),
            serde_json::to_string(&page.objects).unwrap(),
        ];
        for text in &texts {
            for needle in [CANARY, secret.as_str(), blob.as_str()] {
                assert!(!text.contains(needle), "{what}: {needle} in {text}");
            }
        }
        // The echo is still recognisable: the redaction marks where it was.
        assert!(
            texts[0].contains("Basic [redacted]"),
            "{what}: {}",
            texts[0]
        );
        assert!(
            texts[2].contains("Basic [redacted]"),
            "{what}: {}",
            texts[2]
        );
        assert!(
            texts[4].contains("Basic [redacted]"),
            "{what}: {}",
            texts[4]
        );
        assert!(
            texts[5].contains("Basic [redacted]"),
            "{what}: {}",
            texts[5]
        );
    }
}

fn host_prompt() -> ErrorInfo {
    ErrorInfo {
        message: "PromptForChoice failed because the host was attempting to request confirmation with the following message: Remove mailbox alice?".into(),
        fully_qualified_error_id: "HostException".into(),
        exception_type: "System.Management.Automation.Host.HostException".into(),
        category: 0,
        reason: "HostException".into(),
        target_name: String::new(),
        target_object: None,
    }
}

/// A prompt before any output means the write did not run; a prompt after output came means
/// part of it ran, so the write's outcome is unknown (issue 15 review, 2).
#[tokio::test]
async fn a_prompt_after_output_leaves_a_write_of_unknown_outcome() {
    for (objects, not_executed) in [(vec![], true), (vec![json!({"Name": "alice"})], false)] {
        let mut script = opened();
        script.extend([
            command_ok(),
            output(Out {
                objects,
                end: Some((PipelineState::Failed, Some(host_prompt()))),
                ..Out::default()
            }),
            signaled(),
            signaled(),
        ]);
        let server = Server::new(script);
        let (session, _) = session(server.clone());
        let error = collect(
            &session,
            call(
                "Remove-Mailbox",
                &[("Identity", ParamValue::String("alice".into()))],
            ),
        )
        .await
        .unwrap_err();
        if not_executed {
            assert!(
                matches!(error, ExchangeError::NotExecuted { .. }),
                "{error:?}"
            );
        } else {
            assert!(
                matches!(error, ExchangeError::OutcomeUnknown { .. }),
                "{error:?}"
            );
        }
    }
}
