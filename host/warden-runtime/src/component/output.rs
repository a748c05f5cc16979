//! A run's log channel: the `log` import and the guest's captured stdout/stderr, cut into
//! lines and handed to the [`RunObserver`] within the run's caps.
//!
//! What it refuses: keeping more than `max_log_bytes` (each line charged its framing too, so
//! empty lines are not free) or `max_log_lines` per run (across all three sources), or a line
//! longer than `max_log_line_bytes`; what passes a cap is dropped and counted, never buffered, so a guest that floods its stdout costs the host at most one line of memory per
//! stream. It never fails a write: a guest that logs too much loses lines, not its run.

use crate::{LogBudget, LogLevel, LogSource, RunObserver, RuntimeLimits, cut};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

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
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LogSink {
    pub(crate) fn new(observer: Arc<dyn RunObserver>, limits: &RuntimeLimits) -> Self {
        Self {
            observer,
            max_line: limits.max_log_line_bytes,
            state: Mutex::new(SinkState {
                budget: LogBudget::new(limits),
                stdout: Vec::new(),
                stderr: Vec::new(),
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

    /// A whole line (from the `log` import).
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

    /// Bytes the guest wrote to stdout or stderr.
    fn write(&self, source: LogSource, mut bytes: &[u8]) {
        let mut state = self.lock();
        if state.budget.spent() {
            // Past a cap: nothing more will be shown, so skip the line splitting.
            let newlines = bytes.iter().filter(|b| **b == b'\n').count();
            state.budget.bytes_dropped += (bytes.len() - newlines) as u64;
            state.budget.lines_dropped += newlines as u64;
            return;
        }
        while !bytes.is_empty() {
            let (chunk, rest, newline) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            let buffer = buffer_of(&mut state, source);
            let room = self.max_line.saturating_sub(buffer.len());
            let taken = chunk.len().min(room);
            buffer.extend_from_slice(&chunk[..taken]);
            let overflow = (chunk.len() - taken) as u64;
            state.budget.bytes_dropped += overflow;
            if newline {
                self.flush_line(&mut state, source);
            }
        }
    }

    fn flush_line(&self, state: &mut SinkState, source: LogSource) {
        let buffer = std::mem::take(buffer_of(state, source));
        let text = String::from_utf8_lossy(&buffer);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let level = match source {
            LogSource::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        self.emit(state, source, level, text);
    }

    /// Flushes partial lines at the end of a run.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        for source in [LogSource::Stdout, LogSource::Stderr] {
            if !buffer_of(&mut state, source).is_empty() {
                self.flush_line(&mut state, source);
            }
        }
    }
}

fn buffer_of(state: &mut SinkState, source: LogSource) -> &mut Vec<u8> {
    match source {
        LogSource::Stderr => &mut state.stderr,
        _ => &mut state.stdout,
    }
}

/// A guest's stdout or stderr: every write goes to the [`LogSink`].
#[derive(Debug, Clone)]
pub(crate) struct CapturedOutput {
    sink: Arc<LogSink>,
    source: LogSource,
}

impl CapturedOutput {
    pub(crate) fn new(sink: Arc<LogSink>, source: LogSource) -> Self {
        Self { sink, source }
    }
}

/// How much a guest may write per `write` call (WASI's `check-write`); the sink takes any
/// amount, this only bounds one host-side copy.
const WRITE_PERMIT: usize = 64 * 1024;

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write(self.source, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.sink.write(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
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
        sink.write(LogSource::Stdout, b"one\ntw");
        sink.write(LogSource::Stderr, b"err\r\n");
        sink.write(LogSource::Stdout, b"o\nthree");
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
        let (lines, sink) = sink(11 + 3 * crate::LOG_LINE_OVERHEAD + 1, 4);
        sink.write(LogSource::Stdout, b"abcdefgh\n");
        sink.line(LogSource::Guest, LogLevel::Info, "ééé");
        sink.line(LogSource::Guest, LogLevel::Info, "xyz");
        // 1 byte left: this line is cut to 4 and dropped whole, the rest skipped.
        sink.write(LogSource::Stdout, b"12345\n");
        sink.write(LogSource::Stdout, &[b'z'; 1000]);
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
        assert_eq!(sink.budget().lines_dropped, 1);
    }

    #[test]
    fn empty_lines_cost_their_framing_and_lines_are_capped() {
        // Empty lines: the byte cap holds them to max_log_bytes / overhead.
        let (lines, sink) = sink(100 * crate::LOG_LINE_OVERHEAD, 100);
        sink.write(LogSource::Stdout, &[b'\n'; 550_000]);
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
        sink.write(LogSource::Stderr, "x\n".repeat(50).as_bytes());
        sink.finish();
        assert_eq!(lines.0.lock().unwrap().len(), 10);
        assert_eq!(sink.budget().lines_dropped, 40);
        assert_eq!(sink.budget().bytes_dropped, 40);
    }
}
