"""Each host keeps the staging folder of the payload it last received: a later build pushed to
other hosts must not send a collect on this one to the wrong folder (and find nothing)."""

from __future__ import annotations

from cpuu_fleet.cli.demo_lab import make_standin_payload
from cpuu_fleet.engine.wave import run_single_step
from cpuu_fleet.journal import Journal
from tests.support.waves import lab_env, make_playbook


def test_collect_reads_the_folder_of_the_hosts_own_payload(wave_factory):
    wave = wave_factory(2)
    first, second = (h.name for h in wave.fleet.hosts)
    ran = wave.run(make_playbook(wave.payload, steps=("preflight", "push", "run"), hosts=first))
    assert ran.exit_code == 0, ran.summary.outcomes
    other_build = make_standin_payload(wave.root / "other-build", size=200_000)
    pushed = wave.run(make_playbook(other_build, steps=("preflight", "push"), hosts=second))
    assert pushed.details[second]["push"]["directory"] != ran.details[first]["push"]["directory"]

    with lab_env(wave.fleet):
        collected = run_single_step(wave.request(), "collect", pattern=first)
    with Journal.in_reports(wave.reports) as journal:
        files = journal.files(collected.run_id, first)
        profiles = journal.profiles(collected.run_id, first)
    assert {f["kind"] for f in files} >= {"result", "log"}, collected.summary.outcomes
    assert profiles
