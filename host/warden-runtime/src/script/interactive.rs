//! A script run that evaluates one text at a time: `warden repl` (a line at a time, variables
//! and functions kept between lines) and `warden eval` with piped input (one text, with an
//! `input` variable). It is one run — one grant, one set of budgets, one audit record — on one
//! script thread whose allocations are the run's, like [`ScriptHost::run`].
//!
//! What it runs is what its principal names: an interactive ad hoc principal (empty text)
//! runs any line, each recorded in the audit trail before it runs; any other principal runs
//! only the text it was pinned or begun with. Waiting for the next line is not CPU time (the
//! wait is a host wait, like a cmdlet call) but it is wall-clock time: the grant's wall clock
//! bounds the whole session, and a session past it ends. A line stopped at a limit ends the
//! run; a line that fails (a throw, a refused call, a syntax error) does not.

use super::session::Session;
use super::surface::{self, Sizes};
use super::{MAX_SOURCE_BYTES, SCRIPT_STACK_BYTES, ScriptHost, failure, output};
use crate::supervisor::Supervisor;
use crate::{RunOutcome, RunReport, RunRequest, RuntimeError, StopReason};
use rhai::{AST, Dynamic, EvalAltResult, Scope};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use warden_broker::{Broker, GuestError};
use warden_policy::{Grant, Principal};

/// One text to evaluate and where its outcome goes.
struct Job {
    source: String,
    reply: oneshot::Sender<RunOutcome>,
}

/// An open run evaluating texts one at a time ([`ScriptHost::open`]).
#[derive(Debug)]
pub struct ScriptSession {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    ended: Option<oneshot::Receiver<()>>,
    session: Arc<Session>,
    supervisor: Arc<Supervisor>,
    state: Arc<Mutex<State>>,
}

/// What the host side knows of the script thread's progress.
#[derive(Debug, Default)]
struct State {
    /// The outcome of the last text evaluated.
    last: Option<RunOutcome>,
    /// The limit that ended the run, if one did.
    stopped: Option<StopReason>,
    /// Variables in the session's scope after the last text (for completion).
    variables: Vec<String>,
    /// After a stop: the variables a next session may start from.
    carried: Vec<(String, serde_json::Value)>,
}

impl ScriptHost {
    /// Parses a script that will run with `variables` defined (as [`ScriptHost::open`] defines
    /// them), to report a syntax error before anything starts.
    pub fn compile_with_variables(
        &self,
        what: &str,
        source: &str,
        variables: &[&str],
    ) -> Result<(), RuntimeError> {
        if source.len() > MAX_SOURCE_BYTES {
            return self.compile(what, source).map(|_| ());
        }
        let mut scope = Scope::new();
        for name in variables {
            scope.push(*name, ());
        }
        self.compiler
            .compile_with_scope(&scope, source)
            .map(|_| ())
            .map_err(|error| super::syntax_error(what, &error))
    }

    /// Begins a run for `principal` that evaluates texts one at a time
    /// ([`ScriptSession::eval`]): `ARGS` from the request, `constants` (such as `input`) and
    /// `variables` (carried from an earlier session, [`ScriptSession::carried`]) defined. The
    /// request's interrupt stops the text running when it is triggered, and with it the run.
    pub async fn open(
        &self,
        principal: Principal,
        broker: &Broker,
        request: RunRequest,
        constants: Vec<(String, serde_json::Value)>,
        variables: Vec<(String, serde_json::Value)>,
    ) -> Result<ScriptSession, RuntimeError> {
        let super::Begun {
            account,
            supervisor,
            session,
            memory,
        } = self.begin(broker, principal, &request)?;
        let (jobs, mut receive) = mpsc::unbounded_channel::<Job>();
        let (end, ended) = oneshot::channel();
        let state = Arc::new(Mutex::new(State::default()));
        let job = {
            let (session, packages, state) =
                (session.clone(), self.packages.clone(), state.clone());
            let max_output = self.limits.max_output_bytes;
            move || {
                let mut account = account;
                {
                    let _charged = account.enter();
                    let engine = surface::for_run(&packages, Sizes::for_memory(memory), &session);
                    let mut scope = Scope::new();
                    let args: rhai::Array = request.args.into_iter().map(Dynamic::from).collect();
                    scope.push_constant("ARGS", args);
                    for (name, value) in constants {
                        let value = rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT);
                        scope.push_constant(name, value);
                    }
                    for (name, value) in variables {
                        let value = rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT);
                        scope.push(name, value);
                    }
                    let mut functions = AST::empty();
                    // The guest's clocks start here, as a script run's do before it is
                    // evaluated: without it the CPU budget never counted in a session.
                    session.start_guest();
                    // The wait for the next text is a host wait: not CPU, but bounded by the
                    // run's deadline.
                    while let Ok(Some(job)) =
                        session.call(async { Ok::<_, GuestError>(receive.recv().await) })
                    {
                        let outcome = line(
                            &engine,
                            &session,
                            &mut scope,
                            &mut functions,
                            &job.source,
                            max_output,
                        );
                        let stopped = match &outcome {
                            RunOutcome::Stopped { reason } => Some(reason.clone()),
                            _ => None,
                        };
                        {
                            let mut state = state.lock().expect("session state lock");
                            state.last = Some(outcome.clone());
                            state.variables =
                                scope.iter_raw().map(|(name, ..)| name.to_owned()).collect();
                            state.stopped.clone_from(&stopped);
                        }
                        // What a next session may start from, known before the answer goes
                        // out: the variables with a JSON form (not constants, closures or
                        // streams).
                        if stopped.is_some() {
                            let carried = scope
                                .iter_raw()
                                .filter(|(_, constant, _)| !constant)
                                .filter_map(|(name, _, value)| {
                                    Some((name.to_owned(), super::json::to_json(value).ok()?))
                                })
                                .collect();
                            state.lock().expect("session state lock").carried = carried;
                        }
                        let _ = job.reply.send(outcome);
                        if stopped.is_some() {
                            break;
                        }
                    }
                    session.end_cpu();
                    drop(scope);
                    drop(engine);
                    session.end_memory();
                }
                let _ = end.send(());
            }
        };
        let spawned = std::thread::Builder::new()
            .name(format!("warden-script-{}", supervisor.run().id()))
            .stack_size(SCRIPT_STACK_BYTES)
            .spawn(job);
        if let Err(error) = spawned {
            let detail = format!("could not start the script thread: {error}");
            supervisor.abandon(&detail);
            return Err(RuntimeError::Setup(detail));
        }
        Ok(ScriptSession {
            jobs: Some(jobs),
            ended: Some(ended),
            session,
            supervisor,
            state,
        })
    }
}

/// Evaluates one text in the session's scope (on the script thread).
fn line(
    engine: &rhai::Engine,
    session: &Session,
    scope: &mut Scope<'static>,
    functions: &mut AST,
    source: &str,
    max_output: usize,
) -> RunOutcome {
    if source.len() > MAX_SOURCE_BYTES {
        return RunOutcome::Failed {
            message: format!("the text is over the {MAX_SOURCE_BYTES}-byte limit"),
        };
    }
    let parsed = match engine.compile_with_scope(scope, source) {
        Ok(ast) => ast,
        Err(error) => {
            return RunOutcome::Failed {
                message: match super::syntax_error("line", &error) {
                    RuntimeError::Load { problem, .. } => problem,
                    other => other.to_string(),
                },
            };
        }
    };
    let ast = functions.merge(&parsed);
    let result = engine.eval_ast_with_scope::<Dynamic>(scope, &ast);
    // Functions a line defines are there for the lines after it.
    *functions = functions.merge(&parsed.clone_functions_only());
    let outcome = match result {
        Ok(value) => output(&value, max_output),
        Err(error) => match *error {
            EvalAltResult::Exit(value, _) => output(&value, max_output),
            error => failure(session, &error),
        },
    };
    match outcome {
        RunOutcome::Completed { .. } | RunOutcome::Failed { .. } if session.over_memory() => {
            RunOutcome::Stopped {
                reason: session.memory_stop(),
            }
        }
        outcome => outcome,
    }
}

impl ScriptSession {
    /// The run id, in every audit line of the session.
    pub fn run_id(&self) -> &str {
        self.supervisor.run().id()
    }

    /// The grant in force.
    pub fn grant(&self) -> &Grant {
        self.supervisor.run().grant()
    }

    /// Usage so far.
    pub fn usage(&self) -> warden_broker::Usage {
        self.supervisor.run().usage()
    }

    /// The variables defined so far (after the last text), for completion.
    pub fn variables(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("session state lock")
            .variables
            .clone()
    }

    /// After the run was stopped (a limit, an interrupt): its variables that have a JSON form,
    /// for [`ScriptHost::open`] to start a next session from. Closures, functions and
    /// streams are not carried.
    pub fn carried(&self) -> Vec<(String, serde_json::Value)> {
        self.state
            .lock()
            .expect("session state lock")
            .carried
            .clone()
    }

    /// The limit that ended the run, if one did: the session evaluates nothing more.
    pub fn stopped(&self) -> Option<StopReason> {
        self.state
            .lock()
            .expect("session state lock")
            .stopped
            .clone()
            .or_else(|| self.session.stop_reason())
    }

    /// Evaluates one text: its value (as JSON), its failure, or the limit that stopped the run.
    /// An interactive ad hoc principal's text is recorded in the audit trail first; any other
    /// principal may evaluate only the text it was pinned or begun with.
    pub async fn eval(&self, source: &str) -> RunOutcome {
        if let Some(reason) = self.stopped() {
            return RunOutcome::Stopped { reason };
        }
        let principal = self.supervisor.run().principal();
        let interactive = matches!(principal, Principal::AdHoc { source, .. } if source.is_empty());
        if !interactive && warden_policy::sha256_hex(source.as_bytes()) != principal.sha256() {
            return RunOutcome::Failed {
                message: format!(
                    "{principal} runs only its own text; this text is another (sha256 {})",
                    warden_policy::sha256_hex(source.as_bytes())
                ),
            };
        }
        // Refused before it is recorded: a pasted 100 MB line would otherwise fill the trail
        // with thousands of parts of a text that never runs.
        if source.len() > MAX_SOURCE_BYTES {
            return RunOutcome::Failed {
                message: format!("the text is over the {MAX_SOURCE_BYTES}-byte limit"),
            };
        }
        if interactive
            && let Err(error) = self
                .supervisor
                .broker()
                .record_script(self.supervisor.run(), source)
        {
            return RunOutcome::Failed {
                message: error.to_string(),
            };
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.jobs.as_ref().is_some_and(|jobs| {
            jobs.send(Job {
                source: source.to_owned(),
                reply,
            })
            .is_ok()
        });
        // The script thread is gone without a stop on record only when it panicked: that is
        // the engine failing (as `ScriptHost::run` reports it), and it ends the run.
        let gone = || RunOutcome::Stopped {
            reason: self.stopped().unwrap_or_else(|| {
                self.supervisor.stop(StopReason::Trap {
                    message: "the script engine failed".into(),
                })
            }),
        };
        if !sent {
            return gone();
        }
        match super::past_deadline(&self.supervisor, answer).await {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => gone(),
            None => RunOutcome::Stopped {
                reason: self.supervisor.stop(self.supervisor.wall_clock_stop()),
            },
        }
    }

    /// Ends the run: its last line in the trail says how (stopped at a limit, else as the last
    /// text ended), and the report carries the usage, CPU time and memory peak.
    pub async fn close(mut self) -> RunReport {
        self.jobs = None;
        if let Some(ended) = self.ended.take()
            && super::past_deadline(&self.supervisor, ended)
                .await
                .is_none()
        {
            self.supervisor.stop(self.supervisor.wall_clock_stop());
        }
        let outcome = match self.stopped() {
            Some(reason) => RunOutcome::Stopped { reason },
            None => self
                .state
                .lock()
                .expect("session state lock")
                .last
                .clone()
                .unwrap_or(RunOutcome::Completed {
                    output: crate::GuestOutput::Json(serde_json::Value::Null),
                }),
        };
        let mut report = self.supervisor.finish(outcome);
        report.peak_memory_bytes = Some(self.session.peak_memory());
        report
    }
}
