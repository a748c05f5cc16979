//! The PSRP message bodies (MS-PSRP 2.2.2) a runspace pool and its pipelines exchange, as CLIXML
//! text: what a client sends (SESSION_CAPABILITY, INIT_RUNSPACEPOOL, CREATE_PIPELINE) and what a
//! server answers (SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE,
//! PIPELINE_OUTPUT, ERROR_RECORD, WARNING_RECORD, PIPELINE_STATE), each with its parser.
//!
//! A command is always a cmdlet name with named parameters (`IsScript` false); [`parse_create_pipeline`]
//! reports `is_script` so a server can refuse script text.

use crate::clixml::PsValue;
use crate::error::Result;

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
    let _ = capability;
    todo!("warden-psrp: session_capability")
}

/// Parses a SESSION_CAPABILITY body.
pub fn parse_session_capability(data: &str) -> Result<SessionCapability> {
    let _ = data;
    todo!("warden-psrp: parse_session_capability")
}

/// The body of INIT_RUNSPACEPOOL (2.2.2.2): `MinRunspaces`, `MaxRunspaces`, `PSThreadOptions`
/// Default, `ApartmentState` Unknown, a `HostInfo` with `_isHostNull` true, `ApplicationArguments` nil.
pub fn init_runspace_pool(min_runspaces: i32, max_runspaces: i32) -> String {
    let _ = (min_runspaces, max_runspaces);
    todo!("warden-psrp: init_runspace_pool")
}

/// `(MinRunspaces, MaxRunspaces)` of an INIT_RUNSPACEPOOL body.
pub fn parse_init_runspace_pool(data: &str) -> Result<(i32, i32)> {
    let _ = data;
    todo!("warden-psrp: parse_init_runspace_pool")
}

/// The body of APPLICATION_PRIVATE_DATA (2.2.2.13) with an empty `ApplicationPrivateData` table.
pub fn application_private_data() -> String {
    todo!("warden-psrp: application_private_data")
}

/// RunspacePoolState (2.2.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunspacePoolState {
    BeforeOpen = 0,
    Opening = 1,
    Opened = 2,
    Closed = 3,
    Closing = 4,
    Broken = 5,
    NegotiationSent = 6,
    NegotiationSucceeded = 7,
    Connecting = 8,
    Disconnected = 9,
}

/// PSInvocationState (2.2.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    NotStarted = 0,
    Running = 1,
    Stopping = 2,
    Stopped = 3,
    Completed = 4,
    Failed = 5,
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
    let _ = (state, error);
    todo!("warden-psrp: runspace_pool_state")
}

/// Parses a RUNSPACEPOOL_STATE body. An unknown state number is an error.
pub fn parse_runspace_pool_state(data: &str) -> Result<(RunspacePoolState, Option<ErrorInfo>)> {
    let _ = data;
    todo!("warden-psrp: parse_runspace_pool_state")
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
    let _ = commands;
    todo!("warden-psrp: create_pipeline")
}

/// The commands of a CREATE_PIPELINE body. Positional arguments (an `Args` entry with a nil `N`)
/// are returned with an empty name.
pub fn parse_create_pipeline(data: &str) -> Result<Vec<Command>> {
    let _ = data;
    todo!("warden-psrp: parse_create_pipeline")
}

/// The body of PIPELINE_STATE (2.2.2.21), with `ExceptionAsErrorRecord` when given.
pub fn pipeline_state(state: PipelineState, error: Option<&ErrorInfo>) -> String {
    let _ = (state, error);
    todo!("warden-psrp: pipeline_state")
}

/// Parses a PIPELINE_STATE body. An unknown state number is an error.
pub fn parse_pipeline_state(data: &str) -> Result<(PipelineState, Option<ErrorInfo>)> {
    let _ = data;
    todo!("warden-psrp: parse_pipeline_state")
}

/// The body of an ERROR_RECORD message (2.2.2.20): an ErrorRecord object with
/// `Exception` (type names from `exception_type` down to `System.Exception`, `Message`),
/// `FullyQualifiedErrorId`, the `ErrorCategory_*` properties and `SerializeExtendedInfo` false.
pub fn error_record(error: &ErrorInfo) -> String {
    let _ = error;
    todo!("warden-psrp: error_record")
}

/// Parses an ERROR_RECORD body (or the `ExceptionAsErrorRecord` inside a state message).
pub fn parse_error_record(data: &str) -> Result<ErrorInfo> {
    let _ = data;
    todo!("warden-psrp: parse_error_record")
}

/// The body of a WARNING_RECORD / VERBOSE_RECORD / DEBUG_RECORD (2.2.2.22-24): an
/// InformationalRecord with `InformationalRecord_Message` and no invocation info.
pub fn informational_record(message: &str) -> String {
    let _ = message;
    todo!("warden-psrp: informational_record")
}

/// The message of an InformationalRecord body.
pub fn parse_informational_record(data: &str) -> Result<String> {
    let _ = data;
    todo!("warden-psrp: parse_informational_record")
}
