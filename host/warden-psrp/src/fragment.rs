//! PSRP fragments (MS-PSRP 2.2.4): `ObjectId u64 BE | FragmentId u64 BE | flags u8 (0x1 start,
//! 0x2 end) | BlobLength u32 BE | Blob`. A message is cut into fragments that fit the peer's
//! envelope size; several fragments (of one or more messages) may travel in one stream chunk.
//!
//! Reassembly refuses a fragment id out of sequence, an end without a start, a blob length past
//! the data, and a message over the reassembler's size limit.

use crate::error::Result;

/// Bytes of a fragment header.
pub const HEADER_LEN: usize = 21;

/// Cuts `message` into fragments of at most `max_fragment_len` bytes each, header included,
/// numbered from 0 under `object_id`. Each returned buffer is one encoded fragment.
pub fn fragment_message(object_id: u64, message: &[u8], max_fragment_len: usize) -> Vec<Vec<u8>> {
    let _ = (object_id, message, max_fragment_len);
    todo!("warden-psrp: fragment_message")
}

/// Reassembles messages from a stream of fragments.
#[derive(Debug)]
pub struct Defragmenter {
    max_message_len: usize,
}

impl Defragmenter {
    /// A reassembler that refuses messages over `max_message_len` bytes.
    pub fn new(max_message_len: usize) -> Self {
        Self { max_message_len }
    }

    /// Takes one or more concatenated fragments; returns the messages they completed, in order.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        let _ = (data, self.max_message_len);
        todo!("warden-psrp: Defragmenter::push")
    }

    /// Whether a message is half received.
    pub fn is_partial(&self) -> bool {
        todo!("warden-psrp: Defragmenter::is_partial")
    }
}
