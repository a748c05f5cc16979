//! The legacy Remote PowerShell endpoint: WS-Management + MS-PSRP at `/PowerShell-LiveID` and
//! `/PowerShell` (docs/protocol/exo-protocol.md §2), on the same server, tenants and state as
//! InvokeCommand.
//!
//! Paths match case-insensitively (pypsrp sends `/powershell-liveid`), with or without a
//! trailing slash and with any query. Only `POST` with `Content-Type: application/soap+xml`
//! and a body of at most [`MAX_ENVELOPE`] bytes is read. Every request authenticates with Basic
//! (§2.2): on `/PowerShell-LiveID?BasicAuthToOAuthConversion=true` the user is
//! `OAuthUser@<tenant>` (or any UPN in a tenant's domain) and the password `Bearer <token>`,
//! checked exactly like an InvokeCommand bearer token; on `/PowerShell` plain Basic is accepted
//! only when the emulator was given on-premises credentials. What it refuses, and how:
//!
//! | case | answer |
//! |---|---|
//! | no, malformed or wrong credentials; bad, expired or foreign token; no `Exchange.ManageAsApp` | 401, `WWW-Authenticate: Basic realm="WSMAN"`, empty body |
//! | token without a supported directory role | 500 fault `w:AccessDenied`, WSManFault 5, REST's 403 text |
//! | other ResourceURI on Create | 500 fault `w:InvalidResourceURI`, "Cannot find the … session configuration" |
//! | unknown or foreign ShellId | 500 fault `w:InvalidSelectors` 2150858843, shell not found |
//! | unknown CommandId | 500 fault `w:InvalidSelectors` 2150858843, command identifier does not exist |
//! | nothing to send within OperationTimeout | 500 fault `w:TimedOut` 2150858793 |
//! | more than the allowed shells per app | 500 fault `w:InternalError`, EXO's MaxConcurrency text |
//! | script text, several commands | pipeline Failed, `ScriptsNotAllowed` |
//! | unknown cmdlet or one outside the caller's RBAC | pipeline Failed, `CommandNotFoundException` |
//!
//! Injected Exchange faults ([`crate::ExchangeFaults`]) fire on the request that completes a
//! CREATE_PIPELINE (normally the Command), matched by cmdlet as for REST: throttling (configured
//! or `too_many_requests`) is HTTP 503 with an integer `Retry-After` and nothing registered, so
//! the identical Command can be re-sent; `service_unavailable` 503 without `Retry-After`;
//! `gateway_timeout` 504 with an HTML body; `transient_server_error` a pipeline Failed with
//! StorageTransientException; `reset_before_apply` drops the connection before anything runs;
//! `reset_after_apply` runs the cmdlet (a write is applied and saved, the pipeline exists) and
//! then drops the connection; `slow_answer` runs it and answers late; `token_expired` expires
//! every issued token and answers 401. `strict_anchor` is REST's only (RPS has no anchor
//! header). Added latency applies to Commands. Every request is in the Exchange request log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use uuid::Uuid;
use warden_psrp::pipeline::{self, PipelineState, RunspacePoolState, SessionCapability};
use warden_psrp::wsman::{self, CommandState, Fault, Header, Request, RequestBody, StreamChunk};
use warden_psrp::{Defragmenter, Destination, Message, MessageType};

use crate::counters::Counter;
use crate::exchange::faults::ExchangeFault;
use crate::exchange::{self, Denied, ExchangeRequestRecord, auth};
use crate::state::Shared;

mod run;
pub(crate) mod shells;

use shells::{CreateRefused, Outbox, Owner, Phase, Pipeline, Principal, Shells, Slot};

/// Largest request body read: WinRM's default `MaxEnvelopeSizekb` for PowerShell (500 KiB),
/// which is also what pypsrp raises its envelope to.
pub const MAX_ENVELOPE: usize = 512_000;

/// Longest a Receive waits for output, whatever OperationTimeout the client asked for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Default cap on concurrent shells per app and tenant. Exchange Online allowed 3 per account
/// ("Fail to create a runspace because you have exceeded the maximum number of connections
/// allowed : 3"); the default is higher so parallel tests do not trip it, and
/// [`crate::ExosimOptions::rps_max_shells`] sets it (3 to behave like the service).
pub const DEFAULT_MAX_SHELLS: usize = 32;

/// Plain Basic credentials an on-premises Exchange would accept on `/PowerShell`; they act as
/// an Exchange Administrator of the first tenant.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPremBasic {
    /// User name, compared exactly.
    pub user: String,
    /// Password, compared exactly.
    pub password: String,
}

impl std::fmt::Debug for OnPremBasic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnPremBasic")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// The RPS state of one emulator.
#[derive(Debug)]
pub(crate) struct Rps {
    pub shells: Shells,
    onprem: Option<OnPremBasic>,
    redirect: bool,
}

impl Rps {
    pub(crate) fn new(max_shells: usize, onprem: Option<OnPremBasic>, redirect: bool) -> Self {
        Rps {
            shells: Shells::new(max_shells),
            onprem,
            redirect,
        }
    }
}

/// The `PSVersion` the service's redirect targets carried (docs/protocol/exo-protocol.md §2.3).
const REDIRECT_PS_VERSION: &str = "5.1.17763.2867";

/// The RPS routes: a fallback, because axum matches paths case-sensitively and the endpoint
/// must not. Anything else is the usual empty 404.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new().fallback(endpoint)
}

/// Which endpoint a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/PowerShell-LiveID`: Exchange Online, Basic carrying an OAuth token.
    LiveId,
    /// `/PowerShell`: on-premises style, plain Basic.
    OnPrem,
}

fn endpoint_of(path: &str) -> Option<Endpoint> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.eq_ignore_ascii_case("/PowerShell-LiveID") {
        Some(Endpoint::LiveId)
    } else if path.eq_ignore_ascii_case("/PowerShell") {
        Some(Endpoint::OnPrem)
    } else {
        None
    }
}

/// An answer under construction.
struct Reply {
    status: StatusCode,
    body: String,
    headers: Vec<(&'static str, String)>,
    content_type: Option<&'static str>,
    /// Break the connection instead of answering.
    reset: bool,
    /// Wait this long before answering (after logging).
    slow: Duration,
    /// The fault's subcode or the injected fault, for the log.
    note: Option<String>,
}

impl Reply {
    fn soap(body: String) -> Self {
        Reply {
            status: StatusCode::OK,
            body,
            headers: Vec::new(),
            content_type: Some(wsman::CONTENT_TYPE),
            reset: false,
            slow: Duration::ZERO,
            note: None,
        }
    }

    fn empty(status: StatusCode) -> Self {
        Reply {
            status,
            body: String::new(),
            headers: Vec::new(),
            content_type: None,
            reset: false,
            slow: Duration::ZERO,
            note: None,
        }
    }

    /// 401 with WinRM's Basic challenge and no body.
    fn unauthorized() -> Self {
        let mut reply = Reply::empty(StatusCode::UNAUTHORIZED);
        reply
            .headers
            .push(("www-authenticate", "Basic realm=\"WSMAN\"".to_owned()));
        reply
    }

    /// A SOAP fault, as WinRM sends it: HTTP 500.
    fn fault(relates_to: Option<Uuid>, fault: &Fault) -> Self {
        let mut reply = Reply::soap(wsman::fault(relates_to, fault));
        reply.status = StatusCode::INTERNAL_SERVER_ERROR;
        reply.note = fault.subcode.clone();
        reply
    }

    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        if let Some(content_type) = self.content_type
            && let Ok(value) = HeaderValue::from_str(content_type)
        {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers.insert("server", HeaderValue::from_static("Microsoft-HTTPAPI/2.0"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// The WS-Management faults the endpoint sends. Texts and codes are real WinRM's where the
/// pypsrp fixtures recorded them (InvalidSelectors, TimedOut, InvalidParameter).
mod faults {
    use warden_psrp::wsman::Fault;

    fn fault(code: &str, subcode: &str, reason: &str, wsman_code: u32, message: String) -> Fault {
        Fault {
            code: code.to_owned(),
            subcode: Some(subcode.to_owned()),
            reason: reason.to_owned(),
            wsman_code: Some(wsman_code),
            message: Some(message),
        }
    }

    const INVALID_SELECTORS: &str = "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ";

    /// Inferred message: WinRM's text for ERROR_WSMAN_INVALID_SELECTORS on a missing shell.
    pub(super) fn shell_not_found(id: &str) -> Fault {
        fault(
            "s:Sender",
            "w:InvalidSelectors",
            INVALID_SELECTORS,
            2_150_858_843,
            format!(
                "The request for the Windows Remote Shell with ShellId {id} failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and try again. "
            ),
        )
    }

    pub(super) fn command_not_found() -> Fault {
        fault(
            "s:Sender",
            "w:InvalidSelectors",
            INVALID_SELECTORS,
            2_150_858_843,
            "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. Either the command has completed execution or the client specified an invalid command identifier. ".to_owned(),
        )
    }

    pub(super) fn timed_out() -> Fault {
        let text = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ";
        fault(
            "s:Receiver",
            "w:TimedOut",
            text,
            2_150_858_793,
            text.to_owned(),
        )
    }

    /// Code 5 is ERROR_ACCESS_DENIED.
    pub(super) fn access_denied(message: String) -> Fault {
        fault(
            "s:Sender",
            "w:AccessDenied",
            "Access is denied. ",
            5,
            message,
        )
    }

    pub(super) fn invalid_parameter(detail: &str) -> Fault {
        fault(
            "s:Sender",
            "w:InvalidParameter",
            "The parameter is incorrect. ",
            87,
            format!("The parameter is incorrect. {detail}"),
        )
    }

    /// Inferred code: ERROR_WSMAN_INVALID_RESOURCE_URI; the message is what PowerShell shows for a
    /// missing configuration (seen against outlook.office365.com with a wrong URI).
    pub(super) fn unknown_configuration(resource_uri: &str, host: &str) -> Fault {
        let name = resource_uri
            .strip_prefix(warden_psrp::wsman::RESOURCE_URI_PREFIX)
            .unwrap_or(resource_uri);
        fault(
            "s:Sender",
            "w:InvalidResourceURI",
            "The WS-Management service cannot process the request. The resource URI is not valid. ",
            2_150_858_811,
            format!(
                "The WS-Management service cannot process the request. Cannot find the {name} session configuration in the WSMan: drive on the {host} computer. "
            ),
        )
    }

    /// Inferred subcode and code; the text is Exchange Online's.
    pub(super) fn too_many_shells(cap: usize) -> Fault {
        fault(
            "s:Receiver",
            "w:InternalError",
            "The WS-Management service cannot process the request. ",
            1359,
            format!(
                "Fail to create a runspace because you have exceeded the maximum number of connections allowed : {cap} for the policy party : MaxConcurrency. Please close existing runspace and try again."
            ),
        )
    }

    /// Inferred subcode and code for a shell id already in use.
    pub(super) fn already_exists() -> Fault {
        fault(
            "s:Sender",
            "w:AlreadyExists",
            "The WS-Management service cannot create the resource because it already exists. ",
            2_150_858_885,
            "The WS-Management service cannot create the resource because it already exists. "
                .to_owned(),
        )
    }
}

/// The query parameters, case-insensitively.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q.trim()).ok())
        .unwrap_or_default();
    pairs
        .into_iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Decodes `Authorization: Basic base64(user:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// How authentication failed.
enum AuthFailure {
    /// 401 with the Basic challenge.
    Unauthorized,
    /// Authenticated, but no directory role Exchange supports: an AccessDenied fault.
    AccessDenied(String),
}

/// Authenticates one request (Basic is per request, §2.2).
///
/// With `BasicAuthToOAuthConversion=true` on `/PowerShell-LiveID`, the tenant is the
/// `DelegatedOrg` when given, else the domain of the user name (`OAuthUser@<tenant id or
/// domain>`, or any UPN in a tenant's domain). Partner access (inferred): a partner's app reaches a
/// customer with a token the customer's tenant issued (GDAP/CSP), so with `DelegatedOrg` the
/// token's `tid` must be the customer's, exactly as the REST URL's tenant must match `tid`.
fn authenticate(
    shared: &Shared,
    endpoint: Endpoint,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Principal, AuthFailure> {
    let fail = || {
        shared.counters.bump(Counter::ExchangeAuthFailure);
        AuthFailure::Unauthorized
    };
    let Some((user, password)) = basic_credentials(headers) else {
        return Err(fail());
    };
    let oauth = query_param(uri, "BasicAuthToOAuthConversion")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    match endpoint {
        Endpoint::LiveId if oauth => {
            let tenant = match query_param(uri, "DelegatedOrg") {
                Some(org) => shared.exchange.resolve_tenant(shared, org.trim()),
                None => user
                    .rsplit_once('@')
                    .and_then(|(_, domain)| shared.exchange.resolve_tenant(shared, domain)),
            };
            let Some(tenant_id) = tenant else {
                return Err(fail());
            };
            // `Bearer <token>` is exactly what an InvokeCommand Authorization header holds.
            match exchange::check_caller(shared, Some(&password), &tenant_id) {
                Ok(caller) => Ok(Principal {
                    owner: Owner {
                        app: caller.appid.clone(),
                        tenant_id,
                    },
                    caller,
                }),
                Err(Denied::NoDirectoryRole { appid }) => Err(AuthFailure::AccessDenied(
                    Denied::NoDirectoryRole { appid }.message(),
                )),
                Err(Denied::Token(_) | Denied::NoAppRole { .. }) => Err(AuthFailure::Unauthorized),
            }
        }
        Endpoint::OnPrem if !oauth => {
            let Some(expected) = shared.rps.onprem.as_ref() else {
                return Err(fail());
            };
            // Constant-time enough for a loopback test double; both must match.
            if user != expected.user || password != expected.password {
                return Err(fail());
            }
            let tenant_id = shared
                .directory
                .tenants
                .first()
                .map(|t| t.id.clone())
                .ok_or_else(fail)?;
            let admin = auth::RBAC
                .iter()
                .find(|(id, _, _)| *id == crate::config::EXCHANGE_ADMINISTRATOR_ROLE)
                .map(|r| r.2)
                .into_iter()
                .collect();
            Ok(Principal {
                owner: Owner {
                    app: format!("onprem:{user}"),
                    tenant_id,
                },
                caller: auth::Caller {
                    appid: user,
                    has_role: true,
                    access: admin,
                    grants: Vec::new(),
                    wids: Vec::new(),
                },
            })
        }
        _ => Err(fail()),
    }
}

async fn endpoint(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(endpoint) = endpoint_of(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    shared.counters.bump(Counter::RpsRequest);
    let mut record = ExchangeRequestRecord::received(method.as_str(), &uri, &headers);
    let reply = if method != Method::POST {
        let mut reply = Reply::empty(StatusCode::METHOD_NOT_ALLOWED);
        reply.headers.push(("allow", "POST".to_owned()));
        reply
    } else {
        handle(&shared, endpoint, &uri, &headers, &body, &mut record).await
    };
    record.status = if reply.reset {
        0
    } else {
        reply.status.as_u16()
    };
    if record.fault.is_none() {
        record.fault = reply.note.clone();
    }
    shared.exchange.record(record);
    if reply.reset {
        shared.exchange.connections.kill(peer);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if !reply.slow.is_zero() {
        tokio::time::sleep(reply.slow).await;
    }
    reply.into_response()
}

/// The short name of a WS-Management action, for the log.
fn action_name(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::Create { .. } => "Create",
        RequestBody::Command { .. } => "Command",
        RequestBody::Receive { .. } => "Receive",
        RequestBody::Send { .. } => "Send",
        RequestBody::Signal { .. } => "Signal",
        RequestBody::Delete => "Delete",
    }
}

async fn handle(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    record: &mut ExchangeRequestRecord,
) -> Reply {
    let soap = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/soap+xml")
        });
    if !soap {
        return Reply::empty(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    if body.len() > MAX_ENVELOPE {
        return Reply::empty(StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Authentication comes first, as IIS does it, before the envelope is read.
    let principal = authenticate(shared, endpoint, uri, headers);
    if let Err(AuthFailure::Unauthorized) = principal {
        // An unauthenticated body is never parsed.
        return Reply::unauthorized();
    }
    let request = std::str::from_utf8(body)
        .map_err(|_| "The body is not UTF-8.".to_owned())
        .and_then(|t| {
            wsman::parse_request(t.trim_start_matches('\u{feff}')).map_err(|e| e.to_string())
        });
    let relates_to = request.as_ref().ok().map(|r| r.header.message_id);
    let principal = match principal {
        Ok(p) => p,
        Err(AuthFailure::AccessDenied(message)) => {
            return Reply::fault(relates_to, &faults::access_denied(message));
        }
        Err(AuthFailure::Unauthorized) => return Reply::unauthorized(),
    };
    // Every authenticated request names its tenant in the log, however it ends.
    record.tenant_id = Some(principal.owner.tenant_id.clone());
    let request = match request {
        Ok(request) => request,
        Err(why) => return Reply::fault(None, &faults::invalid_parameter(&why)),
    };
    record.action = Some(action_name(&request.body).to_owned());
    let host = uri_host(headers);
    if shared.rps.redirect
        && endpoint == Endpoint::LiveId
        && matches!(request.body, RequestBody::Create { .. })
        && query_param(uri, "PSVersion").is_none()
    {
        // Inferred: the service answered the first request with a redirect to the tenant's server;
        // here the same host, the same path, PSVersion added as in the recorded targets.
        let query = uri.query().map(|q| format!("&{q}")).unwrap_or_default();
        let mut reply = Reply::empty(StatusCode::FOUND);
        reply.headers.push((
            "location",
            format!(
                "{}{}?PSVersion={REDIRECT_PS_VERSION}{query}",
                shared.base_url,
                uri.path()
            ),
        ));
        reply.note = Some("redirect".to_owned());
        return reply;
    }
    match &request.body {
        RequestBody::Create {
            shell_id,
            creation_fragments,
            ..
        } => create(
            shared,
            &principal,
            &request.header,
            *shell_id,
            creation_fragments,
            &host,
        ),
        _ => {
            let Some(shell_id) = request.header.shell_id else {
                return Reply::fault(relates_to, &faults::shell_not_found(""));
            };
            let Some(slot) = shared.rps.shells.get(&principal.owner, shell_id) else {
                return Reply::fault(
                    relates_to,
                    &faults::shell_not_found(&shell_id.to_string().to_uppercase()),
                );
            };
            on_shell(shared, &principal, &slot, &request, record).await
        }
    }
}

/// The host name the client addressed, for messages that name "the computer".
fn uri_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_owned())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A runspace-pool message to the client.
fn pool_message(rpid: Uuid, message_type: MessageType, data: String) -> Message {
    Message {
        destination: Destination::Client,
        message_type,
        runspace_pool_id: rpid,
        pipeline_id: None,
        data,
    }
}

/// Create: reassemble SESSION_CAPABILITY + INIT_RUNSPACEPOOL, open the pool, answer with the
/// client's ShellId and queue the server's capability, private data and the Opened state.
fn create(
    shared: &Shared,
    principal: &Principal,
    header: &Header,
    proposed: Option<Uuid>,
    fragments: &[u8],
    host: &str,
) -> Reply {
    let relates_to = Some(header.message_id);
    let expected = format!(
        "{}{}",
        wsman::RESOURCE_URI_PREFIX,
        wsman::EXCHANGE_CONFIGURATION
    );
    if !header.resource_uri.eq_ignore_ascii_case(&expected) {
        return Reply::fault(
            relates_to,
            &faults::unknown_configuration(&header.resource_uri, host),
        );
    }
    let mut defrag = Defragmenter::new(shells::MAX_MESSAGE);
    let messages = match defrag.push(fragments) {
        Ok(m) => m,
        Err(e) => return Reply::fault(relates_to, &faults::invalid_parameter(&e.to_string())),
    };
    let mut rpid = None;
    let (mut capability, mut init) = (false, false);
    for bytes in &messages {
        let message = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                return Reply::fault(relates_to, &faults::invalid_parameter(&e.to_string()));
            }
        };
        rpid.get_or_insert(message.runspace_pool_id);
        match message.message_type {
            MessageType::SESSION_CAPABILITY => {
                capability = pipeline::parse_session_capability(&message.data).is_ok();
            }
            MessageType::INIT_RUNSPACEPOOL => {
                init = pipeline::parse_init_runspace_pool(&message.data).is_ok();
            }
            _ => {}
        }
    }
    let (Some(rpid), true, true) = (rpid, capability, init) else {
        return Reply::fault(
            relates_to,
            &faults::invalid_parameter(
                "creationXml must carry SESSION_CAPABILITY and INIT_RUNSPACEPOOL.",
            ),
        );
    };
    let mut outbox = Outbox::default();
    // Windows PowerShell sends its capability with a nil runspace pool id (pypsrp's captures).
    outbox.push(&pool_message(
        Uuid::nil(),
        MessageType::SESSION_CAPABILITY,
        pipeline::session_capability(&SessionCapability::default()),
    ));
    outbox.push(&pool_message(
        rpid,
        MessageType::APPLICATION_PRIVATE_DATA,
        pipeline::application_private_data(),
    ));
    outbox.push(&pool_message(
        rpid,
        MessageType::RUNSPACEPOOL_STATE,
        pipeline::runspace_pool_state(RunspacePoolState::Opened, None),
    ));
    let shell_id = proposed.unwrap_or_else(Uuid::new_v4);
    match shared
        .rps
        .shells
        .create(&principal.owner, shell_id, rpid, outbox)
    {
        Ok(()) => Reply::soap(wsman::create_response(header, shell_id)),
        Err(CreateRefused::TooMany(cap)) => Reply::fault(relates_to, &faults::too_many_shells(cap)),
        Err(CreateRefused::Exists) => Reply::fault(relates_to, &faults::already_exists()),
    }
}

/// Everything after Create, on a shell the caller owns.
async fn on_shell(
    shared: &Arc<Shared>,
    principal: &Principal,
    slot: &Arc<Slot>,
    request: &Request,
    record: &mut ExchangeRequestRecord,
) -> Reply {
    let header = &request.header;
    let relates_to = Some(header.message_id);
    match &request.body {
        RequestBody::Create { .. } => unreachable!("handled before"),
        RequestBody::Receive { command_id, .. } => receive(shared, slot, header, *command_id).await,
        RequestBody::Command {
            command_id,
            arguments,
            ..
        } => {
            shared
                .exchange
                .delay(Some(slot.owner.tenant_id.as_str()))
                .await;
            let command_id = command_id.unwrap_or_else(Uuid::new_v4);
            let mut shell = slot.shell.lock().await;
            if shell.closed {
                let id = shell.id.to_string().to_uppercase();
                return Reply::fault(relates_to, &faults::shell_not_found(&id));
            }
            if shell.pipelines.contains_key(&command_id) {
                return Reply::fault(relates_to, &faults::already_exists());
            }
            shell.add_pipeline(command_id);
            let fed = feed(shared, principal, &mut shell, command_id, arguments, record).await;
            drop(shell);
            slot.notify.notify_waiters();
            match fed {
                Fed::Replace { reply, .. } => reply,
                Fed::Normal { slow } => {
                    let mut reply = Reply::soap(wsman::command_response(header, command_id));
                    reply.slow = slow;
                    reply
                }
            }
        }
        RequestBody::Send { streams } => {
            let mut slow_send = Duration::ZERO;
            let mut shell = slot.shell.lock().await;
            for chunk in streams {
                match chunk.command_id {
                    Some(command_id) => {
                        if !shell.pipelines.contains_key(&command_id) {
                            return Reply::fault(relates_to, &faults::command_not_found());
                        }
                        let fed = feed(
                            shared,
                            principal,
                            &mut shell,
                            command_id,
                            &chunk.data,
                            record,
                        )
                        .await;
                        match fed {
                            Fed::Replace { reply, .. } => {
                                drop(shell);
                                slot.notify.notify_waiters();
                                return reply;
                            }
                            Fed::Normal { slow } => slow_send = slow_send.max(slow),
                        }
                    }
                    // The pool's own input (host responses, runspace settings): reassembled and
                    // otherwise ignored; this runspace has no host to answer.
                    None => {
                        if let Err(e) = shell.defrag.push(&chunk.data) {
                            return Reply::fault(
                                relates_to,
                                &faults::invalid_parameter(&e.to_string()),
                            );
                        }
                    }
                }
            }
            drop(shell);
            slot.notify.notify_waiters();
            let mut reply = Reply::soap(wsman::send_response(header));
            reply.slow = slow_send;
            reply
        }
        RequestBody::Signal { command_id, code } => {
            let Some(command_id) = command_id else {
                return Reply::fault(relates_to, &faults::command_not_found());
            };
            let mut shell = slot.shell.lock().await;
            let rpid = shell.rpid;
            let terminate = code.eq_ignore_ascii_case(wsman::signal_code::TERMINATE);
            let Some(pipeline) = shell.pipelines.get_mut(command_id) else {
                return Reply::fault(relates_to, &faults::command_not_found());
            };
            if !matches!(pipeline.phase, Phase::Finished) {
                pipeline.outbox.drop_unsent();
                let emit = run::Emit {
                    rpid,
                    pid: pipeline.pid.unwrap_or(*command_id),
                };
                emit.finish(
                    pipeline,
                    PipelineState::Stopped,
                    Some(&run::pipeline_stopped()),
                );
            }
            if terminate {
                shell.pipelines.remove(command_id);
            }
            drop(shell);
            slot.notify.notify_waiters();
            Reply::soap(wsman::signal_response(header))
        }
        RequestBody::Delete => {
            let mut shell = slot.shell.lock().await;
            shared.rps.shells.remove(shell.id);
            let rpid = shell.rpid;
            shell.closed = true;
            shell.pipelines.clear();
            shell.outbox.drop_unsent();
            shell.outbox.push(&pool_message(
                rpid,
                MessageType::RUNSPACEPOOL_STATE,
                pipeline::runspace_pool_state(RunspacePoolState::Closed, None),
            ));
            drop(shell);
            slot.notify.notify_waiters();
            Reply::soap(wsman::delete_response(header))
        }
    }
}

/// What feeding a pipeline led to.
enum Fed {
    /// Still assembling, or started: answer normally, after `slow` (an injected slow answer).
    Normal { slow: Duration },
    /// Answer this instead; `forget` drops the pipeline (nothing ran, the client may re-send).
    Replace { reply: Reply, forget: bool },
}

/// Adds fragments to pipeline `command_id`; once its CREATE_PIPELINE is whole, starts it.
async fn feed(
    shared: &Arc<Shared>,
    principal: &Principal,
    shell: &mut shells::Shell,
    command_id: Uuid,
    data: &[u8],
    record: &mut ExchangeRequestRecord,
) -> Fed {
    let rpid = shell.rpid;
    let normal = Fed::Normal {
        slow: Duration::ZERO,
    };
    let Some(pipeline) = shell.pipelines.get_mut(&command_id) else {
        return normal;
    };
    if !matches!(pipeline.phase, Phase::Assembling) {
        // Pipeline input after the command started: this runspace takes none.
        return normal;
    }
    let decoded = pipeline.defrag.push(data).and_then(|messages| {
        messages
            .into_iter()
            .next()
            .map(|bytes| Message::decode(&bytes))
            .transpose()
    });
    let fed = match decoded {
        Ok(None) => return normal,
        Ok(Some(m)) if m.message_type == MessageType::CREATE_PIPELINE => {
            start(shared, principal, rpid, pipeline, &m, record).await
        }
        Ok(Some(m)) => Fed::Replace {
            reply: Reply::fault(
                None,
                &faults::invalid_parameter(&format!(
                    "Expected CREATE_PIPELINE, got {}.",
                    m.message_type.name()
                )),
            ),
            forget: true,
        },
        Err(e) => Fed::Replace {
            reply: Reply::fault(None, &faults::invalid_parameter(&e.to_string())),
            forget: true,
        },
    };
    if let Fed::Replace { forget: true, .. } = &fed {
        shell.pipelines.remove(&command_id);
    }
    fed
}

/// Starts a whole CREATE_PIPELINE: one command, named parameters, RBAC, injected faults,
/// binding, then the first page (a write runs whole here, so the request that completed the
/// CREATE_PIPELINE is the one logged as applied).
async fn start(
    shared: &Arc<Shared>,
    principal: &Principal,
    rpid: Uuid,
    pipeline: &mut Pipeline,
    message: &Message,
    record: &mut ExchangeRequestRecord,
) -> Fed {
    let forget = |reply| Fed::Replace {
        reply,
        forget: true,
    };
    let emit = run::Emit {
        rpid,
        pid: message.pipeline_id.unwrap_or_default(),
    };
    pipeline.pid = Some(emit.pid);
    // A pipeline that fails at once: its error's short class is logged like REST's
    // x-ExceptionType.
    let fail = |pipeline: &mut Pipeline,
                record: &mut ExchangeRequestRecord,
                error: &warden_psrp::pipeline::ErrorInfo| {
        record.exception_type = Some(error.reason.clone());
        emit.finish(pipeline, PipelineState::Failed, Some(error));
        Fed::Normal {
            slow: Duration::ZERO,
        }
    };
    let commands = match pipeline::parse_create_pipeline(&message.data) {
        Ok(c) => c,
        Err(e) => {
            return forget(Reply::fault(
                None,
                &faults::invalid_parameter(&e.to_string()),
            ));
        }
    };
    let [command] = commands.as_slice() else {
        return fail(pipeline, record, &run::scripts_not_allowed());
    };
    record.cmdlet = Some(command.name.clone());
    record.parameter_names = command.parameters.iter().map(|(n, _)| n.clone()).collect();
    if command.is_script {
        return fail(pipeline, record, &run::scripts_not_allowed());
    }
    let spec = exchange::cmdlets::find(&command.name);
    if let Some(spec) = spec {
        record.cmdlet = Some(spec.name.to_owned());
        shared.counters.cmdlet(spec.name);
    }
    let Some(spec) = spec.filter(|s| principal.caller.allows(s.name)) else {
        return fail(pipeline, record, &run::command_not_found(&command.name));
    };
    let tenant_id = &principal.owner.tenant_id;
    let exchange = &shared.exchange;
    let rate = exchange.limiter.take(
        exchange.throttle_for(tenant_id),
        tenant_id,
        crate::exchange::now_unix_ms(),
    );
    if let Some(retry) = rate.retry_after {
        record.fault = Some("throttled".to_owned());
        return forget(service_busy(Some(retry)));
    }
    let fault = exchange.faults.take(spec.name, tenant_id);
    let mut slow = Duration::ZERO;
    if let Some(f) = fault {
        record.fault = Some(f.name().to_owned());
        shared.counters.bump(Counter::ExchangeFaultInjected);
        match f {
            ExchangeFault::TooManyRequests { retry_after_secs } => {
                return forget(service_busy(Some(retry_after_secs)));
            }
            ExchangeFault::ServiceUnavailable => return forget(service_busy(None)),
            ExchangeFault::GatewayTimeout => {
                let mut reply = Reply::empty(StatusCode::GATEWAY_TIMEOUT);
                reply.body = "<html><head><title>504 Gateway Timeout</title></head><body><h1>504 Gateway Timeout</h1></body></html>".to_owned();
                reply.content_type = Some("text/html");
                return forget(reply);
            }
            ExchangeFault::ServerError | ExchangeFault::BadGateway => {
                let status = if f == ExchangeFault::ServerError {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::BAD_GATEWAY
                };
                return forget(Reply::empty(status));
            }
            ExchangeFault::TransientServerError => {
                let info = run::error_info(&exchange::cmdlets::ExoError::transient(), spec.name);
                return fail(pipeline, record, &info);
            }
            ExchangeFault::ResetBeforeApply => {
                let mut reply = Reply::empty(StatusCode::OK);
                reply.reset = true;
                return forget(reply);
            }
            ExchangeFault::TokenExpired => {
                shared.faults.expire_issued_tokens();
                shared.counters.bump(Counter::ExchangeAuthFailure);
                return forget(Reply::unauthorized());
            }
            ExchangeFault::Unauthorized => {
                shared.counters.bump(Counter::ExchangeAuthFailure);
                return forget(Reply::unauthorized());
            }
            ExchangeFault::SlowAnswer { delay_ms } => slow = Duration::from_millis(delay_ms),
            ExchangeFault::ResetAfterApply | ExchangeFault::HtmlAfterApply => {}
        }
    }
    let args = match run::parameters_json(command).and_then(|params| {
        record.identity = exchange::identity_value(&params);
        let args = exchange::cmdlets::bind(spec, &params)?;
        // RBAC for Applications: the same write scopes as over REST (exchange/rbac.rs).
        let refusal = exchange.org(tenant_id).and_then(|org| {
            exchange::rbac::write_scope_refusal(
                &principal.caller.grants,
                principal.caller.by_directory_role(spec.name),
                spec.name,
                spec.write,
                args.identity(),
                &org.lock().unwrap_or_else(|e| e.into_inner()),
            )
        });
        match refusal {
            Some(refusal) => Err(refusal),
            None => Ok(args),
        }
    }) {
        Ok(args) => args,
        Err(err) => return fail(pipeline, record, &run::error_info(&err, spec.name)),
    };
    pipeline.phase = Phase::Running(Box::new(run::job(spec, args, tenant_id)));
    record.applied = run::next_page(shared, &emit, pipeline).await;
    if let Some(error) = &pipeline.failure {
        record.exception_type = Some(error.clone());
    }
    if fault == Some(ExchangeFault::HtmlAfterApply) {
        // Applied; a proxy's page took the answer's place.
        let mut reply = Reply::empty(StatusCode::OK);
        reply.body = "<html><head><title>Sign in</title></head><body>Please sign in to continue.</body></html>".to_owned();
        reply.content_type = Some("text/html");
        return Fed::Replace {
            reply,
            forget: false,
        };
    }
    if fault == Some(ExchangeFault::ResetAfterApply) {
        // Applied, and the pipeline exists; only the answer is lost.
        let mut reply = Reply::empty(StatusCode::OK);
        reply.reset = true;
        return Fed::Replace {
            reply,
            forget: false,
        };
    }
    Fed::Normal { slow }
}

/// 503, with an integer `Retry-After` (HTTP allows no fractions; rounded up, at least 1) when
/// the cause is throttling.
fn service_busy(retry_after: Option<f64>) -> Reply {
    let mut reply = Reply::empty(StatusCode::SERVICE_UNAVAILABLE);
    if let Some(seconds) = retry_after {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 1..=3600"
        )]
        let whole = seconds.ceil().clamp(1.0, 3600.0) as u64;
        reply.headers.push(("retry-after", whole.to_string()));
    }
    reply
}

/// What one Receive takes from a shell: fragments within the envelope, and for a pipeline its
/// state. `None` when there is nothing to send yet.
async fn take_output(
    shared: &Arc<Shared>,
    shell: &mut shells::Shell,
    command_id: Option<Uuid>,
    budget: usize,
) -> Result<Option<(Vec<u8>, Option<CommandState>)>, Fault> {
    let Some(command_id) = command_id else {
        if shell.outbox.is_empty() {
            return Ok(None);
        }
        let data = shell.outbox.take(budget, &mut shell.object_ids);
        return Ok(Some((data, None)));
    };
    let rpid = shell.rpid;
    let mut object_ids = shell.object_ids;
    let Some(pipeline) = shell.pipelines.get_mut(&command_id) else {
        return Err(faults::command_not_found());
    };
    if pipeline.outbox.is_empty() && matches!(pipeline.phase, Phase::Running(_)) {
        let emit = run::Emit {
            rpid,
            pid: pipeline.pid.unwrap_or(command_id),
        };
        run::next_page(shared, &emit, pipeline).await;
    }
    if pipeline.outbox.is_empty() || pipeline.done_sent {
        return Ok(None);
    }
    let data = pipeline.outbox.take(budget, &mut object_ids);
    let finished = matches!(pipeline.phase, Phase::Finished) && pipeline.outbox.is_empty();
    pipeline.done_sent = finished;
    shell.object_ids = object_ids;
    let state = CommandState {
        command_id,
        state: if finished {
            wsman::command_state::DONE
        } else {
            wsman::command_state::RUNNING
        }
        .to_owned(),
        exit_code: finished.then_some(0),
    };
    Ok(Some((data, Some(state))))
}

/// Receive: what is queued for the shell or pipeline, as much as fits the client's envelope;
/// waits up to the request's OperationTimeout (at most [`MAX_WAIT`]) for something to send,
/// then answers `w:TimedOut` like WinRM.
async fn receive(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    header: &Header,
    command_id: Option<Uuid>,
) -> Reply {
    let relates_to = Some(header.message_id);
    let budget = wsman::max_fragment_len(header.max_envelope_size);
    let deadline = tokio::time::Instant::now() + header.operation_timeout.min(MAX_WAIT);
    loop {
        let notified = slot.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut shell = slot.shell.lock().await;
            match take_output(shared, &mut shell, command_id, budget).await {
                Err(fault) => return Reply::fault(relates_to, &fault),
                Ok(Some((data, state))) => {
                    let stream = StreamChunk {
                        name: "stdout".to_owned(),
                        command_id,
                        data,
                        end: false,
                    };
                    return Reply::soap(wsman::receive_response(
                        header,
                        std::slice::from_ref(&stream),
                        state.as_ref(),
                    ));
                }
                Ok(None) if shell.closed => {
                    let id = shell.id.to_string().to_uppercase();
                    return Reply::fault(relates_to, &faults::shell_not_found(&id));
                }
                Ok(None) => {}
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Reply::fault(relates_to, &faults::timed_out());
        }
    }
}
