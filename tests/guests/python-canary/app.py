"""python-canary: a Python guest looking for the credential warden holds
(tests/all/python_guests.rs). Every action returns JSON of what it found.

| action  | what it does |
|---|---|
| read    | reads two mailboxes (data the guest holds, for the scan's positive control) |
| env     | its environment (os.environ) |
| files   | tries /proc/self/environ, /etc/passwd and listing / (each a trap or an error) |
| forged  | invokes with an Authorization parameter and a header smuggled in a cmdlet name |
| scan    | walks every live Python object for JWT-shaped text or the canary marker |
"""

import gc
import json
import os

import warden_sdk
from warden_sdk import PluginError, exchange
from warden_sdk.errors import CallError


def _outcome(attempt):
    try:
        return "ok: " + str(attempt())[:200]
    except BaseException as e:  # noqa: BLE001 - report every way it failed
        return f"error: {type(e).__name__}: {e}"[:200]


def run(words):
    action = words[0] if words else ""
    if action == "read":
        return json.dumps(exchange.invoke("Get-Mailbox", {"ResultSize": 2}))
    if action == "env":
        return json.dumps(dict(os.environ))
    if action == "files":
        return json.dumps({
            "proc_environ": _outcome(lambda: open("/proc/self/environ", "rb").read()),
            "passwd": _outcome(lambda: open("/etc/passwd").read()),
            "list_root": _outcome(lambda: os.listdir("/")),
        })
    if action == "forged":
        found = {}
        for name, cmdlet, params in [
            ("authorization_parameter", "Get-Mailbox", {"ResultSize": 1, "Authorization": "Bearer x"}),
            ("header_in_name", "Get-Mailbox\r\nAuthorization: Bearer x", {"ResultSize": 1}),
            ("token_cmdlet", "Get-AccessToken", {}),
        ]:
            try:
                found[name] = {"ok": exchange.invoke(cmdlet, params)}
            except CallError as e:
                found[name] = e.to_json()
        return json.dumps(found)
    if action == "scan":
        # "eyJ" and the canary marker, built at run time: as literals (even "ey" + "J", which
        # the compiler folds) the code's own constants would match.
        needles = [bytes([101, 121, 74]).decode(), bytes([67, 65, 78, 65, 82, 89]).decode()]
        hits = []
        for obj in gc.get_objects():
            if obj is needles or obj is hits:
                continue
            texts = []
            if isinstance(obj, dict):
                texts = [v for v in obj.values() if isinstance(v, (str, bytes))]
            elif isinstance(obj, (list, tuple)):
                texts = [v for v in obj if isinstance(v, (str, bytes))]
            for text in texts:
                if isinstance(text, bytes):
                    text = text.decode("latin-1")
                if any(n in text for n in needles):
                    hits.append(text[:80])
        return json.dumps({"objects": len(gc.get_objects()), "hits": hits})
    raise PluginError(f"python-canary: unknown action {action!r}")


WitWorld = warden_sdk.plugin(run)
