//! Script values to JSON, for cmdlet parameters and a script's result.
//!
//! It refuses what has no JSON form instead of guessing one: function pointers, `Results`
//! streams and other host types, numbers that are not finite, and nesting past
//! [`MAX_DEPTH`] (Rhai's own serializer would write a type name or `null` for these).

use rhai::{Array, Dynamic, FLOAT, INT, ImmutableString};
use serde_json::{Map, Number, Value};

/// Deepest nesting converted; Exchange parameters nest two or three levels.
pub(super) const MAX_DEPTH: usize = 64;

/// A script value as JSON, or what stopped the conversion.
pub(super) fn to_json(value: &Dynamic) -> Result<Value, String> {
    convert(value, 0)
}

/// A script map as a JSON object.
pub(super) fn map_to_json(map: &rhai::Map) -> Result<Value, String> {
    convert_map(map, 0)
}

fn convert(value: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("values nest deeper than {MAX_DEPTH} levels"));
    }
    // `read_lock` sees through values shared with closures.
    if value.read_lock::<()>().is_some() {
        return Ok(Value::Null);
    }
    if let Some(b) = value.read_lock::<bool>() {
        return Ok(Value::Bool(*b));
    }
    if let Some(i) = value.read_lock::<INT>() {
        return Ok(Value::from(*i));
    }
    if let Some(f) = value.read_lock::<FLOAT>() {
        return Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{} is not a finite number", *f));
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(c) = value.read_lock::<char>() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(items) = value.read_lock::<Array>() {
        return items
            .iter()
            .map(|item| convert(item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        return convert_map(&map, depth);
    }
    // Host types are named by their Rust path; the script knows only the last part.
    let type_name = value.type_name();
    let type_name = type_name.rsplit("::").next().unwrap_or(type_name);
    Err(format!("a value of type {type_name} has no JSON form"))
}

fn convert_map(map: &rhai::Map, depth: usize) -> Result<Value, String> {
    let mut object = Map::new();
    for (key, value) in map {
        let value = convert(value, depth + 1).map_err(|e| format!("{key}: {e}"))?;
        object.insert(key.to_string(), value);
    }
    Ok(Value::Object(object))
}
