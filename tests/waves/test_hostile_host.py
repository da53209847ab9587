"""A hostile workstation against a real wave: bounded in disk, memory and time; no secret kept.

Each test plays one kind of hostile host with the lab (``cpuu_fleet/lab/scenarios.py``:
lying_length, endless_output, huge_log, huge_results, secret_in_log, hostile_text), runs a real
wave over pypsrp, and checks what an operator would see: the host failed with error class
``limit``, what it sent is set aside as ``<name>.partial`` and never journalled, nothing on the
controller's disk is larger than the limit, the controller's memory stays flat, no secret is kept
in any encoding, and no control character reaches ``status``, ``run.log`` or ``hosts.csv``.
The limits are set low in the playbooks (``limits:``) so the sizes stay small for CI.
"""

from __future__ import annotations

import csv
import hashlib
import tracemalloc
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from cpuu_fleet import journal as states
from cpuu_fleet.cli import app
from cpuu_fleet.inputs.playbook import Playbook, load_playbook
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.scenarios import HOSTILE_USER
from cpuu_fleet.redact import FILE_ENCODINGS, MASK
from tests.support.waves import host_row as _host_row
from tests.support.waves import make_playbook

MIB = 1024 * 1024
LIVE = ("\x1b", "\x9b", "\u202e", "\u2066")
"""Characters that must never reach a terminal, a log line or a CSV cell as they are."""


def _limited(wave: Any, **limits: Any) -> Playbook:
    """The usual test playbook with a ``limits:`` mapping, written and loaded as an operator's."""
    path = make_playbook(wave.payload, retries=0).path
    plays = yaml.safe_load(path.read_text(encoding="utf-8"))
    plays[0]["limits"] = limits
    path.write_text(yaml.safe_dump(plays, sort_keys=False), encoding="utf-8")
    return load_playbook(path)


def _measured(wave: Any, playbook: Playbook) -> tuple[Any, int]:
    """Run the wave (not the workbook: a report's own peak says nothing of the host) under
    tracemalloc; the peak counts the controller and the lab, which share this process."""
    tracemalloc.start()
    try:
        result = wave.run(playbook, write_report=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_host_that_sends_more_than_it_announced_is_stopped_at_the_length(wave_factory):
    wave = wave_factory(1, "lying_length")
    host = wave.fleet.hosts[0].name
    result, peak = _measured(wave, _limited(wave, file_size="1 MiB", step_time=60))
    assert peak < 16 * MIB, peak  # a healthy wave's peak is about 7 MiB; the host never stops
    row, files = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "limit"), row
    assert "more than the" in row["error_message"] and "announced" in row["error_message"]
    host_dir = wave.reports / result.run_id / "hosts" / host
    partial = [p for p in host_dir.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1, sorted(p.name for p in host_dir.iterdir())
    # The lab's first file is CPUU's result CSV: exactly its announced bytes were written.
    fs = wave.workstation(host).fs
    (csv_path,) = [p for p in fs.walk_files("C:\\ProgramData\\cpuu-fleet") if p.endswith(".csv")]
    assert partial[0].read_bytes() == fs.read_bytes(csv_path)
    assert not [f for f in files if f["kind"] == "result"]  # never journalled, never parsed
    assert all(p.stat().st_size <= MIB for p in _files(wave.reports / result.run_id))
    assert result.exit_code == 3


def test_a_file_over_the_size_limit_is_not_downloaded(wave_factory):
    wave = wave_factory(1, "huge_log")
    host = wave.fleet.hosts[0].name
    wave.workstation(host).cpuu.log_padding_bytes = 3 * MIB  # the scenario's 80 MiB is for `lab up`
    result = wave.run(_limited(wave, file_size="1 MiB"))
    row, files = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "limit"), row
    assert "file_size" in row["error_message"] and ".log" in row["error_message"]
    assert all(p.stat().st_size <= MIB for p in _files(wave.reports / result.run_id))
    assert not [f for f in files if f["kind"] == "log"]
    # CPUU's verdict is still there for the person who looks (the result CSV came first).
    assert row["exit_code"] == 1 and "afterwards" in row["error_message"]


def test_a_result_file_with_too_many_lines_is_set_aside_unread(wave_factory):
    wave = wave_factory(1, "huge_results")
    host = wave.fleet.hosts[0].name
    wave.workstation(host).cpuu.extra_result_rows = 500
    result = wave.run(_limited(wave, result_rows=100))
    row, files = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "limit"), row
    assert "result_rows" in row["error_message"]
    with Journal.in_reports(wave.reports) as journal:
        assert journal.profiles(result.run_id, host) == []  # not one row of it journalled
    assert not [f for f in files if f["kind"] == "result"]
    host_dir = wave.reports / result.run_id / "hosts" / host
    assert len([p for p in host_dir.iterdir() if p.name.endswith(".csv.partial")]) == 1
    # The report reads journalled files only: the set-aside file adds no profile either.
    assert result.report is not None
    with (wave.reports / result.run_id / "profiles.csv").open(encoding="utf-8-sig") as stream:
        assert [r for r in csv.DictReader(stream) if r["host"] == host] == []


def test_endless_output_is_stopped_and_memory_stays_flat(wave_factory):
    wave = wave_factory(1, "endless_output")
    host = wave.fleet.hosts[0].name
    result, peak = _measured(wave, _limited(wave, output_size="2 MiB", step_time=60))
    row, _ = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "limit"), row
    assert "output_size" in row["error_message"]
    # The whole wave (controller and lab, one process) peaks at about 7 MiB, as a healthy one
    # does; the host would have sent about 6 MiB a second for the minute the step may take.
    assert peak < 16 * MIB, peak


def test_a_script_that_never_ends_is_stopped_at_the_step_time(wave_factory):
    wave = wave_factory(1, "endless_output")
    host = wave.fleet.hosts[0].name
    wave.workstation(host).scripts.download_endless_warnings = 0.2  # a trickle, under any size
    result = wave.run(_limited(wave, step_time=2))
    row, _ = _host_row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "limit"), row
    assert "step_time" in row["error_message"]


def test_a_secret_in_a_collected_log_is_masked_in_every_encoding(wave_factory):
    wave = wave_factory(4, "secret_in_log")  # UTF-8, UTF-16LE, UTF-16BE, cp1252: one per host
    secret = "Pässwört€-lab-42"  # not ASCII: UTF-8 and cp1252 differ
    result = wave.run(extra_vars={"cpuu_password": secret})
    assert set(result.summary.states.values()) == {states.SUCCEEDED}, result.summary.states
    needles = [secret.encode(encoding) for encoding in FILE_ENCODINGS]
    for path in _files(wave.reports):
        data = path.read_bytes()
        assert not [n for n in needles if n in data], path
    with Journal.in_reports(wave.reports) as journal:
        logs = [f for f in journal.files(result.run_id) if f["kind"] == "log"]
    assert len(logs) == 4
    masked = 0
    for record in logs:
        stored = (wave.reports / record["local_path"]).read_bytes()
        masked += any(MASK.encode(encoding) in stored for encoding in FILE_ENCODINGS)
        # The journal's SHA-256 is the host's file (what KnownSha256 dedupes), not the copy.
        fs = wave.workstation(record["host"]).fs
        original = fs.read_bytes(record["remote_path"])
        assert any(n in original for n in needles)  # the workstation's copy still has it
        assert record["sha256"] == hashlib.sha256(original).hexdigest()
        assert record["size"] == len(original)
    assert masked == 4


def test_control_characters_from_a_workstation_never_reach_status_log_or_csv(wave_factory):
    wave = wave_factory(1, "hostile_text")
    host = wave.fleet.hosts[0].name
    # Without a run step the failed collect is the host's verdict, so status lists the host.
    result = wave.run(
        make_playbook(wave.payload, steps=("preflight", "push", "collect")),
    )
    row, _ = _host_row(wave, result.run_id, host)
    assert row["state"] == states.FAILED and row["user"] == HOSTILE_USER
    assert "\x1b[32m succeeded" in row["error_message"]  # the journal keeps the text as sent
    status = CliRunner().invoke(app, ["status", "--reports", str(wave.reports)])
    run_log = (wave.reports / result.run_id / "run.log").read_text(encoding="utf-8")
    hosts_csv = (wave.reports / result.run_id / "hosts.csv").read_text(encoding="utf-8-sig")
    for shown in (status.output, run_log, hosts_csv):
        assert not [c for c in LIVE if c in shown], shown
    assert "\\x1b[32m succeeded" in status.output.replace("\n", "")
    assert "is denied.\\x1b[32m succeeded\\x1b[0m \\u202etxt.exe" in run_log
    (line,) = [r for r in csv.DictReader(hosts_csv.splitlines()) if r["host"] == host]
    assert line["user"] == "CORP\\ev\\x1b[2J\\x9b31m\\u202eil\\u2066"
