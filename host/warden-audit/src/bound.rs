//! The per-line cap: whatever an [`Event`](crate::Event) holds, its line is at most
//! [`MAX_LINE_BYTES`](crate::MAX_LINE_BYTES).
//!
//! A guest chooses most of what a line holds (the cmdlet, parameter names and values, text that
//! ends up in a refusal reason), so without a cap one refused call could write megabytes. Texts
//! longer than [`MAX_TEXT_BYTES`] become a cut marker that keeps their start, their length and
//! their keyed hash (`warden audit hash VALUE` still finds them); parameters nested deeper than
//! [`MAX_DEPTH`], containers with more than [`MAX_ITEMS`] entries, and whatever does not fit in
//! the line's remaining bytes are folded into one marker with their count, length and hash.
//! Sizes are measured as serialized JSON, so escaping cannot inflate a line past the cap.

use crate::{AuditKey, keyed_hash};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A text (a parameter name or value, the cmdlet, a rule, a reason) whose JSON form is longer
/// than this is cut.
pub(crate) const MAX_TEXT_BYTES: usize = 1024;
/// How much of a cut text is kept, as JSON bytes.
const CUT_HEAD_BYTES: usize = 64;
/// The longest JSON form of any marker (a cut text with its head, or a fold): the least budget
/// a value is ever given, so a marker always fits.
pub(crate) const MAX_MARKER_BYTES: usize = 224;
/// Parameters nested deeper than this are folded (Exchange parameters nest two or three).
const MAX_DEPTH: usize = 8;
/// Entries of one parameter object or list kept before the rest is folded.
const MAX_ITEMS: usize = 64;
/// The key of the entry that stands for the folded rest of an object.
const FOLD_KEY: &str = "…";
/// Its JSON form's length (`"…"`, a 3-byte character in quotes).
const FOLD_KEY_JSON_BYTES: usize = 5;
/// The least budget any value is bounded to: room for an object holding only the fold marker
/// (the largest thing a folded value can become).
pub(crate) const MIN_BUDGET: usize = 2 + FOLD_KEY_JSON_BYTES + 1 + MAX_MARKER_BYTES;

/// Length of `text` as a JSON string, quotes included (as serde_json writes it). By bytes: a
/// byte of a multi-byte character is written as itself, so only ASCII is ever escaped.
pub(crate) fn json_str_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Length of `value` as compact JSON.
pub(crate) fn json_len(value: &Value) -> usize {
    match value {
        Value::String(s) => json_str_len(s),
        Value::Array(items) => {
            2 + items.iter().map(json_len).sum::<usize>() + items.len().saturating_sub(1)
        }
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| json_str_len(k) + 1 + json_len(v))
                .sum::<usize>()
                + map.len().saturating_sub(1)
        }
        other => other.to_string().len(),
    }
}

/// `text` as it goes into a line: itself when short enough, else its start, its length in
/// bytes and its keyed hash.
pub(crate) fn text<'t>(key: &AuditKey, text: &'t str) -> Cow<'t, str> {
    text_within(key, text, MAX_TEXT_BYTES)
}

/// A short identifier (an error id, a request id) as it goes into a line: cut like [`text`]
/// when its JSON form is longer than [`MAX_MARKER_BYTES`].
pub(crate) fn identifier<'t>(key: &AuditKey, text: &'t str) -> Cow<'t, str> {
    text_within(key, text, MAX_MARKER_BYTES)
}

/// Like [`text`], cut when its JSON form is longer than `limit` (at least
/// [`MAX_MARKER_BYTES`]).
/// Borrowed when it fits: most texts do, and a line is a dozen of them.
fn text_within<'t>(key: &AuditKey, text: &'t str, limit: usize) -> Cow<'t, str> {
    let limit = limit.min(MAX_TEXT_BYTES);
    // A byte is at most 6 in JSON (`\u00XX`): a short text fits without being counted.
    if text.len() <= limit.saturating_sub(2) / 6 || json_str_len(text) <= limit {
        return Cow::Borrowed(text);
    }
    let mut used = 0;
    let head_end = text
        .char_indices()
        .take_while(|&(_, c)| {
            used += escaped_len(c);
            used <= CUT_HEAD_BYTES
        })
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    Cow::Owned(format!(
        "{}…[cut: {} bytes, {}]",
        &text[..head_end],
        text.len(),
        keyed_hash(key, text)
    ))
}

/// `value` as compact JSON with every object's keys sorted: what a keyed hash of a container
/// covers, so the same value hashes alike whatever order its keys came in (serde_json keeps
/// insertion order in this workspace).
pub(crate) fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            Value::Object(map) => {
                let mut out: Map<String, Value> =
                    map.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
                out.sort_keys();
                Value::Object(out)
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// The marker for a container (or its rest) that was folded.
fn fold(key: &AuditKey, whole: &Value, what: &str) -> String {
    let compact = canonical_json(whole);
    format!(
        "[cut: {what}, {} bytes, {}]",
        compact.len(),
        keyed_hash(key, &compact)
    )
}

/// The compact JSON length of `parameters` when [`parameters`] may return them unchanged,
/// room allowing: nothing in them is cut or folded by its own size (texts, items, depth) and
/// they fit in a line. `None` means they are bounded whatever the room, so a line need not
/// be serialised with them whole first.
pub(crate) fn uncut_len(parameters: &Map<String, Value>) -> Option<usize> {
    let uncut = parameters.len() <= MAX_ITEMS
        && parameters
            .iter()
            .all(|(k, v)| json_str_len(k) <= MAX_TEXT_BYTES && fits_as_is(v, 1));
    let len = 2
        + parameters
            .iter()
            .map(|(k, v)| json_str_len(k) + 1 + json_len(v))
            .sum::<usize>()
        + parameters.len().saturating_sub(1);
    (uncut && len <= crate::MAX_LINE_BYTES).then_some(len)
}

/// Whether [`parameters`] returns parameters of [`uncut_len`] `len` unchanged within
/// `budget`: it leaves every nested level (at most [`MAX_DEPTH`]) room for all of them, its
/// reserve for a fold marker and a marker's least budget. A sufficient test, not an exact
/// one: `false` only means "bound them".
pub(crate) fn kept_whole(len: usize, budget: usize) -> bool {
    // One byte over the exact length: the margin this test was proven with.
    let whole = len + 1;
    let per_level = whole + 2 + OBJECT_RESERVE;
    budget >= (MAX_DEPTH + 1) * per_level + MIN_BUDGET.max(whole)
}

/// Room an object keeps for a fold marker entry (a comma, its key, a colon, the marker).
const OBJECT_RESERVE: usize = 1 + FOLD_KEY_JSON_BYTES + 1 + MAX_MARKER_BYTES;

/// `parameters` bounded so their compact JSON is at most `budget` bytes (`budget` is at least
/// [`MIN_BUDGET`]).
pub(crate) fn parameters(key: &AuditKey, parameters: &Map<String, Value>, budget: usize) -> Value {
    object(key, parameters, 0, budget.max(MIN_BUDGET))
}

fn value(key: &AuditKey, value: &Value, depth: usize, budget: usize) -> Value {
    match value {
        Value::String(s) => Value::String(text_within(key, s, budget).into_owned()),
        Value::Array(_) | Value::Object(_) if depth >= MAX_DEPTH => {
            Value::String(fold(key, value, "nested too deep"))
        }
        Value::Array(items) => array(key, items, value, depth, budget),
        Value::Object(map) => object(key, map, depth, budget),
        other => other.clone(),
    }
}

fn array(key: &AuditKey, items: &[Value], whole: &Value, depth: usize, budget: usize) -> Value {
    // The usual case: nothing to cut.
    if items.len() <= MAX_ITEMS
        && json_len(whole) <= budget
        && items.iter().all(|v| fits_as_is(v, depth + 1))
    {
        return whole.clone();
    }
    // Room left for the comma and the fold marker however far the loop gets.
    let reserve = 1 + MAX_MARKER_BYTES;
    let mut out = Vec::new();
    let mut used = 2;
    for (i, item) in items.iter().enumerate() {
        let room = budget.saturating_sub(used + 1 + reserve);
        if i >= MAX_ITEMS || room < MIN_BUDGET {
            let rest = format!("{} more of {} items", items.len() - i, items.len());
            out.push(Value::String(fold(key, whole, &rest)));
            return Value::Array(out);
        }
        let item = value(key, item, depth + 1, room);
        used += json_len(&item) + 1;
        out.push(item);
    }
    Value::Array(out)
}

fn object(key: &AuditKey, map: &Map<String, Value>, depth: usize, budget: usize) -> Value {
    let reserve = OBJECT_RESERVE;
    let mut out = Map::new();
    let mut used = 2;
    for (i, (name, item)) in map.iter().enumerate() {
        let name = text(key, name).into_owned();
        let name_len = json_str_len(&name);
        let room = budget.saturating_sub(used + name_len + 2 + reserve);
        if i >= MAX_ITEMS || room < MIN_BUDGET {
            let whole = Value::Object(map.clone());
            let rest = format!("{} more of {} entries", map.len() - i, map.len());
            out.insert(FOLD_KEY.to_owned(), Value::String(fold(key, &whole, &rest)));
            return Value::Object(out);
        }
        let item = value(key, item, depth + 1, room);
        used += name_len + 1 + json_len(&item) + 1;
        out.insert(name, item);
    }
    Value::Object(out)
}

/// True when `value` would come out of [`value`] unchanged (the budget aside).
fn fits_as_is(value: &Value, depth: usize) -> bool {
    match value {
        Value::String(s) => json_str_len(s) <= MAX_TEXT_BYTES,
        Value::Array(_) | Value::Object(_) if depth >= MAX_DEPTH => false,
        Value::Array(items) => {
            items.len() <= MAX_ITEMS && items.iter().all(|v| fits_as_is(v, depth + 1))
        }
        Value::Object(map) => {
            map.len() <= MAX_ITEMS
                && map
                    .iter()
                    .all(|(k, v)| json_str_len(k) <= MAX_TEXT_BYTES && fits_as_is(v, depth + 1))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> AuditKey {
        AuditKey::from_bytes([3; 32])
    }

    #[test]
    fn containers_hash_alike_whatever_their_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":3,"y":2},"b":1}"#).unwrap();
        assert_ne!(a.to_string(), b.to_string(), "insertion order is kept");
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":3,"y":2},"b":1}"#);
    }

    #[test]
    fn json_lengths_match_serde_json() {
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "\u{1b}[2J\r\n\t\u{0}",
            "é€😀\u{7f}\u{9b}",
        ] {
            assert_eq!(
                json_str_len(s),
                serde_json::to_string(s).unwrap().len(),
                "{s:?}"
            );
        }
        let v = json!({"a": [1, "x\u{1}", {"b": null, "c": true}], "d": 1.5});
        assert_eq!(json_len(&v), v.to_string().len());
    }

    #[test]
    fn markers_stay_under_their_bound() {
        assert_eq!(json_str_len(FOLD_KEY), FOLD_KEY_JSON_BYTES);
        let worst = "\u{1}".repeat(5000);
        let cut = text(&key(), &worst);
        assert!(json_str_len(&cut) <= MAX_MARKER_BYTES, "{cut}");
        let wide = "😀".repeat(5000);
        assert!(json_str_len(&text(&key(), &wide)) <= MAX_MARKER_BYTES);
        let big = Value::String("x".repeat(1 << 20));
        let folded = fold(&key(), &big, "4294967295 more of 4294967295 entries");
        assert!(json_str_len(&folded) <= MAX_MARKER_BYTES, "{folded}");
    }

    #[test]
    fn a_cut_text_keeps_its_start_length_and_hash() {
        let long = format!("start{}", "y".repeat(5000));
        let cut = text(&key(), &long);
        assert!(cut.starts_with("starty"), "{cut}");
        assert!(cut.contains("[cut: 5005 bytes, "), "{cut}");
        assert!(cut.contains(&keyed_hash(&key(), &long)), "{cut}");
        assert_eq!(text(&key(), "short"), "short");
    }

    #[test]
    fn parameters_fit_their_budget_whatever_their_shape() {
        let many: Map<String, Value> = (0..5000)
            .map(|i| (format!("k{i}"), Value::String("v".repeat(900))))
            .collect();
        let deep = (0..100).fold(json!("leaf"), |v, _| json!([v]));
        let wide = Value::Array((0..10_000).map(Value::from).collect());
        let cases = [
            many,
            json!({"Identity": deep}).as_object().unwrap().clone(),
            json!({"Members": wide}).as_object().unwrap().clone(),
            json!({"x".repeat(4 << 20): "y".repeat(70_000)})
                .as_object()
                .unwrap()
                .clone(),
        ];
        for budget in [MIN_BUDGET, 300, 4096, 12_000] {
            for case in &cases {
                let bounded = parameters(&key(), case, budget);
                assert!(
                    json_len(&bounded) <= budget,
                    "{} > {budget}",
                    json_len(&bounded)
                );
            }
        }
    }

    #[test]
    fn kept_whole_means_kept_exactly() {
        let long = "z".repeat(1000);
        let deep = (0..7).fold(json!("leaf"), |v, _| json!({"k": v}));
        let cases = [
            json!({}),
            json!({"Identity": "a@contoso.com", "ResultSize": 10, "Flag": true, "N": null}),
            json!({"AccessRights": ["FullAccess", "SendAs"], "EmailAddresses": {"Add": ["smtp:x@y"]}}),
            json!({"Long": long.clone(), "Esc": "\"quoted\"\n\u{1}\u{7f}é😀"}),
            json!({"Deep": deep}),
            json!({"Wide": (0..64).map(Value::from).collect::<Vec<_>>()}),
        ];
        for case in &cases {
            let map = case.as_object().unwrap();
            let mut kept_somewhere = false;
            let len = uncut_len(map).expect("nothing in these is cut");
            assert_eq!(len, json_len(case), "{case}");
            for budget in (MIN_BUDGET..=16 * 1024).step_by(97) {
                if kept_whole(len, budget) {
                    kept_somewhere = true;
                    assert_eq!(&parameters(&key(), map, budget), case, "budget {budget}");
                }
            }
            assert!(kept_somewhere, "{case}");
        }
        // Cut whatever the room: never serialised whole first.
        let items = |n: usize| {
            (0..n)
                .map(|i| (format!("P{i}"), json!(i)))
                .collect::<Map<_, _>>()
        };
        let too_many = items(65);
        let wide_inside = json!({"Wide": (0..65).map(Value::from).collect::<Vec<_>>()});
        let too_long = json!({"Long": "z".repeat(1100)});
        let too_deep = json!({"Deep": (0..9).fold(json!(1), |v, _| json!([v]))});
        let too_big = (0..64)
            .map(|i| (format!("P{i}"), json!(vec!["z".repeat(900); 64])))
            .collect::<Map<_, _>>();
        assert_eq!(uncut_len(&items(64)), Some(json_len(&json!(items(64)))));
        assert_eq!(uncut_len(&too_many), None);
        for case in [wide_inside, too_long, too_deep] {
            assert_eq!(uncut_len(case.as_object().unwrap()), None, "{case}");
        }
        assert!(json_len(&json!(too_big)) > crate::MAX_LINE_BYTES);
        assert_eq!(uncut_len(&too_big), None);
    }

    #[test]
    fn usual_parameters_are_kept_exactly() {
        let usual = json!({"Identity": "a@contoso.com", "AccessRights": ["FullAccess"],
                           "GrantSendOnBehalfTo": {"Add": ["b@contoso.com"]}, "ResultSize": 10});
        let map = usual.as_object().unwrap();
        assert_eq!(parameters(&key(), map, 12_000), usual);
    }
}
