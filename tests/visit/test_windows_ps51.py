"""The remote scripts as Windows PowerShell 5.1 runs them, played by the lab (issue 15).

Each test plays one documented Windows behaviour that the scripts, the engine and the lab used to
get wrong (``../shared/reviews/remote-scripts-ps51.md``), over real pypsrp against the lab:

* scope: ``AddScript`` without ``UseLocalScope`` dot-sources a script into the runspace's global
  scope, so one step's functions and variables are there for the next pipeline;
* ConstrainedLanguage (AppLocker/WDAC): preflight says so first, and the host's failure says what
  to do, instead of a generic remote error from the first .NET call;
* a file ``Length`` of 2 GiB or more: pypsrp tags a Python int as a 32-bit ``<I32>``, which the
  host cannot deserialize;
* a file another process holds open exclusively: one locked log does not fail the collect.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.visit.steps.push import OutgoingFile, _header, upload
from cpuu_fleet.vocabulary import ErrorClass
from tests.support.waves import host_row as _host_row
from tests.support.waves import make_playbook

GIB = 1024**3
STAGE = "C:\\ProgramData\\cpuu-fleet\\t"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet(1, workdir=tmp_path_factory.mktemp("lab")) as lab:
        yield lab


def _session(fleet: LabFleet) -> HostSession:
    kwargs = fleet.client_kwargs(fleet.hosts[0])
    server = kwargs.pop("server")
    return HostSession(fleet.hosts[0].name, server, kwargs)


def _only_shell(fleet: LabFleet) -> Any:
    shells = list(fleet.hosts[0].endpoint.dispatcher.shells.values())
    assert len(shells) == 1, shells
    return shells[0]


# ------------------------------------------------------------------------------------ scope


def test_a_scripts_functions_and_variables_are_gone_for_the_next_pipeline(fleet):
    item = OutgoingFile("CPUU.ini", 1, hashlib.sha256(b"x").hexdigest(), data=b"x")
    with _session(fleet) as session:
        session.run("preflight", {"Directory": STAGE, "StateDirectory": STAGE + "\\state"})
        upload(session, STAGE, (item,))
        session.run("list-files", {"Directory": STAGE})
        session.run("download", {"Directory": STAGE})
        log = list(_only_shell(fleet).scope_log)
    assert [r.script for r in log] == ["preflight", "upload", "list-files", "download"]
    assert all(r.local_scope for r in log), log
    # preflight defines Get-FileSha256 and sets StrictMode, upload keeps its state: none of it is
    # there for the pipelines after them.
    assert [r.visible for r in log[1:]] == [frozenset()] * 3, log


def test_the_lab_leaks_a_script_into_the_global_scope_without_local_scope(fleet):
    """The lab's model itself: what pypsrp's default (``use_local_scope=None``) does on Windows."""
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    from cpuu_fleet.visit.remote import load_script

    kwargs = fleet.client_kwargs(fleet.hosts[0])
    with WSMan(**kwargs) as wsman, RunspacePool(wsman) as pool:
        for name in ("preflight", "list-files"):
            ps = PowerShell(pool)
            ps.add_script(load_script(name))
            ps.add_parameter("Directory", STAGE)
            if name == "preflight":
                ps.add_parameter("StateDirectory", STAGE + "\\state")
            ps.invoke()
        log = list(_only_shell(fleet).scope_log)
    assert not log[1].local_scope
    assert {"function:get-filesha256", "StrictMode", "variable:erroractionpreference"} <= set(
        log[1].visible
    )


# ------------------------------------------------------------------------------ upload Length


def test_a_header_of_3_gib_reaches_the_script_as_a_64_bit_length(fleet):
    """Nothing is sent after the header: the script must read Length 3 GiB and find 0 bytes."""
    item = OutgoingFile("huge.bin", 3 * GIB, hashlib.sha256(b"").hexdigest(), data=b"")
    with _session(fleet) as session, pytest.raises(SessionError) as caught:
        session.run("upload", {"Directory": STAGE}, input=(batch for batch in [[_header(item)]]))
    error = caught.value
    assert (error.error_class, error.error_id) == (ErrorClass.REMOTE, "HashMismatch"), error
    assert f"expected {3 * GIB} bytes" in error.message
    assert not fleet.hosts[0].workstation.fs.glob(STAGE, "*.partial")


# ------------------------------------------------------------------------ ConstrainedLanguage


def test_a_constrained_language_host_fails_with_what_to_do(wave_factory):
    wave = wave_factory(1, "constrained_language")
    host = wave.fleet.hosts[0].name
    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row, _ = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "remote"), row
    message = row["error_message"]
    assert "ConstrainedLanguage" in message and "exempt" in message, message
    assert "runs in ConstrainedLanguage mode" in message  # what preflight found, in its words
    with Journal.in_reports(wave.reports) as journal:
        attempts = journal.attempts(result.run_id, host)
    steps = [(a["step"], a["status"]) for a in attempts]
    assert steps == [("connect", "ok"), ("preflight", "failed")], steps  # nothing pushed or run
    assert '"error_id": "ConstrainedLanguage"' in attempts[-1]["details_json"]

    assert wave.workstation(host).cpuu_starts == []


# ------------------------------------------------------------------------------- locked files


def test_a_locked_log_does_not_fail_the_collect_and_is_fetched_next_time(wave_factory):
    wave = wave_factory(1, "locked_log")
    host = wave.fleet.hosts[0].name
    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row, files = _host_row(wave, result.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    kinds = sorted(f["kind"] for f in files)
    assert kinds == ["ini", "result"], kinds  # the result file came; the locked log did not
    with Journal.in_reports(wave.reports) as journal:
        collect = [a for a in journal.attempts(result.run_id, host) if a["step"] == "collect"]
    assert "locked on the host" in collect[-1]["details_json"], collect

    wave.workstation(host).release_file("C:\\ProgramData\\cpuu-fleet\\*\\CPUU_*.log")
    again = wave.run(make_playbook(wave.payload, steps=("collect",), retries=0))
    _, files = _host_row(wave, again.run_id, host)
    assert [f["kind"] for f in files if f["kind"] == "log"] == ["log"], files


def test_a_user_windows_cannot_name_yet_is_retried_and_cpuu_starts_once_the_shell_runs(
    wave_factory,
):
    """An Entra ID user whose explorer.exe has not started: ``run-task`` has no SID to give Task
    Scheduler. Nothing is claimed on the host, the failure says why and is transient, and once
    the shell runs the next run starts CPUU exactly once."""
    wave = wave_factory(1, "shell_starting")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    failed = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row, _ = _host_row(wave, failed.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, ErrorClass.REMOTE.value), row
    assert "cannot be translated to a SID" in row["error_message"]
    assert failed.summary.outcomes[host].transient
    assert ws.cpuu_starts == []

    ws.shell_running = True  # the session has finished starting
    again = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row, _ = _host_row(wave, again.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    assert [start.user for start in ws.cpuu_starts] == [ws.interactive_user]


def test_a_console_window_the_user_closes_is_a_failure_named_as_such(wave_factory):
    """cmd.exe's console window sits on the user's desktop; closed, cmd and CPUU end with
    STATUS_CONTROL_C_EXIT (0xC000013A). Read as CPUU's bit mask that would be NO_SWITCH_MSG,
    USER_ABORT, GLOBAL_ERR, CRASH and more: it is Windows' code, named and explained."""
    wave = wave_factory(1, "console_closed")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row, _ = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "cpuu"), row
    assert row["exit_code"] == 0xC000013A and row["exit_flags"] == "CONSOLE_CLOSED", row
    assert "console window was closed" in row["error_message"]
    assert len(ws.cpuu_starts) == 1
    ws.refresh()
    states_now = {p.state.value for p in ws.profiles_of(ws.interactive_user)}
    assert "source" in states_now, states_now  # CPUU stopped before it switched the profile
