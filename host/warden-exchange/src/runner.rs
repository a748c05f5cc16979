//! The one interface every transport sits behind (REST today, WinRM/PSRP later), so the broker
//! and guests never care which one runs a cmdlet.

use crate::error::Result;
use crate::response::Page;
use crate::rest::batch::{BatchOutput, BatchResult};
use crate::rest::session::{Invocation, RestSession, ResultStream};
use async_trait::async_trait;
use std::time::Duration;

/// Pages of one running invocation.
#[async_trait]
pub trait PageStream: Send + std::fmt::Debug {
    /// The next page, or `None` when done.
    async fn next_page(&mut self) -> Result<Option<Page>>;

    /// The next page for a caller that stops waiting after `patience`: the transport fails the
    /// page rather than start a wait (back-off, `Retry-After`) it could not finish in time, so
    /// a write it never ran is not left of unknown outcome. By default, [`Self::next_page`].
    async fn next_page_within(&mut self, patience: Duration) -> Result<Option<Page>> {
        let _ = patience;
        self.next_page().await
    }
}

/// Runs cmdlets.
#[async_trait]
pub trait CmdletRunner: Send + Sync + std::fmt::Debug {
    /// Starts `invocation`; nothing is sent until the first page is asked for.
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream>;

    /// Runs `invocations` to completion and returns each one's results, in order, every
    /// request ending within `patience`. The REST session sends them as `$batch` POSTs
    /// ([`crate::rest::batch`]); by default each runs alone, one after the other, through
    /// [`Self::start`] (a transport with no batch, a wrapper that records each call).
    async fn run_batch(
        &self,
        invocations: Vec<Invocation>,
        patience: Duration,
    ) -> Vec<BatchResult> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut results = Vec::with_capacity(invocations.len());
        for invocation in invocations {
            let mut stream = self.start(invocation);
            let mut output = BatchOutput::default();
            let result = loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match stream.next_page_within(left).await {
                    Ok(Some(page)) => output.add(page),
                    Ok(None) => break Ok(output),
                    Err(error) => break Err(error),
                }
            };
            results.push(result);
        }
        results
    }
}

#[async_trait]
impl PageStream for ResultStream {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        ResultStream::next_page(self).await
    }

    async fn next_page_within(&mut self, patience: Duration) -> Result<Option<Page>> {
        ResultStream::next_page_within(self, Some(patience)).await
    }
}

#[async_trait]
impl CmdletRunner for RestSession {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        Box::new(self.stream(invocation))
    }

    async fn run_batch(
        &self,
        invocations: Vec<Invocation>,
        patience: Duration,
    ) -> Vec<BatchResult> {
        self.invoke_batch_within(&invocations, Some(patience)).await
    }
}

/// A stream that fails at once: a call refused before anything was sent.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) Option<crate::ExchangeError>);

#[async_trait]
impl PageStream for Refused {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        match self.0.take() {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }
}
