//! PowerShell serialization, "CLIXML" (MS-PSRP 2.2.5): primitives (`<S>`, `<I32>`, `<B>`,
//! `<DT>`, `<G>`, `<BA>`, `<Nil/>`, ...) and complex objects (`<Obj RefId>` with `<TN>`/`<TNRef>`
//! type names, `<ToString>`, adapted `<Props>`, extended `<MS>`, `<LST>`/`<IE>`/`<STK>`/`<QUE>`
//! lists and `<DCT>` dictionaries, `<Ref RefId>` back-references), and how those map to the JSON
//! objects the REST transport returns, so results look the same whichever transport ran them.
//!
//! JSON mapping ([`to_json`] / [`from_json`]): `Nil` ↔ null, `B` ↔ bool, integers ↔ numbers
//! (`I32` when it fits, else `I64`), `Db` ↔ non-integral numbers, `S` ↔ string; an object with
//! properties ↔ a JSON object of its extended then adapted properties; a list ↔ an array; a
//! dictionary ↔ an object keyed by the keys' text; an enum (`System.Enum` among its type names)
//! → its `ToString`; any other object wrapping a primitive → that primitive. Dates, GUIDs,
//! versions, URIs, chars and the other primitives become their XML text as strings; byte arrays
//! become base64 strings. [`from_json`] of [`to_json`] is the identity on JSON built from
//! null, bools, i64/f64 numbers, strings, arrays and objects.
//!
//! Refused: nesting deeper than [`MAX_DEPTH`], a `<Ref>` to an object not yet seen, a
//! `<TNRef>` to an unknown list, and text that is not one value.

use crate::error::Result;
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
    let _ = value;
    todo!("warden-psrp: clixml::serialize")
}

/// Like [`serialize`], with `name` as the element's `N` attribute (for a property).
pub fn serialize_named(name: &str, value: &PsValue) -> String {
    let _ = (name, value);
    todo!("warden-psrp: clixml::serialize_named")
}

/// One value from CLIXML: a single element, optionally after a BOM and an XML declaration, or
/// an `<Objs>` document holding exactly one.
pub fn deserialize(text: &str) -> Result<PsValue> {
    let _ = text;
    todo!("warden-psrp: clixml::deserialize")
}

/// Every value of an `<Objs>` document (the `#< CLIXML` error streams, test fixtures).
pub fn deserialize_all(text: &str) -> Result<Vec<PsValue>> {
    let _ = text;
    todo!("warden-psrp: clixml::deserialize_all")
}

/// The JSON a value stands for (see the module docs).
pub fn to_json(value: &PsValue) -> serde_json::Value {
    let _ = value;
    todo!("warden-psrp: clixml::to_json")
}

/// The value a JSON value becomes (see the module docs): objects become `<Obj>` with `<MS>`
/// properties and no type names, arrays `<Obj>` with `<LST>` and type name `System.Object[]`.
pub fn from_json(value: &serde_json::Value) -> PsValue {
    let _ = value;
    todo!("warden-psrp: clixml::from_json")
}

/// `_xHHHH_` escaping of a string for `<S>` and names (MS-PSRP 2.2.5.3.2): control characters,
/// lone surrogates and a literal `_x` sequence are escaped.
pub fn escape_string(text: &str) -> String {
    let _ = text;
    todo!("warden-psrp: clixml::escape_string")
}

/// The inverse of [`escape_string`].
pub fn unescape_string(text: &str) -> String {
    let _ = text;
    todo!("warden-psrp: clixml::unescape_string")
}
