"""python-loop: the benchmark's 1,000-call loop in Python: `Get-Mailbox -ResultSize 1`,
--count N times (default 1000), one host call each. Output: {"calls": N}.
Build: sdk/python/.venv/bin/python sdk/python/build.py bench/guests/python-loop -o python-loop.wasm
"""

import json

import warden_sdk
from warden_sdk import Args, exchange


def run(words):
    args = Args(words)
    count = args.parsed("count", int)
    count = 1000 if count is None else count
    args.finish()
    for _ in range(count):
        exchange.invoke("Get-Mailbox", {"ResultSize": 1})
    return json.dumps({"calls": count})


WitWorld = warden_sdk.plugin(run)
