//! Rendering shared by subcommands: the output format flags, the diagnosis table, guest
//! output as table/JSON/CSV, and the live display (log lines, progress bar) of a run.

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};
use std::sync::Arc;
use warden_auth::diagnose::{Check, Status};
use warden_runtime::{GuestOutput, LogLevel, LogSource, RunObserver};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// A table of checks: status, name, what was found, the fix.
pub fn checks_table(checks: &[Check]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["", "check", "finding", "fix"]);
    if let Ok(width) = std::env::var("COLUMNS").unwrap_or_default().parse::<u16>() {
        table.set_width(width);
    } else {
        table.set_width(120);
    }
    for check in checks {
        table.add_row(vec![
            status_cell(check.status),
            Cell::new(check.name),
            Cell::new(&check.detail),
            Cell::new(check.fix.as_deref().unwrap_or("")),
        ]);
    }
    table
}

/// A coloured PASS/FAIL/WARN/SKIP cell.
pub fn status_cell(status: Status) -> Cell {
    match status {
        Status::Pass => Cell::new("PASS").fg(Color::Green),
        Status::Fail => Cell::new("FAIL").fg(Color::Red),
        Status::Warn => Cell::new("WARN").fg(Color::Yellow),
        Status::Skip => Cell::new("SKIP").fg(Color::DarkGrey),
    }
}

/// How a guest's output is printed by `run`, `script` and `eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ResultFormat {
    /// A table when the output is a list of objects, else the output as it is.
    #[default]
    Table,
    /// The output as one JSON document (text output becomes a JSON string unless it is JSON).
    Json,
    /// CSV when the output is a list of objects, else the output as it is.
    Csv,
}

/// Prints a guest's output on stdout in `format`.
pub fn print_guest_output(output: &GuestOutput, format: ResultFormat) -> anyhow::Result<()> {
    let value = match output {
        GuestOutput::Json(value) => value.clone(),
        GuestOutput::Text(text) => match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_array() || value.is_object() => value,
            // Plain text (a plugin's own CSV, a message): printed as it is, or as a JSON string.
            _ if format == ResultFormat::Json => Value::String(text.clone()),
            _ => {
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                return Ok(());
            }
        },
    };
    match format {
        ResultFormat::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        ResultFormat::Table => match rows_of(&value) {
            Some((columns, rows)) => println!("{}", rows_table(&columns, &rows)),
            None => println!("{}", plain(&value)),
        },
        ResultFormat::Csv => match rows_of(&value) {
            Some((columns, rows)) => {
                let mut writer = csv::Writer::from_writer(std::io::stdout().lock());
                writer.write_record(&columns)?;
                for row in rows {
                    writer.write_record(columns.iter().map(|c| cell_text(row.get(c))))?;
                }
                writer.flush()?;
            }
            None => println!("{}", plain(&value)),
        },
    }
    Ok(())
}

/// Rows of a table: the columns in first-seen order, then the objects.
type Rows<'a> = (Vec<String>, Vec<&'a Map<String, Value>>);

/// An array of objects as rows; a single object is one row.
fn rows_of(value: &Value) -> Option<Rows<'_>> {
    let rows: Vec<&Map<String, Value>> = match value {
        Value::Array(items) => items.iter().map(Value::as_object).collect::<Option<_>>()?,
        Value::Object(object) => vec![object],
        _ => return None,
    };
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for key in row.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    Some((columns, rows))
}

fn rows_table(columns: &[String], rows: &[&Map<String, Value>]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(columns);
    if let Ok(width) = std::env::var("COLUMNS").unwrap_or_default().parse::<u16>() {
        table.set_width(width);
    } else {
        table.set_width(160);
    }
    for row in rows {
        table.add_row(columns.iter().map(|c| cell_text(row.get(c))));
    }
    table
}

fn cell_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// What the operator sees while a guest runs: its log lines on stderr and a progress bar on a
/// terminal (indicatif hides it when stderr is not one).
#[derive(Debug)]
pub struct RunDisplay {
    bar: ProgressBar,
    quiet: bool,
    verbose: bool,
}

impl RunDisplay {
    /// A display for one run; `quiet` shows nothing, `verbose` also shows debug/trace lines.
    pub fn new(quiet: bool, verbose: bool) -> Arc<Self> {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{elapsed_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Arc::new(Self {
            bar,
            quiet,
            verbose,
        })
    }

    /// Removes the bar before the results are printed.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl RunObserver for RunDisplay {
    fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        tracing::debug!(target: "guest", ?source, %level, "{message}");
        if self.quiet || (level < LogLevel::Info && !self.verbose) {
            return;
        }
        let tag = match source {
            LogSource::Guest => level.to_string(),
            LogSource::Stdout => "stdout".to_owned(),
            LogSource::Stderr => "stderr".to_owned(),
        };
        self.bar.suspend(|| eprintln!("[guest {tag}] {message}"));
    }

    fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        self.bar.set_length(total.unwrap_or(done));
        self.bar.set_position(done);
        self.bar.set_message(label.to_owned());
    }
}
