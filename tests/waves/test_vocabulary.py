"""Every list and every name agrees with the vocabulary, on a real wave over a mixed lab fleet.

One update wave over the lab's ``mixed`` fleet (every problem at least once), in two batches with
``max_fail_percentage: 0`` so the failures of the first batch stop the wave and the second batch
ends ``not_run``. Then each output is read the way an operator or a script reads it (the exit
code, ``status --json`` and its table, ``actions.csv``, ``hosts.csv``, ``retry.txt``,
``failed.retry``, ``pending.txt``, the JSON events, the progress display, ``run.log``) and
compared with the vocabulary's flags for each host's journal state.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cpuu_fleet import vocabulary as V
from cpuu_fleet.cli import app
from cpuu_fleet.cli.progress import JsonLinesPrinter, LiveProgress
from cpuu_fleet.engine.planning import RETRY_FILE, select_resume, select_retry_failed
from cpuu_fleet.engine.wave import ExitCode
from cpuu_fleet.journal import Journal
from tests.support.waves import make_playbook, started_wave

HOSTS = 44
FIRST_BATCH = HOSTS - 1  # the lab puts its problem hosts last: the last one is not run


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("vocabulary")
    with started_wave(root, HOSTS, "mixed", seed=3) as wave:
        playbook = make_playbook(
            wave.payload,
            when_no_user="at_logon",
            timeout=3,
            retries=0,
            serial=[FIRST_BATCH, HOSTS],
            max_fail_percentage=0,
        )
        wave.reports.mkdir(parents=True)
        display = io.StringIO()
        with (wave.reports / "events.jsonl").open("w", encoding="utf-8") as events:
            processors = [  # run.log is the runner's own
                JsonLinesPrinter(stream=events),
                LiveProgress(Console(file=display, force_terminal=False, width=400)),
            ]
            result = wave.run(playbook, processors=processors)
        with Journal.in_reports(wave.reports) as journal:
            states = {row["host"]: row["state"] for row in journal.hosts(result.run_id)}
            retry_selection = select_retry_failed(journal, result.run_id).hosts
            resume_selection = select_resume(journal, result.run_id).hosts
        status = CliRunner().invoke(app, ["status", "--reports", str(wave.reports), "--json"])
        assert status.exit_code == 0, status.output
        table = CliRunner().invoke(
            app, ["status", "--reports", str(wave.reports)], terminal_width=400
        )
        assert table.exit_code == 0, table.output
        yield {
            "result": result,
            "states": states,
            "run_dir": wave.reports / result.run_id,
            "reports": wave.reports,
            "status": json.loads(status.stdout),
            "status_text": table.stdout,
            "display": display.getvalue(),
            "events": [
                json.loads(line)
                for line in (wave.reports / "events.jsonl").read_text("utf-8").splitlines()
            ],
            "--retry-failed": set(retry_selection),
            "--resume": set(resume_selection),
        }


def _hosts_where(played: dict, flag: str) -> set[str]:
    return {host for host, key in played["states"].items() if getattr(V.state(key), flag)}


def _listed(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines)), f"{path.name} names a host twice"
    return set(lines)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_wave_ends_hosts_in_a_spread_of_states(played):
    reached = set(played["states"].values())
    wanted = {V.SUCCEEDED, V.PARTIAL, V.FAILED, V.UNREACHABLE, V.NOT_SWITCHED, V.PENDING}
    assert wanted | {V.NOT_RUN} <= reached, reached
    assert reached <= set(V.FINAL_STATES)


def test_exit_code_is_3_exactly_when_a_host_needs_attention(played):
    assert _hosts_where(played, "attention")
    assert played["result"].exit_code == ExitCode.HOSTS_NEED_ATTENTION


@pytest.mark.parametrize("key", V.FINAL_STATES)
def test_exit_code_of_a_run_whose_hosts_all_end_in_one_state(played, key):
    result = played["result"]
    summary = result.summary
    alone = type(summary)(
        run_id=summary.run_id,
        status=V.RUN_COMPLETED,
        stop_reason=None,
        states={"pc-x": key},
        outcomes={},
        retry_file=summary.retry_file,
        run_dir=summary.run_dir,
    )
    code = type(result)(result.run_id, alone, result.journal_path, result.run_dir).exit_code
    expected = ExitCode.HOSTS_NEED_ATTENTION if V.BY_KEY[key].attention else ExitCode.OK
    assert code == expected


def test_every_attention_list_holds_exactly_the_hosts_that_need_attention(played):
    attention = _hosts_where(played, "attention")
    status = played["status"]
    assert {h["host"] for h in status["needs_action"]} == attention
    assert {row["host"] for row in _csv(played["run_dir"] / "actions.csv")} == attention
    assert _listed(played["run_dir"] / "retry.txt") == attention
    shown = played["status_text"].split("Hosts needing action", 1)[1]
    for host in played["states"]:
        assert (host in shown) == (host in attention), host


def test_retry_failed_and_failed_retry_hold_exactly_the_retried_states(played):
    retried = _hosts_where(played, "retried")
    assert retried
    assert _listed(played["run_dir"] / RETRY_FILE) == retried
    assert played["--retry-failed"] == retried


def test_resume_revisits_exactly_the_resumed_states(played):
    resumed = _hosts_where(played, "resumed")
    assert resumed  # the second batch, not run
    assert played["--resume"] == resumed


def test_pending_hosts_have_their_own_list_and_need_no_attention(played):
    pending = {h for h, key in played["states"].items() if key in V.PENDING_STATES}
    assert pending
    assert _listed(played["run_dir"] / "pending.txt") == pending
    assert set(played["status"]["pending"]) == pending
    assert not pending & _hosts_where(played, "attention")


def test_each_action_row_carries_its_states_follow_up(played):
    run_id = played["result"].run_id
    for row in _csv(played["run_dir"] / "actions.csv"):
        key = played["states"][row["host"]]
        assert row["follow_up"] == V.BY_KEY[key].follow_up_for(run_id)
    for entry in played["status"]["needs_action"]:
        follow_up = V.BY_KEY[entry["state"]].follow_up_for(run_id, played["reports"])
        assert entry["follow_up"] == follow_up
        if "@" in follow_up:  # the list it names is there, and holds the host
            listed = Path(follow_up.rsplit("@", 1)[1])
            assert entry["host"] in _listed(listed)


def test_every_output_names_the_states_as_the_vocabulary_does(played):
    states = played["states"]
    # Machines read the key: the JSON events and status --json.
    finished = [
        e for e in played["events"] if e["event"] == "host_finished" and not e["retry_in_s"]
    ]
    assert {e["host"]: e["state"] for e in finished} == states
    for event in finished:
        assert event["label"] == V.label(event["state"])
        assert event["needs_attention"] == V.BY_KEY[event["state"]].attention
    run_finished = next(e for e in played["events"] if e["event"] == "run_finished")
    assert run_finished["status"] in V.RUN_STATUSES
    assert run_finished["counts"] == dict(Counter(states.values()))
    assert played["status"]["counts"] == dict(Counter(states.values()))
    steps = {e["status"] for e in played["events"] if e["event"] == "step_finished"}
    assert steps <= set(V.STEP_STATUSES)
    # People read the label: the CSVs, the progress display, the status table and run.log.
    for name in ("hosts.csv", "actions.csv"):
        for row in _csv(played["run_dir"] / name):
            assert row["state"] == V.label(states[row["host"]]), (name, row)
    for key, count in Counter(states.values()).items():
        assert f"{V.label(key)} {count}" in played["display"], key
        row = re.compile(rf"^\W*{re.escape(V.label(key))}\W+{count}\W*$", re.MULTILINE)
        assert row.search(played["status_text"]), key
    log = (played["run_dir"] / "run.log").read_text(encoding="utf-8")
    for host, key in states.items():
        assert f"{host}: {V.label(key)}" in log, host
