"""{{name}}: a warden plugin in Python. It lists the first mailboxes of the tenant with their
addresses, as JSON. Arguments: --limit N (default 5).

Edit `run`; declare every cmdlet and parameter it calls in manifest.json, and grant them in
policy.toml.
"""

import json

import warden_sdk
from warden_sdk import Args, PluginError, exchange, log


def run(words):
    args = Args(words)
    limit = args.parsed("limit", int)
    limit = 5 if limit is None else limit
    args.finish()
    if limit < 1:
        raise PluginError("--limit must be at least 1")
    mailboxes = exchange.invoke("Get-Mailbox", {"ResultSize": limit})
    log.info(f"{len(mailboxes)} mailboxes")
    rows = [
        {"DisplayName": m.get("DisplayName"), "PrimarySmtpAddress": m.get("PrimarySmtpAddress")}
        for m in mailboxes
    ]
    return json.dumps(rows, ensure_ascii=False)


WitWorld = warden_sdk.plugin(run)
