"""mailbox-report-py: every mailbox with its size, as JSON or CSV: the Python port of
plugins/mailbox-report, whose output it equals byte for byte (tests/all/python_guests.rs).

It streams Get-Mailbox a page at a time and asks Get-MailboxStatistics for each mailbox's
TotalItemSize and ItemCount. Arguments: --format json|csv (default json), --limit N.

It only reads. It refuses unknown arguments, and stops (rather than report a partial list as if
it were whole) when the host refuses a call or a budget runs out; a mailbox whose statistics
Exchange cannot give is reported with empty sizes and a warning in the log.
"""

import json

import warden_sdk
from warden_sdk import Args, PluginError, exchange, identity_for_calls, log
from warden_sdk.errors import CallError, Decode, Remote

COLUMNS = ["DisplayName", "PrimarySmtpAddress", "RecipientTypeDetails", "TotalItemSize", "ItemCount"]


def u64(text):
    """An unsigned integer as Rust's u64 parses it (no sign, no spaces, no underscores)."""
    if not text.isascii() or not text.isdigit():
        raise ValueError("invalid digit found in string")
    value = int(text)
    if value >= 2**64:
        raise ValueError("number too large to fit in target type")
    return value


def run(words):
    args = Args(words)
    format = args.value("format")
    if format not in (None, "json", "csv"):
        raise PluginError(f"--format {json.dumps(format)}: use json or csv")
    format = format or "json"
    limit = args.parsed("limit", u64)
    args.finish()
    if limit == 0:
        raise PluginError("--limit must be at least 1")

    grants = exchange.require([("Get-Mailbox", []), ("Get-MailboxStatistics", ["Identity"])])
    get_mailbox = next((g for g in grants if g.cmdlet.lower() == "get-mailbox"), None)
    if get_mailbox is None:
        raise PluginError("Get-Mailbox is not granted")

    params = mailbox_parameters(
        limit,
        get_mailbox.max_result_size,
        get_mailbox.takes("ResultSize") or get_mailbox.max_result_size is not None,
    )
    try:
        mailboxes = exchange.stream("Get-Mailbox", params)
    except CallError as e:
        raise PluginError(f"Get-Mailbox: {e}") from None

    out = Output(format)
    done = 0
    with mailboxes:
        items = iter(mailboxes)
        while True:
            # As the Rust plugin: the next mailbox is fetched before the limit is checked, so
            # both make the same calls.
            failed = None
            try:
                mailbox = next(items)
            except StopIteration:
                break
            except CallError as e:
                failed = e
            if limit is not None and done >= limit:
                # Leaving the `with` block abandons the rest of the call.
                break
            if failed is not None:
                raise PluginError(f"Get-Mailbox stopped after {done} mailboxes: {failed}")
            stats = statistics(mailbox, done)
            out.push([
                mailbox.get("DisplayName"),
                mailbox.get("PrimarySmtpAddress"),
                mailbox.get("RecipientTypeDetails"),
                None if stats is None else stats.get("TotalItemSize"),
                None if stats is None else stats.get("ItemCount"),
            ])
            done += 1
            log.progress(done, limit, "mailboxes")
    log.info(f"reported {done} mailboxes")
    return out.finish()


def mailbox_parameters(limit, max_size, may_size):
    """Get-Mailbox parameters: the smaller of --limit and the grant's bound, or Unlimited."""
    if not may_size:
        # The grant does not let us pass ResultSize: Exchange's default applies and --limit is
        # enforced here.
        return {}
    if limit is not None and max_size is not None:
        size = min(limit, max_size)
    elif limit is not None:
        size = limit
    elif max_size is not None:
        log.info(
            f"the grant bounds Get-Mailbox to {max_size} results; the report lists at most "
            f"{max_size} mailboxes"
        )
        size = max_size
    else:
        size = "Unlimited"
    return {"ResultSize": size}


def statistics(mailbox, done):
    """The mailbox's statistics; None (with a warning) when Exchange cannot give them, an error
    when the host refuses or cannot serve the call."""
    identity = identity_for_calls(mailbox)
    if identity is None:
        log.warn("a mailbox without an address or identity was reported without sizes")
        return None
    try:
        rows = exchange.invoke("Get-MailboxStatistics", {"Identity": identity})
        for row in rows:
            check_statistics(row)
    except (Remote, Decode) as e:
        log.warn(f"no statistics for {identity}: {e}")
        return None
    except CallError as e:
        raise PluginError(
            f"Get-MailboxStatistics for {identity} failed after {done} mailboxes: {e}"
        ) from None
    return rows[-1] if rows else None


def check_statistics(row):
    """The shape the Rust SDK's MailboxStatistics accepts for the two fields the report uses."""
    if not isinstance(row, dict):
        raise Decode("Get-MailboxStatistics: a result is not an object")
    count, size = row.get("ItemCount"), row.get("TotalItemSize")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise Decode(f"Get-MailboxStatistics: ItemCount {json.dumps(count)} is not a count")
    if size is not None and not isinstance(size, str):
        raise Decode(f"Get-MailboxStatistics: TotalItemSize {json.dumps(size)} is not text")


class Output:
    """The report being written, one row at a time."""

    def __init__(self, format):
        self.format, self.rows = format, 0
        self.parts = ["["] if format == "json" else [",".join(COLUMNS) + "\r\n"]

    def push(self, row):
        if self.format == "json":
            if self.rows:
                self.parts.append(",")
            self.parts.append(
                json.dumps(dict(zip(COLUMNS, row)), separators=(",", ":"), ensure_ascii=False)
            )
        else:
            fields = ["" if value is None else str(value) for value in row]
            self.parts.append(",".join(csv_field(f) for f in fields) + "\r\n")
        self.rows += 1

    def finish(self):
        if self.format == "json":
            self.parts.append("]")
        return "".join(self.parts)


def csv_field(field):
    """RFC 4180: quote a field holding a comma, quote or line break, doubling its quotes."""
    if any(c in field for c in ',"\r\n'):
        return '"' + field.replace('"', '""') + '"'
    return field


WitWorld = warden_sdk.plugin(run)
