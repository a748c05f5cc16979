//! Cmdlet parameters and their JSON encoding, as the ExchangeOnlineManagement module encodes
//! them (`docs/protocol/exo-protocol.md` §1.5): switches as booleans, arrays, hashtables tagged
//! `#Exchange.GenericHashTable` (nested ones too, arrays of them with a sibling
//! `<Param>@odata.type`), dates as UTC `yyyy-MM-ddTHH:mm:ss`, `ResultSize` as `"Unlimited"` or
//! an integer, byte arrays as `#Exchange.ByteArrayType`.
//!
//! It refuses nothing about meaning (policy does that); it only encodes faithfully. One
//! rewrite is the module's own: `$true`/`$false` in `Filter`, `RecipientFilter` and
//! `RecipientPreviewFilter` become `'True'`/`'False'` ([`sanitize_filter_booleans`]), since the
//! REST endpoint has no PowerShell variables to resolve them.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::macros::format_description;

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// `$null`.
    Null,
    /// A `[switch]`: present (true) or explicitly off.
    Switch(bool),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    String(String),
    /// A date, sent in UTC without zone suffix.
    DateTime(OffsetDateTime),
    /// `ResultSize`: `None` is `Unlimited`.
    ResultSize(Option<u32>),
    /// An array of values.
    Array(Vec<ParamValue>),
    /// A hashtable (e.g. `@{Add="x"; Remove="y"}`).
    HashTable(BTreeMap<String, ParamValue>),
    /// A byte array.
    Bytes(Vec<u8>),
}

/// Named parameters, in a stable order.
pub type Parameters = BTreeMap<String, ParamValue>;

/// The parameter that bounds how many objects a read returns; the one place its forms are read
/// (a guest's JSON, a caller's [`ParamValue`]), for both transports.
pub const RESULT_SIZE: &str = "ResultSize";

/// `ResultSize` as a number of objects, when one was given (`Unlimited`, no `ResultSize` and a
/// value [`result_size`] refuses are `None`).
pub fn result_limit(parameters: &Parameters) -> Option<u64> {
    parameters
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(RESULT_SIZE))
        .and_then(|(_, v)| result_size(v).ok().flatten())
        .map(u64::from)
}

/// A `ResultSize` value as Exchange's binder reads it (`Unlimited<UInt32>`): `Unlimited` (any
/// case) is `None`, a whole number from 1 to `u32::MAX` (or its digits as text) is that many;
/// anything else is refused, with the reason.
pub fn result_size(value: &ParamValue) -> Result<Option<u32>, String> {
    let parsed = match value {
        ParamValue::ResultSize(None) => return Ok(None),
        ParamValue::ResultSize(Some(n)) => Some(*n),
        ParamValue::String(s) if s.trim().eq_ignore_ascii_case("unlimited") => return Ok(None),
        ParamValue::String(s) => s.trim().parse::<u32>().ok(),
        ParamValue::Int(n) => u32::try_from(*n).ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n > 0 => Ok(Some(n)),
        _ => Err(
            "not a ResultSize Exchange accepts: give \"Unlimited\" or a whole number from 1 to 4294967295"
                .into(),
        ),
    }
}

/// Whether the switch or boolean `name` (case-insensitive) was sent as true: `Confirm` and
/// `WhatIf` decide whether a confirmation message is an answer to the request.
pub fn switch_on(parameters: &Parameters, name: &str) -> bool {
    parameters
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .is_some_and(|(_, v)| match v {
            ParamValue::Switch(b) | ParamValue::Bool(b) => *b,
            ParamValue::String(s) => {
                s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("$true")
            }
            _ => false,
        })
}

impl ParamValue {
    fn encode(&self) -> Value {
        match self {
            ParamValue::Null => Value::Null,
            ParamValue::Switch(b) | ParamValue::Bool(b) => Value::Bool(*b),
            ParamValue::Int(i) => json!(i),
            ParamValue::String(s) => Value::String(s.clone()),
            ParamValue::DateTime(d) => {
                let utc = d.to_offset(time::UtcOffset::UTC);
                Value::String(
                    utc.format(format_description!(
                        "[year]-[month]-[day]T[hour]:[minute]:[second]"
                    ))
                    .expect("dates format"),
                )
            }
            ParamValue::ResultSize(None) => Value::String("Unlimited".into()),
            ParamValue::ResultSize(Some(n)) => json!(n),
            ParamValue::Array(items) => {
                Value::Array(items.iter().map(ParamValue::encode).collect())
            }
            ParamValue::HashTable(map) => {
                let mut object = Map::new();
                object.insert(
                    "@odata.type".into(),
                    Value::String("#Exchange.GenericHashTable".into()),
                );
                for (k, v) in map {
                    object.insert(k.clone(), v.encode());
                }
                Value::Object(object)
            }
            ParamValue::Bytes(bytes) => {
                json!({"@odata.type": "#Exchange.ByteArrayType", "Data": bytes})
            }
        }
    }

    /// The value of parameter `name` from JSON (a guest's call): for [`RESULT_SIZE`],
    /// `"Unlimited"` (any case) and a number that fits are [`ParamValue::ResultSize`]; anything
    /// else as [`ParamValue::from_json`].
    pub fn from_named_json(name: &str, value: &Value) -> ParamValue {
        if name.eq_ignore_ascii_case(RESULT_SIZE) {
            match value {
                Value::String(s) if s.eq_ignore_ascii_case("unlimited") => {
                    return ParamValue::ResultSize(None);
                }
                Value::Number(n) => {
                    if let Some(n) = n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                        return ParamValue::ResultSize(Some(n));
                    }
                }
                _ => {}
            }
        }
        ParamValue::from_json(value)
    }

    /// Reads a value from plain JSON as a guest or script writes it: objects become
    /// hashtables, `"Unlimited"` stays a string (use [`ParamValue::ResultSize`] or
    /// [`ParamValue::from_named_json`] to be explicit).
    pub fn from_json(value: &Value) -> ParamValue {
        match value {
            Value::Null => ParamValue::Null,
            Value::Bool(b) => ParamValue::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map(ParamValue::Int)
                .unwrap_or_else(|| ParamValue::String(n.to_string())),
            Value::String(s) => ParamValue::String(s.clone()),
            Value::Array(items) => {
                ParamValue::Array(items.iter().map(ParamValue::from_json).collect())
            }
            Value::Object(map) => ParamValue::HashTable(
                map.iter()
                    .filter(|(k, _)| !k.contains('@'))
                    .map(|(k, v)| (k.clone(), ParamValue::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// The parameters whose `$true`/`$false` the module rewrites before sending
/// (`$FilterParametersForBooleanParsing` in Calvindd2f/EXO_PROJECT
/// `.idea/full_modoule_dump.ps1`).
pub const BOOLEAN_FILTER_PARAMETERS: &[&str] =
    &["Filter", "RecipientFilter", "RecipientPreviewFilter"];

/// `filter` with each `$true`/`$false` (any case) written `'True'`/`'False'`, as the module's
/// `Sanitize-BoolValuesInFilter` does (Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`).
///
/// The tokens rewritten are the `$true`/`$false` tokens of [`warden_vocab::opath`], the
/// reading warden-policy judges a filter by, so the filter sent has exactly the comparisons
/// the policy judged: `-eq$true` is rewritten, quoted text never is (the module's `-replace`
/// also rewrites inside a quoted value: `'a$trueb'` becomes `'a'True'b'`, another filter). A
/// rewritten token is set apart by spaces, so it cannot join a neighbouring string
/// (`'x'$true` becomes `'x' 'True'`, not the one string `'x''True'`).
///
/// A filter holding `$true` or `$false` (any case) that this reading refuses (a backtick, a
/// character outside printable ASCII, an unclosed quote) is an error: where the literal
/// stands is not known, and sending it as written would only be refused by Exchange. Any other
/// filter the reading refuses holds nothing to rewrite and is returned as written.
pub fn sanitize_filter_booleans(filter: &str) -> Result<String, String> {
    let tokens = match warden_vocab::opath::tokens(filter) {
        Ok(tokens) => tokens,
        Err(_) if !holds_boolean_variable(filter) => return Ok(filter.to_owned()),
        Err(why) => {
            return Err(format!(
                "the filter holds $true or $false, which the REST API cannot read and warden rewrites to 'True'/'False' only in a filter it can read: {why}; write 'True' or 'False' instead"
            ));
        }
    };
    let mut out = String::with_capacity(filter.len() + 8);
    let mut copied = 0;
    for token in tokens {
        let warden_vocab::opath::TokenKind::Bool(value) = token.kind else {
            continue;
        };
        out.push_str(&filter[copied..token.span.start]);
        if !(out.is_empty() || out.ends_with([' ', '('])) {
            out.push(' ');
        }
        out.push_str(if value { "'True'" } else { "'False'" });
        if filter[token.span.end..]
            .chars()
            .next()
            .is_some_and(|c| !matches!(c, ' ' | ')'))
        {
            out.push(' ');
        }
        copied = token.span.end;
    }
    out.push_str(&filter[copied..]);
    Ok(out)
}

/// Whether `filter` holds the text `$true` or `$false` (any case) anywhere.
fn holds_boolean_variable(filter: &str) -> bool {
    let lower = filter.to_ascii_lowercase();
    lower.contains("$true") || lower.contains("$false")
}

/// Whether `name` is one of [`BOOLEAN_FILTER_PARAMETERS`] (any case).
pub fn is_boolean_filter_parameter(name: &str) -> bool {
    BOOLEAN_FILTER_PARAMETERS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// Refuses, before anything is sent, a call whose boolean-filter parameter cannot be rewritten
/// ([`sanitize_filter_booleans`]); the error names the parameter.
pub fn check_filter_booleans(parameters: &Parameters) -> Result<(), String> {
    for (name, value) in parameters {
        if let ParamValue::String(filter) = value
            && is_boolean_filter_parameter(name)
        {
            sanitize_filter_booleans(filter).map_err(|why| format!("{name}: {why}"))?;
        }
    }
    Ok(())
}

/// The `Parameters` object of a `CmdletInput`.
pub fn encode_parameters(parameters: &Parameters) -> Value {
    let mut object = Map::new();
    for (name, value) in parameters {
        if let ParamValue::Array(items) = value
            && !items.is_empty()
            && items.iter().all(|i| matches!(i, ParamValue::HashTable(_)))
        {
            object.insert(
                format!("{name}@odata.type"),
                Value::String("#Collection(Exchange.GenericHashTable)".into()),
            );
        }
        let value = match value {
            // A filter that cannot be rewritten goes as written (Exchange refuses it); the
            // session refuses it first with a clearer reason (`check_filter_booleans`).
            ParamValue::String(filter) if is_boolean_filter_parameter(name) => {
                Value::String(sanitize_filter_booleans(filter).unwrap_or_else(|_| filter.clone()))
            }
            other => other.encode(),
        };
        object.insert(name.clone(), value);
    }
    Value::Object(object)
}

/// The whole request body: `{"CmdletInput":{"CmdletName":…,"Parameters":{…}}}`.
pub fn cmdlet_input(cmdlet: &str, parameters: &Parameters) -> Value {
    json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": encode_parameters(parameters)}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn filter_booleans_are_written_as_the_module_writes_them() {
        for (filter, sent) in [
            (
                "HiddenFromAddressListsEnabled -eq $true",
                "HiddenFromAddressListsEnabled -eq 'True'",
            ),
            (
                "(A -eq $FALSE) -and (B -ne $True)",
                "(A -eq 'False') -and (B -ne 'True')",
            ),
            ("A -eq $null", "A -eq $null"),
            // Quoted text is a value, not a literal: left as written.
            (
                "Name -eq 'a$true b' -or Name -eq \"$false\"",
                "Name -eq 'a$true b' -or Name -eq \"$false\"",
            ),
            (
                "Name -eq 'it''s' -and X -eq $true",
                "Name -eq 'it''s' -and X -eq 'True'",
            ),
            // No space is needed around a literal: the policy's reading finds it all the same.
            ("A -eq$true", "A -eq 'True'"),
            (
                "(A -eq$TRUE)-or(B -ne$false)",
                "(A -eq 'True')-or(B -ne 'False')",
            ),
            // Set apart, so it cannot join the string before it into one (`'x''True'`).
            ("A -eq 'x'$true", "A -eq 'x' 'True'"),
            ("A -eq $false'x'", "A -eq 'False' 'x'"),
            ("A -eq x$true", "A -eq x$true"),
            // Nothing to rewrite in a filter the reading refuses for another reason.
            ("Name -eq 'M\u{fc}ller'", "Name -eq 'M\u{fc}ller'"),
        ] {
            assert_eq!(sanitize_filter_booleans(filter).unwrap(), sent, "{filter}");
        }
        // Where the literal stands is not known: refused, never rewritten inside a string.
        for unreadable in [
            "A -eq $trueish",
            "A -eq $true_x",
            "Name -eq \"a`\" $true\"",
            "Name -eq 'x\u{2019} -or B -eq $true -or C -eq \u{2018}y'",
            "Name -eq 'M\u{fc}ller' -and X -eq $FALSE",
            "Name -eq 'open -and X -eq $true",
        ] {
            let why = sanitize_filter_booleans(unreadable).unwrap_err();
            assert!(
                why.contains("write 'True' or 'False'"),
                "{unreadable}: {why}"
            );
        }
        let why = check_filter_booleans(&Parameters::from([(
            "Filter".to_owned(),
            ParamValue::String("A -eq `$true".into()),
        )]))
        .unwrap_err();
        assert!(why.starts_with("Filter: "), "{why}");
        let sent = encode_parameters(&Parameters::from([
            (
                "recipientfilter".to_owned(),
                ParamValue::String("X -eq $true".into()),
            ),
            (
                "DisplayName".to_owned(),
                ParamValue::String("X -eq $true".into()),
            ),
        ]));
        assert_eq!(sent["recipientfilter"], "X -eq 'True'");
        assert_eq!(sent["DisplayName"], "X -eq $true");
    }

    #[test]
    fn encodes_like_the_module() {
        let mut nested = BTreeMap::new();
        nested.insert(
            "Add".to_owned(),
            ParamValue::String("smtp:alias@contoso.com".into()),
        );
        nested.insert(
            "Inner".to_owned(),
            ParamValue::HashTable(BTreeMap::from([("X".to_owned(), ParamValue::Int(1))])),
        );
        let parameters = Parameters::from([
            (
                "Identity".to_owned(),
                ParamValue::String("alex@contoso.com".into()),
            ),
            (
                "HiddenFromAddressListsEnabled".to_owned(),
                ParamValue::Switch(true),
            ),
            ("ResultSize".to_owned(), ParamValue::ResultSize(None)),
            ("EmailAddresses".to_owned(), ParamValue::HashTable(nested)),
            (
                "StartDate".to_owned(),
                ParamValue::DateTime(datetime!(2024-05-22 18:52:26 +02:00)),
            ),
            (
                "Rules".to_owned(),
                ParamValue::Array(vec![ParamValue::HashTable(BTreeMap::new())]),
            ),
            ("Photo".to_owned(), ParamValue::Bytes(vec![0, 255])),
        ]);
        let body = cmdlet_input("Set-Mailbox", &parameters);
        let p = &body["CmdletInput"]["Parameters"];
        assert_eq!(body["CmdletInput"]["CmdletName"], "Set-Mailbox");
        assert_eq!(p["HiddenFromAddressListsEnabled"], true);
        assert_eq!(p["ResultSize"], "Unlimited");
        assert_eq!(
            p["EmailAddresses"]["@odata.type"],
            "#Exchange.GenericHashTable"
        );
        assert_eq!(
            p["EmailAddresses"]["Inner"]["@odata.type"],
            "#Exchange.GenericHashTable"
        );
        assert_eq!(p["StartDate"], "2024-05-22T16:52:26");
        assert_eq!(
            p["Rules@odata.type"],
            "#Collection(Exchange.GenericHashTable)"
        );
        assert_eq!(
            p["Photo"],
            json!({"@odata.type": "#Exchange.ByteArrayType", "Data": [0, 255]})
        );
        assert_eq!(
            encode_parameters(&Parameters::from([(
                "ResultSize".to_owned(),
                ParamValue::ResultSize(Some(10))
            )]))["ResultSize"],
            10
        );
    }

    #[test]
    fn plain_json_objects_become_tagged_hashtables() {
        let value = ParamValue::from_json(&json!({"Add": ["a", "b"], "@odata.type": "ignored"}));
        let encoded = encode_parameters(&Parameters::from([(
            "GrantSendOnBehalfTo".to_owned(),
            value,
        )]));
        assert_eq!(
            encoded["GrantSendOnBehalfTo"],
            json!({"@odata.type": "#Exchange.GenericHashTable", "Add": ["a", "b"]})
        );
    }
}
