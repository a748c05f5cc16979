//! WS-Management SOAP 1.2 envelopes (MS-WSMV) as Remote PowerShell uses them: the client's
//! requests (Create shell, Command, Receive, Signal, Delete) and the parsing of their answers,
//! and — for an emulator — the parsing of requests and the building of answers and faults.
//!
//! Streams carry base64 of concatenated PSRP fragments ([`crate::fragment`]). Parsing refuses a
//! DTD or entity declaration, a body that is not the action's, and base64 that does not decode;
//! envelopes over the caller's size limit should be refused before they get here.

use crate::error::Result;
use std::time::Duration;
use uuid::Uuid;

/// `http://schemas.microsoft.com/powershell/` + configuration name is the shell's ResourceURI.
pub const RESOURCE_URI_PREFIX: &str = "http://schemas.microsoft.com/powershell/";
/// The configuration Exchange serves.
pub const EXCHANGE_CONFIGURATION: &str = "Microsoft.Exchange";
/// pypsrp's and PowerShell's default `MaxEnvelopeSize` (bytes).
pub const DEFAULT_MAX_ENVELOPE_SIZE: u32 = 153_600;
/// `Content-Type` of every request and answer.
pub const CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// `wsa:Action` URIs.
pub mod action {
    pub const CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
    pub const CREATE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse";
    pub const DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
    pub const DELETE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse";
    pub const COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
    pub const COMMAND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse";
    pub const RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
    pub const RECEIVE_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse";
    pub const SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
    pub const SEND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse";
    pub const SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
    pub const SIGNAL_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse";
    pub const FAULT: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";
}

/// `rsp:CommandState State` URIs.
pub mod command_state {
    pub const DONE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";
    pub const RUNNING: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running";
    pub const PENDING: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Pending";
}

/// `rsp:Signal` codes.
pub mod signal_code {
    /// PSRP's "stop the pipeline".
    pub const PS_CRTL_C: &str = "powershell/signal/crtl_c";
    pub const TERMINATE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";
}

/// The addressing and options of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// `wsa:To`: the full endpoint URL, query included.
    pub to: String,
    /// `wsman:ResourceURI`.
    pub resource_uri: String,
    /// `wsa:Action`.
    pub action: String,
    /// `wsa:MessageID` (`uuid:…` on the wire).
    pub message_id: Uuid,
    /// `wsmv:SessionId`, if sent.
    pub session_id: Option<Uuid>,
    /// `wsman:MaxEnvelopeSize` in bytes.
    pub max_envelope_size: u32,
    /// `wsman:OperationTimeout`.
    pub operation_timeout: Duration,
    /// `wsman:Locale` / `wsmv:DataLocale`, e.g. `en-US`.
    pub locale: String,
    /// `wsman:SelectorSet` `ShellId`, for every request after Create.
    pub shell_id: Option<Uuid>,
    /// `wsman:OptionSet` entries (name, value), e.g. `("protocolversion", "2.3")` on Create.
    pub options: Vec<(String, String)>,
}

impl Header {
    /// A header for `action` with a fresh message id, en-US, [`DEFAULT_MAX_ENVELOPE_SIZE`], a
    /// 20 s operation timeout, no selector and no options.
    pub fn new(to: &str, resource_uri: &str, action: &str) -> Self {
        Self {
            to: to.to_owned(),
            resource_uri: resource_uri.to_owned(),
            action: action.to_owned(),
            message_id: Uuid::new_v4(),
            session_id: None,
            max_envelope_size: DEFAULT_MAX_ENVELOPE_SIZE,
            operation_timeout: Duration::from_secs(20),
            locale: "en-US".into(),
            shell_id: None,
            options: Vec::new(),
        }
    }
}

/// The largest PSRP fragment (header included) whose base64 fits in one stream element of an
/// envelope of `max_envelope_size` bytes, leaving room for the SOAP around it.
pub fn max_fragment_len(max_envelope_size: u32) -> usize {
    let _ = max_envelope_size;
    todo!("warden-psrp: max_fragment_len")
}

// ---- client side: requests --------------------------------------------------------------

/// Create (a runspace pool): `rsp:Shell ShellId` with `InputStreams "stdin pr"`,
/// `OutputStreams "stdout"` and `creationXml` = base64 of `creation_fragments`. The header
/// should carry the `protocolversion=2.3` option (`MustComply="true"`).
pub fn create_shell(header: &Header, shell_id: Uuid, creation_fragments: &[u8]) -> String {
    let _ = (header, shell_id, creation_fragments);
    todo!("warden-psrp: create_shell")
}

/// Command (a pipeline): `rsp:CommandLine CommandId` with an empty `rsp:Command` and
/// `rsp:Arguments` = base64 of `arguments` (the CREATE_PIPELINE fragments).
pub fn command(header: &Header, command_id: Uuid, arguments: &[u8]) -> String {
    let _ = (header, command_id, arguments);
    todo!("warden-psrp: command")
}

/// Receive `stdout` of the shell (`command_id` None) or of one pipeline.
pub fn receive(header: &Header, command_id: Option<Uuid>) -> String {
    let _ = (header, command_id);
    todo!("warden-psrp: receive")
}

/// Send `data` (fragments) on stream `pr` of the shell or of a pipeline.
pub fn send(header: &Header, command_id: Option<Uuid>, data: &[u8]) -> String {
    let _ = (header, command_id, data);
    todo!("warden-psrp: send")
}

/// Signal a pipeline with `code` (see [`signal_code`]).
pub fn signal(header: &Header, command_id: Uuid, code: &str) -> String {
    let _ = (header, command_id, code);
    todo!("warden-psrp: signal")
}

/// Delete the shell (closes the runspace pool).
pub fn delete(header: &Header) -> String {
    let _ = header;
    todo!("warden-psrp: delete")
}

// ---- client side: answers ---------------------------------------------------------------

/// One `rsp:Stream` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    /// `Name`, e.g. `stdout`.
    pub name: String,
    /// `CommandId`, when the stream is a pipeline's.
    pub command_id: Option<Uuid>,
    /// The decoded bytes (PSRP fragments).
    pub data: Vec<u8>,
    /// `End="true"`.
    pub end: bool,
}

/// `rsp:CommandState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandState {
    /// `CommandId`.
    pub command_id: Uuid,
    /// `State` (see [`command_state`]).
    pub state: String,
    /// `rsp:ExitCode`, if present.
    pub exit_code: Option<i64>,
}

impl CommandState {
    /// Whether the state is Done.
    pub fn is_done(&self) -> bool {
        self.state == command_state::DONE
    }
}

/// A SOAP fault with its WS-Management detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `s:Code/s:Value`, e.g. `s:Sender`, `s:Receiver`.
    pub code: String,
    /// `s:Subcode/s:Value`, e.g. `w:AccessDenied`, `w:TimedOut`, `w:InvalidSelectors`.
    pub subcode: Option<String>,
    /// `s:Reason/s:Text`.
    pub reason: String,
    /// `f:WSManFault Code` (a Win32/WinRM error number), if present.
    pub wsman_code: Option<u32>,
    /// `f:Message` (or the detail's text), if present.
    pub message: Option<String>,
}

impl Fault {
    /// Whether this is the `w:TimedOut` fault a Receive gets when no output came within the
    /// operation timeout (not an error: receive again).
    pub fn is_timeout(&self) -> bool {
        self.subcode
            .as_deref()
            .is_some_and(|s| s.ends_with(":TimedOut"))
    }
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// CreateResponse: the shell exists.
    Created {
        /// `rsp:ShellId` (or the selector of the `ResourceCreated` reference).
        shell_id: Uuid,
    },
    /// CommandResponse.
    CommandCreated {
        /// `rsp:CommandId`.
        command_id: Uuid,
    },
    /// ReceiveResponse.
    Received {
        /// Streams, in document order.
        streams: Vec<StreamChunk>,
        /// `rsp:CommandState`, when the pipeline reported one.
        state: Option<CommandState>,
    },
    /// SendResponse.
    Sent,
    /// SignalResponse.
    Signaled,
    /// DeleteResponse.
    Deleted,
    /// A SOAP fault.
    Fault(Fault),
}

/// Parses an answer: its `wsa:RelatesTo` (when present) and what it said.
pub fn parse_response(xml: &str) -> Result<(Option<Uuid>, Response)> {
    let _ = xml;
    todo!("warden-psrp: parse_response")
}

// ---- server side: requests --------------------------------------------------------------

/// The body of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// Create: `rsp:Shell`.
    Create {
        /// `ShellId` the client proposed.
        shell_id: Option<Uuid>,
        /// `rsp:InputStreams`.
        input_streams: String,
        /// `rsp:OutputStreams`.
        output_streams: String,
        /// The decoded `creationXml` (PSRP fragments).
        creation_fragments: Vec<u8>,
    },
    /// Command: `rsp:CommandLine`.
    Command {
        /// `CommandId` the client proposed.
        command_id: Option<Uuid>,
        /// `rsp:Command` text (empty for PSRP).
        command: String,
        /// The decoded `rsp:Arguments` (PSRP fragments).
        arguments: Vec<u8>,
    },
    /// Receive: `rsp:Receive/rsp:DesiredStream`.
    Receive {
        /// `CommandId` of the desired stream, None for the shell's.
        command_id: Option<Uuid>,
        /// The stream name(s), e.g. `stdout`.
        stream: String,
    },
    /// Send: `rsp:Send/rsp:Stream`.
    Send {
        /// The chunks sent.
        streams: Vec<StreamChunk>,
    },
    /// Signal: `rsp:Signal`.
    Signal {
        /// `CommandId`.
        command_id: Option<Uuid>,
        /// `rsp:Code`.
        code: String,
    },
    /// Delete (empty body).
    Delete,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Its header.
    pub header: Header,
    /// Its body.
    pub body: RequestBody,
}

/// Parses a request. An action this codec does not know is a [`crate::PsrpError::Wsman`] naming it.
pub fn parse_request(xml: &str) -> Result<Request> {
    let _ = xml;
    todo!("warden-psrp: parse_request")
}

// ---- server side: answers ---------------------------------------------------------------

/// CreateResponse for `request` (RelatesTo its message id): `ResourceCreated` with the address
/// and the `ShellId` selector, and an `rsp:Shell` describing the shell.
pub fn create_response(request: &Header, shell_id: Uuid) -> String {
    let _ = (request, shell_id);
    todo!("warden-psrp: create_response")
}

/// CommandResponse with `rsp:CommandId`.
pub fn command_response(request: &Header, command_id: Uuid) -> String {
    let _ = (request, command_id);
    todo!("warden-psrp: command_response")
}

/// ReceiveResponse with these streams and, when given, the command's state.
pub fn receive_response(
    request: &Header,
    streams: &[StreamChunk],
    state: Option<&CommandState>,
) -> String {
    let _ = (request, streams, state);
    todo!("warden-psrp: receive_response")
}

/// SendResponse.
pub fn send_response(request: &Header) -> String {
    let _ = request;
    todo!("warden-psrp: send_response")
}

/// SignalResponse.
pub fn signal_response(request: &Header) -> String {
    let _ = request;
    todo!("warden-psrp: signal_response")
}

/// DeleteResponse.
pub fn delete_response(request: &Header) -> String {
    let _ = request;
    todo!("warden-psrp: delete_response")
}

/// A SOAP fault, RelatesTo `relates_to` when the request's message id is known.
pub fn fault(relates_to: Option<Uuid>, fault: &Fault) -> String {
    let _ = (relates_to, fault);
    todo!("warden-psrp: fault")
}
