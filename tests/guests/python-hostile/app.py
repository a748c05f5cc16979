"""python-hostile: a Python guest that misbehaves on request (tests/all/python_guests.rs).

| action  | what it does |
|---|---|
| spin    | loops forever (stopped by the CPU budget) |
| alloc   | holds ever more memory (stopped by the memory budget) |
| refused | calls Remove-Mailbox, which its grant does not allow; returns the typed error as JSON |
| invalid | passes a parameter that is not a JSON object's value; returns the typed error as JSON |
| print   | prints a line and fails with a traceback (both reach the operator's log) |
"""

import json

import warden_sdk
from warden_sdk import PluginError, exchange
from warden_sdk.errors import CallError, Denied


def run(words):
    action = words[0] if words else ""
    if action == "spin":
        n = 0
        while True:
            n += 1
    if action == "alloc":
        held = []
        while True:
            held.append(bytearray(1024 * 1024))
    if action == "refused":
        try:
            exchange.invoke("Remove-Mailbox", {"Identity": "someone@contoso.com"})
        except Denied as e:
            return json.dumps({"class": type(e).__name__, **e.to_json()})
        raise PluginError("Remove-Mailbox was not refused")
    if action == "invalid":
        try:
            exchange.invoke("Get-Mailbox", ["not", "an", "object"])
        except CallError as e:
            return json.dumps({"class": type(e).__name__, **e.to_json()})
        raise PluginError("a list of parameters was accepted")
    if action == "print":
        print("python-hostile: printed line")
        raise KeyError("deliberate")
    raise PluginError(f"python-hostile: unknown action {action!r}")


WitWorld = warden_sdk.plugin(run)
