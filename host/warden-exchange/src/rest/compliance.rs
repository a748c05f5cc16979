//! Security & Compliance PowerShell over REST, what `Connect-IPPSSession` does since module
//! 3.2.0 ("Version 3.2.0 (June 2023) or later fully supports REST API cmdlets in Security &
//! Compliance PowerShell", MicrosoftDocs/office-docs-powershell
//! `exchange/docs-conceptual/exchange-online-powershell-v2.md`): the same `InvokeCommand` body and
//! headers as Exchange ([`super::session`]), a token for the compliance resource, and the
//! tenant's regional host, which the front door names in a redirect
//! (docs/protocol/exo-protocol.md §1.2.1; the session follows it within the cloud's
//! [`HostSuffixes::compliance`] and keeps it for later calls).
//!
//! [`EndpointRunner`] is the runner [`crate::connect()`] hands out: it sends each invocation to
//! the endpoint it names ([`Invocation::endpoint`], set by the broker from the policy entry).
//!
//! Remote PowerShell is not offered for compliance: Security & Compliance's Remote PowerShell
//! was retired with Exchange Online's (the module runs both over REST since 3.2.0), and warden's
//! `rps` transport reaches only on-premises Exchange or an emulator, neither of which has a
//! Security & Compliance endpoint. A compliance call on an `rps` connection fails before
//! anything is sent.

use super::session::{Invocation, RestSession, SessionConfig};
use crate::cloud::HostSuffixes;
use crate::error::ExchangeError;
use crate::runner::{CmdletRunner, PageStream};
use std::sync::{Arc, LazyLock};
use warden_auth::Cloud;
use warden_vocab::Endpoint;

/// The Security & Compliance front door of each cloud (docs/protocol/exo-protocol.md §1.2: the
/// commercial host is used by CIPP-API and GreyCorbel/ExoHelper; the sovereign ones are the
/// hosts of Microsoft's Remote PowerShell URIs, `exchange/docs-conceptual/connect-to-scc-powershell.md`,
/// whose REST use is not documented).
pub fn compliance_base(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Public => "https://ps.compliance.protection.outlook.com",
        Cloud::GccHigh => "https://ps.compliance.protection.office365.us",
        Cloud::Dod => "https://l5.ps.compliance.protection.office365.us",
        Cloud::China => "https://ps.compliance.protection.partner.outlook.cn",
    }
}

/// The token scope for Security & Compliance: `<front door>/.default`
/// (`https://ps.compliance.protection.outlook.com/.default` in GreyCorbel/ExoHelper
/// `Commands/Public/Get-ExoToken.ps1` and CIPP-API).
pub fn compliance_scope(cloud: Cloud) -> String {
    format!("{}/.default", compliance_base(cloud))
}

impl SessionConfig {
    /// Defaults for a tenant's Security & Compliance session in a cloud: its front door, its
    /// scope and its hosts; everything else as for Exchange.
    pub fn compliance(cloud: Cloud, tenant: &str) -> Self {
        let mut config = Self::new(cloud, tenant);
        config.base_url = compliance_base(cloud).to_owned();
        config.scope = compliance_scope(cloud);
        config.endpoint = Endpoint::Compliance;
        config.hosts = HostSuffixes::compliance(cloud);
        config
    }
}

/// How the Security & Compliance session is made, on the first compliance call.
type MakeCompliance = Box<dyn FnOnce() -> std::result::Result<RestSession, String> + Send>;

/// Sends each invocation to its endpoint: Exchange (REST or RPS) or Security & Compliance
/// (REST). Both share the token provider; each has its own scope, host, limiter and pause.
///
/// The compliance session is made when the first compliance call needs it, so a compliance
/// setting that is wrong (a bad `WARDEN_COMPLIANCE_URL`) fails only compliance calls, never an
/// operator who runs Exchange cmdlets alone.
pub struct EndpointRunner {
    exchange: Arc<dyn CmdletRunner>,
    compliance: LazyLock<std::result::Result<RestSession, String>, MakeCompliance>,
}

impl std::fmt::Debug for EndpointRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRunner")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

impl EndpointRunner {
    /// `exchange` for Exchange calls; for compliance calls, the session `compliance` makes on
    /// the first one, or why there is none (said to every compliance call).
    pub fn new(
        exchange: Arc<dyn CmdletRunner>,
        compliance: impl FnOnce() -> std::result::Result<RestSession, String> + Send + 'static,
    ) -> Self {
        Self {
            exchange,
            compliance: LazyLock::new(Box::new(compliance)),
        }
    }
}

#[async_trait::async_trait]
impl CmdletRunner for EndpointRunner {
    /// Each endpoint's calls go in that endpoint's batches (a `$batch` reaches one service),
    /// and the results come back in the order asked.
    async fn run_batch(
        &self,
        invocations: Vec<Invocation>,
        patience: std::time::Duration,
    ) -> Vec<super::batch::BatchResult> {
        let (compliance, exchange): (Vec<_>, Vec<_>) = invocations
            .into_iter()
            .enumerate()
            .partition(|(_, i)| i.endpoint == Endpoint::Compliance);
        let (exchange_at, exchange): (Vec<usize>, Vec<Invocation>) = exchange.into_iter().unzip();
        let (compliance_at, compliance): (Vec<usize>, Vec<Invocation>) =
            compliance.into_iter().unzip();
        // One patience for the whole: the second endpoint gets what the first left.
        let started = std::time::Instant::now();
        let mut slots: Vec<Option<super::batch::BatchResult>> = (0..exchange_at.len()
            + compliance_at.len())
            .map(|_| None)
            .collect();
        if !exchange.is_empty() {
            let results = self.exchange.run_batch(exchange, patience).await;
            for (at, result) in exchange_at.into_iter().zip(results) {
                slots[at] = Some(result);
            }
        }
        if !compliance.is_empty() {
            let results = match &*self.compliance {
                Ok(session) => {
                    session
                        .invoke_batch_within(
                            &compliance,
                            Some(patience.saturating_sub(started.elapsed())),
                        )
                        .await
                }
                Err(why) => compliance
                    .iter()
                    .map(|i| Err(ExchangeError::Invalid(format!("{}: {why}", i.cmdlet))))
                    .collect(),
            };
            for (at, result) in compliance_at.into_iter().zip(results) {
                slots[at] = Some(result);
            }
        }
        slots
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    Err(ExchangeError::Invalid(
                        "the batch lost a call's result".into(),
                    ))
                })
            })
            .collect()
    }

    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        if invocation.endpoint == Endpoint::Exchange {
            return self.exchange.start(invocation);
        }
        match (invocation.endpoint, &*self.compliance) {
            (Endpoint::Exchange, _) => self.exchange.start(invocation),
            (Endpoint::Compliance, Ok(session)) => Box::new(session.stream(invocation)),
            (Endpoint::Compliance, Err(why)) => Box::new(crate::runner::Refused(Some(
                ExchangeError::Invalid(format!("{}: {why}", invocation.cmdlet)),
            ))),
        }
    }
}
