//! Exchange cmdlets warden knows by name, and "did you mean …?" for a name that matches
//! nothing. The list is static (Exchange Online's management cmdlets in common use, every
//! cmdlet exosim serves among them): it only improves messages and `warden policy check`'s
//! lint, and never allows or refuses anything.

use crate::names;

/// Exchange Online and Exchange Server cmdlets in common use.
pub const KNOWN_CMDLETS: &[&str] = &[
    "Add-DistributionGroupMember",
    "Add-MailboxFolderPermission",
    "Add-MailboxPermission",
    "Add-RecipientPermission",
    "Disable-InboxRule",
    "Disable-Mailbox",
    "Enable-InboxRule",
    "Enable-Mailbox",
    "Get-AcceptedDomain",
    "Get-AddressList",
    "Get-AdminAuditLogConfig",
    "Get-CalendarProcessing",
    "Get-CASMailbox",
    "Get-CASMailboxPlan",
    "Get-ComplianceSearch",
    "Get-ComplianceSearchAction",
    "Get-Contact",
    "Get-DistributionGroup",
    "Get-DlpCompliancePolicy",
    "Get-DistributionGroupMember",
    "Get-DynamicDistributionGroup",
    "Get-DynamicDistributionGroupMember",
    "Get-EXOCasMailbox",
    "Get-EXOMailbox",
    "Get-EXOMailboxFolderPermission",
    "Get-EXOMailboxFolderStatistics",
    "Get-EXOMailboxPermission",
    "Get-EXOMailboxStatistics",
    "Get-EXOMobileDeviceStatistics",
    "Get-EXORecipient",
    "Get-EXORecipientPermission",
    "Get-InboundConnector",
    "Get-InboxRule",
    "Get-Mailbox",
    "Get-MailboxAutoReplyConfiguration",
    "Get-MailboxCalendarFolder",
    "Get-MailboxFolderPermission",
    "Get-MailboxFolderStatistics",
    "Get-MailboxPermission",
    "Get-MailboxPlan",
    "Get-MailboxRegionalConfiguration",
    "Get-MailboxStatistics",
    "Get-MailContact",
    "Get-MailUser",
    "Get-ManagementRole",
    "Get-ManagementRoleAssignment",
    "Get-MessageTrace",
    "Get-MessageTraceDetail",
    "Get-MobileDevice",
    "Get-MobileDeviceStatistics",
    "Get-OrganizationConfig",
    "Get-OutboundConnector",
    "Get-OwaMailboxPolicy",
    "Get-Recipient",
    "Get-RecipientPermission",
    "Get-RetentionCompliancePolicy",
    "Get-RetentionPolicy",
    "Get-RoleGroup",
    "Get-RoleGroupMember",
    "Get-SharingPolicy",
    "Get-TransportRule",
    "Get-UnifiedGroup",
    "Get-UnifiedGroupLinks",
    "Get-User",
    "New-ComplianceSearch",
    "New-ComplianceSearchAction",
    "New-DistributionGroup",
    "New-DynamicDistributionGroup",
    "New-InboxRule",
    "New-Mailbox",
    "New-MailContact",
    "New-MailUser",
    "New-TransportRule",
    "New-UnifiedGroup",
    "Remove-DistributionGroup",
    "Remove-DistributionGroupMember",
    "Remove-InboxRule",
    "Remove-Mailbox",
    "Remove-MailboxFolderPermission",
    "Remove-MailboxPermission",
    "Remove-MailContact",
    "Remove-MobileDevice",
    "Remove-RecipientPermission",
    "Remove-UnifiedGroupLinks",
    "Search-AdminAuditLog",
    "Search-MailboxAuditLog",
    "Search-UnifiedAuditLog",
    "Set-CalendarProcessing",
    "Set-CASMailbox",
    "Set-Contact",
    "Set-DistributionGroup",
    "Set-DynamicDistributionGroup",
    "Set-InboxRule",
    "Set-Mailbox",
    "Set-MailboxAutoReplyConfiguration",
    "Set-MailboxFolderPermission",
    "Set-MailboxRegionalConfiguration",
    "Set-MailContact",
    "Set-MailUser",
    "Set-OrganizationConfig",
    "Set-TransportRule",
    "Set-UnifiedGroup",
    "Set-User",
    "Start-ComplianceSearch",
    "Add-UnifiedGroupLinks",
    "Update-DistributionGroupMember",
];

/// True when `cmdlet` is one of [`KNOWN_CMDLETS`] (ASCII-case-insensitively).
pub fn is_known_cmdlet(cmdlet: &str) -> bool {
    KNOWN_CMDLETS.iter().any(|k| names::same(k, cmdlet))
}

/// The candidate closest to `name` by case-insensitive edit distance (Damerau–Levenshtein),
/// when it is close enough to be a likely typo: at most a third of the name's length, and at
/// most 3 edits. An exact (case-insensitive) match is not a suggestion.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    let limit = (lower.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .filter(|c| !names::same(c, name))
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// `; did you mean X?` for a cmdlet name no role allows: the closest name the grant allows,
/// else the closest Exchange cmdlet warden knows (said to be not granted). Empty when nothing is
/// close.
pub fn cmdlet_hint<'a>(cmdlet: &str, allowed: impl IntoIterator<Item = &'a str>) -> String {
    if let Some(near) = closest(cmdlet, allowed) {
        return format!("; did you mean {near}?");
    }
    match closest(cmdlet, KNOWN_CMDLETS.iter().copied()) {
        Some(near) => format!("; did you mean {near}? (not granted either)"),
        None => String::new(),
    }
}

/// `; did you mean X?` for a parameter name, against the names listed for the cmdlet.
pub fn parameter_hint<'a>(parameter: &str, listed: impl IntoIterator<Item = &'a str>) -> String {
    closest(parameter, listed)
        .map(|near| format!("; did you mean {near}?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_name_case_insensitively() {
        assert_eq!(
            closest("get-mailboxx", ["Get-Mailbox", "Set-Mailbox"]),
            Some("Get-Mailbox")
        );
        assert_eq!(
            closest("Identiy", ["Identity", "ResultSize"]),
            Some("Identity")
        );
        assert_eq!(
            closest("Get-Mailbox", ["Get-Mailbox"]),
            None,
            "exact is not a typo"
        );
        assert_eq!(closest("Foo-Bar", ["Get-Mailbox"]), None);
        assert_eq!(
            cmdlet_hint("Get-MailboxPermision", ["Get-Mailbox"]),
            "; did you mean Get-MailboxPermission? (not granted either)"
        );
    }

    #[test]
    fn knows_every_cmdlet_exosim_serves() {
        // exosim's cmdlet table is data (`spec!("Name", ...)`): read from its source, so a
        // cmdlet added there without being added here fails this test.
        let source = include_str!("../../../emulator/exosim/src/exchange/cmdlets.rs");
        let served: Vec<&str> = source
            .split("spec!(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(
            served.len() >= 10,
            "exosim's table was not found: {served:?}"
        );
        for cmdlet in served {
            assert!(
                is_known_cmdlet(cmdlet),
                "{cmdlet} is served by exosim but not known"
            );
        }
    }

    #[test]
    fn known_names_are_valid_and_unique() {
        for (i, name) in KNOWN_CMDLETS.iter().enumerate() {
            assert!(names::validate_cmdlet(name).is_ok(), "{name}");
            assert!(
                !KNOWN_CMDLETS[..i].iter().any(|k| names::same(k, name)),
                "{name} twice"
            );
        }
    }
}
