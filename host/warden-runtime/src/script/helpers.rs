//! Helpers for the common shapes of a one-liner (scripts/README.md shows ten, and a test runs
//! each of them against exosim):
//!
//! - `for obj in exo::stream(cmdlet[, params]) { … }`: results object by object, a page at a
//!   time (a `Results` is iterable; `r.next()` still gives whole pages);
//! - `exo::first(cmdlet[, params])`: the first result, or `()`; the rest is not fetched (the
//!   call's line in the trail says `abandoned`);
//! - `exo::count(cmdlet[, params])`: how many results, counted page by page without keeping
//!   them;
//! - on arrays of result maps: `rows.sort_by(key)`, `rows.sort_by(key, descending)`,
//!   `rows.top(key, n)` (the n largest), `rows.group_by(key)` (a map of arrays),
//!   `rows.count_by(key)` (a map of counts), `rows.select([keys])`;
//! - on values: `size_bytes("1.2 GB (1,234,567 bytes)")` → 1234567, `domain_of(address)`;
//! - output: `table(rows)` and `csv(rows)` make text (the run's output, or for `print`).
//!
//! Each is guarded like the string built-ins in `surface`: what it builds is measured first
//! and refused over the engine's size limits (string, array, map), and host calls go through
//! the session (deadline, budgets, audit) like `exo::invoke`.

use super::session::Session;
use super::surface::{Results, at, parameters_json};
use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Module, Position};
use rhai::{FuncRegistration, NativeCallContext};
use std::cmp::Ordering;
use std::sync::Arc;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// Widest cell `table` shows (characters); longer text ends in `…`.
const TABLE_CELL_CHARS: usize = 48;

/// Adds `exo::first` and `exo::count` to the run's `exo` module (volatile: the optimizer must
/// never call a host function).
pub(super) fn add_to_exo(module: &mut Module, session: &Arc<Session>) {
    macro_rules! volatile {
        ($name:expr, $func:expr $(,)?) => {
            FuncRegistration::new($name)
                .with_volatility(true)
                .set_into_module(module, $func)
        };
    }
    let s = session.clone();
    volatile!(
        "first",
        move |c: NativeCallContext, cmdlet: ImmutableString| {
            at(&c, first(&s, &cmdlet, &rhai::Map::new()))
        }
    );
    let s = session.clone();
    volatile!("first", move |c: NativeCallContext,
                             cmdlet: ImmutableString,
                             params: rhai::Map| {
        at(&c, first(&s, &cmdlet, &params))
    },);
    let s = session.clone();
    volatile!(
        "count",
        move |c: NativeCallContext, cmdlet: ImmutableString| {
            at(&c, count(&s, &cmdlet, &rhai::Map::new()))
        }
    );
    let s = session.clone();
    volatile!("count", move |c: NativeCallContext,
                             cmdlet: ImmutableString,
                             params: rhai::Map| {
        at(&c, count(&s, &cmdlet, &params))
    },);
}

fn first(session: &Session, cmdlet: &str, parameters: &rhai::Map) -> Fallible<Dynamic> {
    let parameters = parameters_json(session, cmdlet, parameters)?;
    let mut stream = session.call(session.broker().stream(session.run(), cmdlet, &parameters))?;
    while let Some(page) = session.call(session.broker().next_page(session.run(), &mut stream))? {
        if let Some(object) = page.into_iter().next() {
            return rhai::serde::to_dynamic(object);
        }
    }
    Ok(Dynamic::UNIT)
}

fn count(session: &Session, cmdlet: &str, parameters: &rhai::Map) -> Fallible<INT> {
    let parameters = parameters_json(session, cmdlet, parameters)?;
    let mut stream = session.call(session.broker().stream(session.run(), cmdlet, &parameters))?;
    let mut seen: INT = 0;
    while let Some(page) = session.call(session.broker().next_page(session.run(), &mut stream))? {
        seen = seen.saturating_add(INT::try_from(page.len()).unwrap_or(INT::MAX));
    }
    Ok(seen)
}

/// A `Results` read object by object (`for obj in exo::stream(…)`): each page is fetched when
/// the previous one is used up.
pub(super) struct Objects {
    results: Results,
    page: std::vec::IntoIter<Dynamic>,
    done: bool,
}

impl Iterator for Objects {
    type Item = Fallible<Dynamic>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(object) = self.page.next() {
                return Some(Ok(object));
            }
            if self.done {
                return None;
            }
            match self.results.next() {
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
                Ok(page) => match page.try_cast::<Array>() {
                    Some(page) => self.page = page.into_iter(),
                    // `()`: the results are done.
                    None => self.done = true,
                },
            }
        }
    }
}

impl IntoIterator for Results {
    type Item = Fallible<Dynamic>;
    type IntoIter = Objects;

    fn into_iter(self) -> Objects {
        Objects {
            results: self,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

/// Registers the helpers that need no host call on the run's engine.
pub(super) fn register(engine: &mut Engine) {
    engine.register_iterator_result::<Results, Dynamic>();

    engine.register_fn("sort_by", |rows: Array, key: ImmutableString| {
        sorted(rows, &key, false)
    });
    engine.register_fn(
        "sort_by",
        |rows: Array, key: ImmutableString, descending: bool| sorted(rows, &key, descending),
    );
    engine.register_fn("top", |rows: Array, key: ImmutableString, n: INT| {
        let mut rows = sorted(rows, &key, true);
        rows.truncate(usize::try_from(n).unwrap_or(0));
        rows
    });
    engine.register_fn(
        "group_by",
        |c: NativeCallContext, rows: Array, key: ImmutableString| group_by(&c, rows, &key),
    );
    engine.register_fn(
        "count_by",
        |c: NativeCallContext, rows: Array, key: ImmutableString| count_by(&c, &rows, &key),
    );
    engine.register_fn("select", |rows: Array, keys: Array| select(rows, &keys));
    engine.register_fn("size_bytes", |text: ImmutableString| size_bytes(&text));
    engine.register_fn("size_bytes", |_: ()| Dynamic::UNIT);
    engine.register_fn("domain_of", |address: ImmutableString| domain_of(&address));
    engine.register_fn("domain_of", |_: ()| Dynamic::UNIT);
    engine.register_fn("table", |c: NativeCallContext, rows: Array| {
        bounded(&c, table(&rows))
    });
    engine.register_fn("csv", |c: NativeCallContext, rows: Array| {
        bounded(&c, csv(&rows))
    });
}

/// The value of `key` in a row (`()` when the row is not a map or lacks it).
fn field(row: &Dynamic, key: &str) -> Dynamic {
    row.read_lock::<rhai::Map>()
        .and_then(|map| map.get(key).cloned())
        .unwrap_or(Dynamic::UNIT)
}

/// How values order: numbers by value, text case-insensitively, booleans false first; `()`
/// after everything, and different kinds by kind.
fn order(a: &Dynamic, b: &Dynamic) -> Ordering {
    fn rank(v: &Dynamic) -> u8 {
        if v.is_int() || v.is_float() {
            0
        } else if v.is_string() || v.is_char() {
            1
        } else if v.is_bool() {
            2
        } else if v.is_unit() {
            4
        } else {
            3
        }
    }
    fn number(v: &Dynamic) -> f64 {
        v.as_int()
            .map(|i| i as f64)
            .or_else(|_| v.as_float())
            .unwrap_or(0.0)
    }
    match (rank(a), rank(b)) {
        (0, 0) => match (a.as_int(), b.as_int()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => number(a).total_cmp(&number(b)),
        },
        (1, 1) => {
            let (x, y) = (a.to_string(), b.to_string());
            x.to_lowercase()
                .cmp(&y.to_lowercase())
                .then_with(|| x.cmp(&y))
        }
        (2, 2) => a
            .as_bool()
            .unwrap_or(false)
            .cmp(&b.as_bool().unwrap_or(false)),
        (x, y) => x.cmp(&y),
    }
}

/// Rows ordered by `key` (stable); `()` last either way.
fn sorted(mut rows: Array, key: &str, descending: bool) -> Array {
    rows.sort_by(|a, b| {
        let (x, y) = (field(a, key), field(b, key));
        match (x.is_unit(), y.is_unit()) {
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ if descending => order(&y, &x),
            _ => order(&x, &y),
        }
    });
    rows
}

/// A grouping key as map keys are: text as it is, `()` as the empty string, anything else as
/// Rhai prints it.
fn key_text(value: &Dynamic) -> ImmutableString {
    match value.read_lock::<ImmutableString>() {
        Some(text) => text.clone(),
        None if value.is_unit() => ImmutableString::new(),
        None => value.to_string().into(),
    }
}

fn group_by(context: &NativeCallContext, rows: Array, key: &str) -> Fallible<rhai::Map> {
    let mut groups = rhai::Map::new();
    let most = context.engine().max_map_size();
    for row in rows {
        let name = key_text(&field(&row, key));
        if most > 0 && groups.len() >= most && !groups.contains_key(name.as_str()) {
            return Err(too_large("Size of object map"));
        }
        groups
            .entry(name.as_str().into())
            .or_insert_with(|| Dynamic::from_array(Array::new()))
            .write_lock::<Array>()
            .expect("groups hold arrays")
            .push(row);
    }
    Ok(groups)
}

fn count_by(context: &NativeCallContext, rows: &Array, key: &str) -> Fallible<rhai::Map> {
    let mut counts = rhai::Map::new();
    let most = context.engine().max_map_size();
    for row in rows {
        let name = key_text(&field(row, key));
        if most > 0 && counts.len() >= most && !counts.contains_key(name.as_str()) {
            return Err(too_large("Size of object map"));
        }
        let slot = counts
            .entry(name.as_str().into())
            .or_insert_with(|| Dynamic::from_int(0));
        *slot = Dynamic::from_int(slot.as_int().unwrap_or(0).saturating_add(1));
    }
    Ok(counts)
}

/// Rows keeping only `keys` (in that order); a key a row lacks becomes `()`.
fn select(rows: Array, keys: &Array) -> Array {
    let keys: Vec<String> = keys.iter().map(|k| key_text(k).to_string()).collect();
    rows.into_iter()
        .map(|row| {
            let mut kept = rhai::Map::new();
            for key in &keys {
                kept.insert(key.as_str().into(), field(&row, key));
            }
            Dynamic::from_map(kept)
        })
        .collect()
}

/// Exchange's size text (`"94.466 MB (99,054,800 bytes)"`) as a number of bytes; a plain
/// number of bytes as it is; `()` when neither.
fn size_bytes(text: &str) -> Dynamic {
    let inner = match (text.rfind('('), text.rfind(" bytes)")) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        _ => text.trim(),
    };
    let digits: String = inner.chars().filter(|c| *c != ',').collect();
    digits
        .parse::<INT>()
        .map(Dynamic::from_int)
        .unwrap_or(Dynamic::UNIT)
}

/// The domain of an address (`smtp:` read past), lowercased; `()` without an `@`.
fn domain_of(address: &str) -> Dynamic {
    let address = address
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("smtp:"))
        .map_or(address, |_| &address[5..]);
    match address.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => domain.to_ascii_lowercase().into(),
        _ => Dynamic::UNIT,
    }
}

/// The columns of a set of rows: every key, in the order first seen.
fn columns(rows: &Array) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for row in rows {
        if let Some(map) = row.read_lock::<rhai::Map>() {
            for key in map.keys() {
                if !seen.iter().any(|k| k == key.as_str()) {
                    seen.push(key.to_string());
                }
            }
        }
    }
    seen
}

/// A cell's text: strings as they are, `()` empty, anything else as Rhai prints it.
fn cell(value: &Dynamic) -> String {
    if value.is_unit() {
        return String::new();
    }
    match value.read_lock::<ImmutableString>() {
        Some(text) => text.to_string(),
        None => value.to_string(),
    }
}

/// Bytes a result will take, measured before it is built (so a limit refuses it first).
struct Sized<F: FnOnce() -> String> {
    bytes: usize,
    build: F,
}

fn bounded<F: FnOnce() -> String>(
    context: &NativeCallContext,
    sized: Sized<F>,
) -> Fallible<ImmutableString> {
    let max = context.engine().max_string_size();
    if max > 0 && sized.bytes > max {
        return Err(too_large("Length of string"));
    }
    Ok((sized.build)().into())
}

/// Rows as an aligned text table (cells cut to [`TABLE_CELL_CHARS`], line breaks shown as
/// spaces); a value that is not a map is one row of one `value` column.
fn table(rows: &Array) -> Sized<impl FnOnce() -> String + '_> {
    let mut names = columns(rows);
    let plain = names.is_empty() && !rows.is_empty();
    if plain {
        names.push("value".into());
    }
    let text = move |row: &Dynamic, name: &str| -> String {
        let value = if plain { row.clone() } else { field(row, name) };
        let shown: String = cell(&value)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if shown.chars().count() > TABLE_CELL_CHARS {
            let mut cut: String = shown.chars().take(TABLE_CELL_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            shown
        }
    };
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in rows {
        for (i, name) in names.iter().enumerate() {
            widths[i] = widths[i].max(text(row, name).chars().count());
        }
    }
    // Characters are at most 4 bytes; the measure is an upper bound.
    let line = widths.iter().map(|w| w * 4 + 2).sum::<usize>() + 1;
    let bytes = line.saturating_mul(rows.len() + 2);
    Sized {
        bytes,
        build: move || {
            let mut out = String::new();
            let pad = |out: &mut String, text: &str, width: usize| {
                out.push_str(text);
                let fill = width - text.chars().count();
                out.extend(std::iter::repeat_n(' ', fill + 2));
            };
            for (i, name) in names.iter().enumerate() {
                pad(&mut out, name, widths[i]);
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            for (i, width) in widths.iter().enumerate() {
                pad(&mut out, &"-".repeat(*width), *width);
                let _ = i;
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            for row in rows {
                for (i, name) in names.iter().enumerate() {
                    pad(&mut out, &text(row, name), widths[i]);
                }
                out.truncate(out.trim_end().len());
                out.push('\n');
            }
            out
        },
    }
}

/// Rows as CSV (RFC 4180: a field with a comma, quote or line break is quoted, quotes
/// doubled); a header of every key.
fn csv(rows: &Array) -> Sized<impl FnOnce() -> String + '_> {
    let mut names = columns(rows);
    let plain = names.is_empty() && !rows.is_empty();
    if plain {
        names.push("value".into());
    }
    fn quoted(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    }
    let value = move |row: &Dynamic, name: &str| -> String {
        if plain {
            cell(row)
        } else {
            cell(&field(row, name))
        }
    };
    let mut bytes = names.iter().map(|n| quoted(n).len() + 1).sum::<usize>() + 1;
    for row in rows {
        for name in &names {
            let text = value(row, name);
            // Quoting at most doubles a field and adds two quotes.
            bytes = bytes.saturating_add(text.len() * 2 + 3);
        }
        bytes += 1;
    }
    Sized {
        bytes,
        build: move || {
            let mut out = String::new();
            let header: Vec<String> = names.iter().map(|n| quoted(n)).collect();
            out.push_str(&header.join(","));
            out.push('\n');
            for row in rows {
                let fields: Vec<String> = names.iter().map(|n| quoted(&value(row, n))).collect();
                out.push_str(&fields.join(","));
                out.push('\n');
            }
            out
        },
    }
}

fn too_large(what: &str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorDataTooLarge(what.into(), Position::NONE).into()
}
