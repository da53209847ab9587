"""Each remote script's lab handler against the workstation model, through a recording pipeline.

The recording ``PipelineHost`` double stands in for the protocol layer (tested on its own); the
engine's tests run the same scripts end to end over real pypsrp.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import tracemalloc

import pytest

import cpuu_fleet.lab.handlers  # noqa: F401 - registers the handlers
from cpuu_fleet.cpuu import ExitFlags
from cpuu_fleet.lab.contract import PipelineStopped, ScriptCall, ScriptFailed
from cpuu_fleet.lab.registry import lookup
from cpuu_fleet.lab.winfs import DiskFullError
from cpuu_fleet.visit.remote import SCRIPT_NAMES, load_script
from cpuu_fleet.visit.steps.context import run_dir
from tests.support.handlers import (
    ROOT,
    STAGE,
    RecordingHost,
    failure,
    file_items,
    invoke,
)

# ------------------------------------------------------------------------------------ registry


def test_every_script_has_a_handler_and_the_marker_line_first():
    for name in SCRIPT_NAMES:
        assert lookup(name) is not None, name
        assert load_script(name).splitlines()[0] == f"# cpuu-fleet: {name}"
    with pytest.raises(ValueError, match="unknown remote script"):
        load_script("evil")


def test_unknown_and_missing_parameters_fail_as_powershell_binding_does(ws):
    assert failure(ws, "preflight", Directory=STAGE).error_id == "MissingMandatoryParameter"
    bogus = failure(ws, "list-files", Directory=STAGE, Recurse=True)
    assert (bogus.error_id, bogus.category) == ("NamedParameterNotFound", "InvalidArgument")
    bad_set = failure(ws, "run-task", Action="Launch", TaskName="t")
    assert bad_set.error_id == "ParameterArgumentValidationError"


# ------------------------------------------------------------------------------------ preflight


def test_preflight_reports_the_workstation(ws):
    ws.fs.mkdir(STAGE + r"\sub")
    ws.fs.write_bytes(STAGE + r"\CPUU.ini", b"Admin x")
    ws.fs.write_bytes(STAGE + r"\sub\a.bin", b"")
    ws.fs.write_bytes(STAGE + r"\CPUU_PC-0001_20251121_000000.log", b"CPUU's own output")
    ws.start_process("OUTLOOK", ws.interactive_user)
    asked = ["CPUU.ini", "sub\\a.bin", "not-there.bin"]
    (facts,) = invoke(
        ws, "preflight", directory=STAGE, StateDirectory=ROOT + r"\state", Paths=asked
    )
    assert facts == {
        "ComputerName": "PC-0001",
        "OSCaption": "Microsoft Windows 10 Enterprise",
        "OSVersion": "10.0.19045",
        "FreeBytes": ws.fs.free_bytes,
        "LoggedOnUser": "CORP\\jdupont",
        "OutlookRunning": True,
        "OutlookVersion": "16.0",
        "StagedFiles": {
            "CPUU.ini": hashlib.sha256(b"Admin x").hexdigest(),
            "sub\\a.bin": hashlib.sha256(b"").hexdigest(),
        },
        "Locked": [],
        "LanguageMode": "FullLanguage",
        "CleanupDone": None,
        "Sessions": [
            {
                "User": "CORP\\jdupont",
                "Sid": ws.sid_of("CORP\\jdupont"),
                "SessionId": 1,
                "Kind": "console",
                "State": "active",
                "LogonTime": facts["Sessions"][0]["LogonTime"],
            }
        ],
    }


def test_preflight_without_user_staging_or_with_the_cleanup_marker(ws):
    ws.logoff()
    ws.fs.mkdir(ROOT + r"\state")
    ws.fs.write_bytes(ROOT + r"\state\cleanup-done.json", b'\xef\xbb\xbf{"at": "2025-11-21"}')
    (facts,) = invoke(ws, "preflight", Directory=STAGE, StateDirectory=ROOT + r"\state")
    assert facts["LoggedOnUser"] is None and facts["OutlookRunning"] is False
    assert facts["StagedFiles"] == {}
    assert facts["CleanupDone"] == '{"at": "2025-11-21"}'


# ------------------------------------------------------------------------------------ upload


def test_upload_writes_checks_and_reports_each_file(ws):
    big = bytes(range(256)) * 40
    items = [*file_items("CPUU.ini", b"Admin CORP\\svc\r\n"), *file_items("empty.txt", b"")]
    items += list(file_items("bin\\ClientProfileUpdatingUtility.exe", big, chunk=1000))
    out = invoke(ws, "upload", input_objects=items, Directory=STAGE)
    assert out == [
        {
            "Path": "CPUU.ini",
            "Length": 16,
            "Sha256": hashlib.sha256(b"Admin CORP\\svc\r\n").hexdigest(),
        },
        {"Path": "empty.txt", "Length": 0, "Sha256": hashlib.sha256(b"").hexdigest()},
        {
            "Path": "bin\\ClientProfileUpdatingUtility.exe",
            "Length": len(big),
            "Sha256": hashlib.sha256(big).hexdigest(),
        },
    ]
    assert ws.fs.read_bytes(STAGE + r"\bin\ClientProfileUpdatingUtility.exe") == big
    assert not ws.fs.glob(STAGE, "*.partial")


def test_upload_streams_input_to_disk_as_it_arrives(ws):
    first, second = b"1" * 65536, b"2" * 65536
    whole = first + second

    def slow_client():
        yield {"Path": "a.bin", "Length": len(whole), "Sha256": hashlib.sha256(whole).hexdigest()}
        yield base64.b64encode(first).decode()
        # The next chunk is not sent yet: the first must already be on disk, not in memory.
        assert ws.fs.read_bytes(STAGE + r"\a.bin.partial") == first
        yield base64.b64encode(second).decode()

    out = invoke(ws, "upload", input_objects=slow_client(), Directory=STAGE)
    assert out[0]["Length"] == len(whole)
    assert ws.fs.read_bytes(STAGE + r"\a.bin") == whole


def test_upload_replaces_an_older_file(ws):
    invoke(ws, "upload", input_objects=file_items("x.ini", b"old version"), Directory=STAGE)
    invoke(ws, "upload", input_objects=file_items("X.INI", b"new"), Directory=STAGE)
    assert ws.fs.listdir(STAGE) == ["x.ini"]
    assert ws.fs.read_bytes(STAGE + r"\x.ini") == b"new"


def test_upload_hash_mismatch_keeps_the_good_file_and_leaves_no_partial(ws):
    invoke(ws, "upload", input_objects=file_items("x.ini", b"good"), Directory=STAGE)
    bad = failure(
        ws, "upload", input_objects=file_items("x.ini", b"evil", sha="0" * 64), Directory=STAGE
    )
    assert (bad.error_id, bad.category) == ("HashMismatch", "InvalidData")
    assert ws.fs.read_bytes(STAGE + r"\x.ini") == b"good"
    assert ws.fs.listdir(STAGE) == ["x.ini"]
    truncated = list(file_items("y.ini", b"abcdef"))[:-1]
    assert (
        failure(ws, "upload", input_objects=truncated, Directory=STAGE).error_id == "HashMismatch"
    )


def test_upload_disk_full_up_front_and_mid_stream(ws):
    ws.fs.reserved_bytes = ws.fs.capacity_bytes - ws.fs.used_bytes + ws.fs.reserved_bytes - 1000
    upfront = failure(ws, "upload", input_objects=file_items("a", b"x" * 2000), Directory=STAGE)
    assert (upfront.error_id, upfront.category) == ("DiskFull", "WriteError")
    assert upfront.message == "There is not enough space on the disk."
    lying = [
        {"Path": "b", "Length": 10, "Sha256": "0" * 64},
        base64.b64encode(b"y" * 1500).decode(),
    ]
    assert failure(ws, "upload", input_objects=lying, Directory=STAGE).error_id == "DiskFull"
    assert ws.fs.listdir(STAGE) == []
    assert ws.fs.free_bytes == 1000


@pytest.mark.parametrize(
    "relative", ["..\\..\\Windows\\evil.dll", "C:\\Windows\\evil.dll", "\\evil", "..", "", "a\\NUL"]
)
def test_upload_refuses_paths_outside_the_directory(ws, relative):
    error = failure(ws, "upload", input_objects=file_items(relative, b"x"), Directory=STAGE)
    assert (error.error_id, error.category) == ("InvalidPath", "InvalidArgument")
    assert not ws.fs.exists(r"C:\Windows\evil.dll")


def test_upload_content_before_header_or_bad_base64(ws):
    assert (
        failure(ws, "upload", input_objects=["QUJD"], Directory=STAGE).error_id == "UnexpectedInput"
    )
    broken = [{"Path": "a", "Length": 1, "Sha256": "0" * 64}, "not base64!"]
    assert (
        failure(ws, "upload", input_objects=broken, Directory=STAGE).error_id == "FormatException"
    )
    assert ws.fs.listdir(STAGE) == []


# ------------------------------------------------------------------------------------ run-task


@pytest.fixture
def staged(bench):
    bench.add("Outlook")
    return bench


def _run(bench, **parameters):
    host = RecordingHost(clock=bench.clock)
    params = {"TaskName": "cpuu-fleet-run", **parameters}
    (report,) = invoke(bench.ws, "run-task", host=host, **params)
    return report


def test_run_starts_waits_and_reports_cpuu_exit_code(staged):
    report = _run(
        staged,
        Action="Run",
        **staged.task_files("cpuu-fleet-run"),
        TimeoutSeconds=600,
    )
    assert report == {
        "TaskName": "cpuu-fleet-run",
        "Exists": True,
        "State": "Ready",
        "Trigger": "Now",
        "User": "CORP\\jdupont",
        "NoUser": False,
        "LastRunTime": "2025-11-21T00:00:00.0000000Z",
        "LastTaskResult": ExitFlags.SUCCESS,
        "Killed": False,
        "Marker": True,
        "Claimed": True,
        "Waited": False,
        "StartedAt": "2025-11-21T00:00:00.0000000Z",
        "NotStarted": False,
        "Settled": True,
        "OtherUsers": [],
        "Disconnected": [],
        "Removed": False,
    }
    assert staged.ws.fs.glob(run_dir("cpuu-fleet-run"), "CPUU_pc-0001_*.csv")
    assert _run(staged, Action="Remove")["State"] == "NotFound"


def test_wait_kills_a_hung_cpuu_at_the_deadline_and_says_so(staged):
    staged.ws.cpuu.hang = True
    start = _run(
        staged,
        Action="Start",
        **staged.task_files("cpuu-fleet-run"),
    )
    assert start["State"] == "Running" and start["LastTaskResult"] == 267009
    waited = _run(staged, Action="Wait", TimeoutSeconds=30)
    assert waited["Killed"] is True and waited["LastTaskResult"] == 267014
    assert waited["State"] == "Ready" and waited["Settled"] is True
    assert staged.clock.now - 1_763_683_200.0 == pytest.approx(30)


def test_stop_and_status(staged):
    _start_hung(staged)
    assert _run(staged, Action="Status")["State"] == "Running"
    stopped = _run(staged, Action="Stop")
    assert stopped["Killed"] is True and stopped["LastTaskResult"] == 267014
    # The run stays known as killed (its marker), whoever asks later: never taken for success.
    again = _run(staged, Action="Stop")
    assert again["Killed"] is True and again["State"] == "Ready"


def test_nobody_logged_on_skip_registers_nothing(staged):
    staged.ws.logoff()
    report = _run(
        staged,
        Action="Run",
        **staged.task_files("cpuu-fleet-run"),
        WhenNoUser="Skip",
    )
    assert report["NoUser"] is True and report["Exists"] is False
    assert report["State"] == "NotFound" and report["LastTaskResult"] == 267011


def test_nobody_logged_on_at_logon_runs_at_the_next_logon(staged):
    staged.ws.logoff()
    report = _run(
        staged,
        Action="Run",
        **staged.task_files("cpuu-fleet-run"),
        WhenNoUser="atlogon",
    )
    assert (report["NoUser"], report["Trigger"], report["User"]) == (
        True,
        "AtLogon",
        staged.user,  # the host's last user: never every member of BUILTIN\\Users
    )
    assert report["State"] == "Ready" and report["LastTaskResult"] == 267011
    staged.ws.logon(staged.user)
    assert _run(staged, Action="Wait")["LastTaskResult"] == ExitFlags.SUCCESS


def test_start_needs_a_command(staged):
    error = failure(staged.ws, "run-task", Action="Start", TaskName="t")
    assert (error.error_id, error.category) == ("MissingCommand", "InvalidArgument")


def test_wait_honours_the_clients_stop(staged):
    staged.ws.cpuu.hang = True
    _run(
        staged,
        Action="Start",
        **staged.task_files("cpuu-fleet-run"),
    )
    host = RecordingHost(clock=staged.clock, stop_after_sleeps=3)
    with pytest.raises(PipelineStopped):
        invoke(staged.ws, "run-task", host=host, Action="Wait", TaskName="cpuu-fleet-run")


def test_a_missing_exe_is_reported_as_cmd_would(staged):
    staged.ws.fs.delete(staged.stage_dir + r"\ClientProfileUpdatingUtility.exe")
    report = _run(
        staged,
        Action="Run",
        **staged.task_files("cpuu-fleet-run"),
    )
    assert report["LastTaskResult"] == 9009


# ------------------------------------------------------------------------------------ list-files


def test_list_files_finds_results_sorted_with_hashes(staged):
    staged.run()
    out = invoke(staged.ws, "list-files", Directory=staged.stage_dir, Filter="cpuu_PC-0001_*")
    assert [o["Name"].rsplit(".", 1)[1] for o in out] == ["csv", "log"]
    for entry in out:
        data = staged.ws.fs.read_bytes(entry["FullName"])
        assert entry["Length"] == len(data)
        assert entry["Sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["LastWriteTimeUtc"].endswith("Z")
    assert invoke(staged.ws, "list-files", Directory=r"C:\nowhere", Filter="*") == []


# ------------------------------------------------------------------------------------ download


def test_download_sends_header_then_chunks_per_file(ws):
    ws.fs.write_bytes(r"C:\a.bin", b"0123456789")
    ws.fs.write_bytes(r"C:\empty.csv", b"")
    out = invoke(ws, "download", Paths=[r"C:\a.bin", r"C:\empty.csv"], ChunkSize=4)
    headers = [o for o in out if isinstance(o, dict)]
    assert [type(o).__name__ for o in out] == ["dict", "str", "str", "str", "dict"]
    assert [(h["Path"], h["Name"], h["Length"], h["Skipped"]) for h in headers] == [
        (r"C:\a.bin", "a.bin", 10, False),
        (r"C:\empty.csv", "empty.csv", 0, False),
    ]
    assert headers[0]["Sha256"] == hashlib.sha256(b"0123456789").hexdigest()
    assert headers[1]["Sha256"] == hashlib.sha256(b"").hexdigest()
    assert all(h["LastWriteTimeUtc"].endswith("Z") for h in headers)
    assert out[1:4] == [base64.b64encode(x).decode() for x in (b"0123", b"4567", b"89")]


def test_download_of_a_directory_lists_excludes_and_skips_known_files(staged):
    staged.run()
    fs = staged.ws.fs
    fs.write_bytes(staged.stage_dir + r"\CPUU_keep.txt", b"new")
    fs.write_bytes(staged.stage_dir + r"\CPUU_seen.txt", b"old")
    listing = invoke(staged.ws, "list-files", Directory=staged.stage_dir, Filter="CPUU_*")
    out = invoke(
        staged.ws,
        "download",
        Directory=staged.stage_dir,
        Filter="cpuu_*",
        ExcludeName=["*.bat", "CPUU.ini"],
        KnownSha256=[hashlib.sha256(b"old").hexdigest().upper()],
        ChunkSize=1 << 20,
    )
    headers = [o for o in out if isinstance(o, dict)]
    wanted = [e for e in listing if not e["Name"].lower().endswith(".bat")]
    assert [h["Path"] for h in headers] == [e["FullName"] for e in wanted]
    assert [h["Sha256"] for h in headers] == [e["Sha256"] for e in wanted]
    assert [h["Name"] for h in headers if h["Skipped"]] == ["CPUU_seen.txt"]
    assert len(out) - len(headers) == len(headers) - 1  # one chunk each, none for the known file
    assert invoke(staged.ws, "download", Directory=r"C:\nowhere") == []


def test_download_needs_paths_or_a_directory(ws):
    call = ScriptCall("download", load_script("download"), parameters={"ChunkSize": 4})
    with pytest.raises(ScriptFailed) as caught:
        lookup("download")(ws, call, RecordingHost())
    assert (caught.value.error_id, caught.value.category) == ("MissingPath", "InvalidArgument")


def test_download_checks_every_path_before_sending_anything(ws):
    ws.fs.write_bytes(r"C:\a.bin", b"x")
    host = RecordingHost()
    call = ScriptCall(
        "download", load_script("download"), parameters={"Paths": [r"C:\a.bin", r"C:\gone.csv"]}
    )
    with pytest.raises(ScriptFailed) as caught:
        lookup("download")(ws, call, host)
    assert (caught.value.error_id, caught.value.category) == ("FileNotFound", "ObjectNotFound")
    assert host.output == []


def test_download_of_a_big_file_holds_one_chunk_at_a_time(ws):
    size, chunk = 24 * 1024 * 1024, 64 * 1024
    with ws.fs.open_write(r"C:\big.ost") as out:
        for _ in range(size // (1024 * 1024)):
            out.write(b"\xa5" * (1024 * 1024))
    host = RecordingHost(keep=False)
    call = ScriptCall(
        "download", load_script("download"), parameters={"Paths": r"C:\big.ost", "ChunkSize": chunk}
    )
    tracemalloc.start()
    try:
        lookup("download")(ws, call, host)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert host.count == 1 + size // chunk
    assert host.largest == len(base64.b64encode(b"x" * chunk))
    # tracemalloc counts every thread: in a full run, other tests' lab threads still allocate
    # (a 4 MB peak was seen). Holding the file would be 24 MiB, its base64 32 MiB more.
    assert peak < 8 * 1024 * 1024


def test_download_stops_when_the_client_stops(ws):
    ws.fs.write_bytes(r"C:\a.bin", b"x" * 100)
    host = RecordingHost()
    host.stopping.set()
    call = ScriptCall(
        "download", load_script("download"), parameters={"Paths": r"C:\a.bin", "ChunkSize": 10}
    )
    with pytest.raises(PipelineStopped):
        lookup("download")(ws, call, host)


# ---------------------------------------------------------------- never twice: the run's marker


def _launches(staged) -> list[str]:
    launched: list[str] = []
    original = staged.ws._launcher

    def counting(ws, task, user):
        launched.append(task.name)
        return original(ws, task, user)

    staged.ws._launcher = counting
    return launched


def _run_task(staged, **kwargs):
    return _run(
        staged,
        Action="Run",
        **staged.task_files("cpuu-fleet-run"),
        **kwargs,
    )


def _start_hung(staged):
    staged.ws.cpuu.hang = True
    _run(
        staged,
        Action="Start",
        **staged.task_files("cpuu-fleet-run"),
        TimeoutSeconds=30,
    )


def test_a_finished_and_removed_run_is_never_started_again(staged):
    launched = _launches(staged)
    first = _run_task(staged, TimeoutSeconds=600)
    assert first["Claimed"] is True and first["LastTaskResult"] == ExitFlags.SUCCESS
    assert _run(staged, Action="Remove")["Exists"] is False
    again = _run_task(staged, TimeoutSeconds=600)
    assert len(launched) == 1
    assert again["Claimed"] is False and again["Marker"] is True
    assert again["LastTaskResult"] == ExitFlags.SUCCESS  # kept by the marker, not the task


def test_status_remove_ended_leaves_a_running_task_and_removes_an_ended_one_after_reading_it(
    staged,
):
    """The settling question of a detached run step: one pipeline reads an ended run and
    unregisters its task; a run at work is left alone; and the marker keeps the outcome, so the
    run is never started again and a later question reads the same exit code."""
    launched = _launches(staged)
    staged.ws.cpuu.base_seconds = 100
    start = _run(staged, Action="Start", **staged.task_files("cpuu-fleet-run"))
    assert start["State"] == "Running"
    at_work = _run(staged, Action="Status", RemoveEnded=True)
    assert (at_work["State"], at_work["Removed"]) == ("Running", False)
    staged.clock.advance(101)
    plain = _run(staged, Action="Status")  # read-only: what the settle would have read
    ended = _run(staged, Action="Status", RemoveEnded=True)
    assert ended == {**plain, "Removed": True}
    assert ended["Exists"] is True and ended["LastTaskResult"] == ExitFlags.SUCCESS
    later = _run(staged, Action="Status", RemoveEnded=True)
    assert (later["Exists"], later["Marker"], later["Removed"]) == (False, True, False)
    assert later["LastTaskResult"] == ExitFlags.SUCCESS  # kept by the marker
    again = _run_task(staged, TimeoutSeconds=600)
    assert again["Claimed"] is False and len(launched) == 1


def test_status_remove_ended_leaves_an_at_logon_task_waiting_for_its_user(staged):
    staged.ws.logoff()
    _run(staged, Action="Start", **staged.task_files("cpuu-fleet-run"), WhenNoUser="AtLogon")
    report = _run(staged, Action="Status", RemoveEnded=True)
    assert (report["Trigger"], report["Exists"], report["Removed"]) == ("AtLogon", True, False)


def test_a_kill_on_the_deadline_is_remembered_after_the_task_is_gone(staged):
    staged.ws.cpuu.hang = True
    killed = _run_task(staged, TimeoutSeconds=30)
    assert killed["Killed"] is True
    _run(staged, Action="Remove")
    later = _run(staged, Action="Status")
    assert later["Exists"] is False and later["Killed"] is True


def test_a_resumed_wait_keeps_the_first_deadline(staged):
    """A hung CPUU started 25 s ago with a 30 s timeout is killed 5 s into a resumed Run."""
    _start_hung(staged)
    staged.clock.advance(25)
    before = staged.clock.now
    resumed = _run_task(staged, TimeoutSeconds=30)
    assert resumed["Killed"] is True and resumed["Waited"] is True
    assert staged.clock.now - before == pytest.approx(5)


def test_the_time_limit_ends_a_run_nobody_waits_for_and_it_reads_as_killed(staged):
    """The controller is gone: Task Scheduler's ExecutionTimeLimit (timeout + 300 s) ends CPUU
    with 267014 (SCHED_S_TASK_TERMINATED), which the report shows as killed."""
    _start_hung(staged)
    staged.clock.advance(331)
    status = _run(staged, Action="Status")
    assert status["State"] == "Ready" and status["LastTaskResult"] == 267014
    assert status["Killed"] is True


def test_two_callers_at_once_start_cpuu_once(staged):
    staged.ws.cpuu.base_seconds = 5
    launched = _launches(staged)
    reports = []

    def call():
        reports.append(_run_task(staged, TimeoutSeconds=600))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(launched) == 1
    assert sorted(r["Claimed"] for r in reports) == [False, False, False, True]


def test_a_run_folder_left_by_a_failed_start_is_set_aside_never_reused(staged):
    """A start that made the run folder and then failed gave its claim back; the folder's user
    may have written to it, so the next start of the same task renames it aside and fills a
    fresh one (a rename follows no junction inside it)."""
    ws = staged.ws
    files = staged.task_files("cpuu-fleet-run")
    ws.fs.write_bytes(staged.stage_dir + r"\payload.dll", bytes(64 * 1024))
    squeeze = ws.fs.free_bytes - 16 * 1024  # the marker fits, the payload's copy does not
    ws.fs.reserved_bytes += squeeze  # the copy of the staging folder cannot finish
    with pytest.raises(DiskFullError):
        _run(staged, Action="Start", **files)
    assert ws.task("cpuu-fleet-run") is None and ws.cpuu_starts == []
    folder = files["WorkingDirectory"]
    ws.fs.write_bytes(folder + r"\version.dll", b"MZ left behind")
    ws.fs.reserved_bytes -= squeeze
    report = _run(staged, Action="Run", TimeoutSeconds=600, **files)
    assert report["Claimed"] and report["LastTaskResult"] == ExitFlags.SUCCESS
    assert not ws.fs.exists(folder + r"\version.dll")
    (aside,) = [n for n in ws.fs.listdir(_parent_of(folder)) if ".set-aside-" in n]
    assert ws.fs.exists(_parent_of(folder) + "\\" + aside + r"\version.dll")
    assert len(ws.cpuu_starts) == 1


def _parent_of(path: str) -> str:
    return path.rsplit("\\", 1)[0]


def test_run_folders_of_runs_that_ended_long_ago_are_removed_pending_ones_kept(staged):
    """Each run folder holds a copy of the payload: a new run removes those of runs that ended
    more than 30 days ago, and never the folder of a run still waiting for a logon."""
    ws, clock = staged.ws, staged.clock
    ended = "cpuu-fleet update ended"
    _run(staged, TaskName=ended, Action="Run", TimeoutSeconds=600, **staged.task_files(ended))
    user = ws.interactive_user
    ws.logoff()
    waiting = "cpuu-fleet update waiting"
    _run(
        staged,
        TaskName=waiting,
        Action="Start",
        WhenNoUser="AtLogon",
        ExpectedUser=[user],
        **staged.task_files(waiting),
    )
    ws.logon("CORP\\someone-else")  # not the user the waiting run is for

    def folders() -> set[str]:
        return set(ws.fs.listdir(_parent_of(staged.task_files(ended)["WorkingDirectory"])))

    clock.advance(29 * 86400)
    later = "cpuu-fleet update later"
    _run(staged, TaskName=later, Action="Run", TimeoutSeconds=600, **staged.task_files(later))
    assert folders() == {ended, waiting, later}  # 29 days: still kept

    clock.advance(2 * 86400)
    last = "cpuu-fleet update last"
    _run(staged, TaskName=last, Action="Run", TimeoutSeconds=600, **staged.task_files(last))
    assert folders() == {waiting, later, last}  # 31 days after it ended: gone
    assert ws.task(waiting) is not None  # the pending run is untouched
