//! PowerShell serialization, "CLIXML" (MS-PSRP 2.2.5): primitives (`<S>`, `<I32>`, `<B>`,
//! `<DT>`, `<G>`, `<BA>`, `<Nil/>`, ...) and complex objects (`<Obj RefId>` with `<TN>`/`<TNRef>`
//! type names, `<ToString>`, adapted `<Props>`, extended `<MS>`, `<LST>`/`<IE>`/`<STK>`/`<QUE>`
//! lists and `<DCT>` dictionaries, `<Ref RefId>` back-references), and how those map to the JSON
//! objects the REST transport returns, so results look the same whichever transport ran them.
//!
//! JSON mapping ([`to_json`] / [`from_json`]): `Nil` ↔ null, `B` ↔ bool, integers ↔ numbers
//! (`I32` when it fits, else `I64`), `Db` ↔ non-integral numbers, `S` ↔ string; an object with
//! properties ↔ a JSON object of its extended then adapted properties (then those of a wrapped
//! base object, as PowerShell writes provider items); a list ↔ an array; a
//! dictionary ↔ an object keyed by the keys' text; an enum (`System.Enum` among its type names)
//! → its `ToString`; any other object wrapping a primitive → that primitive. Dates, GUIDs,
//! versions, URIs, chars and the other primitives become their XML text as strings; byte arrays
//! become base64 strings. [`from_json`] of [`to_json`] is the identity on JSON built from
//! null, bools, i64/f64 numbers, strings, arrays and objects.
//!
//! Refused: nesting deeper than [`MAX_DEPTH`], a `<Ref>` to an object not yet seen, a
//! `<TNRef>` to an unknown list, and text that is not one value.
//!
//! Bounded: `<Ref>` and `<TNRef>` copy what they point to, so a small document could expand
//! without limit. The expansion is counted before anything is copied: at most [`MAX_VALUES`]
//! values (type names included), at most [`MAX_EXPANDED_BYTES`] (or the input's length, if
//! larger) of text, byte arrays and names, and at most [`MAX_TYPE_NAMES`] names per `<TN>`.
//! The copies kept for `<Ref>` and `<TNRef>` count too, so these bound the memory a document
//! costs (besides its XML tree, bounded by the parser's element limit).

use crate::error::{PsrpError, Result};
use crate::xml::{self, Document, Element, escape_attr, escape_text, excerpt};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::HashMap;
use std::fmt::Write as _;
use uuid::Uuid;

/// Deepest nesting of objects [`deserialize`] accepts.
pub const MAX_DEPTH: usize = 64;

/// A deserialized value.
#[derive(Debug, Clone, PartialEq)]
pub enum PsValue {
    /// `<Nil/>`.
    Null,
    /// `<B>`.
    Bool(bool),
    /// `<By>` (unsigned byte).
    Byte(u8),
    /// `<I32>`.
    I32(i32),
    /// `<U32>`.
    U32(u32),
    /// `<I64>`.
    I64(i64),
    /// `<U64>`.
    U64(u64),
    /// `<Db>`.
    Double(f64),
    /// `<S>`, with `_xHHHH_` escapes decoded.
    String(String),
    /// `<C>`: a UTF-16 code unit.
    Char(u16),
    /// `<DT>`: the xs:dateTime text as sent.
    DateTime(String),
    /// `<TS>`: the xs:duration text as sent.
    TimeSpan(String),
    /// `<G>`.
    Guid(Uuid),
    /// `<BA>`: base64 on the wire.
    Bytes(Vec<u8>),
    /// `<Version>`.
    Version(String),
    /// `<URI>`.
    Uri(String),
    /// `<SS>`: an encrypted secure string, kept opaque (this codec never decrypts).
    SecureString(Vec<u8>),
    /// Any other primitive element (`<D>`, `<SB>`, `<Sg>`, `<XD>`, ...): its tag and text.
    Other {
        /// The element name.
        tag: String,
        /// Its text.
        text: String,
    },
    /// `<Obj>`.
    Object(Box<PsObject>),
}

/// A complex object (`<Obj>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PsObject {
    /// `<TN>` type names, most derived first (empty when the object has none).
    pub type_names: Vec<String>,
    /// `<ToString>`.
    pub to_string: Option<String>,
    /// The primitive the object wraps (an enum's number, a boxed string), if any.
    pub base: Option<PsValue>,
    /// `<Props>`: adapted properties, in order.
    pub adapted: Vec<(String, PsValue)>,
    /// `<MS>`: extended (member set) properties, in order.
    pub extended: Vec<(String, PsValue)>,
    /// `<LST>`, `<IE>`, `<STK>` or `<QUE>` items.
    pub list: Option<Vec<PsValue>>,
    /// `<DCT>` entries (`<En><Key>`/`<Value>`).
    pub dict: Option<Vec<(PsValue, PsValue)>>,
}

impl PsObject {
    /// A property by name (case-insensitive): extended first, then adapted.
    pub fn property(&self, name: &str) -> Option<&PsValue> {
        self.extended
            .iter()
            .chain(self.adapted.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// One value as CLIXML: a single element (`<Obj RefId="0">…</Obj>`, `<S>…</S>`, ...), without an
/// `<Objs>` wrapper, as PSRP message bodies carry it. RefIds are numbered from 0 and repeated
/// type-name lists are written once and referenced with `<TNRef>`.
pub fn serialize(value: &PsValue) -> String {
    let mut w = Writer::default();
    w.value(None, value);
    w.out
}

/// Like [`serialize`], with `name` as the element's `N` attribute (for a property).
pub fn serialize_named(name: &str, value: &PsValue) -> String {
    let mut w = Writer::default();
    w.value(Some(name), value);
    w.out
}

/// Several values as one `<Objs>` document sharing RefIds (what `Export-Clixml` writes).
pub fn serialize_all(values: &[PsValue]) -> String {
    let mut w = Writer::default();
    w.out.push_str(
        r#"<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">"#,
    );
    for v in values {
        w.value(None, v);
    }
    w.out.push_str("</Objs>");
    w.out
}

/// One value from CLIXML: a single element, optionally after a BOM and an XML declaration, or
/// an `<Objs>` document holding exactly one.
pub fn deserialize(text: &str) -> Result<PsValue> {
    let doc = xml::parse(text, MAX_XML_DEPTH)?;
    let root = doc.root();
    let mut r = ReaderState::for_document(&doc, text.len());
    if root.name == "Objs" {
        if root.has_text() {
            return Err(PsrpError::Clixml("text inside <Objs>".into()));
        }
        let mut items = root.elements();
        match (items.next(), items.next()) {
            (Some(one), None) => r.value(one, 0),
            (None, _) => Err(PsrpError::Clixml("<Objs> holds no value".into())),
            (Some(_), Some(_)) => Err(PsrpError::Clixml("<Objs> holds more than one value".into())),
        }
    } else {
        r.value(root, 0)
    }
}

/// Every value of an `<Objs>` document (the `#< CLIXML` error streams, test fixtures). The
/// `#< CLIXML` line, when present, is skipped; a single bare value is one value.
pub fn deserialize_all(text: &str) -> Result<Vec<PsValue>> {
    let text = xml::strip_bom(text);
    let text = match text.trim_start().strip_prefix("#< CLIXML") {
        Some(rest) => rest,
        None => text,
    };
    let doc = xml::parse(text, MAX_XML_DEPTH)?;
    let root = doc.root();
    let mut r = ReaderState::for_document(&doc, text.len());
    if root.name == "Objs" {
        if root.has_text() {
            return Err(PsrpError::Clixml("text inside <Objs>".into()));
        }
        root.elements().map(|e| r.value(e, 0)).collect()
    } else {
        Ok(vec![r.value(root, 0)?])
    }
}

/// The JSON a value stands for (see the module docs).
pub fn to_json(value: &PsValue) -> serde_json::Value {
    into_json(value.clone())
}

/// Like [`to_json`], taking the value: its strings move into the JSON instead of being copied
/// (what a client does with each output object it received).
pub fn into_json(value: PsValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        PsValue::Null => J::Null,
        PsValue::Bool(b) => J::Bool(b),
        PsValue::Byte(n) => J::from(n),
        PsValue::I32(n) => J::from(n),
        PsValue::U32(n) => J::from(n),
        PsValue::I64(n) => J::from(n),
        PsValue::U64(n) => J::from(n),
        PsValue::Double(f) => match serde_json::Number::from_f64(f) {
            Some(n) => J::Number(n),
            None => J::String(format_double(f)),
        },
        PsValue::String(s)
        | PsValue::DateTime(s)
        | PsValue::TimeSpan(s)
        | PsValue::Version(s)
        | PsValue::Uri(s) => J::String(s),
        PsValue::Char(c) => J::String(c.to_string()),
        PsValue::Guid(g) => J::String(g.hyphenated().to_string()),
        PsValue::Bytes(b) | PsValue::SecureString(b) => J::String(B64.encode(b)),
        PsValue::Other { text, .. } => J::String(text),
        PsValue::Object(o) => object_into_json(*o),
    }
}

fn object_into_json(mut o: PsObject) -> serde_json::Value {
    use serde_json::Value as J;
    if o.type_names.iter().any(|t| t == "System.Enum")
        && let Some(s) = o.to_string.take()
    {
        return J::String(s);
    }
    if let Some(entries) = o.dict {
        let mut map = serde_json::Map::new();
        for (k, v) in entries {
            let key = match into_json(k) {
                J::String(s) => s,
                other => other.to_string(),
            };
            map.entry(key).or_insert_with(|| into_json(v));
        }
        return J::Object(map);
    }
    if let Some(items) = o.list {
        return J::Array(items.into_iter().map(into_json).collect());
    }
    if !o.extended.is_empty() || !o.adapted.is_empty() {
        let mut map = serde_json::Map::new();
        for (k, v) in o.extended.into_iter().chain(o.adapted) {
            map.entry(k).or_insert_with(|| into_json(v));
        }
        // A wrapped base object (PowerShell writes provider items this way) lends its
        // properties too, after the wrapper's own.
        if let Some(J::Object(inner)) = o.base.map(into_json) {
            for (k, v) in inner {
                map.entry(k).or_insert(v);
            }
        }
        return J::Object(map);
    }
    if let Some(base) = o.base {
        return into_json(base);
    }
    match o.to_string {
        Some(s) => J::String(s),
        None => J::Object(serde_json::Map::new()),
    }
}

/// The value a JSON value becomes (see the module docs): objects become `<Obj>` with `<MS>`
/// properties and no type names, arrays `<Obj>` with `<LST>` and type name `System.Object[]`.
pub fn from_json(value: &serde_json::Value) -> PsValue {
    from_json_value(value.clone())
}

/// Like [`from_json`], taking the value: its strings move into the CLIXML value.
pub fn from_json_value(value: serde_json::Value) -> PsValue {
    use serde_json::Value as J;
    match value {
        J::Null => PsValue::Null,
        J::Bool(b) => PsValue::Bool(b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                match i32::try_from(i) {
                    Ok(small) => PsValue::I32(small),
                    Err(_) => PsValue::I64(i),
                }
            } else if let Some(u) = n.as_u64() {
                PsValue::U64(u)
            } else {
                PsValue::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => PsValue::String(s),
        J::Array(items) => PsValue::Object(Box::new(PsObject {
            type_names: vec![
                "System.Object[]".into(),
                "System.Array".into(),
                "System.Object".into(),
            ],
            list: Some(items.into_iter().map(from_json_value).collect()),
            ..PsObject::default()
        })),
        J::Object(map) => PsValue::Object(Box::new(PsObject {
            extended: map
                .into_iter()
                .map(|(k, v)| (k, from_json_value(v)))
                .collect(),
            ..PsObject::default()
        })),
    }
}

/// `_xHHHH_` escaping of a string for `<S>` and names (MS-PSRP 2.2.5.3.2): control characters,
/// lone surrogates and a literal `_x` sequence are escaped.
///
/// A Rust string holds no lone surrogates; besides C0/C1 controls, U+FFFE and U+FFFF (not XML
/// characters) are escaped, and `_` before `x` or `X` (PowerShell matches both) becomes `_x005F_`.
pub fn escape_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let code = c as u32;
        if c == '_' && matches!(chars.peek(), Some('x' | 'X')) {
            out.push_str("_x005F_");
        } else if code < 0x20 || (0x7f..=0x9f).contains(&code) || code == 0xfffe || code == 0xffff {
            out.push_str(&format!("_x{code:04X}_"));
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`escape_string`]. Escaped surrogate pairs become their character; a lone
/// escaped surrogate becomes U+FFFD.
pub fn unescape_string(text: &str) -> String {
    if !text.contains('_') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if let Some(unit) = escape_at(bytes, i) {
            out.push_str(&text[copied..i]);
            i += 7;
            if (0xd800..0xdc00).contains(&unit) {
                if let Some(low) = escape_at(bytes, i).filter(|l| (0xdc00..0xe000).contains(l)) {
                    let c =
                        0x10000 + ((u32::from(unit) - 0xd800) << 10) + (u32::from(low) - 0xdc00);
                    out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                    i += 7;
                } else {
                    out.push('\u{fffd}');
                }
            } else {
                out.push(char::from_u32(u32::from(unit)).unwrap_or('\u{fffd}'));
            }
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The code unit of an `_xHHHH_` escape starting at byte `i`, if there is one.
fn escape_at(bytes: &[u8], i: usize) -> Option<u16> {
    let e = bytes.get(i..i + 7)?;
    if e[0] != b'_' || !(e[1] == b'x' || e[1] == b'X') || e[6] != b'_' {
        return None;
    }
    let hex = std::str::from_utf8(&e[2..6]).ok()?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

// ---- helpers for callers -----------------------------------------------------------------

impl PsValue {
    /// A string (`S`) value's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PsValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer value as i64 (`By`, `I32`, `U32`, `I64`, a `U64` that fits, or an object
    /// wrapping one, such as an enum).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PsValue::Byte(n) => Some(i64::from(*n)),
            PsValue::I32(n) => Some(i64::from(*n)),
            PsValue::U32(n) => Some(i64::from(*n)),
            PsValue::I64(n) => Some(*n),
            PsValue::U64(n) => i64::try_from(*n).ok(),
            PsValue::Object(o) => o.base.as_ref().and_then(PsValue::as_i64),
            _ => None,
        }
    }

    /// A `B` value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PsValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An `Obj` value.
    pub fn as_object(&self) -> Option<&PsObject> {
        match self {
            PsValue::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the value is `Nil`.
    pub fn is_null(&self) -> bool {
        matches!(self, PsValue::Null)
    }

    /// The value as display text: strings and other text-bearing primitives as is, numbers
    /// and bools as PowerShell prints them, an object's `ToString`; None for nil.
    pub fn display_text(&self) -> Option<String> {
        match self {
            PsValue::Null => None,
            PsValue::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
            PsValue::Object(o) => o
                .to_string
                .clone()
                .or_else(|| o.base.as_ref().and_then(PsValue::display_text)),
            PsValue::Double(f) => Some(format_double(*f)),
            other => match to_json(other) {
                serde_json::Value::String(s) => Some(s),
                j => Some(j.to_string()),
            },
        }
    }
}

impl PsObject {
    /// An enum value as PowerShell serializes it: its type names down to `System.Object`, its
    /// name as `ToString`, its number as an `I32`.
    pub fn enum_value(type_name: &str, name: &str, value: i32) -> Self {
        Self {
            type_names: vec![
                type_name.to_owned(),
                "System.Enum".into(),
                "System.ValueType".into(),
                "System.Object".into(),
            ],
            to_string: Some(name.to_owned()),
            base: Some(PsValue::I32(value)),
            ..Self::default()
        }
    }

    /// An object with these extended (`<MS>`) properties and no type names.
    pub fn with_extended(extended: Vec<(String, PsValue)>) -> Self {
        Self {
            extended,
            ..Self::default()
        }
    }
}

impl From<PsObject> for PsValue {
    fn from(o: PsObject) -> Self {
        PsValue::Object(Box::new(o))
    }
}

impl From<&str> for PsValue {
    fn from(s: &str) -> Self {
        PsValue::String(s.to_owned())
    }
}

// ---- writing -----------------------------------------------------------------------------

/// Doubles as .NET's round-trip format would parse them back exactly.
fn format_double(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        // Rust's shortest round-trip form; .NET parses it (`1E+300` and `1e300` alike).
        let s = format!("{f:?}");
        s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
    }
}

fn parse_double(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" | "∞" => Some(f64::INFINITY),
        "-Infinity" | "-∞" => Some(f64::NEG_INFINITY),
        t if t.eq_ignore_ascii_case("nan") || t.to_ascii_lowercase().contains("inf") => None,
        t => t.parse().ok(),
    }
}

#[derive(Default)]
struct Writer {
    out: String,
    next_ref: u32,
    type_lists: Vec<Vec<String>>,
}

/// Tags [`PsValue::Other`] may carry (the primitives without a variant of their own).
const OTHER_TAGS: &[&str] = &["SB", "U16", "I16", "Sg", "D", "XD", "SBK", "PR"];

/// Whether `text` needs neither `_xHHHH_` nor XML escaping, in text or in an attribute:
/// printable ASCII without `_` or the XML specials, what almost every name and value is.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'_' | b'<' | b'>' | b'&' | b'"'))
}

impl Writer {
    fn open(&mut self, tag: &str, name: Option<&str>) {
        self.out.push('<');
        self.out.push_str(tag);
        if let Some(n) = name {
            self.out.push_str(" N=\"");
            if is_plain(n) {
                self.out.push_str(n);
            } else {
                escape_attr(&escape_string(n), &mut self.out);
            }
            self.out.push('"');
        }
    }

    /// A string leaf (`S`, `URI`, `T`): `_xHHHH_` escaped, then XML escaped.
    fn string_leaf(&mut self, tag: &str, name: Option<&str>, text: &str) {
        if is_plain(text) {
            self.leaf(tag, name, text);
        } else {
            self.leaf(tag, name, &escape_string(text));
        }
    }

    /// A leaf whose text is a number or another value that needs no escaping.
    fn display_leaf(&mut self, tag: &str, name: Option<&str>, value: impl std::fmt::Display) {
        self.open(tag, name);
        let _ = write!(self.out, ">{value}</{tag}>");
    }

    fn leaf(&mut self, tag: &str, name: Option<&str>, text: &str) {
        self.open(tag, name);
        if text.is_empty() {
            self.out.push_str(" />");
            return;
        }
        self.out.push('>');
        escape_text(text, &mut self.out);
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }

    fn value(&mut self, name: Option<&str>, value: &PsValue) {
        match value {
            PsValue::Null => self.leaf("Nil", name, ""),
            PsValue::Bool(b) => self.leaf("B", name, if *b { "true" } else { "false" }),
            PsValue::Byte(n) => self.display_leaf("By", name, n),
            PsValue::I32(n) => self.display_leaf("I32", name, n),
            PsValue::U32(n) => self.display_leaf("U32", name, n),
            PsValue::I64(n) => self.display_leaf("I64", name, n),
            PsValue::U64(n) => self.display_leaf("U64", name, n),
            PsValue::Double(f) => self.leaf("Db", name, &format_double(*f)),
            PsValue::String(s) => self.string_leaf("S", name, s),
            PsValue::Char(c) => self.leaf("C", name, &c.to_string()),
            PsValue::DateTime(s) => self.leaf("DT", name, s),
            PsValue::TimeSpan(s) => self.leaf("TS", name, s),
            PsValue::Guid(g) => self.display_leaf("G", name, g.hyphenated()),
            PsValue::Bytes(b) => self.leaf("BA", name, &B64.encode(b)),
            PsValue::Version(s) => self.leaf("Version", name, s),
            PsValue::Uri(s) => self.string_leaf("URI", name, s),
            PsValue::SecureString(b) => self.leaf("SS", name, &B64.encode(b)),
            PsValue::Other { tag, text } => {
                // Only a known primitive tag goes out as an element name; anything else would
                // not be CLIXML (or not XML), so it degrades to a string.
                match OTHER_TAGS.iter().find(|t| **t == tag) {
                    Some(t) => self.leaf(t, name, text),
                    None => self.string_leaf("S", name, text),
                }
            }
            PsValue::Object(o) => self.object(name, o),
        }
    }

    fn object(&mut self, name: Option<&str>, o: &PsObject) {
        self.open("Obj", name);
        let id = self.next_ref;
        self.next_ref += 1;
        let _ = write!(self.out, " RefId=\"{id}\">");
        if !o.type_names.is_empty() {
            match self.type_lists.iter().position(|t| *t == o.type_names) {
                Some(i) => {
                    let _ = write!(self.out, "<TNRef RefId=\"{i}\" />");
                }
                None => {
                    let i = self.type_lists.len();
                    self.type_lists.push(o.type_names.clone());
                    let _ = write!(self.out, "<TN RefId=\"{i}\">");
                    for t in &o.type_names {
                        self.string_leaf("T", None, t);
                    }
                    self.out.push_str("</TN>");
                }
            }
        }
        if let Some(s) = &o.to_string {
            self.out.push_str("<ToString>");
            if is_plain(s) {
                self.out.push_str(s);
            } else {
                escape_text(&escape_string(s), &mut self.out);
            }
            self.out.push_str("</ToString>");
        }
        if let Some(base) = &o.base {
            self.value(None, base);
        }
        if let Some(items) = &o.list {
            if items.is_empty() {
                self.out.push_str("<LST />");
            } else {
                self.out.push_str("<LST>");
                for item in items {
                    self.value(None, item);
                }
                self.out.push_str("</LST>");
            }
        }
        if let Some(entries) = &o.dict {
            if entries.is_empty() {
                self.out.push_str("<DCT />");
            } else {
                self.out.push_str("<DCT>");
                for (k, v) in entries {
                    self.out.push_str("<En>");
                    self.value(Some("Key"), k);
                    self.value(Some("Value"), v);
                    self.out.push_str("</En>");
                }
                self.out.push_str("</DCT>");
            }
        }
        self.properties("Props", &o.adapted);
        self.properties("MS", &o.extended);
        self.out.push_str("</Obj>");
    }

    fn properties(&mut self, tag: &str, props: &[(String, PsValue)]) {
        if props.is_empty() {
            return;
        }
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        for (n, v) in props {
            self.value(Some(n), v);
        }
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }
}

// ---- reading -----------------------------------------------------------------------------

/// XML element nesting allowed while parsing: a dictionary entry costs three levels per object
/// (`Obj`/`DCT`/`En`), plus the `Objs` wrapper.
const MAX_XML_DEPTH: usize = 3 * MAX_DEPTH + 8;

/// How many values one document may expand to, `<Ref>` copies included: refs to refs would
/// otherwise grow exponentially. A PSRP message carries one object (a mailbox is a few
/// thousand values), so this is generous.
pub const MAX_VALUES: usize = 250_000;

/// How many bytes of text (strings and other text primitives, `ToString`), byte arrays and
/// names (properties, types) one document may expand to, `<Ref>` and `<TNRef>` copies
/// included, when the input is shorter (without copies a document holds no more than its own
/// length, so the limit is the larger of the two). [`MAX_VALUES`] alone does not bound memory:
/// one value may be a string of megabytes, and 80k `<Ref>`s to a 1 MiB string in a 2.5 MB
/// document would otherwise expand to 80 GiB. 64 MiB is the client's message limit
/// (`warden-exchange`'s `MAX_MESSAGE`) and far over any real object.
pub const MAX_EXPANDED_BYTES: usize = 64 << 20;

/// Most type names one `<TN>` list may hold. Real hierarchies (`Deserialized.` names
/// included) have about ten; every `<TNRef>` copies the list, so it must be small.
pub const MAX_TYPE_NAMES: usize = 64;

/// A finished object some `<Ref>` points to, with what a copy of it costs.
struct Kept {
    value: PsValue,
    /// Values (type names included) in it, itself included.
    values: usize,
    /// Bytes of text, byte arrays and names in it.
    bytes: usize,
    /// Objects nested in it, itself included.
    depth: usize,
}

#[derive(Default)]
struct ReaderState {
    /// RefIds some `<Ref>` of the document points to: only those objects are kept.
    referenced: std::collections::HashSet<String>,
    /// Finished objects by RefId.
    objects: HashMap<String, Kept>,
    type_lists: HashMap<String, (Vec<String>, usize)>,
    /// Values (type names included) so far.
    values: usize,
    /// Bytes of text, byte arrays and names so far, and the most allowed.
    bytes: usize,
    max_bytes: usize,
    /// Of `values` and `bytes`, what the kept copies (`objects`, `type_lists`) cost: not part of
    /// what a `<Ref>` copies.
    kept_values: usize,
    kept_bytes: usize,
    /// The deepest object nesting reached so far inside the object being read.
    deepest: usize,
}

/// Bytes of text or binary data a leaf value holds.
fn payload_len(v: &PsValue) -> usize {
    match v {
        PsValue::String(s)
        | PsValue::DateTime(s)
        | PsValue::TimeSpan(s)
        | PsValue::Version(s)
        | PsValue::Uri(s) => s.len(),
        PsValue::Bytes(b) | PsValue::SecureString(b) => b.len(),
        PsValue::Other { tag, text } => tag.len() + text.len(),
        _ => 0,
    }
}

impl ReaderState {
    fn for_document(doc: &Document, input_len: usize) -> Self {
        let mut state = Self {
            max_bytes: MAX_EXPANDED_BYTES.max(input_len),
            ..Self::default()
        };
        for e in doc.elements() {
            if e.name == "Ref"
                && let Some(id) = e.attr("RefId")
            {
                state.referenced.insert(id.to_owned());
            }
        }
        state
    }

    fn count(&mut self, n: usize) -> Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            return Err(PsrpError::TooLarge(format!(
                "CLIXML over {MAX_VALUES} values (MAX_VALUES)"
            )));
        }
        Ok(())
    }

    /// Counts `n` more bytes of text, byte arrays or names.
    fn count_bytes(&mut self, n: usize) -> Result<()> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max_bytes {
            return Err(PsrpError::TooLarge(format!(
                "CLIXML expanding to over {} bytes of text (MAX_EXPANDED_BYTES)",
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// Counts a list of type names (values and bytes) before it is kept or copied.
    fn count_names(&mut self, names: usize, bytes: usize) -> Result<()> {
        self.count(names)?;
        self.count_bytes(bytes)
    }

    /// Counts a kept copy of `values` values and `bytes` bytes.
    fn keep(&mut self, values: usize, bytes: usize) -> Result<()> {
        self.count_names(values, bytes)?;
        self.kept_values += values;
        self.kept_bytes += bytes;
        Ok(())
    }

    /// A value element; `depth` is the number of objects around it.
    fn value(&mut self, e: Element, depth: usize) -> Result<PsValue> {
        let text = || e.text();
        let bad = |what: &str| {
            PsrpError::Clixml(format!(
                "<{}> holds {what}: {}",
                e.name,
                excerpt(e.text().trim())
            ))
        };
        if e.name != "Obj" && e.elements().next().is_some() {
            return Err(PsrpError::Clixml(format!(
                "<{}> has child elements",
                excerpt(&e.name)
            )));
        }
        self.count(1)?;
        let v = match &*e.name {
            "Obj" => return self.object(e, depth),
            "Ref" => {
                let id = e
                    .attr("RefId")
                    .ok_or_else(|| PsrpError::Clixml("<Ref> without RefId".into()))?;
                let Some(kept) = self.objects.get(id) else {
                    return Err(PsrpError::Clixml(format!(
                        "<Ref> to unknown object {}",
                        excerpt(id)
                    )));
                };
                let (values, bytes, d) = (kept.values, kept.bytes, kept.depth);
                if depth + d > MAX_DEPTH {
                    return Err(PsrpError::Clixml(format!(
                        "objects nested deeper than {MAX_DEPTH}"
                    )));
                }
                self.deepest = self.deepest.max(depth + d);
                // Counted before the copy is made.
                self.count(values)?;
                self.count_bytes(bytes)?;
                match self.objects.get(id) {
                    Some(kept) => kept.value.clone(),
                    None => PsValue::Null,
                }
            }
            "Nil" => PsValue::Null,
            "B" => match text().trim() {
                "true" | "1" => PsValue::Bool(true),
                "false" | "0" => PsValue::Bool(false),
                _ => return Err(bad("no boolean")),
            },
            "By" => PsValue::Byte(text().trim().parse().map_err(|_| bad("no byte"))?),
            "I32" => PsValue::I32(text().trim().parse().map_err(|_| bad("no Int32"))?),
            "U32" => PsValue::U32(text().trim().parse().map_err(|_| bad("no UInt32"))?),
            "I64" => PsValue::I64(text().trim().parse().map_err(|_| bad("no Int64"))?),
            "U64" => PsValue::U64(text().trim().parse().map_err(|_| bad("no UInt64"))?),
            "Db" => PsValue::Double(parse_double(text().trim()).ok_or_else(|| bad("no Double"))?),
            "C" => PsValue::Char(text().trim().parse().map_err(|_| bad("no Char"))?),
            "S" => PsValue::String(unescape_string(&text())),
            "URI" => PsValue::Uri(unescape_string(&text())),
            "DT" => PsValue::DateTime(text().into_owned()),
            "TS" => PsValue::TimeSpan(text().into_owned()),
            "Version" => PsValue::Version(text().into_owned()),
            "G" => PsValue::Guid(Uuid::parse_str(text().trim()).map_err(|_| bad("no GUID"))?),
            "BA" => PsValue::Bytes(decode_b64(&text()).map_err(|_| bad("no base64"))?),
            "SS" => PsValue::SecureString(decode_b64(&text()).map_err(|_| bad("no base64"))?),
            tag => match OTHER_TAGS.iter().find(|t| **t == tag) {
                Some(t) => PsValue::Other {
                    tag: (*t).to_owned(),
                    text: text().into_owned(),
                },
                None => {
                    return Err(PsrpError::Clixml(format!(
                        "<{}> is not a value",
                        excerpt(tag)
                    )));
                }
            },
        };
        self.count_bytes(payload_len(&v))?;
        Ok(v)
    }

    fn object(&mut self, e: Element, depth: usize) -> Result<PsValue> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(PsrpError::Clixml(format!(
                "objects nested deeper than {MAX_DEPTH}"
            )));
        }
        if e.has_text() {
            return Err(PsrpError::Clixml("text directly inside <Obj>".into()));
        }
        // What this object costs, for the `<Ref>`s that copy it: its own value was counted by
        // the caller.
        let values_before = self.values - self.kept_values;
        let bytes_before = self.bytes - self.kept_bytes;
        let deepest_outside = std::mem::replace(&mut self.deepest, depth);
        let mut o = PsObject::default();
        for c in e.elements() {
            match &*c.name {
                "TN" => {
                    let mut names = Vec::new();
                    for t in c.elements().filter(|t| t.name == "T") {
                        if names.len() >= MAX_TYPE_NAMES {
                            return Err(PsrpError::TooLarge(format!(
                                "<TN> over {MAX_TYPE_NAMES} type names (MAX_TYPE_NAMES)"
                            )));
                        }
                        names.push(unescape_string(&t.text()));
                    }
                    let bytes: usize = names.iter().map(String::len).sum();
                    self.count_names(names.len(), bytes)?;
                    if let Some(id) = c.attr("RefId") {
                        // The kept list costs as much again.
                        self.keep(names.len(), bytes)?;
                        self.type_lists
                            .insert(id.to_owned(), (names.clone(), bytes));
                    }
                    o.type_names = names;
                }
                "TNRef" => {
                    let id = c.attr("RefId").unwrap_or_default();
                    let Some((names, bytes)) = self.type_lists.get(id) else {
                        return Err(PsrpError::Clixml(format!(
                            "<TNRef> to unknown list {}",
                            excerpt(id)
                        )));
                    };
                    let (count, bytes) = (names.len(), *bytes);
                    // Counted before the copy is made.
                    self.count_names(count, bytes)?;
                    if let Some((names, _)) = self.type_lists.get(id) {
                        o.type_names = names.clone();
                    }
                }
                "ToString" => {
                    let s = unescape_string(&c.text());
                    self.count_bytes(s.len())?;
                    o.to_string = Some(s);
                }
                "Props" => o.adapted.extend(self.properties(c, depth)?),
                "MS" => o.extended.extend(self.properties(c, depth)?),
                "LST" | "IE" | "STK" | "QUE" => {
                    let mut items = Vec::with_capacity(c.child_count());
                    for item in c.elements() {
                        items.push(self.value(item, depth)?);
                    }
                    o.list.get_or_insert_with(Vec::new).extend(items);
                }
                "DCT" => {
                    let mut entries = Vec::new();
                    for en in c.elements() {
                        if en.name != "En" {
                            return Err(PsrpError::Clixml(format!(
                                "<{}> inside <DCT>",
                                excerpt(&en.name)
                            )));
                        }
                        let mut key = None;
                        let mut value = None;
                        for kv in en.elements() {
                            match kv.attr("N") {
                                Some("Key") => key = Some(self.value(kv, depth)?),
                                Some("Value") => value = Some(self.value(kv, depth)?),
                                _ => {}
                            }
                        }
                        match (key, value) {
                            (Some(k), Some(v)) => entries.push((k, v)),
                            _ => {
                                return Err(PsrpError::Clixml(
                                    "dictionary entry without Key or Value".into(),
                                ));
                            }
                        }
                    }
                    o.dict.get_or_insert_with(Vec::new).extend(entries);
                }
                _ => o.base = Some(self.value(c, depth)?),
            }
        }
        let v = PsValue::Object(Box::new(o));
        let inner_depth = self.deepest - (depth - 1);
        self.deepest = deepest_outside.max(self.deepest);
        if let Some(id) = e.attr("RefId").filter(|id| self.referenced.contains(*id)) {
            let values = self.values - self.kept_values - values_before + 1;
            let bytes = self.bytes - self.kept_bytes - bytes_before;
            // The kept copy costs as much again: nested referenced objects are each kept
            // whole, so without this 64 nested ones would hold a string 64 times.
            self.keep(values, bytes)?;
            let kept = Kept {
                value: v.clone(),
                values,
                bytes,
                depth: inner_depth,
            };
            self.objects.insert(id.to_owned(), kept);
        }
        Ok(v)
    }

    fn properties(&mut self, e: Element, depth: usize) -> Result<Vec<(String, PsValue)>> {
        let mut out = Vec::with_capacity(e.child_count());
        for p in e.elements() {
            let name = p.attr("N").ok_or_else(|| {
                PsrpError::Clixml(format!("<{}> property without N", excerpt(&p.name)))
            })?;
            let name = unescape_string(name);
            self.count_bytes(name.len())?;
            out.push((name, self.value(p, depth)?));
        }
        Ok(out)
    }
}

/// Base64 that may be wrapped (whitespace between the characters, as XML text often is):
/// decoded as it is first, the common case, and only when that fails without the whitespace.
pub(crate) fn decode_b64(text: &str) -> std::result::Result<Vec<u8>, base64::DecodeError> {
    let text = text.trim_ascii();
    if let Ok(bytes) = B64.decode(text) {
        return Ok(bytes);
    }
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    B64.decode(compact)
}

#[cfg(test)]
mod tests;
