"""Running Exchange cmdlets through the host's broker.

``invoke`` returns every result at once (a list of dicts); ``stream`` yields them one at a time
while holding one page in memory, so a plugin can walk 100,000 mailboxes. Parameters are a dict
of parameter name to value; anything else is refused before a call is spent. Failures raise a
``warden_sdk.errors.CallError`` subclass.
"""

import json
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from componentize_py_types import Err
from wit_world.imports import exchange as wit

from .errors import CallError, Decode, Invalid, from_wit


def _parameters_json(parameters):
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise Invalid(
            f"the parameters must be a JSON object of name to value, not {json.dumps(parameters)}"
        )
    try:
        return json.dumps(parameters, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise Invalid(f"the parameters do not serialize to JSON: {e}") from None


def _decode(cmdlet, text):
    try:
        items = json.loads(text)
    except ValueError as e:
        raise Decode(f"{cmdlet}: {e}") from None
    if not isinstance(items, list):
        raise Decode(f"{cmdlet}: expected a JSON array of objects")
    return items


def invoke_json(cmdlet: str, parameters: str) -> str:
    """The raw call: parameters as JSON text, results as one JSON array (text)."""
    try:
        return wit.invoke(cmdlet, parameters)
    except Err as e:
        raise from_wit(e.value) from None


def invoke(cmdlet: str, parameters: Optional[dict] = None) -> List[dict]:
    """Runs ``cmdlet`` and returns every result. For large results use ``stream``."""
    return _decode(cmdlet, invoke_json(cmdlet, _parameters_json(parameters)))


def invoke_batch(calls: Sequence[Tuple[str, Optional[dict]]]) -> List[object]:
    """Runs several calls at once; ``calls`` is a sequence of ``(cmdlet, parameters)``. Each call
    is judged and counted as if made alone, so each slot of the returned list is that call's
    results (a list of objects) or its ``CallError`` (returned, not raised: the other calls
    still ran). Raises only when the host refuses the batch whole (more than 100 calls)."""
    texts = [wit.BatchCall(cmdlet=cmdlet, parameters=_parameters_json(parameters))
             for cmdlet, parameters in calls]
    try:
        results = wit.invoke_batch(texts)
    except Err as e:
        raise from_wit(e.value) from None
    out = []
    for (cmdlet, _), result in zip(calls, results):
        if isinstance(result, Err):
            out.append(from_wit(result.value))
            continue
        try:
            out.append(_decode(cmdlet, result.value))
        except CallError as e:
            out.append(e)
    return out


class Results:
    """The results of ``stream``: iterate for one object at a time, or ``pages()`` for lists.

    Leaving it before the end (``close()``, or a ``with`` block) abandons the rest of the call;
    the audit trail says so. After an error the stream is finished.
    """

    def __init__(self, cmdlet, results):
        self._cmdlet = cmdlet
        self._results = results

    def pages(self) -> Iterator[List[dict]]:
        """One page (a list of result objects) at a time."""
        while self._results is not None:
            try:
                page = self._results.next()
            except Err as e:
                self.close()
                raise from_wit(e.value) from None
            if page is None:
                self.close()
                return
            try:
                items = _decode(self._cmdlet, page)
            except CallError:
                self.close()
                raise
            yield items

    def __iter__(self) -> Iterator[dict]:
        for page in self.pages():
            yield from page

    def close(self):
        """Drops the host's stream now (abandoning the rest of the call, if any is left)."""
        results, self._results = self._results, None
        if results is not None:
            results.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def stream(cmdlet: str, parameters: Optional[dict] = None) -> Results:
    """Starts ``cmdlet`` like ``invoke`` and returns its results a page at a time. The policy
    decision (and a write's single attempt) happens here, before the first page."""
    text = _parameters_json(parameters)
    try:
        results = wit.stream(cmdlet, text)
    except Err as e:
        raise from_wit(e.value) from None
    return Results(cmdlet, results)


@dataclass
class Grant:
    """One cmdlet this run may call, as the grant (intersected with the manifest) allows it."""

    cmdlet: str
    rule: str
    parameters: List[str]
    write: bool
    max_result_size: Optional[int]
    output: Optional[List[str]]
    target_parameter: Optional[str]

    def takes(self, parameter: str) -> bool:
        """True when this run may pass ``parameter`` (case-insensitive)."""
        return any(p.lower() == parameter.lower() for p in self.parameters)

    def returns(self, property: str) -> bool:
        """True when results keep ``property`` (no output shaping, or it is listed)."""
        return self.output is None or any(p.lower() == property.lower() for p in self.output)


def grants() -> List[Grant]:
    """What this run may call, so a plugin can check itself up front."""
    return [
        Grant(
            g.cmdlet,
            g.rule,
            list(g.parameters),
            g.write,
            g.max_result_size,
            None if g.output is None else list(g.output),
            g.target_parameter,
        )
        for g in wit.grants()
    ]


class MissingGrant(Exception):
    """``require`` found a cmdlet or parameter this run may not use."""


def require(needs: Sequence[Tuple[str, Sequence[str]]]) -> List[Grant]:
    """Checks that this run may call each ``(cmdlet, [parameters])``; returns every grant, or
    raises ``MissingGrant`` naming all that is missing."""
    granted = grants()
    missing = []
    for cmdlet, parameters in needs:
        grant = next((g for g in granted if g.cmdlet.lower() == cmdlet.lower()), None)
        if grant is None:
            missing.append(f"this run may not call {cmdlet}")
            continue
        absent = [p for p in parameters if not grant.takes(p)]
        if absent:
            missing.append(f"{cmdlet} may not take {', '.join(absent)}")
    if missing:
        raise MissingGrant(f"{'; '.join(missing)} (check the plugin's grant in the policy)")
    return granted


@dataclass
class Usage:
    """What this run has used of its budgets."""

    calls: int
    writes: int
    objects: int
    output_bytes: int


def usage() -> Usage:
    """What this run has used so far."""
    u = wit.usage()
    return Usage(u.calls, u.writes, u.objects, u.output_bytes)
