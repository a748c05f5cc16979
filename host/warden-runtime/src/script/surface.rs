//! The Rhai engine a script runs in: a raw engine with only the packages a script needs, the
//! limits, and the host API (`exo::*`, `log::*`, `progress`, `print`, `debug`) bound to one run.
//!
//! It refuses every ambient capability Rhai could otherwise offer: no module resolver (`import`
//! is a syntax error), no `eval`, no time package, no blocking `sleep`, no stdout. Host
//! functions turn script values into the same parameter JSON a wasm plugin would send, and
//! broker errors into catchable maps.

use super::json;
use super::session::Session;
use crate::{LogLevel, LogSource};
use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, CorePackage, LogicPackage,
    MoreStringPackage, Package,
};
use rhai::{
    Dynamic, Engine, EvalAltResult, FLOAT, FnPtr, FuncRegistration, INT, ImmutableString, Module,
    NativeCallContext, Position, Shared,
};
use std::sync::{Arc, Mutex};
use warden_broker::{BrokeredStream, GuestError};
use warden_policy::GivenParameters;

/// A package or module as engines share it.
pub(super) type SharedModule = Shared<Module>;

/// Operations a run may take before it is stopped. Rhai counts roughly one per expression
/// node; at ~10–50 M operations a second this is seconds of pure interpretation, long enough
/// for any honest report script, short enough that a runaway loop ends well before the usual
/// CPU budget. The CPU and wall-clock budgets stop it earlier when they are tighter.
pub(super) const MAX_OPERATIONS: u64 = 50_000_000;
/// Nested function calls. Each level takes native stack; the script thread gets a stack sized
/// for this ([`super::SCRIPT_STACK_BYTES`]).
pub(super) const MAX_CALL_LEVELS: usize = 64;
/// How deep a script's expressions may nest (and so how deep anything that parses one recurses).
pub const MAX_EXPR_DEPTH: usize = 64;
/// How deep expressions may nest inside a function body.
pub const MAX_FN_EXPR_DEPTH: usize = 32;
/// The largest string whatever the memory budget: no report needs more in one value.
const MAX_STRING_BYTES: u64 = 16 * 1024 * 1024;
/// Items in one array (each item is a 16-byte `Dynamic` plus what it holds).
const MAX_ARRAY_ITEMS: u64 = 1_000_000;
/// Entries in one object map.
const MAX_MAP_ENTRIES: u64 = 100_000;
/// What one array item or map entry may cost in its own bytes (a 16-byte `Dynamic`, a string
/// box, a map node's share): a value's count limit is its share of the memory budget divided
/// by this, so building one value in one operation stays a fraction of the budget.
const ITEM_BYTES: u64 = 64;
/// The fraction of the memory budget one value may take: one operation (building, copying or
/// splitting one value) then goes at most that far past the budget before it is stopped.
const VALUE_SHARE: u64 = 8;
/// Variables alive at once, and functions a script may define.
const MAX_VARIABLES: usize = 10_000;
const MAX_FUNCTIONS: usize = 1_000;
/// How many operations pass between two readings of the clocks (the cancellation flag is
/// checked on every one).
const CLOCK_EVERY: u64 = 1024;

/// Per-value size limits, derived from a memory budget. The budget itself is enforced by the
/// allocator (`memory`) between operations; these keep any one value, and so any one
/// operation that builds, copies or splits it, to an eighth of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sizes {
    pub(super) string_bytes: usize,
    pub(super) array_items: usize,
    pub(super) map_entries: usize,
}

impl Sizes {
    pub(super) fn for_memory(memory_bytes: u64) -> Self {
        let clamp = |n: u64| usize::try_from(n.max(1)).unwrap_or(usize::MAX);
        Sizes {
            string_bytes: clamp((memory_bytes / VALUE_SHARE).min(MAX_STRING_BYTES)),
            array_items: clamp((memory_bytes / VALUE_SHARE / ITEM_BYTES).min(MAX_ARRAY_ITEMS)),
            map_entries: clamp((memory_bytes / VALUE_SHARE / ITEM_BYTES).min(MAX_MAP_ENTRIES)),
        }
    }
}

/// The standard packages a script gets, built once per host (they hold no state).
pub(super) fn packages() -> Vec<SharedModule> {
    vec![
        // Language core, arithmetic, strings, iterators, function pointers and closures.
        CorePackage::new().as_shared_module(),
        LogicPackage::new().as_shared_module(),
        BasicMathPackage::new().as_shared_module(),
        BasicArrayPackage::new().as_shared_module(),
        BasicMapPackage::new().as_shared_module(),
        MoreStringPackage::new().as_shared_module(),
    ]
}

/// An engine with the language surface and limits, but no host API.
fn base(packages: &[SharedModule], sizes: Sizes) -> Engine {
    let mut engine = Engine::new_raw();
    for package in packages {
        engine.register_global_module(package.clone());
    }
    // `eval` would compile code past every check made here; `import` would need a resolver
    // (new_raw's resolver refuses anyway, this makes it a syntax error up front).
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    // The core package's `sleep` blocks the thread where no operation is counted, so neither
    // deadline could stop it. Functions in the global namespace shadow the packages'.
    engine.register_fn("sleep", |_: INT| -> Result<(), Box<EvalAltResult>> {
        Err("sleep is not available to scripts".into())
    });
    engine.register_fn("sleep", |_: FLOAT| -> Result<(), Box<EvalAltResult>> {
        Err("sleep is not available to scripts".into())
    });
    guard_builtins(&mut engine);
    engine.set_strict_variables(true);
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH);
    engine.set_max_string_size(sizes.string_bytes);
    engine.set_max_array_size(sizes.array_items);
    engine.set_max_map_size(sizes.map_entries);
    engine.set_max_variables(MAX_VARIABLES);
    engine.set_max_functions(MAX_FUNCTIONS);
    engine
}

/// Replaces the built-ins whose result Rhai measures only after building it, and that can
/// build far more than their inputs in one operation: `replace` (a string times the number of
/// matches) and `split`/`split_rev`/`to_chars` (a string of n bytes becomes up to n + 1 boxed
/// strings, ~60 bytes each). These versions count first and refuse a result over the size
/// limits, then build it as Rhai does. `pad` is replaced because Rhai's pushes one character
/// at a time (16 MB took seconds in one operation, past any CPU check) and never ends with
/// an empty padding string.
fn guard_builtins(engine: &mut Engine) {
    type S = ImmutableString;
    type Ctx<'a> = NativeCallContext<'a>;
    engine.register_fn("replace", |c: Ctx, s: &mut S, find: S, to: S| {
        replace(&c, s, &find, &to)
    });
    engine.register_fn("replace", |c: Ctx, s: &mut S, find: S, to: char| {
        replace(&c, s, &find, to.encode_utf8(&mut [0; 4]))
    });
    engine.register_fn("replace", |c: Ctx, s: &mut S, find: char, to: S| {
        replace(&c, s, find.encode_utf8(&mut [0; 4]), &to)
    });
    engine.register_fn("replace", |c: Ctx, s: &mut S, find: char, to: char| {
        replace(
            &c,
            s,
            find.encode_utf8(&mut [0; 4]),
            to.encode_utf8(&mut [0; 4]),
        )
    });

    engine.register_fn("pad", |c: Ctx, s: &mut S, len: INT, with: char| {
        pad(&c, s, len, with.encode_utf8(&mut [0; 4]))
    });
    engine.register_fn("pad", |c: Ctx, s: &mut S, len: INT, with: S| {
        pad(&c, s, len, &with)
    });

    engine.register_fn("to_chars", |c: Ctx, s: &mut S| -> Fallible<rhai::Array> {
        if s.is_empty() {
            return Ok(rhai::Array::new());
        }
        pieces(&c, s, s.chars())
    });
    engine.register_fn("split", |c: Ctx, s: &mut S| -> Fallible<rhai::Array> {
        if s.is_empty() {
            return Ok(vec![s.clone().into()]);
        }
        pieces(&c, s, s.split_whitespace())
    });
    engine.register_fn("split", |c: Ctx, s: &mut S, at: S| {
        pieces(&c, s, s.split(at.as_str()))
    });
    engine.register_fn("split", |c: Ctx, s: &mut S, at: char| {
        pieces(&c, s, s.split(at))
    });
    engine.register_fn("split", |c: Ctx, s: &mut S, at: S, n: INT| {
        pieces(&c, s, s.splitn(segments(n), at.as_str()))
    });
    engine.register_fn("split", |c: Ctx, s: &mut S, at: char, n: INT| {
        pieces(&c, s, s.splitn(segments(n), at))
    });
    engine.register_fn("split_rev", |c: Ctx, s: &mut S, at: S| {
        pieces(&c, s, s.rsplit(at.as_str()))
    });
    engine.register_fn("split_rev", |c: Ctx, s: &mut S, at: char| {
        pieces(&c, s, s.rsplit(at))
    });
    engine.register_fn("split_rev", |c: Ctx, s: &mut S, at: S, n: INT| {
        pieces(&c, s, s.rsplitn(segments(n), at.as_str()))
    });
    engine.register_fn("split_rev", |c: Ctx, s: &mut S, at: char, n: INT| {
        pieces(&c, s, s.rsplitn(segments(n), at))
    });
}

/// Rhai's `replace`, refused before it builds a string over the size limit, or makes more
/// replacements than an array may hold items (each costs about as much as a split's piece).
fn replace(
    context: &NativeCallContext,
    string: &mut ImmutableString,
    find: &str,
    to: &str,
) -> Fallible<()> {
    let most = context.engine().max_array_size();
    let matches = string.matches(find).take(most.saturating_add(1)).count();
    if most > 0 && matches > most {
        return Err(too_large("Number of replacements"));
    }
    let length =
        (string.len() - matches * find.len()).saturating_add(matches.saturating_mul(to.len()));
    let max = context.engine().max_string_size();
    if max > 0 && length > max {
        return Err(too_large("Length of string"));
    }
    *string = string.replace(find, to).into();
    Ok(())
}

/// Rhai's `pad` (to `len` characters, repeating `padding` and cutting its last copy), sized
/// and refused up front. An empty padding changes nothing.
fn pad(
    context: &NativeCallContext,
    string: &mut ImmutableString,
    len: INT,
    padding: &str,
) -> Fallible<()> {
    let max = context.engine().max_string_size();
    let len = usize::try_from(len).unwrap_or(0);
    if len == 0 || padding.is_empty() {
        return Ok(());
    }
    if max > 0 && len > max {
        return Err(too_large("Length of string"));
    }
    let have = string.chars().count();
    if len <= have {
        return Ok(());
    }
    let (missing, per_copy) = (len - have, padding.chars().count());
    let (copies, rest) = (missing / per_copy, missing % per_copy);
    let tail: String = padding.chars().take(rest).collect();
    let bytes = string.len() + copies * padding.len() + tail.len();
    if max > 0 && bytes > max {
        return Err(too_large("Length of string"));
    }
    // `repeat` and `concat` are the standard library's (optimised even in a debug build).
    *string = [string.as_str(), &padding.repeat(copies), &tail]
        .concat()
        .into();
    Ok(())
}

/// Rhai's split results (one piece of an empty string: the string), refused before they are
/// built when there would be more pieces than an array may hold.
fn pieces<'a, T: Into<Dynamic>>(
    context: &NativeCallContext,
    string: &ImmutableString,
    pieces: impl Iterator<Item = T> + Clone + 'a,
) -> Fallible<rhai::Array> {
    let max = context.engine().max_array_size();
    if max > 0 && pieces.clone().count() > max {
        return Err(too_large("Size of array"));
    }
    if string.is_empty() {
        return Ok(vec![string.clone().into()]);
    }
    Ok(pieces.map(Into::into).collect())
}

/// `splitn`'s count as Rhai reads it (1 or less: the whole string).
fn segments(n: INT) -> usize {
    usize::try_from(n).unwrap_or(0).max(1)
}

fn too_large(what: &str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorDataTooLarge(what.into(), Position::NONE).into()
}

/// The engine that parses scripts: it knows the `exo` and `log` namespaces exist (strict
/// variables checks them) but cannot call anything.
pub(super) fn compiler(packages: &[SharedModule], sizes: Sizes) -> Engine {
    let mut engine = base(packages, sizes);
    engine.register_static_module("exo", Module::new().into());
    engine.register_static_module("log", Module::new().into());
    engine
}

/// The engine for one run, its host API bound to `session`.
pub(super) fn for_run(packages: &[SharedModule], sizes: Sizes, session: &Arc<Session>) -> Engine {
    let mut engine = base(packages, sizes);

    let s = session.clone();
    engine.on_progress(move |operations| s.check(operations, CLOCK_EVERY));
    let s = session.clone();
    engine.on_print(move |text| s.log(LogSource::Stdout, LogLevel::Info, text));
    let s = session.clone();
    engine.on_debug(move |text, _, _| s.log(LogSource::Stderr, LogLevel::Debug, text));

    engine.register_static_module("exo", exo_module(session).into());
    engine.register_static_module("log", log_module(session).into());

    engine.register_type_with_name::<Results>("Results");
    engine.register_fn("next", Results::next);
    super::helpers::register(&mut engine);

    let s = session.clone();
    engine.register_fn(
        "progress",
        move |done: INT, total: INT, label: ImmutableString| {
            s.progress(count(done), Some(count(total)), &label);
        },
    );
    let s = session.clone();
    engine.register_fn(
        "progress",
        move |done: INT, _: (), label: ImmutableString| {
            s.progress(count(done), None, &label);
        },
    );
    engine
}

fn count(n: INT) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// Registers a host function in a module. Volatile: the optimizer must never call it.
macro_rules! host_fn {
    ($module:expr, $name:expr, $func:expr $(,)?) => {
        FuncRegistration::new($name)
            .with_volatility(true)
            .set_into_module($module, $func)
    };
}

fn exo_module(session: &Arc<Session>) -> Module {
    let mut module = Module::new();
    let no_parameters = rhai::Map::new;

    let s = session.clone();
    host_fn!(
        &mut module,
        "invoke",
        move |context: NativeCallContext, cmdlet: ImmutableString| {
            at(&context, invoke(&s, &cmdlet, &no_parameters()))
        }
    );
    let s = session.clone();
    host_fn!(
        &mut module,
        "invoke",
        move |context: NativeCallContext, cmdlet: ImmutableString, parameters: rhai::Map| {
            at(&context, invoke(&s, &cmdlet, &parameters))
        }
    );

    let s = session.clone();
    host_fn!(
        &mut module,
        "batch",
        move |context: NativeCallContext, calls: rhai::Array| { at(&context, batch(&s, &calls)) }
    );

    let s = session.clone();
    host_fn!(
        &mut module,
        "stream",
        move |context: NativeCallContext, cmdlet: ImmutableString| {
            at(&context, Results::start(&s, &cmdlet, &no_parameters()))
        }
    );
    let s = session.clone();
    host_fn!(
        &mut module,
        "stream",
        move |context: NativeCallContext, cmdlet: ImmutableString, parameters: rhai::Map| {
            at(&context, Results::start(&s, &cmdlet, &parameters))
        }
    );

    let s = session.clone();
    host_fn!(
        &mut module,
        "for_each",
        move |context: NativeCallContext, cmdlet: ImmutableString, each: FnPtr| {
            let seen = for_each(&s, &context, &cmdlet, &no_parameters(), &each);
            at(&context, seen)
        }
    );
    let s = session.clone();
    host_fn!(
        &mut module,
        "for_each",
        move |context: NativeCallContext,
              cmdlet: ImmutableString,
              parameters: rhai::Map,
              each: FnPtr| {
            let seen = for_each(&s, &context, &cmdlet, &parameters, &each);
            at(&context, seen)
        }
    );

    let s = session.clone();
    host_fn!(&mut module, "grants", move || -> Fallible<Dynamic> {
        rhai::serde::to_dynamic(s.broker().grants(s.run()))
    });
    let s = session.clone();
    host_fn!(&mut module, "usage", move || -> Fallible<Dynamic> {
        rhai::serde::to_dynamic(s.run().usage())
    });
    super::helpers::add_to_exo(&mut module, session);
    module
}

/// Rhai gives errors from namespaced host functions no position; the call's is the one a
/// script author needs.
pub(super) fn at<T>(context: &NativeCallContext, result: Fallible<T>) -> Fallible<T> {
    result.map_err(|mut error| {
        if error.position().is_none() {
            error.set_position(context.call_position());
        }
        error
    })
}

fn log_module(session: &Arc<Session>) -> Module {
    let mut module = Module::new();
    for (name, level) in [
        ("trace", LogLevel::Trace),
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        let s = session.clone();
        host_fn!(&mut module, name, move |message: Dynamic| {
            match message.read_lock::<ImmutableString>() {
                Some(text) => s.log(LogSource::Guest, level, &text),
                None => s.log(LogSource::Guest, level, &message.to_string()),
            }
        });
    }
    module
}

/// The parameter map as the JSON object a wasm plugin would pass, written only when the policy
/// reads it (a call refused by its cmdlet's name past the run's written refusals never is). A
/// map with no JSON form is refused by the broker as JSON that does not parse, and audited
/// like it. Written inside the host call, it is booked as the script's work: a wasm guest
/// writes its own JSON on its own clock.
fn parameters_json<'m>(
    session: &'m Session,
    parameters: &'m rhai::Map,
) -> impl Fn() -> Result<String, String> + Sync + 'm {
    move || {
        let started = std::time::Instant::now();
        let text = map_as_json(parameters);
        session.book_guest_within_host(started.elapsed());
        text
    }
}

/// A script's parameter map as JSON text, or why it has none (a value with no JSON form,
/// nesting past the limit), as the refusal's reason gives it.
fn map_as_json(parameters: &rhai::Map) -> Result<String, String> {
    match json::map_to_json(parameters) {
        // Written into a buffer (io::Write), not through `Display`'s formatter.
        Ok(value) => Ok(serde_json::to_string(&value).unwrap_or_else(|_| value.to_string())),
        Err(problem) => Err(format!("parameters: {problem}")),
    }
}

/// Decides, audits and starts a script's call (`Broker::stream`), its map written as JSON only
/// if the policy reads it.
pub(super) fn start_stream(
    session: &Session,
    cmdlet: &str,
    parameters: &rhai::Map,
) -> Fallible<BrokeredStream> {
    let parameters = parameters_json(session, parameters);
    session.call(session.broker().stream(
        session.run(),
        cmdlet,
        GivenParameters::Deferred(&parameters),
    ))
}

fn invoke(session: &Session, cmdlet: &str, parameters: &rhai::Map) -> Fallible<Dynamic> {
    let parameters = parameters_json(session, parameters);
    let objects = session.call(session.broker().invoke(
        session.run(),
        cmdlet,
        GivenParameters::Deferred(&parameters),
    ))?;
    rhai::serde::to_dynamic(objects)
}

/// One call's answer in a batch: its shaped objects, or why it was refused or failed.
type BatchSlot = Result<Vec<serde_json::Map<String, serde_json::Value>>, GuestError>;

/// `exo::batch([#{cmdlet: …, parameters: #{…}}, …])`: one broker batch, each call judged as
/// if made alone. Each slot is `#{ok: true, objects: [...]}` or `#{ok: false, error: <the map
/// a failed call throws>}`; a call whose parameters have no JSON form is refused in its slot
/// (audited, as `exo::invoke` refuses it). A batch the broker refuses whole throws.
fn batch(session: &Session, calls: &rhai::Array) -> Fallible<Dynamic> {
    let mut slots: Vec<Option<BatchSlot>> = Vec::with_capacity(calls.len());
    let mut sent: Vec<(usize, (String, String))> = Vec::new();
    for (n, call) in calls.iter().enumerate() {
        let shape = || -> Box<EvalAltResult> {
            format!(
                "exo::batch: item {n} is not #{{cmdlet: \"Verb-Noun\", parameters: #{{…}}}}; give each call as such a map (parameters may be left out)"
            )
            .into()
        };
        let Some(map) = call.read_lock::<rhai::Map>() else {
            return Err(shape());
        };
        let Some(cmdlet) = map
            .get("cmdlet")
            .and_then(|c| c.read_lock::<ImmutableString>().map(|c| c.to_string()))
        else {
            return Err(shape());
        };
        // Written from the map where it lies (read-locked), not from a copy.
        let parameters = match map.get("parameters").filter(|p| !p.is_unit()) {
            None => map_as_json(&rhai::Map::new()),
            Some(p) => match p.read_lock::<rhai::Map>() {
                Some(p) => map_as_json(&p),
                None => return Err(shape()),
            },
        };
        match parameters {
            Ok(text) => {
                sent.push((n, (cmdlet, text)));
                slots.push(None);
            }
            Err(problem) => {
                let refused = session.call(async {
                    Ok::<_, GuestError>(
                        session
                            .broker()
                            .refuse_unrepresentable(session.run(), &cmdlet, &problem)
                            .await,
                    )
                })?;
                slots.push(Some(Err(refused)));
            }
        }
    }
    let (at, requests): (Vec<usize>, Vec<(String, String)>) = sent.into_iter().unzip();
    if !requests.is_empty() {
        let results = session.call(session.broker().invoke_batch(session.run(), &requests))?;
        for (n, result) in at.into_iter().zip(results) {
            slots[n] = Some(result);
        }
    }
    let mut out = rhai::Array::with_capacity(slots.len());
    for slot in slots {
        let mut map = rhai::Map::new();
        match slot {
            Some(Ok(objects)) => {
                map.insert("ok".into(), true.into());
                map.insert("objects".into(), rhai::serde::to_dynamic(objects)?);
            }
            Some(Err(error)) => {
                map.insert("ok".into(), false.into());
                map.insert("error".into(), error_map(&error));
            }
            None => return Err("exo::batch: the host lost a call's result".into()),
        }
        out.push(map.into());
    }
    Ok(out.into())
}

fn for_each(
    session: &Session,
    context: &NativeCallContext,
    cmdlet: &str,
    parameters: &rhai::Map,
    each: &FnPtr,
) -> Fallible<INT> {
    let mut stream = start_stream(session, cmdlet, parameters)?;
    let mut seen: INT = 0;
    while let Some(page) = session.call(session.broker().next_page(session.run(), &mut stream))? {
        for object in page {
            let object = rhai::serde::to_dynamic(object)?;
            let _: Dynamic = each.call_within_context(context, (object,))?;
            seen += 1;
        }
    }
    Ok(seen)
}

/// A streamed call's remaining results (`exo::stream`), read with `next()`.
#[derive(Debug, Clone)]
pub(super) struct Results {
    /// `None` once the results are done or failed; dropping a live stream before its end is
    /// recorded by the broker as abandoned.
    stream: Arc<Mutex<Option<BrokeredStream>>>,
    session: Arc<Session>,
}

impl Results {
    fn start(session: &Arc<Session>, cmdlet: &str, parameters: &rhai::Map) -> Fallible<Results> {
        let stream = start_stream(session, cmdlet, parameters)?;
        Ok(Results {
            stream: Arc::new(Mutex::new(Some(stream))),
            session: session.clone(),
        })
    }

    /// The next page as an array of maps, or `()` when the results are done.
    pub(super) fn next(&mut self) -> Fallible<Dynamic> {
        let session = &self.session;
        let mut slot = self.stream.lock().expect("results lock");
        let Some(stream) = slot.as_mut() else {
            return Ok(Dynamic::UNIT);
        };
        match session.call(session.broker().next_page(session.run(), stream)) {
            Ok(Some(page)) => rhai::serde::to_dynamic(page),
            Ok(None) => {
                *slot = None;
                Ok(Dynamic::UNIT)
            }
            Err(error) => {
                // After an error the stream is finished (the broker has closed its record).
                *slot = None;
                Err(error)
            }
        }
    }
}

/// A broker error as the map a script catches (or finds in a batch's slot): the error's JSON
/// form (`kind` and its fields) plus `message` (thrown by `Session::call`, so that
/// `try`/`catch` receives the map).
pub(super) fn error_map(error: &GuestError) -> Dynamic {
    // Straight into a Rhai map (no JSON value between): a refused call in a loop is mostly this.
    let mut map = match rhai::serde::to_dynamic(error).map(Dynamic::try_cast::<rhai::Map>) {
        Ok(Some(map)) => map,
        _ => rhai::Map::new(),
    };
    map.insert("message".into(), error.to_string().into());
    map.into()
}
