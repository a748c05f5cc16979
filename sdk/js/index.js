// warden-sdk for JavaScript: the guest side of `warden:plugin@0.1.0` (wit/plugin.wit) for
// plugins built with componentize-js. The same helpers as the Rust SDK (sdk/src): invoke and
// stream with typed errors, grants and usage, the operator's log, and the plugin's arguments.
// A plugin imports it as `warden-sdk`; `build.mjs` bundles it into the component.
//
// WIT's u64 values are BigInt in componentize-js; these helpers hand plain numbers to the
// plugin (counts here stay far below 2^53) and take numbers or BigInt.

import * as wit from 'warden:plugin/exchange@0.1.0';
import * as witLog from 'warden:plugin/log@0.1.0';

/** Why a cmdlet call returned no results; mirrors the WIT `call-error` plus `decode`. */
export class CallError extends Error {
  /**
   * @param {string} kind `denied`, `invalid`, `budget`, `throttled`, `remote`, `timeout`,
   *   `outcome-unknown`, `unavailable` or the guest-side `decode`.
   * @param {object} fields the case's fields, named as in the Rust SDK's JSON form.
   */
  constructor(kind, fields = {}) {
    super('');
    this.kind = kind;
    Object.assign(this, fields);
    this.message = describe(this);
    this.name = 'CallError';
  }

  /** True when Exchange said the object does not exist. */
  isNotFound() {
    return this.kind === 'remote' && String(this.exception).endsWith('ManagementObjectNotFoundException');
  }

  /** True where the same *read* might succeed later; never retry a write on it. */
  isTransient() {
    return this.kind === 'throttled' || this.kind === 'timeout';
  }

  /** The Rust SDK's serialized form: `{"kind": "denied", "rule": …, "reason": …}`. */
  toJSON() {
    const out = { kind: this.kind };
    for (const key of FIELDS[this.kind] ?? []) out[key] = this[key] ?? null;
    return out;
  }

  /** Converts what a WIT import threw (componentize-js puts the variant in `payload`). */
  static fromWit(thrown) {
    const payload = thrown && typeof thrown === 'object' && 'payload' in thrown ? thrown.payload : undefined;
    if (!payload || typeof payload.tag !== 'string') return thrown;
    const v = payload.val;
    switch (payload.tag) {
      case 'denied':
        return new CallError('denied', { rule: v.rule, reason: v.reason });
      case 'invalid':
        return new CallError('invalid', { message: v });
      case 'budget':
        return new CallError('budget', { budget: v.budget, limit: Number(v.limit) });
      case 'throttled':
        return new CallError('throttled', { retry_after_ms: v === undefined || v === null ? null : Number(v) });
      case 'remote':
        return new CallError('remote', {
          error_id: v.errorId, exception: v.exception, message: v.message, request_id: v.requestId,
        });
      case 'timeout':
        return new CallError('timeout', { after_ms: Number(v) });
      case 'outcome-unknown':
        return new CallError('outcome-unknown', { message: v });
      case 'unavailable':
        return new CallError('unavailable', { message: v });
      default:
        return new CallError('unavailable', { message: `unknown error case ${payload.tag}` });
    }
  }
}

const FIELDS = {
  denied: ['rule', 'reason'],
  invalid: ['message'],
  budget: ['budget', 'limit'],
  throttled: ['retry_after_ms'],
  remote: ['error_id', 'exception', 'message', 'request_id'],
  timeout: ['after_ms'],
  'outcome-unknown': ['message'],
  unavailable: ['message'],
  decode: ['message'],
};

// The same words as the Rust SDK's `Display`, so a port's messages match.
function describe(e) {
  switch (e.kind) {
    case 'denied':
      return `denied by ${e.rule}: ${e.reason}`;
    case 'invalid':
      return `invalid call: ${e.message}`;
    case 'budget':
      return `budget exhausted: ${e.budget} (the grant allows ${e.limit})`;
    case 'throttled':
      return e.retry_after_ms == null ? 'throttled by Exchange' : `throttled by Exchange; retry after ${e.retry_after_ms} ms`;
    case 'remote': {
      const exception = e.exception ? e.exception.split('.').pop() : 'Exchange error';
      let text = `${exception}: ${e.message}`;
      if (e.error_id && e.request_id) text += ` (error id ${e.error_id}, request id ${e.request_id})`;
      else if (e.error_id) text += ` (error id ${e.error_id})`;
      else if (e.request_id) text += ` (request id ${e.request_id})`;
      return text;
    }
    case 'timeout':
      return `no answer within ${e.after_ms} ms`;
    case 'outcome-unknown':
      return `the write's outcome is unknown and it was not retried (${e.message}); check the object's state before trying again`;
    case 'unavailable':
      return `the host cannot serve calls now: ${e.message}`;
    case 'decode':
      return `the results did not have the expected shape: ${e.message}`;
    default:
      return e.kind;
  }
}

function callWit(f) {
  try {
    return f();
  } catch (thrown) {
    throw CallError.fromWit(thrown);
  }
}

// Refuses what the host would refuse anyway, before a call is spent.
function parametersJson(parameters) {
  if (parameters === null || typeof parameters !== 'object' || Array.isArray(parameters)) {
    throw new CallError('invalid', {
      message: `the parameters must be a JSON object of name to value, not ${JSON.stringify(parameters)}`,
    });
  }
  return JSON.stringify(parameters);
}

function decode(cmdlet, text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new CallError('decode', { message: `${cmdlet}: ${e.message}` });
  }
  if (!Array.isArray(value)) {
    throw new CallError('decode', { message: `${cmdlet}: expected a JSON array of objects` });
  }
  return value;
}

/** Runs `cmdlet` with `parameters` (an object) and returns every result as an array. */
export function invoke(cmdlet, parameters = {}) {
  return decode(cmdlet, invokeJson(cmdlet, parametersJson(parameters)));
}

/** Like `invoke`, with parameters as JSON text and the results as the host sent them. */
export function invokeJson(cmdlet, parameters) {
  return callWit(() => wit.invoke(cmdlet, parameters));
}

/**
 * Runs several calls at once; `calls` is an array of `[cmdlet, parameters]`. Each call is
 * judged and counted as if made alone, so each slot of the returned array is that call's
 * results (an array) or its `CallError` (returned, not thrown: the other calls still ran).
 * Throws only when the host refuses the batch whole (more than 100 calls).
 */
export function invokeBatch(calls) {
  const texts = calls.map(([cmdlet, parameters = {}]) => ({
    cmdlet,
    parameters: parametersJson(parameters),
  }));
  const results = callWit(() => wit.invokeBatch(texts));
  return results.map((result, n) => {
    if (result.tag === 'err') return CallError.fromWit({ payload: result.val });
    try {
      return decode(calls[n][0], result.val);
    } catch (e) {
      return e;
    }
  });
}

/**
 * Starts `cmdlet` and yields its results one object at a time, fetching a page only when the
 * previous one is used up. The policy decision happens here (a refused call throws now);
 * leaving the loop early (`break`) abandons the call.
 */
export function stream(cmdlet, parameters = {}) {
  const pages = streamPages(cmdlet, parameters);
  return (function* () {
    for (const page of pages) yield* page;
  })();
}

/** Like `stream`, one decoded page (an array) at a time. */
export function streamPages(cmdlet, parameters = {}) {
  const raw = streamJson(cmdlet, parametersJson(parameters));
  return (function* () {
    for (const page of raw) yield decode(cmdlet, page);
  })();
}

/** Like `stream`, with parameters as JSON text and pages as the JSON text the host sent. */
export function streamJson(cmdlet, parameters) {
  const results = callWit(() => wit.stream(cmdlet, parameters));
  return (function* () {
    try {
      for (;;) {
        const page = callWit(() => results.next());
        if (page === undefined || page === null) return;
        yield page;
      }
    } finally {
      // Tells the host now that the stream is finished or abandoned.
      results[Symbol.dispose]?.();
    }
  })();
}

/** One cmdlet this run may call (the WIT `allowed-cmdlet`). */
export class Grant {
  constructor(g) {
    this.cmdlet = g.cmdlet;
    this.rule = g.rule;
    this.parameters = [...g.parameters];
    this.write = g.write;
    this.max_result_size = g.maxResultSize === undefined || g.maxResultSize === null ? null : Number(g.maxResultSize);
    this.output = g.output ? [...g.output] : null;
    this.target_parameter = g.targetParameter ?? null;
  }

  /** True when the grant lets the cmdlet take `parameter` (case-insensitively). */
  takes(parameter) {
    return this.parameters.some((p) => p.toLowerCase() === parameter.toLowerCase());
  }

  /** True when results keep `property` (no output shaping, or it is listed). */
  returns(property) {
    return this.output === null || this.output.some((p) => p.toLowerCase() === property.toLowerCase());
  }
}

/** What this run may call. */
export function grants() {
  return wit.grants().map((g) => new Grant(g));
}

/**
 * Checks up front that this run may make these calls: `needs` is `[[cmdlet, [parameters]]]`.
 * Returns the grants; throws a message naming everything missing.
 */
export function require(needs) {
  const granted = grants();
  const missing = [];
  for (const [cmdlet, parameters = []] of needs) {
    const g = granted.find((x) => x.cmdlet.toLowerCase() === cmdlet.toLowerCase());
    if (!g) {
      missing.push(`this run may not call ${cmdlet}`);
      continue;
    }
    const absent = parameters.filter((p) => !g.takes(p));
    if (absent.length) missing.push(`${cmdlet} may not take ${absent.join(', ')}`);
  }
  if (missing.length) throw new PluginError(`${missing.join('; ')} (check the plugin's grant in the policy)`);
  return granted;
}

/** What this run has used of its budgets: `{calls, writes, objects, output_bytes}`. */
export function usage() {
  const u = wit.usage();
  return {
    calls: Number(u.calls),
    writes: Number(u.writes),
    objects: Number(u.objects),
    output_bytes: Number(u.outputBytes),
  };
}

/** The operator's log and progress bar. */
export const log = {
  /** Writes a line at `level` (`trace`, `debug`, `info`, `warn`, `error`). */
  log(level, message) {
    witLog.log(level, String(message));
  },
  trace: (message) => log.log('trace', message),
  debug: (message) => log.log('debug', message),
  info: (message) => log.log('info', message),
  warn: (message) => log.log('warn', message),
  error: (message) => log.log('error', message),
  /** Reports `done` of `total` (or null when unknown) items. */
  progress(done, total, label) {
    witLog.progress(BigInt(done), total === undefined || total === null ? undefined : BigInt(total), String(label));
  },
};

/** A message for the operator: `run` fails with exactly this text. */
export class PluginError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PluginError';
  }
}

/**
 * The words after `--` on the warden command line: `--name value`, `--name=value` and `--flag`.
 * Options are taken out as they are read; `finish` refuses anything left (a misspelt option is
 * an error naming it, never silently ignored).
 */
export class Args {
  constructor(words) {
    this.words = [...words];
  }

  /** Takes every `--name value` / `--name=value`, in order. */
  values(name) {
    const flag = `--${name}`;
    const withEq = `--${name}=`;
    const out = [];
    let i = 0;
    while (i < this.words.length) {
      if (this.words[i] === flag) {
        if (i + 1 >= this.words.length) throw new PluginError(`${flag} needs a value`);
        out.push(this.words[i + 1]);
        this.words.splice(i, 2);
      } else if (this.words[i].startsWith(withEq)) {
        out.push(this.words[i].slice(withEq.length));
        this.words.splice(i, 1);
      } else {
        i += 1;
      }
    }
    return out;
  }

  /** Takes `--name value` given at most once; undefined when absent. */
  value(name) {
    const all = this.values(name);
    if (all.length > 1) throw new PluginError(`--${name} was given ${all.length} times; give it once`);
    return all[0];
  }

  /** Takes `--name N` given at most once as a non-negative integer (the Rust SDK's `u64`). */
  integer(name) {
    const v = this.value(name);
    if (v === undefined) return undefined;
    if (!/^\+?[0-9]+$/.test(v)) throw new PluginError(`--${name} ${JSON.stringify(v)} is not valid: invalid digit found in string`);
    return Number(v);
  }

  /** Takes a `--name` switch; true when it was given. */
  flag(name) {
    const before = this.words.length;
    this.words = this.words.filter((w) => w !== `--${name}`);
    return this.words.length !== before;
  }

  /** Throws when anything was not taken, naming it. */
  finish() {
    if (this.words.length) throw new PluginError(`unexpected argument(s): ${this.words.join(' ')}`);
  }
}

/**
 * Wraps a plugin's entry point as the component's `run` export:
 * `export const run = plugin((args) => "output")`. What it returns is the run's output; what
 * it throws is the run's error message (a `CallError`'s words, a `PluginError`'s message, or
 * an unexpected exception's, logged with its stack).
 */
export function plugin(entry) {
  return (args) => {
    try {
      const out = entry(args);
      return typeof out === 'string' ? out : JSON.stringify(out);
    } catch (e) {
      if (e instanceof CallError || e instanceof PluginError) throw e.message;
      if (e instanceof Error) {
        log.error(`plugin threw: ${e.stack ?? e.message}`);
        throw `${e.name}: ${e.message}`;
      }
      throw String(e);
    }
  };
}
