"""The journal keeps what happened, even when the controller dies, and never keeps a secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import FAILED, SUCCEEDED, HostEntry, Journal
from cpuu_fleet.redact import Redactor

REPO = Path(__file__).resolve().parents[2]


def test_run_hosts_steps_profiles_and_files_round_trip(journal_location):
    journal = Journal(journal_location)
    run = journal.start_run(playbook="update.yml", mode="update", inventory="inv.yml")
    journal.add_hosts(
        run, [HostEntry("pc-1", wave="wave1", batch=1), HostEntry("pc-2", wave="wave1")]
    )
    step = journal.start_step(run, "pc-1", "run")
    journal.end_step(step, "ok", details={"exit_code": 4097})
    journal.set_host(run, "pc-1", state=SUCCEEDED, exit_code=4097, attempts=1)
    journal.add_profiles(run, "pc-1", "CORP\\jdoe", [ProfileResult("Outlook", 10, 0, 1)], "r.csv")
    journal.add_file(
        run,
        "pc-1",
        kind="result",
        remote_path="C:\\x\\r.csv",
        local_path="r.csv",
        sha256="ab" * 32,
        size=10,
    )
    journal.finish_run(run, "completed")

    journal.close()
    reopened = Journal(journal_location)
    assert reopened.run(run)["status"] == "completed"
    assert [h["host"] for h in reopened.hosts(run)] == ["pc-1", "pc-2"]
    assert reopened.host(run, "pc-1")["exit_code"] == 4097  # above 255, kept whole
    assert reopened.attempts(run, "pc-1")[0]["duration_s"] >= 0
    assert reopened.profiles(run)[0]["profile"] == "Outlook"
    assert reopened.has_file("pc-1", "ab" * 32)
    assert reopened.state_counts(run) == {SUCCEEDED: 1, "queued": 1}


def test_secrets_never_reach_the_journal_file(tmp_path):
    redactor = Redactor()
    redactor.add("S3cret-Pa55")
    journal = Journal(tmp_path / "j.sqlite3", redactor=redactor)
    run = journal.start_run(options={"note": "password S3cret-Pa55"})
    journal.add_hosts(run, [HostEntry("pc-1")])
    step = journal.start_step(run, "pc-1", "connect")
    journal.end_step(
        step,
        "failed",
        error_class="authentication",
        error_message="logon failed for admin:S3cret-Pa55",
    )
    journal.set_host(run, "pc-1", state=FAILED, error_message="S3cret-Pa55 rejected")
    journal.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"S3cret-Pa55" not in raw
    assert b"********" in raw


def test_unfinished_steps_survive_kill_9(tmp_path):
    """A controller killed mid-step leaves the step 'running': resume knows to ask the host."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from cpuu_fleet.journal import Journal, HostEntry
        j = Journal({str(tmp_path / "j.sqlite3")!r})
        run = j.start_run(run_id="r1")
        j.add_hosts(run, [HostEntry("pc-1")])
        j.start_step(run, "pc-1", "run")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    journal = Journal(tmp_path / "j.sqlite3")
    assert [s["step"] for s in journal.unfinished_steps("r1")] == ["run"]
    assert journal.run("r1")["status"] == "running"


def test_concurrent_writers_from_worker_threads(journal_location):
    journal = Journal(journal_location)
    run = journal.start_run()
    journal.add_hosts(run, [HostEntry(f"pc-{i}") for i in range(40)])

    def work(i: int) -> None:
        with journal.deferred():  # a visit's writes (held back on PostgreSQL)
            for step in ("preflight", "push", "run", "collect"):
                attempt = journal.start_step(run, f"pc-{i}", step)
                journal.end_step(attempt, "ok")
            journal.set_host(run, f"pc-{i}", state=SUCCEEDED)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert journal.state_counts(run) == {SUCCEEDED: 40}
    assert len(journal.attempts(run)) == 160


def test_cleanup_success_is_remembered_per_host(journal_location):
    journal = Journal(journal_location)
    run = journal.start_run(mode="cleanup")
    journal.add_hosts(run, [HostEntry("pc-1"), HostEntry("pc-2")])
    journal.set_host(run, "pc-1", state=SUCCEEDED, ended_at="2026-11-21T10:00:00+00:00")
    journal.set_host(run, "pc-2", state=FAILED)
    assert journal.cleanup_succeeded("pc-1") == run
    assert journal.cleanup_succeeded("pc-2") is None


def test_a_check_run_of_cleanup_does_not_forbid_undo(journal_location):
    journal = Journal(journal_location)
    dry = journal.start_run(mode="cleanup", check_mode=True)
    journal.add_hosts(dry, [HostEntry("pc-1")])
    journal.set_host(dry, "pc-1", state=SUCCEEDED, error_message="check mode: nothing changed")
    assert journal.cleanup_succeeded("pc-1") is None


def test_a_file_that_is_not_a_journal_is_bad_input_naming_it(tmp_path):
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"not a database, perhaps a wrong --reports folder\n" * 40)
    with pytest.raises(InputError) as caught:
        Journal(path)
    assert caught.value.render() == f"{path}: cannot use the journal (file is not a database)"
    assert path.read_bytes().startswith(b"not a database")  # left as it was


def test_a_journal_folder_that_cannot_exist_is_bad_input(tmp_path):
    (tmp_path / "reports").write_text("a file where the folder should be\n")
    with pytest.raises(InputError) as caught:
        Journal.in_reports(tmp_path / "reports" / "more")
    assert "cannot open the journal" in caught.value.render()
    assert str(tmp_path / "reports" / "more" / Journal.FILENAME) in caught.value.render()
