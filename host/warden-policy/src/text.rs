//! The one rule for the text of parameter values: what the policy judges is what Exchange acts on.
//!
//! Exchange trims leading and trailing whitespace (Unicode's, so also tabs, NBSP and U+3000)
//! and strips an `smtp:` prefix before it resolves an identity, so a policy judging the text as
//! written would judge another object than the one changed. Rather than normalise behind the
//! guest's back, a string value anywhere in a call (list items and hashtable values included)
//! is refused when it
//! - starts or ends with whitespace or an invisible format character (zero-width space,
//!   byte-order mark, soft hyphen, bidi marks), or
//! - holds a control character (U+0000–U+001F, U+007F–U+009F) anywhere.
//!
//! So the value judged is always the value sent. Addresses are judged as the address Exchange
//! acts on: `domain` and deny rules see `smtp:a@b` as `a@b` ([`address`]), and deny rules also
//! see each part of a comma-separated value (Exchange reads `"A,B"` as two flags of an enum).

use crate::names;
use serde_json::Value;
use std::borrow::Cow;

/// True for characters Exchange (.NET `String.Trim`) trims, and for invisible format characters
/// that make two different texts look the same at the edge of a value.
fn invisible_at_edge(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

fn describe(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// Checks one string against the rule in the module docs; the reason names the character by its
/// code point, never the text.
pub(crate) fn check_string(text: &str) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "a string holds the control character {}; control characters are refused in values",
            describe(c)
        ));
    }
    let edge = text
        .chars()
        .next()
        .filter(|&c| invisible_at_edge(c))
        .map(|c| ("starts", c))
        .or_else(|| {
            text.chars()
                .next_back()
                .filter(|&c| invisible_at_edge(c))
                .map(|c| ("ends", c))
        });
    if let Some((where_, c)) = edge {
        return Err(format!(
            "a string {where_} with {} (whitespace or an invisible character); Exchange trims it, so such values are refused: send the value without it",
            describe(c)
        ));
    }
    Ok(())
}

/// Checks every string in a parameter's value, at any depth; the reason names the parameter
/// and the path to the string (list index, hashtable key), never the text.
pub(crate) fn check_value(parameter: &str, value: &Value) -> Result<(), String> {
    fn walk(value: &Value, path: &mut String) -> Result<(), String> {
        match value {
            Value::String(s) => check_string(s).map_err(|e| format!("{path}: {e}")),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(table) => {
                for (key, item) in table {
                    let len = path.len();
                    path.push('.');
                    path.push_str(&names::for_record(key));
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, &mut names::for_record(parameter))
}

/// The address Exchange acts on: the text without an `smtp:` prefix (any case).
pub(crate) fn address(text: &str) -> &str {
    match text.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("smtp:") => &text[5..],
        _ => text,
    }
}

/// Every spelling of a string a deny rule judges: as written, without its whitespace or
/// invisible edges (an object's name may have them, and the broker judges every identifier of
/// the object), as the address Exchange acts on, and each comma-separated part (trimmed, and as
/// an address). A deny matches when any does.
pub(crate) fn deny_forms(text: &str) -> Vec<Cow<'_, str>> {
    let mut forms: Vec<Cow<'_, str>> = vec![Cow::Borrowed(text)];
    let mut add = |form: &str| {
        if !forms.iter().any(|f| f == form) {
            forms.push(Cow::Owned(form.to_owned()));
        }
    };
    let trimmed = text.trim_matches(invisible_at_edge);
    add(address(text));
    add(trimmed);
    add(address(trimmed));
    if text.contains(',') {
        for part in text.split(',') {
            let part = part.trim_matches(invisible_at_edge);
            add(part);
            add(address(part));
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_and_controls_are_refused() {
        for bad in [
            " a",
            "a ",
            "\ta",
            "a\n",
            "\u{3000}a",
            "\u{a0}a",
            "a\u{2028}",
            "\u{200b}a",
            "a\u{feff}",
            "a\0b",
            "a\u{7f}b",
            "a\u{85}b",
            "\u{202e}a",
        ] {
            assert!(check_string(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a b", "", "Ann-Marie O'Neil", "\u{e9}t\u{e9}"] {
            assert!(check_string(good).is_ok(), "{good:?}");
        }
        let why = check_value("Identity", &serde_json::json!({"Add": ["x", " y"]})).unwrap_err();
        assert!(
            why.starts_with("Identity.Add[1]: a string starts with U+0020"),
            "{why}"
        );
    }

    #[test]
    fn addresses_and_deny_forms() {
        assert_eq!(address("SMTP:a@b"), "a@b");
        assert_eq!(address("smtp:a@b"), "a@b");
        assert_eq!(address("sip:a@b"), "sip:a@b");
        assert_eq!(address("smtp"), "smtp");
        let forms = deny_forms("ReadPermission, smtp:FullAccess");
        assert!(forms.iter().any(|f| f == "FullAccess"), "{forms:?}");
    }
}
