//! `warden repl`: an interactive Rhai shell on the same broker and grant as `warden eval`.
//!
//! The session is one ad hoc run of the operator (the policy's `principal = "operator"`,
//! `script_inline = "any"` grant): its roles and budgets hold across lines, variables and
//! functions are kept between lines, and every line is recorded in the audit trail before it
//! runs. Ctrl-C stops the running line (the run ends stopped, as a limit would end it); the shell
//! then begins a new run, carrying over the variables that have a JSON form. Lines are edited
//! with `rustyline` (history, Tab completion of the cmdlets and parameters the grant allows).

use crate::guest_args::GuestArgs;
use crate::output::{Layout, ResultFormat, RunDisplay, escape, json_text};
use anyhow::Context;
use clap::Args;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use warden_policy::{Grant, OPERATOR, Principal};
use warden_runtime::script::ScriptSession;
use warden_runtime::{
    GuestOutput, Interrupt, RunOutcome, RunRequest, RuntimeLimits, ScriptHost, StopReason,
};

/// Arguments of `warden repl`.
#[derive(Debug, Args)]
#[command(
    after_help = "Lines are Rhai, as in `warden eval`. Commands: :json, :table, :csv \
(how results print), :grants (what the grant allows), :explain CMDLET [NAME=VALUE …] (the \
policy's decision on a call), :help, :quit. Ctrl-C stops the running line; Ctrl-D leaves.\n\
The session runs under the operator's ad hoc grant (principal = \"operator\", \
script_inline = \"any\"); every line is recorded in the audit trail."
)]
pub struct ReplArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// History file, created 0600 [default: ~/.local/state/warden/repl_history; none without HOME].
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
}

/// Completes the words a line is made of: the grant's cmdlets and their parameters, the `exo::`
/// functions and helpers, the session's variables and the shell's commands.
struct Words {
    fixed: Vec<String>,
    variables: Arc<Mutex<Vec<String>>>,
}

const FUNCTIONS: &[&str] = &[
    "exo::invoke(",
    "exo::stream(",
    "exo::first(",
    "exo::count(",
    "exo::for_each(",
    "exo::grants()",
    "exo::usage()",
    "sort_by(",
    "top(",
    "group_by(",
    "count_by(",
    "select(",
    "size_bytes(",
    "domain_of(",
    "table(",
    "csv(",
];
const COMMANDS: &[&str] = &[
    ":json",
    ":table",
    ":csv",
    ":grants",
    ":explain ",
    ":help",
    ":quit",
];

impl Words {
    fn new(grant: &Grant) -> Self {
        let mut fixed: Vec<String> = FUNCTIONS.iter().map(|f| (*f).to_owned()).collect();
        fixed.extend(COMMANDS.iter().map(|c| (*c).to_owned()));
        for allowed in grant.allowed_cmdlets() {
            fixed.push(allowed.cmdlet.clone());
            fixed.extend(allowed.parameters);
        }
        fixed.sort();
        fixed.dedup();
        Self {
            fixed,
            variables: Arc::default(),
        }
    }
}

impl Helper for Words {}
impl Highlighter for Words {}
impl Validator for Words {}
impl Hinter for Words {
    type Hint = String;
}

impl Completer for Words {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((start, Vec::new()));
        }
        let variables = self.variables.lock().expect("variables lock").clone();
        let found = self
            .fixed
            .iter()
            .chain(variables.iter())
            .filter(|w| {
                w.len() > word.len()
                    && w.get(..word.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(word))
            })
            .map(|w| Pair {
                display: w.clone(),
                replacement: w.clone(),
            })
            .collect();
        Ok((start, found))
    }
}

/// Runs `warden repl`.
pub async fn run(args: ReplArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let context = args.guest.broker().await?;
    if !context.broker.policy().has_ad_hoc_grant(OPERATOR) {
        anyhow::bail!(
            "{}: no ad hoc grant for the operator, so a typed line may not run\n  fix: add a read-only \
             grant with principal = \"operator\" and script_inline = \"any\" (policy.example.toml has one)",
            escape(
                &context.broker.policy().origin().display().to_string(),
                Layout::Line
            )
        );
    }
    let host = ScriptHost::new(RuntimeLimits::default());
    let display = RunDisplay::new(args.guest.quiet, verbose);
    let mut format = args.guest.output;
    let mut shell = Shell::open(&host, &context.broker, &display, Vec::new()).await?;

    let mut editor: Editor<Words, FileHistory> =
        Editor::new().context("cannot start line editing on this terminal")?;
    let words = Words::new(shell.session.grant());
    let variables = words.variables.clone();
    editor.set_helper(Some(words));
    let history = args.history.clone().or_else(default_history);
    if let Some(path) = &history {
        prepare_history(path)?;
        // A missing or unreadable history starts empty.
        let _ = editor.load_history(path);
    }
    eprintln!(
        "warden repl: grant {}, run {} (:help for commands, Ctrl-D to leave)",
        escape(shell.session.grant().id(), Layout::Line),
        shell.session.run_id()
    );
    loop {
        let read = tokio::task::block_in_place(|| editor.readline("warden> "));
        let line = match read {
            Ok(line) => line,
            // Ctrl-C at the prompt clears the line; Ctrl-D leaves.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error).context("cannot read a line"),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if let Some(history) = &history {
            let _ = editor.append_history(history);
        }
        match line.split_once(char::is_whitespace).unwrap_or((line, "")) {
            (":quit" | ":q" | ":exit", _) => break,
            (":json", _) => format = ResultFormat::Json,
            (":table", _) => format = ResultFormat::Table,
            (":csv", _) => format = ResultFormat::Csv,
            (":help", _) => println!("{HELP}"),
            (":grants", _) => grants(shell.session.grant(), format)?,
            (":explain", call) => explain(shell.session.grant(), call.trim())?,
            (command, _) if command.starts_with(':') => {
                eprintln!(
                    "error: unknown command {} (:help lists them)",
                    escape(command, Layout::Line)
                );
            }
            _ => {
                let outcome = shell.eval(line).await;
                print_outcome(&outcome, format)?;
                if let RunOutcome::Stopped { reason } = &outcome {
                    shell = shell.restart(&host, &context, &display, reason).await?;
                }
                *variables.lock().expect("variables lock") = shell.session.variables();
            }
        }
    }
    let report = shell.session.close().await;
    eprintln!(
        "run {} (grant {}): {}; {} call(s), {} object(s); audit: {}",
        report.run_id,
        escape(&report.grant_id, Layout::Line),
        report.outcome.status(),
        report.usage.calls,
        report.usage.objects,
        context.audit_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

const HELP: &str = "Rhai lines run under the operator's ad hoc grant; variables and functions stay \
between lines.\n  :json :table :csv           how results print\n  :grants                     \
the cmdlets, parameters and limits the grant allows\n  :explain CMDLET [N=V …]     the \
policy's decision on a call (V is JSON when it parses)\n  :quit (or Ctrl-D)           leave\n\
Ctrl-C stops the running line; a new run begins with the variables that have a JSON form.";

/// The session and the interrupt of its running line.
struct Shell {
    session: ScriptSession,
    interrupt: Interrupt,
}

impl Shell {
    async fn open(
        host: &ScriptHost,
        broker: &warden_broker::Broker,
        display: &Arc<RunDisplay>,
        carried: Vec<(String, Value)>,
    ) -> anyhow::Result<Self> {
        let interrupt = Interrupt::new();
        let request = RunRequest {
            args: Vec::new(),
            observer: display.clone(),
            interrupt: interrupt.clone(),
            delegation: None,
        };
        let session = host
            .open(
                Principal::ad_hoc(OPERATOR, ""),
                broker,
                request,
                Vec::new(),
                carried,
            )
            .await
            .map_err(crate::guest_args::runtime_error)?;
        Ok(Self { session, interrupt })
    }

    /// Runs a line; Ctrl-C while it runs interrupts it.
    async fn eval(&self, line: &str) -> RunOutcome {
        // Listening before the line starts: a Ctrl-C typed after its first output must never
        // come before the listener.
        let listener = match super::run::listen_for_ctrl_c().await {
            super::run::CtrlC::Listening(listener) => Some(listener),
            super::run::CtrlC::Pressed => {
                self.interrupt.interrupt();
                None
            }
            super::run::CtrlC::Unavailable => None,
        };
        let eval = self.session.eval(line);
        tokio::pin!(eval);
        // Biased: a line that has already finished is never interrupted (its stop would end
        // the run that the next line needs).
        tokio::select! {
            biased;
            outcome = &mut eval => outcome,
            Some(Ok(())) = async { match listener { Some(l) => Some(l.await), None => None } } => {
                self.interrupt.interrupt();
                eval.await
            }
        }
    }

    /// After a stop: closes the run and begins the next, carrying its variables over.
    async fn restart(
        self,
        host: &ScriptHost,
        context: &crate::guest_args::GuestContext,
        display: &Arc<RunDisplay>,
        reason: &StopReason,
    ) -> anyhow::Result<Self> {
        let carried = self.session.carried();
        let names: Vec<String> = carried.iter().map(|(n, _)| n.clone()).collect();
        let report = self.session.close().await;
        let next = Shell::open(host, &context.broker, display, carried).await?;
        eprintln!(
            "run {} ended ({}); run {} begins{}",
            report.run_id,
            escape(&reason.to_string(), Layout::Line),
            next.session.run_id(),
            if names.is_empty() {
                String::new()
            } else {
                format!(" with {}", escape(&names.join(", "), Layout::Line))
            }
        );
        Ok(next)
    }
}

fn print_outcome(outcome: &RunOutcome, format: ResultFormat) -> anyhow::Result<()> {
    match outcome {
        RunOutcome::Completed {
            output: GuestOutput::Json(Value::Null),
        } => {}
        RunOutcome::Completed { output } => crate::output::print_guest_output(output, format)?,
        RunOutcome::Failed { message } => {
            eprintln!("error: {}", escape(message, Layout::Line));
        }
        RunOutcome::Stopped { reason } => {
            eprintln!("error: {}", escape(&reason.to_string(), Layout::Line));
        }
    }
    Ok(())
}

/// `:grants`: what the grant allows, as rows.
fn grants(grant: &Grant, format: ResultFormat) -> anyhow::Result<()> {
    let rows: Vec<Value> = grant
        .allowed_cmdlets()
        .into_iter()
        .map(|c| {
            let mut row = Map::new();
            row.insert("cmdlet".into(), c.cmdlet.into());
            row.insert("parameters".into(), c.parameters.join(", ").into());
            row.insert("write".into(), c.write.into());
            row.insert(
                "max_result_size".into(),
                c.max_result_size.map_or(Value::Null, Value::from),
            );
            row.insert(
                "output".into(),
                c.output.map_or(Value::Null, |o| o.join(", ").into()),
            );
            Value::Object(row)
        })
        .collect();
    crate::output::print_guest_output(&GuestOutput::Json(Value::Array(rows)), format)
}

/// `:explain CMDLET [NAME=VALUE …]`: the policy's decision on the call, as `warden policy
/// explain` gives it (identities are judged as written: the broker resolves them when it runs).
fn explain(grant: &Grant, call: &str) -> anyhow::Result<()> {
    let mut words = call.split_whitespace();
    let Some(cmdlet) = words.next() else {
        eprintln!("error: :explain needs a cmdlet, e.g. :explain Get-Mailbox ResultSize=10");
        return Ok(());
    };
    let mut parameters = Map::new();
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            eprintln!("error: {} is not NAME=VALUE", escape(word, Layout::Line));
            return Ok(());
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        parameters.insert(name.to_owned(), value);
    }
    let decision = grant.check(cmdlet, &Value::Object(parameters).to_string());
    println!(
        "{}: {}",
        if decision.allowed {
            "ALLOWED"
        } else {
            "DENIED"
        },
        escape(cmdlet, Layout::Line)
    );
    println!("rule:      {}", escape(&decision.rule, Layout::Line));
    println!("why:       {}", escape(&decision.reason, Layout::Line));
    if decision.allowed {
        println!(
            "sent as:   {} {}",
            escape(&decision.cmdlet, Layout::Line),
            json_text(&Value::Object(decision.parameters.clone()), false)?
        );
    }
    Ok(())
}

fn default_history() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let dir = base.join("warden");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("repl_history"))
}

/// The history holds what was typed (as the audit trail does): readable by its owner only.
fn prepare_history(path: &std::path::Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| {
        format!(
            "{}: cannot open the history file\n  fix: pass --history FILE in a writable directory",
            escape(&path.display().to_string(), Layout::Line)
        )
    })?;
    Ok(())
}
