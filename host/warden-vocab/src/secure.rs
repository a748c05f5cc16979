//! The SecureString and PSCredential parameters of Exchange Online cmdlets: the ones the
//! ExchangeOnlineManagement module encrypts before they leave the machine.
//!
//! The module's rule is type-driven: each generated cmdlet function declares its parameters'
//! types, and for every `[securestring]` or `[pscredential]` one it calls `Encrypt-Value` (RSA
//! PKCS#1 v1.5 with the service's public key, base64) before `Execute-Command`. This table is
//! that rule written out, read from the generated module (Calvindd2f/EXO_PROJECT
//! `.idea/full_modoule_dump.ps1`, the `Encrypt-Value` calls of each cmdlet function).
//!
//! The REST client encrypts by it, the policy asks for an explicit opt-in to grant these
//! parameters, and the audit treats every name in it as sensitive ([`crate::names::sensitive_by_name`]).

/// How the module turns a parameter's value into the text it encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureKind {
    /// `[securestring]`: the plain text itself.
    SecureString,
    /// `[pscredential]`: `{"UserName":…,"Password":…}` as compact JSON.
    Credential,
}

use SecureKind::{Credential as C, SecureString as S};

/// (cmdlet, parameter, kind) for every encrypted parameter of the module's cmdlets.
pub const SECURE_PARAMETERS: &[(&str, &str, SecureKind)] = &[
    ("Add-AvailabilityAddressSpace", "Credentials", C),
    ("Export-QuarantineMessage", "Password", S),
    ("Get-CASMailbox", "Credential", C),
    ("Get-CASMailboxPlan", "Credential", C),
    ("Get-DistributionGroup", "Credential", C),
    ("Get-DistributionGroupMember", "Credential", C),
    ("Get-DynamicDistributionGroup", "Credential", C),
    ("Get-DynamicDistributionGroupMember", "Credential", C),
    ("Get-MailPublicFolder", "Credential", C),
    ("Get-MailboxAutoReplyConfiguration", "Credential", C),
    ("Get-MailboxJunkEmailConfiguration", "Credential", C),
    ("Get-MailboxMessageConfiguration", "Credential", C),
    ("Get-MailboxPermission", "Credential", C),
    ("Get-MailboxPlan", "Credential", C),
    ("Get-TextMessagingAccount", "Credential", C),
    ("New-MailUser", "Password", S),
    ("New-Mailbox", "Password", S),
    ("New-Mailbox", "RoomMailboxPassword", S),
    ("New-MailboxAnalysisRequest", "Password", S),
    ("New-MailboxAnalysisRequest", "RemoteCredential", C),
    ("New-MailboxRestoreRequest", "RemoteCredential", C),
    ("New-MigrationEndpoint", "Credentials", C),
    ("New-MigrationEndpoint", "OAuthCode", S),
    ("New-MoveRequest", "RemoteCredential", C),
    ("New-SyncRequest", "AccessToken", S),
    ("New-SyncRequest", "Password", S),
    ("New-SyncRequest", "RefreshToken", S),
    ("New-SyncRequest", "SmtpPassword", S),
    ("New-SyncRequest", "TokenSecret", S),
    ("Set-MailUser", "Password", S),
    ("Set-Mailbox", "Password", S),
    ("Set-Mailbox", "RoomMailboxPassword", S),
    ("Set-MailboxAnalysisRequest", "Password", S),
    ("Set-MigrationEndpoint", "Credentials", C),
    ("Set-MoveRequest", "RemoteCredential", C),
    ("Set-SyncRequest", "Password", S),
    ("Set-SyncRequest", "RefreshToken", S),
    ("Set-SyncRequest", "SmtpPassword", S),
    ("Test-MigrationServerAvailability", "Credentials", C),
    ("Undo-SoftDeletedMailbox", "Password", S),
    ("Update-HybridConfiguration", "OnPremisesCredentials", C),
    ("Update-HybridConfiguration", "TenantCredentials", C),
    ("Update-Recipient", "Credential", C),
];

/// How `cmdlet`'s `parameter` is encrypted, if it is (names compared case-insensitively).
pub fn secure_parameter(cmdlet: &str, parameter: &str) -> Option<SecureKind> {
    SECURE_PARAMETERS
        .iter()
        .find(|(c, p, _)| c.eq_ignore_ascii_case(cmdlet) && p.eq_ignore_ascii_case(parameter))
        .map(|(_, _, kind)| *kind)
}

/// True when some cmdlet takes a parameter of this name as a SecureString or PSCredential.
pub fn is_secure_parameter_name(parameter: &str) -> bool {
    SECURE_PARAMETERS
        .iter()
        .any(|(_, p, _)| p.eq_ignore_ascii_case(parameter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_every_name_is_sensitive() {
        assert_eq!(
            secure_parameter("new-mailbox", "password"),
            Some(SecureKind::SecureString)
        );
        assert_eq!(
            secure_parameter("New-MoveRequest", "RemoteCredential"),
            Some(SecureKind::Credential)
        );
        assert_eq!(secure_parameter("Set-Mailbox", "DisplayName"), None);
        assert_eq!(secure_parameter("Get-Mailbox", "Password"), None);
        for (_, p, _) in SECURE_PARAMETERS {
            assert!(crate::names::sensitive_by_name(p), "{p}");
        }
    }
}
