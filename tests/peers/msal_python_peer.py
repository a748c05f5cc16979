"""msal-python as an independent Entra ID client: acquire an app-only token from an authority
(exosim, or anything else) and print ONE JSON line with the outcome.

usage: .venv/bin/python msal_python_peer.py --authority https://localhost:PORT/TENANT
           --client-id ID --credential secret|cert|thumbprint|pfx [options]

Credentials come from the environment so they never appear in a process listing:
  PEER_CLIENT_SECRET            for --credential secret
  --key-pem / --cert-pem FILE   for cert ({"private_key", "public_certificate"}: PS256, x5t#S256, x5c)
  --key-pem + --thumbprint HEX  for thumbprint ({"private_key", "thumbprint"}: RS256, x5t)
  --pfx FILE + PEER_PFX_PASSWORD for pfx ({"private_key_pfx_path", "passphrase"}: PS256, x5t#S256)

--ca-file makes requests trust that CA (it sets REQUESTS_CA_BUNDLE and drops CURL_CA_BUNDLE:
requests lets those variables win over `verify=`). The whole run is bounded by --timeout.
Output: {"ok": true, "token_type", "expires_in", "claims"} or {"ok": false, "error",
"error_description", "error_codes"} (or "exception"). The access token itself is not printed.
"""

import argparse
import base64
import json
import os
import signal
import sys


def emit(result, code):
    print(json.dumps(result), flush=True)
    sys.exit(code)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--authority", default=os.environ.get("PEER_AUTHORITY"), required="PEER_AUTHORITY" not in os.environ)
    parser.add_argument("--client-id", default=os.environ.get("PEER_CLIENT_ID"), required="PEER_CLIENT_ID" not in os.environ)
    parser.add_argument("--credential", choices=["secret", "cert", "thumbprint", "pfx"], required=True)
    parser.add_argument("--scope", default="https://outlook.office365.com/.default")
    parser.add_argument("--key-pem")
    parser.add_argument("--cert-pem")
    parser.add_argument("--thumbprint")
    parser.add_argument("--pfx")
    parser.add_argument("--ca-file")
    parser.add_argument("--timeout", type=int, default=30)
    args = parser.parse_args()

    # A hard stop, whatever msal or the network does.
    def on_alarm(_signum, _frame):
        emit({"ok": False, "exception": f"timed out after {args.timeout} s"}, 3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)

    if args.ca_file:
        os.environ["REQUESTS_CA_BUNDLE"] = args.ca_file
        os.environ.pop("CURL_CA_BUNDLE", None)

    import msal  # after the CA variables are settled

    def read(path):
        with open(path, encoding="utf-8") as f:
            return f.read()

    if args.credential == "secret":
        credential = os.environ["PEER_CLIENT_SECRET"]
    elif args.credential == "cert":
        credential = {"private_key": read(args.key_pem), "public_certificate": read(args.cert_pem)}
    elif args.credential == "thumbprint":
        credential = {"private_key": read(args.key_pem), "thumbprint": args.thumbprint}
    else:
        credential = {"private_key_pfx_path": args.pfx, "passphrase": os.environ["PEER_PFX_PASSWORD"]}

    try:
        app = msal.ConfidentialClientApplication(
            args.client_id,
            client_credential=credential,
            authority=args.authority,
            instance_discovery=False,
            timeout=min(args.timeout, 15),
        )
        result = app.acquire_token_for_client(scopes=[args.scope])
    except Exception as e:  # noqa: BLE001 - report anything as data
        emit({"ok": False, "exception": f"{type(e).__name__}: {e}"}, 2)

    if "access_token" in result:
        payload = result["access_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        emit(
            {
                "ok": True,
                "token_type": result.get("token_type"),
                "expires_in": result.get("expires_in"),
                "token_source": result.get("token_source"),
                "claims": claims,
            },
            0,
        )
    emit(
        {
            "ok": False,
            "error": result.get("error"),
            "error_description": result.get("error_description"),
            "error_codes": result.get("error_codes"),
        },
        1,
    )


if __name__ == "__main__":
    main()
