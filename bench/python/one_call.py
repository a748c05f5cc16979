"""The usual alternative to warden for one Exchange Online call: a Python script with msal and
requests. Gets an app-only token with the client secret, calls Get-Mailbox -ResultSize 1 through
the REST InvokeCommand endpoint, prints the result. bench/run.sh times it, from exec to exit,
against `warden run` doing the same against the same exosim.

Settings come from the same environment warden reads:
  AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_AUTHORITY_HOST,
  WARDEN_EXCHANGE_URL (the REST host) and WARDEN_CA_FILE (exosim's test CA).
"""

import json
import os
import sys
import uuid

import msal
import requests


def main():
    tenant = os.environ["AZURE_TENANT_ID"]
    authority = os.environ["AZURE_AUTHORITY_HOST"].rstrip("/") + "/" + tenant
    exchange = os.environ.get("WARDEN_EXCHANGE_URL", "https://outlook.office365.com").rstrip("/")

    http = requests.Session()
    ca_file = os.environ.get("WARDEN_CA_FILE")
    if ca_file:
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE win over `verify`; settle them.
        os.environ["REQUESTS_CA_BUNDLE"] = ca_file
        os.environ.pop("CURL_CA_BUNDLE", None)
        http.verify = ca_file

    app = msal.ConfidentialClientApplication(
        os.environ["AZURE_CLIENT_ID"],
        client_credential=os.environ["AZURE_CLIENT_SECRET"],
        authority=authority,
        # exosim is not a known Microsoft cloud: skip instance discovery (a real tenant would not).
        instance_discovery=False,
        http_client=http,
    )
    result = app.acquire_token_for_client(scopes=["https://outlook.office365.com/.default"])
    if "access_token" not in result:
        print(json.dumps({"error": result.get("error"), "error_description": result.get("error_description")}))
        return 1

    response = http.post(
        f"{exchange}/adminapi/beta/{tenant}/InvokeCommand",
        headers={
            "Authorization": "Bearer " + result["access_token"],
            "X-CmdletName": "Get-Mailbox",
            "X-AnchorMailbox": f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}",
            "client-request-id": str(uuid.uuid4()),
            "Prefer": "odata.maxpagesize=1",
            "X-ResponseFormat": "json",
            "X-SerializationLevel": "Partial",
        },
        json={"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": 1}}},
        timeout=60,
    )
    response.raise_for_status()
    objects = response.json()["value"]
    print(json.dumps({"objects": len(objects), "value": objects}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
