//! Value constraints on one parameter: what the TOML says and how a value is checked.
//!
//! Every key given must hold (they combine with AND). Types are strict: `range` needs a JSON
//! integer (not `"5"`), `pattern`, `length` and `domain` need a string, `boolean` a boolean.
//! Structure is never accepted by accident: a list is accepted only by a constraint with
//! `items` or `each`, a hashtable only by one with `keys` (its values checked by `each` when
//! given), and list items or hashtable values without an `each` must be single values. A string is only ever a string: `"x -Confirm:$false"` is a
//! value, never parsed for parameters.
//!
//! Reasons never quote the value itself, so a refused password does not end up in a log.

use crate::names;
use crate::params::kind_of;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;

/// Compiled size limit for one `pattern` (bytes of compiled program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A constraint as written in the policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConstraint {
    any: Option<bool>,
    equals: Option<toml::Value>,
    one_of: Option<Vec<toml::Value>>,
    pattern: Option<String>,
    range: Option<[i64; 2]>,
    boolean: Option<bool>,
    length: Option<[u64; 2]>,
    items: Option<[u64; 2]>,
    each: Option<Box<RawConstraint>>,
    keys: Option<Vec<String>>,
    domain: Option<Vec<String>>,
    sensitive: Option<bool>,
}

/// A compiled, checked parameter constraint.
#[derive(Debug, Clone, Default)]
pub struct Constraint {
    any: bool,
    equals: Option<Value>,
    one_of: Option<Vec<Value>>,
    pattern: Option<(String, Regex)>,
    range: Option<(i64, i64)>,
    boolean: bool,
    length: Option<(u64, u64)>,
    items: Option<(u64, u64)>,
    each: Option<Box<Constraint>>,
    keys: Option<Vec<String>>,
    domain: Option<Vec<String>>,
    pub(crate) sensitive: bool,
}

fn toml_to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or("a non-finite float cannot be a parameter value")?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Datetime(_) | toml::Value::Table(_) => {
            return Err(
                "equals / one_of take strings, integers, floats, booleans or lists of them".into(),
            );
        }
    })
}

fn pair<T: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    [min, max]: [T; 2],
) -> Result<(T, T), String> {
    if min > max {
        return Err(format!("{what} = [{min}, {max}]: min is greater than max"));
    }
    Ok((min, max))
}

/// Checks that a domain in the policy is a plain lowercase-able ASCII DNS name.
fn valid_domain(domain: &str) -> Result<String, String> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(domain.to_ascii_lowercase())
    } else {
        Err(format!(
            "domain {domain:?} is not a plain ASCII DNS name (write IDN domains in punycode)"
        ))
    }
}

/// Domain check shared with target scoping: the part after the last '@', compared exactly and
/// ASCII-case-insensitively.
pub(crate) fn address_in_domains(address: &str, domains: &[String]) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
        }
        _ => false,
    }
}

impl RawConstraint {
    /// Compiles and checks a constraint; `nested` is true inside `each`.
    pub(crate) fn compile(&self, nested: bool) -> Result<Constraint, String> {
        let r = self;
        let scalar_kinds = r.equals.is_some()
            || r.one_of.is_some()
            || r.pattern.is_some()
            || r.range.is_some()
            || r.boolean.is_some()
            || r.length.is_some()
            || r.domain.is_some();
        let list_kinds = r.items.is_some() || r.each.is_some() || r.keys.is_some();
        if !scalar_kinds && !list_kinds && r.any.is_none() {
            return Err(
                "a parameter needs a constraint; write `any = true` to accept any single value"
                    .into(),
            );
        }
        if scalar_kinds && list_kinds {
            return Err("equals/one_of/pattern/range/boolean/length/domain apply to a single value and items/each/keys to a list or hashtable; for list elements write `each = { … }`".into());
        }
        if r.any == Some(false) {
            return Err("`any = false` means nothing; leave the parameter out to refuse it".into());
        }
        if r.boolean == Some(false) {
            return Err(
                "`boolean = false` means nothing; write `boolean = true` or `equals = false`"
                    .into(),
            );
        }
        if nested && r.sensitive.is_some() {
            return Err("`sensitive` applies to a whole parameter, not inside `each`".into());
        }
        let pattern = match &r.pattern {
            Some(p) => {
                // Check the pattern as written first, so an error points into the operator's text.
                RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("pattern {p:?} is not a valid regular expression: {e}"))?;
                let anchored = format!("^(?:{p})$");
                let regex = RegexBuilder::new(&anchored)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("pattern {p:?} is not a valid regular expression: {e}"))?;
                Some((p.clone(), regex))
            }
            None => None,
        };
        let one_of = match &r.one_of {
            Some(values) if values.is_empty() => return Err("one_of = [] admits nothing".into()),
            Some(values) => Some(
                values
                    .iter()
                    .map(toml_to_json)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let domain = match &r.domain {
            Some(d) if d.is_empty() => return Err("domain = [] admits nothing".into()),
            Some(d) => Some(
                d.iter()
                    .map(|d| valid_domain(d))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let keys = match &r.keys {
            Some(keys) => {
                for key in keys {
                    names::validate_parameter(key).map_err(|e| format!("keys: {e}"))?;
                }
                Some(keys.clone())
            }
            None => None,
        };
        Ok(Constraint {
            any: r.any == Some(true),
            equals: r.equals.as_ref().map(toml_to_json).transpose()?,
            one_of,
            pattern,
            range: r.range.map(|p| pair("range", p)).transpose()?,
            boolean: r.boolean == Some(true),
            length: r.length.map(|p| pair("length", p)).transpose()?,
            items: r.items.map(|p| pair("items", p)).transpose()?,
            each: match &r.each {
                Some(each) => Some(Box::new(
                    each.compile(true).map_err(|e| format!("each: {e}"))?,
                )),
                None => None,
            },
            keys,
            domain,
            sensitive: r.sensitive == Some(true),
        })
    }
}

impl Constraint {
    /// A constraint admitting integers in `min..=max` (used for `max_result_size`).
    pub(crate) fn int_range(min: i64, max: i64) -> Self {
        Constraint {
            range: Some((min, max)),
            ..Constraint::default()
        }
    }

    /// Whether a `domain` rule (here or inside `each`) judges the value as an address: the
    /// broker then also judges the address of the object the value resolves to.
    pub(crate) fn judges_domain(&self) -> bool {
        self.domain.is_some() || self.each.as_ref().is_some_and(|e| e.judges_domain())
    }

    fn accepts_list(&self) -> bool {
        self.items.is_some() || self.each.is_some()
    }

    fn accepts_table(&self) -> bool {
        self.keys.is_some()
    }

    /// Checks a value; the error says which rule failed, never what the value was.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match value {
            Value::Array(list) => {
                if !self.accepts_list() {
                    return Err("a list is not accepted here; a single value is expected".into());
                }
                if let Some((min, max)) = self.items {
                    let n = list.len() as u64;
                    if n < min || n > max {
                        return Err(format!(
                            "the list has {n} items; {min}..={max} are accepted"
                        ));
                    }
                }
                for (i, item) in list.iter().enumerate() {
                    match &self.each {
                        Some(each) => each.check(item).map_err(|e| format!("item {i}: {e}"))?,
                        None if matches!(item, Value::Array(_) | Value::Object(_)) => {
                            return Err(format!(
                                "item {i} is {}; list items must be single values",
                                kind_of(item)
                            ));
                        }
                        None => {}
                    }
                }
                Ok(())
            }
            Value::Object(table) => {
                if !self.accepts_table() {
                    return Err("a hashtable is not accepted here".into());
                }
                if let Some((min, max)) = self.items {
                    let n = table.len() as u64;
                    if n < min || n > max {
                        return Err(format!(
                            "the hashtable has {n} entries; {min}..={max} are accepted"
                        ));
                    }
                }
                for (key, item) in table {
                    names::validate_parameter(key).map_err(|e| format!("hashtable key: {e}"))?;
                    if let Some(keys) = &self.keys
                        && !keys.iter().any(|k| names::same(k, key))
                    {
                        return Err(format!("hashtable key {key:?} is not one of {keys:?}"));
                    }
                    match &self.each {
                        Some(each) => each.check(item).map_err(|e| format!("entry {key}: {e}"))?,
                        None if matches!(item, Value::Array(_) | Value::Object(_)) => {
                            return Err(format!(
                                "entry {key} is {}; a single value is expected",
                                kind_of(item)
                            ));
                        }
                        None => {}
                    }
                }
                Ok(())
            }
            scalar => {
                if !self.any && (self.accepts_list() || self.accepts_table()) {
                    return Err(format!(
                        "{} is not accepted here; a list or hashtable is expected",
                        kind_of(scalar)
                    ));
                }
                self.check_scalar(scalar)
            }
        }
    }

    fn check_scalar(&self, value: &Value) -> Result<(), String> {
        if let Some(expected) = &self.equals
            && value != expected
        {
            return Err("the value is not the one value accepted".into());
        }
        if let Some(set) = &self.one_of
            && !set.contains(value)
        {
            return Err(format!(
                "the value is not one of the {} accepted values",
                set.len()
            ));
        }
        let needs_string = self.pattern.is_some() || self.length.is_some() || self.domain.is_some();
        if needs_string && !value.is_string() {
            return Err(format!(
                "{} is not accepted here; a string is expected",
                kind_of(value)
            ));
        }
        let text = value.as_str().unwrap_or_default();
        if let Some((source, regex)) = &self.pattern
            && !regex.is_match(text)
        {
            return Err(format!(
                "the value does not match the pattern {source:?} (anchored)"
            ));
        }
        if let Some((min, max)) = self.length {
            let n = text.chars().count() as u64;
            if n < min || n > max {
                return Err(format!(
                    "the value is {n} characters long; {min}..={max} are accepted"
                ));
            }
        }
        if let Some(domains) = &self.domain
            && !address_in_domains(text, domains)
        {
            let mut list = String::new();
            for d in domains {
                let _ = write!(list, "{}{d}", if list.is_empty() { "" } else { ", " });
            }
            return Err(format!(
                "the value is not an address in an accepted domain ({list})"
            ));
        }
        if let Some((min, max)) = self.range {
            match value.as_i64() {
                Some(n) if n >= min && n <= max => {}
                Some(_) => return Err(format!("the value is outside {min}..={max}")),
                None => {
                    return Err(format!(
                        "{} is not accepted here; an integer is expected",
                        kind_of(value)
                    ));
                }
            }
        }
        if self.boolean && !value.is_boolean() {
            return Err(format!(
                "{} is not accepted here; true or false is expected",
                kind_of(value)
            ));
        }
        if !self.any && value.is_null() && self.equals.is_none() {
            return Err("null is not accepted here".into());
        }
        Ok(())
    }
}
