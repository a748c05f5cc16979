//! Which service runs a cmdlet: Exchange Online (`Connect-ExchangeOnline`) or Security &
//! Compliance (`Connect-IPPSSession`). Both speak the same `InvokeCommand` API on different hosts
//! with different tokens; a policy entry names its endpoint and the session routes by it.
//!
//! The nouns below are the Security & Compliance cmdlets warden knows: a policy entry for one of
//! them must say `endpoint = "compliance"` (so grants never send a compliance cmdlet to Exchange by
//! accident). Source: the cmdlet reference's "Security & Compliance" availability lines
//! (MicrosoftDocs/office-docs-powershell `exchange/exchange-ps/ExchangePowerShell/*.md`, e.g.
//! `New-ComplianceSearch.md`: "This cmdlet is available only in Security & Compliance PowerShell").

use serde::{Deserialize, Serialize};
use std::fmt;

/// The service a cmdlet is sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// Exchange Online (`outlook.office365.com`), the default.
    #[default]
    Exchange,
    /// Security & Compliance (`ps.compliance.protection.outlook.com` and its regional hosts).
    Compliance,
}

/// Nouns of cmdlets that exist only in Security & Compliance PowerShell.
pub const COMPLIANCE_NOUNS: &[&str] = &[
    "CaseHoldPolicy",
    "CaseHoldRule",
    "ComplianceCase",
    "ComplianceCaseMember",
    "ComplianceRetentionEvent",
    "ComplianceRetentionEventType",
    "ComplianceSearch",
    "ComplianceSearchAction",
    "ComplianceSecurityFilter",
    "ComplianceTag",
    "DlpCompliancePolicy",
    "DlpComplianceRule",
    "DlpSensitiveInformationType",
    "Label",
    "LabelPolicy",
    "ProtectionAlert",
    "RetentionCompliancePolicy",
    "RetentionComplianceRule",
];

impl Endpoint {
    /// The endpoint `cmdlet` is known to live on: [`Endpoint::Compliance`] for a noun of
    /// [`COMPLIANCE_NOUNS`], else `None` (unknown: the policy entry decides, Exchange by default).
    pub fn known_for(cmdlet: &str) -> Option<Endpoint> {
        let noun = cmdlet.split_once('-').map(|(_, noun)| noun)?;
        COMPLIANCE_NOUNS
            .iter()
            .any(|n| n.eq_ignore_ascii_case(noun))
            .then_some(Endpoint::Compliance)
    }

    /// The name a policy file uses.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Exchange => "exchange",
            Endpoint::Compliance => "compliance",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_cmdlets_are_known_by_noun_and_exchange_ones_are_not() {
        for c in [
            "Get-ComplianceSearch",
            "new-compliancesearchaction",
            "Get-DlpCompliancePolicy",
            "Get-RetentionCompliancePolicy",
        ] {
            assert_eq!(Endpoint::known_for(c), Some(Endpoint::Compliance), "{c}");
        }
        // Exchange's own MRM retention policies are not Purview's.
        for c in [
            "Get-RetentionPolicy",
            "Get-Mailbox",
            "Get-ComplianceSearchX",
            "Label",
        ] {
            assert_eq!(Endpoint::known_for(c), None, "{c}");
        }
    }
}
