//! The one interface every transport sits behind (REST today, WinRM/PSRP later), so the broker
//! and guests never care which one runs a cmdlet.

use crate::error::Result;
use crate::response::Page;
use crate::session::{ExchangeSession, Invocation, ResultStream};
use async_trait::async_trait;

/// Pages of one running invocation.
#[async_trait]
pub trait PageStream: Send + std::fmt::Debug {
    /// The next page, or `None` when done.
    async fn next_page(&mut self) -> Result<Option<Page>>;
}

/// Runs cmdlets.
pub trait CmdletRunner: Send + Sync + std::fmt::Debug {
    /// Starts `invocation`; nothing is sent until the first page is asked for.
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream>;
}

#[async_trait]
impl PageStream for ResultStream {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        ResultStream::next_page(self).await
    }
}

impl CmdletRunner for ExchangeSession {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        Box::new(self.stream(invocation))
    }
}
