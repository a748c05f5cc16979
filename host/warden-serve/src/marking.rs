//! The one place a delegated run's writes pass before they are sent: the Exchange runner the
//! run's broker calls. Before the first page of a write is asked for (nothing is sent before),
//! the run is marked `may_have_written` in the store, durably; a run cut after that is never
//! re-run by itself. Whether a cmdlet writes is [`warden_vocab::CmdletKind`]'s answer, the same
//! the broker's budgets use.

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use warden_exchange::{CmdletRunner, ExchangeError, Invocation, Page, PageStream};
use warden_vocab::CmdletKind;

/// Records, durably, that a run may have written. An error stops the write.
#[async_trait]
pub trait WriteMarker: Send + Sync + fmt::Debug {
    /// Marks the run; returns once the mark is durable.
    async fn mark(&self) -> Result<(), String>;
}

/// Marks a claimed run (a delegated run or a fleet job) in the store: only its claim may.
#[derive(Debug)]
pub struct StoreMarker {
    /// The store the run is in.
    pub store: warden_store::Store,
    /// The claim the run is held by.
    pub claim: warden_store::Claim,
    /// Set once the mark is durable, for the run's end to know it may have written.
    pub marked: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl WriteMarker for StoreMarker {
    async fn mark(&self) -> Result<(), String> {
        self.store
            .mark_may_have_written(&self.claim)
            .await
            .map_err(|e| e.to_string())?;
        self.marked
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// A runner that marks its run before it lets a write out.
#[derive(Debug)]
pub struct MarkingRunner {
    inner: Arc<dyn CmdletRunner>,
    marker: Arc<dyn WriteMarker>,
}

impl MarkingRunner {
    /// `inner`, with every write marked through `marker` first.
    pub fn new(inner: Arc<dyn CmdletRunner>, marker: Arc<dyn WriteMarker>) -> Self {
        Self { inner, marker }
    }
}

impl CmdletRunner for MarkingRunner {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        let write = CmdletKind::of(&invocation.cmdlet).is_write();
        let cmdlet = invocation.cmdlet.clone();
        let pages = self.inner.start(invocation);
        if !write {
            return pages;
        }
        Box::new(MarkedPages {
            cmdlet,
            pages,
            marker: Some(self.marker.clone()),
        })
    }
}

#[derive(Debug)]
struct MarkedPages {
    cmdlet: String,
    pages: Box<dyn PageStream>,
    /// Until the mark is made.
    marker: Option<Arc<dyn WriteMarker>>,
}

impl MarkedPages {
    async fn mark(&mut self) -> Result<(), ExchangeError> {
        if let Some(marker) = &self.marker {
            marker.mark().await.map_err(|reason| {
                tracing::error!(%reason, "could not record that a run may write; the write is not sent");
                ExchangeError::NotExecuted {
                    cmdlet: self.cmdlet.clone(),
                    message: "the service could not record the write before sending it".into(),
                    request_id: None,
                }
            })?;
            self.marker = None;
        }
        Ok(())
    }
}

#[async_trait]
impl PageStream for MarkedPages {
    async fn next_page(&mut self) -> Result<Option<Page>, ExchangeError> {
        self.mark().await?;
        self.pages.next_page().await
    }

    async fn next_page_within(
        &mut self,
        patience: Duration,
    ) -> Result<Option<Page>, ExchangeError> {
        self.mark().await?;
        self.pages.next_page_within(patience).await
    }
}
