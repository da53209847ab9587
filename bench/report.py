"""Benchmark: how long and how much memory the report takes for 1,000 / 10,000 / 100,000 hosts.

A benchmark, not a test: it prints figures. For each size it fills a real journal (the real schema,
through the Journal API inside ``Journal.batch()``) with a synthetic fleet: 3 waves, 5 profiles per
host, every host state, and a retry run for the failed and unreachable hosts. It then runs the
report (frames + workbook + CSVs) in a fresh child process, so the child's peak resident memory
(``ru_maxrss`` from ``wait4``) is the report's own.

    python bench/report.py                      # 1000, 10000, 100000 hosts
    python bench/report.py --sizes 1000,5000    # other sizes
    python bench/report.py --api                # cells through XlsxWriter's API (the fallback)

Goal (issue 5): 100,000 hosts under 60 s and under 2 GB, growing linearly.

Measured on the 2-CPU development machine (load average 2-3), 2026-11-22:

    hosts   frames s  xlsx s  csv s  total s  peak MB  xlsx MB   rows (hosts+profiles+attempts)
    1,000      0.2      0.2    0.0      0.4      100      0.4     10,897
   10,000      0.7      2.0    0.4      3.0      264      4.3    109,057
  100,000      6.2     14.7    3.8     24.7    1,081     44.0  1,085,657
  (--api, XlsxWriter writing every cell: 100,000 hosts 77.3 s for the workbook alone)

With a migration batch of two mailboxes per host (issue 11: read, status, the Mailboxes sheets and
CSVs, inside the columns above; "mbx s" is the reading and the status), 2026-12-06, load 1.7:

    hosts   frames s  mbx s  xlsx s  csv s  total s  peak MB  mailboxes
   10,000      1.1     0.5     2.7    1.0      5.2      275     20,000
  100,000      7.1     4.2    26.0    6.7     44.0    1,115    200,000

With progress over time ("prog s": hosts and mailboxes done per run and per day, and the
Progress sheet's rows in "xlsx s") and report.html + summary.png ("html s", matplotlib's import
included), issue 11 points 4-5, 2026-12-06, load 4.2 (measured at 10,000 only; progress is a
few sorts of the host rows whatever the number of runs and days, the page lists at most 200
rows per list: both grow with the fleet at most linearly):

    hosts   frames s  mbx s  prog s  xlsx s  csv s  html s  total s  peak MB  mailboxes
   10,000      0.6     0.3     0.1     2.1    0.6     0.5      4.2      287     20,000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpuu_fleet import journal as J  # noqa: E402
from cpuu_fleet.cpuu import ProfileResult  # noqa: E402
from cpuu_fleet.journal import HostEntry, Journal  # noqa: E402

STEPS = ("connect", "preflight", "push", "run", "collect")
# State mix of a first pass over a real fleet (an assumption, for volume only).
STATE_WEIGHTS = (
    (J.SUCCEEDED, 85),
    (J.PARTIAL, 4),
    (J.FAILED, 3),
    (J.UNREACHABLE, 3),
    (J.SKIPPED, 2),
    (J.PENDING, 2),
    (J.NOT_RUN, 1),
)
PROFILE_NAMES = ("Outlook", "Outlook (2)", "Archive", "Shared mailbox", "Büro")
# What preflight records with its attempt (the report makes columns of it).
_PREFLIGHT = {
    "computer_name": "WS", "os": "Microsoft Windows 11 Enterprise 10.0.22631",
    "free_bytes": 52_345_678_901, "user": "CORP\\user", "outlook_running": False,
    "outlook_version": "16.0.17928", "staged_files": 0, "cleanup_done": False,
    "sessions": [{"user": "CORP\\user", "kind": "console", "session_id": 1}],
}  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _record_host(
    journal: Journal, run: str, host: str, state: str, rng: random.Random, t0: datetime
) -> None:
    """One host's pass, written the way the runner writes it (steps, profiles, then its row)."""
    if state == J.NOT_RUN:
        journal.set_host(run, host, state=state)
        return
    steps = STEPS[:1] if state == J.UNREACHABLE else STEPS[:4] if state == J.PENDING else STEPS
    for index, step in enumerate(steps):
        step_id = journal.start_step(run, host, step)
        last = index == len(steps) - 1
        failed = last and state in (J.UNREACHABLE, J.FAILED)
        journal.end_step(
            step_id,
            "failed" if failed else "ok",
            error_class=("unreachable" if state == J.UNREACHABLE else "cpuu") if failed else None,
            error_message="connection refused" if failed else None,
            details=_PREFLIGHT if step == "preflight" else None,
        )
    exit_code = None
    user = f"CORP\\user{host[-5:]}"
    if state in (J.SUCCEEDED, J.PARTIAL, J.FAILED):
        codes = [10, 10, 2, 10, 10]
        if state == J.PARTIAL:
            codes[rng.randrange(5)] = rng.choice((11, 6, 18, 20))
        if state == J.FAILED:
            codes = [11, 11, 9, 11, 18]
        results = [
            ProfileResult(name, code, 0, line)
            for line, (name, code) in enumerate(zip(PROFILE_NAMES, codes, strict=True), 1)
        ]
        result_file = f"{run}/hosts/{host}/CPUU_{host}.csv"
        journal.add_profiles(run, host, user, results, result_file)
        for kind, path in (("result", result_file), ("log", result_file[:-4] + ".log")):
            journal.add_file(
                run,
                host,
                kind=kind,
                remote_path="C:\\ProgramData\\cpuu-fleet\\" + path.rsplit("/", 1)[1],
                local_path=path,
                sha256="0" * 64,
                size=1234,
            )
        exit_code = 1 if state == J.SUCCEEDED else 5
    started = t0 + timedelta(seconds=rng.randrange(3600))
    journal.set_host(
        run,
        host,
        state=state,
        user=user,
        exit_code=exit_code,
        error_class="unreachable"
        if state == J.UNREACHABLE
        else ("cpuu" if state == J.FAILED else None),
        error_message="connection refused" if state in (J.UNREACHABLE, J.FAILED) else None,
        started_at=_iso(started),
        ended_at=_iso(started + timedelta(seconds=30 + rng.randrange(300))),
        attempts=1,
        result_dir=f"{run}/hosts/{host}",
    )


def fill(reports: Path, hosts: int, seed: int = 5) -> list[str]:
    """A synthetic fleet: a play over 3 waves, then a retry of its failed and unreachable hosts."""
    rng = random.Random(seed)
    journal = Journal.in_reports(reports)
    names = [f"ws-{i:06d}" for i in range(1, hosts + 1)]
    waves = ["wave1"] * (hosts // 10) + ["wave2"] * (hosts * 3 // 10)
    waves += ["wave3"] * (hosts - len(waves))
    states, weights = zip(*STATE_WEIGHTS, strict=True)
    t0 = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)
    play = journal.start_run(
        playbook="update.yml", inventory="prod.yml", mode="update", tool_version="bench"
    )
    retry_hosts = []
    with journal.batch():
        journal.add_hosts(
            play,
            [
                HostEntry(n, wave=w, batch=1 + i // 500)
                for i, (n, w) in enumerate(zip(names, waves, strict=True))
            ],
        )
        for name in names:
            state = rng.choices(states, weights)[0]
            _record_host(journal, play, name, state, rng, t0)
            if state in (J.FAILED, J.UNREACHABLE):
                retry_hosts.append(name)
    journal.finish_run(play, "completed")
    retry = journal.start_run(kind="retry", parent_run=play, playbook="update.yml", mode="update")
    wave_of = dict(zip(names, waves, strict=True))
    with journal.batch():
        journal.add_hosts(retry, [HostEntry(n, wave=wave_of[n]) for n in retry_hosts])
        for name in retry_hosts:
            state = J.SUCCEEDED if rng.random() < 0.7 else J.FAILED
            _record_host(journal, retry, name, state, rng, t0 + timedelta(hours=2))
    journal.finish_run(retry, "completed")
    journal.close()
    return [play, retry]


def write_batch_file(path: Path, hosts) -> Path:
    """A migration batch of two mailboxes per host: its user's (``CORP\\user<NNNNN>``, as
    ``_record_host`` names them) and a shared one no device is known for; 20 batches."""
    lines = ["EmailAddress,BatchName,CompleteAfter"]
    for number, host in enumerate(hosts):
        lines.append(
            f"user{host[-5:]}@corp.example,B{number % 20:02d},2026-12-{1 + number % 28:02d}"
        )
        lines.append(f"shared{number}@corp.example,B{number % 20:02d},2026-12-01")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def measure(
    reports: Path, run_ids: list[str], fast: bool, mailboxes: bool = True
) -> dict[str, float]:
    """The report's phases, timed (runs in the child process); ``mailboxes`` False: the report
    as it was before the mailbox sheets, for a like-for-like comparison with older figures."""
    from cpuu_fleet.inputs.mailboxes import load_mailboxes
    from cpuu_fleet.report import ReportResult
    from cpuu_fleet.report.csvs import write_csvs
    from cpuu_fleet.report.figures import build_figures
    from cpuu_fleet.report.frames import load_frames
    from cpuu_fleet.report.html import write_html
    from cpuu_fleet.report.mailboxes import mailbox_frames, write_mailbox_csvs
    from cpuu_fleet.report.progress import progress_frames, write_progress_csv
    from cpuu_fleet.report.workbook import write_workbook

    out = reports / "out"
    out.mkdir(exist_ok=True)
    journal = Journal.in_reports(reports)
    figures: dict[str, float] = {}
    start = time.perf_counter()
    frames = load_frames(journal, run_ids)
    figures["frames_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    tables = source = None
    if mailboxes:
        batch = write_batch_file(reports / "batch.csv", frames.hosts["host"])
        source = load_mailboxes(batch)
        tables = mailbox_frames(frames, source)
    figures["mailboxes_s"] = time.perf_counter() - mark
    figures["mailboxes"] = len(tables.mailboxes) if tables is not None else 0
    mark = time.perf_counter()
    progress = progress_frames(frames, source, tables.links if tables is not None else None)
    figures["progress_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    write_workbook(frames, out / "report.xlsx", fast=fast, mailboxes=tables, progress=progress)
    figures["workbook_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    write_csvs(frames, out)
    if tables is not None:
        write_mailbox_csvs(tables, out)
    write_progress_csv(progress, out)
    figures["csvs_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result = ReportResult(out, run_ids, {}, frames.summary, {}, frames, tables, progress)
    write_html(build_figures(result), out)
    figures["html_s"] = time.perf_counter() - mark
    figures["total_s"] = time.perf_counter() - start
    figures["xlsx_mb"] = (out / "report.xlsx").stat().st_size / 1e6
    figures["rows"] = len(frames.hosts) + len(frames.profiles) + len(frames.attempts)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--api", action="store_true", help="write cells with XlsxWriter's API")
    parser.add_argument(
        "--no-mailboxes", action="store_true", help="leave the migration batch out (as before)"
    )
    parser.add_argument("--child", nargs=2, metavar=("REPORTS", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    fast = not args.api
    if args.child:
        reports, runs = args.child
        print(json.dumps(measure(Path(reports), runs.split(","), fast, not args.no_mailboxes)))
        return

    print(f"cells written by: {'rowxml (streamed XML)' if fast else 'XlsxWriter API'}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"{'hosts':>8} {'fill s':>7} {'frames s':>8} {'mbx s':>6} {'prog s':>6} {'xlsx s':>7} "
        f"{'csv s':>6} {'html s':>6} "
        f"{'total s':>8} {'peak MB':>8} {'xlsx MB':>8} {'rows':>9} {'mailboxes':>9}"
    )
    previous: tuple[int, float] | None = None
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"bench-report-{size}-") as tmp:
            reports = Path(tmp)
            start = time.perf_counter()
            run_ids = fill(reports, size)
            filled = time.perf_counter() - start
            command = [sys.executable, __file__, "--child", str(reports), ",".join(run_ids)]
            if not fast:
                command.append("--api")
            if args.no_mailboxes:
                command.append("--no-mailboxes")
            child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            output = child.stdout.read()
            _, status, usage = os.wait4(child.pid, 0)
            if status != 0:
                raise SystemExit(f"report child failed with status {status}")
            figures = json.loads(output)
            peak_mb = usage.ru_maxrss / 1024  # Linux: kilobytes
            print(
                f"{size:>8} {filled:>7.1f} {figures['frames_s']:>8.1f} "
                f"{figures['mailboxes_s']:>6.1f} {figures['progress_s']:>6.1f} "
                f"{figures['workbook_s']:>7.1f} {figures['csvs_s']:>6.1f} "
                f"{figures['html_s']:>6.1f} {figures['total_s']:>8.1f} {peak_mb:>8.0f} "
                f"{figures['xlsx_mb']:>8.1f} {figures['rows']:>9,} {figures['mailboxes']:>9,}"
                + (
                    f"   x{figures['total_s'] / previous[1]:.1f} time for x{size / previous[0]:.0f} hosts"
                    if previous
                    else ""
                ),
                flush=True,
            )
            previous = (size, figures["total_s"])


if __name__ == "__main__":
    main()
