"""The fault matrix's bench: a lab fleet in this process, the controller as a real process.

(A module of its own, not conftest.py: every test folder's conftest is a module named
``conftest``, so importing helpers from one is fragile.)

Why this split: the promises under test ("CPUU never twice on a host for one run, nothing
collected lost, the truth in the reports") are about what happens when the *controller* dies, so
the controller is a real ``cpuu-fleet play`` process that a test stops with real signals. The lab
stays alive in the test process across the controller's death, as real workstations would, and is
the witness: its launch log (one JSON line per CPUU start, written by the workstation when the
task's action starts CPUU) and its disks (every result CSV CPUU wrote), never the controller's word.

Steps are found by polling the controller's journal read-only (``attempts`` rows whose status is
``running``) and the launch log. The lab's latency and CPUU's set run time stretch each step long
enough to be hit: see the constants below.

The module's table (case, signal, step, CPUU starts per host, final state) travels on the test
reports under :data:`ROW_PROPERTY` (see ``conftest.py``) and is printed by :func:`render_table`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cpuu_fleet.cli.demo_lab import (
    DEMO_SECRETS,
    find_playbook,
    make_standin_payload,
    write_lab_inventory,
)
from cpuu_fleet.engine.planning import latest_rows
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.fleet import LabFleet

REPO = Path(__file__).resolve().parents[2]
HOSTS = 3
LATENCY_S = 0.15
"""Added to every lab request: preflight, push, the run step's start and collect each last
a few tenths of a second or more on three hosts (measured), long enough for a 10 ms poll."""
CPUU_SECONDS = 1.0
"""How long CPUU runs: the window of "run wait"."""
PAYLOAD_BYTES = 200_000
"""A small stand-in exe: push lasts a few round trips, not megabytes' worth."""
RUN_TIMEOUT_S = 30
"""The run step's deadline in the matrix's playbook (a healthy CPUU ends long before it)."""
POLL_S = 0.01
STOP_WAIT_S = 45.0
"""How long a controller may take to exit after SIGTERM or a double SIGINT (the runner's abort
grace is 30 s)."""
PROCESS_TIMEOUT_S = 120.0

STEPS = ("preflight", "push", "run start", "run wait", "collect")


@dataclass
class Observation:
    """What the journal and the launch log said at one moment: each host's phase."""

    phases: dict[str, str] = field(default_factory=dict)
    """host -> the running step (``run start`` before CPUU started, ``run wait`` after)."""

    def summary(self) -> str:
        return tally(self.phases.values())


class FaultLab:
    """One lab fleet (its own disks, inventory, launch log, reports folder) and its controller."""

    def __init__(
        self,
        root: Path,
        *,
        scenario: str = "healthy",
        hosts: int = HOSTS,
        run_timeout: int = RUN_TIMEOUT_S,
        cpuu_seconds: float = CPUU_SECONDS,
        attached: bool = True,
        journal_url: str | None = None,
    ):
        self.root = root
        self.journal_url = journal_url
        """A PostgreSQL journal (``--journal``) instead of the SQLite file in reports/."""
        self.launch_log = root / "launches.jsonl"
        self.reports = root / "reports"
        self.fleet = LabFleet(
            hosts,
            scenario=scenario,
            workdir=root / "lab",
            latency_s=LATENCY_S,
            cpuu_seconds=cpuu_seconds,
            launch_log=self.launch_log,
        )
        self.cpuu_seconds = cpuu_seconds
        self.playbook = self._write_playbook(run_timeout, attached)
        self.inventory: Path | None = None
        self.env: dict[str, str] = {}
        self._procs: list[subprocess.Popen[str]] = []

    def _write_playbook(self, run_timeout: int, attached: bool) -> Path:
        """The shipped ``playbooks/update.yml`` with what a lab needs: the stand-in payload and
        the templates by absolute path (``--resume`` finds them from any folder), one batch, no
        failure threshold, a short backoff, the given run deadline, attached or detached."""
        payload = make_standin_payload(self.root / "payload", size=PAYLOAD_BYTES)
        (play,) = yaml.safe_load(find_playbook().read_text(encoding="utf-8"))
        play.pop("serial", None)
        play.update(
            payload=str(payload),
            templates=str(find_playbook().parent / "templates"),
            max_fail_percentage=100,
            retry_backoff=0.2,
        )
        for step in play["steps"]:
            if isinstance(step, dict) and "run" in step:
                step["run"]["timeout"] = run_timeout
                step["run"]["attached"] = attached
                if not attached:  # the lab's CPUU time is known: no canary round to learn it
                    step["run"]["expected_seconds"] = max(1, round(self.cpuu_seconds))
        path = self.root / "update.yml"
        path.write_text(yaml.safe_dump([play], sort_keys=False), encoding="utf-8")
        return path

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FaultLab:
        self.fleet.start()
        self.inventory = write_lab_inventory(self.fleet, self.root / "inventory.yml", waves=1)
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **self.fleet.env, **DEMO_SECRETS}
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:  # never leave a controller behind, whatever failed
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        self.fleet.stop()

    # -- the controller ------------------------------------------------------------------

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``cpuu-fleet ARGS --reports DIR`` as its own process (own process group: a signal
        for it never reaches pytest)."""
        journal = ["--journal", self.journal_url] if self.journal_url else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "cpuu_fleet", *args, "--reports", str(self.reports), *journal],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def start_play(self) -> subprocess.Popen[str]:
        return self.start("play", str(self.playbook), "-i", str(self.inventory))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.start(*args)
        out, _ = proc.communicate(timeout=PROCESS_TIMEOUT_S)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def play(self) -> subprocess.CompletedProcess[str]:
        return self.run("play", str(self.playbook), "-i", str(self.inventory))

    def two_plays(
        self,
    ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        """Two ``play``s of the same wave, the second 0.5 s after the first, each waited for:
        the race a second controller makes."""
        first = self.start_play()
        time.sleep(0.5)
        second = self.start_play()
        second_out, _ = second.communicate(timeout=120)
        first_out, _ = first.communicate(timeout=120)
        return (
            subprocess.CompletedProcess(first.args, first.returncode, first_out, ""),
            subprocess.CompletedProcess(second.args, second.returncode, second_out, ""),
        )

    def resume(self, run_id: str) -> subprocess.CompletedProcess[str]:
        return self.run("play", "--resume", run_id)

    def killed_in_run_step(self) -> str:
        """A play killed with SIGKILL while CPUU runs on a host (its run step left open); the
        run's id."""
        proc = self.start_play()
        assert self.wait_in_step(proc, "run wait") is not None, "never reached the run step"
        assert stop(proc, "SIGKILL") is not None
        (run_id,) = self.run_ids()
        return run_id

    def assert_resumed_once(self, run_id: str) -> None:
        """``--resume RUN`` settles every host: CPUU started once on each (the launch log),
        each succeeded, no result file lost."""
        resumed = self.resume(run_id)
        assert resumed.returncode in (0, 3), resumed.stdout[-3000:]
        assert set(self.start_counts().values()) == {1}, self.start_counts()
        states = {host: row["state"] for host, row in self.final_rows(run_id).items()}
        assert set(states.values()) == {"succeeded"}, states
        assert self.lost_results() == []

    # -- what the lab saw --------------------------------------------------------------

    def launches(self) -> list[dict[str, Any]]:
        """The launch log as another process reads it (one JSON object per line)."""
        if not self.launch_log.exists():
            return []
        text = self.launch_log.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def open_shells(self) -> dict[str, int]:
        """Shells (Windows: a wsmprovhost each) still open per host, where there are any."""
        counts = {h.name: len(h.endpoint.dispatcher.shells) for h in self.fleet.hosts}
        return {name: count for name, count in counts.items() if count}

    def start_counts(self) -> dict[str, int]:
        """CPUU starts per host, from the launch log (0 where CPUU never started)."""
        counts = Counter(entry["host"] for entry in self.launches())
        return {host.name: counts.get(host.name, 0) for host in self.fleet.hosts}

    def lab_result_files(self) -> dict[str, str]:
        """Every result CSV a workstation's CPUU wrote: sha256 -> the host's sandbox path."""
        found = {}
        for path in sorted((self.fleet.workdir / "hosts").rglob("CPUU_*.csv")):
            found[hashlib.sha256(path.read_bytes()).hexdigest()] = str(path)
        return found

    # -- what the controller wrote ------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the journal read-only while a controller may be writing it."""
        if self.journal_url:
            return self._query_postgresql(sql, params)
        path = self.reports / Journal.FILENAME
        if not path.exists():
            return []
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.Error:
            return []  # not created yet, or caught between two writes: ask again

    def _query_postgresql(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            with psycopg.connect(self.journal_url, autocommit=True, connect_timeout=5) as db:
                return db.execute(sql.replace("?", "%s"), params or None).fetchall()
        except psycopg.Error:
            return []  # not created yet: ask again

    def run_ids(self) -> list[str]:
        """The journal's runs, oldest first."""
        return [row[0] for row in self._query("SELECT run_id FROM runs ORDER BY started_at")]

    def observe(self) -> Observation:
        """Each host's running step now; the run step split by the launch log."""
        launched = {entry["host"] for entry in self.launches()}
        rows = self._query("SELECT host, step FROM attempts WHERE status = 'running' ORDER BY id")
        phases = {}
        for host, step in rows:
            if step == "run":
                step = "run wait" if host in launched else "run start"
            phases[host] = step
        return Observation(phases)

    def wait_for(
        self, proc: subprocess.Popen[str], predicate: Callable[[Observation], bool]
    ) -> Observation | None:
        """Poll until ``predicate`` holds (the observation then) or the controller exits (None)."""
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            seen = self.observe()
            if predicate(seen):
                return seen
            time.sleep(POLL_S)
        return None

    def wait_in_step(self, proc: subprocess.Popen[str], step: str) -> Observation | None:
        return self.wait_for(proc, lambda seen: step in seen.phases.values())

    def final_rows(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Each host's latest row across RUN and its resumes/retries."""
        with Journal.in_reports(self.reports, self.journal_url) as journal:
            return latest_rows(journal, run_id)

    def collected(self) -> dict[str, list[str]]:
        """Result files in the journal (any run): sha256 -> local paths that exist and match."""
        rows = self._query("SELECT sha256, local_path FROM files WHERE kind = 'result'")
        found: dict[str, list[str]] = {}
        for sha, local in rows:
            path = self.reports / local
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha:
                found.setdefault(sha, []).append(local)
        return found

    def lost_results(self) -> list[str]:
        """Result CSVs a workstation's CPUU wrote that are not in the reports and the journal."""
        collected = self.collected()
        return [path for sha, path in self.lab_result_files().items() if sha not in collected]


def stop(proc: subprocess.Popen[str], how: str) -> int | None:
    """Stop the controller as an operator or the system would; its exit code, None if it hung."""
    if how == "SIGKILL":
        proc.kill()
    elif how == "SIGTERM":
        proc.terminate()
    else:  # the documented double Ctrl-C: drain, then abort
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)
        return None
    return proc.returncode


# ---------------------------------------------------------------------------- the table

COLUMNS = ("case", "signal", "step", "hit (host phases)", "CPUU starts", "final state", "verdict")


@dataclass
class MatrixRow:
    case: str
    signal: str = "-"
    step: str = "-"
    hit: str = "-"
    starts: str = "-"
    final: str = "-"
    verdict: str = "ok"

    def cells(self) -> tuple[str, ...]:
        return (self.case, self.signal, self.step, self.hit, self.starts, self.final, self.verdict)


ROW_PROPERTY = "fault_matrix_row"
"""The user property that carries a case's row (its cells) from the worker to the summary."""


def starts_cell(counts: dict[str, int]) -> str:
    return " ".join(f"{host}:{n}" for host, n in sorted(counts.items()))


def tally(values: Iterable[str]) -> str:
    """``succeeded×2, failed×1``: how many of each, in name order."""
    counts = Counter(values)
    return ", ".join(f"{value}×{n}" for value, n in sorted(counts.items())) or "-"


def states_cell(states: dict[str, str]) -> str:
    return tally(states.values())


def render_table(rows: Iterable[tuple[str, ...]]) -> str:
    """The table of rows' cells under :data:`COLUMNS`, columns padded to their widest cell."""
    cells = [COLUMNS, *rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
