//! Knowing what you will get: the operator's grant may shape a cmdlet's results down to an
//! `output` list of properties, and a property it removes is simply absent. Declare the
//! properties the plugin reads in its manifest (`reads = { … }` in [`manifest!`](crate::manifest),
//! which also defines `WARDEN_READS`), check them up front with [`require`], and a result that
//! does not fit its type names the cmdlet and the grant's `output` list instead of a bare serde
//! message.
//!
//! ```ignore
//! warden_sdk::manifest! {
//!     name = "shared-owners",
//!     description = "Who owns each shared mailbox",
//!     cmdlets = { "Get-Mailbox" = ["RecipientTypeDetails", "ResultSize"] },
//!     reads = { "Get-Mailbox" = ["DisplayName", "PrimarySmtpAddress"] },
//! }
//! // In `run`, before the first call:
//! warden_sdk::reads::require(WARDEN_READS)?;
//! ```

use crate::CallError;
use crate::exchange::{Grant, grants};

/// Checks that this run's grant leaves in every property the plugin reads; the error names each
/// one output shaping removes, with the grant's `output` list for its cmdlet. A cmdlet the grant
/// does not allow at all is [`crate::exchange::require`]'s to report.
pub fn require(reads: &[(&str, &[&str])]) -> Result<(), String> {
    let granted = grants();
    let mut removed = Vec::new();
    for (cmdlet, properties) in reads {
        let entries: Vec<&Grant> = granted
            .iter()
            .filter(|g| g.cmdlet.eq_ignore_ascii_case(cmdlet))
            .collect();
        let gone: Vec<&str> = properties
            .iter()
            .copied()
            .filter(|p| !entries.is_empty() && !entries.iter().all(|g| g.returns(p)))
            .collect();
        if !gone.is_empty() {
            removed.push(format!(
                "{cmdlet}: {} removed by the grant's output shaping ({})",
                gone.join(", "),
                output_list(&entries)
            ));
        }
    }
    if removed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} (ask the operator to add them to the grant's `output`, or stop reading them)",
            removed.join("; ")
        ))
    }
}

/// The grant's `output` lists for a cmdlet, as an error quotes them.
fn output_list(entries: &[&Grant]) -> String {
    let lists: Vec<String> = entries
        .iter()
        .filter_map(|g| g.output.as_ref())
        .map(|o| format!("[{}]", o.join(", ")))
        .collect();
    if lists.is_empty() {
        "the grant does not shape its output".to_owned()
    } else {
        format!("output = {}", lists.join(" and "))
    }
}

/// A result of `cmdlet` that did not fit the plugin's type: serde's message, the cmdlet, and
/// what the grant lets through (a field the shaping removes is the usual cause).
pub(crate) fn decode_error(cmdlet: &str, error: serde_json::Error) -> CallError {
    let granted = grants();
    let entries: Vec<&Grant> = granted
        .iter()
        .filter(|g| g.cmdlet.eq_ignore_ascii_case(cmdlet))
        .collect();
    CallError::Decode {
        message: format!(
            "{cmdlet} results do not fit the type asked for: {error}; the grant's {} for \
             {cmdlet} (a property it removes is absent: make the field an Option, or ask the \
             operator to add it)",
            output_list(&entries)
        ),
    }
}
