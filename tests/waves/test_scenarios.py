"""One update wave over a mixed lab fleet: every scenario must end in its right state and class.

The ``mixed`` fleet of 44 hosts holds every problem at least once (about 70 % healthy); the wave
runs once for the module and each test reads what it left in the journal and the reports folder.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet.cli.demo_lab import DEMO_SECRETS
from cpuu_fleet.cli.progress import JsonLinesPrinter
from cpuu_fleet.engine.wave import ExitCode
from cpuu_fleet.journal import Journal
from tests.support.waves import Wave, make_playbook, started_wave

HOSTS = 44


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mixed")
    with started_wave(root, HOSTS, "mixed", seed=3) as wave:
        playbook = make_playbook(wave.payload, when_no_user="at_logon", timeout=3, retries=1)
        wave.reports.mkdir(parents=True)
        with (wave.reports / "events.jsonl").open("w", encoding="utf-8") as events:
            processors = [JsonLinesPrinter(stream=events)]  # run.log: the runner's own
            result = wave.run(playbook, processors=processors)
        journal = Journal.in_reports(wave.reports)
        yield wave, result, journal
        journal.close()


def _rows(journal: Journal, run_id: str) -> dict[str, dict]:
    return {row["host"]: row for row in journal.hosts(run_id)}


def _only(wave: Wave, scenario: str) -> list[str]:
    hosts = wave.scenario_hosts(scenario)
    assert hosts, f"the mixed fleet has no {scenario} host"
    return hosts


EXPECTED = {
    # scenario: (state, error_class)
    "healthy": (states.SUCCEEDED, None),
    "slow_link": (states.SUCCEEDED, None),
    "outlook_running": (states.SUCCEEDED, None),
    "unreachable": (states.UNREACHABLE, "unreachable"),
    "wrong_password": (states.FAILED, "authentication"),
    "disk_full": (states.FAILED, "remote"),
    "no_user": (states.PENDING, None),
    "ost_locked": (states.FAILED, "cpuu"),
    "offline_profiles": (states.FAILED, "cpuu"),
    "not_switched": (states.NOT_SWITCHED, "cpuu"),
    "cpuu_crash": (states.FAILED, "cpuu"),
    "cpuu_hang": (states.FAILED, "cpuu"),
    "mixed_results": (states.PARTIAL, "cpuu"),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_each_scenario_ends_in_its_state(mixed, scenario):
    wave, result, journal = mixed
    rows = _rows(journal, result.run_id)
    state, error_class = EXPECTED[scenario]
    for host in _only(wave, scenario):
        row = rows[host]
        assert (row["state"], row["error_class"]) == (state, error_class), (host, row)


def test_wave_exit_code_says_hosts_need_attention(mixed):
    _, result, _ = mixed
    assert result.summary.status == "completed"
    assert result.exit_code == ExitCode.HOSTS_NEED_ATTENTION


def test_unreachable_is_retried_then_reported(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "unreachable"):
        row = _rows(journal, result.run_id)[host]
        assert row["attempts"] == 2  # retries: 1 for transient failures
        assert "refused" in row["error_message"]


def test_wrong_password_is_not_retried(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "wrong_password"):
        assert _rows(journal, result.run_id)[host]["attempts"] == 1


def test_drop_mid_transfer_is_retried_then_succeeds(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "drop_mid_transfer"):
        row = _rows(journal, result.run_id)[host]
        assert (row["state"], row["attempts"]) == (states.SUCCEEDED, 2), row
        pushes = [a for a in journal.attempts(result.run_id, host) if a["step"] == "push"]
        assert pushes[0]["status"] == "failed" and pushes[0]["error_class"] == "unreachable"
        assert pushes[-1]["status"] == "changed"
        runs = [a for a in journal.attempts(result.run_id, host) if a["step"] == "run"]
        assert len(runs) == 1  # CPUU ran once, on the successful attempt


def test_disk_full_names_the_remote_error(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "disk_full"):
        assert "not enough space" in _rows(journal, result.run_id)[host]["error_message"]
        steps = [a["step"] for a in journal.attempts(result.run_id, host)]
        assert "run" not in steps and wave.workstation(host).tasks == {}


def test_hung_cpuu_is_killed_and_not_success(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "cpuu_hang"):
        row = _rows(journal, result.run_id)[host]
        assert row["killed"] == 1 and row["exit_code"] == 267014  # Task Scheduler's, after a stop
        assert "killed" in row["error_message"] and row["exit_flags"] == "TASK_TERMINATED"
        assert wave.workstation(host).cpuu_running == []  # CPUU itself, not only its cmd.exe
        runs = [a for a in journal.attempts(result.run_id, host) if a["step"] == "run"]
        assert [a["status"] for a in runs] == ["killed"]


def test_crash_sets_flag_32(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "cpuu_crash"):
        row = _rows(journal, result.run_id)[host]
        assert row["exit_code"] & 32 and "CRASH" in row["exit_flags"]


def test_no_user_at_logon_registers_a_pending_task(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "no_user"):
        task = wave.workstation(host).task(_rows(journal, result.run_id)[host]["task_name"])
        assert task is not None and task.trigger == "AtLogon"


def test_results_are_collected_and_journalled(mixed):
    wave, result, journal = mixed
    for host in _only(wave, "mixed_results"):
        profiles = journal.profiles(result.run_id, host)
        assert len(profiles) >= 5
        codes = {p["current_code"] for p in profiles}
        assert 10 in codes and len(codes) >= 4
        folder = wave.reports / result.run_id / "hosts" / host
        names = sorted(p.name for p in folder.iterdir())
        assert any(n.endswith(".csv") for n in names) and "CPUU.ini" in names


def _every_file_text(root: Path) -> list[tuple[Path, bytes]]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as archive:
                data = b"".join(archive.read(n) for n in archive.namelist())
        found.append((path, data))
    return found


def test_secrets_never_reach_anything_written(mixed):
    wave, _, _ = mixed
    secrets = [wave.fleet.password, *DEMO_SECRETS.values()]
    files = _every_file_text(wave.reports)
    assert any(p.name == "journal.sqlite3" for p, _ in files)
    assert any(p.name == "CPUU.ini" for p, _ in files)
    assert any(p.name == "run.log" for p, _ in files)
    assert any(p.name == "events.jsonl" and b"step_finished" in d for p, d in files)
    assert any(p.name == "report.xlsx" for p, _ in files)
    for path, data in files:
        for secret in secrets:
            for encoding in ("utf-8", "utf-16-le", "cp1252"):
                assert secret.encode(encoding) not in data, (path, "holds a secret")


def test_collected_ini_is_masked_but_the_host_got_the_real_one(mixed):
    wave, result, _ = mixed
    host = _only(wave, "healthy")[0]
    saved = (wave.reports / result.run_id / "hosts" / host / "CPUU.ini").read_bytes()
    assert b"********" in saved
    version = result.details[host]["push"]["directory"]
    sent = wave.workstation(host).fs.read_bytes(version + "\\CPUU.ini")
    assert DEMO_SECRETS["CPUU_FLEET_CPUU_PASSWORD"].encode("cp1252") in sent


def test_retry_failed_revisits_only_failed_and_unreachable(mixed):
    wave, result, journal = mixed
    rows = _rows(journal, result.run_id)
    wanted = {h for h, r in rows.items() if r["state"] in (states.FAILED, states.UNREACHABLE)}
    retry = wave.follow_up(retry_failed=result.run_id, inventory=None)
    visited = {row["host"] for row in journal.hosts(retry.run_id)}
    assert visited == wanted
    assert journal.run(retry.run_id)["parent_run"] == result.run_id
