//! Serde types for the results plugins ask for most, with Exchange's property names.
//!
//! Every field is an `Option`: a grant's output shaping may remove any property, and a type
//! that demanded one would turn a policy choice into a decode error. Unknown properties are
//! ignored, so these types read the full objects too. Where you need a property not modelled
//! here, ask for `serde_json::Value` or your own struct.

use serde::{Deserialize, Deserializer, Serialize};

/// A `Get-Mailbox` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// `Identity` (the mailbox's name in Exchange Online).
    #[serde(rename = "Identity", default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `Name`.
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Alias`.
    #[serde(rename = "Alias", default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `DisplayName`.
    #[serde(
        rename = "DisplayName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
    /// `PrimarySmtpAddress`.
    #[serde(
        rename = "PrimarySmtpAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub primary_smtp_address: Option<String>,
    /// `UserPrincipalName`.
    #[serde(
        rename = "UserPrincipalName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_principal_name: Option<String>,
    /// `RecipientTypeDetails`: `UserMailbox`, `SharedMailbox`, `RoomMailbox`, …
    #[serde(
        rename = "RecipientTypeDetails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recipient_type_details: Option<String>,
    /// `EmailAddresses` (`SMTP:` primary, `smtp:` secondary).
    #[serde(
        rename = "EmailAddresses",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub email_addresses: Option<Vec<String>>,
    /// `Guid`.
    #[serde(rename = "Guid", default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// `ExchangeGuid`.
    #[serde(
        rename = "ExchangeGuid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exchange_guid: Option<String>,
    /// `HiddenFromAddressListsEnabled`.
    #[serde(
        rename = "HiddenFromAddressListsEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hidden_from_address_lists_enabled: Option<bool>,
    /// `WhenCreated`, as Exchange formats it.
    #[serde(
        rename = "WhenCreated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub when_created: Option<String>,
}

impl Mailbox {
    /// The best handle to pass back as `Identity`: the primary address when the results carry
    /// it (unique across the tenant), else `Identity`, else `Name`.
    pub fn identity_for_calls(&self) -> Option<&str> {
        self.primary_smtp_address
            .as_deref()
            .or(self.identity.as_deref())
            .or(self.name.as_deref())
    }
}

/// A `Get-MailboxStatistics` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxStatistics {
    /// `DisplayName`.
    #[serde(
        rename = "DisplayName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
    /// `Identity` (the mailbox GUID in Exchange Online).
    #[serde(rename = "Identity", default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `ItemCount`.
    #[serde(rename = "ItemCount", default, skip_serializing_if = "Option::is_none")]
    pub item_count: Option<u64>,
    /// `TotalItemSize` as Exchange writes it: `1.2 GB (1,288,490,188 bytes)`. See
    /// [`MailboxStatistics::total_item_bytes`].
    #[serde(
        rename = "TotalItemSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_item_size: Option<String>,
    /// `DeletedItemCount`.
    #[serde(
        rename = "DeletedItemCount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_item_count: Option<u64>,
    /// `TotalDeletedItemSize`, in the same text form as `TotalItemSize`.
    #[serde(
        rename = "TotalDeletedItemSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_deleted_item_size: Option<String>,
    /// `LastLogonTime`, as Exchange formats it; `None` also when the mailbox was never used.
    #[serde(
        rename = "LastLogonTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_logon_time: Option<String>,
    /// `MailboxTypeDetail`.
    #[serde(
        rename = "MailboxTypeDetail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mailbox_type_detail: Option<String>,
}

impl MailboxStatistics {
    /// `TotalItemSize` in bytes, when present and readable.
    pub fn total_item_bytes(&self) -> Option<u64> {
        self.total_item_size.as_deref().and_then(parse_byte_size)
    }
}

/// A `Get-MailboxPermission` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxPermission {
    /// `Identity`: the mailbox.
    #[serde(rename = "Identity", default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `User`: who holds the rights (a UPN, a group name, `NT AUTHORITY\SELF`, a SID).
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `AccessRights` (`FullAccess`, `ReadPermission`, …).
    #[serde(
        rename = "AccessRights",
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_rights: Option<Vec<String>>,
    /// `IsInherited`.
    #[serde(
        rename = "IsInherited",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_inherited: Option<bool>,
    /// `Deny`.
    #[serde(rename = "Deny", default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<bool>,
    /// `InheritanceType`.
    #[serde(
        rename = "InheritanceType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inheritance_type: Option<String>,
}

impl MailboxPermission {
    /// True when the row grants `right` (and is not a deny entry).
    pub fn grants(&self, right: &str) -> bool {
        self.deny != Some(true)
            && self
                .access_rights
                .iter()
                .flatten()
                .any(|r| r.eq_ignore_ascii_case(right))
    }
}

/// A `Get-RecipientPermission` row (SendAs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientPermission {
    /// `Identity`: the recipient.
    #[serde(rename = "Identity", default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `Trustee`: who may send as it.
    #[serde(rename = "Trustee", default, skip_serializing_if = "Option::is_none")]
    pub trustee: Option<String>,
    /// `AccessControlType`: `Allow` or `Deny`.
    #[serde(
        rename = "AccessControlType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub access_control_type: Option<String>,
    /// `AccessRights` (`SendAs`).
    #[serde(
        rename = "AccessRights",
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_rights: Option<Vec<String>>,
    /// `IsInherited`.
    #[serde(
        rename = "IsInherited",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_inherited: Option<bool>,
    /// `InheritanceType`.
    #[serde(
        rename = "InheritanceType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inheritance_type: Option<String>,
}

impl RecipientPermission {
    /// True when the row allows `right` (and is not a deny entry).
    pub fn grants(&self, right: &str) -> bool {
        !self
            .access_control_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("Deny"))
            && self
                .access_rights
                .iter()
                .flatten()
                .any(|r| r.eq_ignore_ascii_case(right))
    }
}

/// True for trustees that are the system or the mailbox itself rather than a person or group:
/// `NT AUTHORITY\…` accounts and bare SIDs (`S-1-5-…`), which audits usually leave out.
pub fn is_system_trustee(trustee: &str) -> bool {
    let upper = trustee.to_ascii_uppercase();
    upper.starts_with("NT AUTHORITY\\") || upper.starts_with("S-1-")
}

/// Reads Exchange's `ByteQuantifiedSize` text (`1.2 GB (1,288,490,188 bytes)`) as bytes.
/// Also takes a bare byte count. `None` for anything else, including `Unlimited`.
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    // The exact count is in the parentheses; the leading figure is rounded.
    let exact = match (text.rfind('('), text.strip_suffix("bytes)")) {
        (Some(open), Some(rest)) if open < rest.len() => &rest[open + 1..],
        _ => text,
    };
    let digits: String = exact.chars().filter(|c| *c != ',').collect();
    digits.trim().parse().ok()
}

/// Accepts `"FullAccess"` as well as `["FullAccess"]`: Exchange's serializers differ on
/// single-valued lists.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(s.split(',').map(|r| r.trim().to_owned()).collect()),
        Some(OneOrMany::Many(v)) => Some(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_like_exchange_writes_them() {
        assert_eq!(
            parse_byte_size("1.2 GB (1,288,490,188 bytes)"),
            Some(1_288_490_188)
        );
        assert_eq!(parse_byte_size("0 B (0 bytes)"), Some(0));
        assert_eq!(parse_byte_size("1536"), Some(1536));
        assert_eq!(parse_byte_size("Unlimited"), None);
    }

    #[test]
    fn shaped_results_still_decode() {
        let m: Mailbox = serde_json::from_str(r#"{"DisplayName":"A","Extra":1}"#).unwrap();
        assert_eq!(m.display_name.as_deref(), Some("A"));
        assert_eq!(m.primary_smtp_address, None);
        let p: MailboxPermission =
            serde_json::from_str(r#"{"User":"x","AccessRights":"FullAccess, ReadPermission"}"#)
                .unwrap();
        assert!(p.grants("fullaccess"));
        assert!(is_system_trustee("NT AUTHORITY\\SELF"));
        assert!(!is_system_trustee("adele@contoso.onmicrosoft.com"));
    }
}
