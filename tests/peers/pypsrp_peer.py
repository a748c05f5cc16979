"""pypsrp as an independent Remote PowerShell client: open a Microsoft.Exchange runspace pool on
`/PowerShell-LiveID?BasicAuthToOAuthConversion=true` the way docs/protocol/real-peers.md §2.1 shows
(Basic with user OAuthUser@<tenant> and password "Bearer <token>", https, cert_validation=<CA>),
run Get-Mailbox -ResultSize N, optionally a write (New-Mailbox -Shared) and a failing read, and
print ONE JSON line with what came back.

usage: .venv/bin/python pypsrp_peer.py --host localhost --port PORT --tenant TENANT
           --ca-file ca.pem [--result-size N] [--new-shared NAME] [--missing IDENTITY]

The access token comes from PEER_ACCESS_TOKEN so it never appears in a process listing.
Objects are printed as plain dicts of their extended then adapted properties (lists stay lists,
hashtables dicts), which is what InvokeCommand returns for them without annotations.
Output: {"ok": true, "mailboxes": [...], "mailbox_types": [...], "created": [...],
"warnings": [...], "missing_error": {...}} or {"ok": false, "exception": "..."}. The whole run is
bounded by --timeout.
"""

import argparse
import json
import os
import signal
import sys


def emit(result, code):
    print(json.dumps(result), flush=True)
    sys.exit(code)


def plain(value):
    """A pypsrp deserialized value as plain JSON data."""
    from pypsrp.complex_objects import GenericComplexObject

    if isinstance(value, GenericComplexObject):
        out = {}
        for name, v in list(value.extended_properties.items()) + list(value.adapted_properties.items()):
            out.setdefault(name, plain(v))
        return out
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--authority", help="ignored (the peers test passes it to every peer)")
    parser.add_argument("--result-size", type=int, default=5)
    parser.add_argument("--new-shared")
    parser.add_argument("--missing")
    parser.add_argument("--timeout", type=int, default=30)
    args = parser.parse_args()

    def on_alarm(_signum, _frame):
        emit({"ok": False, "exception": f"timed out after {args.timeout} s"}, 3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)

    # requests lets these variables win over `verify=` (docs/protocol/real-peers.md §1.4).
    os.environ["REQUESTS_CA_BUNDLE"] = args.ca_file
    os.environ.pop("CURL_CA_BUNDLE", None)

    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    token = os.environ["PEER_ACCESS_TOKEN"]
    result = {"ok": True}
    try:
        wsman = WSMan(
            args.host,
            port=args.port,
            ssl=True,
            path="PowerShell-LiveID?BasicAuthToOAuthConversion=true",
            auth="basic",
            username=f"OAuthUser@{args.tenant}",
            password=f"Bearer {token}",
            cert_validation=args.ca_file,
            operation_timeout=5,
            read_timeout=20,
        )
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Mailbox").add_parameter("ResultSize", args.result_size)
            output = ps.invoke()
            result["mailboxes"] = [plain(o) for o in output]
            result["mailbox_types"] = output[0].types if output else []
            result["mailbox_to_string"] = str(output[0]) if output else None
            result["warnings"] = [str(w) for w in ps.streams.warning]
            result["had_errors"] = ps.had_errors
            ps.close()

            if args.new_shared:
                ps = PowerShell(pool)
                ps.add_cmdlet("New-Mailbox").add_parameter("Name", args.new_shared).add_parameter("Shared")
                result["created"] = [plain(o) for o in ps.invoke()]
                result["created_had_errors"] = ps.had_errors
                ps.close()

            if args.missing:
                ps = PowerShell(pool)
                ps.add_cmdlet("Get-Mailbox").add_parameter("Identity", args.missing)
                ps.invoke()
                errors = ps.streams.error
                result["missing_error"] = {
                    "had_errors": ps.had_errors,
                    "count": len(errors),
                    "fq_error": errors[0].fq_error if errors else None,
                    "reason": errors[0].reason if errors else None,
                    "message": str(errors[0]) if errors else None,
                }
                ps.close()
    except Exception as e:  # noqa: BLE001 - any failure is the peer's answer
        emit({"ok": False, "exception": f"{type(e).__name__}: {e}"}, 1)
    emit(result, 0)


if __name__ == "__main__":
    main()
