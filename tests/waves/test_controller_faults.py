"""Faults of the controller itself, for real: a full disk under ``--reports``, SIGTERM and SIGHUP
(``kill``, an SSH session dropped), each against a lab fleet with ``cpuu-fleet play`` in a
subprocess, as an operator meets them."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet.cli.demo_lab import DEMO_SECRETS, make_standin_payload
from cpuu_fleet.engine.wave import RESERVE_BYTES
from cpuu_fleet.inputs.payload import load_payload
from cpuu_fleet.journal import Journal
from tests.support.waves import make_playbook

REPO = Path(__file__).resolve().parents[2]
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and mounts")


def _env(wave) -> dict[str, str]:
    return {**os.environ, **wave.fleet.env, **DEMO_SECRETS, "PYTHONPATH": str(REPO)}


def _play(wave, *args: str, cwd: Path = REPO, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cpuu_fleet", "play", *args],
        env=_env(wave),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _run_row(reports: Path, run_id: str | None = None) -> dict:
    with Journal.in_reports(reports) as journal:
        row = journal.run(run_id) if run_id else journal.latest_run()
        assert row is not None
        return row


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """An 8 MiB tmpfs (root may mount one), else None: the test limits file sizes instead."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True
    )
    if not mounted or mounted.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until only about ``leave`` bytes are free."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with (folder / "filler").open("wb") as stream:
        stream.truncate(0)
        os.posix_fallocate(stream.fileno(), 0, max(free - leave, 0))


def _limit_file_size() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


@POSIX_ONLY
def test_a_disk_filling_mid_wave_is_one_line_exit_4_and_an_interrupted_run(
    wave_factory, small_disk
):
    wave = wave_factory(3)
    playbook = make_playbook(wave.payload, timeout=30)
    reports = (small_disk or wave.root) / "reports"
    common = ["-i", str(wave.inventory_path), "--reports", str(reports), "--json"]
    first = _play(wave, str(playbook.path), *common)  # the journal exists before the disk fills
    assert first.wait(timeout=120) == 0, first.communicate()[1]
    first.communicate()
    if small_disk is not None:
        # Room for the run's reserve and a little more: the wave itself fills the disk.
        _fill(small_disk, RESERVE_BYTES + 160 * 1024)
        controller = _play(wave, str(playbook.path), *common)
    else:  # no mount allowed: every file the controller writes stops at 256 KiB (EFBIG)
        controller = _play(wave, str(playbook.path), *common, preexec_fn=_limit_file_size)
    _out, err = controller.communicate(timeout=120)

    assert controller.returncode == 4, err
    assert "Traceback" not in err and "Logging error" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cpuu-fleet: error: "), err
    assert "could not write" in lines[0]
    run = _run_row(reports)
    assert run["run_id"] in lines[0]
    if small_disk is None:  # each file is limited, so the run's reserve is refused up front
        assert "not started, no host was touched" in lines[0] and run["status"] == "interrupted"
        return
    assert f"--resume {run['run_id']}" in lines[0]
    if "recorded as interrupted" in lines[0]:
        assert run["status"] == "interrupted"
        assert run["stop_reason"].startswith("the controller could not write")
        with Journal.in_reports(reports) as journal:
            assert states.QUEUED not in journal.state_counts(run["run_id"])
    else:  # the journal said it could not record the end: then it must really say running
        assert "still says running" in lines[0] and run["status"] == "running"

    (small_disk / "filler").unlink()  # room again: --resume finishes the same run
    resumed = _play(wave, "--resume", run["run_id"], "--reports", str(reports), "--json")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    with Journal.in_reports(reports) as journal:
        before = {h["host"]: h["state"] for h in journal.hosts(run["run_id"])}
        after = {h["host"]: h["state"] for h in journal.hosts(result["run_id"])}
    # Nothing lost: each host ended in the interrupted run or in its resume, succeeded.
    assert after and set(after.values()) == {states.SUCCEEDED}
    assert {**before, **after} == {h.name: states.SUCCEEDED for h in wave.fleet.hosts}


@POSIX_ONLY
def test_a_journal_folder_without_room_is_one_line_exit_4_nothing_touched(wave_factory, small_disk):
    if small_disk is None:
        pytest.skip("needs a small file system (mount -t tmpfs)")
    wave = wave_factory(1)
    playbook = make_playbook(wave.payload)
    _fill(small_disk, 0)
    controller = _play(
        wave, str(playbook.path), "-i", str(wave.inventory_path),
        "--reports", str(small_disk / "reports"),
    )  # fmt: skip
    _out, err = controller.communicate(timeout=60)
    assert controller.returncode == 4, err
    assert err.count("\n") == 1 and err.startswith("cpuu-fleet: error: "), err
    assert "cannot write the journal" in err and "nothing was touched" in err


def _running_run_steps(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute(
                "SELECT COUNT(*) FROM attempts WHERE step = 'run' AND status = 'running'"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0
    return int(row[0])


def _interrupted(wave, signum: int, *args: str, cwd: Path = REPO) -> tuple[str, str]:
    """A two-host ``play ARGS`` (forks 1) interrupted by ``signum`` while CPUU runs on the first
    host: returns the run id and the controller's stdout (checked: exit code 130)."""
    for host in wave.fleet.hosts:
        host.workstation.cpuu.base_seconds = 2  # CPUU is busy when the signal arrives
    controller = _play(wave, *args, cwd=cwd)
    journal_path = wave.reports / Journal.FILENAME
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _running_run_steps(journal_path) < 1:
        time.sleep(0.05)
    controller.send_signal(signum)
    out, err = controller.communicate(timeout=60)
    assert controller.returncode == 130, err
    return _run_row(wave.reports)["run_id"], out


@POSIX_ONLY
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_drain_like_ctrl_c_and_the_hint_says_resume(wave_factory, signum):
    wave = wave_factory(2)
    playbook = make_playbook(wave.payload, timeout=30, forks=1, attached=True)
    run_id, out = _interrupted(
        wave, signum, str(playbook.path), "-i", str(wave.inventory_path),
        "--reports", str(wave.reports),
    )  # fmt: skip
    run = _run_row(wave.reports, run_id)
    assert run["status"] == "interrupted"
    assert run["stop_reason"] == f"interrupted by {signum.name}: 1 host(s) not started"
    with Journal.in_reports(wave.reports) as journal:
        # The host whose CPUU was running finished and was journalled; nothing left open.
        assert journal.state_counts(run_id) == {states.SUCCEEDED: 1, states.NOT_RUN: 1}
        assert journal.unfinished_steps(run_id) == []
    assert f"Resume:  cpuu-fleet play --resume {run_id}" in out
    assert "--retry-failed" not in out

    resumed = wave.follow_up(resume=run_id, inventory=None)
    assert resumed.counts == {states.SUCCEEDED: 1}  # the host the signal kept from starting


def _relative_run(wave) -> str:
    """A run started with relative paths (playbook, inventory, ``--payload``) from its folder,
    its playbook naming no payload, interrupted with one host not started."""
    playbook = make_playbook(None, timeout=30, forks=1, folder=wave.root, attached=True)
    run_id, _out = _interrupted(
        wave, signal.SIGTERM, playbook.path.name, "-i", wave.inventory_path.name,
        "--payload", wave.payload.name, "--reports", "reports", cwd=wave.root,
    )  # fmt: skip
    return run_id


@POSIX_ONLY
def test_resume_from_another_folder_reuses_the_runs_absolute_paths_and_payload(
    wave_factory, tmp_path
):
    wave = wave_factory(2)
    run_id = _relative_run(wave)
    run = _run_row(wave.reports, run_id)
    assert Path(run["playbook"]).is_absolute() and Path(run["playbook"]).is_file()
    assert run["inventory"] == str(wave.inventory_path.resolve())
    assert json.loads(run["options_json"])["payload"] == str(wave.payload.resolve())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = _play(wave, "--resume", run_id, "--reports", str(wave.reports), "--json",
                    cwd=elsewhere)  # fmt: skip
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err  # without the payload: "'push' step needs 'payload'"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["counts"] == {states.SUCCEEDED: 1}
    assert _run_row(wave.reports, result["run_id"])["payload_sha256"] == run["payload_sha256"]


@POSIX_ONLY
def test_resume_with_another_payload_is_refused_naming_both(wave_factory, tmp_path):
    wave = wave_factory(2)
    run_id = _relative_run(wave)
    before = _run_row(wave.reports, run_id)["payload_sha256"]
    other = make_standin_payload(tmp_path / "other-build", size=123_456)
    resumed = _play(wave, "--resume", run_id, "--payload", str(other),
                    "--reports", str(wave.reports))  # fmt: skip
    _out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 2, err
    (line,) = err.splitlines()
    assert f"--payload {other}" in line and str(wave.payload.resolve()) in line
    assert f"version {before[:12]}" in line and f"version {load_payload(other).version}" in line
    assert _run_row(wave.reports)["run_id"] == run_id  # no run started, nothing touched
