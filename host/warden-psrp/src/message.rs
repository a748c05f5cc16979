//! PSRP messages (MS-PSRP 2.2.1): `Destination u32 LE | MessageType u32 LE | RPID 16 | PID 16 |
//! Data`, the ids in .NET GUID byte order (`Uuid::to_bytes_le`), the data CLIXML in UTF-8 (a
//! BOM is accepted and dropped).
//!
//! Decoding refuses fewer than 40 bytes, a destination other than 1 or 2 and data that is not
//! UTF-8; an unknown message type is kept. Windows servers start their bodies with a BOM and send
//! SESSION_CAPABILITY with a nil runspace-pool id; clients do neither.

use crate::error::{PsrpError, Result};
use uuid::Uuid;

/// Bytes of a message header (destination, type, two GUIDs).
pub const HEADER_LEN: usize = 40;

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 1.
    Client,
    /// 2.
    Server,
}

/// A message type (MS-PSRP 2.2.1); unknown values are kept, not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType(pub u32);

impl MessageType {
    /// Protocol and serialization versions, sent first by both sides.
    pub const SESSION_CAPABILITY: Self = Self(0x0001_0002);
    /// Client: open a runspace pool with these bounds and host info.
    pub const INIT_RUNSPACEPOOL: Self = Self(0x0001_0004);
    /// Client: its public key for session-key exchange.
    pub const PUBLIC_KEY: Self = Self(0x0001_0005);
    /// Server: the session key, encrypted to the client's key.
    pub const ENCRYPTED_SESSION_KEY: Self = Self(0x0001_0006);
    /// Server: asks the client for its public key.
    pub const PUBLIC_KEY_REQUEST: Self = Self(0x0001_0007);
    /// Client: reconnect to a disconnected pool.
    pub const CONNECT_RUNSPACEPOOL: Self = Self(0x0001_0008);
    /// Client: change the pool's maximum runspaces.
    pub const SET_MAX_RUNSPACES: Self = Self(0x0002_1002);
    /// Client: change the pool's minimum runspaces.
    pub const SET_MIN_RUNSPACES: Self = Self(0x0002_1003);
    /// Server: answer to a set-max/min or get-available request.
    pub const RUNSPACE_AVAILABILITY: Self = Self(0x0002_1004);
    /// Server: the pool's state changed.
    pub const RUNSPACEPOOL_STATE: Self = Self(0x0002_1005);
    /// Client: run a pipeline of commands.
    pub const CREATE_PIPELINE: Self = Self(0x0002_1006);
    /// Client: how many runspaces are free.
    pub const GET_AVAILABLE_RUNSPACES: Self = Self(0x0002_1007);
    /// Server: a PowerShell event for the client.
    pub const USER_EVENT: Self = Self(0x0002_1008);
    /// Server: application data sent when the pool opens.
    pub const APPLICATION_PRIVATE_DATA: Self = Self(0x0002_1009);
    /// Client: describe commands matching a name.
    pub const GET_COMMAND_METADATA: Self = Self(0x0002_100A);
    /// Client: minimum and maximum runspaces on reconnect.
    pub const RUNSPACEPOOL_INIT_DATA: Self = Self(0x0002_100B);
    /// Client: reset the runspace's state.
    pub const RESET_RUNSPACE_STATE: Self = Self(0x0002_100C);
    /// Server: a host method call on the pool's host.
    pub const RUNSPACEPOOL_HOST_CALL: Self = Self(0x0002_1100);
    /// Client: the answer to a pool host call.
    pub const RUNSPACEPOOL_HOST_RESPONSE: Self = Self(0x0002_1101);
    /// Client: one input object for a running pipeline.
    pub const PIPELINE_INPUT: Self = Self(0x0004_1002);
    /// Client: no more pipeline input.
    pub const END_OF_PIPELINE_INPUT: Self = Self(0x0004_1003);
    /// Server: one output object of a pipeline.
    pub const PIPELINE_OUTPUT: Self = Self(0x0004_1004);
    /// Server: a non-terminating error record.
    pub const ERROR_RECORD: Self = Self(0x0004_1005);
    /// Server: the pipeline's state changed; a failure carries its error.
    pub const PIPELINE_STATE: Self = Self(0x0004_1006);
    /// Server: a debug-stream record.
    pub const DEBUG_RECORD: Self = Self(0x0004_1007);
    /// Server: a verbose-stream record.
    pub const VERBOSE_RECORD: Self = Self(0x0004_1008);
    /// Server: a warning-stream record.
    pub const WARNING_RECORD: Self = Self(0x0004_1009);
    /// Server: a progress record.
    pub const PROGRESS_RECORD: Self = Self(0x0004_1010);
    /// Server: an information-stream record.
    pub const INFORMATION_RECORD: Self = Self(0x0004_1011);
    /// Server: a host method call on the pipeline's host.
    pub const PIPELINE_HOST_CALL: Self = Self(0x0004_1100);
    /// Client: the answer to a pipeline host call.
    pub const PIPELINE_HOST_RESPONSE: Self = Self(0x0004_1101);

    /// The name MS-PSRP gives it, for logs and errors (`"UNKNOWN"` otherwise).
    pub fn name(self) -> &'static str {
        match self {
            Self::SESSION_CAPABILITY => "SESSION_CAPABILITY",
            Self::INIT_RUNSPACEPOOL => "INIT_RUNSPACEPOOL",
            Self::PUBLIC_KEY => "PUBLIC_KEY",
            Self::ENCRYPTED_SESSION_KEY => "ENCRYPTED_SESSION_KEY",
            Self::PUBLIC_KEY_REQUEST => "PUBLIC_KEY_REQUEST",
            Self::CONNECT_RUNSPACEPOOL => "CONNECT_RUNSPACEPOOL",
            Self::SET_MAX_RUNSPACES => "SET_MAX_RUNSPACES",
            Self::SET_MIN_RUNSPACES => "SET_MIN_RUNSPACES",
            Self::RUNSPACE_AVAILABILITY => "RUNSPACE_AVAILABILITY",
            Self::RUNSPACEPOOL_STATE => "RUNSPACEPOOL_STATE",
            Self::CREATE_PIPELINE => "CREATE_PIPELINE",
            Self::GET_AVAILABLE_RUNSPACES => "GET_AVAILABLE_RUNSPACES",
            Self::USER_EVENT => "USER_EVENT",
            Self::APPLICATION_PRIVATE_DATA => "APPLICATION_PRIVATE_DATA",
            Self::GET_COMMAND_METADATA => "GET_COMMAND_METADATA",
            Self::RUNSPACEPOOL_INIT_DATA => "RUNSPACEPOOL_INIT_DATA",
            Self::RESET_RUNSPACE_STATE => "RESET_RUNSPACE_STATE",
            Self::RUNSPACEPOOL_HOST_CALL => "RUNSPACEPOOL_HOST_CALL",
            Self::RUNSPACEPOOL_HOST_RESPONSE => "RUNSPACEPOOL_HOST_RESPONSE",
            Self::PIPELINE_INPUT => "PIPELINE_INPUT",
            Self::END_OF_PIPELINE_INPUT => "END_OF_PIPELINE_INPUT",
            Self::PIPELINE_OUTPUT => "PIPELINE_OUTPUT",
            Self::ERROR_RECORD => "ERROR_RECORD",
            Self::PIPELINE_STATE => "PIPELINE_STATE",
            Self::DEBUG_RECORD => "DEBUG_RECORD",
            Self::VERBOSE_RECORD => "VERBOSE_RECORD",
            Self::WARNING_RECORD => "WARNING_RECORD",
            Self::PROGRESS_RECORD => "PROGRESS_RECORD",
            Self::INFORMATION_RECORD => "INFORMATION_RECORD",
            Self::PIPELINE_HOST_CALL => "PIPELINE_HOST_CALL",
            Self::PIPELINE_HOST_RESPONSE => "PIPELINE_HOST_RESPONSE",
            _ => "UNKNOWN",
        }
    }
}

/// One PSRP message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who it is for.
    pub destination: Destination,
    /// Its type.
    pub message_type: MessageType,
    /// The runspace pool.
    pub runspace_pool_id: Uuid,
    /// The pipeline, `None` (nil on the wire) for runspace-pool messages.
    pub pipeline_id: Option<Uuid>,
    /// The CLIXML body, without BOM.
    pub data: String,
}

impl Message {
    /// The bytes of the message (before fragmenting).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        let destination: u32 = match self.destination {
            Destination::Client => 1,
            Destination::Server => 2,
        };
        out.extend_from_slice(&destination.to_le_bytes());
        out.extend_from_slice(&self.message_type.0.to_le_bytes());
        out.extend_from_slice(&self.runspace_pool_id.to_bytes_le());
        out.extend_from_slice(&self.pipeline_id.unwrap_or(Uuid::nil()).to_bytes_le());
        out.extend_from_slice(self.data.as_bytes());
        out
    }

    /// A message from its bytes (after reassembly).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let Some((header, data)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(PsrpError::Message(format!(
                "{} bytes, a header needs {HEADER_LEN}",
                bytes.len()
            )));
        };
        let destination = match u32::from_le_bytes([header[0], header[1], header[2], header[3]]) {
            1 => Destination::Client,
            2 => Destination::Server,
            other => return Err(PsrpError::Message(format!("unknown destination {other}"))),
        };
        let message_type = MessageType(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        let mut rpid = [0u8; 16];
        rpid.copy_from_slice(&header[8..24]);
        let mut pid = [0u8; 16];
        pid.copy_from_slice(&header[24..40]);
        let pipeline_id = Uuid::from_bytes_le(pid);
        let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
        let data = std::str::from_utf8(data).map_err(|e| {
            PsrpError::Message(format!(
                "{} data is not UTF-8 (at byte {})",
                message_type.name(),
                e.valid_up_to()
            ))
        })?;
        Ok(Self {
            destination,
            message_type,
            runspace_pool_id: Uuid::from_bytes_le(rpid),
            pipeline_id: (!pipeline_id.is_nil()).then_some(pipeline_id),
            data: data.to_owned(),
        })
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#010x})", self.name(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_little_endian_with_dotnet_guids() {
        let rpid = Uuid::parse_str("76056a84-51dc-4f24-9262-ca2a55464b2b").unwrap();
        let m = Message {
            destination: Destination::Server,
            message_type: MessageType::INIT_RUNSPACEPOOL,
            runspace_pool_id: rpid,
            pipeline_id: None,
            data: "<Obj/>".into(),
        };
        let bytes = m.encode();
        assert_eq!(&bytes[..8], &[2, 0, 0, 0, 4, 0, 1, 0]);
        // .NET order: the first three groups little-endian.
        assert_eq!(&bytes[8..12], &[0x84, 0x6a, 0x05, 0x76]);
        assert_eq!(&bytes[24..40], &[0u8; 16]);
        assert_eq!(&bytes[40..], b"<Obj/>");
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn pipeline_id_bom_and_refusals() {
        let pid = Uuid::from_u128(0x1234);
        let m = Message {
            destination: Destination::Client,
            message_type: MessageType(0xdead),
            runspace_pool_id: Uuid::from_u128(1),
            pipeline_id: Some(pid),
            data: String::new(),
        };
        let mut bytes = m.encode();
        assert_eq!(Message::decode(&bytes).unwrap().pipeline_id, Some(pid));
        assert_eq!(
            Message::decode(&bytes).unwrap().message_type.name(),
            "UNKNOWN"
        );
        bytes.extend_from_slice(b"\xEF\xBB\xBF<S>x</S>");
        assert_eq!(Message::decode(&bytes).unwrap().data, "<S>x</S>");
        bytes.push(0xff);
        assert!(
            matches!(Message::decode(&bytes), Err(PsrpError::Message(e)) if e.contains("UTF-8"))
        );
        assert!(Message::decode(&bytes[..39]).is_err());
        let mut bad = m.encode();
        bad[0] = 3;
        assert!(Message::decode(&bad).is_err());
        assert_eq!(MessageType::PIPELINE_STATE.name(), "PIPELINE_STATE");
        assert_eq!(
            MessageType::PIPELINE_STATE.to_string(),
            "PIPELINE_STATE (0x00041006)"
        );
    }
}
