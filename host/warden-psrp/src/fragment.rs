//! PSRP fragments (MS-PSRP 2.2.4): `ObjectId u64 BE | FragmentId u64 BE | flags u8 (0x1 start,
//! 0x2 end) | BlobLength u32 BE | Blob`. A message is cut into fragments that fit the peer's
//! envelope size; several fragments (of one or more messages) may travel in one stream chunk.
//!
//! Reassembly refuses a fragment id out of sequence, an end without a start, a blob length past
//! the data, and a message over the reassembler's size limit.

use crate::error::{PsrpError, Result};

/// Bytes of a fragment header.
pub const HEADER_LEN: usize = 21;

/// Cuts `message` into fragments of at most `max_fragment_len` bytes each, header included,
/// numbered from 0 under `object_id`. Each returned buffer is one encoded fragment.
///
/// A `max_fragment_len` below `HEADER_LEN + 1` is raised to it (one byte of blob per fragment),
/// so the message always goes out; an empty message is one start+end fragment with no blob.
pub fn fragment_message(object_id: u64, message: &[u8], max_fragment_len: usize) -> Vec<Vec<u8>> {
    let room = max_fragment_len.max(HEADER_LEN + 1) - HEADER_LEN;
    // A blob length is a u32 on the wire.
    let room = room.min(u32::MAX as usize);
    let mut chunks: Vec<&[u8]> = message.chunks(room).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, blob)| {
            let mut flags = 0u8;
            if i == 0 {
                flags |= FLAG_START;
            }
            if i == last {
                flags |= FLAG_END;
            }
            encode_fragment(object_id, i as u64, flags, blob)
        })
        .collect()
}

/// Start-of-message flag.
pub const FLAG_START: u8 = 0x1;
/// End-of-message flag.
pub const FLAG_END: u8 = 0x2;

/// One encoded fragment.
pub fn encode_fragment(object_id: u64, fragment_id: u64, flags: u8, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + blob.len());
    write_fragment(&mut out, object_id, fragment_id, flags, blob);
    out
}

/// Appends one encoded fragment to `out` (several fragments travel in one stream chunk).
///
/// `blob` must be shorter than 4 GiB, the most the header's 32-bit length can say: callers
/// cut messages first (`fragment_message` at its `max_fragment_len`, exosim's outbox at the
/// room left in its envelope).
/// A longer blob is a bug: it panics in debug builds and its length saturates otherwise.
pub fn write_fragment(out: &mut Vec<u8>, object_id: u64, fragment_id: u64, flags: u8, blob: &[u8]) {
    debug_assert!(
        u32::try_from(blob.len()).is_ok(),
        "PSRP fragment blob of {} bytes exceeds the 32-bit length",
        blob.len()
    );
    out.reserve(HEADER_LEN + blob.len());
    out.extend_from_slice(&object_id.to_be_bytes());
    out.extend_from_slice(&fragment_id.to_be_bytes());
    out.push(flags);
    // Saturate rather than wrap (see above).
    out.extend_from_slice(&u32::try_from(blob.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(blob);
}

/// Fragments `messages` (already encoded) with consecutive object ids from `first_object_id`
/// and concatenates them: what one `creationXml`, `Arguments` or stream element carries.
pub fn fragment_all(
    first_object_id: u64,
    messages: &[Vec<u8>],
    max_fragment_len: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        for f in fragment_message(first_object_id + i as u64, m, max_fragment_len) {
            out.extend_from_slice(&f);
        }
    }
    out
}

/// One decoded fragment header plus blob, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// `ObjectId`.
    pub object_id: u64,
    /// `FragmentId`.
    pub fragment_id: u64,
    /// Start flag.
    pub start: bool,
    /// End flag.
    pub end: bool,
    /// The blob.
    pub blob: &'a [u8],
}

/// Splits concatenated fragments without reassembling them.
pub fn split_fragments(mut data: &[u8]) -> Result<Vec<Fragment<'_>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (fragment, rest) = read_fragment(data)?;
        out.push(fragment);
        data = rest;
    }
    Ok(out)
}

fn read_fragment(data: &[u8]) -> Result<(Fragment<'_>, &[u8])> {
    let Some((header, rest)) = data.split_first_chunk::<HEADER_LEN>() else {
        return Err(PsrpError::Fragment(format!(
            "{} bytes left, a header needs {HEADER_LEN}",
            data.len()
        )));
    };
    let object_id = u64::from_be_bytes(take::<8>(header, 0));
    let fragment_id = u64::from_be_bytes(take::<8>(header, 8));
    let flags = header[16];
    let len = u32::from_be_bytes(take::<4>(header, 17)) as usize;
    if flags & !(FLAG_START | FLAG_END) != 0 {
        return Err(PsrpError::Fragment(format!("unknown flags {flags:#04x}")));
    }
    if len > rest.len() {
        return Err(PsrpError::Fragment(format!(
            "blob of {len} bytes but {} left (truncated)",
            rest.len()
        )));
    }
    let (blob, rest) = rest.split_at(len);
    Ok((
        Fragment {
            object_id,
            fragment_id,
            start: flags & FLAG_START != 0,
            end: flags & FLAG_END != 0,
            blob,
        },
        rest,
    ))
}

fn take<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// A message being reassembled.
#[derive(Debug)]
struct Partial {
    object_id: u64,
    next_fragment: u64,
    data: Vec<u8>,
}

/// Reassembles messages from a stream of fragments.
///
/// Fragments of different objects may interleave; within one object they must come in order,
/// the first with the start flag. An object id may not be reused while its message is open.
/// The open messages together hold at most [`MAX_HELD_MESSAGE_LENS`] × `max_message_len`
/// bytes.
#[derive(Debug)]
pub struct Defragmenter {
    max_message_len: usize,
    partial: Vec<Partial>,
    /// Bytes held across `partial`.
    held: usize,
}

/// How many messages may be half received at once (interleaving is rare; this bounds memory).
pub const MAX_OPEN_MESSAGES: usize = 16;

/// How many `max_message_len`s of bytes the half-received messages may hold together: one, so
/// interleaving never multiplies the reassembler's memory by [`MAX_OPEN_MESSAGES`] (a hostile
/// server could otherwise make it hold 16 × the message limit). Servers interleave rarely and
/// with small messages, so one message's worth is plenty.
pub const MAX_HELD_MESSAGE_LENS: usize = 1;

impl Defragmenter {
    /// A reassembler that refuses messages over `max_message_len` bytes.
    pub fn new(max_message_len: usize) -> Self {
        Self {
            max_message_len,
            partial: Vec::new(),
            held: 0,
        }
    }

    /// Takes one or more concatenated fragments; returns the messages they completed, in order.
    ///
    /// On error the reassembler's state is unspecified for the offending object; the stream
    /// should be abandoned.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut done = Vec::new();
        let mut data = data;
        while !data.is_empty() {
            let (f, rest) = read_fragment(data)?;
            data = rest;
            let open = self.partial.iter().position(|p| p.object_id == f.object_id);
            match (open, f.start) {
                (Some(_), true) => {
                    return Err(PsrpError::Fragment(format!(
                        "object {} restarted while its message is open",
                        f.object_id
                    )));
                }
                (None, false) => {
                    return Err(PsrpError::Fragment(format!(
                        "fragment {} of object {} without a start fragment",
                        f.fragment_id, f.object_id
                    )));
                }
                (None, true) => {
                    if f.fragment_id != 0 {
                        return Err(PsrpError::Fragment(format!(
                            "start fragment of object {} has id {}, expected 0",
                            f.object_id, f.fragment_id
                        )));
                    }
                    self.check_len(f.blob.len(), f.object_id)?;
                    if f.end {
                        done.push(f.blob.to_vec());
                    } else {
                        if self.partial.len() >= MAX_OPEN_MESSAGES {
                            return Err(PsrpError::TooLarge(format!(
                                "more than {MAX_OPEN_MESSAGES} messages open at once"
                            )));
                        }
                        self.hold(f.blob.len())?;
                        self.partial.push(Partial {
                            object_id: f.object_id,
                            next_fragment: 1,
                            data: f.blob.to_vec(),
                        });
                    }
                }
                (Some(i), false) => {
                    let p = &self.partial[i];
                    if f.fragment_id != p.next_fragment {
                        return Err(PsrpError::Fragment(format!(
                            "object {} fragment {} out of sequence, expected {}",
                            f.object_id, f.fragment_id, p.next_fragment
                        )));
                    }
                    self.check_len(p.data.len().saturating_add(f.blob.len()), f.object_id)?;
                    if f.end {
                        let mut p = self.partial.remove(i);
                        self.held -= p.data.len();
                        p.data.extend_from_slice(f.blob);
                        done.push(p.data);
                    } else {
                        self.hold(f.blob.len())?;
                        let p = &mut self.partial[i];
                        p.data.extend_from_slice(f.blob);
                        p.next_fragment = p.next_fragment.saturating_add(1);
                    }
                }
            }
        }
        Ok(done)
    }

    fn check_len(&self, len: usize, object_id: u64) -> Result<()> {
        if len > self.max_message_len {
            return Err(PsrpError::TooLarge(format!(
                "message of object {object_id} over {} bytes",
                self.max_message_len
            )));
        }
        Ok(())
    }

    /// Counts `len` more bytes held in open messages, refusing past the limit.
    fn hold(&mut self, len: usize) -> Result<()> {
        let limit = self.max_message_len.saturating_mul(MAX_HELD_MESSAGE_LENS);
        let held = self.held.saturating_add(len);
        if held > limit {
            return Err(PsrpError::TooLarge(format!(
                "open messages holding over {limit} bytes together (MAX_HELD_MESSAGE_LENS)"
            )));
        }
        self.held = held;
        Ok(())
    }

    /// Whether a message is half received.
    pub fn is_partial(&self) -> bool {
        !self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian() {
        let f = fragment_message(0x0102, b"abc", 100);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0],
            [
                0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, b'a', b'b', b'c'
            ]
        );
    }

    #[test]
    fn cuts_to_the_limit_and_reassembles() {
        let msg: Vec<u8> = (0..100u8).collect();
        let frags = fragment_message(7, &msg, HEADER_LEN + 30);
        assert_eq!(frags.len(), 4);
        assert!(frags.iter().all(|f| f.len() <= HEADER_LEN + 30));
        assert_eq!(frags[0][16], FLAG_START);
        assert_eq!(frags[1][16], 0);
        assert_eq!(frags[3][16], FLAG_END);
        assert_eq!(&frags[3][8..16], &3u64.to_be_bytes());
        let mut d = Defragmenter::new(1000);
        assert!(d.push(&frags[0]).unwrap().is_empty());
        assert!(d.is_partial());
        let rest: Vec<u8> = frags[1..].concat();
        assert_eq!(d.push(&rest).unwrap(), vec![msg]);
        assert!(!d.is_partial());
    }

    #[test]
    fn tiny_limit_and_empty_message() {
        let frags = fragment_message(1, b"xy", 3);
        assert_eq!(frags.len(), 2);
        assert!(frags.iter().all(|f| f.len() == HEADER_LEN + 1));
        let empty = fragment_message(9, b"", 100);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].len(), HEADER_LEN);
        assert_eq!(empty[0][16], FLAG_START | FLAG_END);
        let mut d = Defragmenter::new(10);
        assert_eq!(d.push(&empty[0]).unwrap(), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn interleaved_objects() {
        let a = fragment_message(1, b"aaaaaa", HEADER_LEN + 2);
        let b = fragment_message(2, b"bbbb", HEADER_LEN + 2);
        let stream = [
            a[0].clone(),
            b[0].clone(),
            a[1].clone(),
            b[1].clone(),
            a[2].clone(),
        ]
        .concat();
        let mut d = Defragmenter::new(100);
        assert_eq!(
            d.push(&stream).unwrap(),
            vec![b"bbbb".to_vec(), b"aaaaaa".to_vec()]
        );
        assert_eq!(
            fragment_all(1, &[b"x".to_vec(), b"y".to_vec()], 100).len(),
            2 * (HEADER_LEN + 1)
        );
    }

    #[test]
    fn refusals() {
        let frags = fragment_message(1, b"abcdef", HEADER_LEN + 2);
        // Out of sequence.
        let mut d = Defragmenter::new(100);
        let err = d
            .push(&[frags[0].clone(), frags[2].clone()].concat())
            .unwrap_err();
        assert!(matches!(err, PsrpError::Fragment(m) if m.contains("out of sequence")));
        // Continuation / end without start.
        let mut d = Defragmenter::new(100);
        assert!(
            matches!(d.push(&frags[2]), Err(PsrpError::Fragment(m)) if m.contains("without a start"))
        );
        // Restart while open.
        let mut d = Defragmenter::new(100);
        assert!(
            d.push(&[frags[0].clone(), frags[0].clone()].concat())
                .is_err()
        );
        // Truncated blob and header.
        let mut d = Defragmenter::new(100);
        assert!(
            matches!(d.push(&frags[0][..HEADER_LEN + 1]), Err(PsrpError::Fragment(m)) if m.contains("truncated"))
        );
        assert!(Defragmenter::new(100).push(&frags[0][..5]).is_err());
        // Over the limit, whole or accumulated.
        assert!(matches!(
            Defragmenter::new(5).push(&frags.concat()),
            Err(PsrpError::TooLarge(_))
        ));
        let one = fragment_message(1, b"abcdef", 100);
        assert!(matches!(
            Defragmenter::new(5).push(&one[0]),
            Err(PsrpError::TooLarge(_))
        ));
        // Unknown flags.
        let mut bad = one[0].clone();
        bad[16] = 0x7;
        assert!(Defragmenter::new(100).push(&bad).is_err());
        // Start with a non-zero id.
        let mut bad = one[0].clone();
        bad[15] = 1;
        assert!(Defragmenter::new(100).push(&bad).is_err());
    }

    #[test]
    fn open_messages_share_one_message_limit() {
        // Four open messages of 30 bytes each: 120 bytes held. With a 100-byte message limit
        // each is fine alone, but together they are over it.
        let starts = |n: u64| -> Vec<u8> {
            (0..n)
                .map(|id| encode_fragment(id, 0, FLAG_START, &[b'x'; 30]))
                .collect::<Vec<_>>()
                .concat()
        };
        let err = Defragmenter::new(100).push(&starts(4)).unwrap_err();
        assert!(matches!(err, PsrpError::TooLarge(m) if m.contains("MAX_HELD_MESSAGE_LENS")));
        // Three (90 bytes) are under it, and finishing one frees its share.
        let mut d = Defragmenter::new(100);
        assert!(d.push(&starts(3)).unwrap().is_empty());
        let end = encode_fragment(0, 1, FLAG_END, &[b'y'; 70]);
        assert_eq!(d.push(&end).unwrap()[0].len(), 100);
        assert!(
            d.push(&encode_fragment(3, 0, FLAG_START, &[b'z'; 30]))
                .is_ok()
        );
        // Continuations count too.
        let more = encode_fragment(1, 1, 0, &[b'w'; 11]);
        assert!(matches!(d.push(&more), Err(PsrpError::TooLarge(_))));
    }
}
