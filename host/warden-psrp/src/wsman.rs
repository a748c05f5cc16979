//! WS-Management SOAP 1.2 envelopes (MS-WSMV) as Remote PowerShell uses them: the client's
//! requests (Create shell, Command, Receive, Signal, Delete) and the parsing of their answers,
//! and — for an emulator — the parsing of requests and the building of answers and faults.
//!
//! Streams carry base64 of concatenated PSRP fragments ([`crate::fragment`]). Parsing refuses a
//! DTD or entity declaration, a body that is not the action's, and base64 that does not decode;
//! envelopes over the caller's size limit should be refused before they get here.
//!
//! Requests are written as pypsrp writes them (prefixes `s`, `wsa`, `wsman`, `wsmv`, `rsp`;
//! `mustUnderstand` on Action, MaxEnvelopeSize, ResourceURI, ReplyTo's Address and OptionSet;
//! upper-case `uuid:` ids), answers as WinRM writes them (prefixes `s`, `a`, `x`, `w`, `rsp`,
//! `p`). Parsers match elements by namespace URI and local name, never by prefix.

use crate::error::{PsrpError, Result};
use crate::xml::{self, Document, Element, escape_attr, escape_text, excerpt};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt::Write as _;
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
    /// Create a shell (a runspace pool).
    pub const CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
    /// The answer to Create: the shell's id.
    pub const CREATE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse";
    /// Delete a shell (close the runspace pool).
    pub const DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
    /// The answer to Delete.
    pub const DELETE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse";
    /// Start a command (a pipeline) in a shell.
    pub const COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
    /// The answer to Command: the command's id.
    pub const COMMAND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse";
    /// Fetch output streams of a shell or command.
    pub const RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
    /// The answer to Receive: stream data and command state.
    pub const RECEIVE_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse";
    /// Send input (PSRP fragments) to a shell or command.
    pub const SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
    /// The answer to Send.
    pub const SEND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse";
    /// Signal a command (stop, terminate).
    pub const SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
    /// The answer to Signal.
    pub const SIGNAL_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse";
    /// A WS-Management fault.
    pub const FAULT: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";
}

/// `rsp:CommandState State` URIs.
pub mod command_state {
    /// The command finished.
    pub const DONE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";
    /// The command is running.
    pub const RUNNING: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running";
    /// The command has not started yet.
    pub const PENDING: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Pending";
}

/// `rsp:Signal` codes.
pub mod signal_code {
    /// PSRP's "stop the pipeline".
    pub const PS_CRTL_C: &str = "powershell/signal/crtl_c";
    /// Terminate the command (WinRM's own signal).
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

/// Bytes [`max_fragment_len`] keeps for the SOAP around a stream: our envelopes take about 1.5 KB
/// plus the `wsa:To` URL and the resource URI, so this holds for URLs up to about 2 KB.
pub const ENVELOPE_OVERHEAD: usize = 4096;

/// The largest PSRP fragment (header included) whose base64 fits in one stream element of an
/// envelope of `max_envelope_size` bytes, leaving room for the SOAP around it.
///
/// Never less than a header plus one byte, so for envelopes under [`ENVELOPE_OVERHEAD`] (which
/// no real peer uses) the guarantee does not hold.
pub fn max_fragment_len(max_envelope_size: u32) -> usize {
    let room = (max_envelope_size as usize).saturating_sub(ENVELOPE_OVERHEAD);
    // Base64 turns every 3 bytes into 4 characters.
    (room / 4 * 3).max(crate::fragment::HEADER_LEN + 1)
}

// ---- client side: requests --------------------------------------------------------------

/// Create (a runspace pool): `rsp:Shell ShellId` with `InputStreams "stdin pr"`,
/// `OutputStreams "stdout"` and `creationXml` = base64 of `creation_fragments`. The header
/// should carry the `protocolversion=2.3` option (`MustComply="true"`).
pub fn create_shell(header: &Header, shell_id: Uuid, creation_fragments: &[u8]) -> String {
    let mut b = String::new();
    let _ = write!(b, r#"<rsp:Shell ShellId="{}">"#, upper(shell_id));
    b.push_str("<rsp:InputStreams>stdin pr</rsp:InputStreams>");
    b.push_str("<rsp:OutputStreams>stdout</rsp:OutputStreams>");
    let _ = write!(
        b,
        r#"<creationXml xmlns="{PS_NS}">{}</creationXml>"#,
        B64.encode(creation_fragments)
    );
    b.push_str("</rsp:Shell>");
    request(header, &b)
}

/// Command (a pipeline): `rsp:CommandLine CommandId` with an empty `rsp:Command` and
/// `rsp:Arguments` = base64 of `arguments` (the CREATE_PIPELINE fragments).
pub fn command(header: &Header, command_id: Uuid, arguments: &[u8]) -> String {
    let b = format!(
        r#"<rsp:CommandLine CommandId="{}"><rsp:Command /><rsp:Arguments>{}</rsp:Arguments></rsp:CommandLine>"#,
        upper(command_id),
        B64.encode(arguments)
    );
    request(header, &b)
}

/// Receive `stdout` of the shell (`command_id` None) or of one pipeline.
pub fn receive(header: &Header, command_id: Option<Uuid>) -> String {
    let b = match command_id {
        Some(id) => format!(
            r#"<rsp:Receive><rsp:DesiredStream CommandId="{}">stdout</rsp:DesiredStream></rsp:Receive>"#,
            upper(id)
        ),
        None => "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>".into(),
    };
    request(header, &b)
}

/// Send `data` (fragments) on stream `pr` of the shell or of a pipeline.
pub fn send(header: &Header, command_id: Option<Uuid>, data: &[u8]) -> String {
    send_stream(header, command_id, "pr", data)
}

/// Signal a pipeline with `code` (see [`signal_code`]).
pub fn signal(header: &Header, command_id: Uuid, code: &str) -> String {
    let mut b = format!(
        r#"<rsp:Signal CommandId="{}"><rsp:Code>"#,
        upper(command_id)
    );
    escape_text(code, &mut b);
    b.push_str("</rsp:Code></rsp:Signal>");
    request(header, &b)
}

/// Delete the shell (closes the runspace pool).
pub fn delete(header: &Header) -> String {
    request(header, "")
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
    let envelope = Envelope::parse(xml)?;
    let env = envelope.parts();
    let relates_to = match env.header.and_then(|h| h.child(WSA, "RelatesTo")) {
        Some(r) => Some(parse_uuid(&r.text(), "wsa:RelatesTo")?),
        None => None,
    };
    if let Some(f) = env.body.child(SOAP, "Fault") {
        return Ok((relates_to, Response::Fault(parse_fault(f))));
    }
    let action = env
        .header
        .and_then(|h| h.child(WSA, "Action"))
        .map(|a| a.text().trim().to_owned())
        .unwrap_or_default();
    let response = match action.as_str() {
        action::CREATE_RESPONSE => {
            let from_shell = env
                .body
                .child(RSP, "Shell")
                .and_then(|s| s.child(RSP, "ShellId"))
                .map(|e| e.text().into_owned());
            let from_reference = || {
                env.body
                    .child(TRANSFER, "ResourceCreated")
                    .and_then(|r| r.child(WSA, "ReferenceParameters"))
                    .and_then(|r| r.child(WSMAN, "SelectorSet"))
                    .and_then(shell_selector)
            };
            let id = from_shell
                .or_else(from_reference)
                .ok_or_else(|| PsrpError::Wsman("CreateResponse without a ShellId".into()))?;
            Response::Created {
                shell_id: parse_uuid(&id, "ShellId")?,
            }
        }
        action::COMMAND_RESPONSE => {
            let id = env
                .body
                .child(RSP, "CommandResponse")
                .and_then(|c| c.child(RSP, "CommandId"))
                .ok_or_else(|| PsrpError::Wsman("CommandResponse without a CommandId".into()))?;
            Response::CommandCreated {
                command_id: parse_uuid(&id.text(), "CommandId")?,
            }
        }
        action::RECEIVE_RESPONSE => {
            let rr = env.body.child(RSP, "ReceiveResponse").ok_or_else(|| {
                PsrpError::Wsman("ReceiveResponse without rsp:ReceiveResponse".into())
            })?;
            let streams = parse_streams(rr)?;
            let state = match rr.child(RSP, "CommandState") {
                Some(cs) => Some(CommandState {
                    command_id: parse_uuid(cs.attr("CommandId").unwrap_or_default(), "CommandId")?,
                    state: cs.attr("State").unwrap_or_default().to_owned(),
                    exit_code: match cs.child(RSP, "ExitCode") {
                        Some(c) => Some(c.text().trim().parse().map_err(|_| {
                            PsrpError::Wsman(format!("ExitCode {}", excerpt(&c.text())))
                        })?),
                        None => None,
                    },
                }),
                None => None,
            };
            Response::Received { streams, state }
        }
        action::SEND_RESPONSE => Response::Sent,
        action::SIGNAL_RESPONSE => Response::Signaled,
        action::DELETE_RESPONSE => Response::Deleted,
        other => {
            return Err(PsrpError::Wsman(format!(
                "answer with action {}",
                short_action(other)
            )));
        }
    };
    Ok((relates_to, response))
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
    let envelope = Envelope::parse(xml)?;
    let env = envelope.parts();
    let h = env
        .header
        .ok_or_else(|| PsrpError::Wsman("request without s:Header".into()))?;
    let text = |ns: &str, name: &str| h.child(ns, name).map(|e| e.text().trim().to_owned());
    let action =
        text(WSA, "Action").ok_or_else(|| PsrpError::Wsman("request without wsa:Action".into()))?;
    let message_id = parse_uuid(
        &text(WSA, "MessageID")
            .ok_or_else(|| PsrpError::Wsman("request without wsa:MessageID".into()))?,
        "wsa:MessageID",
    )?;
    let session_id = match text(WSMV, "SessionId") {
        Some(s) => Some(parse_uuid(&s, "wsmv:SessionId")?),
        None => None,
    };
    let max_envelope_size = match text(WSMAN, "MaxEnvelopeSize") {
        Some(s) => s
            .parse()
            .map_err(|_| PsrpError::Wsman(format!("MaxEnvelopeSize {}", excerpt(&s))))?,
        None => DEFAULT_MAX_ENVELOPE_SIZE,
    };
    let operation_timeout = match text(WSMAN, "OperationTimeout") {
        Some(s) => parse_duration(&s)?,
        None => Duration::from_secs(20),
    };
    let locale = h
        .child(WSMAN, "Locale")
        .and_then(|l| l.attr_ns(xml::XML_NS, "lang"))
        .unwrap_or("en-US")
        .to_owned();
    let shell_id = match h.child(WSMAN, "SelectorSet").and_then(shell_selector) {
        Some(s) => Some(parse_uuid(&s, "ShellId selector")?),
        None => None,
    };
    let options = h
        .child(WSMAN, "OptionSet")
        .map(|set| {
            set.elements()
                .filter(|o| o.is(WSMAN, "Option"))
                .map(|o| {
                    (
                        o.attr("Name").unwrap_or_default().to_owned(),
                        o.text().into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let header = Header {
        to: text(WSA, "To").unwrap_or_default(),
        resource_uri: text(WSMAN, "ResourceURI").unwrap_or_default(),
        action,
        message_id,
        session_id,
        max_envelope_size,
        operation_timeout,
        locale,
        shell_id,
        options,
    };
    let b = env.body;
    let need = |ns: &str, name: &str| {
        b.child(ns, name)
            .ok_or_else(|| PsrpError::Wsman(format!("{} without {name}", header.action)))
    };
    let opt_uuid = |e: Element, attr: &str| -> Result<Option<Uuid>> {
        e.attr(attr).map(|s| parse_uuid(s, attr)).transpose()
    };
    let body = match header.action.as_str() {
        action::CREATE => {
            let shell = need(RSP, "Shell")?;
            let creation_fragments = match shell.child(PS_NS, "creationXml") {
                Some(c) => decode_b64(&c.text(), "creationXml")?,
                None => Vec::new(),
            };
            RequestBody::Create {
                shell_id: opt_uuid(shell, "ShellId")?,
                input_streams: shell
                    .child(RSP, "InputStreams")
                    .map(|e| e.text().trim().to_owned())
                    .unwrap_or_default(),
                output_streams: shell
                    .child(RSP, "OutputStreams")
                    .map(|e| e.text().trim().to_owned())
                    .unwrap_or_default(),
                creation_fragments,
            }
        }
        action::COMMAND => {
            let cl = need(RSP, "CommandLine")?;
            let mut arguments = Vec::new();
            for a in cl.elements().filter(|e| e.is(RSP, "Arguments")) {
                arguments.extend(decode_b64(&a.text(), "rsp:Arguments")?);
            }
            RequestBody::Command {
                command_id: opt_uuid(cl, "CommandId")?,
                command: cl
                    .child(RSP, "Command")
                    .map(|e| e.text().trim().to_owned())
                    .unwrap_or_default(),
                arguments,
            }
        }
        action::RECEIVE => {
            let ds = need(RSP, "Receive")?
                .child(RSP, "DesiredStream")
                .ok_or_else(|| PsrpError::Wsman("Receive without rsp:DesiredStream".into()))?;
            RequestBody::Receive {
                command_id: opt_uuid(ds, "CommandId")?,
                stream: ds.text().trim().to_owned(),
            }
        }
        action::SEND => RequestBody::Send {
            streams: parse_streams(need(RSP, "Send")?)?,
        },
        action::SIGNAL => {
            let sig = need(RSP, "Signal")?;
            RequestBody::Signal {
                command_id: opt_uuid(sig, "CommandId")?,
                code: sig
                    .child(RSP, "Code")
                    .map(|e| e.text().trim().to_owned())
                    .unwrap_or_default(),
            }
        }
        action::DELETE => RequestBody::Delete,
        other => {
            return Err(PsrpError::Wsman(format!(
                "unsupported action {}",
                short_action(other)
            )));
        }
    };
    Ok(Request { header, body })
}

// ---- server side: answers ---------------------------------------------------------------

/// CreateResponse for `request` (RelatesTo its message id): `ResourceCreated` with the address
/// and the `ShellId` selector, and an `rsp:Shell` describing the shell.
pub fn create_response(request: &Header, shell_id: Uuid) -> String {
    let id = upper(shell_id);
    let mut b = String::new();
    b.push_str("<x:ResourceCreated><a:Address>");
    escape_text(&request.to, &mut b);
    b.push_str("</a:Address><a:ReferenceParameters><w:ResourceURI>");
    escape_text(&request.resource_uri, &mut b);
    let _ = write!(
        b,
        r#"</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{id}</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"#
    );
    let _ = write!(
        b,
        r#"<rsp:Shell><rsp:ShellId>{id}</rsp:ShellId><rsp:ResourceUri>"#
    );
    escape_text(&request.resource_uri, &mut b);
    b.push_str("</rsp:ResourceUri><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>");
    b.push_str("<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>");
    b.push_str("<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut><rsp:Locale>");
    escape_text(&request.locale, &mut b);
    b.push_str("</rsp:Locale><rsp:DataLocale>");
    escape_text(&request.locale, &mut b);
    b.push_str("</rsp:DataLocale><rsp:CompressionMode>NoCompression</rsp:CompressionMode>");
    b.push_str("<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding>");
    b.push_str("<rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Connected</rsp:State>");
    b.push_str("<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>");
    b.push_str("</rsp:Shell>");
    answer(action::CREATE_RESPONSE, Some(request.message_id), &b)
}

/// CommandResponse with `rsp:CommandId`.
pub fn command_response(request: &Header, command_id: Uuid) -> String {
    let b = format!(
        "<rsp:CommandResponse><rsp:CommandId>{}</rsp:CommandId></rsp:CommandResponse>",
        upper(command_id)
    );
    answer(action::COMMAND_RESPONSE, Some(request.message_id), &b)
}

/// ReceiveResponse with these streams and, when given, the command's state.
pub fn receive_response(
    request: &Header,
    streams: &[StreamChunk],
    state: Option<&CommandState>,
) -> String {
    // Written straight into the envelope: the streams' base64 is most of it.
    let data: usize = streams
        .iter()
        .map(|s| s.data.len().div_ceil(3) * 4 + 200)
        .sum();
    let mut b = answer_head(
        action::RECEIVE_RESPONSE,
        Some(request.message_id),
        data + 300,
    );
    b.push_str("<s:Body><rsp:ReceiveResponse>");
    for s in streams {
        write_stream(&mut b, s);
    }
    if let Some(st) = state {
        let _ = write!(
            b,
            r#"<rsp:CommandState CommandId="{}" State=""#,
            upper(st.command_id)
        );
        escape_attr(&st.state, &mut b);
        match st.exit_code {
            Some(code) => {
                let _ = write!(
                    b,
                    r#""><rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState>"#
                );
            }
            None => b.push_str(r#"" />"#),
        }
    }
    b.push_str("</rsp:ReceiveResponse></s:Body></s:Envelope>");
    b
}

/// SendResponse.
pub fn send_response(request: &Header) -> String {
    answer(
        action::SEND_RESPONSE,
        Some(request.message_id),
        "<rsp:SendResponse />",
    )
}

/// SignalResponse.
pub fn signal_response(request: &Header) -> String {
    answer(
        action::SIGNAL_RESPONSE,
        Some(request.message_id),
        "<rsp:SignalResponse />",
    )
}

/// DeleteResponse.
pub fn delete_response(request: &Header) -> String {
    answer(action::DELETE_RESPONSE, Some(request.message_id), "")
}

/// A SOAP fault, RelatesTo `relates_to` when the request's message id is known.
pub fn fault(relates_to: Option<Uuid>, fault: &Fault) -> String {
    let f = fault;
    let mut b = String::from("<s:Fault><s:Code><s:Value>");
    escape_text(&f.code, &mut b);
    b.push_str("</s:Value>");
    if let Some(sub) = &f.subcode {
        b.push_str("<s:Subcode><s:Value>");
        escape_text(sub, &mut b);
        b.push_str("</s:Value></s:Subcode>");
    }
    b.push_str(r#"</s:Code><s:Reason><s:Text xml:lang="en-US">"#);
    escape_text(&f.reason, &mut b);
    b.push_str("</s:Text></s:Reason>");
    if f.wsman_code.is_some() || f.message.is_some() {
        let _ = write!(b, r#"<s:Detail><f:WSManFault xmlns:f="{WSMAN_FAULT}""#);
        if let Some(code) = f.wsman_code {
            let _ = write!(b, r#" Code="{code}""#);
        }
        b.push_str(r#" Machine="localhost">"#);
        if let Some(m) = &f.message {
            b.push_str("<f:Message>");
            escape_text(m, &mut b);
            b.push_str("</f:Message>");
        }
        b.push_str("</f:WSManFault></s:Detail>");
    }
    b.push_str("</s:Fault>");
    answer(action::FAULT, relates_to, &b)
}

// ---- additions and helpers ------------------------------------------------------------------

/// Send `data` (fragments) on stream `stream` (`pr` for host responses, `stdin` for pipeline
/// input) of the shell or of a pipeline.
pub fn send_stream(header: &Header, command_id: Option<Uuid>, stream: &str, data: &[u8]) -> String {
    let chunk = StreamChunk {
        name: stream.to_owned(),
        command_id,
        data: data.to_vec(),
        end: false,
    };
    let mut b = String::from("<rsp:Send>");
    write_stream(&mut b, &chunk);
    b.push_str("</rsp:Send>");
    request(header, &b)
}

/// `xs:duration` as WinRM writes an operation timeout: `PT20.000S`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos.is_multiple_of(1_000_000) {
        format!("PT{}.{:03}S", d.as_secs(), nanos / 1_000_000)
    } else {
        // Finer than WinRM writes, but kept so a parsed header is rebuilt exactly.
        let frac = format!("{nanos:09}");
        format!("PT{}.{}S", d.as_secs(), frac.trim_end_matches('0'))
    }
}

/// An `xs:duration` of days, hours, minutes and seconds (`PT20S`, `PT20.000S`, `P0DT0H0M0S`).
/// Years, months and negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || PsrpError::Wsman(format!("duration {}", excerpt(text)));
    let rest = text.trim().strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut add = |n: &str, unit_secs: u64| -> Result<()> {
        let (whole, frac) = match n.split_once('.') {
            Some((w, f)) if unit_secs == 1 => (w, f),
            Some(_) => return Err(bad()),
            None => (n, ""),
        };
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let secs = whole.checked_mul(unit_secs).ok_or_else(bad)?;
        let nanos = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            digits.parse::<u32>().map_err(|_| bad())?
        };
        total = total
            .checked_add(Duration::new(secs, nanos))
            .ok_or_else(bad)?;
        Ok(())
    };
    let mut walk = |part: &str, units: &[(char, u64)]| -> Result<()> {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let i = units[next_unit..]
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(bad)?
                + next_unit;
            add(&number, units[i].1)?;
            number.clear();
            next_unit = i + 1;
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    walk(date, &[('D', 86_400)])?;
    if let Some(t) = time {
        walk(t, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    Ok(total)
}

const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSA: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
const WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
const WSMV: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
const RSP: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
const TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
const WSMAN_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";
const PS_NS: &str = "http://schemas.microsoft.com/powershell";
const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";

/// SOAP envelopes nest a handful of levels; anything deeper is not WS-Management.
const MAX_SOAP_DEPTH: usize = 32;

/// An action URI for an error message: whole when reasonably short (its last segment is what
/// tells actions apart), else an excerpt.
fn short_action(a: &str) -> String {
    if a.chars().count() <= 120 {
        a.to_owned()
    } else {
        excerpt(a)
    }
}

fn upper(id: Uuid) -> String {
    id.hyphenated().to_string().to_ascii_uppercase()
}

fn parse_uuid(text: &str, what: &str) -> Result<Uuid> {
    let t = text.trim();
    let t = t.strip_prefix("uuid:").unwrap_or(t);
    Uuid::parse_str(t)
        .map_err(|_| PsrpError::Wsman(format!("{what} is not a GUID: {}", excerpt(t))))
}

fn decode_b64(text: &str, what: &str) -> Result<Vec<u8>> {
    crate::clixml::decode_b64(text)
        .map_err(|e| PsrpError::Wsman(format!("{what} is not base64: {e}")))
}

fn shell_selector(set: Element) -> Option<String> {
    set.elements()
        .find(|s| s.is(WSMAN, "Selector") && s.attr("Name") == Some("ShellId"))
        .map(|s| s.text().trim().to_owned())
}

fn write_stream(b: &mut String, s: &StreamChunk) {
    b.push_str(r#"<rsp:Stream Name=""#);
    escape_attr(&s.name, b);
    b.push('"');
    if let Some(id) = s.command_id {
        let _ = write!(b, r#" CommandId="{}""#, upper(id));
    }
    if s.end {
        b.push_str(r#" End="true""#);
    }
    if s.data.is_empty() {
        b.push_str(" />");
    } else {
        b.push('>');
        B64.encode_string(&s.data, b);
        b.push_str("</rsp:Stream>");
    }
}

fn parse_streams(parent: Element) -> Result<Vec<StreamChunk>> {
    parent
        .elements()
        .filter(|e| e.is(RSP, "Stream"))
        .map(|e| {
            Ok(StreamChunk {
                name: e.attr("Name").unwrap_or_default().to_owned(),
                command_id: e
                    .attr("CommandId")
                    .map(|s| parse_uuid(s, "CommandId"))
                    .transpose()?,
                data: decode_b64(&e.text(), "rsp:Stream")?,
                end: matches!(e.attr("End"), Some("true" | "True" | "1")),
            })
        })
        .collect()
}

fn deep_text(e: Element, out: &mut String) {
    for n in e.children() {
        match n {
            xml::Child::Text(t) => out.push_str(t),
            xml::Child::Element(c) => deep_text(c, out),
        }
    }
}

fn parse_fault(f: Element) -> Fault {
    let code_el = f.child(SOAP, "Code");
    let code = code_el
        .and_then(|c| c.child(SOAP, "Value"))
        .map(|v| v.text().trim().to_owned())
        .unwrap_or_default();
    let subcode = code_el
        .and_then(|c| c.child(SOAP, "Subcode"))
        .and_then(|s| s.child(SOAP, "Value"))
        .map(|v| v.text().trim().to_owned());
    let reason = f
        .child(SOAP, "Reason")
        .and_then(|r| r.child(SOAP, "Text"))
        .map(|t| t.text().trim().to_owned())
        .unwrap_or_default();
    let detail = f.child(SOAP, "Detail");
    let wsman_fault = detail.and_then(|d| d.child(WSMAN_FAULT, "WSManFault"));
    let wsman_code = wsman_fault
        .and_then(|w| w.attr("Code"))
        .and_then(|c| c.trim().parse().ok());
    let message = wsman_fault
        .and_then(|w| w.child(WSMAN_FAULT, "Message"))
        .or(detail)
        .map(|m| {
            let mut t = String::new();
            deep_text(m, &mut t);
            t.trim().to_owned()
        })
        .filter(|t| !t.is_empty());
    Fault {
        code,
        subcode,
        reason,
        wsman_code,
        message,
    }
}

struct Envelope<'a> {
    doc: Document<'a>,
}

struct EnvelopeParts<'e, 'a> {
    header: Option<Element<'e, 'a>>,
    body: Element<'e, 'a>,
}

impl<'a> Envelope<'a> {
    fn parse(text: &'a str) -> Result<Envelope<'a>> {
        let doc = xml::parse(text, MAX_SOAP_DEPTH)?;
        let root = doc.root();
        if !root.is(SOAP, "Envelope") {
            return Err(PsrpError::Wsman(format!(
                "root is <{}>, not a SOAP 1.2 s:Envelope",
                excerpt(&root.name)
            )));
        }
        if root.child(SOAP, "Body").is_none() {
            return Err(PsrpError::Wsman("envelope without s:Body".into()));
        }
        Ok(Envelope { doc })
    }
}

impl<'a> Envelope<'a> {
    fn parts(&self) -> EnvelopeParts<'_, 'a> {
        let root = self.doc.root();
        EnvelopeParts {
            header: root.child(SOAP, "Header"),
            // Checked in parse.
            body: root.child(SOAP, "Body").unwrap_or(root),
        }
    }
}

const REQUEST_NS: &str = concat!(
    r#"xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" "#,
    r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
    r#"xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" "#,
    r#"xmlns:wsmv="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd""#
);

fn request(h: &Header, body: &str) -> String {
    let mut x = String::with_capacity(1600 + body.len());
    let _ = write!(x, "<s:Envelope {REQUEST_NS}><s:Header>");
    x.push_str(r#"<wsa:Action s:mustUnderstand="true">"#);
    escape_text(&h.action, &mut x);
    x.push_str("</wsa:Action>");
    x.push_str(r#"<wsmv:DataLocale s:mustUnderstand="false" xml:lang=""#);
    escape_attr(&h.locale, &mut x);
    x.push_str(r#"" /><wsman:Locale s:mustUnderstand="false" xml:lang=""#);
    escape_attr(&h.locale, &mut x);
    let _ = write!(
        x,
        r#"" /><wsman:MaxEnvelopeSize s:mustUnderstand="true">{}</wsman:MaxEnvelopeSize>"#,
        h.max_envelope_size
    );
    let _ = write!(
        x,
        "<wsa:MessageID>uuid:{}</wsa:MessageID>",
        upper(h.message_id)
    );
    let _ = write!(
        x,
        "<wsman:OperationTimeout>{}</wsman:OperationTimeout>",
        format_duration(h.operation_timeout)
    );
    let _ = write!(
        x,
        r#"<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">{ANONYMOUS}</wsa:Address></wsa:ReplyTo>"#
    );
    x.push_str(r#"<wsman:ResourceURI s:mustUnderstand="true">"#);
    escape_text(&h.resource_uri, &mut x);
    x.push_str("</wsman:ResourceURI>");
    if let Some(sid) = h.session_id {
        let _ = write!(
            x,
            r#"<wsmv:SessionId s:mustUnderstand="false">uuid:{}</wsmv:SessionId>"#,
            upper(sid)
        );
    }
    x.push_str("<wsa:To>");
    escape_text(&h.to, &mut x);
    x.push_str("</wsa:To>");
    if !h.options.is_empty() {
        // On Create the options are the shell's terms (protocolversion): the server must comply.
        let must_comply = h.action == action::CREATE;
        x.push_str(r#"<wsman:OptionSet s:mustUnderstand="true">"#);
        for (name, value) in &h.options {
            x.push_str("<wsman:Option");
            if must_comply {
                x.push_str(r#" MustComply="true""#);
            }
            x.push_str(r#" Name=""#);
            escape_attr(name, &mut x);
            x.push_str(r#"">"#);
            escape_text(value, &mut x);
            x.push_str("</wsman:Option>");
        }
        x.push_str("</wsman:OptionSet>");
    }
    if let Some(shell) = h.shell_id {
        let _ = write!(
            x,
            r#"<wsman:SelectorSet><wsman:Selector Name="ShellId">{}</wsman:Selector></wsman:SelectorSet>"#,
            upper(shell)
        );
    }
    x.push_str("</s:Header>");
    if body.is_empty() {
        x.push_str("<s:Body />");
    } else {
        let _ = write!(x, "<s:Body>{body}</s:Body>");
    }
    x.push_str("</s:Envelope>");
    x
}

const ANSWER_NS: &str = concat!(
    r#"xml:lang="en-US" "#,
    r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
    r#"xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" "#,
    r#"xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" "#,
    r#"xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" "#,
    r#"xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd""#
);

fn answer(action: &str, relates_to: Option<Uuid>, body: &str) -> String {
    let mut x = answer_head(action, relates_to, body.len());
    if body.is_empty() {
        x.push_str("<s:Body />");
    } else {
        let _ = write!(x, "<s:Body>{body}</s:Body>");
    }
    x.push_str("</s:Envelope>");
    x
}

/// An answer's envelope up to its body, with room for `body_len` more bytes.
fn answer_head(action: &str, relates_to: Option<Uuid>, body_len: usize) -> String {
    let mut x = String::with_capacity(800 + body_len);
    let _ = write!(
        x,
        "<s:Envelope {ANSWER_NS}><s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{}</a:MessageID><a:To>{ANONYMOUS}</a:To>",
        upper(Uuid::new_v4())
    );
    if let Some(r) = relates_to {
        let _ = write!(x, "<a:RelatesTo>uuid:{}</a:RelatesTo>", upper(r));
    }
    x.push_str("</s:Header>");
    x
}

#[cfg(test)]
mod tests;
