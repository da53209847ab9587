"""Failure paths of one host visit that must not lose anything: a pending at-logon task, files
already downloaded, CPUU's verdict, an open step attempt (real lab, real journal)."""

from __future__ import annotations

import time

import requests
from conftest import lab_env, make_playbook

from cpuu_fleet import journal as states
from cpuu_fleet.engine import run_step
from cpuu_fleet.hostwork import open_session
from cpuu_fleet.journal import Journal
from cpuu_fleet.session import HostSession


def _wait_for_logon_run(workstation, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workstation.refresh()
        task = next(iter(workstation.tasks.values()))
        if not task.running and task.last_run_time:
            return
        time.sleep(0.05)
    raise AssertionError("the at-logon task never ran")


def test_a_pending_task_survives_single_step_and_check_runs(wave_factory):
    """preflight/push-only runs and --check runs never reach the run step: they must not make
    a later collect forget the at-logon task an earlier run left pending."""
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    at_logon = make_playbook(wave.payload, when_no_user="at_logon")
    first = wave.run(at_logon)
    with lab_env(wave.fleet):
        run_step(wave.request(), "preflight", pattern="all")
    wave.run(at_logon, check=True)
    workstation = wave.workstation(host)
    workstation.logon(next(iter(workstation.profiles)))
    _wait_for_logon_run(workstation)
    with lab_env(wave.fleet):
        later = run_step(wave.request(), "collect", pattern="all")
    with Journal.in_reports(wave.reports) as journal:
        assert journal.host(first.run_id, host)["state"] == states.PENDING
        row = journal.host(later.run_id, host)
        assert (row["state"], row["exit_code"]) == (states.SUCCEEDED, 1), row
        assert journal.profiles(later.run_id, host)
    assert workstation.tasks == {}  # picked up, so removed


class _DroppingSession(HostSession):
    """A real session whose connection drops once during collect's download, after the first
    file is complete and part of the second has arrived (small chunks: several per file)."""

    dropped = False

    @property
    def chunk_size(self) -> int:
        return 64

    def run(self, script, parameters=None, **kwargs):  # type: ignore[no-untyped-def]
        sink = kwargs.get("on_output")
        if script != "download" or sink is None or _DroppingSession.dropped:
            return super().run(script, parameters, **kwargs)
        seen = {"headers": 0, "chunks": 0}

        def dropping(item):  # type: ignore[no-untyped-def]
            if isinstance(item, dict):
                seen["headers"] += 1
            elif seen["headers"] == 2:
                seen["chunks"] += 1
                if seen["chunks"] == 2:
                    _DroppingSession.dropped = True
                    raise requests.exceptions.ConnectionError("connection reset by peer (test)")
            sink(item)

        kwargs["on_output"] = dropping
        return super().run(script, parameters, **kwargs)


def _dropping_factory(name, connection):  # type: ignore[no-untyped-def]
    session = open_session(name, connection)
    session.__class__ = _DroppingSession
    return session


def test_a_download_broken_part_way_loses_and_duplicates_nothing(wave_factory):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    _DroppingSession.dropped = False
    first = wave.run(make_playbook(wave.payload, retries=0), session_factory=_dropping_factory)
    assert _DroppingSession.dropped
    host_dir = wave.reports / first.run_id / "hosts" / host
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(first.run_id, host)
        kept = [f for f in journal.files(first.run_id, host) if f["kind"] != "ini"]
    # CPUU's verdict stands; the broken download is added to it
    assert (row["state"], row["exit_code"]) == (states.SUCCEEDED, 1), row
    assert "afterwards" in row["error_message"] and "download broke off" in row["error_message"]
    assert len(kept) == 1  # the file completed before the drop is journalled
    assert (wave.reports / kept[0]["local_path"]).exists()
    partial = [p.name for p in host_dir.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1, sorted(p.name for p in host_dir.iterdir())

    with lab_env(wave.fleet):
        later = run_step(wave.request(), "collect", pattern="all")
    with Journal.in_reports(wave.reports) as journal:
        fetched = [f for f in journal.files(later.run_id, host) if f["kind"] != "ini"]
    assert len(fetched) == 1  # only the file that broke off, not the first one again
    assert fetched[0]["remote_path"] != kept[0]["remote_path"]
    names = [p.name for p in (wave.reports / later.run_id / "hosts" / host).iterdir()]
    assert not any("(2)" in name for name in names), names
