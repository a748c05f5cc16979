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

/// Parameters of these cmdlets whose full name is a prefix of a secure one (`New-Mailbox
/// -Room`, `New-MoveRequest -Remote`): PowerShell's binder takes an exact name over a prefix,
/// so these name themselves, not the secure parameter.
const EXACT_NON_SECURE: &[(&str, &str)] = &[("New-Mailbox", "Room"), ("New-MoveRequest", "Remote")];

/// The secure parameter of `cmdlet` that `parameter` names, with how it is encrypted: its full
/// name, or (as PowerShell's binder accepts) a case-insensitive prefix of it, so `Pass` is
/// `Password`. A prefix of two secure parameters names the first; the encrypter, the RPS
/// refusal, `warden invoke` and the policy all ask this one function.
pub fn secure_parameter_named(cmdlet: &str, parameter: &str) -> Option<(&'static str, SecureKind)> {
    if parameter.is_empty()
        || EXACT_NON_SECURE
            .iter()
            .any(|(c, p)| c.eq_ignore_ascii_case(cmdlet) && p.eq_ignore_ascii_case(parameter))
    {
        return None;
    }
    let of_cmdlet = || {
        SECURE_PARAMETERS
            .iter()
            .filter(|(c, _, _)| c.eq_ignore_ascii_case(cmdlet))
    };
    of_cmdlet()
        .find(|(_, p, _)| p.eq_ignore_ascii_case(parameter))
        .or_else(|| {
            of_cmdlet().find(|(_, p, _)| {
                p.get(..parameter.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(parameter))
            })
        })
        .map(|(_, p, kind)| (*p, *kind))
}

/// How `cmdlet`'s `parameter` is encrypted, if it is ([`secure_parameter_named`]: full names
/// and their prefixes, case-insensitively).
pub fn secure_parameter(cmdlet: &str, parameter: &str) -> Option<SecureKind> {
    secure_parameter_named(cmdlet, parameter).map(|(_, kind)| kind)
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
        // A prefix is the parameter (PowerShell's binder accepts it); an exact other name is not.
        assert_eq!(
            secure_parameter_named("set-mailbox", "pass"),
            Some(("Password", SecureKind::SecureString))
        );
        assert_eq!(
            secure_parameter_named("New-Mailbox", "RoomMail").map(|(p, _)| p),
            Some("RoomMailboxPassword")
        );
        assert_eq!(secure_parameter("New-Mailbox", "Room"), None);
        assert_eq!(secure_parameter("New-MoveRequest", "Remote"), None);
        assert_eq!(
            secure_parameter("New-MoveRequest", "RemoteCred"),
            Some(SecureKind::Credential)
        );
        assert_eq!(secure_parameter("Set-Mailbox", ""), None);
        assert_eq!(secure_parameter("Set-Mailbox", "Passwords"), None);
        for (_, p, _) in SECURE_PARAMETERS {
            assert!(crate::names::sensitive_by_name(p), "{p}");
        }
    }
}
