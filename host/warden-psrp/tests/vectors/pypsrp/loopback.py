"""Drive pypsrp (pip install pypsrp==0.9.1) through examples/loopback.rs: a real PSRP client
opening a Microsoft.Exchange runspace pool, running commands and closing, every answer written
by warden-psrp's builders.

    cargo build -p warden-psrp --example loopback
    python loopback.py $CARGO_TARGET_DIR/debug/examples/loopback
"""

import struct
import subprocess
import sys

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

proc = subprocess.Popen([sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
sent = []


def exchange(message, **_kwargs):
    sent.append(message)
    proc.stdin.write(struct.pack(">I", len(message)) + message)
    proc.stdin.flush()
    (n,) = struct.unpack(">I", proc.stdout.read(4))
    return proc.stdout.read(n)


wsman = WSMan("outlook.office365.com", port=443, path="powershell-liveid?BasicAuthToOAuthConversion=true",
              auth="basic", username="admin@contoso.onmicrosoft.com", password="Bearer x", cert_validation=False)
wsman.transport.send = exchange

with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
    assert pool.state == 2, pool.state  # Opened
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Mailbox").add_parameter("Identity", "john@contoso.com").add_parameter("ResultSize", 5)
    ps.add_cmdlet("Select-Object").add_parameter("Property", ["Name", "Alias"])
    output = ps.invoke()
    assert not ps.had_errors, ps.streams.error
    assert ps.state == 4, ps.state  # Completed
    first = output[0]
    assert first.adapted_properties == {} and first.extended_properties["Command"] == "Get-Mailbox", first
    params = first.extended_properties["Parameters"].extended_properties
    assert params["Identity"] == "john@contoso.com" and params["ResultSize"] == 5, params
    assert output[1] == "ran Get-Mailbox" and output[3] == "ran Select-Object", output
    assert [w.message for w in ps.streams.warning] == ["Get-Mailbox is a loopback", "Select-Object is a loopback"]

    ps = PowerShell(pool)
    ps.add_cmdlet("Fail-Me").add_parameter("Identity", "nobody")
    ps.invoke()
    assert ps.had_errors and ps.state == 5, ps.state  # Failed
    err = ps.streams.error[0]
    assert err.fq_error == "[Server=LOOPBACK] 9F3A7B21,Fail-Me", err.fq_error
    assert str(err) == 'Couldn\'t find object "nobody".', str(err)
    assert err.exception.adapted_properties["Message"] == 'Couldn\'t find object "nobody".'
    assert (err.reason, err.category, err.target_object) == ("ManagementObjectNotFoundException", 13, "nobody")
    assert err.message == "ObjectNotFound: (nobody:String) [], ManagementObjectNotFoundException", err.message

print(f"pypsrp accepted every answer ({len(sent)} requests)")
