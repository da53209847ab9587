"""Engine parts that need no workstation: payload manifest, safe file names, the outcome table."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
from pypsrp.messages import EndOfPipelineInput, PipelineInput
from pypsrp.powershell import Fragmenter
from pypsrp.serializer import Serializer

from cpuu_fleet import journal as states
from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.errors import InputError
from cpuu_fleet.filenames import create_exclusive, safe_basename
from cpuu_fleet.inputs.payload import load_payload
from cpuu_fleet.visit.outcome import RunResult, judge, judge_exit
from cpuu_fleet.visit.session import ErrorClass, SessionError, check_timeouts
from cpuu_fleet.visit.steps import OutgoingFile, upload_input


def _payload(tmp_path: Path) -> Path:
    folder = tmp_path / "payload"
    (folder / "lang").mkdir(parents=True)
    (folder / "ClientProfileUpdatingUtility.exe").write_bytes(b"MZ" + b"x" * 1000)
    (folder / "lang" / "fr.dll").write_bytes(b"dll")
    return folder


def test_payload_manifest_is_stable_and_versioned(tmp_path):
    folder = _payload(tmp_path)
    first = load_payload(folder)
    again = load_payload(folder)
    assert [f.relative for f in first.files] == ["ClientProfileUpdatingUtility.exe", "lang\\fr.dll"]
    assert first.total_bytes == 1002 + 3
    assert first.version == again.version == first.manifest_sha256[:12]
    (folder / "lang" / "fr.dll").write_bytes(b"dll2")
    assert load_payload(folder).version != first.version


def test_payload_without_exe_or_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_payload(tmp_path / "nope")
    folder = _payload(tmp_path)
    (folder / "ClientProfileUpdatingUtility.exe").unlink()
    with pytest.raises(InputError, match=r"ClientProfileUpdatingUtility\.exe is missing"):
        load_payload(folder)


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("..\\..\\evil.csv", "evil.csv"),
        ("/etc/passwd", "passwd"),
        ("C:\\x\\CON.csv", "_CON.csv"),
        ("CPUU_a\nb.csv", "CPUU_a_b.csv"),
        ("nul", "_nul"),
        ("..", "unnamed"),
        ("a\x00b.csv", "a_b.csv"),
        ("C:evil.log", "evil.log"),
        ("report. ", "report"),
    ],
)
def test_hostile_names_become_safe_base_names(remote, local):
    assert safe_basename(remote) == local


def test_create_exclusive_never_overwrites(tmp_path):
    folder = tmp_path / "hosts" / "pc-0001"
    paths = []
    for _ in range(3):
        path, fd = create_exclusive(folder, "..\\CPUU_x.csv")
        os.write(fd, b"data")
        os.close(fd)
        paths.append(path.name)
    assert paths == ["CPUU_x.csv", "CPUU_x (2).csv", "CPUU_x (3).csv"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(paths)
    assert not (tmp_path / "hosts" / "CPUU_x.csv").exists()


def _profiles(*codes: int) -> list[ProfileResult]:
    return [ProfileResult(f"p{i}", code, 0, i) for i, code in enumerate(codes, 1)]


@pytest.mark.parametrize(
    ("exit_code", "codes", "killed", "state"),
    [
        (1, (10, 10), False, states.SUCCEEDED),
        (1 | 4, (10, 11), False, states.PARTIAL),
        (4, (11,), False, states.FAILED),
        (32, (), False, states.FAILED),
        (1 | 32, (10,), False, states.FAILED),  # a crash is never partial
        (1, (), True, states.FAILED),  # killed: exit 1 is NOT success
        (0, (), False, states.SKIPPED),
        (0, (2, 2), False, states.SUCCEEDED),
        (2, (), False, states.NOT_SWITCHED),  # not switched yet
        (1 | 2, (10,), False, states.PARTIAL),
        (1, (10, 6), False, states.PARTIAL),  # offline profile needs action
        (9009, (), False, states.FAILED),
        (16, (), False, states.FAILED),
    ],
)
def test_outcome_table(exit_code, codes, killed, state):
    verdict = judge_exit(exit_code, _profiles(*codes), killed=killed)
    assert verdict.state == state
    if state in (states.FAILED, states.PARTIAL):
        assert verdict.error_class == "cpuu"


def test_outcome_of_errors_and_policies():
    unreachable = SessionError(ErrorClass.UNREACHABLE, "connection refused")
    assert judge(None, (), unreachable).state == states.UNREACHABLE
    assert judge(None, (), unreachable).transient
    auth = SessionError(ErrorClass.AUTHENTICATION, "401")
    verdict = judge(None, (), auth)
    assert (verdict.state, verdict.error_class, verdict.transient) == (
        states.FAILED,
        "authentication",
        False,
    )
    assert judge(RunResult("t", no_user=True), ()).state == states.SKIPPED
    assert judge(RunResult("t", no_user=True, pending=True), ()).state == states.PENDING
    assert judge(RunResult("t", refused="Undo refused"), ()).error_class == "policy"
    after = judge(
        RunResult("t", ran=True, exit_code=1), _profiles(10), SessionError(ErrorClass.TIMEOUT, "x")
    )
    assert after.state == states.SUCCEEDED and after.transient


def test_read_timeout_must_exceed_operation_timeout():
    check_timeouts({"read_timeout": 30, "operation_timeout": 20}, "pc-1")
    with pytest.raises(InputError, match=r"pc-1.*read_timeout"):
        check_timeouts({"read_timeout": 20, "operation_timeout": 20}, "pc-1")


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
