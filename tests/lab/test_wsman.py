"""What goes over the wire, checked on the lab's own SOAP answers: Windows' fragment size, the
two-step open, no PipelineState=Running, an idempotent repeated Receive."""

from __future__ import annotations

import base64
import re
import struct
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from pypsrp.powershell import PowerShell, RunspacePool

from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.lab.wsman import WSManDispatcher
from tests.support.lab import BIG_SCRIPT, SLOW_SCRIPT, client_for

STREAM = re.compile(rb'<rsp:Stream Name="stdout"[^>]*>([^<]+)</rsp:Stream>')
ACTION = re.compile(rb"<a:Action>[^<]*/([A-Za-z]+)</a:Action>")


def fragments(stream_b64: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """(whole fragment, message type or -1 for a continuation, message data) per fragment."""
    raw = base64.b64decode(stream_b64)
    offset = 0
    while offset < len(raw):
        (length,) = struct.unpack(">I", raw[offset + 17 : offset + 21])
        flags = raw[offset + 16]
        body = raw[offset + 21 : offset + 21 + length]
        message_type = struct.unpack("<I", body[4:8])[0] if flags & 0x1 else -1
        yield raw[offset : offset + 21 + length], message_type, body[40:]
        offset += 21 + length


@pytest.fixture
def recorded(basic_fleet: LabFleet, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    """Every (action, response) pc-0001 answers while the test runs."""
    dispatcher = basic_fleet.host("pc-0001").endpoint.dispatcher
    original = WSManDispatcher.handle
    seen: list[tuple[str, bytes]] = []

    def handle(
        self: WSManDispatcher, data: bytes, client_ip: str = "127.0.0.1"
    ) -> tuple[int, bytes]:
        status, body = original(self, data, client_ip)
        if self is dispatcher:
            match = ACTION.search(body)
            seen.append((match.group(1).decode() if match else "?", body))
        return status, body

    monkeypatch.setattr(WSManDispatcher, "handle", handle)
    return seen


def test_open_takes_two_receives_like_windows(basic_fleet: LabFleet, recorded) -> None:
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        assert pool.state == 2  # Opened
    actions = [action for action, _ in recorded]
    assert actions[:3] == ["CreateResponse", "ReceiveResponse", "ReceiveResponse"]
    first = [t for s in STREAM.findall(recorded[1][1]) for _, t, _ in fragments(s)]
    second = [t for s in STREAM.findall(recorded[2][1]) for _, t, _ in fragments(s)]
    assert first == [0x00010002, 0x00021009]  # SessionCapability, ApplicationPrivateData
    assert second == [0x00021005]  # RunspacePoolState


def test_output_uses_32k_fragments_and_no_running_state(basic_fleet: LabFleet, recorded) -> None:
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(BIG_SCRIPT).add_parameter("Count", 3).add_parameter("Size", 200_000)
        output = ps.invoke()
    assert [len(o) for o in output] == [200_006] * 3
    receives = [body for action, body in recorded if action == "ReceiveResponse"]
    sizes, types, states = [], [], []
    for body in receives:
        assert len(body) < 200_000  # about 175 KB of streams per answer, as Windows sends
        for stream in STREAM.findall(body):
            frags = list(fragments(stream))
            assert len(frags) == 1  # one fragment per rsp:Stream
            whole, message_type, data = frags[0]
            sizes.append(len(whole))
            types.append(message_type)
            if message_type == 0x00041006:
                states.append(int(re.search(rb'N="PipelineState">(\d+)<', data).group(1)))
    assert max(sizes) == 32_768
    assert states == [4]  # Completed only: Windows never sends Running (1)
    assert 0x00041010 in types  # "Preparing modules for first use." on the shell's first pipeline


def test_repeated_receive_message_id_gets_the_same_answer(basic_fleet: LabFleet) -> None:
    host = basic_fleet.host("pc-0001")
    auth = (basic_fleet.username, basic_fleet.password)
    url = f"http://{host.address}:{host.port}/wsman"
    headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(SLOW_SCRIPT).add_parameter("Seconds", 0)
        ps.begin_invoke()
        outputs = 0
        for _ in range(20):
            envelope = RECEIVE.format(
                to=url,
                message_id=f"uuid:{str(uuid.uuid4()).upper()}",
                shell_id=pool.id.upper(),
                command_id=str(ps.id).upper(),
            ).encode()
            first = requests.post(url, data=envelope, auth=auth, headers=headers, timeout=10)
            again = requests.post(url, data=envelope, auth=auth, headers=headers, timeout=10)
            assert first.status_code == again.status_code == 200
            body = first.content.split(b"<s:Body>", 1)[1]
            assert again.content.split(b"<s:Body>", 1)[1] == body  # same data, not the next
            kinds = [t for s in STREAM.findall(body) for _, t, _ in fragments(s)]
            outputs += kinds.count(0x00041004)
            if b"CommandState/Done" in body:
                break
        assert outputs == 2  # "started" and "finished", each handed out once


def test_retried_receive_while_the_first_still_waits_loses_nothing(basic_fleet: LabFleet) -> None:
    """pypsrp re-sends a Receive after a read timeout while the server may still be answering
    the first one: both must get the same data, and nothing may be skipped."""
    host = basic_fleet.host("pc-0001")
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(SLOW_SCRIPT).add_parameter("Seconds", 0.5)
        ps.begin_invoke()
        envelope = RECEIVE.format(
            to=f"http://{host.address}:{host.port}/wsman",
            message_id=f"uuid:{str(uuid.uuid4()).upper()}",
            shell_id=pool.id.upper(),
            command_id=str(ps.id).upper(),
        ).encode()
        url = f"http://{host.address}:{host.port}/wsman"

        def post() -> bytes:
            answer = requests.post(
                url,
                data=envelope,
                auth=(basic_fleet.username, basic_fleet.password),
                headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
                timeout=10,
            )
            assert answer.status_code == 200
            return answer.content.split(b"<s:Body>", 1)[1]

        with ThreadPoolExecutor(2) as pool_of_two:
            first, second = pool_of_two.map(lambda _: post(), range(2))
        assert first == second
        kinds = [t for s in STREAM.findall(first) for _, t, _ in fragments(s)]
        assert 0x00041004 in kinds  # "started" went to both, not to one of them only


RECEIVE = (
    '<s:Envelope xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header>'
    '<wsa:Action s:mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive</wsa:Action>'
    '<wsman:MaxEnvelopeSize s:mustUnderstand="true">512000</wsman:MaxEnvelopeSize>'
    "<wsa:MessageID>{message_id}</wsa:MessageID><wsman:OperationTimeout>PT5S</wsman:OperationTimeout>"
    '<wsman:ResourceURI s:mustUnderstand="true">http://schemas.microsoft.com/powershell/Microsoft.PowerShell</wsman:ResourceURI>'
    "<wsa:To>{to}</wsa:To>"
    '<wsman:SelectorSet><wsman:Selector Name="ShellId">{shell_id}</wsman:Selector></wsman:SelectorSet>'
    '</s:Header><s:Body><rsp:Receive><rsp:DesiredStream CommandId="{command_id}">stdout'
    "</rsp:DesiredStream></rsp:Receive></s:Body></s:Envelope>"
)


@pytest.mark.parametrize("fleet_name", ["basic_fleet", "ntlm_fleet"])
def test_pypsrp_read_timeout_retry_gets_the_output(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, fleet_name: str
) -> None:
    """pypsrp 0.9 re-sends a Receive whose answer did not come within read_timeout (after
    rebuilding the NTLM context on a new connection); the lab answers it like the original."""
    fleet: LabFleet = request.getfixturevalue(fleet_name)
    receives: Counter[bytes] = Counter()
    original = WSManDispatcher.handle

    def counting(
        self: WSManDispatcher, data: bytes, client_ip: str = "127.0.0.1"
    ) -> tuple[int, bytes]:
        if b"/windows/shell/Receive<" in data:
            receives[re.search(rb"<wsa:MessageID>([^<]+)<", data).group(1)] += 1
        return original(self, data, client_ip)

    monkeypatch.setattr(WSManDispatcher, "handle", counting)
    client = client_for(fleet, operation_timeout=5, read_timeout=0.5, reconnection_backoff=0.05)
    with client:
        output, _, had_errors = client.execute_ps("Start-Sleep 1.2; 'late'")
    assert (output, had_errors) == ("late", False)
    assert max(receives.values()) >= 2  # the same Receive really came again
