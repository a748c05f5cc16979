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
//! Refusals are cheap for a guest and each one is an audit line (and, for a target-scoped
//! cmdlet, a lookup in Exchange), but they spend no budget and no guest CPU time. So a run may
//! be refused as many times as its grant lets it call; past that every refusal is answered
//! [`REFUSAL_DELAY`] late, and a guest looping on refused calls writes at most
//! `calls + wall_clock / REFUSAL_DELAY` lines before its wall clock ends it.

mod error;

pub use error::GuestError;

use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_audit::{AuditTrail, Event, Outcome};
use warden_exchange::{CmdletRunner, Invocation, PageStream, ParamValue, Parameters};
use warden_policy::{Decision, Declaration, Grant, Policy, Principal};

/// How late each refusal past a run's free ones is answered (see the crate docs): at most 100
/// refusal lines a second from a guest that keeps asking.
pub const REFUSAL_DELAY: Duration = Duration::from_millis(10);

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
}

/// One guest run: who it is, what it may do, what it has used.
#[derive(Debug)]
pub struct Run {
    id: String,
    principal: Principal,
    grant: Grant,
    usage: Mutex<Usage>,
    /// Calls refused so far (policy, budgets, target scope), each an audit line.
    refusals: AtomicU64,
    started: Instant,
}

impl Run {
    /// The run id, in every audit line of the run.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Who is running.
    pub fn principal(&self) -> &Principal {
        &self.principal
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
        *self.usage.lock().expect("usage lock")
    }
    /// Time left on the wall-clock budget.
    pub fn remaining(&self) -> Duration {
        self.grant
            .budgets()
            .wall_clock
            .saturating_sub(self.started.elapsed())
    }
}

/// The broker.
#[derive(Debug, Clone)]
pub struct Broker {
    policy: Arc<Policy>,
    runner: Arc<dyn CmdletRunner>,
    audit: Arc<AuditTrail>,
    call_timeout: Duration,
}

/// A guest's streaming call: pages pass through shaping and budgets one at a time.
#[derive(Debug)]
pub struct BrokeredStream {
    cmdlet: String,
    decision: Decision,
    /// For the closing line when the guest drops the stream before its end.
    audit: Arc<AuditTrail>,
    run_id: String,
    principal: Principal,
    pages: Box<dyn PageStream>,
    started: Instant,
    objects: u64,
    bytes: u64,
    done: bool,
}

impl Drop for BrokeredStream {
    /// A stream the guest abandons still closes its record: the call may have run (a write is
    /// sent with the first page request), so the trail must say how it ended.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let event = Event::call(
            &self.run_id,
            &self.principal,
            &self.decision,
            Outcome::Error {
                kind: "abandoned".into(),
            },
            self.started.elapsed(),
            self.objects,
            self.bytes,
        );
        if let Err(error) = self.audit.record(&event) {
            tracing::error!(error = %error, cmdlet = %self.cmdlet, "could not record an abandoned call");
        }
    }
}

fn param_value(name: &str, value: &Value) -> ParamValue {
    if name.eq_ignore_ascii_case("ResultSize") {
        match value {
            Value::String(s) if s.eq_ignore_ascii_case("unlimited") => {
                return ParamValue::ResultSize(None);
            }
            Value::Number(n) => {
                if let Some(n) = n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    return ParamValue::ResultSize(Some(n));
                }
            }
            _ => {}
        }
    }
    ParamValue::from_json(value)
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
        }
    }

    fn record(&self, event: Event) -> Result<(), GuestError> {
        self.audit.record(&event).map_err(|e| {
            tracing::error!(error = %e, "audit trail write failed; refusing the call");
            GuestError::Unavailable {
                reason: "the audit trail cannot be written, so nothing may run".into(),
            }
        })
    }

    /// Starts a run for `principal`: finds its grant (intersected with what it declared). The
    /// run's first audit line says which grant it got, or why it got none.
    pub fn begin(
        &self,
        principal: Principal,
        declared: Option<&Declaration>,
    ) -> Result<Run, GuestError> {
        let id = uuid::Uuid::new_v4().to_string();
        match self.policy.grant_for(&principal, declared) {
            Ok(grant) => {
                self.record(Event::decision(
                    &id,
                    &principal,
                    &run_decision(true, &format!("grant:{}", grant.id()), "run started"),
                ))?;
                Ok(Run {
                    id,
                    principal,
                    grant,
                    usage: Mutex::new(Usage::default()),
                    refusals: AtomicU64::new(0),
                    started: Instant::now(),
                })
            }
            Err(denial) => {
                self.record(Event::decision(
                    &id,
                    &principal,
                    &run_decision(false, &denial.rule, &denial.reason),
                ))?;
                Err(GuestError::Denied {
                    rule: denial.rule,
                    reason: denial.reason,
                })
            }
        }
    }

    /// Closes a run: its last audit line says how it ended (`completed`, `failed`,
    /// `stopped`) with a short detail (cut to 512 bytes: a guest's own message may be long).
    pub fn end(&self, run: &Run, status: &str, detail: &str) -> Result<(), GuestError> {
        let mut detail = detail.to_owned();
        if detail.len() > 512 {
            let mut cut = 512;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        self.record(Event::decision(
            &run.id,
            &run.principal,
            &run_decision(status == "completed", &format!("run-end:{status}"), &detail),
        ))
    }

    /// What a run may call (`exchange.grants()`).
    pub fn grants(&self, run: &Run) -> Vec<warden_policy::AllowedCmdlet> {
        run.grant.allowed_cmdlets()
    }

    /// Decides, audits and starts a call; results come page by page from the stream.
    pub async fn stream(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters_json: &str,
    ) -> Result<BrokeredStream, GuestError> {
        let started = self.start(run, cmdlet, parameters_json).await;
        if let Err(error) = &started {
            self.slow_down(run, error).await;
        }
        started
    }

    /// Counts a refusal and, past the run's free ones, answers it [`REFUSAL_DELAY`] late.
    async fn slow_down(&self, run: &Run, error: &GuestError) {
        if !matches!(
            error,
            GuestError::Denied { .. }
                | GuestError::Invalid { .. }
                | GuestError::BudgetExhausted { .. }
        ) {
            return;
        }
        let refusals = run.refusals.fetch_add(1, Ordering::Relaxed) + 1;
        if refusals > run.grant.budgets().calls {
            tokio::time::sleep(REFUSAL_DELAY).await;
        }
    }

    async fn start(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters_json: &str,
    ) -> Result<BrokeredStream, GuestError> {
        self.preflight(run, cmdlet)?;
        let budgets = run.grant.budgets().clone();
        let usage = run.usage();
        let decision = run.grant.check(cmdlet, parameters_json);
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
        // The decision is on record before anything else happens (fail closed).
        self.record(Event::decision(&run.id, &run.principal, &decision))?;
        if !decision.allowed {
            return Err(refusal(decision));
        }
        // Reserve the call (and write) before any await, under one lock, so concurrent calls of
        // one run cannot both squeeze past a budget; a refusal below gives the reservation back.
        {
            let mut usage = run.usage.lock().expect("usage lock");
            let writes_spent = decision.write && usage.writes >= budgets.writes;
            if usage.calls >= budgets.calls || writes_spent {
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
            usage.calls += 1;
            usage.writes += u64::from(decision.write);
        }
        if let Some(scope) = run.grant.target_scope_for(&decision)
            && let Err(error) = self.check_target(run, &decision, scope).await
        {
            {
                let mut usage = run.usage.lock().expect("usage lock");
                usage.calls -= 1;
                usage.writes -= u64::from(decision.write);
            }
            // Every way out leaves a line: a refusal as a decision, anything else as the call's
            // outcome.
            if let GuestError::Denied { rule, reason } = &error {
                let mut refused = decision.clone();
                (refused.allowed, refused.rule, refused.reason) =
                    (false, rule.clone(), reason.clone());
                self.record(Event::decision(&run.id, &run.principal, &refused))?;
            } else {
                self.record(Event::call(
                    &run.id,
                    &run.principal,
                    &decision,
                    Outcome::Error {
                        kind: error.kind().into(),
                    },
                    Duration::ZERO,
                    0,
                    0,
                ))?;
            }
            return Err(error);
        }
        let parameters: Parameters = decision
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), param_value(k, v)))
            .collect();
        let pages = self
            .runner
            .start(Invocation::new(decision.cmdlet.clone(), parameters));
        Ok(BrokeredStream {
            cmdlet: decision.cmdlet.clone(),
            decision,
            audit: self.audit.clone(),
            run_id: run.id.clone(),
            principal: run.principal.clone(),
            pages,
            started: Instant::now(),
            objects: 0,
            bytes: 0,
            done: false,
        })
    }

    /// The next page of a brokered stream: shaped, counted against the budgets, audited when
    /// the call completes.
    pub async fn next_page(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
    ) -> Result<Option<Vec<Map<String, Value>>>, GuestError> {
        let Some(objects) = self.next_shaped(run, stream).await? else {
            return Ok(None);
        };
        let bytes = objects.iter().map(json_len).sum();
        self.charge(run, stream, objects.len() as u64, bytes)?;
        Ok(Some(objects))
    }

    /// [`Broker::next_page`] as the JSON array a wasm guest receives. The page is serialized
    /// once: the `output_bytes` budget is counted from the same text the guest gets.
    pub async fn next_page_json(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
    ) -> Result<Option<String>, GuestError> {
        let Some(objects) = self.next_shaped(run, stream).await? else {
            return Ok(None);
        };
        let json = json_array(&objects);
        // What the objects weigh, as next_page counts it: the array less brackets and commas.
        let bytes = (json.len() - 2 - objects.len().saturating_sub(1)) as u64;
        self.charge(run, stream, objects.len() as u64, bytes)?;
        Ok(Some(json))
    }

    /// Fetches and shapes the next page; closes the stream's audit record on its end or error.
    async fn next_shaped(
        &self,
        run: &Run,
        stream: &mut BrokeredStream,
    ) -> Result<Option<Vec<Map<String, Value>>>, GuestError> {
        if stream.done {
            return Ok(None);
        }
        let timeout = self.call_timeout.min(run.remaining());
        // The session is told the same limit, so it fails a page rather than start a wait it
        // could not finish: a throttled or unsent write is then reported as such, not unknown.
        let page = match tokio::time::timeout(timeout, stream.pages.next_page_within(timeout)).await
        {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                tracing::warn!(cmdlet = %stream.cmdlet, error = %error, "cmdlet failed");
                let guest = GuestError::from_exchange(&error, timeout);
                stream.done = true;
                self.finish(
                    run,
                    stream,
                    Outcome::Error {
                        kind: guest.kind().into(),
                    },
                )?;
                return Err(guest);
            }
            Err(_) => {
                stream.done = true;
                // Dropping an in-flight write does not unsend it: the guest must not retry blindly.
                let guest = if stream.decision.write {
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
        let mut objects = page.objects;
        for object in &mut objects {
            run.grant.shape(&stream.cmdlet, object);
        }
        Ok(Some(objects))
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
    pub async fn invoke(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters_json: &str,
    ) -> Result<Vec<Map<String, Value>>, GuestError> {
        let mut stream = self.stream(run, cmdlet, parameters_json).await?;
        let mut all = Vec::new();
        while let Some(page) = self.next_page(run, &mut stream).await? {
            all.extend(page);
        }
        Ok(all)
    }

    /// [`Broker::invoke`] as one JSON array, each page serialized once and the pages joined.
    pub async fn invoke_json(
        &self,
        run: &Run,
        cmdlet: &str,
        parameters_json: &str,
    ) -> Result<String, GuestError> {
        let mut stream = self.stream(run, cmdlet, parameters_json).await?;
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

    /// Refuses a call whose parameters the front end could not express as JSON (a Rhai value
    /// with no JSON form, nesting past its limit): the same budget checks, decision line and
    /// `invalid` error as a call whose parameter JSON the policy could not parse, so such a
    /// call is on record like any other.
    pub async fn refuse_unrepresentable(
        &self,
        run: &Run,
        cmdlet: &str,
        problem: &str,
    ) -> GuestError {
        let error = match self.preflight(run, cmdlet) {
            Err(error) => error,
            Ok(()) => {
                let decision = run.grant.check_unrepresentable(cmdlet, problem);
                match self.record(Event::decision(&run.id, &run.principal, &decision)) {
                    Ok(()) => refusal(decision),
                    Err(error) => error,
                }
            }
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
        self.record(Event::decision(&run.id, &run.principal, &decision))?;
        Err(error)
    }

    fn finish(
        &self,
        run: &Run,
        stream: &BrokeredStream,
        outcome: Outcome,
    ) -> Result<(), GuestError> {
        self.record(Event::call(
            &run.id,
            &run.principal,
            &stream.decision,
            outcome,
            stream.started.elapsed(),
            stream.objects,
            stream.bytes,
        ))
    }

    /// Target scoping: resolve the object the cmdlet acts on (a read the broker makes itself)
    /// and check it against the grant's scope before the real call.
    async fn check_target(
        &self,
        run: &Run,
        decision: &Decision,
        scope: &warden_policy::TargetScope,
    ) -> Result<(), GuestError> {
        let parameter = scope.parameter();
        let Some(identity) = decision
            .parameters
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(parameter))
            .and_then(|(_, v)| v.as_str())
        else {
            return Err(GuestError::Denied {
                rule: format!("target:{}", decision.rule),
                reason: format!(
                    "{} is target-scoped: {parameter} must be given",
                    decision.cmdlet
                ),
            });
        };
        let lookup = Invocation::new(
            "Get-Recipient",
            Parameters::from([(
                "Identity".to_owned(),
                ParamValue::String(identity.to_owned()),
            )]),
        );
        let mut pages = self.runner.start(lookup);
        let timeout = self.call_timeout.min(run.remaining());
        // The broker's own read is on record too (it is not charged to the guest's budgets).
        let lookup_decision = Decision {
            allowed: true,
            rule: format!("target-lookup:{}", decision.rule),
            reason: format!("resolve {parameter} before {}", decision.cmdlet),
            cmdlet: "Get-Recipient".to_owned(),
            parameters: Map::from_iter([(
                "Identity".to_owned(),
                Value::String(identity.to_owned()),
            )]),
            sensitive: Vec::new(),
            write: false,
        };
        self.record(Event::decision(&run.id, &run.principal, &lookup_decision))?;
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, pages.next_page()).await;
        let outcome = match &answer {
            Ok(Ok(_)) => Outcome::Ok,
            Ok(Err(error)) => Outcome::Error {
                kind: GuestError::from_exchange(error, timeout).kind().into(),
            },
            Err(_) => Outcome::Error {
                kind: "timeout".into(),
            },
        };
        let found = u64::from(matches!(&answer, Ok(Ok(Some(page))) if !page.objects.is_empty()));
        self.record(Event::call(
            &run.id,
            &run.principal,
            &lookup_decision,
            outcome,
            started.elapsed(),
            found,
            0,
        ))?;
        let resolved = match answer {
            Ok(Ok(Some(page))) => page.objects.into_iter().next(),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => return Err(GuestError::from_exchange(&error, timeout)),
            Err(_) => {
                return Err(GuestError::Timeout {
                    after_ms: timeout.as_millis() as u64,
                });
            }
        };
        let address = resolved
            .as_ref()
            .and_then(|o| o.get("PrimarySmtpAddress"))
            .and_then(Value::as_str)
            .unwrap_or(identity);
        if scope.admits(address) {
            Ok(())
        } else {
            Err(GuestError::Denied {
                rule: format!("target:{}", decision.rule),
                reason: format!(
                    "{identity} resolves to {address}, outside the grant's target scope"
                ),
            })
        }
    }
}

/// The guest's error for a call the policy refused: `invalid` for malformed input, else
/// `denied` with the rule.
fn refusal(decision: Decision) -> GuestError {
    if decision.rule.starts_with("invalid") {
        GuestError::Invalid {
            reason: decision.reason,
        }
    } else {
        GuestError::Denied {
            rule: decision.rule,
            reason: decision.reason,
        }
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

/// A JSON array of result objects. Maps of JSON values always serialize.
fn json_array(objects: &[Map<String, Value>]) -> String {
    serde_json::to_string(objects).unwrap_or_else(|_| "[]".to_owned())
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
