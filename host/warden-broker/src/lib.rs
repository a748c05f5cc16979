//! # warden-broker: the one door between guests and Exchange
//!
//! Every guest request — from a wasm component or a Rhai script alike — passes through
//! [`Broker::invoke`] / [`Broker::stream`]: budget check → policy decision → audit line →
//! target scoping → the Exchange session → output shaping → budget accounting → audit line →
//! result. The broker lives in its own crate (not inside the wasm runtime) so that both guest
//! runtimes are thin front ends of the same code, and a rule can never hold for one and not
//! the other.
//!
//! What it refuses: running anything the policy did not allow (a refused call never reaches
//! the session, so neither the network nor Exchange sees it), running anything it could not
//! write to the audit trail first (fail closed), and handing a guest any error text that did
//! not come from a typed field.
//!
//! Decide on the object, send the object. Exchange resolves an identity (an address, proxy
//! address, alias, name, GUID, DN, legacy DN, `domain\user`, padded or `smtp:`-prefixed) to one
//! directory object, so judging the text would let another spelling of a refused object
//! through. For the parameters [`Grant::identity_parameters`] names (targets, and recipients a
//! deny rule or `domain` constraint judges) the broker resolves every value — list items and
//! hashtable values too, at most [`MAX_IDENTITIES_PER_CALL`] — with its own `Get-Recipient`,
//! refuses the call when a deny rule refuses ANY identifier of the object, re-decides it on the
//! objects' primary addresses (role constraints, then the target scope), and sends it with the
//! objects' immutable ids (`ExchangeObjectId`). Nothing found, several found, out of scope or
//! refused by an identifier all read the same to the guest, with no names: a write is `denied`
//! by `resolve:<rule>`, a read gets a `ManagementObjectNotFoundException` (so look-then-create
//! works). The trail has the detail, with the parameter's sensitivity (keyed hashes).
//!
//! A batch ([`Broker::invoke_batch`]) is the same calls, judged one after the other exactly as
//! if made alone (budgets, policy, decision line, deciding on the objects); only the allowed
//! ones reach the runner, together (the REST session's `$batch`), under one timeout; each is
//! shaped, counted and closed with its own call line. Every line of a batch carries its id
//! (`batch`). A batch can do nothing the same calls one by one could not.
//!
//! A run the service begins for a person ([`Broker::begin_delegated`]) carries its
//! [`Delegation`] (the person, the task, the approver, the service's run id) into every audit
//! line of the run: the run's lines are built only from its tag, never from loose fields.
//!
//! A dry run ([`Broker::dry_run`], `warden fleet run --dry-run`) judges every call as usual but
//! sends no write: each allowed write is refused before the runner sees it (so before any
//! `may_have_written` mark), with a `dry-run` call line, and listed in [`PlannedWrites`]. A
//! broker [`Broker::for_tenant`] passes the run's tenant to the grant matching (grants limited
//! to tenants); without one, such grants refuse.
//!
//! Lookups are not free: a call reserves `1 + lookups` of the `calls` budget before any lookup,
//! a lookup made is never handed back, and a call refused before its lookups costs nothing.
//!
//! Refusals (every call that did not start, whatever the kind: policy, budget, resolution, a
//! failed lookup, an unwritable trail) spend no guest CPU time. A run may be refused as many
//! times as its grant lets it call; past that every refusal is answered [`REFUSAL_DELAY`] late.
//! The trail is bounded per run too: the first [`REFUSAL_LINES_PER_RUN`] refusals are written
//! whole; past them one line says counting started and the run's end writes one line with the
//! counts by kind, so a guest looping on refused calls writes at most that many lines.
//!
//! What waits on the trail (its group commit, see `warden_audit::AuditTrail`): an allowed call's
//! decision line and a lookup's decision are written before the broker goes on
//! (`AuditTrail::record`, which writes every queued line ahead of them in the same `write`). A
//! run's begin (when it got a grant), a refusal and a call's closing line (outcome, duration,
//! counts) are queued (`AuditTrail::record_later`; not a stream the guest drops: its line is
//! written at once) and ride with the next write, within `warden_audit::MAX_QUEUE_DELAY`; the
//! run's end line is written before [`Broker::end`] returns, so a run ends only after all its
//! lines are in the file. Once any write failed, every record
//! fails, a queued one too: every call is refused and the run's end fails.
#![deny(missing_docs)]

mod error;
mod resolve;

pub use error::GuestError;

pub use resolve::MAX_IDENTITIES_PER_CALL;

use resolve::{Recipient, identity_values, replace_leaves};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use warden_audit::{AuditTrail, BoundDelegation, Event, FleetMember, Outcome};
use warden_exchange::{CmdletRunner, Invocation, ObjectsText, PageStream, ParamValue, Parameters};
use warden_policy::{
    Decision, Declaration, GivenParameters, Grant, Judgement, Policy, Principal, Shaper, names,
};
pub use warden_vocab::{DelegatedPerson, Delegation};

/// How a run ended, as its closing audit line records it ([`Broker::end`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The guest finished and returned output of this size.
    Completed {
        /// Bytes of its output (a wasm plugin's text; a script's value as JSON).
        output_bytes: u64,
    },
    /// The guest ended with an error of its own, or its code could not be prepared.
    Failed {
        /// What went wrong, in the guest's (or the loader's) words.
        message: String,
    },
    /// The host stopped the guest at a limit (or its caller interrupted it).
    Stopped {
        /// Which limit, in words.
        reason: String,
    },
}

impl RunEnd {
    /// The status word of the audit line (`run-end:<status>`) and of exit codes.
    pub fn status(&self) -> &'static str {
        match self {
            RunEnd::Completed { .. } => "completed",
            RunEnd::Failed { .. } => "failed",
            RunEnd::Stopped { .. } => "stopped",
        }
    }

    /// The audit line's detail.
    fn detail(&self) -> String {
        match self {
            RunEnd::Completed { output_bytes } => format!("returned {output_bytes} bytes"),
            RunEnd::Failed { message } => message.clone(),
            RunEnd::Stopped { reason } => reason.clone(),
        }
    }
}
/// How late each refusal past a run's free ones is answered (see the crate docs): at most 100
/// refusals a second from a guest that keeps asking.
pub const REFUSAL_DELAY: Duration = Duration::from_millis(10);

/// Refusals of one run written whole to the trail; past them, refusals are counted by kind and
/// summed up in one line when the run ends (see the crate docs).
pub const REFUSAL_LINES_PER_RUN: u64 = 256;

/// The most calls one guest batch may hold ([`Broker::invoke_batch`]); a longer one is refused
/// whole. Ten `$batch` POSTs of the service's ten.
pub const MAX_BATCH_CALLS: usize = 100;

/// Stands in for a deadline past what an `Instant` can hold.
const FAR_AWAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Usage of one run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Cmdlet calls started.
    pub calls: u64,
    /// Of which writes.
    pub writes: u64,
    /// Result objects delivered.
    pub objects: u64,
    /// Bytes of results delivered (JSON).
    pub output_bytes: u64,
    /// Of the writes, those whose outcome is unknown: sent, but no answer came (a timeout, a
    /// lost connection, a stream dropped mid-write). They may have run; never re-send blindly.
    pub writes_unknown: u64,
}

/// One guest run: who it is, what it may do, what it has used.
#[derive(Debug)]
pub struct Run {
    tag: Arc<RunTag>,
    /// Shared with the plugin's other runs (built once per grant and declaration).
    grant: Arc<Grant>,
    usage: Mutex<Usage>,
    /// Calls refused so far (policy, budgets, resolved identities).
    refusals: AtomicU64,
    /// Refusal lines recorded (queued or written) so far (at most [`REFUSAL_LINES_PER_RUN`] whole ones).
    refusal_lines: AtomicU64,
    /// Refusals past [`REFUSAL_LINES_PER_RUN`], by kind, for the run's summary line.
    unwritten: Mutex<BTreeMap<&'static str, u64>>,
    /// When the run began with the broker.
    begun: Instant,
    /// When the guest started ([`Run::start_clock`]): the wall clock counts from here, so
    /// compiling a large component is not the guest's time. Until then it counts from `begun`.
    clock_start: OnceLock<Instant>,
    /// The grant's wall-clock budget.
    wall_clock: Duration,
    /// Writes being awaited right now, whose request is on record and may be sent: a call in
    /// this state must not be cancelled (see [`Run::write_in_flight`]).
    writes_in_flight: AtomicU64,
    /// Writes whose outcome is unknown (shared with the streams, which may be dropped).
    writes_unknown: Arc<AtomicU64>,
}

impl Run {
    /// The run id, in every audit line of the run.
    pub fn id(&self) -> &str {
        &self.tag.id
    }
    /// Who is running.
    pub fn principal(&self) -> &Principal {
        &self.tag.principal
    }
    /// On whose behalf, when the service began the run for a person.
    pub fn delegation(&self) -> Option<&Delegation> {
        self.tag.delegation.as_ref().map(BoundDelegation::get)
    }
    /// The grant in force.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }
    /// Calls refused so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
    /// Usage so far.
    pub fn usage(&self) -> Usage {
        let mut usage = *self.usage.lock().expect("usage lock");
        usage.writes_unknown = self.writes_unknown.load(Ordering::Relaxed);
        usage
    }
    /// The run's wall-clock deadline: the guest's start (or the run's begin, before the guest
    /// started) plus the grant's `wall_clock_secs`. Every wait of the run (the broker's, the
    /// supervisor's) ends by this one instant.
    pub fn deadline(&self) -> Instant {
        let start = self.clock_start.get().copied().unwrap_or(self.begun);
        // A budget too large to add is no deadline at all (a century away).
        start
            .checked_add(self.wall_clock)
            .unwrap_or(start + FAR_AWAY)
    }
    /// Starts the wall clock: called when the guest's code first runs, after its component was
    /// compiled or taken from the cache. Only the first call counts.
    pub fn start_clock(&self) {
        let _ = self.clock_start.set(Instant::now());
    }
    /// Time left on the wall-clock budget.
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }
    /// Whether a call of this run is waiting on a write whose request may have been sent (or
    /// on the lookups of a write whose decision is on record). Such a call must be let finish
    /// under the broker's own timeout (bounded by [`Run::deadline`]), which records how it
    /// ended, `outcome-unknown` if no answer came: cancelling it would lose that record.
    pub fn write_in_flight(&self) -> bool {
        self.writes_in_flight.load(Ordering::Acquire) > 0
    }
}

/// What every audit line of a run names: its id, its principal, and on whose behalf it acts.
/// The broker builds a run's lines only through it, so no line can leave the delegation out.
#[derive(Debug)]
struct RunTag {
    id: String,
    principal: Principal,
    /// Cut to the trail's bounds once, at the run's begin; every line shares it.
    delegation: Option<BoundDelegation>,
    /// The fleet run and tenant (`warden fleet`), from the broker.
    fleet: Option<Arc<FleetMember>>,
}

impl RunTag {
    fn decision(&self, decision: &Decision) -> Event {
        self.refusal(decision.clone())
    }

    /// A decision's line taking the decision whole (a refusal's: nothing else needs it).
    fn refusal(&self, decision: Decision) -> Event {
        Event::from_decision(&self.id, &self.principal, decision)
            .delegated(self.delegation.as_ref())
            .in_fleet(self.fleet.as_ref())
    }

    fn call(
        &self,
        decision: &Decision,
        outcome: Outcome,
        duration: Duration,
        objects: u64,
        bytes: u64,
    ) -> Event {
        Event::call(
            &self.id,
            &self.principal,
            decision,
            outcome,
            duration,
            objects,
            bytes,
        )
        .delegated(self.delegation.as_ref())
        .in_fleet(self.fleet.as_ref())
    }
}

/// Marks a write in flight on its run while alive ([`Run::write_in_flight`]).
struct WriteInFlight<'a>(&'a AtomicU64);

impl<'a> WriteInFlight<'a> {
    /// Marks `run` if `write`; a read is never marked.
    fn enter(run: &'a Run, write: bool) -> Option<Self> {
        write.then(|| {
            run.writes_in_flight.fetch_add(1, Ordering::AcqRel);
            Self(&run.writes_in_flight)
        })
    }
}

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The broker.
#[derive(Debug, Clone)]
pub struct Broker {
    policy: Arc<Policy>,
    runner: Arc<dyn CmdletRunner>,
    audit: Arc<AuditTrail>,
    call_timeout: Duration,
    /// Set for a fleet's tenant run: every audit line of its runs names the fleet and tenant.
    fleet: Option<Arc<FleetMember>>,
    /// Set for a dry run ([`Broker::dry_run`]): writes are listed here, never sent.
    dry_run: Option<Arc<PlannedWrites>>,
    /// The tenant its runs act on ([`Broker::for_tenant`]), for grants limited to tenants.
    tenant: Option<Arc<warden_policy::Candidate>>,
}

/// The writes a dry run planned ([`Broker::dry_run`]), in the order the guest asked for them.
#[derive(Debug, Default)]
pub struct PlannedWrites(Mutex<Vec<PlannedWrite>>);

impl PlannedWrites {
    /// The writes planned so far.
    pub fn list(&self) -> Vec<PlannedWrite> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One write a dry run did not send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedWrite {
    /// The cmdlet.
    pub cmdlet: String,
    /// Its parameters as the guest gave them and the trail shows them (sensitive values
    /// keyed-hashed).
    pub parameters: Map<String, Value>,
}

/// The rule a dry run's refused writes name (the guest's `denied` error, the trail's lines).
pub const DRY_RUN_RULE: &str = "dry-run";

/// A page's results after shaping: objects, or the session's text when nothing shapes them.
enum Shaped {
    Objects(Vec<Map<String, Value>>),
    Text(ObjectsText),
}

/// A guest's streaming call: pages pass through shaping and budgets one at a time.
#[derive(Debug)]
pub struct BrokeredStream {
    cmdlet: String,
    decision: Decision,
    /// For the closing line when the guest drops the stream before its end.
    audit: Arc<AuditTrail>,
    tag: Arc<RunTag>,
    pages: Box<dyn PageStream>,
    started: Instant,
    objects: u64,
    bytes: u64,
    done: bool,
    /// A page was asked for: a write's request may have been sent.
    requested: bool,
    /// The run's count of writes whose outcome is unknown.
    writes_unknown: Arc<AtomicU64>,
    /// Warnings Exchange gave with the pages so far: the guest sees only objects, so the
    /// audit line keeps their count (for a write they may be all that says what it did).
    warnings: u64,
}

impl Drop for BrokeredStream {
    /// A stream the guest abandons still closes its record: the call may have run (a write is
    /// sent with the first page request), so the trail must say how it ended: a write whose
    /// page was asked for is `outcome-unknown` (and counted so), anything else `abandoned`.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let kind = if self.decision.write && self.requested {
            self.writes_unknown.fetch_add(1, Ordering::Relaxed);
            GuestError::OutcomeUnknown {
                reason: String::new(),
            }
            .kind()
        } else {
            "abandoned"
        };
        let event = self
            .tag
            .call(
                &self.decision,
                Outcome::Error { kind: kind.into() },
                self.started.elapsed(),
                self.objects,
                self.bytes,
            )
            .with_warnings(self.warnings);
        // Written at once, not queued: a drop is rare, and a write's `outcome-unknown` is what
        // the operator must find in the trail whatever happens to the process next.
        if let Err(error) = self.audit.record(&event) {
            tracing::error!(error = %error, cmdlet = %self.cmdlet, "could not record an abandoned call");
        }
    }
}

fn param_value(name: &str, value: &Value) -> ParamValue {
    ParamValue::from_named_json(name, value)
}

impl Broker {
    /// A broker enforcing `policy`, running cmdlets through `runner`, recording to `audit`.
    /// `call_timeout` caps every single call (the run's wall-clock budget caps it further).
    pub fn new(
        policy: Arc<Policy>,
        runner: Arc<dyn CmdletRunner>,
        audit: Arc<AuditTrail>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            policy,
            runner,
            audit,
            call_timeout,
            fleet: None,
            dry_run: None,
            tenant: None,
        }
    }

    /// The same broker for runs against `tenant` (a config profile and its tags): a grant
    /// limited to tenants (`tenants = [...]`) gives its runs nothing unless it selects this
    /// tenant. Without it, such a grant refuses every run (no tenant is known).
    pub fn for_tenant(mut self, tenant: warden_policy::Candidate) -> Self {
        self.tenant = Some(Arc::new(tenant));
        self
    }

    /// The same broker for a dry run: every call the policy allows runs, except writes (the
    /// vocabulary's verb classes, the rule that marks a run `may_have_written`): each is
    /// judged as usual (policy, budgets, its objects resolved), then refused before anything
    /// is sent, with a `dry-run` call line in the trail, and listed in `planned`. The guest
    /// gets a `denied` error whose rule is [`DRY_RUN_RULE`].
    pub fn dry_run(mut self, planned: Arc<PlannedWrites>) -> Self {
        self.dry_run = Some(planned);
        self
    }

    /// The same broker for one tenant's run of a fleet (`warden fleet`): every audit line of
    /// the runs it begins names `member` (the fleet's id and the tenant).
    pub fn in_fleet(mut self, member: FleetMember) -> Self {
        self.fleet = Some(Arc::new(member));
        self
    }

    /// Writes a line (with every queued line ahead of it) before it returns: what an allowed
    /// call, a refused run and a run's end wait for.
    fn record(&self, event: Event) -> Result<(), GuestError> {
        self.audit
            .record(&in_batch(event))
            .map_err(trail_unavailable)
    }

    /// Queues a line nothing waits on (a run's begin, a refusal, a call's closing line): the
    /// trail's writer writes it within `warden_audit::MAX_QUEUE_DELAY`, the next written line
    /// or the run's end at the latest. Fails when the trail failed earlier, so nothing runs
    /// past a failing trail.
    fn record_later(&self, event: Event) -> Result<(), GuestError> {
        self.audit
            .record_later(in_batch(event))
            .map_err(trail_unavailable)
    }

    /// Starts a run for `principal`: finds its grant (intersected with what it declared). The
    /// run's first audit line says which grant it got, or why it got none.
    pub fn begin(
        &self,
        principal: Principal,
        declared: Option<&Declaration>,
    ) -> Result<Run, GuestError> {
        self.begin_delegated(principal, declared, None)
    }

    /// [`Broker::begin`] for a run acting on a person's behalf: every audit line of the run
    /// (its begin, each call allowed or refused, batch parts, its end) names `delegation`.
    pub fn begin_delegated(
        &self,
        principal: Principal,
        declared: Option<&Declaration>,
        delegation: Option<Delegation>,
    ) -> Result<Run, GuestError> {
        let tag = Arc::new(RunTag {
            id: uuid::Uuid::new_v4().to_string(),
            principal,
            delegation: delegation.map(|d| self.audit.bind_delegation(&d)),
            fleet: self.fleet.clone(),
        });
        match self
            .policy
            .shared_grant_for_tenant(&tag.principal, declared, self.tenant.as_deref())
        {
            Ok(grant) => {
                // Queued: nothing the run does leaves warden before a written line (an allowed
                // call's decision, the run's end) carries this one ahead of it.
                self.record_later(tag.decision(&run_decision(
                    true,
                    &format!("grant:{}", grant.id()),
                    "run started",
                )))?;
                // A typed script is on record with its run before it can make a call.
                if let Principal::AdHoc { source, .. } = &tag.principal
                    && !source.is_empty()
                {
                    self.record_script_of(&tag, source)?;
                }
                let wall_clock = grant.budgets().wall_clock;
                Ok(Run {
                    tag,
                    grant,
                    usage: Mutex::new(Usage::default()),
                    refusals: AtomicU64::new(0),
                    refusal_lines: AtomicU64::new(0),
                    unwritten: Mutex::new(BTreeMap::new()),
                    begun: Instant::now(),
                    clock_start: OnceLock::new(),
                    wall_clock,
                    writes_in_flight: AtomicU64::new(0),
                    writes_unknown: Arc::new(AtomicU64::new(0)),
                })
            }
            Err(denial) => {
                self.record(tag.decision(&run_decision(false, &denial.rule, &denial.reason)))?;
                Err(GuestError::Denied {
                    rule: denial.rule,
                    reason: denial.reason,
                })
            }
        }
    }

    /// Records a script's text with `run` (`script` lines; see
    /// [`warden_audit::Event::script_text`]): an interactive session records each line before it
    /// runs it. Nothing may run when this fails.
    pub fn record_script(&self, run: &Run, text: &str) -> Result<(), GuestError> {
        self.record_script_of(&run.tag, text)
    }

    fn record_script_of(&self, tag: &RunTag, text: &str) -> Result<(), GuestError> {
        for event in Event::script_text(&tag.id, &tag.principal, text) {
            self.record(
                event
                    .delegated(tag.delegation.as_ref())
                    .in_fleet(tag.fleet.as_ref()),
            )?;
        }
        Ok(())
    }

    /// The policy this broker enforces (to choose a principal, or explain a call).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Closes a run: its last audit line (`run-end:<status>`) says how it ended, with a short
    /// detail (cut to 512 bytes: a guest's own message may be long). It is written, with every
    /// line still queued (the run's refusals and closing lines), before this returns; an error
    /// means the trail does not say how the run ended.
    pub fn end(&self, run: &Run, end: &RunEnd) -> Result<(), GuestError> {
        let status = end.status();
        let mut detail = end.detail();
        // First, so the cut below never drops it: the operator must learn of it.
        let unknown = run.writes_unknown.load(Ordering::Relaxed);
        if unknown > 0 {
            detail = format!(
                "{unknown} write(s) of unknown outcome (sent, never answered: check before re-running); {detail}"
            );
        }
        if detail.len() > 512 {
            let mut cut = 512;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        let unwritten = std::mem::take(&mut *run.unwritten.lock().expect("refusal counts lock"));
        if !unwritten.is_empty() {
            let total: u64 = unwritten.values().sum();
            let kinds: Vec<String> = unwritten.iter().map(|(k, n)| format!("{k} {n}")).collect();
            self.record(run.tag.decision(&run_decision(
                    false,
                    "refusals-unwritten",
                    &format!(
                        "{total} refusals past the first {REFUSAL_LINES_PER_RUN} of this run were counted, not written one by one: {}",
                        kinds.join(", ")
                    ),
                ),
            ))?;
        }
        self.record(run.tag.decision(&run_decision(
            matches!(end, RunEnd::Completed { .. }),
            &format!("run-end:{status}"),
            &detail,
        )))
    }

    /// What a run may call (`exchange.grants()`).
    pub fn grants(&self, run: &Run) -> Vec<warden_policy::AllowedCmdlet> {
        run.grant.allowed_cmdlets()
    }

    /// Decides, audits and starts a call; results come page by page from the stream.
    pub async fn stream<'p>(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters: impl Into<GivenParameters<'p>>,
    ) -> Result<BrokeredStream, GuestError> {
        self.stream_as(run, cmdlet, parameters.into(), false).await
    }

    /// [`Broker::stream`] for a guest that takes its pages as JSON ([`Broker::next_page_json`]):
    /// when nothing shapes the cmdlet's results, the session is asked for its pages as text
    /// (`Invocation::with_text_pages`), so the objects are never built only to be written again.
    pub async fn stream_json<'p>(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters: impl Into<GivenParameters<'p>>,
    ) -> Result<BrokeredStream, GuestError> {
        self.stream_as(run, cmdlet, parameters.into(), true).await
    }

    async fn stream_as(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters: GivenParameters<'_>,
        json: bool,
    ) -> Result<BrokeredStream, GuestError> {
        let started = self.start(run, cmdlet, parameters, json).await;
        if let Err(error) = &started {
            self.slow_down(run, error).await;
        }
        started
    }

    /// Counts a refusal and, past the run's free ones, answers it [`REFUSAL_DELAY`] late. Every
    /// call that did not start is a refusal here, whatever its kind: policy, budget, a resolved
    /// identity, a failed lookup, an audit trail that cannot be written.
    async fn slow_down(&self, run: &Run, _error: &GuestError) {
        let refusals = run.refusals.fetch_add(1, Ordering::Relaxed) + 1;
        if refusals > run.grant.budgets().calls {
            tokio::time::sleep(REFUSAL_DELAY).await;
        }
    }

    /// Writes a refused decision's line, or, past the run's [`REFUSAL_LINES_PER_RUN`], counts
    /// it (one line says so when counting starts; [`Broker::end`] writes the counts).
    /// The line is queued (`record_later`): a refusal changed nothing in Exchange, so the guest
    /// gets its answer without waiting on the disk.
    /// `decision` is made only for a line that is written: past the run's written refusals a
    /// refusal costs a count.
    fn record_refusal(
        &self,
        run: &Run,
        decision: impl FnOnce() -> Decision,
        kind: &'static str,
    ) -> Result<(), GuestError> {
        let written = run.refusal_lines.fetch_add(1, Ordering::Relaxed);
        if written < REFUSAL_LINES_PER_RUN {
            let decision = decision();
            // Bounded like the trail's lines: a guest cannot flood the operator's terminal.
            error::tell_operator(&run.grant, &decision);
            return self.record_later(run.tag.refusal(decision));
        }
        let first = {
            let mut unwritten = run.unwritten.lock().expect("refusal counts lock");
            *unwritten.entry(kind).or_default() += 1;
            written == REFUSAL_LINES_PER_RUN
        };
        if first {
            self.record_later(run.tag.refusal(run_decision(
                    false,
                    "refusals-capped",
                    &format!(
                        "{REFUSAL_LINES_PER_RUN} refusals of this run are on record; further ones are counted and summed up when it ends"
                    ),
                ),
            ))?;
        }
        Ok(())
    }

    async fn start(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters: GivenParameters<'_>,
        json: bool,
    ) -> Result<BrokeredStream, GuestError> {
        let Decided {
            decision,
            mut invocation,
        } = self.decide(run, cmdlet, parameters).await?;
        if json && matches!(run.grant.shaper(&decision.cmdlet), Shaper::Everything) {
            invocation = invocation.with_text_pages();
        }
        // The runner sends the call to its endpoint with that service's token.
        let pages = self.runner.start(invocation);
        Ok(BrokeredStream {
            cmdlet: decision.cmdlet.clone(),
            decision,
            audit: self.audit.clone(),
            tag: run.tag.clone(),
            pages,
            started: Instant::now(),
            objects: 0,
            bytes: 0,
            done: false,
            requested: false,
            writes_unknown: run.writes_unknown.clone(),
            warnings: 0,
        })
    }

    /// Everything a call goes through before it is sent, the same for a single call and each
    /// call of a batch: the budget preflight, the policy decision, its audit line, the budget
    /// reservation, deciding on the objects its identities name. `Ok` is the call to send.
    async fn decide(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters: GivenParameters<'_>,
    ) -> Result<Decided, GuestError> {
        self.preflight(run, cmdlet)?;
        // A cmdlet nothing grants is refused by a lookup; its parameters are read only for
        // its line, and past the run's written refusals not at all (a script's are then
        // never written as JSON).
        let decision = match run.grant.judge(cmdlet, parameters) {
            Judgement::RefusedByName(refused) => {
                let error = refusal(refused.rule(), refused.reason());
                self.record_refusal(
                    run,
                    || run.grant.refused_by_name(&refused, cmdlet, parameters),
                    error.kind(),
                )?;
                return Err(error);
            }
            Judgement::Decided(decision) => decision,
        };
        // Boxed: what follows may wait on lookups, and every call's future (each refusal's
        // too, moved at each layer above) would otherwise be the size of their state.
        Box::pin(self.decide_on_parameters(run, decision)).await
    }

    /// [`Broker::decide`] of a call the policy decided on its parameters.
    async fn decide_on_parameters(
        &self,
        run: &Run,
        decision: Decision,
    ) -> Result<Decided, GuestError> {
        let budgets = run.grant.budgets().clone();
        let usage = run.usage();
        if decision.allowed && decision.write && usage.writes >= budgets.writes {
            return self.refuse(
                run,
                &decision.cmdlet,
                GuestError::BudgetExhausted {
                    budget: "writes".into(),
                    limit: budgets.writes,
                },
            );
        }
        // A refusal's line is queued (it changed nothing); an allowed decision is written
        // before anything else happens (fail closed: `record`, below).
        if !decision.allowed {
            let error = refusal(&decision.rule, &decision.reason);
            self.record_refusal(run, || decision, error.kind())?;
            return Err(error);
        }
        // The identities to decide on as objects, each a lookup in Exchange before the call.
        let mut identities: Vec<(String, Vec<String>)> = Vec::new();
        for name in run.grant.identity_parameters(&decision) {
            let value = decision.parameters.get(&name).unwrap_or(&Value::Null);
            let Ok(values) = identity_values(value) else {
                return self.refuse_decided(
                    run,
                    &decision,
                    GuestError::Invalid {
                        reason: format!(
                            "{name} names recipients: give them as strings (addresses, names or ids)"
                        ),
                    },
                );
            };
            identities.push((name, values));
        }
        let lookups = identities.iter().map(|(_, v)| v.len()).sum::<usize>();
        if lookups > MAX_IDENTITIES_PER_CALL {
            return self.refuse_decided(
                run,
                &decision,
                GuestError::Invalid {
                    reason: format!(
                        "the call names {lookups} recipients; at most {MAX_IDENTITIES_PER_CALL} are resolved in one call, so split it"
                    ),
                },
            );
        }
        // Reserve the lookups, the call and its write before any await, under one lock, so
        // concurrent calls of one run cannot both squeeze past a budget. A lookup that was made
        // stays spent; a refusal gives back the rest.
        let reserved = lookups as u64 + 1;
        {
            let mut usage = run.usage.lock().expect("usage lock");
            let writes_spent = decision.write && usage.writes >= budgets.writes;
            if usage.calls + reserved > budgets.calls || writes_spent {
                drop(usage);
                let (budget, limit) = if writes_spent {
                    ("writes", budgets.writes)
                } else {
                    ("calls", budgets.calls)
                };
                return self.refuse(
                    run,
                    &decision.cmdlet,
                    GuestError::BudgetExhausted {
                        budget: budget.into(),
                        limit,
                    },
                );
            }
            usage.calls += reserved;
            usage.writes += u64::from(decision.write);
        }
        // On record before anything reaches Exchange; a call refused for its budget above has
        // its refusal line only, so budget spam is bounded like any refusal.
        let give_back = |lookups_made: u64| {
            let mut usage = run.usage.lock().expect("usage lock");
            usage.calls -= reserved - lookups_made;
            usage.writes -= u64::from(decision.write);
        };
        // The policy entry that allowed the call names its service (Exchange or Security &
        // Compliance); a decision no entry of the grant explains is never sent.
        let endpoint = match run.grant.endpoint_for(&decision) {
            Ok(endpoint) => endpoint,
            Err(reason) => {
                give_back(0);
                return self.refuse(run, &decision.cmdlet, GuestError::Invalid { reason });
            }
        };
        let line = run.tag.decision(&decision).on_endpoint(endpoint);
        if let Err(error) = self.record(line) {
            give_back(0);
            return Err(error);
        }
        // A dry run lists a write as the guest asked for it (before its objects are pinned).
        let planning = (decision.write && self.dry_run.is_some()).then(|| decision.clone());
        let decision = if identities.is_empty() {
            decision
        } else {
            let mut made = 0;
            // A write's decision is on record: its lookups are let finish, never cut halfway.
            let _in_flight = WriteInFlight::enter(run, decision.write);
            match self
                .decide_on_objects(run, &decision, &identities, &mut made)
                .await
            {
                Ok(pinned) => pinned,
                Err(stop) => {
                    give_back(made);
                    return Err(self.stopped(run, &decision, &identities, stop)?);
                }
            }
        };
        if let (Some(asked), Some(planned)) = (&planning, &self.dry_run) {
            return Err(self.plan(run, asked, &decision, planned)?);
        }
        let parameters: Parameters = decision
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), param_value(k, v)))
            .collect();
        let invocation = Invocation::new(decision.cmdlet.clone(), parameters).on(endpoint);
        Ok(Decided {
            decision,
            invocation,
        })
    }

    /// A dry run's write, decided and allowed: closed with a `dry-run` call line (nothing was
    /// sent, so no object and no duration), listed with the parameters the guest gave (as the
    /// decision line shows them), and answered with the error the guest gets. It keeps the
    /// write it reserved: the grant's `writes` budget bounds a dry run's plan as it bounds a
    /// run's writes.
    fn plan(
        &self,
        run: &Run,
        asked: &Decision,
        decided: &Decision,
        planned: &PlannedWrites,
    ) -> Result<GuestError, GuestError> {
        let line = run.tag.call(
            decided,
            Outcome::Error {
                kind: DRY_RUN_RULE.into(),
            },
            Duration::ZERO,
            0,
            0,
        );
        // Written now, not queued: the plan is reported as this run's result, so its line must
        // be on record when the run ends in any way, a killed process included.
        self.record(line)?;
        let parameters = self.audit.parameters_as_recorded(&run.tag.decision(asked));
        planned
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PlannedWrite {
                cmdlet: asked.cmdlet.clone(),
                parameters,
            });
        Ok(GuestError::Denied {
            rule: DRY_RUN_RULE.into(),
            reason: format!(
                "dry run: not sent ({} is a write; this run only plans writes)",
                asked.cmdlet
            ),
        })
    }

    /// The next page of a brokered stream: shaped, counted against the budgets, audited when
    /// the call completes.
    pub async fn next_page(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
    ) -> Result<Option<Vec<Map<String, Value>>>, GuestError> {
        let objects = match self.next_shaped(run, stream).await? {
            None => return Ok(None),
            Some(Shaped::Objects(objects)) => objects,
            Some(Shaped::Text(text)) => self.text_to_objects(run, stream, &text)?,
        };
        let bytes = objects.iter().map(json_len).sum();
        self.charge(run, stream, objects.len() as u64, bytes)?;
        Ok(Some(objects))
    }

    /// The objects of a page that came as text when objects are wanted after all; a text that
    /// does not parse (warden wrote it: it always does) ends the call as unavailable.
    fn text_to_objects(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
        text: &ObjectsText,
    ) -> Result<Vec<Map<String, Value>>, GuestError> {
        match text.to_objects() {
            Ok(objects) => Ok(objects),
            Err(reason) => {
                stream.done = true;
                let error = GuestError::Unavailable { reason };
                self.finish(
                    run,
                    stream,
                    Outcome::Error {
                        kind: error.kind().into(),
                    },
                )?;
                Err(error)
            }
        }
    }

    /// [`Broker::next_page`] as the JSON array a wasm guest receives. The page is serialized
    /// once: the `output_bytes` budget is counted from the same text the guest gets.
    pub async fn next_page_json(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
    ) -> Result<Option<String>, GuestError> {
        // What the objects weigh, as next_page counts it: the array less brackets and commas.
        let text = match self.next_shaped(run, stream).await? {
            None => return Ok(None),
            Some(Shaped::Text(text)) => text,
            Some(Shaped::Objects(objects)) => ObjectsText::of(&objects),
        };
        self.charge(run, stream, text.len() as u64, text.weight())?;
        Ok(Some(text.into_json()))
    }

    /// Fetches and shapes the next page; closes the stream's audit record on its end or error.
    async fn next_shaped(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
    ) -> Result<Option<Shaped>, GuestError> {
        if stream.done {
            return Ok(None);
        }
        let timeout = self.call_timeout.min(run.remaining());
        stream.requested = true;
        // From here a write may be sent: the wait is the broker's own, never cut from outside.
        let in_flight = WriteInFlight::enter(run, stream.decision.write);
        // The session is told the same limit, so it fails a page rather than start a wait it
        // could not finish: a throttled or unsent write is then reported as such, not unknown.
        let page = tokio::time::timeout(timeout, stream.pages.next_page_within(timeout)).await;
        drop(in_flight);
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                tracing::warn!(cmdlet = %stream.cmdlet, error = %error, "cmdlet failed");
                let guest = GuestError::from_exchange(&error, timeout);
                stream.done = true;
                if matches!(guest, GuestError::OutcomeUnknown { .. }) {
                    run.writes_unknown.fetch_add(1, Ordering::Relaxed);
                }
                // The trail says what happened to the call: a prompt is "not executed", which
                // the guest sees as a remote error with that exception.
                let kind = match error {
                    warden_exchange::ExchangeError::NotExecuted { .. } => error.kind(),
                    _ => guest.kind(),
                };
                self.record_later(
                    run.tag
                        .call(
                            &stream.decision,
                            Outcome::Error { kind: kind.into() },
                            stream.started.elapsed(),
                            stream.objects,
                            stream.bytes,
                        )
                        .with_error_ids(error_ids(&error))
                        .with_warnings(stream.warnings),
                )?;
                return Err(guest);
            }
            Err(_) => {
                stream.done = true;
                // Dropping an in-flight write does not unsend it: the guest must not retry blindly.
                let guest = if stream.decision.write {
                    run.writes_unknown.fetch_add(1, Ordering::Relaxed);
                    GuestError::OutcomeUnknown {
                        reason: format!(
                            "no answer within {} ms; the write may have run",
                            timeout.as_millis()
                        ),
                    }
                } else {
                    GuestError::Timeout {
                        after_ms: timeout.as_millis() as u64,
                    }
                };
                self.finish(
                    run,
                    stream,
                    Outcome::Error {
                        kind: guest.kind().into(),
                    },
                )?;
                return Err(guest);
            }
        };
        let Some(page) = page else {
            stream.done = true;
            self.finish(run, stream, Outcome::Ok)?;
            return Ok(None);
        };
        stream.warnings += page.warnings.len() as u64;
        let shaper = run.grant.shaper(&stream.cmdlet);
        let mut objects = match page.text {
            // Text is asked for only when nothing shapes the results (`start`).
            Some(text) if matches!(shaper, Shaper::Everything) => {
                return Ok(Some(Shaped::Text(text)));
            }
            Some(text) => self.text_to_objects(run, stream, &text)?,
            None => page.objects,
        };
        objects.iter_mut().for_each(|object| shaper.apply(object));
        Ok(Some(Shaped::Objects(objects)))
    }

    /// Counts a page against the run's budgets; a page that would pass one is withheld whole,
    /// and usage counts only what was delivered.
    fn charge(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
        count: u64,
        bytes: u64,
    ) -> Result<(), GuestError> {
        let budgets = run.grant.budgets();
        let exceeded = {
            let mut usage = run.usage.lock().expect("usage lock");
            if usage.objects + count > budgets.objects {
                Some(("objects", budgets.objects))
            } else if usage.output_bytes + bytes > budgets.output_bytes {
                Some(("output_bytes", budgets.output_bytes))
            } else {
                usage.objects += count;
                usage.output_bytes += bytes;
                None
            }
        };
        if let Some((budget, limit)) = exceeded {
            stream.done = true;
            self.finish(
                run,
                stream,
                Outcome::Error {
                    kind: "budget".into(),
                },
            )?;
            return Err(GuestError::BudgetExhausted {
                budget: budget.into(),
                limit,
            });
        }
        stream.objects += count;
        stream.bytes += bytes;
        Ok(())
    }

    /// Runs a call to completion and returns every (shaped) result.
    pub async fn invoke<'p>(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters: impl Into<GivenParameters<'p>>,
    ) -> Result<Vec<Map<String, Value>>, GuestError> {
        let mut stream = self.stream(run, cmdlet, parameters).await?;
        let mut all = Vec::new();
        while let Some(page) = self.next_page(run, &mut stream).await? {
            all.extend(page);
        }
        Ok(all)
    }

    /// [`Broker::invoke`] as one JSON array, each page serialized once and the pages joined.
    pub async fn invoke_json<'p>(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters: impl Into<GivenParameters<'p>>,
    ) -> Result<String, GuestError> {
        let stream = self.stream_json(run, cmdlet, parameters).await?;
        // Boxed: the pages are round trips, and a refused call's future need not hold them.
        Box::pin(self.collect_json(run, stream)).await
    }

    /// Every page of `stream`, as one JSON array.
    async fn collect_json(
        &self,
        run: &Run,
        mut stream: BrokeredStream,
    ) -> Result<String, GuestError> {
        let mut all = String::from("[");
        while let Some(page) = self.next_page_json(run, &mut stream).await? {
            let items = &page[1..page.len() - 1];
            if !items.is_empty() {
                if all.len() > 1 {
                    all.push(',');
                }
                all.push_str(items);
            }
        }
        all.push(']');
        Ok(all)
    }

    /// Runs `requests` (each a cmdlet and its parameter JSON) as one batch and returns each
    /// one's shaped results, in order. Each call is judged exactly as [`Broker::invoke`] judges
    /// it, one after the other (budgets, policy, its audit line, deciding on its objects, the
    /// calls and writes budgets charged per call); a refused one gets its refusal in its slot
    /// and is never sent; the allowed ones go to the runner together (the REST session sends
    /// them as `$batch` POSTs), bounded by one timeout. Results are shaped, counted against
    /// the objects and bytes budgets in order (one that would pass a budget is withheld) and
    /// closed with one call line each. Every line of the batch carries its id. `Err` only for a
    /// batch of more than [`MAX_BATCH_CALLS`] calls, refused whole.
    pub async fn invoke_batch(
        &self,
        run: &Run,
        requests: &[(String, String)],
    ) -> Result<Vec<Result<Vec<Map<String, Value>>, GuestError>>, GuestError> {
        let batch_id = uuid::Uuid::new_v4().to_string();
        BATCH_ID.scope(batch_id, self.batch(run, requests)).await
    }

    /// [`Broker::invoke_batch`] with each call's results as the JSON array a wasm guest
    /// receives.
    pub async fn invoke_batch_json(
        &self,
        run: &Run,
        requests: &[(String, String)],
    ) -> Result<Vec<Result<String, GuestError>>, GuestError> {
        let results = self.invoke_batch(run, requests).await?;
        Ok(results
            .into_iter()
            .map(|result| result.map(|objects| ObjectsText::of(&objects).into_json()))
            .collect())
    }

    async fn batch(
        &self,
        run: &Run,
        requests: &[(String, String)],
    ) -> Result<Vec<Result<Vec<Map<String, Value>>, GuestError>>, GuestError> {
        if requests.len() > MAX_BATCH_CALLS {
            let error = GuestError::Invalid {
                reason: format!(
                    "a batch may hold at most {MAX_BATCH_CALLS} calls; this one holds {}: split it",
                    requests.len()
                ),
            };
            let decision = run_decision(false, "invalid:batch-size", &error.to_string());
            self.record_refusal(run, || decision, error.kind())?;
            self.slow_down(run, &error).await;
            return Err(error);
        }
        // Judged one by one, in order, as the same calls made alone would be.
        let mut slots: Vec<Result<Vec<Map<String, Value>>, GuestError>> =
            Vec::with_capacity(requests.len());
        let mut decided: Vec<(usize, Decision)> = Vec::new();
        let mut invocations = Vec::new();
        for (n, (cmdlet, parameters_json)) in requests.iter().enumerate() {
            match self.decide(run, cmdlet, parameters_json.into()).await {
                Ok(Decided {
                    decision,
                    invocation,
                }) => {
                    decided.push((n, decision));
                    invocations.push(invocation);
                    slots.push(Ok(Vec::new()));
                }
                Err(error) => {
                    self.slow_down(run, &error).await;
                    slots.push(Err(error));
                }
            }
        }
        if invocations.is_empty() {
            return Ok(slots);
        }
        let timeout = self.call_timeout.min(run.remaining());
        let started = Instant::now();
        let any_write = decided.iter().any(|(_, d)| d.write);
        // From here writes may be sent: the wait is the broker's own, never cut from outside.
        let in_flight = WriteInFlight::enter(run, any_write);
        let answers =
            tokio::time::timeout(timeout, self.runner.run_batch(invocations, timeout)).await;
        drop(in_flight);
        let elapsed = started.elapsed();
        let answers: Vec<Option<warden_exchange::rest::batch::BatchResult>> = match answers {
            Ok(answers) => answers.into_iter().map(Some).collect(),
            Err(_) => decided.iter().map(|_| None).collect(),
        };
        for ((n, decision), answer) in decided.into_iter().zip(answers) {
            slots[n] = self.close_batched(run, &decision, answer, timeout, elapsed);
        }
        Ok(slots)
    }

    /// Closes one call of a batch: its results shaped and counted against the budgets, or its
    /// error (`None`: no answer within `timeout`), and its call line.
    fn close_batched(
        &self,
        run: &Run,
        decision: &Decision,
        answer: Option<warden_exchange::rest::batch::BatchResult>,
        timeout: Duration,
        elapsed: Duration,
    ) -> Result<Vec<Map<String, Value>>, GuestError> {
        let line = |outcome: Outcome, objects: u64, bytes: u64| {
            run.tag.call(decision, outcome, elapsed, objects, bytes)
        };
        let error_kind = |kind: &str| Outcome::Error { kind: kind.into() };
        let output = match answer {
            Some(Ok(output)) => output,
            Some(Err(error)) => {
                tracing::warn!(cmdlet = %decision.cmdlet, error = %error, "cmdlet failed in a batch");
                let guest = GuestError::from_exchange(&error, timeout);
                if matches!(guest, GuestError::OutcomeUnknown { .. }) {
                    run.writes_unknown.fetch_add(1, Ordering::Relaxed);
                }
                let kind = match error {
                    warden_exchange::ExchangeError::NotExecuted { .. } => error.kind(),
                    _ => guest.kind(),
                };
                self.record_later(line(error_kind(kind), 0, 0).with_error_ids(error_ids(&error)))?;
                return Err(guest);
            }
            None => {
                // Dropping an in-flight write does not unsend it: the guest must not retry blindly.
                let guest = if decision.write {
                    run.writes_unknown.fetch_add(1, Ordering::Relaxed);
                    GuestError::OutcomeUnknown {
                        reason: format!(
                            "no answer to the batch within {} ms; the write may have run",
                            timeout.as_millis()
                        ),
                    }
                } else {
                    GuestError::Timeout {
                        after_ms: timeout.as_millis() as u64,
                    }
                };
                self.record_later(line(error_kind(guest.kind()), 0, 0))?;
                return Err(guest);
            }
        };
        let warnings = output.warnings.len() as u64;
        let mut objects = output.objects;
        let shaper = run.grant.shaper(&decision.cmdlet);
        objects.iter_mut().for_each(|object| shaper.apply(object));
        let count = objects.len() as u64;
        let bytes: u64 = objects.iter().map(json_len).sum();
        let budgets = run.grant.budgets();
        let exceeded = {
            let mut usage = run.usage.lock().expect("usage lock");
            if usage.objects + count > budgets.objects {
                Some(("objects", budgets.objects))
            } else if usage.output_bytes + bytes > budgets.output_bytes {
                Some(("output_bytes", budgets.output_bytes))
            } else {
                usage.objects += count;
                usage.output_bytes += bytes;
                None
            }
        };
        if let Some((budget, limit)) = exceeded {
            // Withheld whole, as a page past a budget is.
            self.record_later(line(error_kind("budget"), 0, 0).with_warnings(warnings))?;
            return Err(GuestError::BudgetExhausted {
                budget: budget.into(),
                limit,
            });
        }
        self.record_later(line(Outcome::Ok, count, bytes).with_warnings(warnings))?;
        Ok(objects)
    }

    /// Refuses a call whose parameters the front end could not express as JSON (a Rhai value
    /// with no JSON form, nesting past its limit): the same budget checks, decision line and
    /// error as a call whose parameter JSON the policy could not parse (`invalid`, or `denied`
    /// for a cmdlet no role entry names), so such a call is on record like any other.
    pub async fn refuse_unrepresentable(
        &self,
        run: &Run,
        cmdlet: &str,
        problem: &str,
    ) -> GuestError {
        let no_json_form = || Err(problem.to_owned());
        let error = match self
            .decide(run, cmdlet, GivenParameters::Deferred(&no_json_form))
            .await
        {
            Err(error) => error,
            // Never: the policy refuses parameters it cannot read. Nothing is sent here.
            Ok(_) => GuestError::Invalid {
                reason: problem.to_owned(),
            },
        };
        self.slow_down(run, &error).await;
        error
    }

    /// The checks made before the policy is asked: the calls and wall-clock budgets.
    fn preflight(&self, run: &Run, cmdlet: &str) -> Result<(), GuestError> {
        let budgets = run.grant.budgets();
        if run.usage().calls >= budgets.calls {
            return self.refuse(
                run,
                cmdlet,
                GuestError::BudgetExhausted {
                    budget: "calls".into(),
                    limit: budgets.calls,
                },
            );
        }
        if run.remaining().is_zero() {
            return self.refuse(
                run,
                cmdlet,
                GuestError::BudgetExhausted {
                    budget: "wall_clock_secs".into(),
                    limit: budgets.wall_clock.as_secs(),
                },
            );
        }
        Ok(())
    }

    /// Records a refusal that happened before the policy was asked (a spent budget).
    fn refuse<T>(&self, run: &Run, cmdlet: &str, error: GuestError) -> Result<T, GuestError> {
        let budget = match &error {
            GuestError::BudgetExhausted { budget, .. } => budget.clone(),
            _ => String::new(),
        };
        let mut decision = run_decision(false, &format!("budget:{budget}"), &error.to_string());
        // Not yet checked by the policy: cut, so a huge name cannot flood the trail.
        decision.cmdlet = warden_policy::names::for_record(cmdlet);
        self.record_refusal(run, || decision, error.kind())?;
        Err(error)
    }

    fn finish(
        &self,
        run: &Run,
        stream: &BrokeredStream,
        outcome: Outcome,
    ) -> Result<(), GuestError> {
        self.record_later(
            run.tag
                .call(
                    &stream.decision,
                    outcome,
                    stream.started.elapsed(),
                    stream.objects,
                    stream.bytes,
                )
                .with_warnings(stream.warnings),
        )
    }

    /// Records a refusal of a call whose allowed decision is already on record, and returns it.
    fn refuse_decided<T>(
        &self,
        run: &Run,
        decision: &Decision,
        error: GuestError,
    ) -> Result<T, GuestError> {
        let mut refused = decision.clone();
        refused.allowed = false;
        refused.reason = error.to_string();
        refused.rule = match &error {
            GuestError::Denied { rule, .. } => rule.clone(),
            other => format!("{}:{}", other.kind(), decision.rule),
        };
        self.record_refusal(run, || refused, error.kind())?;
        Err(error)
    }

    /// Decides on the objects the call's identities name: resolves each (a lookup of the
    /// broker's own, charged to the run), refuses the call if a deny rule refuses any identifier
    /// of any object, re-decides it on the objects' canonical addresses (role constraints and
    /// the target scope), and returns the decision to send: the objects' immutable ids in place
    /// of what the guest wrote. `made` counts the lookups made.
    async fn decide_on_objects(
        &self,
        run: &Run,
        decision: &Decision,
        identities: &[(String, Vec<String>)],
        made: &mut u64,
    ) -> Result<Decision, Stop> {
        let sensitive = |name: &str| {
            decision.sensitive.iter().any(|s| names::same(s, name))
                || names::sensitive_by_name(name)
        };
        // What the trail may show of a resolved value: hashed where the parameter is sensitive.
        let shown = |name: &str, value: &str| {
            if sensitive(name) {
                self.audit.keyed_hash(value)
            } else {
                value.to_owned()
            }
        };
        let mut resolved: Vec<(&str, Vec<Recipient>)> = Vec::new();
        for (name, values) in identities {
            let mut objects = Vec::new();
            for value in values {
                *made += 1;
                objects.push(
                    self.lookup(run, decision, name, value, sensitive(name))
                        .await?,
                );
            }
            resolved.push((name, objects));
        }
        let value_of = |name: &str| decision.parameters.get(name).unwrap_or(&Value::Null);
        // Deny rules hold for every name of every object: any match refuses.
        for (name, objects) in &resolved {
            for (i, object) in objects.iter().enumerate() {
                for (property, identifier) in &object.identifiers {
                    let candidate = replace_leaves(value_of(name), &mut |n| {
                        if n == i {
                            identifier.clone()
                        } else {
                            objects[n].canonical.clone()
                        }
                    });
                    if let Some(denied) =
                        run.grant.deny_for_value(&decision.cmdlet, name, &candidate)
                    {
                        return Err(Stop::Refused {
                            rule: denied.rule,
                            detail: format!(
                                "{name} resolves to {} whose {property} is refused: {}",
                                shown(name, &object.id),
                                denied.reason
                            ),
                        });
                    }
                }
            }
        }
        // The role constraints judge the objects' canonical addresses.
        let mut canonical = decision.parameters.clone();
        for (name, objects) in &resolved {
            let value = replace_leaves(value_of(name), &mut |n| objects[n].canonical.clone());
            canonical.insert((*name).to_owned(), value);
        }
        let redecided = run.grant.redecide(&decision.cmdlet, &canonical);
        if !redecided.allowed {
            return Err(Stop::Refused {
                rule: redecided.rule,
                detail: format!(
                    "judged on the resolved objects' addresses: {}",
                    redecided.reason
                ),
            });
        }
        if let Some(scope) = run.grant.target_scope_for(&redecided) {
            let rule = format!("target:{}", redecided.rule);
            let targets = resolved
                .iter()
                .find(|(n, _)| names::same(n, scope.parameter()))
                .map(|(_, objects)| objects.as_slice())
                .unwrap_or_default();
            if targets.is_empty() {
                return Err(Stop::Refused {
                    rule,
                    detail: format!("{} must name the target", scope.parameter()),
                });
            }
            if let Some(outside) = targets.iter().find(|o| !scope.admits(&o.canonical)) {
                return Err(Stop::Refused {
                    rule,
                    detail: format!(
                        "{} resolves to {}, outside the grant's target scope",
                        scope.parameter(),
                        shown(scope.parameter(), &outside.canonical)
                    ),
                });
            }
        }
        // What Exchange acts on is what was decided: each object by its immutable id.
        let mut pinned = redecided;
        for (key, value) in pinned.parameters.iter_mut() {
            if let Some((_, objects)) = resolved.iter().find(|(n, _)| names::same(n, key)) {
                *value = replace_leaves(value, &mut |n| objects[n].id.clone());
            }
        }
        pinned
            .reason
            .push_str("; decided on the resolved objects, sent with their immutable ids");
        Ok(pinned)
    }

    /// Resolves one identity value with `Get-Recipient` (read by the broker, not the guest):
    /// exactly one recipient, or the call is refused. Audited like any call, the value hashed
    /// where the parameter it came from is sensitive.
    async fn lookup(
        &self,
        run: &Run,
        decision: &Decision,
        name: &str,
        value: &str,
        sensitive: bool,
    ) -> Result<Recipient, Stop> {
        let lookup_decision = Decision {
            allowed: true,
            rule: format!("lookup:{}/{name}", decision.rule),
            reason: format!("resolve {name} before {}", decision.cmdlet),
            cmdlet: "Get-Recipient".to_owned(),
            parameters: Map::from_iter([
                ("Identity".to_owned(), Value::String(value.to_owned())),
                ("ResultSize".to_owned(), Value::from(2)),
            ]),
            sensitive: if sensitive {
                vec!["Identity".to_owned()]
            } else {
                Vec::new()
            },
            write: false,
        };
        self.record(run.tag.decision(&lookup_decision))
            .map_err(Stop::Failed)?;
        // Two are enough to tell one object from several.
        let mut pages = self.runner.start(Invocation::new(
            "Get-Recipient",
            Parameters::from([
                ("Identity".to_owned(), ParamValue::String(value.to_owned())),
                ("ResultSize".to_owned(), ParamValue::ResultSize(Some(2))),
            ]),
        ));
        let timeout = self.call_timeout.min(run.remaining());
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, async {
            let mut found = Vec::new();
            while found.len() < 2 {
                match pages.next_page_within(timeout).await? {
                    Some(page) if !page.objects.is_empty() => found.extend(page.objects),
                    _ => break,
                }
            }
            Ok::<_, warden_exchange::ExchangeError>(found)
        })
        .await;
        let (outcome, found) = match &answer {
            Ok(Ok(found)) => (Outcome::Ok, found.len() as u64),
            Ok(Err(error)) => (
                Outcome::Error {
                    kind: GuestError::from_exchange(error, timeout).kind().into(),
                },
                0,
            ),
            Err(_) => (
                Outcome::Error {
                    kind: "timeout".into(),
                },
                0,
            ),
        };
        self.record_later(
            run.tag
                .call(&lookup_decision, outcome, started.elapsed(), found, 0),
        )
        .map_err(Stop::Failed)?;
        let rule = format!("resolve:{}", decision.rule);
        let found = match answer {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                return Err(match GuestError::from_exchange(&error, timeout) {
                    // Exchange's word on the object (not found, ambiguous, no access): told
                    // to the guest as any other refusal, kept for the operator.
                    GuestError::Remote {
                        exception,
                        error_id,
                        ..
                    } => Stop::Refused {
                        rule,
                        detail: format!("{name}: the lookup failed with {exception} {error_id}"),
                    },
                    other => Stop::Failed(other),
                });
            }
            Err(_) => {
                return Err(Stop::Failed(GuestError::Timeout {
                    after_ms: timeout.as_millis() as u64,
                }));
            }
        };
        match found.as_slice() {
            [one] => Recipient::from_object(one).ok_or_else(|| Stop::Refused {
                rule,
                detail: format!("{name}: the recipient found has no immutable id to pin"),
            }),
            [] => Err(Stop::Refused {
                rule,
                detail: format!("{name}: no recipient answers to it"),
            }),
            _ => Err(Stop::Refused {
                rule,
                detail: format!("{name}: it names more than one recipient"),
            }),
        }
    }

    /// Records how deciding on the objects stopped and returns the guest's error. Every refusal
    /// reads the same to the guest (not found, several, out of scope, refused by a rule), so it
    /// learns nothing about objects it may not act on; the trail keeps the detail.
    fn stopped(
        &self,
        run: &Run,
        decision: &Decision,
        identities: &[(String, Vec<String>)],
        stop: Stop,
    ) -> Result<GuestError, GuestError> {
        match stop {
            Stop::Refused { rule, detail } => {
                let mut refused = decision.clone();
                (refused.allowed, refused.rule, refused.reason) = (false, rule, detail);
                let named: Vec<&str> = identities.iter().map(|(n, _)| n.as_str()).collect();
                let named = named.join(", ");
                // A read is told "not found" (what Exchange says of a missing object, so the
                // usual look-then-create still works), a write "denied"; within each kind the
                // answer is one and the same whatever the object's state.
                let error = if decision.write {
                    GuestError::Denied {
                        rule: format!("resolve:{}", decision.rule),
                        reason: format!(
                            "{named} does not name recipients this grant may act on with {}",
                            decision.cmdlet
                        ),
                    }
                } else {
                    GuestError::Remote {
                        error_id: String::new(),
                        exception: "ManagementObjectNotFoundException".into(),
                        message: format!(
                            "no recipient this grant may read with {} answers to {named}",
                            decision.cmdlet
                        ),
                        request_id: String::new(),
                    }
                };
                self.record_refusal(run, || refused, error.kind())?;
                Ok(error)
            }
            Stop::Failed(error) => {
                self.record_later(run.tag.call(
                    decision,
                    Outcome::Error {
                        kind: error.kind().into(),
                    },
                    Duration::ZERO,
                    0,
                    0,
                ))?;
                Ok(error)
            }
        }
    }
}

/// A call decided and on record, ready to send.
struct Decided {
    /// The decision as recorded (identities pinned to the objects' ids).
    decision: Decision,
    /// What the runner sends.
    invocation: Invocation,
}

tokio::task_local! {
    /// The id of the guest batch whose lines are being written ([`Broker::invoke_batch`]).
    static BATCH_ID: String;
}

/// Why deciding on the objects stopped short of the call.
enum Stop {
    /// Refused: the trail's rule and detail (the guest gets one answer for all).
    Refused { rule: String, detail: String },
    /// A lookup could not be made (throttled, timed out, Exchange or the trail unavailable).
    Failed(GuestError),
}

/// The guest's error for a call the policy refused: `invalid` for malformed input, else
/// `denied` with the rule.
fn refusal(rule: &str, reason: &str) -> GuestError {
    if rule.starts_with("invalid") {
        GuestError::Invalid {
            reason: reason.to_owned(),
        }
    } else {
        GuestError::Denied {
            rule: rule.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// `event` as a line of the guest batch being decided or closed, if any: every line of a batch
/// carries its id.
fn in_batch(event: Event) -> Event {
    match BATCH_ID.try_with(Clone::clone) {
        Ok(id) => event.in_batch(&id),
        Err(_) => event,
    }
}

/// What the guest is told when the trail cannot be written (the operator's log has why).
fn trail_unavailable(error: warden_audit::AuditError) -> GuestError {
    tracing::error!(error = %error, "audit trail write failed; refusing the call");
    GuestError::Unavailable {
        reason: "the audit trail cannot be written, so nothing may run".into(),
    }
}

/// A decision about a run rather than a call (its grant, a spent budget).
fn run_decision(allowed: bool, rule: &str, reason: &str) -> Decision {
    Decision {
        allowed,
        rule: rule.to_owned(),
        reason: reason.to_owned(),
        cmdlet: "(run)".to_owned(),
        parameters: Map::new(),
        sensitive: Vec::new(),
        write: false,
    }
}

/// The serialized length of one object, counted without building the text.
fn json_len(object: &Map<String, Value>) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, object);
    count.0
}

/// Exchange's identifiers of a failure, for the audit line.
fn error_ids(error: &warden_exchange::ExchangeError) -> warden_audit::ErrorIds {
    match error {
        warden_exchange::ExchangeError::Cmdlet(e) => warden_audit::ErrorIds {
            error_id: e.error_id.clone(),
            exception: e.exception_type.clone(),
            request_id: e.request_id.clone(),
        },
        warden_exchange::ExchangeError::AccessDenied {
            status, request_id, ..
        } => warden_audit::ErrorIds {
            error_id: None,
            exception: Some(format!("AccessDenied (HTTP {status})")),
            request_id: request_id.clone(),
        },
        warden_exchange::ExchangeError::NotExecuted { request_id, .. } => warden_audit::ErrorIds {
            error_id: None,
            exception: Some("NotExecuted".into()),
            request_id: request_id.clone(),
        },
        _ => warden_audit::ErrorIds::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_is_handed_over_as_serde_json_writes_it_whatever_its_size_hint() {
        let objects: Vec<Map<String, Value>> = [
            json!({}),
            json!({"S": "é\"\\\n\u{1}/", "N": [0, -1, 1.5e300, 18446744073709551615u64], "B": true}),
            json!({"Nested": {"A": [{"B": null}], "C": {}}, "Empty": [], "Long": "x".repeat(5000)}),
        ]
        .into_iter()
        .map(|v| match v {
            Value::Object(map) => map,
            _ => unreachable!(),
        })
        .collect();
        for n in 0..=objects.len() {
            let page = &objects[..n];
            let text = ObjectsText::of(page);
            assert_eq!(text.json(), serde_json::to_string(page).unwrap());
            assert_eq!(text.weight(), page.iter().map(json_len).sum::<u64>());
        }
    }
}
