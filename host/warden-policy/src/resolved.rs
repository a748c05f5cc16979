//! Deciding on the object, not on its spelling.
//!
//! Exchange resolves an identity parameter — an address or proxy address (trimmed, with or
//! without `smtp:`), an alias, name, GUID, DN, `domain\user`, legacy DN, UPN — to one directory
//! object and acts on that object. A rule that judged only the text a guest sent could be
//! sidestepped by another spelling of the same object. So the broker resolves the parameters
//! [`Grant::identity_parameters`] names before the call, and asks the functions here about the
//! object. They re-run the policy's own rules on substituted values (the deny rules alone on
//! each identifier, the whole [`Grant::check`] on the canonical addresses); no rule is decided
//! twice in two places.

use crate::grant::{Decision, Grant, MAX_REASON_BYTES};
use crate::names;
use serde_json::{Map, Value};
use warden_vocab::CmdletKind;

/// Parameters that name a recipient on every cmdlet that takes them (their types in Microsoft's
/// cmdlet reference are `RecipientIdParameter`, `MailboxIdParameter`, `GeneralRecipientIdParameter`
/// and the like). A deny rule may mark any other parameter `identity = true`.
const RECIPIENT_PARAMETERS: &[&str] = &[
    "User",
    "Trustee",
    "Member",
    "Members",
    "GrantSendOnBehalfTo",
    "ForwardingAddress",
    "ManagedBy",
    "ModeratedBy",
    "AcceptMessagesOnlyFrom",
    "AcceptMessagesOnlyFromDLMembers",
    "AcceptMessagesOnlyFromSendersOrMembers",
    "RejectMessagesFrom",
    "RejectMessagesFromDLMembers",
    "RejectMessagesFromSendersOrMembers",
    "BypassModerationFromSendersOrMembers",
    // The mailbox a per-mailbox cmdlet works in (`*-InboxRule`, `Get-MobileDevice`,
    // `New-MailboxExportRequest`: MailboxIdParameter / MailboxOrMailUserIdParameter).
    "Mailbox",
    // Inbox rules (New-/Set-InboxRule: RecipientIdParameter[]).
    "ForwardTo",
    "RedirectTo",
    "ForwardAsAttachmentTo",
    "From",
    "SentTo",
    "ExceptIfFrom",
    "ExceptIfSentTo",
    // Set-CalendarProcessing (RecipientIdParameter[]).
    "ResourceDelegates",
    "BookInPolicy",
    "RequestInPolicy",
    "RequestOutOfPolicy",
    // Set-User (UserContactIdParameter), Set-MailboxFolderPermission and friends.
    "Manager",
    "Owner",
    "Owners",
    "Links",
];

/// Nouns of the cmdlets whose `Identity` names a recipient (a mailbox, user, group or contact).
const RECIPIENT_NOUNS: &[&str] = &[
    "Mailbox",
    "MailboxStatistics",
    "MailboxPermission",
    "RecipientPermission",
    "Recipient",
    "DistributionGroup",
    "DistributionGroupMember",
    "DynamicDistributionGroup",
    "UnifiedGroup",
    "UnifiedGroupLinks",
    "Group",
    "User",
    "MailUser",
    "MailContact",
    "Contact",
    "CASMailbox",
    "MailboxAutoReplyConfiguration",
    "MailboxRegionalConfiguration",
    "MailboxJunkEmailConfiguration",
    "MailboxCalendarConfiguration",
    "MailboxMessageConfiguration",
    "MailboxFolderStatistics",
];

/// Recipient parameters that also take addresses outside the directory (an inbox rule may
/// forward to, or match mail from, any external address), so a deny rule may judge them as
/// text with `identity = false` — the broker could not resolve such an address.
const MAY_NAME_OUTSIDE_DIRECTORY: &[&str] = &[
    "ForwardTo",
    "RedirectTo",
    "ForwardAsAttachmentTo",
    "From",
    "SentTo",
    "ExceptIfFrom",
    "ExceptIfSentTo",
];

/// Whether `parameter` may name an address outside the directory ([`MAY_NAME_OUTSIDE_DIRECTORY`]).
pub(crate) fn may_name_outside_directory(parameter: &str) -> bool {
    MAY_NAME_OUTSIDE_DIRECTORY
        .iter()
        .any(|p| names::same(p, parameter))
}

/// Whether Exchange resolves `parameter` of `cmdlet` to a recipient, which the broker can
/// resolve itself with `Get-Recipient`.
pub fn names_recipient(cmdlet: &str, parameter: &str) -> bool {
    if RECIPIENT_PARAMETERS
        .iter()
        .any(|p| names::same(p, parameter))
    {
        return true;
    }
    names::same(parameter, "Identity")
        && cmdlet
            .split_once('-')
            .is_some_and(|(_, noun)| RECIPIENT_NOUNS.iter().any(|n| names::same(n, noun)))
}

impl Grant {
    /// The parameters of an allowed call (names as in `decision.parameters`) whose values the
    /// broker must resolve to their objects before the call: the target parameter of any role
    /// entry for the cmdlet, each parameter a deny rule's `when` judges as an object (a
    /// recipient parameter, [`names_recipient`], or one marked `identity = true`), and each
    /// recipient parameter a `domain` constraint judges. Empty for a refused decision.
    pub fn identity_parameters(&self, decision: &Decision) -> Vec<String> {
        if !decision.allowed {
            return Vec::new();
        }
        let cmdlet = decision.cmdlet.as_str();
        let entries = || self.entries.iter().filter(|e| names::same(&e.name, cmdlet));
        decision
            .parameters
            .keys()
            .filter(|name| {
                let target = entries().any(|e| {
                    e.target
                        .as_ref()
                        .is_some_and(|t| names::same(t.parameter(), name))
                });
                let denied_as_object = || {
                    self.deny.iter().any(|d| {
                        names::same(&d.cmdlet, cmdlet)
                            && d.when.is_some()
                            && d.identity == Some(true)
                            && d.parameter.as_deref().is_some_and(|p| names::same(p, name))
                    })
                };
                let domain_judged = || {
                    names_recipient(cmdlet, name)
                        && entries().any(|e| {
                            e.parameters
                                .iter()
                                .any(|(p, c)| names::same(p, name) && c.judges_domain())
                        })
                };
                target || denied_as_object() || domain_judged()
            })
            .cloned()
            .collect()
    }

    /// The refusal a deny rule gives a `cmdlet` call whose `parameter` has `value` (say, one
    /// identifier of the resolved object in place of what the guest sent); `None` when no deny
    /// rule refuses it. The other parameters were judged as sent. Only the deny rules are asked:
    /// an identifier is Exchange's text, not the guest's, so the value rules (a name may start
    /// with U+200E) and the roles do not apply to it, and cannot hide it from a deny rule.
    pub fn deny_for_value(&self, cmdlet: &str, parameter: &str, value: &Value) -> Option<Decision> {
        let mut one = Map::new();
        one.insert(parameter.to_owned(), value.clone());
        let rule = self.deny_for(cmdlet).find(|d| d.matches(cmdlet, &one))?;
        Some(Decision {
            allowed: false,
            rule: rule.rule_id(),
            reason: names::cut(&rule.why(), MAX_REASON_BYTES),
            cmdlet: cmdlet.to_owned(),
            parameters: one,
            sensitive: Vec::new(),
            write: CmdletKind::of(cmdlet).is_write(),
        })
    }

    /// The whole decision again on `parameters` (the call with its identity values replaced by
    /// the resolved objects' canonical addresses): the one whose role entry and target scope
    /// apply.
    pub fn redecide(&self, cmdlet: &str, parameters: &Map<String, Value>) -> Decision {
        self.check(cmdlet, &Value::Object(parameters.clone()).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Policy, Principal};
    use std::path::Path;

    const POLICY: &str = r#"
version = 1
[roles.r]
[[roles.r.cmdlet]]
name = "Set-Mailbox"
target = { parameter = "Identity", domains = ["contoso.com"] }
[roles.r.cmdlet.parameters]
Identity = { length = [1, 256] }
DisplayName = { length = [1, 64] }
GrantSendOnBehalfTo = { items = [0, 5], each = { domain = ["contoso.com"] } }
ForwardingSmtpAddress = { domain = ["contoso.com"] }
[[roles.r.cmdlet]]
name = "Add-MailboxPermission"
[roles.r.cmdlet.parameters]
Identity = { length = [1, 256] }
User = { length = [1, 256] }
AccessRights = { length = [1, 64] }
[[deny]]
cmdlet = "Set-Mailbox"
parameter = "Identity"
when = { pattern = "(?i)admin.*@.*" }
[[deny]]
cmdlet = "Add-MailboxPermission"
parameter = "AccessRights"
when = { equals = "FullAccess" }
[[grant]]
script_inline_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
roles = ["r"]
"#;

    fn grant() -> Grant {
        let policy = Policy::parse(POLICY, Path::new("p.toml")).unwrap();
        policy
            .grant_for(
                &Principal::Script {
                    path: None,
                    sha256: "0".repeat(64),
                },
                None,
            )
            .unwrap()
    }

    #[test]
    fn identity_parameters_are_targets_and_judged_recipients_only() {
        let g = grant();
        let d = g.check(
            "Set-Mailbox",
            r#"{"Identity":"a","DisplayName":"b","GrantSendOnBehalfTo":["x@contoso.com"],"ForwardingSmtpAddress":"y@contoso.com"}"#,
        );
        assert!(d.allowed, "{d:?}");
        let mut names = g.identity_parameters(&d);
        names.sort();
        // ForwardingSmtpAddress is an address, not a recipient Exchange resolves.
        assert_eq!(names, ["GrantSendOnBehalfTo", "Identity"]);
        let d = g.check(
            "Add-MailboxPermission",
            r#"{"Identity":"a","User":"b","AccessRights":"ReadPermission"}"#,
        );
        assert!(d.allowed, "{d:?}");
        // A deny on AccessRights judges a right, not a recipient: nothing to resolve.
        assert!(g.identity_parameters(&d).is_empty());
    }

    #[test]
    fn deny_rules_rerun_on_substituted_values() {
        let g = grant();
        let denied = g
            .deny_for_value("Set-Mailbox", "Identity", &Value::from("Admin@contoso.com"))
            .expect("the deny rule refuses the object's address");
        assert_eq!(denied.rule, "deny[0]");
        assert!(
            g.deny_for_value("Set-Mailbox", "Identity", &Value::from("admin"))
                .is_none()
        );
        let mut p = Map::new();
        p.insert("Identity".into(), Value::from("alex@fabrikam.com"));
        p.insert(
            "GrantSendOnBehalfTo".into(),
            Value::from(vec!["x@contoso.com"]),
        );
        assert!(g.redecide("Set-Mailbox", &p).allowed);
        p.insert(
            "GrantSendOnBehalfTo".into(),
            Value::from(vec!["x@fabrikam.com"]),
        );
        assert!(!g.redecide("Set-Mailbox", &p).allowed);
    }
}
