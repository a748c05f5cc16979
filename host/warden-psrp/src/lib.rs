//! # warden-psrp: WS-Management and MS-PSRP, without I/O
//!
//! The wire format of Remote PowerShell (`docs/protocol/exo-protocol.md` §2.4), for both sides: the
//! client transport in `warden-exchange` and exosim's `/PowerShell-LiveID` endpoint. Bytes and
//! text in, typed values out, and back; sockets, HTTP, auth and timing belong to the callers.
//!
//! - [`fragment`]: PSRP fragments (MS-PSRP 2.2.4) and their reassembly;
//! - [`message`]: PSRP messages (destination, type, runspace-pool and pipeline ids, CLIXML data);
//! - [`clixml`]: PowerShell serialization (MS-PSRP 2.2.5) and its mapping to and from JSON;
//! - [`pipeline`]: the message bodies a runspace pool and a pipeline exchange;
//! - [`wsman`]: the SOAP 1.2 envelopes of WS-Management (MS-WSMV) that carry them.
//!
//! How a client uses it: build a [`message::Message`] per PSRP body ([`pipeline`] builders),
//! cut the encoded messages into fragments no larger than [`wsman::max_fragment_len`] of the
//! envelope size ([`fragment::fragment_all`] numbers object ids), wrap them in a request
//! ([`wsman::create_shell`], [`wsman::command`]); feed every answer's [`wsman::StreamChunk`]
//! data to one [`Defragmenter`] for the whole shell (a message may span Receives), decode the
//! messages and parse their bodies. A server does the mirror image with [`wsman::parse_request`]
//! and the answer builders; `examples/loopback.rs` is a toy one that pypsrp accepts.
//!
//! What it refuses: input over the size limits given to it, XML with a DTD or entity
//! declarations, fragments out of order, and CLIXML nested deeper than [`clixml::MAX_DEPTH`]. It
//! never evaluates anything: a command is a name plus parameters, never script text.
//!
//! What it bounds, so a hostile or broken peer cannot make it use unbounded memory or time:
//! XML elements with over 64 attributes, over 64 namespace bindings in scope, or documents of
//! over 500k elements; CLIXML expanding (through `<Ref>`/`<TNRef>` copies) past
//! [`clixml::MAX_VALUES`] values or [`clixml::MAX_EXPANDED_BYTES`] bytes, or with a type-name
//! list over [`clixml::MAX_TYPE_NAMES`]; and half-received messages holding together over
//! [`fragment::MAX_HELD_MESSAGE_LENS`] × the reassembler's message limit.
#![deny(missing_docs)]

pub mod clixml;
pub mod error;
pub mod fragment;
pub mod message;
pub mod pipeline;
pub mod wsman;
mod xml;

#[doc(hidden)]
pub mod fuzz;

pub use clixml::{PsObject, PsValue};
pub use error::{PsrpError, Result};
pub use fragment::{Defragmenter, fragment_message};
pub use message::{Destination, Message, MessageType};
