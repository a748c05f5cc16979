//! PSRP messages (MS-PSRP 2.2.1): `Destination u32 LE | MessageType u32 LE | RPID 16 | PID 16 |
//! Data`, the ids in .NET GUID byte order (`Uuid::to_bytes_le`), the data CLIXML in UTF-8 (a
//! BOM is accepted and dropped).

use crate::error::Result;
use uuid::Uuid;

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
    pub const SESSION_CAPABILITY: Self = Self(0x0001_0002);
    pub const INIT_RUNSPACEPOOL: Self = Self(0x0001_0004);
    pub const PUBLIC_KEY: Self = Self(0x0001_0005);
    pub const ENCRYPTED_SESSION_KEY: Self = Self(0x0001_0006);
    pub const PUBLIC_KEY_REQUEST: Self = Self(0x0001_0007);
    pub const CONNECT_RUNSPACEPOOL: Self = Self(0x0001_0008);
    pub const SET_MAX_RUNSPACES: Self = Self(0x0002_1002);
    pub const SET_MIN_RUNSPACES: Self = Self(0x0002_1003);
    pub const RUNSPACE_AVAILABILITY: Self = Self(0x0002_1004);
    pub const RUNSPACEPOOL_STATE: Self = Self(0x0002_1005);
    pub const CREATE_PIPELINE: Self = Self(0x0002_1006);
    pub const GET_AVAILABLE_RUNSPACES: Self = Self(0x0002_1007);
    pub const USER_EVENT: Self = Self(0x0002_1008);
    pub const APPLICATION_PRIVATE_DATA: Self = Self(0x0002_1009);
    pub const GET_COMMAND_METADATA: Self = Self(0x0002_100A);
    pub const RUNSPACEPOOL_INIT_DATA: Self = Self(0x0002_100B);
    pub const RESET_RUNSPACE_STATE: Self = Self(0x0002_100C);
    pub const RUNSPACEPOOL_HOST_CALL: Self = Self(0x0002_1100);
    pub const RUNSPACEPOOL_HOST_RESPONSE: Self = Self(0x0002_1101);
    pub const PIPELINE_INPUT: Self = Self(0x0004_1002);
    pub const END_OF_PIPELINE_INPUT: Self = Self(0x0004_1003);
    pub const PIPELINE_OUTPUT: Self = Self(0x0004_1004);
    pub const ERROR_RECORD: Self = Self(0x0004_1005);
    pub const PIPELINE_STATE: Self = Self(0x0004_1006);
    pub const DEBUG_RECORD: Self = Self(0x0004_1007);
    pub const VERBOSE_RECORD: Self = Self(0x0004_1008);
    pub const WARNING_RECORD: Self = Self(0x0004_1009);
    pub const PROGRESS_RECORD: Self = Self(0x0004_1010);
    pub const INFORMATION_RECORD: Self = Self(0x0004_1011);
    pub const PIPELINE_HOST_CALL: Self = Self(0x0004_1100);
    pub const PIPELINE_HOST_RESPONSE: Self = Self(0x0004_1101);

    /// The name MS-PSRP gives it, for logs and errors (`"UNKNOWN"` otherwise).
    pub fn name(self) -> &'static str {
        todo!("warden-psrp: MessageType::name")
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
        todo!("warden-psrp: Message::encode")
    }

    /// A message from its bytes (after reassembly).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let _ = bytes;
        todo!("warden-psrp: Message::decode")
    }
}
