"""A small parser for the words after ``--`` on the warden command line (the Rust SDK's ``Args``).

Options are ``--name value`` / ``--name=value`` and ``--flag`` switches. It refuses what it does
not know: ``finish()`` names any word nobody took, because a plugin that silently drops a
misspelt option does the wrong thing quietly. Errors are ``ArgsError`` (a ``ValueError``)."""

from typing import Callable, List, Optional, TypeVar

T = TypeVar("T")


class ArgsError(ValueError):
    """A command-line mistake, worded for the operator."""


class Args:
    """The remaining arguments; options are taken out as they are read."""

    def __init__(self, words: List[str]):
        self._words = list(words)

    def values(self, name: str) -> List[str]:
        """Takes every ``--name value`` / ``--name=value``, in order."""
        flag, with_eq = f"--{name}", f"--{name}="
        out, i = [], 0
        while i < len(self._words):
            word = self._words[i]
            if word == flag:
                if i + 1 >= len(self._words):
                    raise ArgsError(f"{flag} needs a value")
                out.append(self._words.pop(i + 1))
                self._words.pop(i)
            elif word.startswith(with_eq):
                out.append(word[len(with_eq):])
                self._words.pop(i)
            else:
                i += 1
        return out

    def value(self, name: str) -> Optional[str]:
        """Takes ``--name value`` given at most once."""
        found = self.values(name)
        if len(found) > 1:
            raise ArgsError(f"--{name} was given {len(found)} times; give it once")
        return found[0] if found else None

    def parsed(self, name: str, parse: Callable[[str], T]) -> Optional[T]:
        """Takes ``--name value`` given at most once and parses it (``parse=int``, ...)."""
        value = self.value(name)
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as e:
            raise ArgsError(f"--{name} {value!r} is not valid: {e}") from None

    def flag(self, name: str) -> bool:
        """Takes a ``--name`` switch; True when it was given."""
        before = len(self._words)
        self._words = [w for w in self._words if w != f"--{name}"]
        return len(self._words) != before

    def finish(self) -> None:
        """Fails when anything was not taken, naming it."""
        if self._words:
            raise ArgsError(f"unexpected argument(s): {' '.join(self._words)}")
