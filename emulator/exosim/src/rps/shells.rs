//! Open shells (runspace pools) and their pipelines: who owns each, what each still has to send,
//! and how those messages are cut into fragments that fit the client's envelope.
//!
//! A shell belongs to the app and tenant that created it; [`Shells::get`] hands it to no one
//! else. Each app may hold at most a configured number of shells at once. Output waits in a
//! per-shell or per-pipeline outbox of whole PSRP messages; a message is cut into fragments only
//! as a Receive takes it, to fit that Receive's `MaxEnvelopeSize`, so a client that raises its
//! envelope size after the handshake (pypsrp does, to 512000) gets larger fragments from then on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use uuid::Uuid;
use warden_psrp::fragment::{FLAG_END, FLAG_START, HEADER_LEN, write_fragment};
use warden_psrp::{Defragmenter, Message};

use crate::exchange::auth::Caller;
use crate::exchange::cmdlets::{Bound, Spec};

/// Largest PSRP message reassembled from a client (a CREATE_PIPELINE with its parameters): the
/// same bound as an InvokeCommand body.
pub(crate) const MAX_MESSAGE: usize = 4 << 20;

/// Pipelines one shell keeps; past this, finished pipelines the client never terminated are
/// forgotten, oldest first.
const MAX_PIPELINES: usize = 64;

/// Who may use a shell: the app (or on-premises user) and the tenant it acts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Owner {
    pub app: String,
    pub tenant_id: String,
}

/// An authenticated caller of the endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub owner: Owner,
    pub caller: Caller,
}

/// A message partly sent: its bytes, how far it went, its ObjectId and next FragmentId.
#[derive(Debug)]
struct Sending {
    bytes: Vec<u8>,
    offset: usize,
    object_id: u64,
    fragment_id: u64,
}

/// Messages waiting for a Receive, and the one being sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    messages: VecDeque<Vec<u8>>,
    sending: Option<Sending>,
}

impl Outbox {
    pub(crate) fn push(&mut self, message: &Message) {
        self.messages.push_back(message.encode());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.sending.is_none()
    }

    /// Drops whole messages not yet started (a stopped pipeline's unsent output); a message
    /// already partly sent is finished, so the client can complete it.
    pub(crate) fn drop_unsent(&mut self) {
        self.messages.clear();
    }

    /// Fragments totalling at most `budget` bytes (headers included), filling the answer as
    /// WinRM does: whole messages while they fit, then the start of the next one, cut to the
    /// room left. `object_ids` numbers the messages. Always sends something when anything waits.
    pub(crate) fn take(&mut self, budget: usize, object_ids: &mut u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let room = budget.saturating_sub(out.len());
            // A fragment carries at least one byte; an almost full answer stays as it is.
            if room <= HEADER_LEN && !out.is_empty() {
                break;
            }
            if self.sending.is_none() {
                let Some(bytes) = self.messages.pop_front() else {
                    break;
                };
                *object_ids += 1;
                self.sending = Some(Sending {
                    bytes,
                    offset: 0,
                    object_id: *object_ids,
                    fragment_id: 0,
                });
            }
            let Some(sending) = self.sending.as_mut() else {
                break;
            };
            let left = sending.bytes.len() - sending.offset;
            let take = left.min(room.saturating_sub(HEADER_LEN).max(1));
            let mut flags = 0;
            if sending.fragment_id == 0 {
                flags |= FLAG_START;
            }
            if take == left {
                flags |= FLAG_END;
            }
            let blob = &sending.bytes[sending.offset..sending.offset + take];
            write_fragment(
                &mut out,
                sending.object_id,
                sending.fragment_id,
                flags,
                blob,
            );
            sending.offset += take;
            sending.fragment_id += 1;
            if sending.offset == sending.bytes.len() {
                self.sending = None;
            }
        }
        out
    }
}

/// A cmdlet being streamed page by page.
#[derive(Debug)]
pub(crate) struct Job {
    pub spec: &'static Spec,
    pub args: Bound,
    pub tenant_id: String,
    /// Key of the last object already produced.
    pub after: Option<u64>,
    /// Objects produced so far.
    pub returned: u64,
    /// `ResultSize` bound, `None` for Unlimited.
    pub bound: Option<u64>,
}

/// Where a pipeline is.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for the rest of CREATE_PIPELINE (sent with Send).
    Assembling,
    /// Producing output; the next page runs when the outbox is empty.
    Running(Box<Job>),
    /// Its PIPELINE_STATE is queued; nothing more will be produced.
    Finished,
}

/// One pipeline (WinRS command).
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// The PSRP pipeline id (from CREATE_PIPELINE), for the messages sent back.
    pub pid: Option<Uuid>,
    pub defrag: Defragmenter,
    pub phase: Phase,
    pub outbox: Outbox,
    /// Whether `CommandState Done` went out.
    pub done_sent: bool,
    /// The short exception class it failed with, if it failed.
    pub failure: Option<String>,
    /// Creation order, to forget the oldest first.
    pub serial: u64,
}

/// One shell (runspace pool).
#[derive(Debug)]
pub(crate) struct Shell {
    pub id: Uuid,
    /// The PSRP runspace pool id (from the creation messages).
    pub rpid: Uuid,
    /// Reassembles what the client sends on the shell's own `pr` stream.
    pub defrag: Defragmenter,
    pub outbox: Outbox,
    pub pipelines: HashMap<Uuid, Pipeline>,
    /// Numbers the messages this shell sends (fragment ObjectId).
    pub object_ids: u64,
    next_serial: u64,
    /// Deleted: only the Closed state is left to hand to a Receive already waiting.
    pub closed: bool,
}

impl Shell {
    /// Registers pipeline `command_id`; forgets old finished pipelines past [`MAX_PIPELINES`].
    pub(crate) fn add_pipeline(&mut self, command_id: Uuid) -> &mut Pipeline {
        if self.pipelines.len() >= MAX_PIPELINES {
            let mut finished: Vec<(u64, Uuid)> = self
                .pipelines
                .iter()
                .filter(|(_, p)| matches!(p.phase, Phase::Finished))
                .map(|(id, p)| (p.serial, *id))
                .collect();
            finished.sort_unstable();
            for (_, id) in finished
                .iter()
                .take(self.pipelines.len() + 1 - MAX_PIPELINES)
            {
                self.pipelines.remove(id);
            }
        }
        self.next_serial += 1;
        self.pipelines.entry(command_id).or_insert(Pipeline {
            pid: None,
            defrag: Defragmenter::new(MAX_MESSAGE),
            phase: Phase::Assembling,
            outbox: Outbox::default(),
            done_sent: false,
            failure: None,
            serial: self.next_serial,
        })
    }
}

/// A registered shell: its owner (checked without waiting for the shell), its state, and a
/// wake-up for Receives waiting on it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub owner: Owner,
    pub shell: tokio::sync::Mutex<Shell>,
    pub notify: Notify,
}

/// Why a shell could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateRefused {
    /// The app already holds this many shells.
    TooMany(usize),
    /// The proposed ShellId is taken.
    Exists,
}

/// Every open shell of one emulator.
#[derive(Debug)]
pub(crate) struct Shells {
    map: Mutex<HashMap<Uuid, Arc<Slot>>>,
    max_per_owner: usize,
}

impl Shells {
    pub(crate) fn new(max_per_owner: usize) -> Self {
        Shells {
            map: Mutex::new(HashMap::new()),
            max_per_owner: max_per_owner.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Slot>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new, opened shell for `owner`.
    pub(crate) fn create(
        &self,
        owner: &Owner,
        id: Uuid,
        rpid: Uuid,
        outbox: Outbox,
    ) -> Result<(), CreateRefused> {
        let mut map = self.lock();
        if map.contains_key(&id) {
            return Err(CreateRefused::Exists);
        }
        if map.values().filter(|s| s.owner == *owner).count() >= self.max_per_owner {
            return Err(CreateRefused::TooMany(self.max_per_owner));
        }
        map.insert(
            id,
            Arc::new(Slot {
                owner: owner.clone(),
                shell: tokio::sync::Mutex::new(Shell {
                    id,
                    rpid,
                    defrag: Defragmenter::new(MAX_MESSAGE),
                    outbox,
                    pipelines: HashMap::new(),
                    object_ids: 0,
                    next_serial: 0,
                    closed: false,
                }),
                notify: Notify::new(),
            }),
        );
        Ok(())
    }

    /// The shell `id` if `owner` owns it; another owner gets `None`, as for an unknown id.
    pub(crate) fn get(&self, owner: &Owner, id: Uuid) -> Option<Arc<Slot>> {
        self.lock().get(&id).filter(|s| s.owner == *owner).cloned()
    }

    /// Unregisters shell `id` (new requests no longer find it).
    pub(crate) fn remove(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    /// Forgets every shell (the service went down).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// How many shells are open.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_psrp::fragment::split_fragments;
    use warden_psrp::{Destination, MessageType};

    fn message(len: usize) -> Message {
        Message {
            destination: Destination::Client,
            message_type: MessageType::PIPELINE_OUTPUT,
            runspace_pool_id: Uuid::nil(),
            pipeline_id: Some(Uuid::nil()),
            data: "x".repeat(len),
        }
    }

    #[test]
    fn take_packs_whole_messages_and_cuts_big_ones_within_the_budget() {
        let mut outbox = Outbox::default();
        let mut ids = 0;
        for _ in 0..3 {
            outbox.push(&message(10));
        }
        outbox.push(&message(5000));
        let first = outbox.take(1000, &mut ids);
        assert!(first.len() <= 1000);
        assert_eq!(first.len(), 1000, "the answer is filled");
        let fragments = split_fragments(&first).unwrap();
        // Three small messages whole, then the start of the big one.
        assert_eq!(fragments.len(), 4);
        assert!(fragments[..3].iter().all(|f| f.start && f.end));
        assert!(fragments[3].start && !fragments[3].end);
        let mut rest = 0;
        let mut big = fragments[3].blob.to_vec();
        // A smaller envelope from now on (fragments are cut when sent, with the current one).
        while !outbox.is_empty() {
            let chunk = outbox.take(500, &mut ids);
            assert!(chunk.len() <= 500 && !chunk.is_empty());
            let pieces = split_fragments(&chunk).unwrap();
            assert!(pieces.iter().all(|f| f.object_id == 4 && !f.start));
            big.extend(pieces.iter().flat_map(|f| f.blob.iter().copied()));
            rest += 1;
        }
        assert_eq!(big, message(5000).encode());
        assert_eq!(rest, 9);
        assert_eq!(ids, 4);
    }

    #[test]
    fn shells_are_their_owners_and_capped() {
        let shells = Shells::new(1);
        let a = Owner {
            app: "a".into(),
            tenant_id: "t".into(),
        };
        let b = Owner {
            app: "b".into(),
            tenant_id: "t".into(),
        };
        let id = Uuid::new_v4();
        shells
            .create(&a, id, Uuid::nil(), Outbox::default())
            .unwrap();
        assert!(shells.get(&a, id).is_some());
        assert!(shells.get(&b, id).is_none());
        assert_eq!(
            shells.create(&a, Uuid::new_v4(), Uuid::nil(), Outbox::default()),
            Err(CreateRefused::TooMany(1))
        );
        assert_eq!(
            shells.create(&b, id, Uuid::nil(), Outbox::default()),
            Err(CreateRefused::Exists)
        );
        shells
            .create(&b, Uuid::new_v4(), Uuid::nil(), Outbox::default())
            .unwrap();
        assert_eq!(shells.count(), 2);
    }
}
