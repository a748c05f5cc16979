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

/// Nouns of cmdlets that exist only in Exchange Online PowerShell, never in Security &
/// Compliance PowerShell (their reference pages say "available only in … Exchange", e.g.
/// MicrosoftDocs/office-docs-powershell `exchange/exchange-ps/ExchangePowerShell/Get-Mailbox.md`),
/// plus every `EXO*` noun of the module's REST-only cmdlets (`Get-EXOMailbox`). Nouns both
/// services have (`RoleGroup`, `ManagementRoleAssignment`, `User`) are in neither list.
pub const EXCHANGE_NOUNS: &[&str] = &[
    "AcceptedDomain",
    "CASMailbox",
    "DistributionGroup",
    "DistributionGroupMember",
    "DynamicDistributionGroup",
    "InboxRule",
    "Mailbox",
    "MailboxAutoReplyConfiguration",
    "MailboxFolderPermission",
    "MailboxFolderStatistics",
    "MailboxPermission",
    "MailboxStatistics",
    "MailContact",
    "MailUser",
    "MessageTrace",
    "MigrationBatch",
    "MigrationEndpoint",
    "MobileDevice",
    "MoveRequest",
    "OrganizationConfig",
    "Recipient",
    "RecipientPermission",
    "TransportRule",
    "UnifiedGroup",
    "UnifiedGroupLinks",
];

impl Endpoint {
    /// The endpoint `cmdlet` is known to live on: [`Endpoint::Compliance`] for a noun of
    /// [`COMPLIANCE_NOUNS`], [`Endpoint::Exchange`] for one of [`EXCHANGE_NOUNS`] or an `EXO*`
    /// noun, else `None` (unknown: the policy entry decides, Exchange by default).
    pub fn known_for(cmdlet: &str) -> Option<Endpoint> {
        let noun = cmdlet.split_once('-').map(|(_, noun)| noun)?;
        let among = |nouns: &[&str]| nouns.iter().any(|n| n.eq_ignore_ascii_case(noun));
        if among(COMPLIANCE_NOUNS) {
            Some(Endpoint::Compliance)
        } else if among(EXCHANGE_NOUNS)
            || noun
                .get(..3)
                .is_some_and(|head| head.eq_ignore_ascii_case("EXO"))
        {
            Some(Endpoint::Exchange)
        } else {
            None
        }
    }

    /// The service's name in messages: "Exchange Online" or "Security & Compliance".
    pub fn service(self) -> &'static str {
        match self {
            Endpoint::Exchange => "Exchange Online",
            Endpoint::Compliance => "Security & Compliance",
        }
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
        for c in [
            "Get-Mailbox",
            "set-casmailbox",
            "Get-EXOMailbox",
            "New-MoveRequest",
        ] {
            assert_eq!(Endpoint::known_for(c), Some(Endpoint::Exchange), "{c}");
        }
        // Exchange's own MRM retention policies are not Purview's; role groups live in both.
        for c in [
            "Get-RetentionPolicy",
            "Get-ComplianceSearchX",
            "Label",
            "Get-RoleGroup",
        ] {
            assert_eq!(Endpoint::known_for(c), None, "{c}");
        }
    }
}
