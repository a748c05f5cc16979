"""msal-python as an independent client of exosim's user sign-in: a PublicClientApplication
gets a user token with the resource-owner password grant, then a fresh one with the refresh
token msal cached (acquire_token_silent, force_refresh), and prints ONE JSON line.

usage: .venv/bin/python msal_ropc_peer.py --authority https://localhost:PORT/TENANT
           --client-id ID --scope SCOPE [--scope SCOPE ...] --ca-file CA.pem

The user's name and password come from PEER_USERNAME and PEER_PASSWORD, so they never appear
in a process listing. Output: {"ok": true, "scope", "token_type", "access_claims",
"id_token_claims", "refreshed_claims"} or {"ok": false, "error", "error_description",
"error_codes"} (or "exception"). No token is printed, only decoded claims.
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


def claims_of(jwt):
    payload = jwt.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


class AuthorityPortSession:
    """A requests session (msal's default http_client) that sends a port-less URL of the
    authority's host to the authority's host and port; every other URL goes out unchanged.
    REQUESTS_CA_BUNDLE still applies (requests reads it per request)."""

    def __init__(self, netloc, timeout):
        import requests

        self._session = requests.Session()
        self._timeout = timeout
        host = netloc.rsplit(":", 1)[0] if netloc.rsplit(":", 1)[-1].isdigit() else netloc
        self._portless = "https://" + host + "/"
        self._addressed = "https://" + netloc + "/"

    def _route(self, url):
        if url.startswith(self._portless) and self._portless != self._addressed:
            return self._addressed + url[len(self._portless):]
        return url

    def get(self, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return self._session.get(self._route(url), **kwargs)

    def post(self, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return self._session.post(self._route(url), **kwargs)

    def close(self):
        self._session.close()


def failure(result):
    return {
        "ok": False,
        "error": result.get("error"),
        "error_description": result.get("error_description"),
        "error_codes": result.get("error_codes"),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--authority", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--scope", action="append", required=True)
    parser.add_argument("--ca-file")
    parser.add_argument("--timeout", type=int, default=30)
    args = parser.parse_args()

    def on_alarm(_signum, _frame):
        emit({"ok": False, "exception": f"timed out after {args.timeout} s"}, 3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)

    if args.ca_file:
        os.environ["REQUESTS_CA_BUNDLE"] = args.ca_file
        os.environ.pop("CURL_CA_BUNDLE", None)

    import msal  # after the CA variables are settled

    # msal-python asks home realm discovery at https://HOST/common/userrealm/... built from the
    # authority's host WITHOUT its port (msal/authority.py, user_realm_discovery), which misses an
    # authority on a non-default port. msal documents its `http_client` parameter ("Your
    # implementation of abstract class HttpClient", PublicClientApplication's docstring), so the
    # peer passes a requests session that sends such port-less URLs to the authority's port.
    http_client = AuthorityPortSession(args.authority.split("/")[2], min(args.timeout, 15))

    try:
        app = msal.PublicClientApplication(
            args.client_id,
            authority=args.authority,
            instance_discovery=False,
            http_client=http_client,
        )
        result = app.acquire_token_by_username_password(
            os.environ["PEER_USERNAME"], os.environ["PEER_PASSWORD"], scopes=args.scope
        )
        if "access_token" not in result:
            emit(failure(result), 1)
        accounts = app.get_accounts(username=os.environ["PEER_USERNAME"])
        if not accounts:
            emit({"ok": False, "exception": "msal cached no account for the user"}, 1)
        refreshed = app.acquire_token_silent(args.scope, account=accounts[0], force_refresh=True)
        if not refreshed or "access_token" not in refreshed:
            emit(failure(refreshed or {"error": "no token from the refresh token"}), 1)
        emit(
            {
                "ok": True,
                "token_type": result.get("token_type"),
                "scope": result.get("scope"),
                "access_claims": claims_of(result["access_token"]),
                "id_token_claims": result.get("id_token_claims"),
                "refreshed_claims": claims_of(refreshed["access_token"]),
            },
            0,
        )
    except Exception as e:  # noqa: BLE001 - report anything msal raises as one JSON line
        emit({"ok": False, "exception": f"{type(e).__name__}: {e}"}, 2)


if __name__ == "__main__":
    main()
