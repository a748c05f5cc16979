//! Rendering shared by subcommands: the output format flags, the diagnosis table, guest
//! output as table/JSON/CSV, and the live display (log lines, progress bar) of a run.
//!
//! Two rules hold for everything printed here, because guests (and, for `invoke`, whoever can
//! set a mailbox property) choose the text:
//!
//! - **Terminal safety.** Text is shown through [`escape`]: control characters (ESC, CR,
//!   backspace, C1 controls), bidi overrides and isolates, and line separators are written as
//!   visible escapes (`\x1b`, `\u{202e}`), so no guest can move the cursor, erase a line,
//!   recolour the screen or forge a line of warden's own. JSON output stays exact: it is
//!   written with those characters as `\uXXXX` escapes ([`json_text`]), which parse back to the
//!   same strings.
//! - **Bounded rendering.** A table or CSV shows at most a fixed number of columns (the most
//!   frequent keys) and cuts long cells, writing rows as it goes; what was left out is named in
//!   a note on stderr. Its size follows the rows, never rows × distinct keys. Guest JSON is
//!   streamed, and pretty-printed only when small and shallow (indentation grows with depth).

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use unicode_width::UnicodeWidthChar;
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

/// How much layout text keeps when [`escape`] makes it safe to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One line: line breaks and tabs are escaped too (log lines, errors, labels, cells), so
    /// the text cannot start a line that looks like warden's own.
    Line,
    /// Text that may span lines (a plugin's plain-text output): `\n` and `\t` are kept.
    Text,
}

/// True for characters that steer a terminal rather than show a glyph: C0 and C1 controls and
/// DEL (ESC, CR, backspace, CSI …), bidi embeddings, overrides, isolates and marks (which can
/// reorder what is shown), and the Unicode line and paragraph separators.
fn steers_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` made safe to print on an operator's terminal: every character that could steer the
/// terminal is written as a visible escape (`\x1b`, `\r`, `\u{202e}`); with [`Layout::Text`],
/// line breaks and tabs are kept. The one function every print site of guest (or remote) text
/// goes through.
pub fn escape(text: &str, layout: Layout) -> Cow<'_, str> {
    let needs = |c: char| match c {
        '\n' | '\t' => layout == Layout::Line,
        c => steers_terminal(c),
    };
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if !needs(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for one line, then cut to `max` columns (with `…`), so a label or a cell cannot
/// fill the screen.
pub fn escape_cut(text: &str, max: usize) -> (String, bool) {
    let escaped = escape(text, Layout::Line);
    let mut used = 0;
    // The end of the longest start that leaves a column for the ellipsis.
    let mut keep = 0;
    for (i, c) in escaped.char_indices() {
        used += columns(c);
        if used > max {
            return (format!("{}…", &escaped[..keep]), true);
        }
        if used < max {
            keep = i + c.len_utf8();
        }
    }
    (escaped.into_owned(), false)
}

/// The columns `text` is given in tables: the one measure cutting and padding share.
fn display_width(text: &str) -> usize {
    text.chars().map(columns).sum()
}

/// Columns a character is given: its display width, but at least one, so a run of zero-width
/// characters cannot make a cell's bytes unbounded.
fn columns(c: char) -> usize {
    c.width().unwrap_or(0).max(1)
}

/// A serde_json formatter that also writes DEL, C1 controls, bidi controls and line separators
/// as `\uXXXX` (serde_json escapes only what JSON requires, below U+0020): still the same JSON
/// value, byte for byte once parsed, but nothing in it steers a terminal.
struct TerminalSafe<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for TerminalSafe<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if steers_terminal(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                // Every such character is in the Basic Multilingual Plane: one \u escape.
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    // The pretty printer keeps indentation state in these; pass them through.
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// `value` as JSON (pretty or one line) that is safe on a terminal and parses back to exactly
/// `value`. Every JSON document warden prints goes through it or [`write_json`].
pub fn json_text(value: &impl Serialize, pretty: bool) -> anyhow::Result<String> {
    let mut out = Vec::new();
    write_json(&mut out, value, pretty)?;
    // The formatter writes whole UTF-8 fragments and ASCII escapes.
    Ok(String::from_utf8(out)?)
}

/// [`json_text`] streamed to `writer`, never built whole in memory.
pub fn write_json(
    writer: &mut impl Write,
    value: &impl Serialize,
    pretty: bool,
) -> serde_json::Result<()> {
    if pretty {
        let formatter = TerminalSafe(serde_json::ser::PrettyFormatter::new());
        value.serialize(&mut serde_json::Serializer::with_formatter(
            writer, formatter,
        ))
    } else {
        let formatter = TerminalSafe(serde_json::ser::CompactFormatter);
        value.serialize(&mut serde_json::Serializer::with_formatter(
            writer, formatter,
        ))
    }
}

/// Guest JSON at least this long (compact) is printed compact: pretty-printing adds
/// indentation per value, so it multiplies a large document.
const PRETTY_MAX_BYTES: u64 = 1024 * 1024;
/// Guest JSON nested deeper than this is printed compact: each value's indentation grows with
/// its depth (a zero 127 arrays deep takes 255 bytes pretty-printed).
const PRETTY_MAX_DEPTH: usize = 8;

/// Writes a guest's JSON `value` and a line break: pretty when it is small and shallow, else
/// compact with a note on stderr, so the output stays within a small multiple of the JSON's own
/// size.
fn write_guest_json(writer: &mut impl Write, value: &Value) -> anyhow::Result<()> {
    let depth = depth_of(value);
    let mut counter = ByteCounter(0);
    write_json(&mut counter, value, false)?;
    let pretty = counter.0 < PRETTY_MAX_BYTES && depth <= PRETTY_MAX_DEPTH;
    write_json(writer, value, pretty)?;
    writeln!(writer)?;
    if !pretty {
        writer.flush()?;
        eprintln!(
            "note: the output ({} bytes of JSON, nested {depth} deep) is printed compact: \
             pretty JSON is kept for documents under {PRETTY_MAX_BYTES} bytes and \
             {PRETTY_MAX_DEPTH} levels",
            counter.0
        );
    }
    Ok(())
}

/// How many arrays and objects deep `value` nests (a scalar: 0).
fn depth_of(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// A writer that only counts the bytes written to it.
struct ByteCounter(u64);

impl Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        // Findings quote what the authority or Exchange answered.
        table.add_row(vec![
            status_cell(check.status),
            Cell::new(check.name),
            Cell::new(escape(&check.detail, Layout::Text)),
            Cell::new(escape(check.fix.as_deref().unwrap_or(""), Layout::Text)),
        ]);
    }
    table
}

/// Whether warden colours what it prints: only when stdout is a terminal, and never when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>). clap applies the same rule
/// to help and usage errors; logs are never coloured.
pub fn colour() -> bool {
    static COLOUR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *COLOUR.get_or_init(|| {
        io::IsTerminal::is_terminal(&io::stdout())
            && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
    })
}

/// A PASS/FAIL/WARN/SKIP cell, coloured when [`colour`] allows.
pub fn status_cell(status: Status) -> Cell {
    let (text, colour_of) = match status {
        Status::Pass => ("PASS", Color::Green),
        Status::Fail => ("FAIL", Color::Red),
        Status::Warn => ("WARN", Color::Yellow),
        Status::Skip => ("SKIP", Color::DarkGrey),
    };
    let cell = Cell::new(text);
    if colour() { cell.fg(colour_of) } else { cell }
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
    let parsed;
    let value = match output {
        GuestOutput::Json(value) => value,
        GuestOutput::Text(text) => match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_array() || value.is_object() => {
                parsed = value;
                &parsed
            }
            // Plain text (a plugin's own CSV, a message): printed as it is, or as a JSON string.
            _ if format == ResultFormat::Json => {
                let mut stdout = io::BufWriter::new(io::stdout().lock());
                write_json(&mut stdout, text, false)?;
                writeln!(stdout)?;
                stdout.flush()?;
                return Ok(());
            }
            _ => {
                print_plain_text(text);
                return Ok(());
            }
        },
    };
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    let notes = match (format, rows_of(value)) {
        // No rows: say so rather than draw an empty table (JSON keeps its `[]`).
        (ResultFormat::Table, Some(rows)) if rows.is_empty() => {
            writeln!(stdout, "0 results")?;
            Notes::default()
        }
        (ResultFormat::Csv, Some(rows)) if rows.is_empty() => {
            eprintln!("0 results");
            Notes::default()
        }
        (ResultFormat::Json, _) => {
            write_guest_json(&mut stdout, value)?;
            Notes::default()
        }
        (ResultFormat::Table, Some(rows)) => {
            let columns = Columns::choose(&rows, TABLE.columns);
            let mut table = TableWriter::new(&mut stdout, columns, TABLE);
            for row in &rows {
                table.measure(row);
            }
            for row in &rows {
                table.write_row(row)?;
            }
            table.finish()?
        }
        (ResultFormat::Csv, Some(rows)) => {
            let columns = Columns::choose(&rows, CSV.columns);
            write_csv(&mut stdout, columns, &rows)?
        }
        (_, None) => match value {
            Value::String(text) => {
                drop(stdout);
                print_plain_text(text);
                return Ok(());
            }
            other => {
                write_guest_json(&mut stdout, other)?;
                Notes::default()
            }
        },
    };
    stdout.flush()?;
    drop(stdout);
    notes.print();
    Ok(())
}

fn print_plain_text(text: &str) {
    let text = escape(text, Layout::Text);
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
}

/// An array of objects as rows; a single object is one row.
fn rows_of(value: &Value) -> Option<Vec<&Map<String, Value>>> {
    match value {
        Value::Array(items) => items.iter().map(Value::as_object).collect(),
        Value::Object(object) => Some(vec![object]),
        _ => None,
    }
}

/// How much of a list of objects a rendering shows.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Columns shown; the rest are named in a note.
    pub columns: usize,
    /// Characters of a cell (or header) shown; longer ones end in `…`.
    cell_chars: usize,
}

/// Tables are for reading: a screen's worth of columns.
pub const TABLE: Bounds = Bounds {
    columns: 16,
    cell_chars: 48,
};

/// CSV is for spreadsheets: more columns and longer cells, still bounded (`--output json` has
/// everything).
pub const CSV: Bounds = Bounds {
    columns: 64,
    cell_chars: 4096,
};

/// The columns a rendering shows, and how many it leaves out.
#[derive(Debug)]
pub struct Columns {
    names: Vec<String>,
    folded: usize,
}

impl Columns {
    /// The `max` keys present in the most rows (ties: the first seen), in first-seen order.
    pub fn choose(rows: &[&Map<String, Value>], max: usize) -> Self {
        let mut seen: HashMap<&str, (usize, usize)> = HashMap::new();
        for row in rows {
            for key in row.keys() {
                let next = seen.len();
                seen.entry(key.as_str()).or_insert((0, next)).0 += 1;
            }
        }
        let mut ranked: Vec<(&str, usize, usize)> = seen
            .iter()
            .map(|(k, (n, first))| (*k, *n, *first))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let folded = ranked.len().saturating_sub(max);
        ranked.truncate(max);
        ranked.sort_by_key(|&(_, _, first)| first);
        Columns {
            names: ranked.into_iter().map(|(k, _, _)| k.to_owned()).collect(),
            folded,
        }
    }

    /// These columns (`--select`, or a preferred set), at most `max` of them.
    pub fn given(mut names: Vec<String>, max: usize) -> Self {
        let folded = names.len().saturating_sub(max);
        names.truncate(max);
        Columns { names, folded }
    }
}

/// What a rendering left out, for the note on stderr.
#[derive(Debug, Default)]
pub struct Notes {
    folded_columns: usize,
    shown_columns: usize,
    cut_cells: u64,
    cell_chars: usize,
}

impl Notes {
    /// Prints the note (nothing when nothing was left out).
    pub fn print(&self) {
        if self.folded_columns > 0 {
            eprintln!(
                "note: showing {} of {} columns (the keys most rows have); +{} more columns not \
                 shown: use --output json for all of them",
                self.shown_columns,
                self.shown_columns + self.folded_columns,
                self.folded_columns
            );
        }
        if self.cut_cells > 0 {
            eprintln!(
                "note: {} cell(s) longer than {} characters were cut (ending in …): use \
                 --output json for the whole values",
                self.cut_cells, self.cell_chars
            );
        }
    }
}

/// Separates the items of a list in a table or CSV cell.
const LIST_SEPARATOR: &str = "; ";

/// A value as a table or CSV cell: text as it is, a list of plain values as `a; b` (Exchange's
/// multi-valued properties: addresses, access rights), anything nested as JSON.
fn cell_text(value: Option<&Value>) -> Cow<'_, str> {
    match value {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Null) | None => Cow::Borrowed(""),
        Some(Value::Array(items)) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            let items: Vec<Cow<'_, str>> = items.iter().map(|i| cell_text(Some(i))).collect();
            Cow::Owned(items.join(LIST_SEPARATOR))
        }
        Some(other) => Cow::Owned(other.to_string()),
    }
}

/// Writes a table a row at a time: `measure` every row (or each chunk) first, then
/// `write_row`. Widths only grow, so a later chunk never cuts what an earlier one showed.
pub struct TableWriter<W: Write> {
    out: W,
    columns: Columns,
    widths: Vec<usize>,
    bounds: Bounds,
    header_written: bool,
    cut_cells: u64,
}

impl<W: Write> TableWriter<W> {
    /// A table of `columns` on `out`.
    pub fn new(out: W, columns: Columns, bounds: Bounds) -> Self {
        let widths = columns
            .names
            .iter()
            .map(|name| display_width(&escape_cut(name, bounds.cell_chars).0))
            .collect();
        TableWriter {
            out,
            columns,
            widths,
            bounds,
            header_written: false,
            cut_cells: 0,
        }
    }

    /// Widens the columns to fit `row`.
    pub fn measure(&mut self, row: &Map<String, Value>) {
        for (name, width) in self.columns.names.iter().zip(&mut self.widths) {
            let (cell, _) = escape_cut(&cell_text(row.get(name)), self.bounds.cell_chars);
            *width = (*width).max(display_width(&cell));
        }
    }

    fn write_cells(&mut self, cells: &[String]) -> io::Result<()> {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&self.widths).enumerate() {
            if i > 0 {
                line.push_str(" │ ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(display_width(cell));
            line.extend(std::iter::repeat_n(' ', pad));
        }
        self.out.write_all(line.trim_end().as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Writes one row (the header first, before the first row).
    pub fn write_row(&mut self, row: &Map<String, Value>) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            let header: Vec<String> = self
                .columns
                .names
                .iter()
                .map(|name| escape_cut(name, self.bounds.cell_chars).0)
                .collect();
            self.write_cells(&header)?;
            let rule: Vec<String> = self.widths.iter().map(|w| "─".repeat(*w)).collect();
            self.out.write_all(rule.join("─┼─").as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        let mut cells = Vec::with_capacity(self.columns.names.len());
        for name in &self.columns.names {
            let (cell, cut) = escape_cut(&cell_text(row.get(name)), self.bounds.cell_chars);
            self.cut_cells += u64::from(cut);
            cells.push(cell);
        }
        self.write_cells(&cells)
    }

    /// Flushes the table; what it left out.
    pub fn finish(mut self) -> io::Result<Notes> {
        self.out.flush()?;
        Ok(Notes {
            folded_columns: self.columns.folded,
            shown_columns: self.columns.names.len(),
            cut_cells: self.cut_cells,
            cell_chars: self.bounds.cell_chars,
        })
    }
}

fn write_csv(
    out: &mut impl Write,
    columns: Columns,
    rows: &[&Map<String, Value>],
) -> anyhow::Result<Notes> {
    let mut cut_cells = 0u64;
    let mut cell = |text: &str| {
        let (text, cut) = escape_cut(text, CSV.cell_chars);
        cut_cells += u64::from(cut);
        inert_in_a_spreadsheet(text)
    };
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(columns.names.iter().map(|name| cell(name)))?;
    for row in rows {
        writer.write_record(
            columns
                .names
                .iter()
                .map(|name| cell(&cell_text(row.get(name)))),
        )?;
    }
    writer.flush()?;
    Ok(Notes {
        folded_columns: columns.folded,
        shown_columns: columns.names.len(),
        cut_cells,
        cell_chars: CSV.cell_chars,
    })
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, a tab or a carriage
/// return first; OWASP's CSV injection advice) gets a leading `'`, so Exchange or guest text
/// cannot make the operator's spreadsheet fetch or execute anything. Plain numbers stay as
/// they are.
fn inert_in_a_spreadsheet(text: String) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && text.parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text
    }
}

/// Longest progress label shown.
const MAX_LABEL_CHARS: usize = 80;

/// What the operator sees while a guest runs: its log lines on stderr and a progress bar on a
/// terminal (indicatif hides it when stderr is not one). Everything the guest says is escaped.
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
        let message = escape(message, Layout::Line);
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
        self.bar.set_message(escape_cut(label, MAX_LABEL_CHARS).0);
    }
}

/// The tracing writer: each event (one write of one formatted line) with everything in it
/// escaped but its final newline, so a guest's text inside a logged error (a trap's backtrace
/// names functions the guest named) stays one visible line.
#[derive(Debug, Clone, Copy)]
pub struct TerminalSafeStderr;

impl Write for TerminalSafeStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let mut stderr = io::stderr().lock();
        stderr.write_all(escape(body, Layout::Line).as_bytes())?;
        stderr.write_all(newline.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_cells_a_spreadsheet_would_run_as_formulas_are_made_inert() {
        let rows = [
            json!({"a": "=HYPERLINK(\"http://x\")", "b": "+1+cmd", "c": "-5", "d": "@SUM(A1)", "e": ["=1", "b"]}),
        ];
        let rows: Vec<&Map<String, Value>> = rows.iter().map(|r| r.as_object().unwrap()).collect();
        let mut out = Vec::new();
        write_csv(&mut out, Columns::choose(&rows, 64), &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        let body = text.lines().nth(1).unwrap();
        assert_eq!(
            body, r#""'=HYPERLINK(""http://x"")",'+1+cmd,-5,'@SUM(A1),'=1; b"#,
            "{text}"
        );
    }

    #[test]
    fn escape_shows_every_terminal_control_visibly() {
        let hostile = "a\u{1b}[2J\rb\u{8}\u{7f}\u{9b}31m\u{202e}x\u{2066}\u{2028}\tz\n";
        let line = escape(hostile, Layout::Line);
        assert_eq!(
            line,
            r"a\x1b[2J\rb\x08\x7f\u{9b}31m\u{202e}x\u{2066}\u{2028}\tz\n"
        );
        assert!(line.chars().all(|c| !steers_terminal(c)));
        let text = escape(hostile, Layout::Text);
        assert!(text.ends_with("\tz\n"), "{text}");
        assert!(matches!(
            escape("plain ü 😀", Layout::Line),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_text_escapes_c1_del_and_bidi_and_parses_back_exactly() {
        let value = json!({"k\u{9b}": "x\u{7f}\u{85}\u{202e}\u{1b}é😀", "n": [1, 2]});
        for pretty in [true, false] {
            let text = json_text(&value, pretty).unwrap();
            assert!(
                text.chars().all(|c| c == '\n' || !steers_terminal(c)),
                "{text}"
            );
            assert!(
                text.contains(r"\u009b") && text.contains(r"\u202e"),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        }
        assert_eq!(
            json_text(&value, true).unwrap().lines().count(),
            serde_json::to_string_pretty(&value)
                .unwrap()
                .lines()
                .count()
        );
    }

    #[test]
    fn cells_are_cut_to_their_width() {
        assert_eq!(escape_cut("short", 10), ("short".to_owned(), false));
        let (cut, was) = escape_cut(&"x".repeat(100), 10);
        assert!(was);
        assert_eq!(cut.chars().count(), 10);
        let (cut, _) = escape_cut(&"\u{301}".repeat(10_000), 10);
        assert!(
            cut.len() < 40,
            "zero-width characters still count: {}",
            cut.len()
        );
        let (cut, _) = escape_cut(&"界".repeat(100), 10);
        assert!(display_width(&cut) <= 10, "{cut}");
        // Cutting and padding measure alike: a cut cell fits its width by either.
        for text in ["e\u{301}".repeat(50), "\u{200b}界".repeat(50)] {
            let (cut, was) = escape_cut(&text, 10);
            assert!(was);
            assert!(display_width(&cut) <= 10, "{cut:?}");
            assert!(display_width(&cut) >= 9, "{cut:?}");
        }
    }

    #[test]
    fn list_cells_read_as_items_and_nested_values_as_json() {
        let row = json!({"a": ["x@contoso.com", "y@contoso.com"], "b": [1, true, null], "c": [{"k": 1}], "d": []});
        let cell = |key: &str| cell_text(row.get(key)).into_owned();
        assert_eq!(cell("a"), "x@contoso.com; y@contoso.com");
        assert_eq!(cell("b"), "1; true; ");
        assert_eq!(cell("c"), r#"[{"k":1}]"#);
        assert_eq!(cell("d"), "");
    }

    #[test]
    fn columns_are_the_most_frequent_keys_in_first_seen_order() {
        let rows = json!([{"b": 1, "a": 1}, {"a": 2, "c": 3}, {"a": 3, "c": 1, "d": 1}]);
        let rows: Vec<&Map<String, Value>> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap())
            .collect();
        let columns = Columns::choose(&rows, 2);
        assert_eq!(columns.names, ["a", "c"]);
        assert_eq!(columns.folded, 2);
    }
}
