//! # Rhai scripts in front of the broker
//!
//! [`ScriptHost`] compiles a script once ([`ScriptHost::compile`]) and runs it under a
//! principal ([`ScriptHost::run`]): the broker must grant the run (the grant is pinned to the
//! script's sha256), every cmdlet call goes through the same `Broker::invoke` / `Broker::stream`
//! with the same parameter JSON a wasm plugin would send, and the run ends with a run-end line
//! in the audit trail whatever happened.
//!
//! ## What a script can use
//!
//! - `exo::invoke(cmdlet)`, `exo::invoke(cmdlet, #{Param: value, ...})` → array of maps. The
//!   map becomes the parameter JSON object: integers, finite floats, booleans, strings,
//!   `()` → `null`, arrays, nested maps → objects (hashtables such as
//!   `#{EmailAddresses: #{Add: ["smtp:a@contoso.com"]}}`).
//! - `exo::stream(cmdlet[, params])` → a `Results`; `r.next()` is the next page (array of
//!   maps) or `()` at the end.
//! - `exo::for_each(cmdlet[, params], |obj| { ... })` calls the closure per object and returns
//!   how many there were.
//! - `exo::batch([#{cmdlet: "Get-Mailbox", parameters: #{...}}, ...])` runs the calls as one
//!   broker batch (`Broker::invoke_batch`: each judged as if made alone, the allowed ones sent
//!   together) and returns one map per call, in order: `#{ok: true, objects: [...]}` or
//!   `#{ok: false, error: <the map a failed call throws>}`.
//! - `exo::grants()` → array of maps (`cmdlet`, `rule`, `parameters`, `write`,
//!   `max_result_size`, `output`, `target_parameter`); `exo::usage()` → map (`calls`,
//!   `writes`, `objects`, `output_bytes`).
//! - A refused or failed call throws a map: the broker's error as JSON (`kind` — `denied`,
//!   `invalid`, `budget`, `throttled`, `remote`, `timeout`, `outcome-unknown`,
//!   `unavailable` — and its fields, such as `rule` and `reason`) plus `message`. It can be
//!   caught: `try { ... } catch (e) { if e.kind == "denied" { ... } }`.
//! - `log::trace/debug/info/warn/error(msg)`, `progress(done, total_or_unit, label)`,
//!   `print(x)` (the run's stdout), `debug(x)` (its stderr): all go to the run's observer,
//!   within the log caps.
//! - `ARGS`: the run's arguments, a constant array of strings.
//! - The script's last value is its output, as JSON.
//!
//! ## What it refuses
//!
//! `import` and `eval` (syntax errors), the time package, `sleep`, files and stdout; and
//! running past the limits: operations (50 million), call depth (64), expression
//! depth, memory (the smaller of the grant's memory budget and
//! [`RuntimeLimits::max_memory_bytes`], counted by the allocator — every byte the run's
//! thread allocates and still holds, whatever value holds it; see `memory`), the size of any
//! one string, array or map (derived from the same limit, so that one operation cannot jump
//! far past it), the grant's CPU budget (the script's time outside host calls), the run's
//! wall-clock deadline (host calls included; a host call is cut off at the deadline), output
//! size and log size. A limit stops the script where `try`/`catch` cannot intervene.
//!
//! Memory is checked on every operation, against the most the run has held at any moment
//! (inside an operation too); the clocks whenever the clock thread has ticked
//! ([`RuntimeLimits::tick`]). So a run ends at most one operation past its memory limit and
//! one tick plus one operation past its CPU budget, and the size limits and the guarded
//! built-ins (`surface`) keep any one operation small. A run that ended past its memory limit
//! is reported stopped at it even if it completed. The report carries the CPU time and the
//! memory peak ([`RunReport::cpu_used`], [`RunReport::peak_memory_bytes`]).

mod helpers;
mod interactive;
mod json;
mod memory;
mod session;
mod surface;
#[cfg(test)]
mod tests;

use crate::supervisor::Supervisor;
use crate::{
    GuestOutput, RunOutcome, RunReport, RunRequest, RuntimeError, RuntimeLimits, StopReason,
};
use rhai::{AST, Dynamic, EvalAltResult, Position, Scope};
use session::Session;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use surface::{SharedModule, Sizes};
use warden_broker::{Broker, GuestError};
use warden_policy::Principal;

pub use interactive::ScriptSession;
pub use surface::{MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH};

/// Largest script source accepted.
const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// Native stack of the thread a script runs on: Rhai recurses on the native stack for every
/// script call level and nested expression, and a debug build needs far more per level than
/// the 2 MiB a blocking-pool thread has. Only touched pages are committed.
const SCRIPT_STACK_BYTES: usize = 64 * 1024 * 1024;
/// How long past the run's deadline the host waits for the script thread to notice it before
/// reporting the run stopped anyway.
const GRACE: Duration = Duration::from_secs(2);

/// Compiles and runs Rhai scripts.
pub struct ScriptHost {
    limits: RuntimeLimits,
    /// The standard packages, shared by every run's engine (they hold no state).
    packages: Arc<[SharedModule]>,
    compiler: rhai::Engine,
}

impl fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptHost")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A parsed script, ready to run any number of times.
#[derive(Debug, Clone)]
pub struct CompiledScript {
    what: String,
    sha256: String,
    ast: Arc<AST>,
}

impl CompiledScript {
    /// SHA-256 (lowercase hex) of the source: what a grant pins.
    pub fn source_sha256(&self) -> &str {
        &self.sha256
    }
}

impl ScriptHost {
    /// A host enforcing `limits` on every run.
    pub fn new(limits: RuntimeLimits) -> Self {
        let packages: Arc<[SharedModule]> = surface::packages().into();
        let compiler = surface::compiler(&packages, Sizes::for_memory(limits.max_memory_bytes));
        Self {
            limits,
            packages,
            compiler,
        }
    }

    /// Parses a script. `what` is the file path or `inline script`; it names the script in
    /// errors.
    pub fn compile(&self, what: &str, source: &str) -> Result<CompiledScript, RuntimeError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(RuntimeError::Load {
                what: what.to_owned(),
                problem: format!(
                    "the script is {} bytes, over the {MAX_SOURCE_BYTES}-byte limit",
                    source.len()
                ),
                fix: "split the work into smaller scripts, or write a wasm plugin".into(),
            });
        }
        // `ARGS` is known to the parser (strict variables) but not as a constant, so the
        // optimizer cannot fold it into the script.
        let mut scope = Scope::new();
        scope.push("ARGS", rhai::Array::new());
        let mut ast = self
            .compiler
            .compile_with_scope(&scope, source)
            .map_err(|error| syntax_error(what, &error))?;
        ast.set_source(what);
        Ok(CompiledScript {
            what: what.to_owned(),
            sha256: warden_policy::sha256_hex(source.as_bytes()),
            ast: Arc::new(ast),
        })
    }

    /// The signature of every function a script can call — warden's own (`exo::`, `log::`,
    /// `progress`, the bounded string functions) and the language packages' — one per line,
    /// sorted: what `docs/rhai-api.md` is generated from. The engine is the one a run gets, so
    /// it needs a run: `principal` must have a grant under `broker`'s policy, and the run is
    /// recorded in the audit trail like any other (it makes no call). Only under the
    /// `api-reference` feature (Rhai's `metadata`, which the product engine must not have).
    #[cfg(feature = "api-reference")]
    pub fn api_signatures(
        &self,
        broker: &Broker,
        principal: Principal,
    ) -> Result<Vec<String>, RuntimeError> {
        let Begun {
            supervisor,
            session,
            memory,
            ..
        } = self.begin(broker, principal, &RunRequest::new(Vec::new()))?;
        let engine = surface::for_run(&self.packages, Sizes::for_memory(memory), &session);
        let mut signatures = engine.gen_fn_signatures(true);
        signatures.sort();
        signatures.dedup();
        supervisor.finish(RunOutcome::Completed {
            output: GuestOutput::Text("listed the script API".into()),
        });
        Ok(signatures)
    }

    /// Runs `script` under `principal` (whose hash must be the script's). Returns a report for
    /// every run the broker started, whatever its outcome; an error only when it never started.
    pub async fn run(
        &self,
        script: &CompiledScript,
        principal: Principal,
        broker: &Broker,
        request: RunRequest,
    ) -> Result<RunReport, RuntimeError> {
        if principal.sha256() != script.sha256 {
            // A caller bug, but it would run this code under another script's grant.
            return Err(RuntimeError::Refused(GuestError::Denied {
                rule: "runtime:script-hash".into(),
                reason: format!(
                    "{principal} does not match {} (sha256 {})",
                    script.what, script.sha256
                ),
            }));
        }
        let Begun {
            account,
            supervisor,
            session,
            memory,
        } = self.begin(broker, principal, &request)?;

        let (send, receive) = tokio::sync::oneshot::channel();
        let job = {
            let (session, packages, ast) =
                (session.clone(), self.packages.clone(), script.ast.clone());
            let (args, max_output) = (request.args, self.limits.max_output_bytes);
            move || {
                let mut account = account;
                let outcome = {
                    // Everything the script thread allocates from here is the run's.
                    let _charged = account.enter();
                    evaluate(&session, &packages, memory, &ast, args, max_output)
                };
                let _ = send.send(outcome);
                // `account` drops here: the run's slot is free once the thread is done.
            }
        };
        let spawned = std::thread::Builder::new()
            .name(format!("warden-script-{}", supervisor.run().id()))
            .stack_size(SCRIPT_STACK_BYTES)
            .spawn(job);
        let outcome = match spawned {
            Err(error) => {
                let detail = format!("could not start the script thread: {error}");
                supervisor.abandon(&detail);
                return Err(RuntimeError::Setup(detail));
            }
            Ok(_thread) => match past_deadline(&supervisor, receive).await {
                Some(Ok(outcome)) => outcome,
                // The thread ended without an answer: it panicked.
                Some(Err(_)) => RunOutcome::Stopped {
                    reason: StopReason::Trap {
                        message: "the script engine failed".into(),
                    },
                },
                // Stuck where no operation is counted; it stops at its next one.
                None => RunOutcome::Stopped {
                    reason: supervisor.stop(supervisor.wall_clock_stop()),
                },
            },
        };

        let mut report = supervisor.finish(outcome);
        report.peak_memory_bytes = Some(session.peak_memory());
        Ok(report)
    }
}

/// Waits for `answer` until [`GRACE`] past the run's deadline (`None`: it did not come). The
/// deadline is read again whenever the wait ends, not once before: the guest's start on the
/// script thread ([`Supervisor::start_guest`]) moves it later, and a wait sized before that
/// would stop a guest still within its time.
async fn past_deadline<T>(
    supervisor: &Supervisor,
    answer: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut answer = std::pin::pin!(answer);
    loop {
        let until = supervisor.run().deadline() + GRACE;
        if let Ok(value) = tokio::time::timeout_at(until.into(), answer.as_mut()).await {
            return Some(value);
        }
        if supervisor.run().deadline() + GRACE <= std::time::Instant::now() {
            return None;
        }
    }
}

/// What every script run starts with: its memory account (the thread that runs the script
/// enters it), the run begun under the supervisor, the memory budget, and the session the host
/// functions share. A run whose memory cannot be counted is never begun.
struct Begun {
    account: memory::Account,
    supervisor: Arc<Supervisor>,
    session: Arc<Session>,
    memory: u64,
}

impl ScriptHost {
    fn begin(
        &self,
        broker: &Broker,
        principal: Principal,
        request: &RunRequest,
    ) -> Result<Begun, RuntimeError> {
        memory::self_test().map_err(|error| RuntimeError::Setup(error.to_string()))?;
        let account =
            memory::Account::open().map_err(|error| RuntimeError::Setup(error.to_string()))?;
        let supervisor = Supervisor::begin(broker, principal, None, &self.limits, request)?;
        let memory = supervisor
            .run()
            .grant()
            .budgets()
            .memory_bytes
            .min(self.limits.max_memory_bytes);
        let session = Arc::new(Session::new(
            supervisor.clone(),
            tokio::runtime::Handle::current(),
            &self.limits,
            account.meter(),
            memory,
        ));
        Ok(Begun {
            account,
            supervisor,
            session,
            memory,
        })
    }
}

/// Runs the script on the current (script) thread and turns its end into an outcome.
// Not inlined: bench/callgrind/refusal.sh counts inside it.
#[inline(never)]
fn evaluate(
    session: &Arc<Session>,
    packages: &[SharedModule],
    memory_bytes: u64,
    ast: &AST,
    args: Vec<String>,
    max_output_bytes: usize,
) -> RunOutcome {
    let engine = surface::for_run(packages, Sizes::for_memory(memory_bytes), session);
    let mut scope = Scope::new();
    let args: rhai::Array = args.into_iter().map(Dynamic::from).collect();
    scope.push_constant("ARGS", args);
    session.start_guest();
    let result = engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast);
    session.end_cpu();
    // Streams the script still holds close (as abandoned) before the run's end is recorded.
    drop(scope);
    let outcome = match result {
        Ok(value) => output(&value, max_output_bytes),
        Err(error) => match *error {
            EvalAltResult::Exit(value, _) => output(&value, max_output_bytes),
            error => failure(session, &error),
        },
    };
    drop(engine);
    // The last operation, or turning the result into output, may have gone past the limit
    // after the last check: such a run did not complete within its budget.
    let outcome = match outcome {
        RunOutcome::Completed { .. } | RunOutcome::Failed { .. } if session.over_memory() => {
            RunOutcome::Stopped {
                reason: session.memory_stop(),
            }
        }
        outcome => outcome,
    };
    session.end_memory();
    outcome
}

/// The script's value as its output, within the output cap.
fn output(value: &Dynamic, max_output_bytes: usize) -> RunOutcome {
    let value = match json::to_json(value) {
        Ok(value) => value,
        Err(problem) => {
            return RunOutcome::Failed {
                message: format!("the script's result cannot be output as JSON: {problem}"),
            };
        }
    };
    let size = value.to_string().len();
    if size > max_output_bytes {
        return RunOutcome::Stopped {
            reason: StopReason::Output {
                size_bytes: size as u64,
                limit_bytes: max_output_bytes as u64,
            },
        };
    }
    RunOutcome::Completed {
        output: GuestOutput::Json(value),
    }
}

/// How an error ends the run: a limit stops it, anything else is the script's failure.
fn failure(session: &Session, error: &EvalAltResult) -> RunOutcome {
    let inner = error.unwrap_inner();
    let limit = |what: &str| RunOutcome::Stopped {
        reason: StopReason::ScriptLimit { what: what.into() },
    };
    match inner {
        EvalAltResult::ErrorTerminated(..) => RunOutcome::Stopped {
            // Only the session terminates scripts, and it records why first.
            reason: session.stop_reason().unwrap_or(StopReason::ScriptLimit {
                what: "termination".into(),
            }),
        },
        EvalAltResult::ErrorTooManyOperations(..) => limit("operations"),
        EvalAltResult::ErrorStackOverflow(..) => limit("call depth"),
        EvalAltResult::ErrorTooManyVariables(..) => limit("variables"),
        EvalAltResult::ErrorTooManyModules(..) => limit("modules"),
        EvalAltResult::ErrorDataTooLarge(what, _) => limit(&size_limit(what)),
        _ => RunOutcome::Failed {
            message: failure_message(error),
        },
    }
}

/// Rhai's name for a size limit in our words.
fn size_limit(what: &str) -> String {
    let what = what.to_ascii_lowercase();
    if what.contains("string") {
        "string size".into()
    } else if what.contains("array") {
        "array size".into()
    } else if what.contains("map") {
        "map size".into()
    } else {
        what
    }
}

/// An uncaught error: its message, where it was raised, and the function it was raised in.
fn failure_message(error: &EvalAltResult) -> String {
    let inner = error.unwrap_inner();
    let text = match inner {
        // A thrown value: the broker's error map says it in `message`; a string is itself.
        EvalAltResult::ErrorRuntime(value, _) => {
            let message = value
                .read_lock::<rhai::Map>()
                .and_then(|map| map.get("message").map(Dynamic::to_string));
            match message {
                Some(message) => message,
                None if value.is_unit() => "the script threw ()".into(),
                None => value.to_string(),
            }
        }
        other => {
            let text = other.to_string();
            // Rhai appends " (line L, position C)"; the position is added below in our words.
            let suffix = format!(" ({})", other.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
    };
    let mut message = text;
    let position = inner.position();
    if let (Some(line), Some(column)) = (position.line(), position.position()) {
        message.push_str(&format!(" (line {line}, column {column})"));
    }
    if let EvalAltResult::ErrorInFunctionCall(function, ..) = error
        && !function.is_empty()
        && !function.starts_with("anon$")
    {
        message.push_str(&format!(" in function {function}"));
    }
    message
}

/// A parse error as a load error.
fn syntax_error(what: &str, error: &rhai::ParseError) -> RuntimeError {
    let position: Position = error.1;
    let at = match (position.line(), position.position()) {
        (Some(line), Some(column)) => format!("line {line}, column {column}"),
        (Some(line), None) => format!("line {line}"),
        _ => "the end of the script".into(),
    };
    let detail = error.0.to_string();
    let fix = if detail.contains("'import'") || detail.contains("'eval'") {
        "scripts cannot import modules or evaluate code; put everything in the one script"
    } else {
        "fix the script and run it again"
    };
    RuntimeError::Load {
        what: what.to_owned(),
        problem: format!("syntax error at {at}: {detail}"),
        fix: fix.into(),
    }
}
