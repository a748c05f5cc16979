//! # warden-audit: the tamper-evident, secret-free audit trail
//!
//! One JSON line per policy decision and one per completed call (time, run id, principal,
//! cmdlet, parameters, decision and rule, outcome, duration, object count, bytes). A line of a
//! run the service began for a person has its `delegation` (the person's oid and UPN, the task,
//! the approver, the service's run id; [`Event::delegated`]); a CLI run's lines have none. A
//! line of a fleet's tenant run has its `fleet` (the fleet's id and the tenant; [`Event::in_fleet`]).
//! A `fleet` line ([`Event::fleet`]) records what happened to a fleet as a whole: recorded,
//! cancelled, failed tenants queued again, and one summary when its last job ended. A
//! plugin whose signature verified under a trusted key has that key's id as `principal.signer`.
//! Values the policy marks sensitive — and any parameter whose name says password, secret, token or
//! credential — are replaced by `hmac-sha256:<hex>`, keyed with a per-install [`AuditKey`], so
//! the trail never holds them but an investigator can still search for a known value with
//! [`keyed_hash`] (`warden audit hash VALUE`), as Vault's audit-hash does.
//!
//! Tamper evidence: every line carries `prev` (the previous line's `mac`; `"start"` on the first
//! line) and `mac`, an HMAC-SHA256 over the line's exact bytes without the `mac` field.
//! [`verify`] names the first line that was edited, removed, inserted or reordered. What it
//! cannot see without an external anchor (say, the last `mac` shipped elsewhere): lines cut
//! from the END of the file, or the whole file replaced by an older copy of itself.
//!
//! Ad hoc runs (a script a person typed, under a `script_inline = "any"` grant) record the
//! script's text with the run: `script` lines ([`Event::script_text`]) carry it whole, split
//! into parts of at most [`SCRIPT_PART_JSON_BYTES`], each with the text's sha256, its index and
//! the count. Such grants may not take sensitive parameters (the policy refuses them at load),
//! so the text holds no value the trail must keyed-hash.
//!
//! Bounded: no line is longer than [`MAX_LINE_BYTES`], whatever a guest passes. Longer texts
//! (parameter names and values, the cmdlet, a refusal reason) keep their start, their length
//! and their keyed hash; parameters past the line's room are folded the same way (see
//! `bound.rs`). One refused call cannot write more than one capped line.
//!
//! Fail closed: [`AuditTrail::record`] returns only after the line was written to the file; if
//! it returns an error the caller MUST refuse the call (docs/architecture.md invariant 5). A trail
//! whose file cannot be opened, whose last line does not verify, or that another process holds,
//! fails at [`AuditTrail::open`]. After a failed write the trail refuses every further record,
//! [`AuditTrail::record_later`] included.
//!
//! Group commit: [`AuditTrail::record`] writes, in one `write`, every line queued before it and
//! then its own (whoever writes takes the queue along: no thread hand-over on the way of an
//! allowed call). [`AuditTrail::record_later`] moves the event into a queue and returns; its
//! serialisation, bounding and MAC are the writer's work. The queue is written by a writer
//! thread [`MAX_QUEUE_DELAY`] after its first line, by the next `record` or
//! [`AuditTrail::flush`] if sooner, and when the trail is dropped; it holds at most
//! [`MAX_QUEUED_LINES`] lines and [`MAX_QUEUED_BYTES`], past which the producer writes itself.
//! The chain's order is the order of the calls. A queued line is for what nothing waits on (a
//! run's begin and a refusal, which changed nothing in Exchange; a call's closing line, whose
//! decision was written before the call was sent): if a batch fails, or the process is killed before its batch is
//! written, those lines are lost (a closing line is an allowed call's outcome: a lost one
//! leaves a write's outcome unknown, its decision on record and its run without a `run-end`),
//! and the trail refuses everything after a failed batch.
//!
//! Durability, a stated choice ([`Durability`]): by default every write (a line, or a batch)
//! is in the file (the page cache: it survives the process, not a power cut) before the record
//! that made it returns, and nothing is fsynced; [`Durability::Sync`] fsyncs every write (an
//! allowed call's decision, a batch of queued lines); [`AuditTrail::sync`] fsyncs on request.
//! The costs: `cargo bench -p warden-audit --bench record -- "audit durability"`, figures in
//! `bench/callgrind/README.md`.
#![deny(missing_docs)]

mod bound;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use std::borrow::Cow;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use warden_policy::Decision;
use warden_vocab::{DelegatedPerson, Delegation, Principal};
use zeroize::Zeroizing;

/// [`verify`]'s reason for a last line without its newline: a write cut off, or, in a trail
/// still being written, a batch being appended as it was read.
pub const INCOMPLETE_LAST_LINE: &str = "the last line is incomplete (a write was cut off)";

/// What a first line has as `prev`.
pub const CHAIN_START: &str = "start";

/// Prefix of keyed hashes in the trail.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// The most bytes one line of the trail takes, its newline included. A line that would be
/// longer has its texts cut and its parameters folded (each with length and keyed hash).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Domain separation: line MACs and value hashes never collide even on equal input.
const LINE_MAC_CONTEXT: &[u8] = b"warden-audit line v1\0";

/// Errors of the audit trail. Any of them from `open` or `record` means: run nothing.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The key file could not be read, created, or is not a key.
    #[error("audit key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The trail file could not be opened, read or written.
    #[error("audit trail {}: {action}: {source}", path.display())]
    Io {
        /// The trail file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The existing trail does not verify where it must be continued.
    #[error("audit trail {}: line {line}: {reason}; run `warden audit verify` and move the file aside", path.display())]
    Broken {
        /// The trail file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A previous write failed part-way; the trail refuses further records.
    #[error("audit trail {}: an earlier write failed ({cause}); refusing to record more", path.display())]
    Poisoned {
        /// The trail file.
        path: PathBuf,
        /// Why the first failed write failed (an I/O error's text; no line's content).
        cause: String,
    },
}

/// The per-install key for keyed hashes and line MACs: 32 random bytes. Never printed;
/// zeroized on drop.
pub struct AuditKey {
    bytes: Zeroizing<[u8; 32]>,
    /// HMAC's state once the key's padded blocks are hashed, zeroized on drop too: every
    /// keyed hash and line MAC starts from a copy, not from the key (two SHA-256 blocks less
    /// per line; `bench/callgrind/refusal.sh`'s `line`).
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

impl AuditKey {
    /// A key from bytes (tests, or keys kept in another store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::from_zeroizing(Zeroizing::new(bytes))
    }

    fn from_zeroizing(bytes: Zeroizing<[u8; 32]>) -> Self {
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes[..])
            .expect("HMAC takes any key length");
        AuditKey { bytes, keyed }
    }

    /// A fresh random key (not saved).
    pub fn generate() -> Self {
        Self::from_zeroizing(Zeroizing::new(rand::random()))
    }

    /// Reads the key file (64 hex digits). Refuses files readable by group or others.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let err = |reason: String| AuditError::Key {
            path: path.to_owned(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file
                .metadata()
                .map_err(|e| err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "is readable or writable by others (mode {:o}); run chmod 600",
                    mode & 0o777
                )));
            }
        }
        let mut text = Zeroizing::new(String::new());
        Read::by_ref(&mut file)
            .take(200)
            .read_to_string(&mut text)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        let hex = text.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if hex.len() != 64 || hex::decode_to_slice(hex, &mut key[..]).is_err() {
            return Err(err("is not 64 hex digits".into()));
        }
        Ok(Self::from_zeroizing(key))
    }

    /// Reads the key file, or creates it (mode 0600, parent directories 0700) with a new
    /// random key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match Self::load(path) {
            Err(AuditError::Key { .. }) if !path.exists() => {}
            other => return other,
        }
        let err = |reason: String| AuditError::Key {
            path: path.to_owned(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(parent)
                .map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        let key = Self::generate();
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                let text = Zeroizing::new(format!("{}\n", hex::encode(&key.bytes[..])));
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(format!("cannot write: {e}")))?;
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(err(format!("cannot create: {e}"))),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }
}

/// `hmac-sha256:<hex>` of `value` under `key`: what the trail holds instead of a sensitive
/// value (for a non-string value, the hash of its compact JSON).
pub fn keyed_hash(key: &AuditKey, value: &str) -> String {
    let mut mac = key.mac();
    mac.update(value.as_bytes());
    format!(
        "{HASH_PREFIX}{}",
        hex::encode(&mac.finalize().into_bytes()[..])
    )
}

fn line_mac(key: &AuditKey, bytes: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(LINE_MAC_CONTEXT);
    mac.update(bytes);
    hex::encode(&mac.finalize().into_bytes()[..])
}

mod hex {
    pub(crate) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    pub(crate) fn decode_to_slice(hex: &str, out: &mut [u8]) -> Result<(), ()> {
        let digits = hex.as_bytes();
        if digits.len() != out.len() * 2 {
            return Err(());
        }
        let val = |c: u8| (c as char).to_digit(16).map(|d| d as u8).ok_or(());
        for (i, pair) in digits.chunks(2).enumerate() {
            out[i] = val(pair[0])? << 4 | val(pair[1])?;
        }
        Ok(())
    }
}

/// What kind of line an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A policy decision (allowed or refused), before anything runs.
    Decision,
    /// A call that ran (or failed), after it completed.
    Call,
    /// One part of the text of a script a person typed (an ad hoc run), in order.
    Script,
    /// Something that happened to a fleet as a whole (`warden fleet`): recorded, cancelled,
    /// retried, or its one summary ([`FleetAction`]).
    Fleet,
}

/// Most bytes of script text (as JSON) one `script` line carries: with the rest of a line
/// (whose texts are each cut to 1 KiB) it stays under [`MAX_LINE_BYTES`]. A longer text is
/// split at character boundaries over several lines; their parts, joined in order, are the
/// text exactly, and the principal's `sha256` is the whole text's.
pub const SCRIPT_PART_JSON_BYTES: usize = 8 * 1024;

/// One part of a script's text in a `script` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptPart {
    /// SHA-256 of the whole text (lowercase hex), the same in every part.
    pub sha256: String,
    /// 1-based index of this part.
    pub part: usize,
    /// How many parts the text has.
    pub parts: usize,
    /// The text of this part, exactly as typed.
    pub text: String,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// It completed.
    Ok,
    /// It failed; `kind` is the error's kind (denied, invalid, budget, throttled, remote,
    /// timeout, …), never its message.
    Error {
        /// The error kind.
        kind: String,
    },
}

/// Exchange's identifiers of a failed call, kept so a support case can quote them: the error id
/// (`Ex6F9304`), the exception class and the `request-id` of the answer. Each is cut to a
/// marker's length in the line (they are server text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorIds {
    /// Exchange's error id, first part of `details[0].message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    /// The exception class (`ManagementObjectNotFoundException`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// The answer's `request-id` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorIds {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.error_id.is_none() && self.exception.is_none() && self.request_id.is_none()
    }
}

/// A [`Delegation`] cut to a line's bounds once, when its run begins
/// ([`AuditTrail::bind_delegation`]), and shared by every line of the run: a line borrows it
/// instead of copying and cutting its strings again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundDelegation(Arc<Delegation>);

impl BoundDelegation {
    /// The delegation as its lines name it (each identifier cut to a marker's length).
    pub fn get(&self) -> &Delegation {
        &self.0
    }
}

/// The fleet run and tenant a run belongs to (`warden fleet`): every line of the run names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetMember {
    /// The fleet's id.
    pub fleet: String,
    /// The tenant's profile name.
    pub tenant: String,
}

/// Most bytes (as JSON) one list of tenant names takes in a `fleet` line: a fleet of a
/// thousand tenants keeps its line under [`MAX_LINE_BYTES`]; the names past it are counted and
/// hashed ([`TenantList`]).
pub const TENANT_LIST_JSON_BYTES: usize = 5 * 1024;

/// What happened to a fleet, in a `fleet` line ([`Event::fleet`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum FleetAction {
    /// The fleet was recorded: who asked, over which tenants, in which waves.
    Recorded {
        /// Who recorded it.
        by: String,
        /// The `--tenants` selector as given.
        selector: String,
        /// The tenants chosen, in the order they start.
        tenants: Vec<String>,
        /// How many tenants each wave has, in order.
        waves: Vec<u64>,
        /// Failures tolerated (`None`: no limit).
        max_failures: Option<u64>,
        /// A dry run: its writes are planned, never sent (the line has it only when true).
        dry_run: bool,
    },
    /// The fleet was cancelled: no tenant starts from now on.
    Cancelled {
        /// Who cancelled it.
        by: String,
    },
    /// Failed tenants were queued again (`warden fleet retry --failed`).
    Retried {
        /// Who asked.
        by: String,
        /// The tenants queued again.
        requeued: Vec<String>,
        /// Failed tenants left alone because they may have written.
        not_requeued_may_have_written: Vec<String>,
    },
    /// The fleet's last job ended: its one summary.
    Summary {
        /// Jobs per final state (`completed`, `failed`, `outcome-unknown`, …).
        counts: std::collections::BTreeMap<String, u64>,
        /// The tenants whose writes need checking.
        outcome_unknown: Vec<String>,
        /// Failures passed the limit, so some tenants never started.
        halted: bool,
        /// The fleet was cancelled.
        cancelled: bool,
        /// A dry run: nothing was sent (the line has it only when true).
        dry_run: bool,
    },
}

/// A list of tenant names as a `fleet` line carries it: whole when it fits in
/// [`TENANT_LIST_JSON_BYTES`], else its first names, how many there are and the SHA-256 of
/// all of them (joined by newlines), so the record still pins the whole list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantList {
    /// How many names the list has.
    pub count: usize,
    /// The names kept (all of them unless `omitted`).
    pub names: Vec<String>,
    /// Names left out for room.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub omitted: usize,
    /// SHA-256 (hex) of every name joined by `\n`, when some were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

impl TenantList {
    fn bounded(key: &AuditKey, names: &[String]) -> Self {
        let mut kept = Vec::new();
        let mut used = 2;
        for name in names {
            let name = bound::identifier(key, name).into_owned();
            let cost = bound::json_str_len(&name) + 1;
            if used + cost > TENANT_LIST_JSON_BYTES {
                break;
            }
            used += cost;
            kept.push(name);
        }
        let omitted = names.len() - kept.len();
        TenantList {
            count: names.len(),
            names: kept,
            omitted,
            sha256: (omitted > 0).then(|| warden_policy::sha256_hex(names.join("\n").as_bytes())),
        }
    }
}

/// A [`FleetAction`] as its line carries it: texts cut, tenant lists bounded.
#[derive(Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum FleetActionRecord {
    Recorded {
        by: String,
        selector: String,
        tenants: TenantList,
        waves: Vec<u64>,
        max_failures: Option<u64>,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    Cancelled {
        by: String,
    },
    Retried {
        by: String,
        requeued: TenantList,
        not_requeued_may_have_written: TenantList,
    },
    Summary {
        counts: std::collections::BTreeMap<String, u64>,
        outcome_unknown: TenantList,
        halted: bool,
        cancelled: bool,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
}

/// A fleet line's `dry_run` is written only when true: other lines stay as they were.
fn is_false(value: &bool) -> bool {
    !*value
}

impl FleetActionRecord {
    fn new(key: &AuditKey, action: &FleetAction) -> Self {
        let id = |text: &str| bound::identifier(key, text).into_owned();
        let list = |names: &[String]| TenantList::bounded(key, names);
        match action {
            FleetAction::Recorded {
                by,
                selector,
                tenants,
                waves,
                max_failures,
                dry_run,
            } => FleetActionRecord::Recorded {
                by: id(by),
                selector: bound::text(key, selector).into_owned(),
                tenants: list(tenants),
                waves: waves.iter().take(64).copied().collect(),
                max_failures: *max_failures,
                dry_run: *dry_run,
            },
            FleetAction::Cancelled { by } => FleetActionRecord::Cancelled { by: id(by) },
            FleetAction::Retried {
                by,
                requeued,
                not_requeued_may_have_written,
            } => FleetActionRecord::Retried {
                by: id(by),
                requeued: list(requeued),
                not_requeued_may_have_written: list(not_requeued_may_have_written),
            },
            FleetAction::Summary {
                counts,
                outcome_unknown,
                halted,
                cancelled,
                dry_run,
            } => FleetActionRecord::Summary {
                counts: counts.iter().take(16).map(|(k, v)| (id(k), *v)).collect(),
                outcome_unknown: list(outcome_unknown),
                halted: *halted,
                cancelled: *cancelled,
                dry_run: *dry_run,
            },
        }
    }
}

/// One thing to record. Build it with [`Event::decision`] or [`Event::call`].
#[derive(Debug, Clone)]
pub struct Event {
    kind: EventKind,
    run_id: String,
    principal: Principal,
    cmdlet: String,
    parameters: Map<String, Value>,
    sensitive: Vec<String>,
    allowed: Option<bool>,
    rule: Option<String>,
    reason: Option<String>,
    outcome: Option<Outcome>,
    duration_ms: Option<u64>,
    objects: Option<u64>,
    bytes: Option<u64>,
    script: Option<ScriptPart>,
    error_ids: Option<ErrorIds>,
    endpoint: Option<warden_vocab::Endpoint>,
    warnings: u64,
    batch: Option<String>,
    delegation: Option<BoundDelegation>,
    fleet: Option<Arc<FleetMember>>,
    fleet_action: Option<Box<FleetAction>>,
}

impl Event {
    /// The line for something that happened to fleet `fleet_id` as a whole: its `run_id` is
    /// the fleet's id and its principal the fleet's guest (with the guest's SHA-256).
    pub fn fleet(fleet_id: &str, guest: &Principal, action: FleetAction) -> Self {
        Event {
            kind: EventKind::Fleet,
            run_id: fleet_id.to_owned(),
            principal: guest.clone(),
            cmdlet: String::new(),
            parameters: Map::new(),
            sensitive: Vec::new(),
            allowed: None,
            rule: None,
            reason: None,
            outcome: None,
            duration_ms: None,
            objects: None,
            bytes: None,
            script: None,
            error_ids: None,
            endpoint: None,
            warnings: 0,
            batch: None,
            delegation: None,
            fleet: None,
            fleet_action: Some(Box::new(action)),
        }
    }

    /// This event as a line of a fleet's tenant run; `None` leaves it a line of no fleet.
    pub fn in_fleet(mut self, fleet: Option<&Arc<FleetMember>>) -> Self {
        self.fleet = fleet.cloned();
        self
    }

    /// This event as a line of a run the service began for a person (see [`Delegation`]):
    /// the line names the person, the task and the approver. `None` leaves it a line of a run
    /// nobody delegated (the CLI's).
    pub fn delegated(mut self, delegation: Option<&BoundDelegation>) -> Self {
        self.delegation = delegation.cloned();
        self
    }

    /// This event as one sub-request of the guest's batch `batch_id`: every line of a batch
    /// (decisions, refusals, calls) carries the same id, so the trail shows what went together.
    pub fn in_batch(mut self, batch_id: &str) -> Self {
        self.batch = Some(batch_id.to_owned());
        self
    }

    /// This event with the service the call goes to (Exchange or Security & Compliance).
    pub fn on_endpoint(mut self, endpoint: warden_vocab::Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// This event with Exchange's identifiers of the failure (nothing is added when `ids` is
    /// empty).
    pub fn with_error_ids(mut self, ids: ErrorIds) -> Self {
        self.error_ids = Some(ids).filter(|ids| !ids.is_empty());
        self
    }

    /// This event with how many warnings Exchange gave with the call's answers (a write's
    /// warnings may be all that says what it did; their count keeps the line bounded).
    pub fn with_warnings(mut self, count: u64) -> Self {
        self.warnings = count;
        self
    }

    /// The lines recording the text of a script with its run (see [`SCRIPT_PART_JSON_BYTES`]):
    /// one per part, in order; an empty text has one empty part.
    pub fn script_text(run_id: &str, principal: &Principal, text: &str) -> Vec<Self> {
        let mut pieces = Vec::new();
        let (mut start, mut used) = (0, 2);
        for (at, c) in text.char_indices() {
            let cost = bound::json_str_len(c.encode_utf8(&mut [0; 4])) - 2;
            if used + cost > SCRIPT_PART_JSON_BYTES {
                pieces.push(&text[start..at]);
                (start, used) = (at, 2);
            }
            used += cost;
        }
        pieces.push(&text[start..]);
        let parts = pieces.len();
        let sha256 = warden_policy::sha256_hex(text.as_bytes());
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| Event {
                kind: EventKind::Script,
                run_id: run_id.to_owned(),
                principal: principal.clone(),
                cmdlet: String::new(),
                parameters: Map::new(),
                sensitive: Vec::new(),
                allowed: None,
                rule: None,
                reason: None,
                outcome: None,
                duration_ms: None,
                objects: None,
                bytes: None,
                script: Some(ScriptPart {
                    sha256: sha256.clone(),
                    part: i + 1,
                    parts,
                    text: piece.to_owned(),
                }),
                error_ids: None,
                endpoint: None,
                warnings: 0,
                batch: None,
                delegation: None,
                fleet: None,
                fleet_action: None,
            })
            .collect()
    }

    /// The line for a policy decision.
    pub fn decision(run_id: &str, principal: &Principal, decision: &Decision) -> Self {
        Self::from_decision(run_id, principal, decision.clone())
    }

    /// [`Event::decision`] taking the decision whole: its texts and parameters move into the
    /// event instead of being copied (a refusal queued with [`AuditTrail::record_later`]).
    pub fn from_decision(run_id: &str, principal: &Principal, decision: Decision) -> Self {
        Event {
            kind: EventKind::Decision,
            run_id: run_id.to_owned(),
            principal: principal.clone(),
            cmdlet: decision.cmdlet,
            parameters: decision.parameters,
            sensitive: decision.sensitive,
            allowed: Some(decision.allowed),
            rule: Some(decision.rule),
            reason: Some(decision.reason),
            outcome: None,
            duration_ms: None,
            objects: None,
            bytes: None,
            script: None,
            error_ids: None,
            endpoint: None,
            warnings: 0,
            batch: None,
            delegation: None,
            fleet: None,
            fleet_action: None,
        }
    }

    /// The line for a completed call (allowed earlier by `decision`).
    pub fn call(
        run_id: &str,
        principal: &Principal,
        decision: &Decision,
        outcome: Outcome,
        duration: Duration,
        objects: u64,
        bytes: u64,
    ) -> Self {
        Event {
            kind: EventKind::Call,
            reason: None,
            outcome: Some(outcome),
            duration_ms: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
            objects: Some(objects),
            bytes: Some(bytes),
            ..Self::decision(run_id, principal, decision)
        }
    }

    /// About how many bytes the event holds (its texts and parameters), to bound the queue.
    fn weight(&self) -> usize {
        fn value(v: &Value) -> usize {
            match v {
                Value::String(s) => 24 + s.len(),
                Value::Array(items) => 24 + items.iter().map(value).sum::<usize>(),
                Value::Object(map) => {
                    24 + map
                        .iter()
                        .map(|(k, v)| 24 + k.len() + value(v))
                        .sum::<usize>()
                }
                _ => 24,
            }
        }
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        256 + self.run_id.len()
            + self.cmdlet.len()
            + text(&self.rule)
            + text(&self.reason)
            + self.sensitive.iter().map(|s| 24 + s.len()).sum::<usize>()
            + self.script.as_ref().map_or(0, |s| s.text.len())
            + self
                .parameters
                .iter()
                .map(|(k, v)| 24 + k.len() + value(v))
                .sum::<usize>()
    }

    /// Parameters as they go into the trail: sensitive values replaced by keyed hashes.
    fn redacted(&self, key: &AuditKey) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, value) in &self.parameters {
            // The cmdlet's SecureString parameters by the broker's own rule, prefixes
            // included (`-Pass` is `-Password` to PowerShell's binder).
            let bound = warden_vocab::names::as_bound(name);
            let sensitive = self.sensitive.iter().any(|s| s.eq_ignore_ascii_case(name))
                || warden_vocab::names::sensitive_by_name(name)
                || warden_vocab::secure::secure_parameter_named(&self.cmdlet, bound).is_some();
            let value = if sensitive {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => bound::canonical_json(other),
                };
                Value::String(keyed_hash(key, &text))
            } else {
                value.clone()
            };
            out.insert(name.clone(), value);
        }
        out
    }
}

/// The principal as it appears in a line.
#[derive(Serialize)]
struct PrincipalRecord<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<Cow<'a, str>>,
    sha256: Cow<'a, str>,
    /// The id of the key a plugin's signature verified under (when it did).
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<Cow<'a, str>>,
}

/// A line without its `mac`; field order is the order in the file. Every text in it is
/// already cut to the line's bounds (see `bound.rs`).
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    prev: &'a str,
    kind: EventKind,
    run_id: Cow<'a, str>,
    principal: PrincipalRecord<'a>,
    /// On whose behalf the run acts (a run the service began for a person).
    #[serde(skip_serializing_if = "Option::is_none")]
    delegation: Option<&'a Delegation>,
    /// The fleet run and tenant (a run of `warden fleet`).
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetMember>,
    /// What happened to a fleet as a whole (a `fleet` line).
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet_action: Option<FleetActionRecord>,
    cmdlet: Cow<'a, str>,
    parameters: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<Cow<'a, str>>,
    /// The service an allowed call goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<warden_vocab::Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    script: Option<&'a ScriptPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorIds>,
    #[serde(skip_serializing_if = "is_zero")]
    warnings: u64,
    /// The guest batch a sub-request's line belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<Cow<'a, str>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How long a line queued with [`AuditTrail::record_later`] waits, at most, for the lines that
/// ride with it: the writer thread writes a batch this long after its first line was queued
/// (sooner when a [`AuditTrail::record`] or [`AuditTrail::flush`] writes it first). Long
/// enough that a guest looping on refused calls has a few hundred lines in one `write`; short
/// enough that a line reaches the file well within what a person or a log shipper notices.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(10);

/// Most lines waiting for the writer. A producer that finds the queue full writes the queue
/// and its own line itself ([`AuditTrail::record_later`]), so a guest faster than the disk
/// waits on the disk instead of growing memory.
pub const MAX_QUEUED_LINES: usize = 1024;

/// Queued lines at which the writer thread writes without waiting out [`MAX_QUEUE_DELAY`].
const QUEUE_HIGH_WATER: usize = 128;

/// Most bytes (estimated from the events' texts and parameters) waiting for the writer; past
/// it a producer writes itself, as past [`MAX_QUEUED_LINES`].
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// How far a write to the trail is pushed before the record that made it returns: the same for
/// a line written alone and for a batch. Measured in `bench/callgrind/README.md`,
/// "Durability".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// The lines are in the file (the kernel's page cache): they survive the process, not a
    /// power cut. The default.
    #[default]
    Write,
    /// Each write is also forced to stable storage (`fdatasync`): one per allowed call's
    /// decision, one per batch of queued lines.
    Sync,
}

struct Tail {
    file: File,
    prev: String,
    seq: u64,
    durability: Durability,
}

/// A line waiting for its batch: the event, moved in whole, and when it was recorded.
struct Queued {
    event: Event,
    time: time::OffsetDateTime,
}

#[derive(Default)]
struct Queue {
    lines: Vec<Queued>,
    bytes: usize,
    /// The trail is being dropped: the writer writes what is left and stops.
    closing: bool,
    /// The writer thread waits for a first line with no deadline: only then does a queued
    /// line need to wake it. While it gathers a batch it looks at the queue when its delay
    /// ends, so a line queued then costs no wake-up (a thread switch, and on a busy trail one
    /// per run or call).
    writer_idle: bool,
}

/// Poisons the trail if dropped while unwinding (see [`Inner::write_through`]).
struct PoisonOnUnwind<'a>(&'a Inner);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison("a write panicked".into());
        }
    }
}

/// What the trail and its writer thread share.
struct Inner {
    path: PathBuf,
    key: AuditKey,
    /// Set when a write failed: every later record fails (fail closed).
    poisoned: AtomicBool,
    /// Why the first failed write failed: the writer thread has no caller to tell, so every
    /// later `Poisoned` error carries it.
    cause: OnceLock<String>,
    queue: Mutex<Queue>,
    /// Wakes the writer thread: a first line for an idle writer, the high-water mark, closing.
    queued: Condvar,
    /// The file and the chain's end. Taken before `queue` whenever both are held.
    tail: Mutex<Tail>,
}

/// An append-only, hash-chained audit trail. Its methods take `&self` and are safe to call
/// from many threads; the chain's order is the order of the `record` / `record_later` calls.
///
/// Group commit: [`AuditTrail::record`] writes its line, and every queued line ahead of it, in
/// one `write` before it returns (what an allowed call waits for); [`AuditTrail::record_later`]
/// only queues its line, which a writer thread (or the next `record`) writes within
/// [`MAX_QUEUE_DELAY`]. After any failed write every record fails.
pub struct AuditTrail {
    inner: Arc<Inner>,
    /// Started with the first queued line.
    writer: OnceLock<Option<std::thread::JoinHandle<()>>>,
}

impl fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditTrail")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// The suffix every line ends with: `,"mac":"<64 hex>"}` (it replaces the covered bytes' final
/// `}`, so a line is its covered bytes plus this many, the newline included).
const MAC_SUFFIX_LEN: usize = r#","mac":""}"#.len() + 64;

/// Splits a line into (the bytes the MAC covers, the MAC), or says why it cannot.
fn split_mac(line: &str) -> Result<(String, &str), &'static str> {
    if line.len() < MAC_SUFFIX_LEN + 2 || !line.ends_with("\"}") {
        return Err("no mac at the end of the line (truncated or edited)");
    }
    let cut = line.len() - MAC_SUFFIX_LEN;
    let (body, suffix) = line.split_at(cut);
    let mac = suffix
        .strip_prefix(r#","mac":""#)
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|m| m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("no mac at the end of the line (truncated or edited)")?;
    Ok((format!("{body}}}"), mac))
}

/// Checks one line against the key and the previous MAC; returns its MAC.
fn check_line<'l>(key: &AuditKey, line: &'l str, prev: &str, seq: u64) -> Result<&'l str, String> {
    let (covered, mac) = split_mac(line).map_err(str::to_owned)?;
    let expected = line_mac(key, covered.as_bytes());
    if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
        return Err("mac does not match: the line was edited, or the key is wrong".into());
    }
    let parsed: Value =
        serde_json::from_str(&covered).map_err(|e| format!("not a JSON object: {e}"))?;
    match parsed.get("prev").and_then(Value::as_str) {
        Some(p) if p == prev => {}
        Some(_) => {
            return Err("prev does not match the line before: a line was removed, inserted or reordered here".into());
        }
        None => return Err("no prev field".into()),
    }
    if parsed.get("seq").and_then(Value::as_u64) != Some(seq) {
        return Err(format!("seq is not {seq}: lines were removed or reordered"));
    }
    Ok(mac)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuditTrail {
    /// Opens (creating, mode 0600) the trail for appending and continues its chain from the
    /// last line, after checking that line's MAC. Fails when the file cannot be opened or
    /// locked, does not end in a complete line, or its last line does not verify.
    pub fn open(path: &Path, key: AuditKey) -> Result<Self, AuditError> {
        let io = |action, source| AuditError::Io {
            path: path.to_owned(),
            action,
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|e| io("cannot open for appending", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io(
                    "cannot lock",
                    std::io::Error::other("another process is writing this trail"),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", e)),
        }
        let (prev, seq) = last_line(&mut file, path, &key)?;
        Ok(AuditTrail {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                key,
                poisoned: AtomicBool::new(false),
                cause: OnceLock::new(),
                queue: Mutex::new(Queue::default()),
                queued: Condvar::new(),
                tail: Mutex::new(Tail {
                    file,
                    prev,
                    seq,
                    durability: Durability::default(),
                }),
            }),
            writer: OnceLock::new(),
        })
    }

    /// This trail with `durability` for every later write ([`Durability::Write`] unless set).
    pub fn with_durability(self, durability: Durability) -> Self {
        self.inner.lock_tail().durability = durability;
        self
    }

    /// The trail file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Keyed hash under this trail's key (see [`keyed_hash`]).
    pub fn keyed_hash(&self, value: &str) -> String {
        keyed_hash(&self.inner.key, value)
    }

    /// `event`'s parameters as this trail writes them (sensitive values keyed-hashed): what a
    /// caller may show beside the trail, say a dry run's planned writes.
    pub fn parameters_as_recorded(&self, event: &Event) -> Map<String, Value> {
        event.redacted(&self.inner.key)
    }

    /// Appends one line and returns once it is in the file (with every line queued before it,
    /// in the same `write`), pushed as far as the trail's [`Durability`] says. An error means
    /// the event is NOT recorded: refuse the call it describes.
    pub fn record(&self, event: &Event) -> Result<(), AuditError> {
        self.inner.write_through(Some(event), None)
    }

    /// Queues one line: it is written, in the order of the record calls, by the writer thread
    /// within [`MAX_QUEUE_DELAY`], or sooner by the next [`AuditTrail::record`] or
    /// [`AuditTrail::flush`]. For lines nothing waits on: a run's begin and a refusal (they
    /// changed nothing) and a call's closing line (the call was recorded before it was sent). When the queue is full
    /// the line is written here, with the queue. An error means the trail failed earlier (or
    /// fails now): refuse whatever comes next. A line queued here is lost if a later batch
    /// fails to write or the process dies first; a run's end ([`AuditTrail::record`] of its
    /// last line) is what guarantees its lines are in the file.
    pub fn record_later(&self, event: Event) -> Result<(), AuditError> {
        let inner = &self.inner;
        if inner.poisoned.load(Ordering::Acquire) {
            return Err(inner.poisoned_error());
        }
        let weight = event.weight();
        let mut queue = inner.lock_queue();
        // Read under the lock: the chain's order is the queue's, and so are the times.
        let time = time::OffsetDateTime::now_utc();
        if queue.lines.len() >= MAX_QUEUED_LINES || queue.bytes + weight > MAX_QUEUED_BYTES {
            // Full: write the queue and this line here rather than grow it.
            drop(queue);
            return inner.write_through(Some(&event), Some(time));
        }
        let first = queue.lines.is_empty();
        queue.bytes += weight;
        queue.lines.push(Queued { event, time });
        // At the high-water mark the writer writes at once, so a fast producer rarely fills
        // the queue and serialises a whole one inline.
        let wake = (first && queue.writer_idle) || queue.lines.len() == QUEUE_HIGH_WATER;
        drop(queue);
        if first || wake {
            if !self.writer() {
                // No thread to write it later: write it now.
                return inner.write_through(None, None);
            }
            if wake {
                inner.queued.notify_one();
            }
        }
        Ok(())
    }

    /// Writes every queued line now (one `write`). An error means the trail failed.
    pub fn flush(&self) -> Result<(), AuditError> {
        self.inner.write_through(None, None)
    }

    /// Starts the writer thread if it is not running; false when it cannot be started.
    fn writer(&self) -> bool {
        self.writer
            .get_or_init(|| {
                let inner = self.inner.clone();
                std::thread::Builder::new()
                    .name("audit-writer".into())
                    .spawn(move || inner.write_batches())
                    .ok()
            })
            .is_some()
    }

    /// `delegation` as this trail's lines name it: each identifier cut to a marker's length, so
    /// a line keeps its bound. Bind once per run and give every line of it the result.
    pub fn bind_delegation(&self, delegation: &Delegation) -> BoundDelegation {
        let id = |text: &str| bound::identifier(&self.inner.key, text).into_owned();
        let person = |p: &DelegatedPerson| DelegatedPerson {
            oid: id(&p.oid),
            upn: id(&p.upn),
        };
        BoundDelegation(Arc::new(Delegation {
            person: person(&delegation.person),
            task: id(&delegation.task),
            approver: delegation.approver.as_ref().map(person),
            service_run: id(&delegation.service_run),
        }))
    }

    /// Writes the queued lines, then forces the trail to stable storage (fsync): many lines'
    /// worth of time (measured in `bench/callgrind/README.md`, "Durability").
    pub fn sync(&self) -> Result<(), AuditError> {
        self.flush()?;
        let tail = self.inner.lock_tail();
        tail.file.sync_data().map_err(|source| AuditError::Io {
            path: self.inner.path.clone(),
            action: "cannot sync",
            source,
        })
    }
}

impl Drop for AuditTrail {
    /// Writes what is still queued (best effort: an error here has no caller left to refuse).
    fn drop(&mut self) {
        self.inner.lock_queue().closing = true;
        self.inner.queued.notify_all();
        if let Some(Some(writer)) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.inner.write_through(None, None);
    }
}

impl Inner {
    fn lock_tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poisoned_error(&self) -> AuditError {
        AuditError::Poisoned {
            path: self.path.clone(),
            cause: self.cause.get().cloned().unwrap_or_default(),
        }
    }

    /// Refuses every later record; the first `cause` is the one kept.
    fn poison(&self, cause: String) {
        let _ = self.cause.set(cause);
        self.poisoned.store(true, Ordering::Release);
    }

    /// Writes every queued line, then `own` (at `time`, else now), in one `write` (flat
    /// combining: whoever writes takes the queue with it), and syncs per the durability. On
    /// failure the trail is poisoned and the queued lines are dropped.
    // Out of line: `bench/callgrind/refusal.sh` counts the writer's work by this name.
    #[inline(never)]
    fn write_through(
        &self,
        own: Option<&Event>,
        time: Option<time::OffsetDateTime>,
    ) -> Result<(), AuditError> {
        let mut tail = self.lock_tail();
        let lines = {
            let mut queue = self.lock_queue();
            queue.bytes = 0;
            std::mem::take(&mut queue.lines)
        };
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        if lines.is_empty() && own.is_none() {
            return Ok(());
        }
        // A panic from here to the chain's update (a bug in bounding or serialising) loses
        // the taken lines: poison, so no later record returns `Ok` as if they were written.
        let unwinding = PoisonOnUnwind(self);
        let mut text = Vec::with_capacity((lines.len() + 1) * 1024);
        // A copy: the chain's end stays whole whatever happens before the write succeeds.
        let (mut seq, mut prev) = (tail.seq, tail.prev.clone());
        for queued in &lines {
            self.append(&mut text, &queued.event, queued.time, &mut seq, &mut prev);
        }
        if let Some(event) = own {
            let time = time.unwrap_or_else(time::OffsetDateTime::now_utc);
            self.append(&mut text, event, time, &mut seq, &mut prev);
        }
        let durability = tail.durability;
        let written = tail
            .file
            .write_all(&text)
            .map_err(|e| ("cannot write", e))
            .and_then(|()| match durability {
                Durability::Write => Ok(()),
                Durability::Sync => tail.file.sync_data().map_err(|e| ("cannot sync", e)),
            });
        if let Err((action, source)) = written {
            self.poison(format!("{action}: {source}"));
            return Err(AuditError::Io {
                path: self.path.clone(),
                action,
                source,
            });
        }
        (tail.seq, tail.prev) = (seq, prev);
        std::mem::forget(unwinding);
        Ok(())
    }

    /// Appends `event`'s line (chained after `prev`, numbered `seq + 1`) to `text`: serialised
    /// there, its MAC taken over the bytes in place, no copy of the line made.
    fn append(
        &self,
        text: &mut Vec<u8>,
        event: &Event,
        time: time::OffsetDateTime,
        seq: &mut u64,
        prev: &mut String,
    ) {
        let time = time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "unknown".into());
        #[cfg(test)]
        if tests::PANIC_IN_APPEND.with(std::cell::Cell::get) {
            panic!("a bug in serialising a line");
        }
        let start = text.len();
        self.covered_into(text, event, *seq + 1, time, prev);
        debug_assert!(
            text.len() - start + MAC_SUFFIX_LEN <= MAX_LINE_BYTES,
            "a line over its cap"
        );
        let mac = line_mac(&self.key, &text[start..]);
        text.pop(); // the covered bytes' closing '}'
        text.extend_from_slice(b",\"mac\":\"");
        text.extend_from_slice(mac.as_bytes());
        text.extend_from_slice(b"\"}\n");
        *seq += 1;
        *prev = mac;
    }

    /// The writer thread: waits for a first queued line, lets its batch gather for
    /// [`MAX_QUEUE_DELAY`], writes it; on closing, writes what is left and stops. A failed
    /// write poisons the trail: the next record of any kind reports it.
    fn write_batches(&self) {
        loop {
            let mut queue = self.lock_queue();
            while queue.lines.is_empty() && !queue.closing {
                queue.writer_idle = true;
                queue = self.queued.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            queue.writer_idle = false;
            if queue.lines.is_empty() {
                return; // closing, nothing left
            }
            let due = std::time::Instant::now() + MAX_QUEUE_DELAY;
            while !queue.closing && queue.lines.len() < QUEUE_HIGH_WATER {
                let left = due.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                queue = self
                    .queued
                    .wait_timeout(queue, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            drop(queue);
            let _ = self.write_through(None, None);
        }
    }
    /// The line for `event` with its texts cut and `{}` for its parameters.
    fn line<'a>(&self, event: &'a Event, seq: u64, time: String, prev: &'a str) -> Line<'a> {
        let cut = |text: &'a str| bound::text(&self.key, text);
        let (kind, name, path) = match &event.principal {
            Principal::Plugin { name, .. } => ("plugin", Some(cut(name)), None),
            Principal::Script { path, .. } => (
                "script",
                None,
                path.as_ref().map(|p| {
                    Cow::Owned(bound::text(&self.key, &p.display().to_string()).into_owned())
                }),
            ),
            Principal::AdHoc { principal, .. } => ("ad-hoc", Some(cut(principal)), None),
        };
        Line {
            seq,
            time,
            prev,
            kind: event.kind,
            run_id: cut(&event.run_id),
            principal: PrincipalRecord {
                kind,
                name,
                path,
                sha256: cut(event.principal.sha256()),
                signer: event.principal.signer().map(cut),
            },
            // Cut once, when the run began ([`AuditTrail::bind_delegation`]).
            delegation: event.delegation.as_ref().map(BoundDelegation::get),
            fleet: event.fleet.as_ref().map(|member| FleetMember {
                fleet: bound::identifier(&self.key, &member.fleet).into_owned(),
                tenant: bound::identifier(&self.key, &member.tenant).into_owned(),
            }),
            fleet_action: event
                .fleet_action
                .as_deref()
                .map(|action| FleetActionRecord::new(&self.key, action)),
            cmdlet: cut(&event.cmdlet),
            parameters: Value::Object(Map::new()),
            allowed: event.allowed,
            rule: event.rule.as_deref().map(cut),
            endpoint: event.endpoint,
            reason: event.reason.as_deref().map(cut),
            outcome: event.outcome.as_ref().map(|outcome| match outcome {
                Outcome::Ok => Outcome::Ok,
                Outcome::Error { kind } => Outcome::Error {
                    kind: cut(kind).into_owned(),
                },
            }),
            duration_ms: event.duration_ms,
            objects: event.objects,
            bytes: event.bytes,
            script: event.script.as_ref(),
            error: event.error_ids.as_ref().map(|ids| {
                let id = |text: &Option<String>| {
                    text.as_deref()
                        .map(|t| bound::identifier(&self.key, t).into_owned())
                };
                ErrorIds {
                    error_id: id(&ids.error_id),
                    exception: id(&ids.exception),
                    request_id: id(&ids.request_id),
                }
            }),
            warnings: event.warnings,
            batch: event.batch.as_deref().map(cut),
        }
    }

    /// Appends to `out` the bytes of `event`'s line the MAC covers (the line without its
    /// `mac`), bounded to [`MAX_LINE_BYTES`]: its texts are cut first, then its parameters get
    /// whatever room the rest of the line leaves.
    fn covered_into(&self, out: &mut Vec<u8>, event: &Event, seq: u64, time: String, prev: &str) {
        let start = out.len();
        let mut line = self.line(event, seq, time, prev);
        // Over again from `start`: the bytes of a first try are dropped.
        let serialise = |out: &mut Vec<u8>, line: &Line| {
            out.truncate(start);
            serde_json::to_writer(&mut *out, line).expect("a line always serialises");
            out.len() - start
        };
        let budget = |rest: usize| MAX_LINE_BYTES.saturating_sub(rest + MAC_SUFFIX_LEN);
        let redacted = event.redacted(&self.key);
        // The usual line, serialised once: its parameters as they are, when the room the rest
        // of the line leaves them (the newline and the mac come on top of the covered bytes)
        // is enough for `bound::parameters` to keep them whole. Parameters that will be cut
        // whatever the room (up to the broker's 16 MiB) are never serialised whole.
        let Some(len) = bound::uncut_len(&redacted) else {
            // Everything but the parameters, with `{}` for them, gives their room.
            let budget = budget(serialise(out, &line) - 2);
            line.parameters = bound::parameters(&self.key, &redacted, budget);
            serialise(out, &line);
            return;
        };
        line.parameters = Value::Object(redacted);
        let whole = serialise(out, &line);
        debug_assert!(len <= whole, "uncut_len is their serialised length");
        let budget = budget(whole.saturating_sub(len));
        if bound::kept_whole(len, budget) {
            return;
        }
        let Value::Object(redacted) = std::mem::take(&mut line.parameters) else {
            unreachable!("set just above")
        };
        line.parameters = bound::parameters(&self.key, &redacted, budget);
        serialise(out, &line);
    }
}

/// Finds and checks the last line of an existing trail: (its mac, its seq).
fn last_line(file: &mut File, path: &Path, key: &AuditKey) -> Result<(String, u64), AuditError> {
    let io = |action, source| AuditError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let len = file.metadata().map_err(|e| io("cannot stat", e))?.len();
    if len == 0 {
        return Ok((CHAIN_START.to_owned(), 0));
    }
    // Read backwards until the chunk holds the whole last line.
    let mut chunk = 64 * 1024u64;
    let text = loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| io("cannot seek", e))?;
        let mut buf = Vec::new();
        Read::by_ref(file)
            .take(len - start)
            .read_to_end(&mut buf)
            .map_err(|e| io("cannot read", e))?;
        let body = &buf[..buf.len().saturating_sub(1)];
        if start == 0 || body.contains(&b'\n') {
            break buf;
        }
        chunk *= 4;
    };
    let broken = |line, reason: String| AuditError::Broken {
        path: path.to_owned(),
        line,
        reason,
    };
    if text.last() != Some(&b'\n') {
        return Err(broken(
            0,
            "the file does not end with a complete line".into(),
        ));
    }
    let body = &text[..text.len() - 1];
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None => body,
    };
    let last =
        std::str::from_utf8(last).map_err(|_| broken(0, "the last line is not UTF-8".into()))?;
    let (covered, mac) = split_mac(last).map_err(|e| broken(0, format!("last line: {e}")))?;
    if !constant_time_eq(line_mac(key, covered.as_bytes()).as_bytes(), mac.as_bytes()) {
        return Err(broken(
            0,
            "the last line's mac does not match (edited, or another key)".into(),
        ));
    }
    let seq = serde_json::from_str::<Value>(&covered)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .ok_or_else(|| broken(0, "the last line has no seq".into()))?;
    Ok((mac.to_owned(), seq))
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Lines checked.
    pub lines: u64,
    /// The first bad line (1-based) and why, or `None` when the whole file verifies.
    pub first_broken: Option<(u64, String)>,
}

impl VerifyReport {
    /// True when every line verified.
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Verifies a whole trail: every line's MAC under `key`, and the chain of `prev` and `seq`.
/// Stops at the first broken line. An `Err` means the file could not be read at all.
pub fn verify(path: &Path, key: &AuditKey) -> Result<VerifyReport, AuditError> {
    verify_from(path, key, None).map(|(report, _)| report)
}

/// How much of a trail verified, so that a later [`verify_from`] reads only what was appended
/// since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The bytes verified: the file's first `bytes` bytes, whole lines.
    pub bytes: u64,
    /// The lines verified.
    pub lines: u64,
    /// Where the last verified line starts (0 when there is none).
    last_line_at: u64,
    /// Its MAC: the next line's `prev`.
    last_mac: String,
}

/// [`verify`], continuing after `from` (what an earlier call on the same file verified): only
/// the lines after it are read, and the last line it verified is read again and must be the
/// same line (else, the file was rewritten or cut: the whole file is verified). Returns the
/// report for the whole file and, when it verifies, how much did. Lines edited before `from`'s
/// last line are NOT seen: call it without `from` to check the whole file again.
pub fn verify_from(
    path: &Path,
    key: &AuditKey,
    from: Option<&Verified>,
) -> Result<(VerifyReport, Option<Verified>), AuditError> {
    let io = |action, source| AuditError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let file = File::open(path).map_err(|e| io("cannot open", e))?;
    let mut reader = BufReader::new(file);
    if let Some(from) = from {
        if still_ends_with(&mut reader, key, from).map_err(|e| io("cannot read", e))? {
            return verify_lines(reader, key, from.clone(), path);
        }
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| io("cannot seek", e))?;
    }
    let start = Verified {
        bytes: 0,
        lines: 0,
        last_line_at: 0,
        last_mac: CHAIN_START.to_owned(),
    };
    verify_lines(reader, key, start, path)
}

/// Whether the lines at a few byte offsets of a trail still verify: for each offset, the first
/// line starting at or after it (the first line for offset 0) must carry its MAC under `key`,
/// and the line after it, if any, must name that MAC as its `prev`. A cheap sample between two
/// [`verify`]s (an edit of a line [`verify_from`] does not read again); `false` says to verify
/// the whole file. Offsets past the last whole line are not checked.
pub fn spot_check(path: &Path, key: &AuditKey, offsets: &[u64]) -> Result<bool, AuditError> {
    let io = |action, source| AuditError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(|e| io("cannot open", e))?);
    let mut buf = Vec::new();
    let mut next_line = |reader: &mut BufReader<File>| -> Result<Option<String>, AuditError> {
        buf.clear();
        reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| io("cannot read", e))?;
        if buf.last() != Some(&b'\n') {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned(),
        ))
    };
    for &offset in offsets {
        // From the byte before the offset, so that a line starting exactly there is the one read.
        let start = offset.saturating_sub(1);
        reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| io("cannot seek", e))?;
        if offset > 0 && next_line(&mut reader)?.is_none() {
            continue;
        }
        let Some(line) = next_line(&mut reader)? else {
            continue;
        };
        let Ok((covered, mac)) = split_mac(&line) else {
            return Ok(false);
        };
        if !constant_time_eq(line_mac(key, covered.as_bytes()).as_bytes(), mac.as_bytes()) {
            return Ok(false);
        }
        let mac = mac.to_owned();
        if let Some(after) = next_line(&mut reader)? {
            let prev = split_mac(&after)
                .ok()
                .and_then(|(covered, _)| serde_json::from_str::<Value>(&covered).ok())
                .and_then(|v| v.get("prev").and_then(Value::as_str).map(str::to_owned));
            if prev.as_deref() != Some(mac.as_str()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Whether the line `from` verified last is still where it was, whole, with its MAC; leaves
/// the reader just after it.
fn still_ends_with(
    reader: &mut BufReader<File>,
    key: &AuditKey,
    from: &Verified,
) -> std::io::Result<bool> {
    if from.lines == 0 {
        return Ok(from.bytes == 0);
    }
    reader.seek(SeekFrom::Start(from.last_line_at))?;
    let mut buf = Vec::new();
    let read = reader.read_until(b'\n', &mut buf)?;
    if from.last_line_at + read as u64 != from.bytes || buf.last() != Some(&b'\n') {
        return Ok(false);
    }
    let Ok(line) = std::str::from_utf8(&buf[..buf.len() - 1]) else {
        return Ok(false);
    };
    Ok(split_mac(line).is_ok_and(|(covered, mac)| {
        mac == from.last_mac
            && constant_time_eq(line_mac(key, covered.as_bytes()).as_bytes(), mac.as_bytes())
    }))
}

/// Verifies the lines from the reader's position on, `at` being what is verified before it.
fn verify_lines(
    mut reader: BufReader<File>,
    key: &AuditKey,
    mut at: Verified,
    path: &Path,
) -> Result<(VerifyReport, Option<Verified>), AuditError> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                action: "cannot read",
                source,
            })?;
        if read == 0 {
            let report = VerifyReport {
                lines: at.lines,
                first_broken: None,
            };
            return Ok((report, Some(at)));
        }
        let n = at.lines + 1;
        let fail = |why: String| {
            Ok((
                VerifyReport {
                    lines: n,
                    first_broken: Some((n, why)),
                },
                None,
            ))
        };
        if buf.last() != Some(&b'\n') {
            return fail(INCOMPLETE_LAST_LINE.into());
        }
        let Ok(line) = std::str::from_utf8(&buf[..buf.len() - 1]) else {
            return fail("not UTF-8".into());
        };
        match check_line(key, line, &at.last_mac, n) {
            Ok(mac) => {
                at = Verified {
                    bytes: at.bytes + read as u64,
                    lines: n,
                    last_line_at: at.bytes,
                    last_mac: mac.to_owned(),
                };
            }
            Err(why) => return fail(why),
        }
    }
}

/// Where the audit key lives by default: `$WARDEN_AUDIT_KEY`, else
/// `$HOME/.local/state/warden/audit.key`. Pass the two environment values in.
pub fn default_key_path(
    warden_audit_key: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    match warden_audit_key.filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => home
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".local/state/warden/audit.key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The key's prepared HMAC state gives HMAC-SHA-256 under the key, every time it is used
    /// (expected values from Python's `hmac` module; a line's MAC covers the context prefix
    /// `warden-audit line v1\0`, then the line).
    #[test]
    fn keyed_hashes_and_line_macs_are_hmac_sha256_under_the_key() {
        let key = AuditKey::from_bytes([0x0b; 32]);
        for _ in 0..2 {
            assert_eq!(
                keyed_hash(&key, "Hi There"),
                "hmac-sha256:198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
            );
            assert_eq!(
                line_mac(&key, br#"{"seq":1}"#),
                "cb706f99a30600b30f915b84e6a7d694e6451c1f41e7dc8645a11f0a233758b0"
            );
        }
    }

    thread_local! {
        /// Makes `Inner::append` panic on this thread, as a bug in bounding would.
        pub(super) static PANIC_IN_APPEND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn a_panic_while_writing_poisons_the_trail_and_keeps_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = AuditKey::from_bytes([3; 32]);
        let trail = AuditTrail::open(&path, AuditKey::from_bytes([3; 32])).unwrap();
        let event = |rule: &str| {
            Event::from_decision(
                "run",
                &Principal::inline_script("x"),
                refusal(rule.into(), Map::new()),
            )
        };
        trail.record(&event("first")).unwrap();
        PANIC_IN_APPEND.with(|p| p.set(true));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            trail.record(&event("lost"))
        }));
        PANIC_IN_APPEND.with(|p| p.set(false));
        assert!(panicked.is_err());
        // The line that panicked was not written: nothing after it may claim success.
        let error = trail.record(&event("after")).unwrap_err();
        assert!(
            matches!(&error, AuditError::Poisoned { cause, .. } if cause.contains("panicked")),
            "{error}"
        );
        assert!(trail.record_later(event("queued")).is_err());
        drop(trail);
        assert!(verify(&path, &key).unwrap().ok());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    impl Inner {
        /// The covered bytes of one line, alone.
        fn covered(&self, event: &Event, seq: u64, time: String, prev: &str) -> String {
            let before = b"(lines before)";
            let mut out = before.to_vec();
            self.covered_into(&mut out, event, seq, time, prev);
            String::from_utf8(out.split_off(before.len())).unwrap()
        }

        /// `covered` as it was before it serialised a usual line once: everything but the
        /// parameters first, to learn their room, then the line with them bounded.
        fn covered_two_pass(&self, event: &Event, seq: u64, time: String, prev: &str) -> String {
            let mut line = self.line(event, seq, time, prev);
            let rest = serde_json::to_string(&line).map_or(MAX_LINE_BYTES, |text| text.len() - 2);
            let budget = MAX_LINE_BYTES.saturating_sub(rest + MAC_SUFFIX_LEN);
            line.parameters = bound::parameters(&self.key, &event.redacted(&self.key), budget);
            serde_json::to_string(&line).unwrap()
        }
    }

    fn refusal(reason: String, parameters: Map<String, Value>) -> Decision {
        Decision {
            allowed: false,
            rule: "role:r/Set-Mailbox/DisplayName".into(),
            reason,
            cmdlet: "Set-Mailbox".into(),
            parameters,
            sensitive: vec!["Secret".into()],
            write: true,
        }
    }

    #[test]
    fn one_pass_lines_are_the_two_pass_lines_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let trail = AuditTrail::open(
            &dir.path().join("audit.jsonl"),
            AuditKey::from_bytes([3; 32]),
        )
        .unwrap();
        let principal = Principal::plugin("p", b"component");
        let prev = "0".repeat(64);
        let mut compared = 0;
        // Parameters that grow past every bound in small steps: a text's, a container's items,
        // the room the line leaves (a long reason takes it), and the line itself.
        for step in (0..200).map(|i| i * 97).chain([1023, 1024, 1025, 1100]) {
            let text = "é\"\n".repeat(step / 4) + &"z".repeat(step % 4);
            let items: Vec<Value> = (0..step / 16).map(|i| json!(format!("v{i}"))).collect();
            // Up to 65 items of up to 999 bytes: from a few bytes to four times the line.
            let width = "w".repeat(step % 1000);
            let many: Map<String, Value> = (0..=step / 300)
                .map(|i| (format!("P{i}"), json!(width)))
                .collect();
            let variants = [
                json!({"Identity": "a@contoso.com", "DisplayName": text}),
                json!({"AccessRights": items.clone(), "Secret": text}),
                json!({"Nested": {"A": items, "B": [text.clone(), {"C": many.clone()}]}}),
                json!({"Wide": vec![width.clone(); 1 + step / 300]}),
                Value::Object(many),
            ];
            for parameters in variants {
                for reason in [String::new(), "r".repeat(step * 4)] {
                    let Value::Object(parameters) = &parameters else {
                        unreachable!()
                    };
                    let decision = refusal(reason, parameters.clone());
                    let event = Event::decision("run-1", &principal, &decision);
                    let time = "2026-12-06T15:00:00Z".to_owned();
                    let one = trail.inner.covered(&event, 7, time.clone(), &prev);
                    let two = trail.inner.covered_two_pass(&event, 7, time, &prev);
                    assert_eq!(one, two, "step {step}");
                    assert!(one.len() + MAC_SUFFIX_LEN <= MAX_LINE_BYTES);
                    compared += 1;
                }
            }
        }
        assert!(compared > 2000);
    }
}
