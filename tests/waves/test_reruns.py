"""Each run is judged on its own output: CPUU's result file holds no time stamp, so a host that
fails the same way twice writes the same bytes, and a second run must still read them."""

from __future__ import annotations

from cpuu_fleet import journal as states
from cpuu_fleet.cli.demo_lab import run_demo
from cpuu_fleet.engine.wave import ExitCode
from cpuu_fleet.journal import Journal
from tests.support.waves import make_playbook


def test_three_runs_of_a_failing_host_each_judge_it_on_its_own_result(wave_factory):
    wave = wave_factory(2, "offline_profiles")
    playbook = make_playbook(wave.payload, timeout=10)
    seen = []
    for _ in range(3):
        result = wave.run(playbook)
        assert result.exit_code == ExitCode.HOSTS_NEED_ATTENTION
        with Journal.in_reports(wave.reports) as journal:
            rows = journal.hosts(result.run_id)
            assert {r["state"] for r in rows} == {states.FAILED}, rows
            assert {r["error_class"] for r in rows} == {"cpuu"}
            for row in rows:
                profiles = journal.profiles(result.run_id, row["host"])
                assert profiles, f"run {result.run_id} read no result for {row['host']}"
                files = journal.files(result.run_id, row["host"])
                assert {f["kind"] for f in files} >= {"result", "log"}
                seen.append(sorted((p["profile"], p["current_code"]) for p in profiles))
    # The same failure three times, read three times: the same bytes were never skipped.
    assert len(seen) == 6 and seen[0] == seen[2] == seen[4]


def test_an_earlier_runs_result_file_is_not_taken_for_this_runs(wave_factory):
    """A host whose CPUU writes no result file this time (it crashed) must not be judged on the
    file an earlier run left in the same staging folder."""
    wave = wave_factory(1)
    playbook = make_playbook(wave.payload, timeout=10)
    first = wave.run(playbook)
    assert first.counts == {"succeeded": 1}
    wave.workstation(wave.fleet.hosts[0].name).cpuu.crash_after_profiles = 0
    second = wave.run(playbook)
    with Journal.in_reports(wave.reports) as journal:
        (row,) = journal.hosts(second.run_id)
        assert row["state"] == states.FAILED and row["error_class"] == "cpuu"
        collected = [f["remote_path"] for f in journal.files(second.run_id) if f["kind"] != "ini"]
        earlier = {f["remote_path"] for f in journal.files(first.run_id) if f["kind"] == "result"}
        assert not earlier & set(collected), "the first run's result was collected again"
        assert not journal.profiles(second.run_id)


def test_the_demo_twice_in_one_folder_gives_the_same_counts_twice(tmp_path):
    runs = [run_demo(hosts=10, seed=4, reports_dir=tmp_path, run_timeout=2) for _ in range(2)]
    with Journal.in_reports(tmp_path) as journal:
        counts = [journal.state_counts(r.run_id) for r in runs]
        profiles = [len(journal.profiles(r.run_id)) for r in runs]
    assert counts[0] == counts[1], counts
    assert profiles[0] == profiles[1] > 0, profiles
