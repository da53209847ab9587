"""The steps' own pieces that need no workstation: what upload sends (packed, streamed, one Send
per list as pypsrp fragments it), and what download accepts (a header over the size limit,
a file shorter than its header)."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
from pypsrp.messages import EndOfPipelineInput, PipelineInput
from pypsrp.powershell import Fragmenter
from pypsrp.serializer import Serializer

from cpuu_fleet.limits import Limits
from cpuu_fleet.visit.session import SessionError
from cpuu_fleet.visit.steps.collect import _DownloadSink
from cpuu_fleet.visit.steps.push import OutgoingFile, upload_input
from cpuu_fleet.vocabulary import ErrorClass


def test_upload_input_packs_small_files_and_streams_big_ones(tmp_path):
    big = tmp_path / "big.bin"
    content = os.urandom(1000)
    big.write_bytes(content)
    files = (
        OutgoingFile("a.ini", 3, "x", data=b"abc"),
        OutgoingFile("b.bat", 2, "y", data=b"de"),
        OutgoingFile("big.bin", 1000, "z", source=big),
    )
    batches = list(upload_input(files, send_budget=3000, max_chunk=300))
    flat = [item for batch in batches for item in batch]
    headers = [item for item in flat if isinstance(item, dict)]
    assert [h["Path"] for h in headers] == ["a.ini", "b.bat", "big.bin"]
    # both small files and the big file's header (and its first chunk) share the first Send
    assert [type(i).__name__ for i in batches[0][:5]] == ["dict", "str", "dict", "str", "dict"]
    assert isinstance(batches[0][5], str)
    chunks = [item for item in flat[flat.index(headers[2]) + 1 :]]
    assert b"".join(base64.b64decode(c) for c in chunks) == content
    assert all(len(base64.b64decode(c)) <= 300 for c in chunks)


def _sends(batches: list[list[object]], max_payload: int) -> int:
    """How many WSMan Sends pypsrp 0.9.1 makes of these input lists (its own Fragmenter)."""
    fragmenter = Fragmenter(max_payload, Serializer())
    pool, pipeline = str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper()
    sends = 0
    for index, batch in enumerate(batches):
        messages = [PipelineInput(data=item) for item in batch]
        if index == len(batches) - 1:
            messages.append(EndOfPipelineInput())
        sends += len(fragmenter.fragment_multiple(messages, pool, pipeline))
    return sends


def test_upload_input_fills_every_send_as_pypsrp_fragments_it():
    """A 2 MB exe, a README, an INI and two batch files at Windows' 512000-byte envelope: each
    yielded list is exactly one Send, and there are as few Sends as the bytes allow."""
    max_payload = 382752  # pypsrp's max_payload_size once the envelope is raised to 512000
    exe = os.urandom(2 * 1024 * 1024)
    small = [os.urandom(n) for n in (180, 2400, 300, 310)]
    names = ["README-LAB-STANDIN.txt", "CPUU.ini", "CPUU_Update.bat", "CPUU_Undo.bat"]
    files = (
        OutgoingFile("ClientProfileUpdatingUtility.exe", len(exe), "a" * 64, data=exe),
        *(OutgoingFile(n, len(d), "b" * 64, data=d) for n, d in zip(names, small, strict=True)),
    )
    batches = list(upload_input(files, send_budget=max_payload))
    assert _sends(batches, max_payload) == len(batches)
    wire = (len(exe) + sum(map(len, small))) * 4 / 3
    assert len(batches) == -(-int(wire) // max_payload) == 8
    received = b"".join(base64.b64decode(i) for b in batches for i in b if isinstance(i, str))
    assert received == exe + b"".join(small)


def _sink(folder: Path, done: list, **limits: int) -> _DownloadSink:
    return _DownloadSink(
        folder, "C:\\stage", lambda name: False, lambda *a: done.append(a), Limits(**limits)
    )


def _header(length: object) -> dict:
    return {"Path": "C:\\stage\\CPUU_a.log", "Name": "CPUU_a.log", "Length": length}


def test_a_download_shorter_than_its_header_is_broken_and_set_aside(tmp_path):
    done: list = []
    sink = _sink(tmp_path, done)
    sink(_header(10))
    sink(base64.b64encode(b"12345").decode("ascii"))
    with pytest.raises(SessionError) as caught:
        sink.close()
    assert caught.value.error_class is ErrorClass.PROTOCOL
    assert "5 of the 10 bytes" in caught.value.message
    assert "download broke off after 5 of 10 bytes" in (sink.abandon() or "")
    assert [p.name for p in tmp_path.iterdir()] == ["CPUU_a.log.partial"] and done == []


def test_a_header_over_the_size_limit_is_refused_before_any_file_exists(tmp_path):
    done: list = []
    sink = _sink(tmp_path, done, file_bytes=1024)
    with pytest.raises(SessionError) as caught:
        sink(_header(2 * 1024**3))  # "a 2 GB file"
    assert caught.value.error_class is ErrorClass.LIMIT and "file_size" in caught.value.message
    assert sink.abandon() is None and list(tmp_path.iterdir()) == []
    with pytest.raises(SessionError) as caught:
        _sink(tmp_path, done)(_header("lots"))
    assert caught.value.error_class is ErrorClass.PROTOCOL
