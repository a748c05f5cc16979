//! Value constraints on one parameter: what the TOML says and how a value is checked.
//!
//! Every key given must hold (they combine with AND). Types are strict: `range` needs a JSON
//! integer (not `"5"`), `pattern`, `length`, `domain` and `filter_properties` need a string,
//! `boolean` a boolean.
//!
//! Shapes are said, never inferred ([`Shape`] is the one place): a constraint with `items`
//! admits a list and nothing else, one with `keys` a non-empty hashtable and nothing else, and
//! every other constraint a single value (string, number, boolean, null). `each` judges the
//! items of the list or the values of the hashtable; without it they must be single values. A
//! string is only ever a string: `"x -Confirm:$false"` is a value, never parsed for parameters.
//!
//! In a deny rule's `when` a constraint fails closed ([`Constraint::deny_matches`]): it judges
//! single values only, every list item and hashtable value (at any depth) one by one, every
//! spelling Exchange reads alike (case, an `smtp:` prefix, comma-separated flags, invisible
//! edges), and a value it cannot judge (a number for a `pattern`, say, or a number given as text
//! where `equals`/`one_of` list names, which .NET reads as an enum's value) counts as a match.
//!
//! Reasons never quote the value itself, so a refused password does not end up in a log.

use crate::params::kind_of;
use crate::task::FormField;
use crate::{filter, names, text};
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
    domain: Option<Vec<String>>,
    filter_properties: Option<Vec<String>>,
    items: Option<[u64; 2]>,
    keys: Option<Vec<String>>,
    each: Option<Box<RawConstraint>>,
    sensitive: Option<bool>,
}

/// Where a constraint is used: it admits values for a role, or matches them for a deny rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    /// A role's parameter: every key must hold.
    Allow,
    /// A deny rule's `when`: fails closed (see the module docs).
    Deny,
}

/// Over which items of a list or hashtable a deny's `when` must hold for the rule to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quantifier {
    /// `when` / `when_any`: any item (the default).
    Any,
    /// `when_all`: every item.
    All,
}

/// The value shape a constraint admits. The one place that says which key admits what:
/// `items` → [`Shape::List`], `keys` → [`Shape::Table`], every other key → [`Shape::Single`];
/// `each` judges the items of a list or the values of a hashtable and admits nothing alone;
/// `sensitive` changes no shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Shape {
    /// A string, number, boolean or null.
    #[default]
    Single,
    /// A list (JSON array).
    List,
    /// A hashtable (JSON object) with at least one entry.
    Table,
}

impl Shape {
    fn of(value: &Value) -> Shape {
        match value {
            Value::Array(_) => Shape::List,
            Value::Object(_) => Shape::Table,
            _ => Shape::Single,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Single => "a single value",
            Shape::List => "a list",
            Shape::Table => "a hashtable",
        }
    }
}

/// A compiled, checked parameter constraint.
#[derive(Debug, Clone, Default)]
pub struct Constraint {
    shape: Shape,
    any: bool,
    equals: Option<Value>,
    one_of: Option<Vec<Value>>,
    pattern: Option<(String, Regex)>,
    range: Option<(i64, i64)>,
    boolean: bool,
    length: Option<(u64, u64)>,
    domain: Option<Vec<String>>,
    filter_properties: Option<FilterProperties>,
    items: Option<(u64, u64)>,
    keys: Option<Vec<String>>,
    each: Option<Box<Constraint>>,
    /// Deny rules compare text case-insensitively, as Exchange does.
    fold_case: bool,
    /// In a deny: a number given as text may be an enum's value (`"1"` is `FullAccess`), so
    /// it cannot be judged against names or a pattern. Off where the value names a directory
    /// object the broker resolves (an all-digit alias is a name, not a flag).
    numbers_may_be_enums: bool,
    pub(crate) sensitive: bool,
}

/// The properties an OPATH filter may name, and whether the operator listed them or the role's
/// output shaping implied them.
#[derive(Debug, Clone)]
pub(crate) struct FilterProperties {
    pub(crate) properties: Vec<String>,
    pub(crate) implied: bool,
}

/// One key's judgement of a single value.
enum Verdict {
    Holds,
    Fails(String),
    /// The key cannot judge a value of this type: a refusal for a role, a match for a deny.
    Unjudgeable(String),
}

fn toml_to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or("a non-finite float cannot be a parameter value")?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(_) | toml::Value::Datetime(_) | toml::Value::Table(_) => {
            return Err(
                "equals / one_of take single values (strings, integers, floats, booleans); a list is judged with items and each".into(),
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

/// Checks a property name for `filter_properties` or `output`.
pub(crate) fn valid_property(property: &str) -> Result<(), String> {
    if property.starts_with(|c: char| c.is_ascii_alphabetic())
        && property
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "property {property:?} is not a plain property name (an ASCII letter, then letters, digits or '_')"
        ))
    }
}

/// Domain check shared with target scoping: the address Exchange acts on (without an `smtp:`
/// prefix), its part after the last '@' compared exactly and ASCII-case-insensitively.
pub(crate) fn address_in_domains(address: &str, domains: &[String]) -> bool {
    match text::address(address).rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
        }
        _ => false,
    }
}

impl RawConstraint {
    /// The single-value keys given, by name (for reasons).
    fn single_value_keys(&self) -> Vec<&'static str> {
        let r = self;
        [
            ("any", r.any.is_some()),
            ("equals", r.equals.is_some()),
            ("one_of", r.one_of.is_some()),
            ("pattern", r.pattern.is_some()),
            ("range", r.range.is_some()),
            ("boolean", r.boolean.is_some()),
            ("length", r.length.is_some()),
            ("domain", r.domain.is_some()),
            ("filter_properties", r.filter_properties.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, given)| given.then_some(k))
        .collect()
    }

    /// Compiles and checks a constraint; `nested` is true inside `each`.
    pub(crate) fn compile(&self, nested: bool, usage: Usage) -> Result<Constraint, String> {
        let r = self;
        let single = r.single_value_keys();
        let shape = match (r.items.is_some(), r.keys.is_some()) {
            (true, true) => {
                return Err("items admits a list and keys a hashtable; a constraint admits one shape, so give one of them".into());
            }
            (true, false) => Shape::List,
            (false, true) => Shape::Table,
            (false, false) => Shape::Single,
        };
        if usage == Usage::Deny
            && (shape != Shape::Single
                || r.each.is_some()
                || r.sensitive.is_some()
                || r.filter_properties.is_some())
        {
            return Err("a deny judges single values — every list item and hashtable value one by one (`when`/`when_any`: any of them matches; `when_all`: all of them) — so items, keys, each, sensitive and filter_properties do not apply".into());
        }
        if shape != Shape::Single && !single.is_empty() {
            return Err(format!(
                "{} applies to a single value and {} to {}; for its items write `each = {{ … }}`",
                single.join("/"),
                if shape == Shape::List {
                    "items"
                } else {
                    "keys"
                },
                shape.name()
            ));
        }
        if shape == Shape::Single && r.each.is_some() {
            return Err("each judges the items of a list (give items = [min, max]) or the values of a hashtable (give keys = [\"…\"]); alone it admits nothing".into());
        }
        if shape == Shape::Single && single.is_empty() {
            return Err(
                "a parameter needs a constraint; write `any = true` to accept any single value"
                    .into(),
            );
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
                    .case_insensitive(usage == Usage::Deny)
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
        let filter_properties = match &r.filter_properties {
            Some(p) if p.is_empty() => {
                return Err("filter_properties = [] admits no filter; leave the parameter out to refuse filters".into());
            }
            Some(p) => {
                for property in p {
                    valid_property(property).map_err(|e| format!("filter_properties: {e}"))?;
                }
                Some(FilterProperties {
                    properties: p.clone(),
                    implied: false,
                })
            }
            None => None,
        };
        let keys = match &r.keys {
            Some(keys) if keys.is_empty() => return Err("keys = [] admits nothing".into()),
            Some(keys) => {
                for key in keys {
                    names::validate_parameter(key).map_err(|e| format!("keys: {e}"))?;
                }
                Some(keys.clone())
            }
            None => None,
        };
        Ok(Constraint {
            shape,
            any: r.any == Some(true),
            equals: r.equals.as_ref().map(toml_to_json).transpose()?,
            one_of,
            pattern,
            range: r.range.map(|p| pair("range", p)).transpose()?,
            boolean: r.boolean == Some(true),
            length: r.length.map(|p| pair("length", p)).transpose()?,
            domain,
            filter_properties,
            items: r.items.map(|p| pair("items", p)).transpose()?,
            keys,
            each: match &r.each {
                Some(each) => Some(Box::new(
                    each.compile(true, usage)
                        .map_err(|e| format!("each: {e}"))?,
                )),
                None => None,
            },
            fold_case: usage == Usage::Deny,
            numbers_may_be_enums: usage == Usage::Deny,
            sensitive: r.sensitive == Some(true),
        })
    }
}

/// Equality as a constraint sees it: for a deny (`fold`), text case-insensitively and numbers
/// by value (`1` is `1.0`), as Exchange converts them.
fn same_value(a: &Value, b: &Value, fold: bool) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if fold => x.to_lowercase() == y.to_lowercase(),
        (Value::Number(x), Value::Number(y)) if fold => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Whether `text` is a number .NET's `Enum.Parse` reads as an enum's value (optional white
/// space and sign, decimal digits): `"1"` is `FullAccess`, `"-1"` every flag at once.
fn enum_number(text: &str) -> bool {
    let digits = text.trim();
    let digits = digits.strip_prefix(['+', '-']).unwrap_or(digits);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A deny cannot judge a number given as text where it lists names: Exchange may read it as
/// any of the enum's values, the listed ones included.
fn number_for_names(value: &Value, names: &[&Value]) -> bool {
    value.as_str().is_some_and(enum_number)
        && names
            .iter()
            .any(|n| n.as_str().is_some_and(|n| !enum_number(n)))
}

impl Constraint {
    /// A constraint admitting integers in `min..=max` (used for `max_result_size`).
    pub(crate) fn int_range(min: i64, max: i64) -> Self {
        Constraint {
            range: Some((min, max)),
            ..Constraint::default()
        }
    }

    /// Marks a deny's constraint as judging directory objects' identifiers, never enum values.
    pub(crate) fn judge_identities(&mut self) {
        self.numbers_may_be_enums = false;
        if let Some(each) = &mut self.each {
            each.judge_identities();
        }
    }

    /// The properties a filter in this parameter may name, when restricted.
    pub(crate) fn filter_properties(&self) -> Option<&FilterProperties> {
        self.filter_properties.as_ref()
    }

    /// Whether a `domain` rule (here or inside `each`) judges the value as an address: the
    /// broker then also judges the address of the object the value resolves to.
    pub(crate) fn judges_domain(&self) -> bool {
        self.domain.is_some() || self.each.as_ref().is_some_and(|e| e.judges_domain())
    }

    /// Restricts the filter this parameter takes to `properties` (what the grant's output
    /// shaping lets the guest see), unless the operator listed the properties explicitly.
    pub(crate) fn imply_filter_properties(&mut self, properties: &[String]) {
        match self.shape {
            Shape::Single => {
                self.filter_properties
                    .get_or_insert_with(|| FilterProperties {
                        properties: properties.to_vec(),
                        implied: true,
                    });
            }
            Shape::List | Shape::Table => self
                .each
                .get_or_insert_with(|| {
                    Box::new(Constraint {
                        any: true,
                        ..Constraint::default()
                    })
                })
                .imply_filter_properties(properties),
        }
    }

    /// The form field a task parameter with this constraint gets: the most specific key
    /// decides the kind (`equals`/`one_of` a choice, `boolean` a checkbox, `range` an integer,
    /// `domain` an address, anything else text). Only a hint for the page: values are judged
    /// by [`Constraint::check`]. A list or hashtable is no single form field.
    pub(crate) fn form_field(&self) -> Result<FormField, String> {
        if self.shape != Shape::Single {
            return Err(format!(
                "it admits {}, and a task parameter is one value (a form field)",
                self.shape.name()
            ));
        }
        Ok(if let Some(value) = &self.equals {
            FormField::Choice {
                options: vec![value.clone()],
            }
        } else if let Some(options) = &self.one_of {
            FormField::Choice {
                options: options.clone(),
            }
        } else if self.boolean {
            FormField::Checkbox
        } else if let Some((min, max)) = self.range {
            FormField::Integer { min, max }
        } else if let Some(domains) = &self.domain {
            FormField::Address {
                domains: domains.clone(),
            }
        } else {
            FormField::Text {
                min_length: self.length.map(|(min, _)| min),
                max_length: self.length.map(|(_, max)| max),
                pattern: self.pattern.as_ref().map(|(source, _)| source.clone()),
            }
        })
    }

    /// Checks a value; the error says which rule failed, never what the value was.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let given = Shape::of(value);
        if given != self.shape {
            return Err(match (given, self.shape) {
                (Shape::Single, _) => format!(
                    "{} is not accepted here; {} is expected",
                    kind_of(value),
                    self.shape.name()
                ),
                (_, Shape::Single) => format!(
                    "{} is not accepted here; a single value is expected",
                    given.name()
                ),
                _ => format!(
                    "{} is not accepted here; {} is expected (only `items` admits a list, only `keys` a hashtable)",
                    given.name(),
                    self.shape.name()
                ),
            });
        }
        match value {
            Value::Array(list) => {
                if let Some((min, max)) = self.items {
                    let n = list.len() as u64;
                    if n < min || n > max {
                        return Err(format!(
                            "the list has {n} items; {min}..={max} are accepted"
                        ));
                    }
                }
                for (i, item) in list.iter().enumerate() {
                    self.check_inner(item)
                        .map_err(|e| format!("item {i}: {e}"))?;
                }
                Ok(())
            }
            Value::Object(table) => {
                if table.is_empty() {
                    return Err("an empty hashtable is refused: name the keys to change (Exchange may read it as \"replace all\")".into());
                }
                for (key, item) in table {
                    names::validate_parameter(key).map_err(|e| format!("hashtable key: {e}"))?;
                    if let Some(keys) = &self.keys
                        && !keys.iter().any(|k| names::same(k, key))
                    {
                        return Err(format!("hashtable key {key:?} is not one of {keys:?}"));
                    }
                    self.check_inner(item)
                        .map_err(|e| format!("entry {key}: {e}"))?;
                }
                Ok(())
            }
            single => {
                for verdict in self.verdicts(single) {
                    if let Verdict::Fails(why) | Verdict::Unjudgeable(why) = verdict {
                        return Err(why);
                    }
                }
                Ok(())
            }
        }
    }

    /// A list item or hashtable value: judged by `each`, else it must be a single value.
    fn check_inner(&self, item: &Value) -> Result<(), String> {
        match &self.each {
            Some(each) => each.check(item),
            None if Shape::of(item) != Shape::Single => Err(format!(
                "{} is not accepted here; a single value is expected",
                kind_of(item)
            )),
            None => Ok(()),
        }
    }

    /// True when a deny rule with this `when` matches `value`: its single values (the value
    /// itself, or every list item and hashtable value at any depth) are judged in every
    /// spelling Exchange reads alike, and the rule matches when `quantifier` of them do. A
    /// value this constraint cannot judge matches; so does a list or hashtable with nothing in
    /// it to judge.
    pub(crate) fn deny_matches(&self, value: &Value, quantifier: Quantifier) -> bool {
        fn leaves<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
            match value {
                Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
                Value::Object(table) => table.values().for_each(|v| leaves(v, out)),
                single => out.push(single),
            }
        }
        let mut found = Vec::new();
        leaves(value, &mut found);
        if found.is_empty() {
            return true;
        }
        let leaf_matches = |leaf: &&Value| match leaf {
            Value::String(s) => text::deny_forms(s)
                .into_iter()
                .any(|form| self.single_matches(&Value::String(form.into_owned()))),
            other => self.single_matches(other),
        };
        match quantifier {
            Quantifier::Any => found.iter().any(leaf_matches),
            Quantifier::All => found.iter().all(leaf_matches),
        }
    }

    /// A deny's judgement of one single value: every key holds, or one cannot judge it.
    fn single_matches(&self, value: &Value) -> bool {
        let verdicts = self.verdicts(value);
        verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Unjudgeable(_)))
            || verdicts.iter().all(|v| matches!(v, Verdict::Holds))
    }

    /// Every key's verdict on a single value, in a fixed order.
    fn verdicts(&self, value: &Value) -> Vec<Verdict> {
        let mut out = Vec::new();
        let needs_string = |out: &mut Vec<Verdict>| {
            out.push(Verdict::Unjudgeable(format!(
                "{} is not accepted here; a string is expected",
                kind_of(value)
            )));
        };
        if let Some(expected) = &self.equals {
            out.push(if same_value(value, expected, self.fold_case) {
                Verdict::Holds
            } else if self.numbers_may_be_enums && number_for_names(value, &[expected]) {
                Verdict::Unjudgeable("a number given for a named value".into())
            } else if same_kind(value, expected) || !self.fold_case {
                Verdict::Fails("the value is not the one value accepted".into())
            } else {
                Verdict::Unjudgeable("the value is of another type than the one accepted".into())
            });
        }
        if let Some(set) = &self.one_of {
            out.push(
                if set.iter().any(|v| same_value(value, v, self.fold_case)) {
                    Verdict::Holds
                } else if self.numbers_may_be_enums
                    && number_for_names(value, &set.iter().collect::<Vec<_>>())
                {
                    Verdict::Unjudgeable("a number given for a named value".into())
                } else if set.iter().any(|v| same_kind(value, v)) || !self.fold_case {
                    Verdict::Fails(format!(
                        "the value is not one of the {} accepted values",
                        set.len()
                    ))
                } else {
                    Verdict::Unjudgeable("the value is of another type than those accepted".into())
                },
            );
        }
        let string = value.as_str();
        if let Some((source, regex)) = &self.pattern {
            match string {
                Some(s) if regex.is_match(s) => out.push(Verdict::Holds),
                Some(s) if self.numbers_may_be_enums && enum_number(s) => out.push(
                    Verdict::Unjudgeable("a number given where a pattern judges text".into()),
                ),
                Some(_) => out.push(Verdict::Fails(format!(
                    "the value does not match the pattern {source:?} (anchored)"
                ))),
                None => needs_string(&mut out),
            }
        }
        if let Some((min, max)) = self.length {
            match string {
                Some(s) => {
                    let n = s.chars().count() as u64;
                    out.push(if n < min || n > max {
                        Verdict::Fails(format!(
                            "the value is {n} characters long; {min}..={max} are accepted"
                        ))
                    } else {
                        Verdict::Holds
                    });
                }
                None => needs_string(&mut out),
            }
        }
        if let Some(domains) = &self.domain {
            match string {
                Some(s) if address_in_domains(s, domains) => out.push(Verdict::Holds),
                Some(_) => {
                    let mut list = String::new();
                    for d in domains {
                        let _ = write!(list, "{}{d}", if list.is_empty() { "" } else { ", " });
                    }
                    out.push(Verdict::Fails(format!(
                        "the value is not an address in an accepted domain ({list})"
                    )));
                }
                None => needs_string(&mut out),
            }
        }
        if let Some(allowed) = &self.filter_properties {
            match string {
                Some(s) => out.push(judge_filter(s, allowed)),
                None => needs_string(&mut out),
            }
        }
        if let Some((min, max)) = self.range {
            out.push(match value.as_i64() {
                Some(n) if n >= min && n <= max => Verdict::Holds,
                Some(_) => Verdict::Fails(format!("the value is outside {min}..={max}")),
                None => Verdict::Unjudgeable(format!(
                    "{} is not accepted here; an integer is expected",
                    kind_of(value)
                )),
            });
        }
        if self.boolean {
            out.push(if value.is_boolean() {
                Verdict::Holds
            } else {
                Verdict::Unjudgeable(format!(
                    "{} is not accepted here; true or false is expected",
                    kind_of(value)
                ))
            });
        }
        if !self.any && value.is_null() && self.equals.is_none() {
            out.push(Verdict::Unjudgeable("null is not accepted here".into()));
        }
        out
    }
}

/// A filter holds when it parses and names only `allowed` properties (ASCII-case-insensitively).
fn judge_filter(filter: &str, allowed: &FilterProperties) -> Verdict {
    let named = match filter::properties(filter) {
        Ok(named) => named,
        Err(why) => {
            return Verdict::Fails(format!(
                "the value is not a filter the policy can read ({why})"
            ));
        }
    };
    match named
        .iter()
        .find(|p| !allowed.properties.iter().any(|a| a.eq_ignore_ascii_case(p)))
    {
        None => Verdict::Holds,
        Some(p) => Verdict::Fails(format!(
            "the filter names the property {}, {}; a filter answers for every property it names, so it may name only {}",
            names::for_record(p),
            if allowed.implied {
                "which the grant's output shaping hides"
            } else {
                "which filter_properties does not list"
            },
            allowed.properties.join(", ")
        )),
    }
}
