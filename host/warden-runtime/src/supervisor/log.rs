//! A run's one log sink, the same for both runtimes: the `log` import and Rhai's `log::*`
//! (whole lines), a wasm guest's stdout/stderr and Rhai's `print`/`debug` (text cut into lines
//! at `\n`, a trailing `\r` dropped), all handed to the [`RunObserver`] within the run's caps.
//!
//! The rule, one for every source and both runtimes:
//! - a line longer than `max_log_line_bytes` is cut (at a character boundary) and kept; its
//!   cut-off end is counted in `log_bytes_dropped`. A long line is not a reason to silence the
//!   guest: the lines after it are judged like any other;
//! - every kept line costs its bytes plus [`LOG_LINE_OVERHEAD`] against `max_log_bytes`, and one
//!   of `max_log_lines`; the first line that does not fit either budget is dropped whole, and so
//!   is every line after it (the log stays a prefix of what the guest wrote, never a log with
//!   holes); dropped lines are counted in `log_lines_dropped` and their bytes in
//!   `log_bytes_dropped`.
//!
//! What it refuses: keeping more than those budgets; buffering more than one line per stream
//! (what passes a cap is counted, never held), so a guest that floods its stdout costs the host
//! at most one line of memory per stream. It never fails a write: a guest that logs too much
//! loses lines, not its run.

use crate::{LogLevel, LogSource, RunObserver, RuntimeLimits, cut};
use std::sync::{Arc, Mutex, MutexGuard};

/// What each kept log line costs against `max_log_bytes` besides its text: the framing the
/// observer adds when it shows or stores it (level, source, prefix, newline).
pub const LOG_LINE_OVERHEAD: usize = 32;

/// A run's log allowance: bytes (text plus [`LOG_LINE_OVERHEAD`] per line) and lines, and what
/// was dropped at either cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogBudget {
    bytes_left: usize,
    lines_left: usize,
    /// Guest bytes dropped (whole lines past a cap, and the cut-off ends of long lines).
    pub(crate) bytes_dropped: u64,
    /// Lines dropped whole.
    pub(crate) lines_dropped: u64,
}

impl LogBudget {
    pub(crate) fn new(limits: &RuntimeLimits) -> Self {
        Self {
            bytes_left: limits.max_log_bytes,
            lines_left: limits.max_log_lines,
            bytes_dropped: 0,
            lines_dropped: 0,
        }
    }

    /// Whether a line of `kept` bytes (cut from `original` bytes) may be shown; books it
    /// either way.
    pub(crate) fn admit(&mut self, kept: usize, original: usize) -> bool {
        let cost = kept.saturating_add(LOG_LINE_OVERHEAD);
        if self.lines_left == 0 || cost > self.bytes_left {
            // Past a cap nothing more is shown, so the caps stay spent.
            self.bytes_left = 0;
            self.lines_left = 0;
            self.bytes_dropped += original as u64;
            self.lines_dropped += 1;
            return false;
        }
        self.bytes_left -= cost;
        self.lines_left -= 1;
        self.bytes_dropped += (original - kept) as u64;
        true
    }

    /// True once either cap is spent.
    pub(crate) fn spent(&self) -> bool {
        self.lines_left == 0 || self.bytes_left < LOG_LINE_OVERHEAD
    }
}

/// Per-run log state shared by the `log` import and both captured streams.
#[derive(Debug)]
pub(crate) struct LogSink {
    observer: Arc<dyn RunObserver>,
    max_line: usize,
    state: Mutex<SinkState>,
}

#[derive(Debug)]
struct SinkState {
    budget: LogBudget,
    /// The unfinished line of each stream, the level it is shown at, and whether it was cut.
    stdout: (Vec<u8>, LogLevel, bool),
    stderr: (Vec<u8>, LogLevel, bool),
}

impl LogSink {
    pub(crate) fn new(observer: Arc<dyn RunObserver>, limits: &RuntimeLimits) -> Self {
        Self {
            observer,
            max_line: limits.max_log_line_bytes,
            state: Mutex::new(SinkState {
                budget: LogBudget::new(limits),
                stdout: (Vec::new(), LogLevel::Info, false),
                stderr: (Vec::new(), LogLevel::Warn, false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A panicking observer must not silence the rest of the run.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run's log allowance and what was dropped at its caps so far.
    pub(crate) fn budget(&self) -> LogBudget {
        self.lock().budget
    }

    /// A whole line (the `log` import, Rhai's `log::*`), kept as one line whatever it holds.
    pub(crate) fn line(&self, source: LogSource, level: LogLevel, message: &str) {
        let mut state = self.lock();
        self.emit(&mut state, source, level, message);
    }

    /// Progress goes straight through, its label cut like a line (it is not kept, so it does
    /// not count against the byte cap).
    pub(crate) fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        let label = cut(label, self.max_line);
        self.observer.progress(done, total, label);
    }

    fn emit(&self, state: &mut SinkState, source: LogSource, level: LogLevel, message: &str) {
        let kept = cut(message, self.max_line);
        if state.budget.admit(kept.len(), message.len()) {
            self.observer.log(source, level, kept);
        }
    }

    /// Text the guest wrote to stdout or stderr, shown at `level`: cut into lines at `\n`.
    pub(crate) fn write(&self, source: LogSource, level: LogLevel, mut bytes: &[u8]) {
        let mut state = self.lock();
        buffer_of(&mut state, source).1 = level;
        if state.budget.spent() {
            // Past a cap: nothing more will be shown, so skip the line splitting. Each `\n`
            // ends one dropped line (the first one ends the partial line held, dropped with
            // it); text after the last stays the partial line, as below, so a line written in
            // pieces is counted once whichever write ends it.
            if let Some(last) = bytes.iter().rposition(|b| *b == b'\n') {
                let newlines = bytes.iter().filter(|b| **b == b'\n').count();
                let (buffer, _, full) = buffer_of(&mut state, source);
                let held = std::mem::take(buffer).len();
                *full = false;
                state.budget.bytes_dropped += (held + last + 1 - newlines) as u64;
                state.budget.lines_dropped += newlines as u64;
                bytes = &bytes[last + 1..];
            }
            self.hold(&mut state, source, bytes);
            return;
        }
        while !bytes.is_empty() {
            let (chunk, rest, newline) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            self.hold(&mut state, source, chunk);
            if newline {
                self.flush_line(&mut state, source);
            }
        }
    }

    /// Adds `chunk` (no `\n` in it) to the stream's partial line, up to `max_line` bytes cut
    /// at a character boundary; what does not fit is counted as dropped.
    fn hold(&self, state: &mut SinkState, source: LogSource, chunk: &[u8]) {
        let (buffer, _, full) = buffer_of(state, source);
        // A line once cut keeps nothing more, so a kept line never has a hole in it.
        let room = if *full {
            0
        } else {
            self.max_line.saturating_sub(buffer.len())
        };
        let mut taken = chunk.len().min(room);
        // Never end the kept part inside a character (a continuation byte would follow).
        while taken > 0 && taken < chunk.len() && chunk[taken] & 0xC0 == 0x80 {
            taken -= 1;
        }
        buffer.extend_from_slice(&chunk[..taken]);
        *full |= taken < chunk.len();
        state.budget.bytes_dropped += (chunk.len() - taken) as u64;
    }

    fn flush_line(&self, state: &mut SinkState, source: LogSource) {
        let (buffer, level, full) = buffer_of(state, source);
        let (buffer, level) = (std::mem::take(buffer), *level);
        *full = false;
        let text = String::from_utf8_lossy(&buffer);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        self.emit(state, source, level, text);
    }

    /// Flushes partial lines at the end of a run.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        for source in [LogSource::Stdout, LogSource::Stderr] {
            if !buffer_of(&mut state, source).0.is_empty() {
                self.flush_line(&mut state, source);
            }
        }
    }
}

fn buffer_of(state: &mut SinkState, source: LogSource) -> &mut (Vec<u8>, LogLevel, bool) {
    match source {
        LogSource::Stderr => &mut state.stderr,
        _ => &mut state.stdout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Lines(Mutex<Vec<(LogSource, LogLevel, String)>>);

    impl RunObserver for Lines {
        fn log(&self, source: LogSource, level: LogLevel, message: &str) {
            self.0
                .lock()
                .unwrap()
                .push((source, level, message.to_owned()));
        }
        fn progress(&self, _: u64, _: Option<u64>, _: &str) {}
    }

    fn sink(max_log: usize, max_line: usize) -> (Arc<Lines>, LogSink) {
        let lines = Arc::new(Lines::default());
        let limits = RuntimeLimits {
            max_log_bytes: max_log,
            max_log_line_bytes: max_line,
            ..RuntimeLimits::default()
        };
        (lines.clone(), LogSink::new(lines, &limits))
    }

    fn sink_with(limits: RuntimeLimits) -> (Arc<Lines>, LogSink) {
        let lines = Arc::new(Lines::default());
        (lines.clone(), LogSink::new(lines, &limits))
    }

    #[test]
    fn splits_lines_across_writes_and_flushes_the_rest() {
        let (lines, sink) = sink(1000, 100);
        sink.write(LogSource::Stdout, LogLevel::Info, b"one\ntw");
        sink.write(LogSource::Stderr, LogLevel::Warn, b"err\r\n");
        sink.write(LogSource::Stdout, LogLevel::Info, b"o\nthree");
        sink.finish();
        let got = lines.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (LogSource::Stdout, LogLevel::Info, "one".to_owned()),
                (LogSource::Stderr, LogLevel::Warn, "err".to_owned()),
                (LogSource::Stdout, LogLevel::Info, "two".to_owned()),
                (LogSource::Stdout, LogLevel::Info, "three".to_owned()),
            ]
        );
        assert_eq!(sink.budget().bytes_dropped, 0);
        assert_eq!(sink.budget().lines_dropped, 0);
    }

    #[test]
    fn cuts_long_lines_and_drops_past_the_run_cap() {
        // Three kept lines of 4, 4 and 3 bytes plus their framing, and one byte to spare.
        let (lines, sink) = sink(11 + 3 * LOG_LINE_OVERHEAD + 1, 4);
        sink.write(LogSource::Stdout, LogLevel::Info, b"abcdefgh\n");
        sink.line(LogSource::Guest, LogLevel::Info, "ééé");
        sink.line(LogSource::Guest, LogLevel::Info, "xyz");
        // 1 byte left: this line is cut to 4 and dropped whole, the rest skipped.
        sink.write(LogSource::Stdout, LogLevel::Info, b"12345\n");
        sink.write(LogSource::Stdout, LogLevel::Info, &[b'z'; 1000]);
        sink.finish();
        let got: Vec<String> = lines
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.2.clone())
            .collect();
        // "abcd" (4 cut), "éé" (2 cut), "xyz".
        assert_eq!(got, vec!["abcd", "éé", "xyz"]);
        assert_eq!(sink.budget().bytes_dropped, 4 + 2 + (1 + 4) + 1000);
        // "12345", and the unfinished line of `z` (a partial line is a line at the end, kept
        // or dropped, as before the cap).
        assert_eq!(sink.budget().lines_dropped, 2);
    }

    #[test]
    fn empty_lines_cost_their_framing_and_lines_are_capped() {
        // Empty lines: the byte cap holds them to max_log_bytes / overhead.
        let (lines, sink) = sink(100 * LOG_LINE_OVERHEAD, 100);
        sink.write(LogSource::Stdout, LogLevel::Info, &[b'\n'; 550_000]);
        for _ in 0..1000 {
            sink.line(LogSource::Guest, LogLevel::Info, "");
        }
        sink.finish();
        assert_eq!(lines.0.lock().unwrap().len(), 100);
        assert_eq!(sink.budget().lines_dropped, 550_000 + 1000 - 100);
        // The line cap holds short lines when bytes are plentiful.
        let (lines, sink) = sink_with(RuntimeLimits {
            max_log_bytes: 1 << 30,
            max_log_lines: 10,
            ..RuntimeLimits::default()
        });
        sink.write(
            LogSource::Stderr,
            LogLevel::Warn,
            "x\n".repeat(50).as_bytes(),
        );
        sink.finish();
        assert_eq!(lines.0.lock().unwrap().len(), 10);
        assert_eq!(sink.budget().lines_dropped, 40);
        assert_eq!(sink.budget().bytes_dropped, 40);
    }

    #[test]
    fn a_long_line_is_cut_and_the_lines_after_it_are_kept_from_every_source() {
        let (lines, sink) = sink(1000, 4);
        sink.line(LogSource::Guest, LogLevel::Info, "abcdefgh");
        sink.line(LogSource::Guest, LogLevel::Info, "ab");
        sink.write(LogSource::Stdout, LogLevel::Info, b"12345678\nxy\n");
        sink.finish();
        let got: Vec<String> = lines
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.2.clone())
            .collect();
        assert_eq!(got, vec!["abcd", "ab", "1234", "xy"]);
        assert_eq!(sink.budget().bytes_dropped, 4 + 4);
        assert_eq!(sink.budget().lines_dropped, 0);
    }
}
