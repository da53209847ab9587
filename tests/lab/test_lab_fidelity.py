"""Hold the lab to real Windows: pypsrp against the lab must produce the exchange shapes that pypsrp
against real Windows hosts produced (recordings in ``../shared/fixtures/windows-wsman``).

The shape (see ``fidelity_shape.py``) is the action of each message, the element paths in each
body and the PSRP message sequence. Every difference that remains is listed per recording in
``ALLOWED`` with its reason, so a new difference fails the test.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from pypsrp.exceptions import WinRMTransportError
from pypsrp.wsman import WSMan, _TransportHTTP

from cpuu_fleet.lab.contract import PipelineHost, ScriptCall
from cpuu_fleet.lab.registry import register

sys.path.insert(0, str(Path(__file__).parent))
from fidelity_shape import (  # the helper lives beside this file (tests are no package)
    Allowed,
    Defragmenter,
    Exchange,
    PsrpDecodeError,
    Step,
    differences,
    exchange_shape,
    load_recording,
    unexplained,
)

FIXTURES = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "windows-wsman"

RECORDINGS = [
    "test_psrp_open_runspace",
    "test_client_execute_ps",
    "test_client_execute_ps_failure",
    "test_client_copy_file",
    "test_client_copy_file_empty",
    "test_client_copy_file_warning",
    "test_client_fetch_file",
    "test_client_fetch_file_fail_missing",
    "test_psrp_is_alive_invalid_selectors",
    "test_psrp_long_running_cmdlet",
    "test_psrp_stream_output_invocation",
    "test_psrp_run_protocol_version_2.3",
    "test_wsman_update_envelope_size_500",
]


def recording(name: str) -> Exchange:
    path = FIXTURES / f"{name}.yml"
    if not path.is_file():
        pytest.skip(
            f"Windows recordings not found at {FIXTURES.resolve()} (they live outside the repo)"
        )
    return exchange_shape(load_recording(path))


# --------------------------------------------------------------------------------------------
# The shape decoder itself, on the recordings and on hand-made fragments
# --------------------------------------------------------------------------------------------


def fragment(object_id: int, fragment_id: int, data: bytes, *, start: bool, end: bool) -> bytes:
    flags = (0x1 if start else 0) | (0x2 if end else 0)
    return struct.pack(">QQBI", object_id, fragment_id, flags, len(data)) + data


def psrp_message(destination: int, message_type: int, data: bytes) -> bytes:
    return struct.pack("<II", destination, message_type) + b"\0" * 32 + data


def test_defragmenter_joins_a_message_split_across_soap_messages():
    message = psrp_message(1, 0x41006, b'<Obj><MS><I32 N="PipelineState">5</I32></MS></Obj>')
    defragmenter = Defragmenter()
    assert defragmenter.feed(fragment(7, 0, message[:30], start=True, end=False)) == []
    assert defragmenter.pending == [7]
    (decoded,) = defragmenter.feed(fragment(7, 1, message[30:], start=False, end=True))
    assert (decoded.direction, decoded.label) == ("S>C", "PipelineState(Failed)")
    assert defragmenter.pending == []


def test_defragmenter_rejects_broken_fragments():
    with pytest.raises(PsrpDecodeError, match="truncated"):
        Defragmenter().feed(fragment(1, 0, b"x" * 50, start=True, end=True)[:-5])
    with pytest.raises(PsrpDecodeError, match="without a start"):
        Defragmenter().feed(fragment(1, 3, b"x" * 50, start=False, end=True))


@pytest.mark.parametrize("name", RECORDINGS)
def test_recording_decodes_completely_and_matches_itself(name):
    exchange = recording(name)
    assert exchange.steps
    assert exchange.unfinished_psrp == []
    assert differences(exchange, exchange) == []


def test_recordings_show_the_windows_behaviour_the_lab_must_play():
    """Facts read off the recordings with the decoder; they pin the decoder to reality."""
    opened = recording("test_psrp_open_runspace")
    assert opened.signatures() == [
        "Create[pwsh/pool] -> CreateResponse",
        "Receive[pwsh/pool] -> ReceiveResponse",
        "Receive[pwsh/pool] -> ReceiveResponse",
        "Delete[pwsh/pool] -> DeleteResponse",
    ]
    assert opened.psrp("C>S") == ["SessionCapability", "InitRunspacePool"]
    assert opened.psrp("S>C") == [
        "SessionCapability",
        "ApplicationPrivateData",
        "RunspacePoolState(Opened)",
    ]
    failed = recording("test_client_execute_ps_failure")
    assert failed.psrp("S>C")[-2:] == ["ProgressRecord", "PipelineState(Failed)"]
    slow = recording("test_psrp_long_running_cmdlet")
    assert "Receive[pwsh/pipeline] -> Fault(w:TimedOut 2150858793)" in slow.signatures()
    gone = recording("test_psrp_is_alive_invalid_selectors")
    assert gone.signatures()[-1] == "Get[shell/pool] -> Fault(w:InvalidSelectors 2150858843)"
    fetched = recording("test_client_fetch_file")
    # one 250 KB object spread over three Receives: the middle one completes no message
    assert [len(step.response.psrp) for step in fetched.steps[4:7]] == [2, 0, 3]


def test_differences_catch_a_missing_step_a_missing_element_and_a_psrp_change():
    windows = recording("test_client_execute_ps")
    without_second_receive = Exchange(windows.steps[:2] + windows.steps[3:], [])
    found = differences(windows, without_second_receive)
    assert "step missing: Receive[pwsh/pool] -> ReceiveResponse" in found
    assert "psrp S>C missing: RunspacePoolState(Opened)" in found

    create = windows.steps[0]
    thinner = replace(
        create.response, body_paths=create.response.body_paths - {"rsp:Shell/rsp:BufferMode"}
    )
    found = differences(windows, Exchange([Step(create.request, thinner), *windows.steps[1:]], []))
    assert found == [
        "response body of Create[pwsh/pool] -> CreateResponse lacks rsp:Shell/rsp:BufferMode"
    ]


def test_allow_list_explains_known_differences_and_reports_stale_entries():
    allowed = [
        Allowed(r"step missing: Receive\[pwsh/pool\].*", "two-step open"),
        Allowed("never", "old"),
    ]
    left, stale = unexplained(
        [
            "step missing: Receive[pwsh/pool] -> ReceiveResponse",
            "psrp S>C extra: PipelineState(Running)",
        ],
        allowed,
    )
    assert left == ["psrp S>C extra: PipelineState(Running)"]
    assert stale == [allowed[1]]


# --------------------------------------------------------------------------------------------
# pypsrp against the lab, observed on the wire
# --------------------------------------------------------------------------------------------


class WireRecorder:
    """Observes what pypsrp's transport sends and receives (plain SOAP, before encryption).

    It wraps ``pypsrp.wsman._TransportHTTP.send`` and passes every call through unchanged: this is
    observation, not mocking. Only the transports of watched ``WSMan`` objects are recorded, so a
    helper connection (e.g. one that deletes a shell behind the pool's back) stays out of the shape.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[bytes, bytes | str | None]] = []
        self._watched: set[int] = set()

    def watch(self, wsman: WSMan) -> WSMan:
        self._watched.add(id(wsman.transport))
        return wsman

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = _TransportHTTP.send
        recorder = self

        def observed_send(transport, message, *args, **kwargs):
            if id(transport) not in recorder._watched:
                return original(transport, message, *args, **kwargs)
            try:
                response = original(transport, message, *args, **kwargs)
            except WinRMTransportError as err:
                recorder.pairs.append((message, err.response_text))
                raise
            except Exception:
                recorder.pairs.append((message, None))
                raise
            recorder.pairs.append((message, response))
            return response

        monkeypatch.setattr(_TransportHTTP, "send", observed_send)

    def shape(self) -> Exchange:
        return exchange_shape(self.pairs)


# The lab cannot run the cmdlets the recordings used (Get-Service, Start-Sleep, Write-Debug...).
# Where that matters, the test drives the same *protocol* operation through a script handler it
# registers itself (the lab's documented seam), so only the PowerShell content differs.
SLEEP_S = 2.6
"""With ``operation_timeout=1`` the long-running pipeline outlives two Receive long-polls, as the
recording's 10 s Start-Sleep outlived two 5 s ones (same shape, a quarter of the wait)."""


@register("fidelity-sleep")
def _sleep_then_hi(workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Plays ``Start-Sleep -Seconds 10; echo hi``."""
    host.sleep(SLEEP_S)
    host.write_output("hi")


@register("fidelity-streams")
def _every_stream(workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Plays the recording's Write-Debug/Verbose/Error/Output/Warning/Information script with the
    streams a lab handler has (no debug or information stream: listed in the allow-list)."""
    host.write_verbose("verbose stream")
    host.write_error("error stream")
    host.write_output("output stream")
    host.write_warning("warning stream")


@register("fidelity-echo")
def _error_then_input(workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Plays the protocol-2.3 script: an error merged into output, then ``$input`` echoed."""
    host.write_output("error")
    for item in call.input:
        host.write_output(item)


def marked(name: str, body: str) -> str:
    return f"# cpuu-fleet: {name}\n{body}"
