//! Open shells (runspace pools) and their pipelines: who owns each, what each still has to send,
//! and how those messages are cut into fragments that fit the client's envelope.
//!
//! A shell belongs to the app and tenant that created it; [`Shells::get`] hands it to no one
//! else. Each app may hold at most a configured number of shells at once. Output waits in a
//! per-shell or per-pipeline outbox of whole PSRP messages; a message is fragmented only when a
//! Receive takes it, with that Receive's `MaxEnvelopeSize`, so a client that raises its envelope
//! size after the handshake (pypsrp does, to 512000) gets larger fragments from then on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use uuid::Uuid;
use warden_psrp::{Defragmenter, Message, fragment_message};

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

/// Messages waiting for a Receive, and the fragments of the one being sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    messages: VecDeque<Vec<u8>>,
    fragments: VecDeque<Vec<u8>>,
}

impl Outbox {
    pub(crate) fn push(&mut self, message: &Message) {
        self.messages.push_back(message.encode());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.fragments.is_empty()
    }

    /// Drops whole messages not yet started (a stopped pipeline's unsent output); fragments of a
    /// message already partly sent stay, so the client can finish reassembling it.
    pub(crate) fn drop_unsent(&mut self) {
        self.messages.clear();
    }

    /// Fragments totalling at most `budget` bytes (always at least one fragment when any are
    /// waiting), cutting messages as they are reached; `object_ids` numbers the messages.
    pub(crate) fn take(&mut self, budget: usize, object_ids: &mut u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            if self.fragments.is_empty() {
                let Some(message) = self.messages.pop_front() else {
                    break;
                };
                *object_ids += 1;
                self.fragments
                    .extend(fragment_message(*object_ids, &message, budget));
            }
            let Some(next) = self.fragments.front() else {
                break;
            };
            if !out.is_empty() && out.len() + next.len() > budget {
                break;
            }
            out.extend_from_slice(next);
            self.fragments.pop_front();
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
