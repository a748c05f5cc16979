"""Cross-check warden-psrp against psrpcore 0.3.1 (pip install psrpcore==0.3.1), both ways.

    PSRP_INTEROP_DIR=/tmp/x cargo test -p warden-psrp --test psrpcore -- --ignored
    python interop.py /tmp/x

1. psrpcore's server and client consume the messages warden-psrp wrote (ours_*.bin) and must
   see what we meant (asserted below);
2. psrpcore's client and server write theirs_*.bin, which tests/psrpcore.rs decodes.
"""

import sys
import uuid

from psrpcore import ClientPowerShell, ClientRunspacePool, PSRPPayload, ServerPipeline, ServerRunspacePool, StreamType
from psrpcore.types import ErrorCategory, ErrorCategoryInfo, NETException, PSInvocationState, RunspacePoolState

PID = uuid.UUID(int=0xAAAA_BBBB_CCCC_DDDD_EEEE_FFFF_0000_1111)
d = sys.argv[1]


def events(obj):
    out = []
    while (e := obj.next_event()) is not None:
        out.append(e)
    return out


def read(name):
    with open(f"{d}/{name}", "rb") as f:
        return f.read()


def drain(obj, name):
    with open(f"{d}/{name}", "wb") as f:
        f.write(b"".join(p.data for p in iter(obj.data_to_send, None)))


# psrpcore's server on our client messages.
server = ServerRunspacePool()
server.receive_data(PSRPPayload(read("ours_client_creation.bin"), StreamType.default, None))
assert [type(e).__name__ for e in events(server)] == ["SessionCapabilityEvent", "InitRunspacePoolEvent"]
assert server.state == RunspacePoolState.Opened
drain(server, "theirs_server_open.bin")
sp = ServerPipeline(server, PID)
server.receive_data(PSRPPayload(read("ours_client_create_pipeline.bin"), StreamType.default, PID))
assert [type(e).__name__ for e in events(server)] == ["CreatePipelineEvent"]
md = sp.metadata
assert (md.no_input, md.add_to_history, md.is_nested) == (True, False, False)
(cmd,) = md.commands
assert (cmd.command_text, cmd.is_script) == ("Get-Mailbox", False)
params = dict(cmd.parameters)
assert params["Identity"] == "john@contoso.com" and params["ResultSize"] == 10 and params["Force"] is True
assert list(params["Props"]) == ["A", "B"] and params["Hash"].k == 1
sp.start()
sp.write_output("hello")
sp.write_output({"a": 1})
sp.write_warning("warn!")
sp.write_error(
    NETException("bad value"),
    ErrorCategoryInfo(Category=ErrorCategory.InvalidData, Reason="NETException", TargetName="tgt"),
    "tgt",
    "BadValue,Fuzz",
)
sp.complete()
drain(server, "theirs_server_pipeline.bin")

# psrpcore's client on our server messages.
client = ClientRunspacePool()
client.open()
drain(client, "theirs_client_open.bin")
client.receive_data(PSRPPayload(read("ours_server_open.bin"), StreamType.default, None))
events(client)
assert client.state == RunspacePoolState.Opened
ps = ClientPowerShell(client)
ps.add_command("Get-Mailbox").add_parameter("Identity", "x@y").add_parameter("ResultSize", 5).add_parameter("Force")
ps.start()
drain(client, "theirs_client_pipeline.bin")
# Our server messages are addressed to PID: re-key the pipeline psrpcore created.
client.pipeline_table[PID] = client.pipeline_table.pop(ps.pipeline_id)
ps.pipeline_id = PID
client.receive_data(PSRPPayload(read("ours_server_pipeline.bin"), StreamType.default, PID))
got = events(client)
assert [type(e).__name__ for e in got] == [
    "PipelineOutputEvent",
    "PipelineOutputEvent",
    "WarningRecordEvent",
    "VerboseRecordEvent",
    "ErrorRecordEvent",
    "PipelineStateEvent",
], got
out = got[0].data
assert (out.Name, out.Count, list(out.Aliases), out.Nested.x) == ("John", 3, ["j", "jj"], None)
assert got[1].data == "plain\r\ntext _x0041_"
assert (got[2].record.Message, got[3].record.Message) == ("careful", "verbose")
rec = got[4].record
assert rec.FullyQualifiedErrorId == "[Server=X] 9F3A7B21,Microsoft.Exchange.Management.RecipientTasks.GetMailbox"
assert rec.Exception.Message == 'Couldn\'t find object "nobody".'
assert rec.CategoryInfo.Reason == "ManagementObjectNotFoundException" and rec.TargetObject == "nobody"
assert got[5].state == PSInvocationState.Failed and ps.state == PSInvocationState.Failed
print("psrpcore understood every message warden-psrp wrote; theirs_*.bin written to", d)
