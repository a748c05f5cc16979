// mailbox-report-js: the JavaScript port of plugins/mailbox-report, with the same output for
// the same tenant and grant (tests/all/js_guests.rs compares them byte for byte).
//
// It streams Get-Mailbox a page at a time and asks Get-MailboxStatistics for each mailbox's
// TotalItemSize and ItemCount. Arguments: --format json|csv (default json), --limit N.
// It only reads; it refuses unknown arguments, and stops (rather than report a partial list as
// if it were whole) when the host refuses a call or a budget runs out.
//
// Build: node sdk/js/build.mjs plugins/mailbox-report-js/src/plugin.js \
//          --manifest plugins/mailbox-report-js/manifest.json -o mailbox-report-js.wasm

import { Args, CallError, PluginError, invoke, log, plugin, require, stream } from 'warden-sdk';

const COLUMNS = ['DisplayName', 'PrimarySmtpAddress', 'RecipientTypeDetails', 'TotalItemSize', 'ItemCount'];

export const run = plugin((words) => {
  const args = new Args(words);
  const format = args.value('format') ?? 'json';
  if (format !== 'json' && format !== 'csv') {
    throw new PluginError(`--format ${JSON.stringify(format)}: use json or csv`);
  }
  const limit = args.integer('limit');
  args.finish();
  if (limit === 0) throw new PluginError('--limit must be at least 1');

  const granted = require([['Get-Mailbox', []], ['Get-MailboxStatistics', ['Identity']]]);
  const getMailbox = granted.find((g) => g.cmdlet.toLowerCase() === 'get-mailbox');
  const params = mailboxParameters(limit, getMailbox.max_result_size, getMailbox.takes('ResultSize') || getMailbox.max_result_size !== null);

  let mailboxes;
  try {
    mailboxes = stream('Get-Mailbox', params);
  } catch (e) {
    throw new PluginError(`Get-Mailbox: ${e.message}`);
  }
  const out = new Output(format);
  let done = 0;
  for (;;) {
    if (limit !== undefined && done >= limit) break; // leaving the loop abandons the call
    let next;
    try {
      next = mailboxes.next();
    } catch (e) {
      throw new PluginError(`Get-Mailbox stopped after ${done} mailboxes: ${e.message}`);
    }
    if (next.done) break;
    const mailbox = next.value;
    const stats = statistics(mailbox, done);
    out.push([
      text(mailbox.DisplayName),
      text(mailbox.PrimarySmtpAddress),
      text(mailbox.RecipientTypeDetails),
      stats ? stats.TotalItemSize : null,
      stats ? stats.ItemCount : null,
    ]);
    done += 1;
    log.progress(done, limit, 'mailboxes');
  }
  mailboxes.return();
  log.info(`reported ${done} mailboxes`);
  return out.finish();
});

// Get-Mailbox parameters: the smaller of --limit and the grant's bound, or Unlimited.
function mailboxParameters(limit, max, maySize) {
  if (!maySize) return {};
  let size;
  if (limit !== undefined && max !== null) size = Math.min(limit, max);
  else if (limit !== undefined) size = limit;
  else if (max !== null) {
    log.info(`the grant bounds Get-Mailbox to ${max} results; the report lists at most ${max} mailboxes`);
    size = max;
  } else size = 'Unlimited';
  return { ResultSize: size };
}

// The mailbox's statistics; null (with a warning) when Exchange cannot give them.
function statistics(mailbox, done) {
  const identity = text(mailbox.PrimarySmtpAddress) ?? text(mailbox.Identity) ?? text(mailbox.Name);
  if (identity === null) {
    log.warn('a mailbox without an address or identity was reported without sizes');
    return null;
  }
  try {
    const rows = invoke('Get-MailboxStatistics', { Identity: identity }).map(checkStatistics);
    return rows.length ? rows[rows.length - 1] : null;
  } catch (e) {
    if (e instanceof CallError && (e.kind === 'remote' || e.kind === 'decode')) {
      log.warn(`no statistics for ${identity}: ${e.message}`);
      return null;
    }
    throw new PluginError(`Get-MailboxStatistics for ${identity} failed after ${done} mailboxes: ${e.message}`);
  }
}

// The shape the Rust port's MailboxStatistics accepts; anything else is a decode error there.
function checkStatistics(row) {
  const size = row.TotalItemSize ?? null;
  const count = row.ItemCount ?? null;
  if (size !== null && typeof size !== 'string') {
    throw new CallError('decode', { message: 'Get-MailboxStatistics: TotalItemSize is not a string' });
  }
  if (count !== null && !(Number.isInteger(count) && count >= 0)) {
    throw new CallError('decode', { message: 'Get-MailboxStatistics: ItemCount is not a count' });
  }
  return { TotalItemSize: size, ItemCount: count };
}

function text(value) {
  return typeof value === 'string' ? value : null;
}

class Output {
  constructor(format) {
    this.format = format;
    this.parts = [format === 'json' ? '[' : `${COLUMNS.join(',')}\r\n`];
    this.rows = 0;
  }

  push(fields) {
    if (this.format === 'json') {
      const row = {};
      COLUMNS.forEach((c, i) => {
        row[c] = fields[i];
      });
      this.parts.push(`${this.rows > 0 ? ',' : ''}${JSON.stringify(row)}`);
    } else {
      this.parts.push(`${fields.map((f) => csvField(f === null ? '' : String(f))).join(',')}\r\n`);
    }
    this.rows += 1;
  }

  finish() {
    if (this.format === 'json') this.parts.push(']');
    return this.parts.join('');
  }
}

// RFC 4180: quote a field holding a comma, quote or line break, doubling its quotes.
function csvField(field) {
  return /[,"\r\n]/.test(field) ? `"${field.replaceAll('"', '""')}"` : field;
}
