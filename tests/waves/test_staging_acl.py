"""The staging folder as Windows' ACLs see it (issue 15, point 9), played by the lab.

ProgramData's inherited ACL lets every local user read and write below it: any user could read
the INI with its secrets, or create the staging folder first and plant a DLL that CPUU loads in
the next user's session. These tests run real waves (pypsrp against the lab) and then ask the
lab's file system, as a local user would, what that user may do:

* push creates the staging root with a protected ACL: Users read, nobody but SYSTEM and
  Administrators writes;
* the INI is readable by SYSTEM, Administrators and the user CPUU runs as, by nobody else;
* a staging folder a local user created first is refused (``UntrustedStaging``): nothing is
  pushed into it and CPUU never starts from it, by push or by run-task.
"""

from __future__ import annotations

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.scenarios import INTRUDER
from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.visit.steps.context import STAGING_ROOT, WORK_ROOT
from tests.support.waves import host_row as _host_row
from tests.support.waves import make_playbook

EXE = "ClientProfileUpdatingUtility.exe"


def _staged(wave, host: str) -> str:
    """The host's versioned staging folder (the only folder below the root but ``state`` and
    ``work``)."""
    fs = wave.workstation(host).fs
    (version,) = [n for n in fs.listdir(STAGING_ROOT) if n.lower() not in ("state", "work")]
    return f"{STAGING_ROOT}\\{version}"


def _intruder(ws) -> str:
    return f"{ws.name.upper()}\\{INTRUDER}"


def test_push_protects_the_staging_root_from_local_users(wave_factory):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    result = wave.run(make_playbook(wave.payload, steps=("preflight", "push"), retries=0))
    row, _ = _host_row(wave, result.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    ws = wave.workstation(host)
    staged = _staged(wave, host)
    other = _intruder(ws)
    assert ws.fs.acl(STAGING_ROOT).protected  # ProgramData's grants no longer reach it
    assert ws.can_read(other, f"{staged}\\{EXE}")  # CPUU runs as a standard user
    for path in (STAGING_ROOT, staged, f"{staged}\\version.dll", f"{staged}\\{EXE}"):
        assert not ws.can_write(other, path), path
    with pytest.raises(PermissionError):
        ws.user_writes(other, f"{staged}\\version.dll", b"MZ")


def _run_folder(ws) -> str:
    """The one run folder below ``work`` (one run step so far)."""
    (name,) = ws.fs.listdir(WORK_ROOT)
    return f"{WORK_ROOT}\\{name}"


def test_only_the_task_user_may_read_the_ini_and_only_in_its_run_folder(wave_factory):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    user = ws.interactive_user
    wave.run(make_playbook(wave.payload, steps=("preflight", "push"), retries=0))
    ini = f"{_staged(wave, host)}\\CPUU.ini"
    assert ws.fs.is_file(ini)
    assert not ws.can_read(_intruder(ws), ini)
    assert not ws.can_read(user, ini)  # nobody but SYSTEM and Administrators

    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row, _ = _host_row(wave, result.run_id, host)
    assert row["state"] == states.SUCCEEDED, row  # CPUU read its INI and wrote its results
    folder = _run_folder(ws)
    assert ws.can_read(user, f"{folder}\\CPUU.ini")
    assert not ws.can_read(_intruder(ws), f"{folder}\\CPUU.ini")
    assert not ws.can_read(_intruder(ws), folder)  # nor the results CPUU wrote there
    assert not ws.can_read(user, ini)  # the staging copy stays SYSTEM's and Administrators'


def test_cpuu_runs_and_writes_in_a_folder_of_its_run_that_no_other_run_shares(wave_factory):
    """What one user leaves beside CPUU (a DLL it would load) never reaches another user's run:
    each run gets a fresh copy of the staging folder, and the staging folder stays read-only."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    first_user = ws.interactive_user
    first = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    assert _host_row(wave, first.run_id, host)[0]["state"] == states.SUCCEEDED
    staged = _staged(wave, host)
    folder = _run_folder(ws)
    assert ws.fs.glob(folder, "CPUU_*.csv") and not ws.fs.glob(staged, "CPUU_*.csv")
    with Journal.in_reports(wave.reports) as journal:
        (collected,) = [f for f in journal.files(first.run_id, host) if f["kind"] == "result"]
    assert collected["remote_path"].lower().startswith(folder.lower() + "\\")

    assert not ws.can_write(first_user, f"{staged}\\version.dll")
    with pytest.raises(PermissionError):
        ws.user_writes(first_user, f"{staged}\\version.dll", b"MZ")
    ws.user_writes(first_user, f"{folder}\\version.dll", b"MZ planted by the first user")

    ws.logoff()
    ws.logon(_intruder(ws))
    second = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    (second_folder,) = [f"{WORK_ROOT}\\{n}" for n in ws.fs.listdir(WORK_ROOT) if second.run_id in n]
    assert second_folder.lower() != folder.lower()
    assert not ws.fs.exists(f"{second_folder}\\version.dll")
    assert not ws.can_read(_intruder(ws), folder)  # the first run's results stay its user's
    assert [start.user for start in ws.cpuu_starts] == [first_user, _intruder(ws)]


def test_a_staging_folder_a_local_user_created_is_refused(wave_factory):
    wave = wave_factory(1, "hostile_local_user")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row, _ = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "policy"), row
    assert "created by an account other than SYSTEM or Administrators" in row["error_message"]
    with Journal.in_reports(wave.reports) as journal:
        attempts = journal.attempts(result.run_id, host)
    steps = [(a["step"], a["status"]) for a in attempts]
    assert steps[-1] == ("push", "failed"), steps
    assert '"error_id": "UntrustedStaging"' in attempts[-1]["details_json"]

    assert ws.cpuu_starts == []
    assert ws.fs.listdir(STAGING_ROOT) == ["version.dll"]  # nothing pushed into it
    assert ws.fs.owner(STAGING_ROOT) == ws.sid_of(_intruder(ws))  # nor taken over


def test_run_task_refuses_a_staging_folder_a_local_user_created(wave_factory):
    """A root from an older cpuu-fleet (ProgramData's ACL): a user made the version folder with
    a copy of the payload and a DLL, so push would find everything staged and send nothing."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0]
    ws = wave.workstation(host.name)
    other = _intruder(ws)
    folder = f"{STAGING_ROOT}\\0123456789ab"
    ws.fs.mkdir(STAGING_ROOT)  # an admin's, unprotected
    ws.user_writes(other, folder)
    ws.user_writes(other, f"{folder}\\CPUU_Update.bat", b'"%~dp0ClientProfileUpdatingUtility.exe"')
    ws.user_writes(other, f"{folder}\\version.dll", b"MZ")
    kwargs = wave.fleet.client_kwargs(host)
    server = kwargs.pop("server")
    with HostSession(host.name, server, kwargs) as session, pytest.raises(SessionError) as caught:
        session.run(
            "run-task",
            {
                "Action": "Run",
                "TaskName": "cpuu-fleet update t",
                "Command": f"{WORK_ROOT}\\t\\CPUU_Update.bat",
                "WorkingDirectory": f"{WORK_ROOT}\\t",
                "SourceDirectory": folder,
                "TimeoutSeconds": 30,
            },
        )
    assert caught.value.error_id == "UntrustedStaging"
    assert ws.cpuu_starts == [] and ws.task("cpuu-fleet update t") is None


def test_a_disk_that_fills_while_the_run_folder_is_made_starts_nothing(wave_factory):
    """The disk fills while run-task copies the staging folder: nothing is claimed, registered
    or started, and the next run starts CPUU exactly once."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    wave.run(make_playbook(wave.payload, steps=("preflight", "push"), retries=0))
    squeeze = ws.fs.free_bytes - 100_000  # room for a part of the copy only
    ws.fs.reserved_bytes += squeeze
    playbook = make_playbook(wave.payload, steps=("run", "collect"), retries=0)
    failed = wave.run(playbook, write_report=False)
    row, _ = _host_row(wave, failed.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "remote"), row
    assert "not enough space" in row["error_message"]
    assert ws.cpuu_starts == [] and ws.tasks == {}
    assert ws.fs.listdir(f"{STAGING_ROOT}\\state\\runs") == []  # the claim was given back

    ws.fs.reserved_bytes -= squeeze
    again = wave.run(playbook, write_report=False)
    row, _ = _host_row(wave, again.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    assert len(ws.cpuu_starts) == 1
