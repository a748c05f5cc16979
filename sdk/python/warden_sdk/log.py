"""Telling the operator what is happening: log lines (capped per run by the host) and progress."""

from typing import Optional

from wit_world.imports import log as wit


def trace(message: str) -> None:
    """A very detailed line."""
    wit.log(wit.Level.TRACE, str(message))


def debug(message: str) -> None:
    """A detailed line."""
    wit.log(wit.Level.DEBUG, str(message))


def info(message: str) -> None:
    """A normal line."""
    wit.log(wit.Level.INFO, str(message))


def warn(message: str) -> None:
    """Something looks wrong."""
    wit.log(wit.Level.WARN, str(message))


def error(message: str) -> None:
    """Something failed."""
    wit.log(wit.Level.ERROR, str(message))


def progress(done: int, total: Optional[int], label: str) -> None:
    """``done`` of ``total`` (when known) items; the CLI shows a progress bar on a terminal."""
    wit.progress(done, total, label)
