"""The lab's handlers play what Windows PowerShell 5.1 does with the scripts (issue 15).

Each test plays one documented behaviour through the handler of the script concerned, and checks
the script says the same (its text holds the error id the handler raises), so lab and Windows
cannot disagree again: ConstrainedLanguage, upload's header and replace errors, locked files.
"""

from __future__ import annotations

import hashlib
import re

import pytest

import cpuu_fleet.lab.handlers as handlers
from cpuu_fleet.lab.contract import ScriptCall, ScriptFailed
from cpuu_fleet.lab.registry import lookup
from cpuu_fleet.visit.remote import load_script
from tests.support.handlers import STAGE, RecordingHost, failure, file_items, invoke

STATE = r"C:\ProgramData\cpuu-fleet\state"


def _error_ids(script: str) -> set[str]:
    """Every error id the script can raise: ``-ErrorId 'X'`` and ``New-Failure ... 'X'``."""
    text = load_script(script)
    found = set(re.findall(r"-ErrorId\s+'(\w+)'", text))
    found |= set(
        re.findall(
            r"(?:ErrorRecord -ArgumentList @\(\s*\$exception,|New-Failure \$exception) '(\w+)'",
            text,
        )
    )
    return found


# ------------------------------------------------------------------------ ConstrainedLanguage


def test_preflight_reports_constrained_language_before_any_dotnet_call(ws):
    ws.language_mode = "ConstrainedLanguage"
    error = failure(ws, "preflight", Directory=STAGE, StateDirectory=STATE)
    assert (error.error_id, error.category) == ("ConstrainedLanguage", "PermissionDenied")
    assert "ConstrainedLanguage" in error.message
    assert "ConstrainedLanguage" in _error_ids("preflight")


@pytest.mark.parametrize("script", ["upload", "list-files", "download"])
def test_other_scripts_fail_with_powershells_own_error_in_constrained_language(ws, script):
    ws.language_mode = "ConstrainedLanguage"
    ws.fs.mkdir(STAGE)
    ws.fs.write_bytes(STAGE + r"\CPUU_x.log", b"x")
    with pytest.raises(ScriptFailed) as caught:
        invoke(ws, script, input_objects=file_items("a.ini", b"x"), Directory=STAGE)
    assert caught.value.error_id == "MethodInvocationNotSupportedInConstrainedLanguage"
    assert caught.value.message == handlers.CLM_METHOD_MESSAGE


def test_a_script_without_the_check_fails_at_its_first_dotnet_call(ws):
    """What the old preflight did: no mode check, so the generic error of its first .NET call."""
    ws.language_mode = "ConstrainedLanguage"
    text = load_script("preflight")
    start = text.index("$languageMode =")
    unchecked = text[:start] + text[text.index("function Test-Locked") :]
    call = ScriptCall(
        "preflight", unchecked, parameters={"Directory": STAGE, "StateDirectory": STATE}
    )
    with pytest.raises(ScriptFailed) as caught:
        lookup("preflight")(ws, call, RecordingHost())
    assert caught.value.error_id == "MethodInvocationNotSupportedInConstrainedLanguage"


def test_full_language_reports_its_mode(ws):
    (facts,) = invoke(ws, "preflight", Directory=STAGE, StateDirectory=STATE)
    assert facts["LanguageMode"] == "FullLanguage"


# ------------------------------------------------------------------------------ upload errors


def test_every_error_the_upload_handler_raises_is_one_the_script_raises():
    assert {
        "HashMismatch",
        "DiskFull",
        "InvalidPath",
        "UnexpectedInput",
        "InvalidHeader",
        "FileInUse",
    } <= _error_ids("upload")


@pytest.mark.parametrize(
    "length",
    [None, "", "twelve", "-1", " 3", "1e3", str(2**63), True],
    ids=["missing", "empty", "text", "negative", "blank", "exponent", "too-big", "bool"],
)
def test_upload_refuses_a_length_int64_tryparse_refuses(ws, length):
    header = {"Path": "a.ini", "Sha256": hashlib.sha256(b"x").hexdigest()}
    if length is not None:
        header["Length"] = length
    error = failure(ws, "upload", input_objects=[header, "eA=="], Directory=STAGE)
    assert (error.error_id, error.category) == ("InvalidHeader", "InvalidData")
    assert not ws.fs.glob(STAGE, "*")


def test_upload_refuses_a_sha256_that_is_not_64_hex_digits(ws):
    header = {"Path": "a.ini", "Length": "1", "Sha256": "not a hash"}
    error = failure(ws, "upload", input_objects=[header, "eA=="], Directory=STAGE)
    assert (error.error_id, error.category) == ("InvalidHeader", "InvalidData")


def test_upload_takes_the_length_as_a_string_the_way_the_engine_sends_it(ws):
    header = {"Path": "a.ini", "Length": "1", "Sha256": hashlib.sha256(b"x").hexdigest().upper()}
    (done,) = invoke(ws, "upload", input_objects=[header, "eA=="], Directory=STAGE)
    assert done["Length"] == 1 and ws.fs.read_bytes(STAGE + r"\a.ini") == b"x"


def test_a_target_held_open_fails_the_last_file_as_file_in_use_and_leaves_no_partial(ws):
    invoke(ws, "upload", input_objects=file_items("CPUU.exe", b"old"), Directory=STAGE)
    ws.hold_file(STAGE + r"\CPUU.exe", by="ClientProfileUpdatingUtility", share_read=True)
    host = RecordingHost()
    items = [*file_items("CPUU.ini", b"ini"), *file_items("CPUU.exe", b"new")]
    call = ScriptCall(
        "upload", load_script("upload"), parameters={"Directory": STAGE}, input=iter(items)
    )
    with pytest.raises(ScriptFailed) as caught:
        lookup("upload")(ws, call, host)
    assert (caught.value.error_id, caught.value.category) == ("FileInUse", "ResourceBusy")
    assert host.sleeps == handlers.REPLACE_ATTEMPTS - 1  # tried again before giving up
    assert [o["Path"] for o in host.output] == ["CPUU.ini"]  # the file before it is in place
    assert ws.fs.read_bytes(STAGE + r"\CPUU.exe") == b"old"
    assert sorted(ws.fs.listdir(STAGE)) == ["CPUU.exe", "CPUU.ini"]  # no .partial left


def test_a_target_held_for_a_moment_is_replaced_on_a_later_attempt(ws, clock):
    invoke(ws, "upload", input_objects=file_items("CPUU.bat", b"old"), Directory=STAGE)
    ws.hold_file(STAGE + r"\CPUU.bat", share_read=True, until=clock() + 1.0)  # an AV scan
    host = RecordingHost(clock=clock)
    call = ScriptCall(
        "upload",
        load_script("upload"),
        parameters={"Directory": STAGE},
        input=iter(file_items("CPUU.bat", b"new")),
    )
    lookup("upload")(ws, call, host)
    assert 1 <= host.sleeps < handlers.REPLACE_ATTEMPTS
    assert ws.fs.read_bytes(STAGE + r"\CPUU.bat") == b"new"


# ------------------------------------------------------------------------------- locked files


def test_preflight_hashes_only_what_it_is_asked_and_lists_locked_files(ws):
    ws.fs.mkdir(STAGE)
    for name in ("CPUU.ini", "CPUU.exe", "CPUU_PC-0001_20251121_000000.log"):
        ws.fs.write_bytes(STAGE + "\\" + name, name.encode())
    ws.hold_file(STAGE + r"\CPUU.exe")  # exclusively: an AV scan
    ws.hold_file(STAGE + r"\CPUU_PC-0001_20251121_000000.log")
    (facts,) = invoke(
        ws, "preflight", Directory=STAGE, StateDirectory=STATE, Paths=["CPUU.ini", "CPUU.exe"]
    )
    assert facts["StagedFiles"] == {"CPUU.ini": hashlib.sha256(b"CPUU.ini").hexdigest()}
    assert facts["Locked"] == ["CPUU.exe"]


def test_list_files_marks_a_locked_file_and_lists_the_others(ws):
    ws.fs.mkdir(STAGE)
    ws.fs.write_bytes(STAGE + r"\CPUU_a.csv", b"a")
    ws.fs.write_bytes(STAGE + r"\CPUU_a.log", b"log")
    ws.hold_file(STAGE + r"\CPUU_a.log", by="MsMpEng")
    out = invoke(ws, "list-files", Directory=STAGE, Filter="CPUU_*")
    assert [(o["Name"], o["Locked"], o["Sha256"]) for o in out] == [
        ("CPUU_a.csv", False, hashlib.sha256(b"a").hexdigest()),
        ("CPUU_a.log", True, None),
    ]
    assert "Locked" in load_script("list-files")


@pytest.mark.parametrize("mode", ["Directory", "Paths"])
def test_download_sends_a_locked_files_header_only_and_the_others_whole(ws, mode):
    ws.fs.mkdir(STAGE)
    ws.fs.write_bytes(STAGE + r"\CPUU_a.csv", b"csv")
    ws.fs.write_bytes(STAGE + r"\CPUU_a.log", b"log")
    ws.hold_file(STAGE + r"\CPUU_a.csv")
    where = (
        {"Directory": STAGE}
        if mode == "Directory"
        else {"Paths": [STAGE + r"\CPUU_a.csv", STAGE + r"\CPUU_a.log"]}
    )
    out = invoke(ws, "download", **where)
    assert out[0]["Name"] == "CPUU_a.csv" and out[0]["Locked"] is True
    assert out[0]["Sha256"] is None and isinstance(out[1], dict)  # no content for it
    assert (out[1]["Name"], out[1]["Locked"], out[2]) == ("CPUU_a.log", False, "bG9n")
    assert "Locked" in load_script("download")


def test_a_file_shared_for_reading_is_not_locked(ws):
    ws.fs.mkdir(STAGE)
    ws.fs.write_bytes(STAGE + r"\CPUU_a.log", b"log")
    ws.hold_file(STAGE + r"\CPUU_a.log", by="ClientProfileUpdatingUtility", share_read=True)
    (entry,) = invoke(ws, "list-files", Directory=STAGE)
    assert entry["Locked"] is False and entry["Sha256"] == hashlib.sha256(b"log").hexdigest()
