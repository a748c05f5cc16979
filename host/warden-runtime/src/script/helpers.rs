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
use super::surface::{Results, at, start_stream};
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
    let mut stream = start_stream(session, cmdlet, parameters)?;
    while let Some(page) = session.call(session.broker().next_page(session.run(), &mut stream))? {
        if let Some(object) = page.into_iter().next() {
            return rhai::serde::to_dynamic(object);
        }
    }
    Ok(Dynamic::UNIT)
}

fn count(session: &Session, cmdlet: &str, parameters: &rhai::Map) -> Fallible<INT> {
    let mut stream = start_stream(session, cmdlet, parameters)?;
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
    engine.register_fn(
        "select",
        |c: NativeCallContext, rows: Array, keys: Array| select(&c, rows, &keys),
    );
    engine.register_fn("size_bytes", |text: ImmutableString| size_bytes(&text));
    engine.register_fn("size_bytes", |_: ()| Dynamic::UNIT);
    engine.register_fn("domain_of", |address: ImmutableString| domain_of(&address));
    engine.register_fn("domain_of", |_: ()| Dynamic::UNIT);
    engine.register_fn("table", |c: NativeCallContext, rows: Array| {
        table(&rows, string_limit(&c)).map(ImmutableString::from)
    });
    engine.register_fn("csv", |c: NativeCallContext, rows: Array| {
        csv(&rows, string_limit(&c)).map(ImmutableString::from)
    });
}

/// The engine's string limit (`usize::MAX` when unlimited).
fn string_limit(context: &NativeCallContext) -> usize {
    match context.engine().max_string_size() {
        0 => usize::MAX,
        max => max,
    }
}

/// The value of `key` in a row (`()` when the row is not a map or lacks it).
fn field(row: &Dynamic, key: &str) -> Dynamic {
    row.read_lock::<rhai::Map>()
        .and_then(|map| map.get(key).cloned())
        .unwrap_or(Dynamic::UNIT)
}

/// Text written up to `room` bytes; past that the writer refuses, which stops the formatting
/// of even a huge value at the cut instead of after it.
struct Capped {
    text: String,
    room: usize,
    overflowed: bool,
}

impl Capped {
    fn new(room: usize) -> Self {
        Capped {
            text: String::new(),
            room,
            overflowed: false,
        }
    }
}

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let left = self.room - self.text.len();
        if s.len() <= left {
            self.text.push_str(s);
            return Ok(());
        }
        let mut cut = left;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&s[..cut]);
        self.overflowed = true;
        Err(std::fmt::Error)
    }
}

/// A value's text as cells and keys show it (strings as they are, `()` empty, anything else as
/// Rhai prints it), at most `room` bytes; `None` when it is longer.
fn text_within(value: &Dynamic, room: usize) -> Option<String> {
    use std::fmt::Write;
    if value.is_unit() {
        return Some(String::new());
    }
    if let Some(text) = value.read_lock::<ImmutableString>() {
        return (text.len() <= room).then(|| text.to_string());
    }
    let mut capped = Capped::new(room);
    let _ = write!(capped, "{value}");
    (!capped.overflowed).then_some(capped.text)
}

/// A value's text cut to its first `room` bytes (never formatting more than that).
fn text_prefix(value: &Dynamic, room: usize) -> String {
    use std::fmt::Write;
    if value.is_unit() {
        return String::new();
    }
    let mut capped = Capped::new(room);
    match value.read_lock::<ImmutableString>() {
        Some(text) => {
            let _ = capped.write_str(&text);
        }
        None => {
            let _ = write!(capped, "{value}");
        }
    }
    capped.text
}

/// What a row sorts by, worked out once per row.
enum SortKey {
    Int(INT),
    Float(f64),
    Text(ImmutableString),
    Char(char),
    Bool(bool),
    Other,
    Missing,
}

impl SortKey {
    fn of(value: &Dynamic) -> Self {
        if let Ok(i) = value.as_int() {
            SortKey::Int(i)
        } else if let Ok(f) = value.as_float() {
            SortKey::Float(f)
        } else if let Some(text) = value.read_lock::<ImmutableString>() {
            SortKey::Text(text.clone())
        } else if let Ok(c) = value.as_char() {
            SortKey::Char(c)
        } else if let Ok(b) = value.as_bool() {
            SortKey::Bool(b)
        } else if value.is_unit() {
            SortKey::Missing
        } else {
            SortKey::Other
        }
    }

    /// Kinds in order: numbers, text, booleans, anything else, `()`.
    fn rank(&self) -> u8 {
        match self {
            SortKey::Int(_) | SortKey::Float(_) => 0,
            SortKey::Text(_) | SortKey::Char(_) => 1,
            SortKey::Bool(_) => 2,
            SortKey::Other => 3,
            SortKey::Missing => 4,
        }
    }
}

/// An integer against a float by exact value (no rounding through `f64`); NaN after every
/// number.
fn int_float(i: INT, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    // 2^63 is exact as a float; every INT lies in [-2^63, 2^63).
    const EDGE: f64 = 9_223_372_036_854_775_808.0;
    if f >= EDGE {
        return Ordering::Less;
    }
    if f < -EDGE {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // In range and integral, so the conversion is exact.
    let whole_int = whole as INT;
    i.cmp(&whole_int).then_with(|| {
        let fraction = f - whole;
        if fraction > 0.0 {
            Ordering::Less
        } else if fraction < 0.0 {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    })
}

/// Two floats by value (`-0.0` equals `0.0`, so ints and floats agree); NaNs last, all equal.
fn float_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Text case-insensitively, then exactly; without building a lowercased copy.
fn text_order(a: &str, b: &str) -> Ordering {
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
        .then_with(|| a.cmp(b))
}

/// How sort keys order: numbers by exact value, text case-insensitively, booleans false
/// first, different kinds by kind. A total order, so sorting never panics.
fn order(a: &SortKey, b: &SortKey) -> Ordering {
    use SortKey::*;
    let mut buffers = ([0u8; 4], [0u8; 4]);
    match (a, b) {
        (Int(x), Int(y)) => x.cmp(y),
        (Int(x), Float(y)) => int_float(*x, *y),
        (Float(x), Int(y)) => int_float(*y, *x).reverse(),
        (Float(x), Float(y)) => float_float(*x, *y),
        (Text(_) | Char(_), Text(_) | Char(_)) => {
            let x: &str = match a {
                Text(t) => t,
                Char(c) => c.encode_utf8(&mut buffers.0),
                _ => unreachable!(),
            };
            let y: &str = match b {
                Text(t) => t,
                Char(c) => c.encode_utf8(&mut buffers.1),
                _ => unreachable!(),
            };
            text_order(x, y)
        }
        (Bool(x), Bool(y)) => x.cmp(y),
        _ => a.rank().cmp(&b.rank()),
    }
}

/// Rows ordered by `key` (stable); `()` last either way. Each row's key is read once.
fn sorted(rows: Array, key: &str, descending: bool) -> Array {
    let mut keyed: Vec<(SortKey, Dynamic)> = rows
        .into_iter()
        .map(|row| (SortKey::of(&field(&row, key)), row))
        .collect();
    keyed.sort_by(|(x, _), (y, _)| match (x, y) {
        (SortKey::Missing, SortKey::Missing) => Ordering::Equal,
        (SortKey::Missing, _) => Ordering::Greater,
        (_, SortKey::Missing) => Ordering::Less,
        _ if descending => order(y, x),
        _ => order(x, y),
    });
    keyed.into_iter().map(|(_, row)| row).collect()
}

/// Grouping keys as map keys are: text as it is, `()` as the empty string, anything else as
/// Rhai prints it; their distinct text together within the string limit, and at most the map
/// limit of them.
struct KeyTexts {
    room: usize,
    most: usize,
}

impl KeyTexts {
    fn new(context: &NativeCallContext) -> Self {
        KeyTexts {
            room: string_limit(context),
            most: match context.engine().max_map_size() {
                0 => usize::MAX,
                most => most,
            },
        }
    }

    /// The key of `value`, charging its text when `seen` does not hold it yet.
    fn key(&mut self, value: &Dynamic, seen: &rhai::Map) -> Fallible<ImmutableString> {
        let text: ImmutableString = match value.read_lock::<ImmutableString>() {
            Some(text) => text.clone(),
            None => text_within(value, self.room)
                .ok_or_else(|| too_large("Length of string"))?
                .into(),
        };
        if !seen.contains_key(text.as_str()) {
            if seen.len() >= self.most {
                return Err(too_large("Size of object map"));
            }
            self.room = self
                .room
                .checked_sub(text.len())
                .ok_or_else(|| too_large("Length of string"))?;
        }
        Ok(text)
    }
}

fn group_by(context: &NativeCallContext, rows: Array, key: &str) -> Fallible<rhai::Map> {
    let mut groups = rhai::Map::new();
    let mut keys = KeyTexts::new(context);
    for row in rows {
        let name = keys.key(&field(&row, key), &groups)?;
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
    let mut keys = KeyTexts::new(context);
    for row in rows {
        let name = keys.key(&field(row, key), &counts)?;
        let slot = counts
            .entry(name.as_str().into())
            .or_insert_with(|| Dynamic::from_int(0));
        *slot = Dynamic::from_int(slot.as_int().unwrap_or(0).saturating_add(1));
    }
    Ok(counts)
}

/// Rows keeping only `keys` (in that order); a key a row lacks becomes `()`. Refused before
/// anything is built when the result would hold more entries than the map limit allows (all
/// rows' entries together, as the engine counts them) or more rows than the array limit.
fn select(context: &NativeCallContext, rows: Array, keys: &Array) -> Fallible<Array> {
    let engine = context.engine();
    let limit = |max: usize| if max == 0 { usize::MAX } else { max };
    if rows.len() > limit(engine.max_array_size()) {
        return Err(too_large("Size of array"));
    }
    let entries = rows.len().saturating_mul(keys.len());
    if keys.len() > limit(engine.max_map_size()) || entries > limit(engine.max_map_size()) {
        return Err(too_large("Size of object map"));
    }
    let mut texts = KeyTexts::new(context);
    let mut names = rhai::Map::new();
    let mut kept_keys = Vec::with_capacity(keys.len());
    for key in keys {
        let text = texts.key(key, &names)?;
        names.insert(text.as_str().into(), Dynamic::UNIT);
        kept_keys.push(text);
    }
    let keys = kept_keys;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut kept = rhai::Map::new();
            for key in &keys {
                kept.insert(key.as_str().into(), field(&row, key));
            }
            Dynamic::from_map(kept)
        })
        .collect())
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

/// Most columns `table` shows: a screen's worth (as `--output table` does).
const TABLE_COLUMNS: usize = 16;
/// Most columns `csv` writes (as `--output csv` does).
const CSV_COLUMNS: usize = 64;

/// The columns of a set of rows: keys in the order first seen, at most `most` of them.
/// `value` alone when no row is a map.
fn columns(rows: &Array, most: usize) -> (Vec<ImmutableString>, bool) {
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<ImmutableString> = Vec::new();
    'rows: for row in rows {
        if let Some(map) = row.read_lock::<rhai::Map>() {
            for key in map.keys() {
                if names.len() >= most {
                    break 'rows;
                }
                if seen.insert(key.clone()) {
                    names.push(key.as_str().into());
                }
            }
        }
    }
    let plain = names.is_empty() && !rows.is_empty();
    if plain {
        names.push("value".into());
    }
    (names, plain)
}

/// The cells of `rows` under `names` (each made by `cell`), refused as soon as their text
/// together passes `max` bytes.
fn cells(
    rows: &Array,
    names: &[ImmutableString],
    plain: bool,
    max: usize,
    cell: impl Fn(&Dynamic, usize) -> Fallible<String>,
) -> Fallible<Vec<Vec<String>>> {
    let mut total = 0usize;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut line = Vec::with_capacity(names.len());
        for name in names {
            let value = if plain { row.clone() } else { field(row, name) };
            let text = cell(&value, max - total)?;
            total += text.len();
            line.push(text);
        }
        out.push(line);
    }
    Ok(out)
}

/// Rows as an aligned text table (at most [`TABLE_COLUMNS`] columns, cells cut to
/// [`TABLE_CELL_CHARS`], line breaks shown as spaces); a value that is not a map is one row of
/// one `value` column.
fn table(rows: &Array, max: usize) -> Fallible<String> {
    let (names, plain) = columns(rows, TABLE_COLUMNS);
    let shown = |text: &str| -> String {
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.chars().count() > TABLE_CELL_CHARS {
            let mut cut: String = text.chars().take(TABLE_CELL_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            text
        }
    };
    // A cell shows at most TABLE_CELL_CHARS characters of at most 4 bytes: read no more.
    let cells = cells(rows, &names, plain, max, |value, room| {
        let text = shown(&text_prefix(value, (TABLE_CELL_CHARS + 1) * 4));
        if text.len() > room {
            return Err(too_large("Length of string"));
        }
        Ok(text)
    })?;
    let names: Vec<String> = names.iter().map(|n| shown(n)).collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for line in &cells {
        for (width, text) in widths.iter_mut().zip(line) {
            *width = (*width).max(text.chars().count());
        }
    }
    // Characters are at most 4 bytes; the measure is an upper bound.
    let line = widths.iter().map(|w| w * 4 + 2).sum::<usize>() + 1;
    if line.saturating_mul(cells.len() + 2) > max {
        return Err(too_large("Length of string"));
    }
    let mut out = String::new();
    let row = |out: &mut String, texts: &mut dyn Iterator<Item = &str>| {
        for (text, width) in texts.zip(&widths) {
            out.push_str(text);
            let fill = width - text.chars().count();
            out.extend(std::iter::repeat_n(' ', fill + 2));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    row(&mut out, &mut names.iter().map(String::as_str));
    let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    row(&mut out, &mut rules.iter().map(String::as_str));
    for line in &cells {
        row(&mut out, &mut line.iter().map(String::as_str));
    }
    Ok(out)
}

/// Rows as CSV (RFC 4180: a field with a comma, quote or line break is quoted, quotes
/// doubled); a header of the keys (at most [`CSV_COLUMNS`]).
fn csv(rows: &Array, max: usize) -> Fallible<String> {
    let (names, plain) = columns(rows, CSV_COLUMNS);
    fn quoted(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    }
    let cells = cells(rows, &names, plain, max, |value, room| {
        text_within(value, room).ok_or_else(|| too_large("Length of string"))
    })?;
    let mut out = String::new();
    let line = |out: &mut String, fields: &mut dyn Iterator<Item = &str>| -> Fallible<()> {
        for (i, field) in fields.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&quoted(field));
        }
        out.push('\n');
        if out.len() > max {
            return Err(too_large("Length of string"));
        }
        Ok(())
    };
    line(&mut out, &mut names.iter().map(ImmutableString::as_str))?;
    for fields in &cells {
        line(&mut out, &mut fields.iter().map(String::as_str))?;
    }
    Ok(out)
}

fn too_large(what: &str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorDataTooLarge(what.into(), Position::NONE).into()
}
