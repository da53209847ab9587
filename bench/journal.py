"""Benchmark: the journal's own cost of a host visit, without a lab: CPU and round trips.

    python bench/journal.py                                   # SQLite, 1000 visits
    python bench/journal.py --journal postgresql://cpuu@db/cpuu --visits 200
    python bench/journal.py --visits 10000 --copy-to postgresql://cpuu@db/empty   # journal-copy

Each visit writes what a visit of preflight, push, run and collect writes (the host row's
``running``, four steps around their write-ahead rows, the run step's task name, a profile row
and a result file, the final host row) and asks what a visit asks (its earlier run step and
pending task, the collected files twice, the profile rows), inside ``Journal.deferred`` and
``Journal.visit_view`` as the runner and the visit do, with the run's lease held (so every step
row checks its fencing token). It prints the controller CPU and the journal round trips per
visit (SQLite: statements).

Measured 2026-12-06 (shared 2-CPU machine, load 6-8), writes only: SQLite 0.31-0.38 ms CPU and
13 statements a visit, as before the PostgreSQL journal (main ff1cc16: 0.31 ms); PostgreSQL on
loopback: 1.95 ms CPU (psycopg) and 8.0 round trips a visit. With the visit's questions (the
view, later the same day): SQLite 17 statements (13 writes, the view's 4 reads: 18 without it),
PostgreSQL still 8.0 round trips (the reads go with the first write-ahead row; 13 without).

``--copy-to`` (journal-copy, measured 2026-12-06, same machine, load ~1, PostgreSQL 15 on
loopback): 10,000 visits' journal (70,001 rows: 10,000 hosts, 40,000 step attempts, 10,000
profile and 10,000 file rows) copied in 0.61-0.84 s, 84,000-114,000 rows/s; 20,000 visits
(140,001 rows) in 1.01 s. The schema, the rows and the identities go in one transaction.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def visit(journal: object, run: str, host: str) -> None:
    """One visit's journal writes, as host_visit and the runner make them."""
    from cpuu_fleet.cpuu import ProfileResult

    j = journal
    j.set_host(run, host, state="running", started_at="2026-12-06T00:00:00+00:00", attempts=1)
    for step in ("preflight", "push", "run", "collect"):
        attempt = j.start_step(run, host, step)
        if step == "run":  # the questions a visit asks before its run step and in collect
            j.attempts(run, host)
            j.pending_task(host, excluding=(run,))
            j.set_host(run, host, task_name="CPUU-bench")
        if step == "collect":
            j.files(run, host)
            j.files(run, host)
            j.add_profiles(run, host, "CORP\\u", [ProfileResult("Outlook", 10, 0, 1)], "r.csv")
            j.add_file(run, host, kind="result", remote_path="C:\\r.csv", local_path="r.csv",
                       sha256="ab" * 32, size=1)  # fmt: skip
        j.end_step(attempt, "ok", details={"exit_code": 1})
    j.profiles(run, host)
    j.set_host(run, host, state="succeeded", exit_code=1, ended_at="2026-12-06T00:00:01+00:00")


def main() -> None:
    from cpuu_fleet.journal import HostEntry, Journal

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=1000)
    parser.add_argument("--journal", metavar="URL", help="a PostgreSQL journal (else SQLite)")
    parser.add_argument(
        "--copy-to",
        metavar="URL",
        help="then copy the SQLite journal into this empty PostgreSQL journal (journal-copy)"
        " and print its rows, seconds and rows/s",
    )
    args = parser.parse_args()
    if args.copy_to and args.journal:
        parser.error("--copy-to copies a SQLite journal: leave out --journal")
    location = args.journal or Path(tempfile.mkdtemp(prefix="cpuu-bench-journal-")) / "j.sqlite3"
    with Journal(location) as journal:
        run = journal.start_run()
        hosts = [f"pc-{i:05d}" for i in range(args.visits)]
        journal.add_hosts(run, [HostEntry(h) for h in hosts])
        assert journal.take_lease(run, hosts, {"pid": 0}, lambda *_: False) is None
        trips, cpu = journal.round_trips, time.process_time()
        for host in hosts:
            with journal.deferred(), journal.visit_view(host, (run,)):
                visit(journal, run, host)
        cpu, trips = time.process_time() - cpu, journal.round_trips - trips
        journal.release_lease(run)
        print(
            f"{journal.dialect}: {args.visits} visits, {cpu / args.visits * 1000:.3f} ms CPU and"
            f" {trips / args.visits:.1f} journal round trips (SQLite: statements) a visit"
        )
    if args.copy_to:
        copy(Path(location), args.copy_to)


def copy(source: Path, url: str) -> None:
    """``journal-copy`` of the journal just written: rows, wall seconds, rows per second."""
    from cpuu_fleet.journal_copy import copy_journal

    began = time.perf_counter()
    summary = copy_journal(source, url, live_lease=lambda _: None)
    seconds = time.perf_counter() - began
    rows = sum(summary.rows.values())
    print(
        f"journal-copy: {summary.line()}: {rows} rows in {seconds:.2f} s, {rows / seconds:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
