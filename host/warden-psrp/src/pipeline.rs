//! The PSRP message bodies (MS-PSRP 2.2.2) a runspace pool and its pipelines exchange, as CLIXML
//! text: what a client sends (SESSION_CAPABILITY, INIT_RUNSPACEPOOL, CREATE_PIPELINE) and what a
//! server answers (SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE,
//! PIPELINE_OUTPUT, ERROR_RECORD, WARNING_RECORD, PIPELINE_STATE), each with its parser.
//!
//! A command is always a cmdlet name with named parameters (`IsScript` false); [`parse_create_pipeline`]
//! reports `is_script` so a server can refuse script text.
//!
//! Builders write what Windows PowerShell writes (element order, type names, property names;
//! checked against recorded captures in `tests/vectors.rs`). Parsers read properties by name,
//! so they accept pypsrp's, PowerShell's and our own bodies alike; they refuse a body missing a
//! property the message cannot do without, naming it.

use crate::clixml::{self, PsObject, PsValue};
use crate::error::{PsrpError, Result};
use crate::message::MessageType;

/// SESSION_CAPABILITY (2.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCapability {
    /// `protocolversion`, "2.3" here.
    pub protocol_version: String,
    /// `PSVersion`, "2.0".
    pub ps_version: String,
    /// `SerializationVersion`, "1.1.0.1".
    pub serialization_version: String,
}

impl Default for SessionCapability {
    fn default() -> Self {
        Self {
            protocol_version: "2.3".into(),
            ps_version: "2.0".into(),
            serialization_version: "1.1.0.1".into(),
        }
    }
}

/// The body of a SESSION_CAPABILITY message.
pub fn session_capability(capability: &SessionCapability) -> String {
    let o = PsObject::with_extended(vec![
        (
            "protocolversion".into(),
            PsValue::Version(capability.protocol_version.clone()),
        ),
        (
            "PSVersion".into(),
            PsValue::Version(capability.ps_version.clone()),
        ),
        (
            "SerializationVersion".into(),
            PsValue::Version(capability.serialization_version.clone()),
        ),
    ]);
    clixml::serialize(&o.into())
}

/// Parses a SESSION_CAPABILITY body.
pub fn parse_session_capability(data: &str) -> Result<SessionCapability> {
    let v = clixml::deserialize(data)?;
    let o = top_object(&v, "SESSION_CAPABILITY")?;
    Ok(SessionCapability {
        protocol_version: text_prop(o, "protocolversion", "SESSION_CAPABILITY")?,
        ps_version: text_prop(o, "PSVersion", "SESSION_CAPABILITY")?,
        serialization_version: text_prop(o, "SerializationVersion", "SESSION_CAPABILITY")?,
    })
}

/// The body of INIT_RUNSPACEPOOL (2.2.2.2): `MinRunspaces`, `MaxRunspaces`, `PSThreadOptions`
/// Default, `ApartmentState` Unknown, a `HostInfo` with `_isHostNull` true, `ApplicationArguments` nil.
pub fn init_runspace_pool(min_runspaces: i32, max_runspaces: i32) -> String {
    let o = PsObject::with_extended(vec![
        ("MinRunspaces".into(), PsValue::I32(min_runspaces)),
        ("MaxRunspaces".into(), PsValue::I32(max_runspaces)),
        (
            "PSThreadOptions".into(),
            PsObject::enum_value(
                "System.Management.Automation.Runspaces.PSThreadOptions",
                "Default",
                0,
            )
            .into(),
        ),
        ("ApartmentState".into(), apartment_unknown()),
        ("HostInfo".into(), null_host_info()),
        ("ApplicationArguments".into(), PsValue::Null),
    ]);
    clixml::serialize(&o.into())
}

/// `(MinRunspaces, MaxRunspaces)` of an INIT_RUNSPACEPOOL body.
pub fn parse_init_runspace_pool(data: &str) -> Result<(i32, i32)> {
    let v = clixml::deserialize(data)?;
    let o = top_object(&v, "INIT_RUNSPACEPOOL")?;
    Ok((
        int_prop(o, "MinRunspaces", "INIT_RUNSPACEPOOL")?,
        int_prop(o, "MaxRunspaces", "INIT_RUNSPACEPOOL")?,
    ))
}

/// The body of APPLICATION_PRIVATE_DATA (2.2.2.13) with an empty `ApplicationPrivateData` table.
pub fn application_private_data() -> String {
    let table = PsObject {
        type_names: primitive_dictionary_types(),
        dict: Some(Vec::new()),
        ..PsObject::default()
    };
    let o = PsObject::with_extended(vec![("ApplicationPrivateData".into(), table.into())]);
    clixml::serialize(&o.into())
}

/// RunspacePoolState (2.2.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunspacePoolState {
    /// Created, not yet opened.
    BeforeOpen = 0,
    /// Being opened.
    Opening = 1,
    /// Open: pipelines may run.
    Opened = 2,
    /// Closed.
    Closed = 3,
    /// Being closed.
    Closing = 4,
    /// Failed; unusable.
    Broken = 5,
    /// Capabilities sent, awaiting the answer.
    NegotiationSent = 6,
    /// Capabilities agreed.
    NegotiationSucceeded = 7,
    /// Reconnecting to a disconnected pool.
    Connecting = 8,
    /// Disconnected; may be reconnected.
    Disconnected = 9,
}

/// PSInvocationState (2.2.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    /// Created, not yet started.
    NotStarted = 0,
    /// Running.
    Running = 1,
    /// Being stopped.
    Stopping = 2,
    /// Stopped before completing.
    Stopped = 3,
    /// Finished successfully.
    Completed = 4,
    /// Finished with a terminating error.
    Failed = 5,
    /// Disconnected while running.
    Disconnected = 6,
}

/// An ErrorRecord (2.2.3.15) reduced to what a caller acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The exception's `Message` (what `ToString` of the record shows).
    pub message: String,
    /// `FullyQualifiedErrorId`, e.g.
    /// `[Server=BN8PR05MB1234,RequestId=…,TimeStamp=…] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] 9F3A7B21,Microsoft.Exchange.Management.RecipientTasks.GetMailbox`.
    pub fully_qualified_error_id: String,
    /// The exception's .NET type, e.g. `Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException`.
    pub exception_type: String,
    /// `ErrorCategory_Category` (ErrorCategory enum value).
    pub category: i32,
    /// `ErrorCategory_Reason`: the exception type's short name.
    pub reason: String,
    /// `ErrorCategory_TargetName`.
    pub target_name: String,
    /// The target object as text, if any.
    pub target_object: Option<String>,
}

/// The body of RUNSPACEPOOL_STATE (2.2.2.9), with `ExceptionAsErrorRecord` when given.
pub fn runspace_pool_state(state: RunspacePoolState, error: Option<&ErrorInfo>) -> String {
    state_body("RunspaceState", state as i32, error)
}

/// Parses a RUNSPACEPOOL_STATE body. An unknown state number is an error.
pub fn parse_runspace_pool_state(data: &str) -> Result<(RunspacePoolState, Option<ErrorInfo>)> {
    let (n, error) = parse_state_body(data, "RunspaceState", "RUNSPACEPOOL_STATE")?;
    let state = RunspacePoolState::from_number(n).ok_or_else(|| {
        PsrpError::Clixml(format!("RUNSPACEPOOL_STATE: unknown RunspaceState {n}"))
    })?;
    Ok((state, error))
}

/// One command of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The cmdlet name (`Cmd`).
    pub name: String,
    /// `IsScript`: always false from [`create_pipeline`]; a server should refuse true.
    pub is_script: bool,
    /// Named parameters (`Args` entries with `N` set), in order. A switch is `Bool(true)`.
    pub parameters: Vec<(String, PsValue)>,
}

/// The body of CREATE_PIPELINE (2.2.2.10): one `PowerShell` with these commands, `NoInput`
/// true, `AddToHistory` false, `IsNested` false, `ApartmentState` Unknown, `RemoteStreamOptions`
/// 0, and a null `HostInfo`. Each command merges no streams.
pub fn create_pipeline(commands: &[Command]) -> String {
    let cmds: Vec<PsValue> = commands.iter().map(command_object).collect();
    let powershell = PsObject::with_extended(vec![
        ("IsNested".into(), PsValue::Bool(false)),
        ("ExtraCmds".into(), PsValue::Null),
        ("Cmds".into(), generic_list(cmds)),
        ("History".into(), PsValue::Null),
        ("RedirectShellErrorOutputPipe".into(), PsValue::Bool(false)),
    ]);
    let o = PsObject::with_extended(vec![
        ("NoInput".into(), PsValue::Bool(true)),
        ("ApartmentState".into(), apartment_unknown()),
        (
            "RemoteStreamOptions".into(),
            PsObject::enum_value(
                "System.Management.Automation.RemoteStreamOptions",
                "None",
                0,
            )
            .into(),
        ),
        ("AddToHistory".into(), PsValue::Bool(false)),
        ("HostInfo".into(), null_host_info()),
        ("PowerShell".into(), powershell.into()),
        ("IsNested".into(), PsValue::Bool(false)),
    ]);
    clixml::serialize(&o.into())
}

/// The commands of a CREATE_PIPELINE body. Positional arguments (an `Args` entry with a nil `N`)
/// are returned with an empty name.
pub fn parse_create_pipeline(data: &str) -> Result<Vec<Command>> {
    const WHAT: &str = "CREATE_PIPELINE";
    let v = clixml::deserialize(data)?;
    let o = top_object(&v, WHAT)?;
    let ps = o
        .property("PowerShell")
        .and_then(PsValue::as_object)
        .ok_or_else(|| missing(WHAT, "PowerShell"))?;
    // With several statements, ExtraCmds holds every statement (each with its Cmds); report them
    // all so a server judges everything it would run.
    let statements: Vec<&PsObject> = match ps.property("ExtraCmds").and_then(PsValue::as_object) {
        Some(extra) => extra
            .list
            .iter()
            .flatten()
            .map(|s| {
                s.as_object()
                    .ok_or_else(|| missing(WHAT, "ExtraCmds statement"))
            })
            .collect::<Result<_>>()?,
        None => vec![ps],
    };
    let mut out = Vec::new();
    for statement in statements {
        let cmds = statement
            .property("Cmds")
            .and_then(PsValue::as_object)
            .and_then(|c| c.list.as_ref())
            .ok_or_else(|| missing(WHAT, "Cmds"))?;
        for cmd in cmds {
            out.push(parse_command(cmd)?);
        }
    }
    Ok(out)
}

/// The body of PIPELINE_STATE (2.2.2.21), with `ExceptionAsErrorRecord` when given.
pub fn pipeline_state(state: PipelineState, error: Option<&ErrorInfo>) -> String {
    state_body("PipelineState", state as i32, error)
}

/// Parses a PIPELINE_STATE body. An unknown state number is an error.
pub fn parse_pipeline_state(data: &str) -> Result<(PipelineState, Option<ErrorInfo>)> {
    let (n, error) = parse_state_body(data, "PipelineState", "PIPELINE_STATE")?;
    let state = PipelineState::from_number(n)
        .ok_or_else(|| PsrpError::Clixml(format!("PIPELINE_STATE: unknown PipelineState {n}")))?;
    Ok((state, error))
}

/// The body of an ERROR_RECORD message (2.2.2.20): an ErrorRecord object with
/// `Exception` (type names from `exception_type` down to `System.Exception`, `Message`),
/// `FullyQualifiedErrorId`, the `ErrorCategory_*` properties and `SerializeExtendedInfo` false.
pub fn error_record(error: &ErrorInfo) -> String {
    clixml::serialize(&error_record_object(error, true).into())
}

/// Parses an ERROR_RECORD body (or the `ExceptionAsErrorRecord` inside a state message).
pub fn parse_error_record(data: &str) -> Result<ErrorInfo> {
    let v = clixml::deserialize(data)?;
    let o = top_object(&v, "ERROR_RECORD")?;
    match o
        .property("ExceptionAsErrorRecord")
        .and_then(PsValue::as_object)
    {
        Some(inner) => Ok(error_info(inner)),
        None => Ok(error_info(o)),
    }
}

/// The body of a WARNING_RECORD / VERBOSE_RECORD / DEBUG_RECORD (2.2.2.22-24): an
/// InformationalRecord with `InformationalRecord_Message` and no invocation info.
pub fn informational_record(message: &str) -> String {
    informational_record_for(MessageType::WARNING_RECORD, message)
}

/// The message of an InformationalRecord body.
pub fn parse_informational_record(data: &str) -> Result<String> {
    let v = clixml::deserialize(data)?;
    let o = top_object(&v, "informational record")?;
    match o.property("InformationalRecord_Message") {
        Some(m) => Ok(m.display_text().unwrap_or_default()),
        None => o
            .to_string
            .clone()
            .ok_or_else(|| missing("informational record", "InformationalRecord_Message")),
    }
}

// ---- additions -------------------------------------------------------------------------------

/// Like [`informational_record`], with the record type of `message_type` (WARNING_RECORD,
/// VERBOSE_RECORD or DEBUG_RECORD; anything else gets the bare InformationalRecord type).
pub fn informational_record_for(message_type: MessageType, message: &str) -> String {
    let kind = match message_type {
        MessageType::WARNING_RECORD => Some("System.Management.Automation.WarningRecord"),
        MessageType::VERBOSE_RECORD => Some("System.Management.Automation.VerboseRecord"),
        MessageType::DEBUG_RECORD => Some("System.Management.Automation.DebugRecord"),
        _ => None,
    };
    let mut type_names: Vec<String> = kind.into_iter().map(str::to_owned).collect();
    type_names.push("System.Management.Automation.InformationalRecord".into());
    type_names.push("System.Object".into());
    let o = PsObject {
        type_names,
        to_string: Some(message.to_owned()),
        extended: vec![
            ("InformationalRecord_Message".into(), message.into()),
            (
                "InformationalRecord_SerializeInvocationInfo".into(),
                PsValue::Bool(false),
            ),
        ],
        ..PsObject::default()
    };
    clixml::serialize(&o.into())
}

/// The body of a PIPELINE_OUTPUT message: the value itself.
pub fn pipeline_output(value: &PsValue) -> String {
    clixml::serialize(value)
}

/// The value of a PIPELINE_OUTPUT body.
pub fn parse_pipeline_output(data: &str) -> Result<PsValue> {
    clixml::deserialize(data)
}

/// The `ApplicationPrivateData` table of an APPLICATION_PRIVATE_DATA body, as JSON (an object;
/// empty when the server sent none).
pub fn parse_application_private_data(data: &str) -> Result<serde_json::Value> {
    let v = clixml::deserialize(data)?;
    let o = top_object(&v, "APPLICATION_PRIVATE_DATA")?;
    match o.property("ApplicationPrivateData") {
        Some(PsValue::Null) | None => Ok(serde_json::Value::Object(serde_json::Map::new())),
        Some(table) => Ok(clixml::to_json(table)),
    }
}

impl RunspacePoolState {
    /// The state with this number.
    pub fn from_number(n: i64) -> Option<Self> {
        use RunspacePoolState::*;
        Some(match n {
            0 => BeforeOpen,
            1 => Opening,
            2 => Opened,
            3 => Closed,
            4 => Closing,
            5 => Broken,
            6 => NegotiationSent,
            7 => NegotiationSucceeded,
            8 => Connecting,
            9 => Disconnected,
            _ => return None,
        })
    }
}

impl PipelineState {
    /// The state with this number.
    pub fn from_number(n: i64) -> Option<Self> {
        use PipelineState::*;
        Some(match n {
            0 => NotStarted,
            1 => Running,
            2 => Stopping,
            3 => Stopped,
            4 => Completed,
            5 => Failed,
            6 => Disconnected,
            _ => return None,
        })
    }

    /// Whether the pipeline has finished (Stopped, Completed or Failed).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Completed | Self::Failed)
    }
}

/// The name of an `ErrorCategory` value (what `ErrorCategory_Message` starts with).
pub fn error_category_name(category: i32) -> &'static str {
    const NAMES: [&str; 32] = [
        "NotSpecified",
        "OpenError",
        "CloseError",
        "DeviceError",
        "DeadlockDetected",
        "InvalidArgument",
        "InvalidData",
        "InvalidOperation",
        "InvalidResult",
        "InvalidType",
        "MetadataError",
        "NotImplemented",
        "NotInstalled",
        "ObjectNotFound",
        "OperationStopped",
        "OperationTimeout",
        "SyntaxError",
        "ParserError",
        "PermissionDenied",
        "ResourceBusy",
        "ResourceExists",
        "ResourceUnavailable",
        "ReadError",
        "WriteError",
        "FromStdErr",
        "SecurityError",
        "ProtocolError",
        "ConnectionError",
        "AuthenticationError",
        "LimitsExceeded",
        "QuotaExceeded",
        "NotEnabled",
    ];
    usize::try_from(category)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("NotSpecified")
}

// ---- helpers ---------------------------------------------------------------------------------

fn missing(what: &str, property: &str) -> PsrpError {
    PsrpError::Clixml(format!("{what}: no {property}"))
}

fn top_object<'a>(v: &'a PsValue, what: &str) -> Result<&'a PsObject> {
    v.as_object()
        .ok_or_else(|| PsrpError::Clixml(format!("{what}: body is not an object")))
}

fn text_prop(o: &PsObject, name: &str, what: &str) -> Result<String> {
    o.property(name)
        .and_then(PsValue::display_text)
        .ok_or_else(|| missing(what, name))
}

fn int_prop(o: &PsObject, name: &str, what: &str) -> Result<i32> {
    let n = o
        .property(name)
        .and_then(PsValue::as_i64)
        .ok_or_else(|| missing(what, name))?;
    i32::try_from(n).map_err(|_| PsrpError::Clixml(format!("{what}: {name} {n} out of range")))
}

fn apartment_unknown() -> PsValue {
    PsObject::enum_value("System.Threading.ApartmentState", "Unknown", 2).into()
}

fn null_host_info() -> PsValue {
    PsObject::with_extended(vec![
        ("_isHostNull".into(), PsValue::Bool(true)),
        ("_isHostUINull".into(), PsValue::Bool(true)),
        ("_isHostRawUINull".into(), PsValue::Bool(true)),
        ("_useRunspaceHost".into(), PsValue::Bool(true)),
    ])
    .into()
}

fn primitive_dictionary_types() -> Vec<String> {
    vec![
        "System.Management.Automation.PSPrimitiveDictionary".into(),
        "System.Collections.Hashtable".into(),
        "System.Object".into(),
    ]
}

const PSOBJECT_LIST: &str = "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]";

fn generic_list(items: Vec<PsValue>) -> PsValue {
    PsObject {
        type_names: vec![PSOBJECT_LIST.into(), "System.Object".into()],
        list: Some(items),
        ..PsObject::default()
    }
    .into()
}

fn merge_none() -> PsValue {
    PsObject::enum_value(
        "System.Management.Automation.Runspaces.PipelineResultTypes",
        "None",
        0,
    )
    .into()
}

fn command_object(c: &Command) -> PsValue {
    let args: Vec<PsValue> = c
        .parameters
        .iter()
        .map(|(name, value)| {
            let n = if name.is_empty() {
                PsValue::Null
            } else {
                PsValue::String(name.clone())
            };
            PsObject::with_extended(vec![("N".into(), n), ("V".into(), value.clone())]).into()
        })
        .collect();
    PsObject::with_extended(vec![
        ("Cmd".into(), PsValue::String(c.name.clone())),
        ("IsScript".into(), PsValue::Bool(c.is_script)),
        ("UseLocalScope".into(), PsValue::Null),
        ("MergeMyResult".into(), merge_none()),
        ("MergeToResult".into(), merge_none()),
        ("MergePreviousResults".into(), merge_none()),
        ("Args".into(), generic_list(args)),
        ("MergeError".into(), merge_none()),
        ("MergeWarning".into(), merge_none()),
        ("MergeVerbose".into(), merge_none()),
        ("MergeDebug".into(), merge_none()),
        ("MergeInformation".into(), merge_none()),
    ])
    .into()
}

fn parse_command(v: &PsValue) -> Result<Command> {
    const WHAT: &str = "CREATE_PIPELINE command";
    let o = top_object(v, WHAT)?;
    let name = o
        .property("Cmd")
        .and_then(PsValue::display_text)
        .ok_or_else(|| missing(WHAT, "Cmd"))?;
    let is_script = o
        .property("IsScript")
        .and_then(PsValue::as_bool)
        .ok_or_else(|| missing(WHAT, "IsScript"))?;
    let mut parameters = Vec::new();
    if let Some(args) = o.property("Args").and_then(PsValue::as_object) {
        for arg in args.list.iter().flatten() {
            let a = top_object(arg, "CREATE_PIPELINE argument")?;
            let n = match a.property("N") {
                None | Some(PsValue::Null) => String::new(),
                Some(n) => n.display_text().unwrap_or_default(),
            };
            let value = a.property("V").cloned().unwrap_or(PsValue::Null);
            parameters.push((n, value));
        }
    }
    Ok(Command {
        name,
        is_script,
        parameters,
    })
}

fn state_body(property: &str, state: i32, error: Option<&ErrorInfo>) -> String {
    let mut props = vec![(property.to_owned(), PsValue::I32(state))];
    if let Some(e) = error {
        props.push((
            "ExceptionAsErrorRecord".into(),
            error_record_object(e, false).into(),
        ));
    }
    clixml::serialize(&PsObject::with_extended(props).into())
}

fn parse_state_body(data: &str, property: &str, what: &str) -> Result<(i64, Option<ErrorInfo>)> {
    let v = clixml::deserialize(data)?;
    let o = top_object(&v, what)?;
    let n = o
        .property(property)
        .and_then(PsValue::as_i64)
        .ok_or_else(|| missing(what, property))?;
    let error = o
        .property("ExceptionAsErrorRecord")
        .and_then(PsValue::as_object)
        .map(error_info);
    Ok((n, error))
}

/// The last segment of a dotted .NET type name.
fn short_type_name(t: &str) -> &str {
    t.rsplit('.').next().unwrap_or(t)
}

fn error_record_object(e: &ErrorInfo, write_error_stream: bool) -> PsObject {
    let exception_type = if e.exception_type.is_empty() {
        "System.Exception"
    } else {
        e.exception_type.as_str()
    };
    let mut type_names = vec![exception_type.to_owned()];
    for base in ["System.Exception", "System.Object"] {
        if !type_names.iter().any(|t| t == base) {
            type_names.push(base.to_owned());
        }
    }
    let exception = PsObject {
        type_names,
        to_string: Some(format!("{exception_type}: {}", e.message)),
        adapted: vec![
            ("Message".into(), PsValue::String(e.message.clone())),
            (
                "Data".into(),
                PsObject {
                    type_names: vec![
                        "System.Collections.ListDictionaryInternal".into(),
                        "System.Object".into(),
                    ],
                    dict: Some(Vec::new()),
                    ..PsObject::default()
                }
                .into(),
            ),
            ("InnerException".into(), PsValue::Null),
            ("HelpLink".into(), PsValue::Null),
            ("Source".into(), PsValue::Null),
            ("HResult".into(), PsValue::I32(-2146233088)),
        ],
        ..PsObject::default()
    };
    let reason = if e.reason.is_empty() {
        short_type_name(exception_type).to_owned()
    } else {
        e.reason.clone()
    };
    let target_type = if e.target_object.is_some() {
        "String"
    } else {
        ""
    };
    let category_message = format!(
        "{}: ({}:{target_type}) [], {reason}",
        error_category_name(e.category),
        e.target_name
    );
    let mut props: Vec<(String, PsValue)> = Vec::new();
    if write_error_stream {
        props.push(("writeErrorStream".into(), PsValue::Bool(true)));
    }
    props.extend([
        ("Exception".into(), exception.into()),
        (
            "TargetObject".into(),
            e.target_object
                .as_deref()
                .map_or(PsValue::Null, PsValue::from),
        ),
        (
            "FullyQualifiedErrorId".into(),
            PsValue::String(e.fully_qualified_error_id.clone()),
        ),
        ("InvocationInfo".into(), PsValue::Null),
        ("ErrorCategory_Category".into(), PsValue::I32(e.category)),
        (
            "ErrorCategory_Activity".into(),
            PsValue::String(String::new()),
        ),
        ("ErrorCategory_Reason".into(), PsValue::String(reason)),
        (
            "ErrorCategory_TargetName".into(),
            PsValue::String(e.target_name.clone()),
        ),
        (
            "ErrorCategory_TargetType".into(),
            PsValue::String(target_type.into()),
        ),
        (
            "ErrorCategory_Message".into(),
            PsValue::String(category_message),
        ),
        ("SerializeExtendedInfo".into(), PsValue::Bool(false)),
    ]);
    PsObject {
        type_names: vec![
            "System.Management.Automation.ErrorRecord".into(),
            "System.Object".into(),
        ],
        to_string: Some(e.message.clone()),
        extended: props,
        ..PsObject::default()
    }
}

fn error_info(record: &PsObject) -> ErrorInfo {
    let text = |name: &str| record.property(name).and_then(PsValue::display_text);
    let exception = record.property("Exception").and_then(PsValue::as_object);
    let message = exception
        .and_then(|x| x.property("Message"))
        .and_then(PsValue::display_text)
        .or_else(|| record.to_string.clone())
        .or_else(|| exception.and_then(|x| x.to_string.clone()))
        .or_else(|| text("ErrorCategory_Message"))
        .unwrap_or_default();
    ErrorInfo {
        message,
        fully_qualified_error_id: text("FullyQualifiedErrorId").unwrap_or_default(),
        exception_type: exception
            .and_then(|x| x.type_names.first().cloned())
            .unwrap_or_default(),
        category: record
            .property("ErrorCategory_Category")
            .and_then(PsValue::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
        reason: text("ErrorCategory_Reason").unwrap_or_default(),
        target_name: text("ErrorCategory_TargetName").unwrap_or_default(),
        target_object: text("TargetObject"),
    }
}

#[cfg(test)]
mod tests;
