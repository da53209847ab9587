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
