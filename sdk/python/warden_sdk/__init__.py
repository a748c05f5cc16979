"""warden_sdk: write exo-warden plugins in Python (componentize-py 0.25.1).

The same helpers as the Rust SDK (``sdk/``), over the same WIT world (``wit/plugin.wit``):

- ``exchange``: ``invoke`` (all results), ``stream`` (a page in memory at a time), ``grants``,
  ``require``, ``usage``; failures raise a ``CallError`` subclass (``errors``).
- ``log``: ``info`` and friends, ``progress``.
- ``args.Args``: the plugin's command line (the words after ``--``).
- ``plugin``: turns ``def run(args) -> str`` into the component's ``run`` export.
- The manifest (name, version, the cmdlets and parameters it calls) lives in ``manifest.json``
  beside the plugin; ``python -m warden_sdk.build`` writes it into the component's
  ``warden:manifest`` section (componentize-py cannot emit custom sections) with
  ``warden plugin embed-manifest``.

A plugin module::

    import warden_sdk
    from warden_sdk import exchange, log

    def run(args):
        mailboxes = exchange.invoke("Get-Mailbox", {"ResultSize": 10})
        log.info(f"{len(mailboxes)} mailboxes")
        return str(len(mailboxes))

    WitWorld = warden_sdk.plugin(run)
"""

import io
import sys
import traceback

from componentize_py_types import Err

from . import args, errors, exchange, log
from .args import Args, ArgsError
from .errors import CallError
from .exchange import MissingGrant


class _LogLines(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` of a plugin: each line goes to the operator's log.

    Components built with ``--stub-wasi`` (see build.py) have no WASI stdout: writing to it would
    trap, so ``print`` and tracebacks come here instead."""

    def __init__(self, emit):
        self._emit, self._pending = emit, ""

    def writable(self):
        return True

    def write(self, text):
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self):
        if self._pending:
            line, self._pending = self._pending, ""
            self._emit(line)


sys.stdout = _LogLines(log.info)
sys.stderr = _LogLines(log.warn)


class PluginError(Exception):
    """Raise it to fail the run with this message for the operator (the run's ``err``)."""


#: Exceptions whose text is the run's error as is: they are worded for the operator.
_OPERATOR_ERRORS = (PluginError, CallError, ArgsError, MissingGrant)


def _traceback(error):
    """The traceback without source lines: reading them opens files, and a ``--stub-wasi``
    build has no filesystem (the call would trap)."""
    lines = ["Traceback (most recent call last):"]
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}')
    lines.append(f"{type(error).__name__}: {error}")
    return "\n".join(lines)


def plugin(run):
    """The class componentize-py exports as ``run``: assign it to ``WitWorld`` in the app module.

    ``run(args: list[str]) -> str`` returns the plugin's output. An operator error
    (``PluginError``, ``CallError``, ``ArgsError``, ``MissingGrant``) becomes the run's error
    message; any other exception is logged with its traceback and fails the run naming it.
    """

    class WitWorld:
        def run(self, words):
            try:
                output = run(list(words))
            except _OPERATOR_ERRORS as e:
                raise Err(str(e)) from None
            except Exception as e:  # noqa: BLE001 - a plugin bug must still end the run cleanly
                log.error("plugin raised: " + _traceback(e))
                raise Err(f"the plugin raised {type(e).__name__}: {e}") from None
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            if not isinstance(output, str):
                raise Err(f"the plugin returned {type(output).__name__}, not str")
            return output

    return WitWorld


def identity_for_calls(mailbox: dict):
    """The value to pass as ``Identity`` to per-mailbox cmdlets: the primary SMTP address, else
    ``Identity``, else ``Name`` (the Rust SDK's ``Mailbox::identity_for_calls``)."""
    for key in ("PrimarySmtpAddress", "Identity", "Name"):
        value = mailbox.get(key)
        if value is not None:
            return value
    return None


__all__ = [
    "Args",
    "ArgsError",
    "CallError",
    "MissingGrant",
    "PluginError",
    "args",
    "errors",
    "exchange",
    "identity_for_calls",
    "log",
    "plugin",
]
