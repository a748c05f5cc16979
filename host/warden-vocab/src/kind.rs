//! Which cmdlets read and which change state: the one place this is decided.
//!
//! A cmdlet is a *read* only if its verb is on a short allow-list of verbs that never change
//! state; every other verb — including ones we have never seen — is a *write*. Writes are never
//! retried after an ambiguous failure and count against write budgets. `Search-` is a write on
//! purpose: `Search-Mailbox -DeleteContent` deletes mail.

/// Verbs whose cmdlets only read.
pub const READ_VERBS: &[&str] = &[
    "Get", "Test", "Find", "Measure", "Compare", "Resolve", "Trace", "Read", "Show",
];

/// Whether a cmdlet reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CmdletKind {
    /// Changes nothing; may be retried.
    Read,
    /// May change state; never retried after an ambiguous failure.
    Write,
}

impl CmdletKind {
    /// Classifies `Verb-Noun` by its verb (case-insensitive); anything unrecognised is a write.
    pub fn of(cmdlet: &str) -> Self {
        let verb = cmdlet.split_once('-').map(|(verb, _)| verb).unwrap_or("");
        if READ_VERBS.iter().any(|r| r.eq_ignore_ascii_case(verb)) {
            CmdletKind::Read
        } else {
            CmdletKind::Write
        }
    }

    /// True for writes.
    pub fn is_write(self) -> bool {
        self == CmdletKind::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_an_allow_list_and_everything_else_writes() {
        for read in [
            "Get-Mailbox",
            "get-mailbox",
            "GET-MAILBOXSTATISTICS",
            "Test-OAuthConnectivity",
            "Get-Recipient",
        ] {
            assert_eq!(CmdletKind::of(read), CmdletKind::Read, "{read}");
        }
        for write in [
            "Set-Mailbox",
            "New-Mailbox",
            "Remove-Mailbox",
            "Add-MailboxPermission",
            "Enable-Mailbox",
            "Disable-InboxRule",
            "Search-Mailbox",
            "Invoke-Something",
            "Frobnicate-Mailbox",
            "Get",
            "Mailbox",
            "",
        ] {
            assert_eq!(CmdletKind::of(write), CmdletKind::Write, "{write}");
        }
    }
}
