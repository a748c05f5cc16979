//! Decoding InvokeCommand answers: the success envelope (`value`, `@odata.nextLink`,
//! `@adminapi.warnings`, `@adminapi.errors`, per-property annotations) and the error body
//! (`error.details[0].message` = `ErrorId|ExceptionClass|Message`).
//!
//! A 2xx without a `value` array (only `@odata.context` and `@adminapi.warnings`, a 204, an
//! empty body) is zero objects plus its warnings: Exchange answers a write that returns nothing
//! that way. It refuses a success body that is not JSON, rather than guessing (the session
//! decides what that means for a write), and it keeps credentials an upstream echoed into an
//! error body out of the error it returns.
//!
//! A page is decoded straight from the text: annotations are left out while parsing, never
//! built, and a page ends as the objects and refusals `serde_json::Value` plus
//! [`strip_annotations`] would give (the fuzz body checks that against them), with one chosen
//! difference: an object whose first key is `"$serde_json::private::RawValue"` is kept as
//! the upstream sent it. `Value` re-parses that member's string as JSON when serde_json's
//! `raw_value` feature is on (the shipped binary has it, through axum and sqlx), each time
//! with a fresh recursion limit; the decoder never goes through `Value`, at any member.

use crate::error::CmdletError;
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// One page of results.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Result objects (empty when they came as [`Page::text`]).
    pub objects: Vec<Map<String, Value>>,
    /// The result objects as JSON text, for a caller that asked for text
    /// ([`crate::Invocation::with_text_pages`]) from a session that reads JSON: then
    /// `objects` is empty.
    pub text: Option<ObjectsText>,
    /// `@adminapi.warnings`.
    pub warnings: Vec<String>,
    /// `@adminapi.errors`: non-terminating errors that came inside a 200.
    pub errors: Vec<Value>,
    /// `@odata.nextLink`.
    pub next_link: Option<String>,
    /// `request-id` of the response.
    pub request_id: Option<String>,
}

impl Page {
    /// How many result objects the page holds, as objects or as text.
    pub fn len(&self) -> usize {
        self.text
            .as_ref()
            .map_or(self.objects.len(), ObjectsText::len)
    }

    /// Whether the page holds no result object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `n` result objects.
    pub fn truncate(&mut self, n: usize) {
        self.objects.truncate(n);
        if let Some(text) = &mut self.text {
            text.truncate(n);
        }
    }

    /// The result objects, parsed from the text when they came as text.
    pub fn to_objects(&self) -> Result<Vec<Map<String, Value>>, String> {
        match &self.text {
            Some(text) => text.to_objects(),
            None => Ok(self.objects.clone()),
        }
    }
}

/// Result objects as one JSON array, exactly the text `serde_json::to_string` makes of the
/// objects [`parse_answer`] would build (annotations left out, keys in the order sent), but
/// written while parsing, with no `Value` built; with where each object ends, so a page is
/// counted, cut and weighed without being parsed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectsText {
    /// `[{…},{…}]`.
    json: String,
    /// The end (exclusive) of each object in `json`.
    ends: Vec<usize>,
}

impl Default for ObjectsText {
    fn default() -> Self {
        Self {
            json: "[]".into(),
            ends: Vec::new(),
        }
    }
}

impl ObjectsText {
    /// The text of `objects` (what the decoder writes, made from objects instead), written
    /// into a buffer made about its size up front: callgrind counted ~19,000 fewer
    /// instructions per page of 10 mailboxes than a buffer grown by doubling
    /// (bench/callgrind/README.md).
    pub fn of(objects: &[Map<String, Value>]) -> Self {
        let mut text = TextWriter::default();
        let size = 2 + objects
            .iter()
            .map(|o| 1 + object_size_hint(o))
            .sum::<usize>();
        text.out.reserve(size);
        text.out.push(b'[');
        for object in objects {
            if !text.ends.is_empty() {
                text.out.push(b',');
            }
            text.scalar(object);
            text.ends.push(text.out.len());
        }
        text.finish()
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no object.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The JSON array.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The JSON array, taken.
    pub fn into_json(self) -> String {
        self.json
    }

    /// The objects' own text in bytes, summed: the array less its brackets and the commas
    /// between objects (what `serde_json::to_string` of each object would total).
    pub fn weight(&self) -> u64 {
        (self.json.len() - 2 - self.len().saturating_sub(1)) as u64
    }

    /// Keeps the first `n` objects.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len() {
            return;
        }
        let end = n.checked_sub(1).map_or(1, |last| self.ends[last]);
        self.json.truncate(end);
        self.json.push(']');
        self.ends.truncate(n);
    }

    /// The objects, parsed as the decoder parses an answer's `value` (never through `Value`,
    /// whose `raw_value` feature would re-parse some members: see the module's doc).
    pub fn to_objects(&self) -> Result<Vec<Map<String, Value>>, String> {
        let unparsed = |e: &dyn fmt::Display| format!("a page's text did not parse ({e})");
        let mut de = serde_json::Deserializer::from_str(&self.json);
        let results = ResultsSeed {
            strip: false,
            as_text: false,
        }
        .deserialize(&mut de)
        .map_err(|e| unparsed(&e))?;
        de.end().map_err(|e| unparsed(&e))?;
        match results {
            Results::Objects(objects) => Ok(objects),
            _ => Err(unparsed(&"not an array of objects")),
        }
    }
}

/// About the length of `object` as JSON, only a buffer's first size (nothing is charged by
/// it): exact for keys, punctuation and strings without escapes; a number counts 20 bytes,
/// `null` and booleans 5, so a page of mostly numbers reserves up to about 10× its text.
fn object_size_hint(object: &Map<String, Value>) -> usize {
    2 + object
        .iter()
        .map(|(key, value)| key.len() + 4 + value_size_hint(value))
        .sum::<usize>()
}

fn value_size_hint(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| 1 + value_size_hint(v)).sum::<usize>(),
        Value::Object(object) => object_size_hint(object),
    }
}

/// A 2xx answer: its page, and whether it was a confirmation prompt instead of a result.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The page (empty for a prompt).
    pub page: Page,
    /// `@adminapi.confirmationmessage` when it is a non-empty string: a prompt (or a what-if
    /// description) when the request asked for one, a warning otherwise (the session decides).
    pub confirmation: Option<String>,
    /// Why a body without `value` is not an answer of zero objects: it is empty, or lacks
    /// `@odata.context`, or carries an `error` (`None` when `value` came, or the envelope
    /// without it did). Only a 204 makes it zero objects anyway; a read is refused, a write's
    /// 2xx is kept (the session decides).
    pub not_an_envelope: Option<String>,
    /// The text of an `error` member inside a 2xx (a warning for a write).
    pub error_member: Option<String>,
}

/// Removes `@odata.type` / `@data.type` annotations (any key containing `@`), recursively.
///
/// [`parse_answer`] does the same while it parses (see `decode`); this is for objects that
/// were decoded with their annotations kept.
pub fn strip_annotations(object: &mut Map<String, Value>) {
    object.retain(|key, _| !key.contains('@'));
    for value in object.values_mut() {
        strip_value(value);
    }
}

fn strip_value(value: &mut Value) {
    match value {
        Value::Object(map) => strip_annotations(map),
        Value::Array(items) => items.iter_mut().for_each(strip_value),
        _ => {}
    }
}

/// Parses a 2xx body. `keep_annotations` keeps `@odata.type`/`@data.type` keys.
///
/// An empty body (a 204) and an object without `value` are zero objects: the module reads
/// `$ResultObject.value` and a missing one is `$null`, i.e. nothing (Calvindd2f/EXO_PROJECT
/// `.idea/full_modoule_dump.ps1`, `PrintResultAndCheckForNextPage`).
pub fn parse_page(body: &[u8], keep_annotations: bool) -> Result<Page, String> {
    let answer = parse_answer(body, keep_annotations)?;
    match answer.not_an_envelope {
        Some(reason) => Err(reason),
        None => Ok(answer.page),
    }
}

/// [`parse_page`], keeping `@adminapi.confirmationmessage`.
pub fn parse_answer(body: &[u8], keep_annotations: bool) -> Result<Answer, String> {
    parse_answer_as(body, keep_annotations, false)
}

/// [`parse_answer`] with the result objects as [`Page::text`] instead of objects: the same
/// answer, refusals and errors, the same objects written as JSON.
pub fn parse_answer_text(body: &[u8], keep_annotations: bool) -> Result<Answer, String> {
    parse_answer_as(body, keep_annotations, true)
}

fn parse_answer_as(body: &[u8], keep_annotations: bool, as_text: bool) -> Result<Answer, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Answer {
            page: Page {
                text: as_text.then(ObjectsText::default),
                ..Page::default()
            },
            not_an_envelope: Some("the answer is empty (only a 204 may be)".into()),
            ..Answer::default()
        });
    }
    let Envelope {
        mut root,
        value: results,
    } = decode(body, !keep_annotations, as_text)
        .map_err(|e| format!("the response is not JSON ({e})"))?
        .ok_or("the response is not a JSON object")?;
    let error_member = root
        .get("error")
        .filter(|e| !e.is_null())
        .map(|e| match &e["message"] {
            Value::String(message) => redact_credentials(message),
            _ => redact_credentials(&e.to_string()),
        });
    let has_value = results
        .as_ref()
        .is_some_and(|r| !matches!(r, Results::Null));
    // The module's flow: a result without `value` is `$null`, nothing. Only the envelope
    // (`@odata.context`) without an `error` says so; `{}`, `{"values":[]}` or an error body
    // are not Exchange saying "no objects".
    let not_an_envelope = if error_member.is_some() {
        Some(format!(
            "the answer carries an error: {}",
            error_member.as_deref().unwrap_or_default()
        ))
    } else if !has_value && !root.contains_key("@odata.context") {
        Some("the answer has neither 'value' nor '@odata.context'".into())
    } else {
        None
    };
    let (objects, text) = match results {
        Some(Results::Objects(objects)) => (objects, None),
        // A key sent twice in some object: `Value` keeps its first place and last value, which
        // text written as it is read cannot; decoded again as objects (rare, and never Exchange's).
        Some(Results::Text(_, true)) => {
            return parse_answer_as(body, keep_annotations, false).map(|mut answer| {
                answer.page.text = Some(ObjectsText::of(&answer.page.objects));
                answer.page.objects = Vec::new();
                answer
            });
        }
        Some(Results::Text(text, false)) => (Vec::new(), Some(text)),
        None | Some(Results::Null) => (Vec::new(), as_text.then(ObjectsText::default)),
        Some(Results::NotAnArray) => return Err("the response's 'value' is not an array".into()),
        Some(Results::NotAllObjects) => return Err("a result in 'value' is not an object".into()),
    };
    let strings = |v: Option<Value>| match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    let warnings = strings(root.remove("@adminapi.warnings"));
    let errors = match root.remove("@adminapi.errors") {
        Some(Value::Array(items)) => items,
        Some(other) if !other.is_null() => vec![other],
        _ => Vec::new(),
    };
    let next_link = root
        .remove("@odata.nextLink")
        .or_else(|| root.remove("odata.nextLink"))
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty());
    // The module acts on the message only when it is a non-empty string
    // (`!string.IsNullOrEmpty(confirmationMessage)`); anything else is no message.
    let confirmation = match root.remove("@adminapi.confirmationmessage") {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text),
        _ => None,
    };
    Ok(Answer {
        page: Page {
            objects,
            text,
            warnings,
            errors,
            next_link,
            request_id: None,
        },
        confirmation,
        not_an_envelope,
        error_member,
    })
}

/// A success body as [`decode`] reads it.
struct Envelope {
    /// Every member but `value`, as JSON has it (annotations kept: they are the envelope).
    root: Map<String, Value>,
    /// The last `value` member, if any.
    value: Option<Results>,
}

/// What a `value` member held.
enum Results {
    Null,
    Objects(Vec<Map<String, Value>>),
    /// The objects as text, and whether some object (at any depth) named a key twice.
    Text(ObjectsText, bool),
    NotAnArray,
    NotAllObjects,
}

/// The body as an [`Envelope`] (`None`: valid JSON, but no object), the result objects
/// decoded straight from the text with their annotations left out when `strip` (as
/// [`strip_annotations`] would leave them, at any depth, with no `Value` ever built for an
/// annotation). Everything else is what `serde_json::from_slice::<Value>` does without its
/// `raw_value` feature: the same parser, the same errors and recursion limit (for every
/// member, the envelope's too), duplicate keys keeping the first place and the last value;
/// the `raw_value` key is kept literally (see the module's doc). Text that is valid UTF-8 is
/// read as `str`, checked once rather than string by string; other bytes go through the byte
/// reader, for its error.
fn decode(body: &[u8], strip: bool, as_text: bool) -> serde_json::Result<Option<Envelope>> {
    fn run<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        visitor: EnvelopeVisitor,
    ) -> serde_json::Result<Option<Envelope>> {
        let envelope = de.deserialize_any(visitor)?;
        de.end()?;
        Ok(envelope)
    }
    let visitor = EnvelopeVisitor { strip, as_text };
    match std::str::from_utf8(body) {
        Ok(text) => run(serde_json::Deserializer::from_str(text), visitor),
        Err(_) => run(serde_json::Deserializer::from_slice(body), visitor),
    }
}

/// Most properties a result object is made room for, from the one before it: the objects of a
/// page share their shape, and one hostile object must not size all the others.
const MAX_PROPERTIES_HINT: usize = 64;

/// The `visit_*` methods of the JSON kinds a visitor takes as "anything else": scalars answer
/// `$other` at once, arrays and objects are read through (checked, nothing kept) first.
macro_rules! anything_else {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
            while items.next_element_seed(Skip)?.is_some() {}
            Ok($other)
        }
    };
}

struct EnvelopeVisitor {
    strip: bool,
    as_text: bool,
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Option<Envelope>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    anything_else!(None);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Self::Value, A::Error> {
        let mut root = Map::new();
        let mut value = None;
        while let Some(key) = members.next_key::<String>()? {
            if key == "value" {
                value = Some(members.next_value_seed(ResultsSeed {
                    strip: self.strip,
                    as_text: self.as_text,
                })?);
            } else {
                // Not `Value`: with `raw_value` on it would re-parse a string past the limit.
                root.insert(key, members.next_value_seed(Tree { strip: false })?);
            }
        }
        Ok(Some(Envelope { root, value }))
    }
}

struct ResultsSeed {
    strip: bool,
    as_text: bool,
}

impl<'de> DeserializeSeed<'de> for ResultsSeed {
    type Value = Results;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Results, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResultsSeed {
    type Value = Results;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Results, E> {
        Ok(Results::NotAnArray)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Results, E> {
        Ok(Results::NotAnArray)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Results, E> {
        Ok(Results::NotAnArray)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Results, E> {
        Ok(Results::NotAnArray)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Results, E> {
        Ok(Results::NotAnArray)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Results, A::Error> {
        while members.next_entry_seed(Skip, Skip)?.is_some() {}
        Ok(Results::NotAnArray)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Results, E> {
        Ok(Results::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Results, A::Error> {
        if self.as_text {
            let mut text = TextWriter::default();
            text.out.push(b'[');
            loop {
                let comma = text.out.len();
                if !text.ends.is_empty() {
                    text.out.push(b',');
                }
                let item = items.next_element_seed(TextResultSeed {
                    strip: self.strip,
                    text: &mut text,
                })?;
                match item {
                    Some(true) => text.ends.push(text.out.len()),
                    Some(false) => {
                        while items.next_element_seed(Skip)?.is_some() {}
                        return Ok(Results::NotAllObjects);
                    }
                    None => {
                        text.out.truncate(comma);
                        break;
                    }
                }
            }
            let duplicate = text.duplicate;
            return Ok(Results::Text(text.finish(), duplicate));
        }
        let mut objects = Vec::new();
        let mut hint = 0;
        while let Some(item) = items.next_element_seed(ResultSeed {
            strip: self.strip,
            hint,
        })? {
            let Some(object) = item else {
                // One that is not an object refuses the page: the rest is only checked (for
                // the same errors), never built.
                drop(objects);
                while items.next_element_seed(Skip)?.is_some() {}
                return Ok(Results::NotAllObjects);
            };
            hint = object.len().min(MAX_PROPERTIES_HINT);
            objects.push(object);
        }
        Ok(Results::Objects(objects))
    }
}

/// One item of `value`: `Some` object, or `None` (read through) for anything else.
struct ResultSeed {
    strip: bool,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for ResultSeed {
    type Value = Option<Map<String, Value>>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a result object")
    }

    anything_else!(None);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<Self::Value, A::Error> {
        object(members, self.strip, self.hint).map(Some)
    }
}

/// The members of an object, annotations left out when `strip`.
fn object<'de, A: MapAccess<'de>>(
    mut members: A,
    strip: bool,
    hint: usize,
) -> Result<Map<String, Value>, A::Error> {
    let mut object = Map::with_capacity(hint);
    while let Some(key) = members.next_key_seed(KeySeed { strip })? {
        match key {
            Some(key) => {
                let value = members.next_value_seed(Tree { strip })?;
                object.insert(key, value);
            }
            None => members.next_value_seed(Skip)?,
        }
    }
    Ok(object)
}

/// A key: `None` for an annotation (any key containing `@`) when stripping, never copied.
struct KeySeed {
    strip: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok((!(self.strip && key.contains('@'))).then(|| key.to_owned()))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Self::Value, E> {
        Ok((!(self.strip && key.contains('@'))).then_some(key))
    }
}

/// Any JSON value as `serde_json::Value` builds it (without `raw_value`: every object kept as
/// written, at most 128 levels deep), objects at any depth stripped like result objects when
/// `strip`.
struct Tree {
    strip: bool,
}

impl<'de> DeserializeSeed<'de> for Tree {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tree {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::new();
        while let Some(item) = items.next_element_seed(Tree { strip: self.strip })? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }
    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<Value, A::Error> {
        object(members, self.strip, 0).map(Value::Object)
    }
}

/// Result objects written as JSON text while they are read ([`ObjectsText`]).
#[derive(Default)]
struct TextWriter {
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Per open object, innermost last: a hash of each key written so far.
    keys: Vec<HashSet<u64, BuildHasherDefault<KeyHash>>>,
    /// How many of `keys` are open (the rest are kept for their capacity).
    depth: usize,
    /// Some object named a key twice (the text is then not what `Value` would give).
    duplicate: bool,
}

impl TextWriter {
    /// A scalar (or a whole `Value`) as `serde_json` writes it.
    fn scalar<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        // Writing to a Vec cannot fail, and these values (no map with non-string keys, no
        // non-finite float: serde_json writes those as null) have a JSON form.
        let _ = serde_json::to_writer(&mut self.out, value);
    }

    fn finish(mut self) -> ObjectsText {
        self.out.push(b']');
        ObjectsText {
            // Only str from the parser and serde_json's own output went in.
            json: String::from_utf8(self.out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ends: self.ends,
        }
    }

    /// Writes the members of an object, annotations left out when `strip`.
    fn object<'de, A: MapAccess<'de>>(
        &mut self,
        mut members: A,
        strip: bool,
    ) -> Result<(), A::Error> {
        if self.keys.len() == self.depth {
            self.keys.push(HashSet::default());
        }
        // Clearing costs a set's capacity: one huge object must not make every later (small)
        // object at its depth pay for it.
        let keys = &mut self.keys[self.depth];
        if keys.capacity() > MAX_KEPT_KEY_SET {
            *keys = HashSet::default();
        } else {
            keys.clear();
        }
        self.depth += 1;
        self.out.push(b'{');
        let mut first = true;
        while let Some(key) = members.next_key_seed(KeySeed { strip })? {
            let Some(key) = key else {
                members.next_value_seed(Skip)?;
                continue;
            };
            let hash = fnv1a(key.as_bytes());
            if !self.keys[self.depth - 1].insert(hash) {
                // Possibly the same key (or two with one hash): the caller decodes the page
                // again as objects, which settles it exactly.
                self.duplicate = true;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.scalar(key.as_str());
            self.out.push(b':');
            members.next_value_seed(TextTree { strip, text: self })?;
        }
        self.out.push(b'}');
        self.depth -= 1;
        Ok(())
    }
}

/// The largest key set [`TextWriter`] keeps for the next object at the same depth.
const MAX_KEPT_KEY_SET: usize = 1024;

/// The hasher of a set of [`fnv1a`] hashes: they are hashes already.
#[derive(Default)]
struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(bytes);
    }
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// FNV-1a: a key's hash for spotting a repeated key (a match is only a hint, see above).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One item of `value`, written: `true` for an object, `false` (read through, nothing
/// written that is kept) for anything else.
struct TextResultSeed<'a> {
    strip: bool,
    text: &'a mut TextWriter,
}

impl<'de> DeserializeSeed<'de> for TextResultSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextResultSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a result object")
    }

    anything_else!(false);

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<bool, A::Error> {
        self.text.object(members, self.strip).map(|()| true)
    }
}

/// Any JSON value written as [`Tree`] would build it and `serde_json` would write that.
struct TextTree<'a> {
    strip: bool,
    text: &'a mut TextWriter,
}

impl<'de> DeserializeSeed<'de> for TextTree<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextTree<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.text.scalar(&v);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.text.scalar(&v);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.text.scalar(&v);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As `Tree`: a float with no JSON number is null.
        match serde_json::Number::from_f64(v) {
            Some(number) => self.text.scalar(&number),
            None => self.text.out.extend_from_slice(b"null"),
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.text.scalar(v);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.text.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        self.text.out.push(b'[');
        let mut first = true;
        loop {
            let comma = self.text.out.len();
            if !first {
                self.text.out.push(b',');
            }
            let more = items.next_element_seed(TextTree {
                strip: self.strip,
                text: &mut *self.text,
            })?;
            if more.is_none() {
                self.text.out.truncate(comma);
                break;
            }
            first = false;
        }
        self.text.out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<(), A::Error> {
        self.text.object(members, self.strip)
    }
}

/// A value read through and dropped. Unlike `serde::de::IgnoredAny` (which serde_json skips
/// without its recursion limit or string checks) it is parsed like a kept one, so a body is
/// refused for exactly what `serde_json::Value` refuses it for.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    anything_else!(());

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        while members.next_entry_seed(Skip, Skip)?.is_some() {}
        Ok(())
    }
}

/// Parses an error answer into a [`CmdletError`]; the message follows the module's extraction
/// order (`details[0].message`, then `innererror.internalexception.message`, then
/// `error.message`).
pub fn parse_error(
    cmdlet: &str,
    status: u16,
    body: &[u8],
    header: impl Fn(&str) -> Option<String>,
) -> CmdletError {
    let root: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &root["error"];
    let detail = &error["details"][0];
    let mut error_id = None;
    let mut exception_type = header("x-exceptiontype");
    let from_detail = detail["message"].as_str().map(|text| {
        let mut parts = text.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(class), Some(message)) => {
                error_id = Some(id.to_owned()).filter(|id| !id.is_empty());
                let short = class.rsplit('.').next().unwrap_or(class).to_owned();
                if !short.is_empty() {
                    exception_type.get_or_insert(short);
                }
                message
            }
            _ => text,
        }
    });
    // The first source that says something: an empty message is no message.
    let said = [
        from_detail,
        error["innererror"]["internalexception"]["message"].as_str(),
        error["message"].as_str(),
    ]
    .into_iter()
    .flatten()
    .find(|text| !text.trim().is_empty());
    let message = if let Some(text) = said {
        text.to_owned()
    } else if body.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("HTTP {status} with a body that is not Exchange's error JSON: {text}")
    };
    // The body is upstream text: whatever echoes the request on the way (a proxy's error page,
    // a handler that dumps it) must not pass the bearer token on to whoever reads the error.
    let clean = |text: &str| redact_credentials(text);
    CmdletError {
        cmdlet: cmdlet.to_owned(),
        status,
        code: clean(error["code"].as_str().unwrap_or("")),
        error_id: error_id.as_deref().map(clean),
        exception_type: exception_type.as_deref().map(clean),
        message: clean(&message),
        target: detail["target"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(clean),
        // Header values are server text too.
        request_id: header("request-id").as_deref().map(clean),
        server: header("x-calculatedbetarget").as_deref().map(clean),
    }
}

/// Whether the run after `Basic ` is credentials: at least 8 base64 characters, unless it is a
/// plain word (letters only, lower case after the first: "Basic authentication") that does
/// not decode to `user:password`.
fn basic_credentials(run: &str) -> bool {
    if run.len() < 8 {
        return false;
    }
    let word = run.bytes().all(|b| b.is_ascii_alphabetic())
        && run.bytes().skip(1).all(|b| b.is_ascii_lowercase());
    if !word {
        return true;
    }
    // A plain word is redacted only if it decodes to something with the `:` of user:password.
    use base64::Engine;
    let whole = run.len() / 4 * 4;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&run[..whole])
        .is_ok_and(|bytes| bytes.contains(&b':'))
}

/// `text` with what could authenticate replaced by `[redacted]`: a long credential after
/// `Bearer ` (any token format), the base64 `user:password` after `Basic ` (8 characters or
/// more, not a plain word: for OAuth it holds the token, for plain Basic the password), and
/// any JWT-shaped run (`eyJ…`, dots allowed, so a cut-off token goes too). Short words are
/// kept, so ordinary messages read the same.
pub fn redact_credentials(text: &str) -> String {
    // RFC 6750 `b64token` characters (a JWT's are a subset).
    let token_byte = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
    };
    let run = |from: usize| {
        from + text.as_bytes()[from..]
            .iter()
            .take_while(|b| token_byte(**b))
            .count()
    };
    const LONG: usize = 16;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        let at_word = i == 0 || !token_byte(bytes[i - 1]);
        // A JWT may follow `=` or `/` (a query, a path): only base64url letters join it.
        let at_jwt =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"-_".contains(&bytes[i - 1]));
        // Matches start at ASCII bytes, so every slice below is at a character boundary.
        let secret = if at_word
            && bytes.len() - i > 7
            && bytes[i..i + 7].eq_ignore_ascii_case(b"bearer ")
        {
            let start = i + 7 + bytes[i + 7..].iter().take_while(|b| **b == b' ').count();
            let end = run(start);
            (end - start >= LONG).then_some((start, end))
        } else if at_word && bytes.len() - i > 6 && bytes[i..i + 6].eq_ignore_ascii_case(b"basic ")
        {
            let start = i + 6 + bytes[i + 6..].iter().take_while(|b| **b == b' ').count();
            // The standard base64 alphabet only (a sentence's full stop is not part of it).
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
                    .count();
            basic_credentials(&text[start..end]).then_some((start, end))
        } else if at_jwt && bytes[i..].starts_with(b"eyJ") {
            let end = run(i);
            (end - i >= LONG).then_some((i, end))
        } else {
            None
        };
        match secret {
            Some((start, end)) => {
                out.push_str(&text[copied..start]);
                out.push_str("[redacted]");
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_recorded_envelope_parses_and_annotations_are_stripped() {
        let body = json!({
            "@odata.context": "https://outlook.office.com/adminapi/beta/x/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)", "@adminapi.warnings": ["w1"],
            "value": [{"DatabaseGuid@data.type": "System.Guid", "DatabaseGuid@odata.type": "#Guid", "DatabaseGuid": "ae06",
                       "EmailAddresses@odata.type": "#Collection(String)", "EmailAddresses": ["smtp:a", "SMTP:b"]}],
            "@odata.nextLink": "https://outlook.office.com/adminapi/beta/x/InvokeCommand?$skiptoken=2"
        });
        let page = parse_page(body.to_string().as_bytes(), false).unwrap();
        assert_eq!(page.objects.len(), 1);
        assert_eq!(
            page.objects[0].keys().collect::<Vec<_>>(),
            vec!["DatabaseGuid", "EmailAddresses"]
        );
        assert_eq!(page.warnings, vec!["w1"]);
        assert!(page.next_link.unwrap().contains("skiptoken"));
        let kept = parse_page(body.to_string().as_bytes(), true).unwrap();
        assert!(kept.objects[0].contains_key("DatabaseGuid@odata.type"));
    }

    /// Bodies that probe what decoding while parsing must do exactly as `serde_json::Value`
    /// plus [`strip_annotations`] did: same objects, keys, order and values, same refusals.
    fn tricky_bodies() -> Vec<Vec<u8>> {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let mut bodies: Vec<Vec<u8>> = [
            // Annotations nested in objects and arrays at any depth.
            r##"{"@odata.context":"x","value":[{"A":{"B@odata.type":"#X","B":1,"C":[{"D@data.type":"t","D":2}]},"E":[[{"F@x":1,"G":{"H@y":{"I":1}}}]]}]}"##,
            // Values that look like annotations are values, not keys.
            r##"{"value":[{"Type":"@odata.type","Note":"a@b.c","L":["@x",{"k":"@y"}]}],"@odata.context":"x"}"##,
            // Escaped keys: `\u0040` is an `@`, `\u002e` a dot; `C\\u0040` is no `@`.
            r##"{"value":[{"A\u0040odata.type":"#X","@odata\u002etype":"y","\u0041":1,"B\"@":2,"C\\u0040":3,"\u00e9":4}],"@odata.context":"x"}"##,
            // Duplicate keys: the first place, the last value; a kept key beside its annotation.
            r##"{"value":[{"A":1,"B":2,"A":3,"A@odata.type":"x","A@odata.type":"y"},{"A":1,"A":{"x@y":1,"z":2},"A@z":0}],"@odata.context":"x"}"##,
            // A duplicate `value`: the last one counts, whatever the first was.
            r##"{"value":[{"A":1}],"value":[{"B":2}],"@odata.context":"x"}"##,
            r##"{"value":[1],"value":[{"B":2}],"@odata.context":"x"}"##,
            r##"{"value":[{"B":2}],"value":5,"@odata.context":"x"}"##,
            r##"{"value":[{"B":2}],"value":null,"@odata.context":"x"}"##,
            // Numbers as serde_json reads them.
            r##"{"value":[{"N":[0,-0,1.5,-1e3,18446744073709551615,-9223372036854775808,1E2,0.1e-2,123456789012345678901234567890,-0.0]}],"@odata.context":"x"}"##,
            // Escapes in values, kept and stripped.
            r##"{"value":[{"S":"\u00e9\ud83d\ude00\n\t\"\\\/","S@x":"\u00e9\ud83d\ude00"}],"@odata.context":"x"}"##,
            // Refusals: bad escapes, lone surrogates, trailing text, wrong shapes, in kept and
            // stripped members alike.
            r##"{"value":[{"a@b":"\x"}],"@odata.context":"x"}"##,
            r##"{"value":[{"a":"\x"}],"@odata.context":"x"}"##,
            r##"{"value":[{"a@b":"\ud800"}],"@odata.context":"x"}"##,
            r##"{"value":[{"a@b":[1,}]}],"@odata.context":"x"}"##,
            r##"{"value":[],"@odata.context":"x"} x"##,
            r##"{"value":[1,{]}"##,
            r##"{"value":{"a@b":1},"@odata.context":"x"}"##,
            r##"{"value":[{"a":1},"x",{"b":2}],"@odata.context":"x"}"##,
            // After one that is not an object the rest is still checked, kept or stripped.
            r##"{"value":[1,{"a":"\x"}],"@odata.context":"x"}"##,
            r##"{"value":[null,{"a@b":"\ud800"}],"@odata.context":"x"}"##,
            r##"{"value":[{"a":1},[],{"a":{"b":[}}],"@odata.context":"x"}"##,
            r##"[{"value":[]}]"##,
            r##""value""##,
            "null",
            r##"{"value":[{"a":1}],"@odata.context":"x""##,
            r##"{"value":[{"a":01}],"@odata.context":"x"}"##,
            // Keys sent twice inside arrays of objects, and after an annotation of the same name.
            r##"{"value":[{"L":[{"x":1,"y":2,"x":3},{"x":1}],"M":[[{"k@a":1,"k":2,"k":4}]]}],"@odata.context":"x"}"##,
            r##"{"value":[{"k@a":1,"k@a":2,"k":3}],"@odata.context":"x"}"##,
        ]
        .iter()
        .map(|body| body.as_bytes().to_vec())
        .collect();
        // Nesting up to serde_json's recursion limit and past it, kept and stripped, and after
        // a result that is not an object.
        for depth in [120, 125, 126, 127, 200] {
            for key in ["a", "a@odata.type"] {
                for before in ["", "1,"] {
                    bodies.push(
                        format!(
                            r#"{{"value":[{before}{{"{key}":{}}}],"@odata.context":"x"}}"#,
                            deep(depth)
                        )
                        .into_bytes(),
                    );
                }
            }
        }
        // One object with many keys, then many small ones (each gets a fresh key set).
        let wide: Vec<String> = (0..5000).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let small = vec![r#"{"a":0,"b":1}"#; 5000];
        bodies.push(
            format!(
                r#"{{"value":[{{{}}},{}],"@odata.context":"x"}}"#,
                wide.join(","),
                small.join(",")
            )
            .into_bytes(),
        );
        // Bytes that are not UTF-8, in a kept and in a stripped value.
        for key in ["a", "a@odata.type"] {
            let mut body = format!(r#"{{"value":[{{"{key}":"x"#).into_bytes();
            body.extend_from_slice(&[0xff, 0xfe]);
            body.extend_from_slice(br#""}],"@odata.context":"x"}"#);
            bodies.push(body);
        }
        bodies
    }

    #[test]
    fn pages_as_text_are_the_text_of_the_objects() {
        for body in tricky_bodies() {
            for keep in [false, true] {
                crate::fuzz::text_as_objects_give(&body, keep);
            }
        }
    }

    #[test]
    fn a_key_sent_twice_is_written_once_with_its_first_place_and_last_value() {
        let body = br#"{"value":[{"A":1,"B":{"x":1,"x":2},"A":3}],"@odata.context":"x"}"#;
        let answer = parse_answer_text(body, false).unwrap();
        assert_eq!(answer.page.text.unwrap().json(), r#"[{"A":3,"B":{"x":2}}]"#);
    }

    #[test]
    fn an_answer_without_results_is_an_empty_text_page() {
        for body in [
            &br#"{"@odata.context":"x"}"#[..],
            br#"{"value":null,"@odata.context":"x"}"#,
            br#"{"value":[],"@odata.context":"x"}"#,
        ] {
            let page = parse_answer_text(body, false).unwrap().page;
            let text = page.text.unwrap();
            assert_eq!((text.json(), text.len(), text.weight()), ("[]", 0, 0));
        }
    }

    #[test]
    fn annotations_are_stripped_while_parsing_exactly_as_after_it() {
        for body in tricky_bodies() {
            for keep in [false, true] {
                crate::fuzz::as_serde_json_does(&body, keep);
            }
        }
        // And they are gone: escaped spellings too, at any depth; look-alike values stay.
        let page = parse_page(&tricky_bodies()[2], false).unwrap();
        assert_eq!(
            serde_json::to_string(&page.objects).unwrap(),
            r#"[{"A":1,"C\\u0040":3,"é":4}]"#
        );
        let page = parse_page(&tricky_bodies()[0], false).unwrap();
        assert_eq!(
            serde_json::to_string(&page.objects).unwrap(),
            r#"[{"A":{"B":1,"C":[{"D":2}]},"E":[[{"G":{}}]]}]"#
        );
        let page = parse_page(&tricky_bodies()[1], false).unwrap();
        assert_eq!(page.objects[0]["Type"], "@odata.type");
        let page = parse_page(&tricky_bodies()[3], false).unwrap();
        assert_eq!(
            serde_json::to_string(&page.objects).unwrap(),
            r#"[{"A":3,"B":2},{"A":{"z":2}}]"#
        );
    }

    /// The key serde_json's `raw_value` feature reads as "parse my string as JSON".
    const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

    #[test]
    fn an_object_keyed_like_a_serde_json_raw_value_is_kept_as_sent() {
        // Hard-coded, not through the oracle: `Value` gives `[{"A":1}]` and refuses `"5"` as
        // a result when `raw_value` is on (as in the shipped binary and these tests).
        let body = r#"{"@odata.context":"x","value":[{"$serde_json::private::RawValue":"{\"A\":1}"}],"@adminapi.errors":[{"$serde_json::private::RawValue":"[1]"}],"@adminapi.warnings":[{"$serde_json::private::RawValue":"\"w\""}]}"#;
        let answer = parse_answer(body.as_bytes(), false).unwrap();
        assert_eq!(
            serde_json::to_string(&answer.page.objects).unwrap(),
            r#"[{"$serde_json::private::RawValue":"{\"A\":1}"}]"#
        );
        assert_eq!(
            serde_json::to_string(&answer.page.errors).unwrap(),
            r#"[{"$serde_json::private::RawValue":"[1]"}]"#
        );
        assert_eq!(
            answer.page.warnings,
            [r#"{"$serde_json::private::RawValue":"\"w\""}"#]
        );
        // Escaped spellings of the key are the same key, kept the same way.
        let five =
            r#"{"@odata.context":"x","value":[{"$serde_json::private::Raw\u0056alue":"5"}]}"#;
        let page = parse_page(five.as_bytes(), false).unwrap();
        assert_eq!(page.objects[0][RAW_VALUE_KEY], "5");
        for keep in [false, true] {
            crate::fuzz::as_serde_json_does(body.as_bytes(), keep);
            crate::fuzz::as_serde_json_does(five.as_bytes(), keep);
        }
    }

    #[test]
    fn an_envelope_member_is_held_to_the_recursion_limit_on_a_small_stack() {
        // Each level is 100 arrays deep around a `raw_value` object whose string is the next
        // level: `Value` with `raw_value` would re-parse each string with a fresh limit,
        // thousands of levels deep under 1 MiB. The decoder reads the string as a string.
        let mut level = "1".to_owned();
        let mut levels = 0;
        while level.len() < 900 << 10 {
            let inner = serde_json::to_string(&level).unwrap();
            level = format!(
                "{}{{\"{RAW_VALUE_KEY}\":{inner}}}{}",
                "[".repeat(100),
                "]".repeat(100)
            );
            levels += 1;
        }
        assert!(levels >= 15, "{levels}");
        let body = format!(r#"{{"@odata.context":"x","value":[],"@adminapi.errors":[{level}]}}"#);
        // A tokio worker's stack.
        let answer = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse_answer(body.as_bytes(), false))
            .unwrap()
            .join()
            .expect("no stack overflow")
            .unwrap();
        let mut error = &answer.page.errors[0];
        for _ in 0..100 {
            error = &error[0];
        }
        assert!(
            error[RAW_VALUE_KEY].is_string(),
            "{:.200}",
            error.to_string()
        );
        // A member nested past the limit is refused, as a result is.
        let deep = format!(
            r#"{{"@odata.context":"x","value":[],"@adminapi.errors":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let refused = parse_page(deep.as_bytes(), false).unwrap_err();
        assert!(refused.contains("recursion limit"), "{refused}");
    }

    #[test]
    fn past_the_recursion_limit_a_body_is_refused_even_inside_an_annotation() {
        let deep = format!(
            r#"{{"value":[{{"a@odata.type":{}1{}}}],"@odata.context":"x"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let refused = parse_page(deep.as_bytes(), false).unwrap_err();
        assert!(refused.contains("recursion limit"), "{refused}");
    }

    #[test]
    fn non_envelopes_are_refused() {
        for body in [
            "<html/>",
            "[]",
            r#"{"value":{}}"#,
            r#"{"value":[1]}"#,
            "",
            "{}",
            r#"{"values":[]}"#,
            r#"{"error":{"code":"X","message":"broken"}}"#,
            r#"{"@odata.context":"x","error":{"message":"broken"}}"#,
        ] {
            assert!(parse_page(body.as_bytes(), false).is_err(), "{body}");
        }
    }

    #[test]
    fn an_answer_without_value_is_zero_objects_and_its_warnings() {
        let only_warnings = json!({
            "@odata.context": "https://outlook.office.com/adminapi/beta/x/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)", "@adminapi.warnings": ["w1"]
        })
        .to_string();
        for body in ["", " \r\n", only_warnings.as_str()] {
            let answer = parse_answer(body.as_bytes(), false).unwrap();
            assert!(answer.page.objects.is_empty(), "{body}");
            assert!(answer.confirmation.is_none());
        }
        assert_eq!(
            parse_page(only_warnings.as_bytes(), false)
                .unwrap()
                .warnings,
            ["w1"]
        );
        let prompt = r#"{"@adminapi.confirmationmessage":"Are you sure?","value":[]}"#;
        let answer = parse_answer(prompt.as_bytes(), false).unwrap();
        assert_eq!(answer.confirmation.as_deref(), Some("Are you sure?"));
    }

    #[test]
    fn error_text_never_carries_a_bearer_token() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2lnbmF0dXJl";
        let echoed = format!("Authorization: Bearer {jwt}");
        let json =
            json!({"error": {"code": "BadRequest", "message": format!("Bad request: {echoed}")}});
        let html = format!("<html><pre>{echoed}</pre></html>");
        for body in [json.to_string(), html, format!("token={jwt}&x=1")] {
            let error = parse_error("Get-Mailbox", 502, body.as_bytes(), |_| None);
            assert!(!error.message.contains("eyJ"), "{}", error.message);
            assert!(error.message.contains("[redacted]"), "{}", error.message);
        }
        // Opaque tokens after `Bearer` go too; cut-off JWTs go; ordinary words stay.
        for (text, expected) in [
            (
                "header: bearer 0123456789abcdef0123+/=",
                "header: bearer [redacted]",
            ),
            ("cut: eyJhbGciOiJSUzI1Ni", "cut: [redacted]"),
            (
                "The operation couldn't be performed because object 'eyJohn' couldn't be found.",
                "The operation couldn't be performed because object 'eyJohn' couldn't be found.",
            ),
            ("Use a Bearer token.", "Use a Bearer token."),
            ("héllo Bearer ✓", "héllo Bearer ✓"),
            // `Basic` and base64 user:password, in any case; a word after Basic stays.
            (
                "Authorization: Basic Q09OVE9TT1xhZG1pbjpwdw==",
                "Authorization: Basic [redacted]",
            ),
            (
                "authorization: BASIC  dXNlcjpwYXNzd29yZA",
                "authorization: BASIC  [redacted]",
            ),
            ("basic aBcdefgh!", "basic [redacted]!"),
            (
                "Basic authentication is disabled.",
                "Basic authentication is disabled.",
            ),
            ("Use Basic Authentication.", "Use Basic Authentication."),
            ("Basic dXNlcg short", "Basic dXNlcg short"),
            // A lower-case word that is base64 of `user:password` goes.
            ("Basic dxnlcjpw", "Basic [redacted]"),
        ] {
            assert_eq!(redact_credentials(text), expected);
        }
    }

    #[test]
    fn the_recorded_error_body_splits_into_id_class_and_message() {
        let body = json!({"error":{"code":"NotFound","message":"Error executing cmdlet","details":[{"code":"Client","target":"","message":"Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed because object 'x' couldn't be found."}],"innererror":{"message":"Error executing cmdlet","type":"Microsoft.Exchange.Admin.OData.Core.ODataServiceException"}}});
        let error = parse_error("Get-Mailbox", 404, body.to_string().as_bytes(), |h| {
            (h == "request-id").then(|| "r-1".to_owned())
        });
        assert_eq!(error.error_id.as_deref(), Some("Ex6F9304"));
        assert_eq!(
            error.exception_type.as_deref(),
            Some("ManagementObjectNotFoundException")
        );
        assert!(
            error
                .message
                .starts_with("The operation couldn't be performed")
        );
        assert_eq!(error.code, "NotFound");
        assert_eq!(error.request_id.as_deref(), Some("r-1"));
        assert_eq!(error.target, None);
        let plain = parse_error("Get-Mailbox", 401, br#"{"error":{"code":"Unauthorized","message":"User is not allowed to call Get-Mailbox"}}"#, |_| None);
        assert_eq!(plain.message, "User is not allowed to call Get-Mailbox");
        let html = parse_error("Get-Mailbox", 502, b"<html>Bad gateway</html>", |_| None);
        assert!(
            html.message.contains("not Exchange's error JSON"),
            "{}",
            html.message
        );
    }

    #[test]
    fn header_ids_never_carry_a_bearer_token() {
        let echoed = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2lnbmF0dXJl";
        let error = parse_error("Get-Mailbox", 500, b"{}", |_| Some(echoed.to_owned()));
        for id in [error.request_id.unwrap(), error.server.unwrap()] {
            assert!(!id.contains("eyJhbGci"), "{id}");
        }
    }
}
