//! A wasm guest's stdout and stderr as WASI output streams, feeding the run's one log sink
//! ([`crate::supervisor`]), which cuts them into lines within the run's caps.

use crate::supervisor::Supervisor;
use crate::{LogLevel, LogSource};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A guest's stdout or stderr: every write goes to the run's log sink (stdout at info,
/// stderr at warn).
#[derive(Debug, Clone)]
pub(crate) struct CapturedOutput {
    supervisor: Arc<Supervisor>,
    source: LogSource,
}

impl CapturedOutput {
    pub(crate) fn new(supervisor: Arc<Supervisor>, source: LogSource) -> Self {
        Self { supervisor, source }
    }

    fn take(&self, bytes: &[u8]) {
        let level = match self.source {
            LogSource::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        self.supervisor.log().write(self.source, level, bytes);
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
        self.take(&bytes);
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
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
