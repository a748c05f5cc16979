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
    let length = lower.chars().count();
    let limit = (length / 3).clamp(1, 3);
    let letters = Letters::of(&lower);
    candidates
        .into_iter()
        .filter(|c| !names::same(c, name))
        // Cheap lower bounds on the distance first (a refused unknown cmdlet is compared with
        // every known one): they drop only candidates the distance would drop too.
        .filter(|c| c.chars().count().abs_diff(length) <= limit)
        .filter(|c| letters.distance_at_least(c) <= limit)
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

/// A text's bytes, counted (ASCII-lowercased): a lower bound on its edit distance to others.
struct Letters<'a> {
    lower: &'a str,
    counts: [i32; 256],
}

impl<'a> Letters<'a> {
    fn of(lower: &'a str) -> Self {
        let mut counts = [0; 256];
        for b in lower.bytes() {
            counts[usize::from(b)] += 1;
        }
        Letters { lower, counts }
    }

    /// At most the Damerau–Levenshtein distance between this text and `other`
    /// (ASCII-case-insensitively): an insertion or deletion changes one count by one, a
    /// substitution two counts by one each (one up, one down), a transposition none, so neither
    /// the bytes missing from one side nor those missing from the other can outnumber the
    /// edits. Bytes, not characters: a character is replaced by a whole one, which changes
    /// each side by at most its (up to 4) bytes, so for non-ASCII text the bound is divided by
    /// 4. Linear in the two lengths.
    fn distance_at_least(&self, other: &str) -> usize {
        let mut diff = self.counts;
        for b in other.bytes() {
            diff[usize::from(b.to_ascii_lowercase())] -= 1;
        }
        // Each byte value b is counted max(0, mine - theirs) times, then max(0, theirs - mine).
        let (mut missing, mut extra, mut non_ascii) = (0, 0, false);
        for b in self.lower.bytes() {
            non_ascii |= !b.is_ascii();
            let d = &mut diff[usize::from(b)];
            if *d > 0 {
                missing += 1;
                *d -= 1;
            }
        }
        for b in other.bytes() {
            non_ascii |= !b.is_ascii();
            let d = &mut diff[usize::from(b.to_ascii_lowercase())];
            if *d < 0 {
                extra += 1;
                *d += 1;
            }
        }
        let bound: usize = missing.max(extra);
        if non_ascii { bound / 4 } else { bound }
    }
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

    /// `closest` as it was before its lower bounds: every candidate's distance computed.
    fn closest_by_scan<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
        let lower = name.to_ascii_lowercase();
        let limit = (lower.chars().count() / 3).clamp(1, 3);
        candidates
            .iter()
            .filter(|c| !names::same(c, name))
            .map(|c| {
                (
                    strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                    *c,
                )
            })
            .filter(|(distance, _)| *distance <= limit)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, c)| c)
    }

    proptest::proptest! {
        #[test]
        fn lower_bounds_never_change_the_suggestion(
            pick in 0..KNOWN_CMDLETS.len(),
            edits in proptest::collection::vec((0usize..40, 0u8..4, proptest::char::any()), 0..5),
            free in "[A-Za-z-]{0,24}|.{0,12}",
        ) {
            // A known name with a few random edits (typos, case, any character), and a free text.
            let mut typo: Vec<char> = KNOWN_CMDLETS[pick].chars().collect();
            for (at, op, c) in edits {
                let at = at % (typo.len() + 1);
                match op {
                    0 => typo.insert(at, c),
                    1 if at < typo.len() => { typo.remove(at); }
                    2 if at < typo.len() => typo[at] = c,
                    3 if at + 1 < typo.len() => typo.swap(at, at + 1),
                    _ => typo.insert(at, c.to_ascii_uppercase()),
                }
            }
            let typo: String = typo.into_iter().collect();
            for name in [typo.as_str(), free.as_str()] {
                proptest::prop_assert_eq!(
                    closest(name, KNOWN_CMDLETS.iter().copied()),
                    closest_by_scan(name, KNOWN_CMDLETS),
                    "{:?}", name
                );
            }
        }
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
