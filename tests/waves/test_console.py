"""The operator's console off a terminal (issue 12, point 4): ``play | cat``, ``nohup`` or CI see
each host as it happens; ``runs`` lists the journal's runs with their status and counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cpuu_fleet import vocabulary
from cpuu_fleet.cli.demo_lab import DEMO_SECRETS
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.visit.steps.context import STAGING_ROOT
from tests.support.commands import REPO, run_subprocess
from tests.support.waves import make_playbook


def _env(wave) -> dict[str, str]:
    return {**wave.fleet.env, **DEMO_SECRETS}


def test_play_on_a_pipe_prints_each_host_as_it_happens(wave_factory):
    wave = wave_factory(2)
    wave.workstation("pc-0002").cpuu.hang = True  # held until the run's 3 s deadline kills it
    playbook = make_playbook(wave.payload, serial=[1])
    args = ["play", playbook.path, "-i", wave.inventory_path, "--reports", wave.reports]
    env = {**os.environ, "PYTHONPATH": str(REPO), **_env(wave)}
    with subprocess.Popen(
        [sys.executable, "-m", "cpuu_fleet", *map(str, args)],
        cwd=wave.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "pc-0001: succeeded" in line:
                # Printed while pc-0002's CPUU still hangs: the wave is not over yet.
                assert proc.poll() is None
                break
        rest = proc.stdout.read()
        proc.wait(timeout=120)
    assert proc.returncode == 3  # pc-0002 needs attention
    text = "".join(seen) + rest
    assert "pc-0001: succeeded" in "".join(seen)
    assert "pc-0002: run started" in rest
    assert "pc-0002: failed [" in rest  # the failure and its reason, on its own line
    assert "\x1b[" not in text.split("run ", 1)[0]  # plain lines, no live display drawn


def test_runs_lists_the_journals_runs_with_status_and_counts(wave_factory):
    wave = wave_factory(3)
    wave.workstation("pc-0003").cpuu.crash_after_profiles = 0
    first = wave.run(make_playbook(wave.payload))
    retry = wave.follow_up(retry_failed=first.run_id)
    with Journal.in_reports(wave.reports) as journal:  # a run whose controller died
        dead = journal.start_run(kind="play", playbook="x.yml")
        journal.add_hosts(dead, [HostEntry("pc-0001"), HostEntry("pc-0002")])
        journal.set_host(dead, "pc-0001", state=vocabulary.RUNNING)

    listed = run_subprocess("runs", "--reports", wave.reports, "--json", cwd=wave.root)

    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [r["run_id"] for r in runs] == [first.run_id, retry.run_id, dead]
    assert runs[0]["status"] == vocabulary.RUN_COMPLETED
    assert runs[0]["counts"] == {vocabulary.SUCCEEDED: 2, vocabulary.FAILED: 1}
    assert (runs[1]["kind"], runs[1]["parent_run"]) == ("retry", first.run_id)
    assert runs[1]["counts"] == {vocabulary.FAILED: 1}
    assert runs[2]["status"] == vocabulary.RUN_INTERRUPTED  # as status reads it
    assert runs[2]["counts"] == {vocabulary.INTERRUPTED: 1, vocabulary.NOT_RUN: 1}

    table = run_subprocess("runs", "--reports", wave.reports, "--last", "2", cwd=wave.root)
    assert table.returncode == 0, table.stderr
    assert f"│ {first.run_id} │" not in table.stdout  # only named as the retry's parent
    assert f"│ {retry.run_id} │" in table.stdout and f"retry of {first.run_id}" in table.stdout
    assert "failed 1" in table.stdout


def test_list_hosts_shows_the_batches_and_contacts_no_host(wave_factory):
    wave = wave_factory(3)
    playbook = make_playbook(wave.payload, serial=[1, 2])
    args = ["play", playbook.path, "-i", wave.inventory_path, "--reports", wave.reports]
    listed = run_subprocess(*args, "--list-hosts", cwd=wave.root, env=_env(wave))
    assert listed.returncode == 0, listed.stderr
    assert "batch 1 (1):\n    pc-0001" in listed.stdout
    assert "batch 2 (2):\n    pc-0002" in listed.stdout and "3 host(s) in all" in listed.stdout
    as_json = run_subprocess(*args, "--list-hosts", "--json", cwd=wave.root, env=_env(wave))
    assert json.loads(as_json.stdout)["hosts"] == ["pc-0001", "pc-0002", "pc-0003"]
    runs = run_subprocess("runs", "--reports", wave.reports, "--json", cwd=wave.root)
    assert json.loads(runs.stdout) == []  # no run was started
    for name in ("pc-0001", "pc-0002", "pc-0003"):
        workstation = wave.workstation(name)
        assert workstation.cpuu_starts == [] and workstation.tasks == {}


def test_dash_c_is_check_and_changes_nothing_on_any_host(wave_factory):
    wave = wave_factory(2)
    playbook = make_playbook(wave.payload)
    args = ["play", playbook.path, "-i", wave.inventory_path, "--reports", wave.reports, "-C"]
    done = run_subprocess(*args, cwd=wave.root, env=_env(wave))
    assert done.returncode == 0, done.stderr
    assert "Check mode: what a real run would do" in done.stdout
    for name in ("pc-0001", "pc-0002"):
        assert wave.workstation(name).cpuu_starts == []
        assert not wave.workstation(name).fs.exists("C:\\ProgramData\\cpuu-fleet\\work")


def test_extra_vars_reach_the_ad_hoc_run_steps_files(wave_factory):
    wave = wave_factory(1)
    args = [
        "run", "-m", "update", "-i", wave.inventory_path, "--reports", wave.reports,
        "--payload", wave.payload, "-e", "cpuu_admin=CORP\\cpuu-adm-lyon",
    ]  # fmt: skip
    done = run_subprocess(*args, cwd=wave.root, env=_env(wave))
    assert done.returncode == 0, done.stderr
    fs = wave.workstation("pc-0001").fs
    staged = [path for folder in fs.glob(STAGING_ROOT, "*") for path in fs.glob(folder, "CPUU.ini")]
    ini = fs.read_bytes(staged[0])  # what the host got, as its run step's CPUU reads it
    text = ini.decode("utf-16") if ini[:2] in (b"\xff\xfe", b"\xfe\xff") else ini.decode("cp1252")
    assert "Admin CORP\\cpuu-adm-lyon" in text


def test_preflight_prints_a_readiness_table_worst_first_with_the_deciding_facts(wave_factory):
    wave = wave_factory(3)
    wave.workstation("pc-0002").rdp_logon("CORP\\tech-ana")  # a second session
    wave.workstation("pc-0002").outlook_version = "16.0 \x1b[31m=cmd"  # hostile text
    done = run_subprocess(
        "preflight", "-i", wave.inventory_path, "--reports", wave.reports,
        cwd=wave.root, env={**_env(wave), "COLUMNS": "220"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Readiness (preflight; nothing was changed)" in done.stdout
    rows = {
        line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│ pc-" in line
    }
    assert set(rows) == {"pc-0001", "pc-0002", "pc-0003"}
    assert "succeeded" in rows["pc-0001"] and " GB" in rows["pc-0001"]
    assert rows["pc-0002"].split("│")[4].strip() == "2"  # console + RDP sessions
    assert "\x1b" not in done.stdout and "16.0 \\x1b[31m=cmd" in rows["pc-0002"]  # shown, inert
    for name in ("pc-0001", "pc-0002", "pc-0003"):
        assert wave.workstation(name).cpuu_starts == []
