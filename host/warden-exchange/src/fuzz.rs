//! Body of the `exchange_response` fuzz target in `tests/fuzz`, here so plain `cargo test`
//! runs it over the seed corpus too. Not a public API.
//!
//! It feeds arbitrary bytes to both InvokeCommand decoders, [`parse_page`] (a 200 body) and
//! [`parse_error`] (any other status), and checks what must hold beyond "no panic": a page
//! parsed without annotations has no `@` key at any depth, keeping annotations changes nothing
//! else, the objects are what `serde_json::Value` plus [`strip_annotations`] make of the body
//! (same keys, order and values; the same error when it is refused; skipped for bodies that
//! may hold the `raw_value` key when this build's `Value` re-parses it, which the decoder by
//! choice does not), and an error always has a message for people (bounded when the body is
//! not Exchange's error JSON) and a short exception class, never an empty one.

use crate::response::{
    Page, parse_answer, parse_answer_text, parse_error, parse_page, strip_annotations,
};
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The longest message [`parse_error`] makes of a body that is not Exchange's error JSON:
/// its own words plus at most 200 bytes of the body (lossy UTF-8 may triple them).
const MAX_FALLBACK_MESSAGE: usize = 100 + 3 * 200;

/// `exchange_response`: the input as a success page and as an error body.
pub fn exchange_response(data: &[u8]) {
    page(data);
    error(data);
}

fn page(data: &[u8]) {
    for keep in [false, true] {
        as_serde_json_does(data, keep);
        text_as_objects_give(data, keep);
    }
    match (parse_page(data, false), parse_page(data, true)) {
        (Ok(stripped), Ok(kept)) => {
            for object in &stripped.objects {
                assert!(!has_annotation(object), "an annotation survived stripping");
            }
            assert_eq!(stripped.objects.len(), kept.objects.len());
            for (stripped, kept) in stripped.objects.iter().zip(&kept.objects) {
                let mut kept = kept.clone();
                strip_annotations(&mut kept);
                assert_eq!(stripped, &kept, "keeping annotations changed a value");
            }
            same_envelope(&stripped, &kept);
            assert_ne!(stripped.next_link.as_deref(), Some(""));
            assert_eq!(stripped.request_id, None, "request-id comes from a header");
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            assert!(!a.is_empty());
        }
        _ => panic!("keeping annotations changed whether the body parses"),
    }
}

/// The result objects `serde_json::Value` makes of a 200 body, annotations stripped after
/// parsing unless `keep`: the oracle for [`parse_answer`], which strips them while parsing.
pub(crate) fn objects_the_slow_way(
    data: &[u8],
    keep: bool,
) -> Result<Vec<Map<String, Value>>, String> {
    let root: Value =
        serde_json::from_slice(data).map_err(|e| format!("the response is not JSON ({e})"))?;
    let Value::Object(mut root) = root else {
        return Err("the response is not a JSON object".into());
    };
    match root.remove("value") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(mut object) => {
                    if !keep {
                        strip_annotations(&mut object);
                    }
                    Ok(object)
                }
                _ => Err("a result in 'value' is not an object".into()),
            })
            .collect(),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err("the response's 'value' is not an array".into()),
    }
}

/// Whether this build's `serde_json::Value` reads an object keyed
/// `"$serde_json::private::RawValue"` as the JSON text in its string (serde_json's
/// `raw_value` feature, which axum and sqlx turn on in the shipped binary).
fn value_reparses_raw_values() -> bool {
    static REPARSES: OnceLock<bool> = OnceLock::new();
    *REPARSES.get_or_init(|| {
        serde_json::from_str::<Value>(r#"{"$serde_json::private::RawValue":"1"}"#)
            .is_ok_and(|value| value.is_number())
    })
}

/// Whether `data` may spell the `raw_value` key. Any of its characters may be written as a
/// `\u00XX` escape (none has a shorter one): those are undone everywhere, crudely (a false
/// alarm only skips a body), and the part every spelling ends in is looked for.
fn may_hold_the_raw_value_key(data: &[u8]) -> bool {
    let mut text = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some((&byte, after)) = rest.split_first() {
        let escaped = rest
            .strip_prefix(b"\\u00")
            .and_then(|hex| std::str::from_utf8(hex.get(..2)?).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                text.push(byte);
                rest = &rest[6..];
            }
            None => {
                text.push(byte);
                rest = after;
            }
        }
    }
    text.windows(8).any(|w| w == b"RawValue")
}

/// [`parse_answer`] gives the objects (as the guest gets their JSON: order counts) or the
/// refusal [`objects_the_slow_way`] gives. Not checked where the two differ by design: the
/// decoder keeps the `raw_value` key literally, a `Value` with that feature does not.
pub(crate) fn as_serde_json_does(data: &[u8], keep: bool) {
    if data.iter().all(u8::is_ascii_whitespace)
        || (value_reparses_raw_values() && may_hold_the_raw_value_key(data))
    {
        return;
    }
    match (parse_answer(data, keep), objects_the_slow_way(data, keep)) {
        (Ok(answer), Ok(objects)) => assert_eq!(
            serde_json::to_string(&answer.page.objects).unwrap(),
            serde_json::to_string(&objects).unwrap(),
            "decoded unlike serde_json (keep annotations: {keep})"
        ),
        (Err(fast), Err(slow)) => assert_eq!(fast, slow),
        (fast, slow) => panic!(
            "decoded unlike serde_json (keep annotations: {keep}): {:?} vs {:?}",
            fast.map(|a| a.page.objects),
            slow
        ),
    }
}

/// [`parse_answer_text`] gives the answer [`parse_answer`] gives, its objects as the text
/// `serde_json` writes of them (each object's end and weight too), or the same refusal.
pub(crate) fn text_as_objects_give(data: &[u8], keep: bool) {
    match (parse_answer_text(data, keep), parse_answer(data, keep)) {
        (Ok(text), Ok(objects)) => {
            let written = text.page.text.as_ref().expect("a text answer holds text");
            assert!(text.page.objects.is_empty());
            assert_eq!(
                written.json(),
                serde_json::to_string(&objects.page.objects).unwrap(),
                "written unlike serde_json (keep annotations: {keep})"
            );
            assert_eq!(written.len(), objects.page.objects.len());
            assert_eq!(
                serde_json::to_string(&written.to_objects().unwrap()).unwrap(),
                serde_json::to_string(&objects.page.objects).unwrap(),
                "the text parses back to other objects"
            );
            let weight: usize = objects
                .page
                .objects
                .iter()
                .map(|o| serde_json::to_string(o).unwrap().len())
                .sum();
            assert_eq!(written.weight(), weight as u64);
            let len = written.len();
            for n in [0, 1, len / 2, len.saturating_sub(1), len]
                .into_iter()
                .filter(|n| *n <= len)
            {
                let mut cut = written.clone();
                cut.truncate(n);
                assert_eq!(
                    cut.json(),
                    serde_json::to_string(&objects.page.objects[..n]).unwrap()
                );
            }
            same_envelope(&text.page, &objects.page);
            assert_eq!(text.confirmation, objects.confirmation);
            assert_eq!(text.not_an_envelope, objects.not_an_envelope);
            assert_eq!(text.error_member, objects.error_member);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!(
            "text and objects disagree on whether the body parses: {:?} vs {:?}",
            a.map(|a| a.page.text),
            b.map(|b| b.page.objects)
        ),
    }
}

fn same_envelope(a: &Page, b: &Page) {
    assert_eq!(a.warnings, b.warnings);
    assert_eq!(a.errors, b.errors);
    assert_eq!(a.next_link, b.next_link);
}

fn has_annotation(object: &Map<String, Value>) -> bool {
    object
        .iter()
        .any(|(key, value)| key.contains('@') || nested(value))
}

fn nested(value: &Value) -> bool {
    match value {
        Value::Object(map) => has_annotation(map),
        Value::Array(items) => items.iter().any(nested),
        _ => false,
    }
}

fn error(data: &[u8]) {
    let is_json = serde_json::from_slice::<Value>(data).is_ok();
    for status in [400, 401, 404, 500, 503] {
        let bare = parse_error("Get-Mailbox", status, data, |_| None);
        assert_eq!(bare.cmdlet, "Get-Mailbox");
        assert_eq!(bare.status, status);
        assert!(
            !bare.message.trim().is_empty(),
            "an error without a message"
        );
        assert_ne!(bare.error_id.as_deref(), Some(""));
        if let Some(class) = &bare.exception_type {
            assert!(!class.is_empty() && !class.contains('.'), "{class:?}");
        }
        if !is_json {
            assert!(
                bare.message.len() <= MAX_FALLBACK_MESSAGE,
                "an unbounded message"
            );
        }
        assert_eq!(
            (bare.request_id.as_deref(), bare.server.as_deref()),
            (None, None)
        );

        // Headers win over the body for the exception type, and are taken as given.
        let headed = parse_error("Get-Mailbox", status, data, |name| {
            Some(format!("header {name}"))
        });
        assert_eq!(
            headed.exception_type.as_deref(),
            Some("header x-exceptiontype")
        );
        assert_eq!(headed.request_id.as_deref(), Some("header request-id"));
        assert_eq!(
            headed.server.as_deref(),
            Some("header x-calculatedbetarget")
        );
        assert_eq!(headed.message, bare.message);
        let _ = crate::ExchangeError::Cmdlet(Box::new(headed)).to_string();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_oracle_skips_only_bodies_that_may_spell_the_raw_value_key() {
        for body in [
            r#"{"$serde_json::private::RawValue":"1"}"#,
            r#"{"$serde_json::private::Raw\u0056alue":"1"}"#,
            r#"{"\u0024serde_json::private::\u0052\u0061wValue":"1"}"#,
        ] {
            assert!(super::may_hold_the_raw_value_key(body.as_bytes()), "{body}");
        }
        for body in [
            r#"{"value":[{"a":"\ud800\u00e9\u0040"}]}"#,
            r#"{"RawValu":"\u00"}"#,
            "",
        ] {
            assert!(
                !super::may_hold_the_raw_value_key(body.as_bytes()),
                "{body}"
            );
        }
    }

    #[test]
    fn the_exchange_response_body_survives_its_seed_corpus() {
        let seeds =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/seeds/exchange_response");
        let mut n = 0;
        let mut failed = Vec::new();
        for entry in std::fs::read_dir(&seeds).expect("the seed corpus exists") {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| super::exchange_response(&data)).is_err() {
                failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
            n += 1;
        }
        assert!(failed.is_empty(), "these seeds fail: {failed:?}");
        assert!(n >= 8, "only {n} seeds");
    }
}
