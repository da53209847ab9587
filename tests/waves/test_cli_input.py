"""Bad command-line input to the single-step commands and follow-up runs: one clear line, exit
code 2, and nothing touched (no host visited, no run in the journal)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cpuu_fleet.cli.demo_lab import DEMO_SECRETS, LAB_TEMPLATE_VARS, make_standin_payload
from cpuu_fleet.journal import FAILED, HostEntry, Journal

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env or {}), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(
        "all:\n  hosts:\n    pc-0001:\n      ansible_host: 127.0.9.1\n"
        "      ansible_user: admin\n      ansible_password: not-used\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("preflight", "--forks", "0"), "--forks: must be at least 1, not 0"),
        (("run", "--mode", "update", "--timeout", "0"), "--timeout: must be a whole number"),
    ],
)
def test_bad_single_step_options_stop_before_any_host(tmp_path, inventory, args, said):
    done = cli(*args, "-i", str(inventory), "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cpuu-fleet: error: {said}"), lines
    journal = tmp_path / "reports" / Journal.FILENAME
    if journal.exists():
        with Journal(journal) as opened:
            assert opened.runs() == []


def test_a_choice_outside_its_choices_names_them_and_touches_nothing(tmp_path, inventory):
    done = cli(
        "run", "--mode", "update", "--when-no-user", "never", "-i", str(inventory),
        "--reports", "reports", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stderr.replace("│", " ").split())
    assert "'never' is not one of 'skip', 'at_logon'" in said
    assert not (tmp_path / "reports" / Journal.FILENAME).exists()


@pytest.mark.parametrize("follow_up", ["--retry-failed", "--resume"])
def test_follow_up_of_an_ad_hoc_step_says_what_to_do_instead(tmp_path, inventory, follow_up):
    with Journal(tmp_path / "reports" / Journal.FILENAME) as journal:
        run_id = journal.start_run(kind="step", playbook="<push>", inventory=str(inventory))
        journal.finish_run(run_id, "completed")
    done = cli("play", follow_up, run_id, "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert f"run {run_id} was an ad-hoc <push> step" in line
    assert f"--limit @{Path('reports') / run_id / 'failed.retry'}" in line
    with Journal(tmp_path / "reports" / Journal.FILENAME) as journal:
        assert [run["run_id"] for run in journal.runs()] == [run_id]


def test_collect_before_any_push_is_bad_input_not_a_failure_per_host(tmp_path, inventory):
    done = cli("collect", "-i", str(inventory), "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert "'collect' needs a payload pushed first" in line
    with Journal(tmp_path / "reports" / Journal.FILENAME) as journal:
        assert journal.runs() == []


def test_status_without_a_journal_says_so_like_report_and_creates_none(tmp_path):
    for command in ("status", "report"):
        done = cli(command, "--reports", "reports", cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr == f"cpuu-fleet: error: no runs in {Path('reports', Journal.FILENAME)}\n"
    assert not (tmp_path / "reports").exists()


def test_status_heading_stays_on_one_line(tmp_path):
    with Journal(tmp_path / "reports" / Journal.FILENAME) as journal:
        run_id = journal.start_run(kind="play", mode="update")
        journal.finish_run(run_id, "completed")
    done = cli("status", "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"Run {run_id} (play, update): completed"


def test_a_run_batch_file_that_no_push_delivers_is_bad_input(tmp_path):
    inventory = tmp_path / "inventory.yml"
    host_vars = {"ansible_host": "127.0.9.1", "ansible_user": "admin", "ansible_password": "x"}
    inventory.write_text(
        yaml.safe_dump({"all": {"hosts": {"pc-0001": {**host_vars, **LAB_TEMPLATE_VARS}}}}),
        encoding="utf-8",
    )
    payload = make_standin_payload(tmp_path / "payload", size=1024)
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- name: custom batch\n  hosts: all\n  retries: 0\n"
        f"  payload: {payload}\n  templates: {REPO / 'playbooks' / 'templates'}\n"
        "  steps:\n    - push\n    - run: {mode: update, batch_file: Site_Update.bat}\n",
        encoding="utf-8",
    )
    env = dict(DEMO_SECRETS)
    done = cli("play", str(playbook), "-i", str(inventory), "--reports", "r", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"cpuu-fleet: error: {playbook}:")
    assert "batch_file 'Site_Update.bat' is neither a rendered template nor a file" in line
    # The same file in the payload is fine: the play gets as far as the (unreachable) host.
    (payload / "site_update.BAT").write_bytes(b"@echo off\r\n")
    done = cli("play", str(playbook), "-i", str(inventory), "--reports", "r", "--json",
               cwd=tmp_path, env=env)  # fmt: skip
    assert "batch_file" not in done.stderr


def test_play_shows_the_inventory_warnings_before_the_wave(tmp_path):
    folder = tmp_path / "inventory"
    (folder / "group_vars").mkdir(parents=True)
    (folder / "hosts.yml").write_text(
        "all:\n  children:\n    wave1:\n      hosts:\n        pc-0001:\n"
        "          ansible_host: 127.0.9.1\n          ansible_user: admin\n"
        "          ansible_password: x\n",
        encoding="utf-8",
    )
    # A typo in a group_vars file name: its settings silently apply to nobody.
    (folder / "group_vars" / "wave_1.yml").write_text("cpuu_admin: SOURCE\\svc\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- name: look\n  hosts: wave1\n  retries: 0\n  steps: [preflight]\n", encoding="utf-8"
    )
    done = cli("play", str(playbook), "-i", str(folder), "--reports", "r", "--json", cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr  # the host is not there
    assert done.stderr == (
        f"cpuu-fleet: warning: {folder / 'group_vars' / 'wave_1'}: no group named 'wave_1'"
        " in the inventory\n"
    )


def test_retry_failed_says_which_hosts_left_the_inventory(tmp_path, inventory):
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- name: look\n  hosts: all\n  retries: 0\n  steps: [preflight]\n", encoding="utf-8"
    )
    with Journal(tmp_path / "reports" / Journal.FILENAME) as journal:
        run_id = journal.start_run(playbook=str(playbook), inventory=str(inventory))
        journal.add_hosts(run_id, [HostEntry("pc-0001"), HostEntry("pc-0002")])
        for host in ("pc-0001", "pc-0002"):
            journal.set_host(run_id, host, state=FAILED, error_class="unreachable")
        journal.finish_run(run_id, "completed")
    done = cli("play", "--retry-failed", run_id, "--reports", "reports", "--json", cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr  # pc-0001 is still not there
    assert done.stderr == (
        f"cpuu-fleet: warning: 1 host(s) of run {run_id} to retry are not in this inventory,"
        " limit or playbook, so not visited: pc-0002\n"
    )


def test_demo_with_a_reports_folder_it_cannot_create_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should be\n")
    done = cli("demo", "--hosts", "2", "--reports", "taken/r", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"cpuu-fleet: error: {Path('taken', 'r')}")
    assert "cannot create the run folder" in line


@pytest.mark.parametrize("step", ["preflight", "collect"])
def test_read_only_steps_take_no_payload_they_would_ignore(tmp_path, inventory, step):
    done = cli(step, "-i", str(inventory), "--payload", "elsewhere", cwd=tmp_path)
    assert done.returncode == 2
    assert "No such option: --payload" in done.stderr


def test_a_check_run_does_not_count_as_a_push(tmp_path, inventory):
    with Journal(tmp_path / "reports" / Journal.FILENAME) as journal:
        dry = journal.start_run(check_mode=True, payload_sha256="ab" * 32)
        journal.finish_run(dry, "completed")
    done = cli("collect", "-i", str(inventory), "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'collect' needs a payload pushed first" in done.stderr
