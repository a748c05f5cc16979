//! The objects cmdlets return, as typed property lists, and their wire form: flat JSON objects
//! with the per-property type annotations of the recorded live response
//! (docs/protocol/exo-protocol.md §1.6).
//!
//! Annotation rules (CAPTURE shows Guid, DateTime, Int16 and Collection(String); the rest follows
//! the same pattern, inferred):
//! - `Guid`: `X@data.type: "System.Guid"` and `X@odata.type: "#Guid"` (recorded);
//! - `DateTime`: `X@data.type: "System.DateTime"` only, value `2024-04-10T08:56:22.0000000+00:00`
//!   (recorded);
//! - collections of strings: `X@odata.type: "#Collection(String)"` only (recorded);
//! - `Int32`/`Int64`: both annotations, like `Int16` in the capture (inferred);
//! - `Boolean`: `X@data.type: "System.Boolean"` only (inferred; JSON booleans need no OData type);
//! - strings and nulls: no annotation (recorded).

use serde_json::Value;

use super::store::{Group, Mailbox, MailboxKind, Org, format_guid, legacy_dn};

/// One property value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Prop {
    Str(String),
    Bool(bool),
    I32(i32),
    #[allow(
        dead_code,
        reason = "annotated like Int32; no modelled property is Int64 yet"
    )]
    I64(i64),
    Guid(u128),
    Date(i64),
    Strs(Vec<String>),
    Null,
}

/// A returned object: property names in output order.
pub(crate) type Obj = Vec<(&'static str, Prop)>;

impl Prop {
    /// The value as Exchange's filter engine compares it (text).
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Prop::Str(s) => Some(s.clone()),
            Prop::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
            Prop::I32(n) => Some(n.to_string()),
            Prop::I64(n) => Some(n.to_string()),
            Prop::Guid(g) => Some(format_guid(*g)),
            Prop::Date(t) => Some(format_date(*t)),
            Prop::Strs(_) | Prop::Null => None,
        }
    }

    /// Its `@data.type` and `@odata.type` annotations (the module's doc comment says which are
    /// recorded and which inferred).
    fn annotations(&self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Prop::Guid(_) => (Some("System.Guid"), Some("#Guid")),
            Prop::Date(_) => (Some("System.DateTime"), None),
            Prop::Strs(_) => (None, Some("#Collection(String)")),
            Prop::I32(_) => (Some("System.Int32"), Some("#Int32")),
            Prop::I64(_) => (Some("System.Int64"), Some("#Int64")),
            Prop::Bool(_) => (Some("System.Boolean"), None),
            Prop::Str(_) | Prop::Null => (None, None),
        }
    }

    /// The plain JSON value (no annotations), for [`crate::Exosim::mailbox`]: what its
    /// `Serialize` writes on the wire.
    pub(crate) fn plain(&self) -> Value {
        serde_json::to_value(self).expect("a property always serialises")
    }
}

/// The object as plain JSON (no annotations), as both transports' clients see it.
pub(crate) fn plain_object(obj: &Obj) -> serde_json::Map<String, Value> {
    obj.iter()
        .map(|(k, v)| ((*k).to_owned(), v.plain()))
        .collect()
}

/// Appends one object in wire form (with annotations) to `out`, keeping only `select`ed
/// properties when a projection was asked for.
pub(crate) fn write_object(out: &mut String, obj: &Obj, select: Option<&[String]>) {
    // serde_json writes to a byte buffer; an object's text is checked as UTF-8 once and
    // appended. A page is thousands of these: no `Value` and no `String` per member.
    let mut text = Vec::with_capacity(2048);
    serde_json::to_writer(&mut text, &Wire { obj, select })
        .expect("a property list always serialises");
    out.push_str(std::str::from_utf8(&text).expect("serde_json writes UTF-8"));
}

/// An object's wire form, for [`write_object`].
struct Wire<'a> {
    obj: &'a Obj,
    select: Option<&'a [String]>,
}

impl serde::Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, prop) in self.obj {
            if let Some(select) = self.select
                && !select.iter().any(|s| s.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let (data_type, odata_type) = prop.annotations();
            if let Some(t) = data_type {
                map.serialize_entry(&format_args!("{name}@data.type"), t)?;
            }
            if let Some(t) = odata_type {
                map.serialize_entry(&format_args!("{name}@odata.type"), t)?;
            }
            map.serialize_entry(name, prop)?;
        }
        map.end()
    }
}

/// A property's plain value, the one form both the wire and [`Prop::plain`] use.
impl serde::Serialize for Prop {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Prop::Str(s) => serializer.serialize_str(s),
            Prop::Bool(b) => serializer.serialize_bool(*b),
            Prop::I32(n) => serializer.serialize_i32(*n),
            Prop::I64(n) => serializer.serialize_i64(*n),
            Prop::Guid(g) => serializer.collect_str(&uuid::Uuid::from_u128(*g)),
            Prop::Date(t) => serializer.serialize_str(&format_date(*t)),
            Prop::Strs(v) => v.serialize(serializer),
            Prop::Null => serializer.serialize_unit(),
        }
    }
}

/// `2024-04-10T08:56:22.0000000+00:00`, the form of the capture.
pub(crate) fn format_date(unix: i64) -> String {
    let dt =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.0000000+00:00",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Exchange's `ByteQuantifiedSize` text: `1.2 GB (1,288,490,188 bytes)`.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
        ("B", 1),
    ];
    let (unit, size) = UNITS
        .iter()
        .copied()
        .find(|(_, size)| bytes >= *size)
        .unwrap_or(("B", 1));
    #[allow(
        clippy::cast_precision_loss,
        reason = "display rounding to three decimals"
    )]
    let value = bytes as f64 / size as f64;
    let mut number = format!("{value:.3}");
    while number.ends_with('0') {
        number.pop();
    }
    if number.ends_with('.') {
        number.pop();
    }
    format!("{number} {unit} ({} bytes)", group_thousands(bytes))
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parses a quota as Set-Mailbox takes it: `Unlimited`, `50GB`, `50 GB`, `1.5 MB`, `1024` (bytes)
/// or Exchange's own output form `99 GB (106,300,440,576 bytes)`. `Ok(None)` is Unlimited.
pub(crate) fn parse_quota(text: &str) -> Result<Option<u64>, ()> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    if let Some(open) = text.find('(')
        && let Some(bytes) = text[open + 1..].strip_suffix("bytes)")
    {
        return bytes
            .trim()
            .replace(',', "")
            .parse()
            .map(Some)
            .map_err(|_| ());
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| ())?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return Err(()),
    };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "quota sizes are far below 2^53"
    )]
    let bytes = (number * factor as f64).round() as u64;
    Ok(Some(bytes))
}

fn quota_text(quota: Option<u64>) -> String {
    quota.map_or_else(|| "Unlimited".to_owned(), format_bytes)
}

/// The back-end server name this emulator reports (`X-CalculatedBETarget`, error texts).
pub(crate) const BE_SERVER: &str = "EXOSIM01MB0001.namprd00.PROD.OUTLOOK.COM";

/// `Get-Mailbox` output.
pub(crate) fn mailbox(org: &Org, m: &Mailbox) -> Obj {
    vec![
        ("Name", Prop::Str(m.name.clone())),
        ("Alias", Prop::Str(m.alias.clone())),
        ("DisplayName", Prop::Str(m.display_name.clone())),
        ("Identity", Prop::Str(m.name.clone())),
        (
            "DistinguishedName",
            Prop::Str(org.distinguished_name(&m.alias)),
        ),
        ("LegacyExchangeDN", Prop::Str(legacy_dn(m.guid, &m.alias))),
        ("PrimarySmtpAddress", Prop::Str(m.primary_smtp.clone())),
        ("UserPrincipalName", Prop::Str(m.upn.clone())),
        ("WindowsEmailAddress", Prop::Str(m.primary_smtp.clone())),
        ("EmailAddresses", Prop::Strs(m.proxies.clone())),
        ("RecipientType", Prop::Str("UserMailbox".to_owned())),
        (
            "RecipientTypeDetails",
            Prop::Str(m.kind.as_str().to_owned()),
        ),
        (
            "ResourceType",
            if m.kind == MailboxKind::RoomMailbox {
                Prop::Str("Room".to_owned())
            } else {
                Prop::Null
            },
        ),
        ("ExchangeGuid", Prop::Guid(m.exchange_guid)),
        ("Guid", Prop::Guid(m.guid)),
        ("ExchangeObjectId", Prop::Guid(m.guid)),
        (
            "ExternalDirectoryObjectId",
            Prop::Str(format_guid(m.external_id)),
        ),
        ("Database", Prop::Str("NAMPR00DG001-db001".to_owned())),
        ("WhenCreated", Prop::Date(m.when_created)),
        ("WhenChanged", Prop::Date(m.when_changed)),
        ("WhenCreatedUTC", Prop::Date(m.when_created)),
        ("WhenChangedUTC", Prop::Date(m.when_changed)),
        ("HiddenFromAddressListsEnabled", Prop::Bool(m.hidden)),
        (
            "ProhibitSendQuota",
            Prop::Str(quota_text(m.prohibit_send_quota)),
        ),
        (
            "ProhibitSendReceiveQuota",
            Prop::Str(format_bytes(107_374_182_400)),
        ),
        (
            "IssueWarningQuota",
            Prop::Str(format_bytes(105_226_698_752)),
        ),
        ("MaxSendSize", Prop::Str(format_bytes(36_700_160))),
        ("MaxReceiveSize", Prop::Str(format_bytes(37_748_736))),
        (
            "ArchiveStatus",
            Prop::Str(if m.archive { "Active" } else { "None" }.to_owned()),
        ),
        (
            "GrantSendOnBehalfTo",
            Prop::Strs(
                m.send_on_behalf
                    .iter()
                    .map(|g| org.recipient_label(*g))
                    .collect(),
            ),
        ),
        ("LitigationHoldEnabled", Prop::Bool(false)),
        ("AuditEnabled", Prop::Bool(true)),
        ("IsMailboxEnabled", Prop::Bool(true)),
        (
            "ForwardingAddress",
            m.forwarding_address
                .map_or(Prop::Null, |g| Prop::Str(org.recipient_label(g))),
        ),
        (
            "ForwardingSmtpAddress",
            m.forwarding_smtp.clone().map_or(Prop::Null, Prop::Str),
        ),
        (
            "DeliverToMailboxAndForward",
            Prop::Bool(m.deliver_and_forward),
        ),
    ]
}

/// `Get-MailboxStatistics` output.
pub(crate) fn statistics(m: &Mailbox) -> Obj {
    vec![
        ("DisplayName", Prop::Str(m.display_name.clone())),
        ("Identity", Prop::Str(format_guid(m.exchange_guid))),
        ("MailboxGuid", Prop::Guid(m.exchange_guid)),
        (
            "ItemCount",
            Prop::I32(i32::try_from(m.item_count).unwrap_or(i32::MAX)),
        ),
        ("DeletedItemCount", Prop::I32(0)),
        ("TotalItemSize", Prop::Str(format_bytes(m.total_size))),
        ("TotalDeletedItemSize", Prop::Str(format_bytes(0))),
        ("LastLogonTime", m.last_logon.map_or(Prop::Null, Prop::Date)),
        ("MailboxTypeDetail", Prop::Str(m.kind.as_str().to_owned())),
        ("Database", Prop::Str("NAMPR00DG001-db001".to_owned())),
        ("IsArchiveMailbox", Prop::Bool(false)),
    ]
}

/// `Get-DistributionGroup` output.
pub(crate) fn group(org: &Org, g: &Group) -> Obj {
    let mut o = group_addressing(g);
    o.extend([
        ("GroupType", Prop::Str("Universal".to_owned())),
        ("Guid", Prop::Guid(g.guid)),
        ("WhenCreated", Prop::Date(g.when_created)),
        ("WhenChanged", Prop::Date(g.when_changed)),
        ("HiddenFromAddressListsEnabled", Prop::Bool(false)),
        ("MemberJoinRestriction", Prop::Str("Closed".to_owned())),
        ("RequireSenderAuthenticationEnabled", Prop::Bool(true)),
        (
            "ManagedBy",
            Prop::Strs(vec![format!("Organization Management ({})", org.domain)]),
        ),
    ]);
    o
}

/// The naming and addressing properties every group output starts with, in Exchange's order.
fn group_addressing(g: &Group) -> Obj {
    vec![
        ("Name", Prop::Str(g.name.clone())),
        ("Alias", Prop::Str(g.alias.clone())),
        ("DisplayName", Prop::Str(g.display_name.clone())),
        ("Identity", Prop::Str(g.name.clone())),
        ("PrimarySmtpAddress", Prop::Str(g.primary_smtp.clone())),
        ("EmailAddresses", Prop::Strs(g.proxies.clone())),
        (
            "RecipientType",
            Prop::Str("MailUniversalDistributionGroup".to_owned()),
        ),
        (
            "RecipientTypeDetails",
            Prop::Str("MailUniversalDistributionGroup".to_owned()),
        ),
    ]
}

/// `Get-Recipient` (and `Get-DistributionGroupMember`) output for a mailbox: every identifier
/// Exchange resolves it by, so a client can decide on the object rather than on a spelling.
pub(crate) fn recipient_mailbox(org: &Org, m: &Mailbox) -> Obj {
    vec![
        ("Name", Prop::Str(m.name.clone())),
        ("Alias", Prop::Str(m.alias.clone())),
        ("DisplayName", Prop::Str(m.display_name.clone())),
        ("Identity", Prop::Str(m.name.clone())),
        (
            "DistinguishedName",
            Prop::Str(org.distinguished_name(&m.alias)),
        ),
        ("LegacyExchangeDN", Prop::Str(legacy_dn(m.guid, &m.alias))),
        ("PrimarySmtpAddress", Prop::Str(m.primary_smtp.clone())),
        ("WindowsLiveID", Prop::Str(m.upn.clone())),
        ("EmailAddresses", Prop::Strs(m.proxies.clone())),
        ("RecipientType", Prop::Str("UserMailbox".to_owned())),
        (
            "RecipientTypeDetails",
            Prop::Str(m.kind.as_str().to_owned()),
        ),
        ("Guid", Prop::Guid(m.guid)),
        ("ExchangeObjectId", Prop::Guid(m.guid)),
        ("ExchangeGuid", Prop::Guid(m.exchange_guid)),
        (
            "ExternalDirectoryObjectId",
            Prop::Str(format_guid(m.external_id)),
        ),
        ("WhenCreated", Prop::Date(m.when_created)),
        ("WhenChanged", Prop::Date(m.when_changed)),
        ("HiddenFromAddressListsEnabled", Prop::Bool(m.hidden)),
    ]
}

/// `Get-Recipient` output for a group.
pub(crate) fn recipient_group(org: &Org, g: &Group) -> Obj {
    let mut o = group_addressing(g);
    o.extend([
        (
            "DistinguishedName",
            Prop::Str(org.distinguished_name(&g.alias)),
        ),
        ("LegacyExchangeDN", Prop::Str(legacy_dn(g.guid, &g.alias))),
        ("Guid", Prop::Guid(g.guid)),
        ("ExchangeObjectId", Prop::Guid(g.guid)),
        ("ExternalDirectoryObjectId", Prop::Str(String::new())),
        ("WhenCreated", Prop::Date(g.when_created)),
        ("WhenChanged", Prop::Date(g.when_changed)),
        ("HiddenFromAddressListsEnabled", Prop::Bool(false)),
    ]);
    o
}

/// A `Get-MailboxPermission` row.
pub(crate) fn mailbox_permission(
    identity: &str,
    user: &str,
    rights: &[String],
    inheritance: &str,
    inherited: bool,
) -> Obj {
    vec![
        ("Identity", Prop::Str(identity.to_owned())),
        ("User", Prop::Str(user.to_owned())),
        ("AccessRights", Prop::Strs(rights.to_vec())),
        ("IsInherited", Prop::Bool(inherited)),
        ("Deny", Prop::Bool(false)),
        ("InheritanceType", Prop::Str(inheritance.to_owned())),
    ]
}

/// A `Get-RecipientPermission` row.
pub(crate) fn recipient_permission(identity: &str, trustee: &str) -> Obj {
    vec![
        ("Identity", Prop::Str(identity.to_owned())),
        ("Trustee", Prop::Str(trustee.to_owned())),
        ("AccessControlType", Prop::Str("Allow".to_owned())),
        ("AccessRights", Prop::Strs(vec!["SendAs".to_owned()])),
        ("IsInherited", Prop::Bool(false)),
        ("InheritanceType", Prop::Str("None".to_owned())),
    ]
}

/// `Get-AcceptedDomain` output.
pub(crate) fn accepted_domains(org: &Org) -> Vec<Obj> {
    org.accepted
        .iter()
        .map(|d| {
            vec![
                ("Name", Prop::Str(d.domain.clone())),
                ("Identity", Prop::Str(d.domain.clone())),
                ("DomainName", Prop::Str(d.domain.clone())),
                ("DomainType", Prop::Str("Authoritative".to_owned())),
                ("Default", Prop::Bool(d.default)),
                ("InitialDomain", Prop::Bool(d.initial)),
                ("Guid", Prop::Guid(d.guid)),
                ("WhenCreated", Prop::Date(d.when_created)),
            ]
        })
        .collect()
}

/// `Get-OrganizationConfig` output (one object).
pub(crate) fn organization_config(org: &Org) -> Obj {
    let c = &org.config;
    vec![
        ("Name", Prop::Str(c.name.clone())),
        ("DisplayName", Prop::Str(c.display_name.clone())),
        ("Identity", Prop::Str(c.name.clone())),
        ("Guid", Prop::Guid(c.guid)),
        ("IsDehydrated", Prop::Bool(false)),
        ("AuditDisabled", Prop::Bool(c.audit_disabled)),
        (
            "MailTipsAllTipsEnabled",
            Prop::Bool(c.mail_tips_all_tips_enabled),
        ),
        (
            "OAuth2ClientProfileEnabled",
            Prop::Bool(c.oauth2_client_profile_enabled),
        ),
        ("WhenCreated", Prop::Date(c.when_created)),
        ("WhenChanged", Prop::Date(c.when_changed)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_like_exchange() {
        assert_eq!(format_bytes(1_288_490_188), "1.2 GB (1,288,490,188 bytes)");
        assert_eq!(
            format_bytes(106_300_440_576),
            "99 GB (106,300,440,576 bytes)"
        );
        assert_eq!(format_bytes(0), "0 B (0 bytes)");
        assert_eq!(format_bytes(1536), "1.5 KB (1,536 bytes)");
        assert_eq!(parse_quota("50GB"), Ok(Some(50 << 30)));
        assert_eq!(parse_quota("1.5 mb"), Ok(Some(1_572_864)));
        assert_eq!(parse_quota("Unlimited"), Ok(None));
        assert_eq!(
            parse_quota("99 GB (106,300,440,576 bytes)"),
            Ok(Some(106_300_440_576))
        );
        assert!(parse_quota("lots").is_err());
    }

    /// Every kind of property, with text that must be escaped, and a projection.
    #[test]
    fn wire_form_writes_every_kind_of_property() {
        let obj: Obj = vec![
            ("Name", Prop::Str("qu\"ote\\ back\u{1}\n é 😀".into())),
            ("On", Prop::Bool(false)),
            ("Small", Prop::I32(-7)),
            ("Big", Prop::I64(1 << 40)),
            ("Guid", Prop::Guid(u128::MAX - 5)),
            ("When", Prop::Date(1_712_739_382)),
            ("List", Prop::Strs(vec!["a\"b".into(), String::new()])),
            ("Nothing", Prop::Null),
        ];
        let mut out = String::new();
        write_object(&mut out, &obj, None);
        assert_eq!(
            out,
            concat!(
                r##"{"Name":"qu\"ote\\ back\u0001\n é 😀","##,
                r##""On@data.type":"System.Boolean","On":false,"##,
                r##""Small@data.type":"System.Int32","Small@odata.type":"#Int32","Small":-7,"##,
                r##""Big@data.type":"System.Int64","Big@odata.type":"#Int64","Big":1099511627776,"##,
                r##""Guid@data.type":"System.Guid","Guid@odata.type":"#Guid","##,
                r##""Guid":"ffffffff-ffff-ffff-ffff-fffffffffffa","##,
                r##""When@data.type":"System.DateTime","When":"2024-04-10T08:56:22.0000000+00:00","##,
                r##""List@odata.type":"#Collection(String)","List":["a\"b",""],"##,
                r##""Nothing":null}"##
            )
        );
        // The plain value is the same text, parsed.
        for (name, prop) in &obj {
            let member = serde_json::from_str::<Value>(&out).unwrap()[name].clone();
            assert_eq!(prop.plain(), member, "{name}");
        }
        let select = ["guid".to_owned(), "NAME".to_owned(), "List".to_owned()];
        let mut out = String::from("[");
        write_object(&mut out, &obj, Some(&select));
        assert_eq!(
            out,
            concat!(
                r##"[{"Name":"qu\"ote\\ back\u0001\n é 😀","##,
                r##""Guid@data.type":"System.Guid","Guid@odata.type":"#Guid","##,
                r##""Guid":"ffffffff-ffff-ffff-ffff-fffffffffffa","##,
                r##""List@odata.type":"#Collection(String)","List":["a\"b",""]}"##
            )
        );
    }

    #[test]
    fn annotations_follow_the_capture() {
        let obj: Obj = vec![
            ("G", Prop::Guid(1)),
            ("D", Prop::Date(0)),
            ("L", Prop::Strs(vec!["a".into()])),
            ("S", Prop::Str("x".into())),
        ];
        let mut out = String::new();
        write_object(&mut out, &obj, None);
        assert_eq!(
            out,
            r##"{"G@data.type":"System.Guid","G@odata.type":"#Guid","G":"00000000-0000-0000-0000-000000000001","D@data.type":"System.DateTime","D":"1970-01-01T00:00:00.0000000+00:00","L@odata.type":"#Collection(String)","L":["a"],"S":"x"}"##
        );
    }
}
