//! The pure half of deciding on the object: the identity values of a call (the string leaves of
//! a parameter, in list items and hashtable values alike), a resolved recipient's identifiers,
//! and the substitutions the policy is asked about. The lookups themselves are in the broker.

use serde_json::{Map, Value};

/// Most identity values one call may name in resolved parameters: each costs a lookup (a call
/// of the budget) and a policy check per identifier of its object.
pub const MAX_IDENTITIES_PER_CALL: usize = 32;

/// The identity values of one parameter, in the order [`replace_leaves`] visits them. Nulls
/// name nothing and are skipped; `Err` when a value is a number or boolean (Exchange would
/// resolve its text; refused rather than guessed).
pub(crate) fn identity_values(value: &Value) -> Result<Vec<String>, ()> {
    let mut out = Vec::new();
    collect(value, &mut out)?;
    Ok(out)
}

fn collect(value: &Value, out: &mut Vec<String>) -> Result<(), ()> {
    match value {
        Value::Null => Ok(()),
        Value::String(s) => {
            out.push(s.clone());
            Ok(())
        }
        Value::Bool(_) | Value::Number(_) => Err(()),
        Value::Array(items) => items.iter().try_for_each(|v| collect(v, out)),
        Value::Object(map) => map.values().try_for_each(|v| collect(v, out)),
    }
}

/// `value` with its n-th string leaf replaced by `with(n)`; same walk as [`identity_values`].
pub(crate) fn replace_leaves(value: &Value, with: &mut impl FnMut(usize) -> String) -> Value {
    fn walk(value: &Value, next: &mut usize, with: &mut impl FnMut(usize) -> String) -> Value {
        match value {
            Value::String(_) => {
                let n = *next;
                *next += 1;
                Value::String(with(n))
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| walk(v, next, with)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), walk(v, next, with)))
                    .collect::<Map<_, _>>(),
            ),
            other => other.clone(),
        }
    }
    walk(value, &mut 0, with)
}

/// One recipient as the broker's lookup found it.
#[derive(Debug, Clone)]
pub(crate) struct Recipient {
    /// The immutable id sent to Exchange in place of what the guest wrote.
    pub id: String,
    /// The address the allow side and the target scope judge: the primary SMTP address, else
    /// the UPN, else the id.
    pub canonical: String,
    /// Every name the object answers to, with the property it came from.
    pub identifiers: Vec<(String, String)>,
}

/// Properties of a `Get-Recipient` object that are names of it.
const NAME_PROPERTIES: &[&str] = &[
    "Name",
    "Alias",
    "DisplayName",
    "Identity",
    "Id",
    "PrimarySmtpAddress",
    "WindowsEmailAddress",
    "UserPrincipalName",
    "WindowsLiveID",
    "MicrosoftOnlineServicesID",
    "SamAccountName",
    "Guid",
    "ExchangeObjectId",
    "ExternalDirectoryObjectId",
    "ExchangeGuid",
    "DistinguishedName",
    "LegacyExchangeDN",
];

fn guid(text: &str) -> Option<String> {
    uuid::Uuid::try_parse(text.trim())
        .ok()
        .map(|u| u.to_string())
}

impl Recipient {
    /// Reads a `Get-Recipient` object; `None` when it has no immutable id to pin the call to.
    pub(crate) fn from_object(object: &Map<String, Value>) -> Option<Recipient> {
        let text = |key: &str| {
            object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .and_then(|(_, v)| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let id = text("ExchangeObjectId")
            .and_then(guid)
            .or_else(|| text("Guid").and_then(guid))?;
        let canonical = text("PrimarySmtpAddress")
            .or_else(|| text("UserPrincipalName"))
            .or_else(|| text("WindowsLiveID"))
            .map_or_else(|| id.clone(), str::to_owned);
        let mut identifiers: Vec<(String, String)> = Vec::new();
        let mut add = |property: &str, value: &str| {
            for value in [value.to_owned(), value.to_lowercase()] {
                if !identifiers.iter().any(|(_, v)| *v == value) {
                    identifiers.push((property.to_owned(), value));
                }
            }
        };
        for property in NAME_PROPERTIES {
            if let Some(value) = text(property) {
                add(property, value);
            }
        }
        let proxies = object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("EmailAddresses"))
            .and_then(|(_, v)| v.as_array());
        for proxy in proxies.into_iter().flatten().filter_map(Value::as_str) {
            add("EmailAddresses", proxy);
            if let Some((_, bare)) = proxy.split_once(':') {
                add("EmailAddresses", bare);
            }
        }
        Some(Recipient {
            id,
            canonical,
            identifiers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_are_walked_alike_and_refuse_non_strings() {
        let v = json!({"Add": ["a", null, "b"], "Remove": "c"});
        assert_eq!(identity_values(&v).unwrap(), ["a", "b", "c"]);
        let replaced = replace_leaves(&v, &mut |n| format!("#{n}"));
        assert_eq!(replaced, json!({"Add": ["#0", null, "#1"], "Remove": "#2"}));
        assert!(identity_values(&json!(["a", 5])).is_err());
    }

    #[test]
    fn a_recipient_answers_to_every_name_and_is_pinned_by_its_id() {
        let object = json!({
            "Name": "Admin", "Alias": "admin", "PrimarySmtpAddress": "Admin@contoso.com",
            "EmailAddresses": ["SMTP:Admin@contoso.com", "smtp:root@contoso.com", "X500:/o=x/cn=admin"],
            "Guid": "11111111-2222-4333-8444-555555555555",
            "ExchangeObjectId": "AAAAAAAA-2222-4333-8444-555555555555",
        });
        let r = Recipient::from_object(object.as_object().unwrap()).unwrap();
        assert_eq!(r.id, "aaaaaaaa-2222-4333-8444-555555555555");
        assert_eq!(r.canonical, "Admin@contoso.com");
        let names: Vec<&str> = r.identifiers.iter().map(|(_, v)| v.as_str()).collect();
        for expected in [
            "admin@contoso.com",
            "root@contoso.com",
            "smtp:root@contoso.com",
            "/o=x/cn=admin",
            "11111111-2222-4333-8444-555555555555",
        ] {
            assert!(names.contains(&expected), "{expected}: {names:?}");
        }
        assert!(Recipient::from_object(json!({"Name": "x"}).as_object().unwrap()).is_none());
    }
}
