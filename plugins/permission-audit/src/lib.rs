//! `permission-audit`: who holds FullAccess and SendAs on shared mailboxes.
//!
//! It streams the shared mailboxes (`Get-Mailbox -RecipientTypeDetails SharedMailbox`, or every
//! mailbox with `--all`), and for each asks `Get-MailboxPermission` (FullAccess) and
//! `Get-RecipientPermission` (SendAs). Output: a JSON array of
//! `{"Mailbox": …, "Trustee": …, "Right": "FullAccess" | "SendAs"}`. Arguments: `--all`,
//! `--limit N`.
//!
//! It only reads. It leaves out the mailbox's own `NT AUTHORITY\SELF` entry, other system
//! accounts and SIDs, inherited entries and deny entries: what remains is the delegation a
//! person granted. It stops, rather than return a partial audit as if it were whole, when a
//! call fails.

use serde::Serialize;
use serde_json::{Value, json};
use warden_sdk::args::Args;
use warden_sdk::{
    Mailbox, MailboxPermission, Plugin, RecipientPermission, exchange, is_system_trustee, log,
};

warden_sdk::manifest! {
    name = "permission-audit",
    description = "Lists who has FullAccess and SendAs on shared mailboxes",
    cmdlets = {
        "Get-Mailbox" = ["RecipientTypeDetails", "ResultSize"],
        "Get-MailboxPermission" = ["Identity"],
        "Get-RecipientPermission" = ["Identity"],
    },
}

struct PermissionAudit;

warden_sdk::plugin!(PermissionAudit);

#[derive(Debug, Serialize)]
struct Row<'a> {
    #[serde(rename = "Mailbox")]
    mailbox: &'a str,
    #[serde(rename = "Trustee")]
    trustee: &'a str,
    #[serde(rename = "Right")]
    right: &'static str,
}

impl Plugin for PermissionAudit {
    fn run(args: Vec<String>) -> Result<String, String> {
        let mut args = Args::new(args);
        let all = args.flag("all");
        let limit: Option<u64> = args.parsed("limit")?;
        args.finish()?;
        if limit == Some(0) {
            return Err("--limit must be at least 1".into());
        }
        let listing: &[&str] = if all { &[] } else { &["RecipientTypeDetails"] };
        let grants = exchange::require(&[
            ("Get-Mailbox", listing),
            ("Get-MailboxPermission", &["Identity"]),
            ("Get-RecipientPermission", &["Identity"]),
        ])?;
        let get_mailbox = grants
            .iter()
            .find(|g| g.cmdlet.eq_ignore_ascii_case("Get-Mailbox"))
            .ok_or("Get-Mailbox is not granted")?;

        let mut params = serde_json::Map::new();
        if !all {
            params.insert("RecipientTypeDetails".into(), json!("SharedMailbox"));
        }
        if get_mailbox.takes("ResultSize") || get_mailbox.max_result_size.is_some() {
            let size = match (limit, get_mailbox.max_result_size) {
                (Some(l), Some(m)) => json!(l.min(m)),
                (Some(l), None) => json!(l),
                (None, Some(m)) => json!(m),
                (None, None) => json!("Unlimited"),
            };
            params.insert("ResultSize".into(), size);
        }

        let mailboxes = exchange::stream::<Mailbox>("Get-Mailbox", &Value::Object(params))
            .map_err(|e| format!("Get-Mailbox: {e}"))?;
        let mut out = String::from("[");
        let mut rows = 0usize;
        let mut done: u64 = 0;
        for mailbox in mailboxes {
            if limit.is_some_and(|l| done >= l) {
                break;
            }
            let mailbox =
                mailbox.map_err(|e| format!("Get-Mailbox stopped after {done} mailboxes: {e}"))?;
            let Some(identity) = mailbox.identity_for_calls() else {
                log::warn("skipped a mailbox without an address or identity");
                continue;
            };
            let mut emit = |trustee: &str, right: &'static str| {
                if rows > 0 {
                    out.push(',');
                }
                let row = Row {
                    mailbox: identity,
                    trustee,
                    right,
                };
                out.push_str(&serde_json::to_string(&row).unwrap_or_default());
                rows += 1;
            };

            let full: Vec<MailboxPermission> =
                exchange::invoke("Get-MailboxPermission", &json!({"Identity": identity}))
                    .map_err(|e| format!("Get-MailboxPermission for {identity}: {e}"))?;
            for p in &full {
                if let Some(user) = p.user.as_deref()
                    && p.grants("FullAccess")
                    && p.is_inherited != Some(true)
                    && !is_system_trustee(user)
                {
                    emit(user, "FullAccess");
                }
            }

            let send_as: Vec<RecipientPermission> =
                exchange::invoke("Get-RecipientPermission", &json!({"Identity": identity}))
                    .map_err(|e| format!("Get-RecipientPermission for {identity}: {e}"))?;
            for p in &send_as {
                if let Some(trustee) = p.trustee.as_deref()
                    && p.grants("SendAs")
                    && p.is_inherited != Some(true)
                    && !is_system_trustee(trustee)
                {
                    emit(trustee, "SendAs");
                }
            }
            done += 1;
            log::progress(done, limit, "mailboxes");
        }
        out.push(']');
        log::info(format!(
            "audited mailboxes: {done}; delegation entries found: {rows}"
        ));
        Ok(out)
    }
}
