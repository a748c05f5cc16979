//! The per-call routing hint (`X-AnchorMailbox`):
//! - by default every call carries the session's anchor, the organisation system mailbox
//!   (`APP:SystemMailbox{bb558c35-…}@<tenant>`, [`SessionConfig::anchor_mailbox`]);
//! - with custom routing on ([`SessionConfig::custom_routing`], off by default), a
//!   mailbox-scoped cmdlet whose `-Identity` is an address in the tenant's own domain is
//!   anchored on that mailbox (`SMTP:<address>`), one whose `-Identity` is a mailbox GUID on
//!   `MBX:<guid>@<tenant>`, and the call also carries `parameter-based-routing: true`.
//!
//! Inferred, not documented: the `parameter-based-routing: true` header sent beside
//! `X-AnchorMailbox` is seen in clients (CIPP-API `New-ExoRequest.ps1`); that the module sets
//! it per call from `-Identity` under `Connect-ExchangeOnline -UseCustomRouting`, the hint
//! forms and the cmdlets below are inferred from those clients and the `-UseCustomRouting`
//! parameter's name; no public source of the module's own routing code was found.
//!
//! `-Identity` is the caller's, so it is untrusted: a value that is neither form, that would
//! not make a clean header (CR/LF, spaces, non-ASCII, over 254 bytes or a label over 63), or
//! that names a mailbox outside the tenant's domain never becomes a hint; the call falls back
//! to the default anchor.
//!
//! [`SessionConfig::anchor_mailbox`]: super::SessionConfig::anchor_mailbox
//! [`SessionConfig::custom_routing`]: super::SessionConfig::custom_routing

use crate::params::{ParamValue, Parameters};

/// The mailbox-scoped cmdlets routed by `-Identity` (inferred: per-mailbox reads, whose
/// `-Identity` names one mailbox; the module's own list, if it has one, is not known).
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

/// `MBX:<guid>@<tenant>` for a mailbox GUID, `SMTP:<address>` for a plain address in the
/// tenant's own domain, else none.
fn mailbox_anchor(value: &str, tenant: &str) -> Option<String> {
    if let Ok(guid) = uuid::Uuid::parse_str(value) {
        return Some(format!("MBX:{guid}@{tenant}"));
    }
    let domain = plain_address_domain(value)?;
    in_tenant_domain(domain, tenant).then(|| format!("SMTP:{value}"))
}

/// The longest address taken as a hint: RFC 5321's 256-byte path less its angle brackets.
const MAX_ADDRESS_BYTES: usize = 254;
/// The longest DNS label (RFC 1035).
const MAX_LABEL_BYTES: usize = 63;

/// Whether `domain` is the tenant's: the configured tenant when it is a domain name (compared
/// case-insensitively). A tenant given as a GUID names no domain, so no address qualifies: an
/// untrusted `-Identity` must not steer the call to another tenant's mailbox.
fn in_tenant_domain(domain: &str, tenant: &str) -> bool {
    let tenant = tenant.trim();
    uuid::Uuid::parse_str(tenant).is_err()
        && is_dns_name(tenant)
        && domain.eq_ignore_ascii_case(tenant)
}

/// The domain of `local@domain` in printable ASCII without spaces, one `@`, a dotted
/// DNS-shaped domain, at most [`MAX_ADDRESS_BYTES`]: what can go into a header as is and names
/// one mailbox (a folder path such as `x@y:\Calendar` does not).
fn plain_address_domain(value: &str) -> Option<&str> {
    if value.len() > MAX_ADDRESS_BYTES {
        return None;
    }
    let (local, domain) = value.split_once('@')?;
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"@\\:\"(),;<>[]".contains(&b));
    (local_ok && is_dns_name(domain)).then_some(domain)
}

/// Dotted labels of ASCII letters, digits and inner hyphens, each at most [`MAX_LABEL_BYTES`].
fn is_dns_name(domain: &str) -> bool {
    domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_BYTES
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
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
        let routed = hint("Get-MailboxStatistics", string("ann@T.Example"), true);
        assert_eq!(routed.anchor, "SMTP:ann@T.Example");
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
                ("x-anchormailbox".into(), "SMTP:ann@T.Example".into()),
                ("parameter-based-routing".into(), "true".into())
            ]
        );
    }

    #[test]
    fn everything_else_gets_the_default_anchor() {
        for (cmdlet, identity, custom) in [
            ("Get-MailboxStatistics", string("ann@t.example"), false),
            ("Get-Mailbox", string("ann@t.example"), true),
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
            "ann@t.example\r\nX-Injected: 1",
            "ann@t.example\n",
            "ann\r@t.example",
            "anñ@t.example",
            "ann@t.exämple",
            "ann smith@t.example",
            "ann@t.example:\\Calendar",
            "Ann Smith",
            "ann@@t.example",
            "@t.example",
            "ann@",
            "ann@localhost",
            "",
        ] {
            let h = hint("Get-MailboxStatistics", string(bad), true);
            assert_eq!(h.anchor, DEFAULT, "{bad:?}");
            assert!(!h.parameter_based, "{bad:?}");
        }
    }

    #[test]
    fn an_address_outside_the_tenant_s_domain_is_never_a_hint() {
        let label = "a".repeat(63);
        for foreign in [
            "ann@contoso.com".to_owned(),
            "ann@sub.t.example".to_owned(),
            "ann@t.example.evil".to_owned(),
            "ann@xt.example".to_owned(),
            // In the domain but over the length limits.
            format!("{}@t.example", "a".repeat(250)),
            format!("ann@{label}a.t.example"),
        ] {
            let h = hint("Get-MailboxStatistics", string(&foreign), true);
            assert_eq!(h.anchor, DEFAULT, "{foreign:?}");
            assert!(!h.parameter_based, "{foreign:?}");
        }
        // The longest allowed still routes.
        let longest = format!("{}@t.example", "a".repeat(254 - "@t.example".len()));
        assert_eq!(
            hint("Get-MailboxStatistics", string(&longest), true).anchor,
            format!("SMTP:{longest}")
        );
    }

    #[test]
    fn a_tenant_given_as_a_guid_names_no_domain_so_only_guids_route() {
        let tenant = "11111111-2222-3333-4444-555555555555";
        let by = |value: &str| {
            let parameters: Parameters =
                [("identity".to_owned(), ParamValue::String(value.to_owned()))].into();
            RoutingHint::for_call("Get-InboxRule", &parameters, DEFAULT, tenant, true)
        };
        assert_eq!(by("ann@t.example").anchor, DEFAULT);
        assert_eq!(by(&format!("ann@{tenant}")).anchor, DEFAULT);
        let guid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(by(guid).anchor, format!("MBX:{guid}@{tenant}"));
    }
}
