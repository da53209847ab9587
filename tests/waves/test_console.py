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
