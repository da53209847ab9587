"""Failure paths of one host visit that must not lose anything: a pending at-logon task, files
already downloaded, CPUU's verdict, an open step attempt (real lab, real journal)."""

from __future__ import annotations

import errno
import logging
import os
import time

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet.engine.wave import run_single_step
from cpuu_fleet.errors import ControllerWriteError
from cpuu_fleet.journal import Journal
from cpuu_fleet.visit import host_visit
from cpuu_fleet.visit.host_visit import open_session
from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.visit.steps import collect as collect_step
from cpuu_fleet.visit.steps.context import HostContext
from cpuu_fleet.visit.steps.push import plan_push
from cpuu_fleet.vocabulary import ErrorClass
from tests.support.waves import lab_env, make_playbook


def _wait_for_logon_run(workstation, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workstation.refresh()
        task = next(iter(workstation.tasks.values()))
        if not task.running and task.last_run_time:
            return
        time.sleep(0.05)
    raise AssertionError("the at-logon task never ran")


def _count_launches(workstation) -> list[str]:  # type: ignore[no-untyped-def]
    """The names of the tasks the lab workstation launches CPUU for, from now on."""
    launches: list[str] = []
    original = workstation._launcher

    def counting(ws, task, user):  # type: ignore[no-untyped-def]
        launches.append(task.name)
        return original(ws, task, user)

    workstation._launcher = counting
    return launches


def test_a_pending_task_survives_single_step_and_check_runs(wave_factory):
    """preflight/push-only runs and --check runs never reach the run step: they must not make
    a later collect forget the at-logon task an earlier run left pending."""
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    at_logon = make_playbook(wave.payload, when_no_user="at_logon")
    first = wave.run(at_logon)
    with lab_env(wave.fleet):
        run_single_step(wave.request(), "preflight", pattern="all")
    wave.run(at_logon, check=True)
    workstation = wave.workstation(host)
    workstation.logon(next(iter(workstation.profiles)))
    _wait_for_logon_run(workstation)
    with lab_env(wave.fleet):
        later = run_single_step(wave.request(), "collect", pattern="all")
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
                    self._broken = True  # as after any dropped connection
                    raise SessionError(
                        ErrorClass.UNREACHABLE, "collect (download): connection reset (test)"
                    )
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
        later = run_single_step(wave.request(), "collect", pattern="all")
    with Journal.in_reports(wave.reports) as journal:
        fetched = [f for f in journal.files(later.run_id, host) if f["kind"] != "ini"]
    assert len(fetched) == 1  # only the file that broke off, not the first one again
    assert fetched[0]["remote_path"] != kept[0]["remote_path"]
    names = [p.name for p in (wave.reports / later.run_id / "hosts" / host).iterdir()]
    assert not any("(2)" in name for name in names), names


class _FullDiskOs:
    """``os`` as the collect step (``visit/steps/collect.py``) sees it, on a controller whose disk
    fills up during collect: the first write of downloaded content fails with ENOSPC (the one
    thing the lab cannot play)."""

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(os, name)

    @staticmethod
    def write(fd, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_local_disk_while_collecting_keeps_cpuus_verdict(wave_factory, monkeypatch):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    monkeypatch.setattr(collect_step, "os", _FullDiskOs())
    with pytest.raises(ControllerWriteError, match="recorded as interrupted"):
        wave.run(make_playbook(wave.payload, retries=0))  # the controller's fault: exit 4
    with Journal.in_reports(wave.reports) as journal:
        run_id = journal.latest_run()["run_id"]
        assert journal.run(run_id)["status"] == "interrupted"
        row = journal.host(run_id, host)
        collect = [a for a in journal.attempts(run_id, host) if a["step"] == "collect"]
    assert (row["state"], row["exit_code"], row["error_class"]) == (states.SUCCEEDED, 1, "local")
    assert row["user"]
    assert "No space left on device" in row["error_message"], row["error_message"]
    assert [(a["status"], a["error_class"]) for a in collect] == [("failed", "local")]


def test_a_bug_in_a_step_closes_its_attempt_but_leaves_run_open_for_resume(
    wave_factory, monkeypatch
):
    wave = wave_factory(2)
    broken_push, bug_after_cpuu = wave.fleet.hosts[0].name, wave.fleet.hosts[1].name
    launches = _count_launches(wave.workstation(bug_after_cpuu))
    real_push, real_run_status = host_visit.push, host_visit._run_status

    def push(ctx, session):  # type: ignore[no-untyped-def]
        if ctx.host == broken_push:
            raise KeyError("a bug")
        return real_push(ctx, session)

    def run_status(run):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("a bug after CPUU ran")

    monkeypatch.setattr(host_visit, "push", push)
    monkeypatch.setattr(host_visit, "_run_status", run_status)
    first = wave.run(make_playbook(wave.payload, retries=0))
    with Journal.in_reports(wave.reports) as journal:
        pushes = [a for a in journal.attempts(first.run_id, broken_push) if a["step"] == "push"]
        runs = [a for a in journal.attempts(first.run_id, bug_after_cpuu) if a["step"] == "run"]
    assert [(a["status"], a["error_class"]) for a in pushes] == [("failed", "internal")]
    assert "KeyError" in pushes[0]["error_message"]
    assert [a["status"] for a in runs] == ["running"]  # unknown whether CPUU ran: ask the host
    assert len(launches) == 1

    monkeypatch.setattr(host_visit, "_run_status", real_run_status)
    resumed = wave.follow_up(resume=first.run_id, inventory=None)
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(resumed.run_id, bug_after_cpuu)
    assert (row["state"], row["exit_code"]) == (states.SUCCEEDED, 1), row
    assert len(launches) == 1  # the host was asked; CPUU did not run a second time


def test_a_failing_connection_close_does_not_spoil_a_good_visit(wave_factory, caplog):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name

    def factory(name, connection):  # type: ignore[no-untyped-def]
        session = open_session(name, connection)
        real_open = session.open

        def open_then_break_close():  # type: ignore[no-untyped-def]
            real_open()

            def close():  # type: ignore[no-untyped-def]
                raise ConnectionResetError("reset while closing (test)")

            session._wsman.close = close
            return session

        session.open = open_then_break_close
        return session

    with caplog.at_level(logging.WARNING, logger="cpuu_fleet.run.session"):
        result = wave.run(make_playbook(wave.payload, retries=0), session_factory=factory)
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(result.run_id, host)
    assert (row["state"], row["exit_code"], row["error_class"]) == (states.SUCCEEDED, 1, None)
    assert "reset while closing" in caplog.text


def test_no_payload_version_is_a_classified_host_error_not_input_error(tmp_path):
    """The engine refuses run/collect without a known version before the wave (and push needs
    a payload), so only a new caller of the steps can get here: it must get a host result that
    ends one visit, not an InputError (exit 2) raised from inside a worker thread."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        ctx = HostContext(run_id="r", host="pc-0001", journal=journal, reports_dir=tmp_path)
        with pytest.raises(SessionError) as caught:
            plan_push(ctx)
    assert caught.value.error_class is ErrorClass.POLICY
    assert not caught.value.transient
    assert "push a payload first" in caught.value.message


def test_a_visit_whose_lease_was_taken_over_never_starts_cpuu(wave_factory, monkeypatch):
    """The controller froze past its lease's expiry and another took the host over (the fencing
    token changed): the next step's write-ahead row is refused, so the run step never acts. The
    host is a policy failure of this run, and CPUU never started."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    launches = _count_launches(wave.workstation(host))
    real_push = host_visit.push

    def push_then_lose_the_lease(ctx, session):  # type: ignore[no-untyped-def]
        with Journal.in_reports(wave.reports) as other:
            other.start_run(run_id="usurper")
            assert other.take_lease("usurper", [host], {"pid": 0}, lambda *_: True) is None
        return real_push(ctx, session)

    monkeypatch.setattr(host_visit, "push", push_then_lose_the_lease)
    result = wave.run(make_playbook(wave.payload, retries=0))
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(result.run_id, host)
        steps_written = [a["step"] for a in journal.attempts(result.run_id, host)]
    assert (row["state"], row["error_class"]) == (states.FAILED, "policy"), row
    assert "lease of run" in row["error_message"]
    assert "run" not in steps_written and launches == []
