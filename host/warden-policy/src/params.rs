//! Strict parsing of a call's parameter JSON.
//!
//! `serde_json::Value` silently keeps the last of two equal keys, and PowerShell binds
//! `Identity` and `identity` to the same parameter, so a lenient parser would let a guest show
//! the policy one value and Exchange another. This parser refuses, with a reason: a top level
//! that is not an object, a duplicate key (also when only the case differs, at any depth),
//! integers beyond `i64`, non-finite or huge floats, trailing data, input over the size cap,
//! and nesting deeper than [`MAX_PARAMETER_DEPTH`].

use crate::names;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;

/// Default cap on the parameter JSON of one call, in bytes.
pub const DEFAULT_MAX_PARAMETER_BYTES: usize = 64 * 1024;

/// Deepest nesting of lists and hashtables accepted, the parameter object itself being level 1.
/// Exchange parameters nest two or three levels; the limit is the policy's, below every front
/// end's own (Rhai converts up to 64 levels, serde_json parses up to 128), so both runtimes get
/// the same refusal.
pub const MAX_PARAMETER_DEPTH: usize = 32;

/// Floats at or beyond this magnitude are refused: they cannot be a meaningful Exchange value
/// and an integer written with more digits than `i64` holds ends up here.
const MAX_FLOAT: f64 = 9_223_372_036_854_775_807.0;

struct Strict(Value);

/// Reads one value at nesting level `depth` (the top level is 1).
#[derive(Clone, Copy)]
struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Strict;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    /// The seed for a value inside this list or hashtable, or the refusal when it is too deep.
    fn inner<E: de::Error>(&self) -> Result<StrictSeed, E> {
        if self.depth > MAX_PARAMETER_DEPTH {
            return Err(E::custom(format!(
                "values nest deeper than {MAX_PARAMETER_DEPTH} levels; at most {MAX_PARAMETER_DEPTH} are accepted"
            )));
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        match i64::try_from(v) {
            Ok(v) => Ok(Strict(Value::from(v))),
            Err(_) => Err(E::custom(
                "integer out of range (beyond a 64-bit signed integer)",
            )),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        if !v.is_finite() || v.abs() >= MAX_FLOAT {
            return Err(E::custom(
                "number out of range (beyond a 64-bit signed integer)",
            ));
        }
        Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let inner = self.inner()?;
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let inner = self.inner()?;
        let mut map = Map::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        while let Some(key) = access.next_key::<String>()? {
            let folded = key.to_lowercase();
            if let Some(first) = seen.get(&folded) {
                let (key, first) = (names::for_record(&key), names::for_record(first));
                return Err(de::Error::custom(if first == key {
                    format!("duplicate key {key:?}")
                } else {
                    format!(
                        "duplicate key {key:?} (also given as {first:?}; names are case-insensitive)"
                    )
                }));
            }
            let Strict(value) = access.next_value_seed(inner)?;
            seen.insert(folded, key.clone());
            map.insert(key, value);
        }
        Ok(Strict(Value::Object(map)))
    }
}

/// A call's parameters as a guest gave them ([`crate::Grant::judge`]).
#[derive(Clone, Copy)]
pub enum GivenParameters<'a> {
    /// JSON text: a wasm guest's call, a batch's.
    Json(&'a str),
    /// A value written as JSON only when the policy reads it (a script's map): a call refused
    /// by its cmdlet's name is never read past its run's written refusals. `Err` says why the
    /// value has no JSON form; the call is then refused as JSON that does not parse.
    Deferred(&'a (dyn Fn() -> Result<String, String> + Sync)),
}

impl GivenParameters<'_> {
    /// The parameters as [`parse_parameters`] reads them.
    pub(crate) fn parse(&self, max_bytes: usize) -> Result<Map<String, Value>, String> {
        match self {
            GivenParameters::Json(text) => parse_parameters(text, max_bytes),
            GivenParameters::Deferred(write) => {
                write().and_then(|text| parse_parameters(&text, max_bytes))
            }
        }
    }
}

impl<'a> From<&'a str> for GivenParameters<'a> {
    fn from(text: &'a str) -> Self {
        GivenParameters::Json(text)
    }
}

impl<'a> From<&'a String> for GivenParameters<'a> {
    fn from(text: &'a String) -> Self {
        GivenParameters::Json(text)
    }
}

/// Says which kind it is, never the values (they may be secrets).
impl fmt::Debug for GivenParameters<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GivenParameters::Json(text) => write!(f, "Json({} bytes)", text.len()),
            GivenParameters::Deferred(_) => f.write_str("Deferred"),
        }
    }
}

/// Parses `text` as a JSON object of parameters, strictly (see the module docs).
pub fn parse_parameters(text: &str, max_bytes: usize) -> Result<Map<String, Value>, String> {
    if text.len() > max_bytes {
        return Err(format!(
            "parameter JSON is {} bytes; at most {max_bytes} are accepted",
            text.len()
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let Strict(value) = StrictSeed { depth: 1 }
        .deserialize(&mut deserializer)
        .map_err(|e| format!("parameter JSON is malformed: {e}"))?;
    deserializer
        .end()
        .map_err(|e| format!("parameter JSON has trailing data: {e}"))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "parameter JSON must be an object of name → value, not {}",
            kind_of(&other)
        )),
    }
}

/// A short name for a JSON value's type, for reasons.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a hashtable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicates_at_any_depth_and_in_any_case() {
        let cap = DEFAULT_MAX_PARAMETER_BYTES;
        assert!(parse_parameters(r#"{"A":1,"A":2}"#, cap).is_err());
        let why = parse_parameters(r#"{"Identity":"a","identity":"b"}"#, cap).unwrap_err();
        assert!(why.contains("case-insensitive"), "{why}");
        assert!(parse_parameters(r#"{"H":{"Add":1,"ADD":2}}"#, cap).is_err());
        assert!(parse_parameters(r#"{"A":1}"#, cap).is_ok());
    }

    #[test]
    fn refuses_non_objects_huge_numbers_trailing_data_and_big_input() {
        let cap = DEFAULT_MAX_PARAMETER_BYTES;
        for bad in [
            "[]",
            "1",
            "null",
            "",
            r#"{"A":9223372036854775808}"#,
            r#"{"A":1e300}"#,
            r#"{"A":100000000000000000000}"#,
            r#"{"A":1} {"B":2}"#,
            r#"{"A":1"#,
        ] {
            assert!(parse_parameters(bad, cap).is_err(), "{bad}");
        }
        assert!(parse_parameters(r#"{"A":-9223372036854775808}"#, cap).is_ok());
        assert!(parse_parameters(r#"{"A":"xxxxxxxxxx"}"#, 10).is_err());
        let deep = format!("{{\"A\":{}{}}}", "[".repeat(1000), "]".repeat(1000));
        assert!(parse_parameters(&deep, cap).is_err());
        // The object is level 1: 31 lists inside it are the deepest accepted.
        let nested = |n: usize| format!("{{\"A\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(parse_parameters(&nested(MAX_PARAMETER_DEPTH - 1), cap).is_ok());
        let why = parse_parameters(&nested(MAX_PARAMETER_DEPTH), cap).unwrap_err();
        assert!(why.contains("at most 32"), "{why}");
    }
}
