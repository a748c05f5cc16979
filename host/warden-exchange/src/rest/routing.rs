//! The per-call routing hint (`X-AnchorMailbox`), as the ExchangeOnlineManagement module sets
//! it (`docs/protocol/exo-protocol.md` §1.3–1.4, from the module's own `Populate-Headers` and
//! `Get-MailboxIDBasedRoutingHint`):
//! - by default every call carries the session's anchor, the organisation system mailbox
//!   (`APP:SystemMailbox{bb558c35-…}@<tenant>`, [`SessionConfig::anchor_mailbox`]);
//! - with custom routing on (the module's `-UseCustomRouting`, off by default there and here:
//!   [`SessionConfig::custom_routing`]), a mailbox-scoped cmdlet whose `-Identity` is an SMTP
//!   address is anchored on that mailbox (`SMTP:<address>`), one whose `-Identity` is a mailbox
//!   GUID on `MBX:<guid>@<tenant>`, and the call also carries `parameter-based-routing: true`.
//!
//! An `-Identity` that is neither, or that would not make a clean header (CR/LF, spaces,
//! non-ASCII), never becomes a hint: the call falls back to the default anchor. The value is
//! the caller's; a header it could split or that the service would misread must not go out.
//!
//! [`SessionConfig::anchor_mailbox`]: super::SessionConfig::anchor_mailbox
//! [`SessionConfig::custom_routing`]: super::SessionConfig::custom_routing

use crate::params::{ParamValue, Parameters};

/// The mailbox-scoped cmdlets the module routes by `-Identity` that the protocol notes name
/// (§1.4: "Get-MailboxPermission, Get-MailboxFolderPermission, Get-MailboxStatistics,
/// Get-InboxRule, ..."); the rest of the module's list is not known.
pub const MAILBOX_ROUTED_CMDLETS: &[&str] = &[
    "Get-MailboxPermission",
    "Get-MailboxFolderPermission",
    "Get-MailboxStatistics",
    "Get-InboxRule",
];

/// The routing headers of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingHint {
    /// The `X-AnchorMailbox` value.
    pub anchor: String,
    /// Whether the anchor came from a parameter (`parameter-based-routing: true`).
    pub parameter_based: bool,
}

impl RoutingHint {
    /// The call's routing hint: the mailbox named by `-Identity` for a mailbox-scoped cmdlet
    /// when `custom_routing` is on and the value makes a clean hint, else `default_anchor`.
    pub fn for_call(
        cmdlet: &str,
        parameters: &Parameters,
        default_anchor: &str,
        tenant: &str,
        custom_routing: bool,
    ) -> Self {
        let from_identity = custom_routing
            .then(|| {
                MAILBOX_ROUTED_CMDLETS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(cmdlet.trim()))
            })
            .filter(|routed| *routed)
            .and_then(|_| identity(parameters))
            .and_then(|value| mailbox_anchor(value, tenant));
        match from_identity {
            Some(anchor) => Self {
                anchor,
                parameter_based: true,
            },
            None => Self {
                anchor: default_anchor.to_owned(),
                parameter_based: false,
            },
        }
    }

    /// The headers to send: `x-anchormailbox`, and `parameter-based-routing` when it applies.
    pub fn headers(&self) -> impl Iterator<Item = (String, String)> + '_ {
        std::iter::once(("x-anchormailbox".to_owned(), self.anchor.clone())).chain(
            self.parameter_based
                .then(|| ("parameter-based-routing".to_owned(), "true".to_owned())),
        )
    }
}

/// `-Identity` as a string (parameter names are case-insensitive in PowerShell).
fn identity(parameters: &Parameters) -> Option<&str> {
    parameters
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Identity"))
        .and_then(|(_, value)| match value {
            ParamValue::String(text) => Some(text.as_str()),
            _ => None,
        })
}

/// `MBX:<guid>@<tenant>` for a mailbox GUID, `SMTP:<address>` for a plain address, else none.
fn mailbox_anchor(value: &str, tenant: &str) -> Option<String> {
    if let Ok(guid) = uuid::Uuid::parse_str(value) {
        return Some(format!("MBX:{guid}@{tenant}"));
    }
    is_plain_address(value).then(|| format!("SMTP:{value}"))
}

/// `local@domain` in printable ASCII without spaces, one `@`, a dotted DNS-shaped domain: what
/// can go into a header as is and names one mailbox (a folder path such as `x@y:\Calendar` does
/// not).
fn is_plain_address(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"@\\:\"(),;<>[]".contains(&b));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@t.example";

    fn hint(cmdlet: &str, identity: Option<ParamValue>, custom: bool) -> RoutingHint {
        let parameters: Parameters = identity
            .map(|v| ("Identity".to_owned(), v))
            .into_iter()
            .collect();
        RoutingHint::for_call(cmdlet, &parameters, DEFAULT, "t.example", custom)
    }

    fn string(s: &str) -> Option<ParamValue> {
        Some(ParamValue::String(s.to_owned()))
    }

    #[test]
    fn a_mailbox_scoped_cmdlet_is_routed_by_its_identity_when_custom_routing_is_on() {
        let routed = hint("Get-MailboxStatistics", string("ann@contoso.com"), true);
        assert_eq!(routed.anchor, "SMTP:ann@contoso.com");
        assert!(routed.parameter_based);
        let by_guid = hint(
            "get-inboxrule",
            string("0F8FAD5B-D9CB-469F-A165-70867728950E"),
            true,
        );
        assert_eq!(
            by_guid.anchor,
            "MBX:0f8fad5b-d9cb-469f-a165-70867728950e@t.example"
        );
        let headers: Vec<_> = routed.headers().collect();
        assert_eq!(
            headers,
            [
                ("x-anchormailbox".into(), "SMTP:ann@contoso.com".into()),
                ("parameter-based-routing".into(), "true".into())
            ]
        );
    }

    #[test]
    fn everything_else_gets_the_default_anchor() {
        for (cmdlet, identity, custom) in [
            ("Get-MailboxStatistics", string("ann@contoso.com"), false),
            ("Get-Mailbox", string("ann@contoso.com"), true),
            ("Get-AcceptedDomain", None, true),
            ("Get-MailboxStatistics", None, true),
            ("Get-MailboxStatistics", Some(ParamValue::Int(3)), true),
        ] {
            let h = hint(cmdlet, identity, custom);
            assert_eq!(h.anchor, DEFAULT, "{cmdlet}");
            assert!(!h.parameter_based);
            assert_eq!(h.headers().count(), 1);
        }
    }

    #[test]
    fn a_value_that_would_break_the_header_is_never_a_hint() {
        for bad in [
            "ann@contoso.com\r\nX-Injected: 1",
            "ann@contoso.com\n",
            "ann\r@contoso.com",
            "anñ@contoso.com",
            "ann@contöso.com",
            "ann smith@contoso.com",
            "ann@contoso.com:\\Calendar",
            "Ann Smith",
            "ann@@contoso.com",
            "@contoso.com",
            "ann@",
            "ann@localhost",
            "",
        ] {
            let h = hint("Get-MailboxStatistics", string(bad), true);
            assert_eq!(h.anchor, DEFAULT, "{bad:?}");
            assert!(!h.parameter_based, "{bad:?}");
        }
    }
}
