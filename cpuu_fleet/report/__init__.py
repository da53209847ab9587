"""The migration report: the journal as ``report.xlsx``, CSVs, ``retry.txt`` and a terminal table.

Entry points (the ``play`` command calls them when a play ends; ``cpuu-fleet report`` too):

* :func:`write_report` reads the selected runs from the journal and writes every file.
* :func:`summary_table` turns its result into a rich table for the terminal.

How it is built, one job per module: :mod:`.selection` (which runs and waves), :mod:`.reader`
(one ``read_sql`` per table), :mod:`.frames` (the rules: latest attempt per host, the seven
states, counts, action list), :mod:`.collected` (log paths, result files never parsed),
:mod:`.hints` (what to do), :mod:`.workbook` and :mod:`.sheets` (the sheets), :mod:`.rowxml`
(rows streamed as escaped XML), :mod:`.csvs` (CSVs, formula neutralising, ``retry.txt``),
:mod:`.style` (CSV dialects, time zones), :mod:`.preflight` (preflight's facts as columns),
:mod:`.summary` (the lead's model: status, causes, go/no-go; and the terminal table),
:mod:`.states` (labels and colours), :mod:`.progress` (done per run and per day),
:mod:`.figures` (the model ``report.html`` and ``report --json`` share), :mod:`.charts`
(its PNGs) and :mod:`.html` (the page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.mailboxes import MailboxInput
from cpuu_fleet.journal import Journal
from cpuu_fleet.redact import REDACTOR, Redactor
from cpuu_fleet.report.audit import audit_tables, journal_audit, write_audit
from cpuu_fleet.report.csvs import write_csvs
from cpuu_fleet.report.figures import Figures, build_figures
from cpuu_fleet.report.frames import ReportFrames, load_frames
from cpuu_fleet.report.html import write_html
from cpuu_fleet.report.mailboxes import MailboxFrames, mailbox_frames, write_mailbox_csvs
from cpuu_fleet.report.progress import Progress, progress_frames, write_progress_csv
from cpuu_fleet.report.reader import JournalReader
from cpuu_fleet.report.selection import resolve_runs
from cpuu_fleet.report.sheets import EXCEL_MAX_ROWS, SheetPart
from cpuu_fleet.report.style import DEFAULT_DIALECT, dialect, zone_name
from cpuu_fleet.report.summary import summary_table
from cpuu_fleet.report.workbook import write_workbook

__all__ = ["ReportResult", "default_out_dir", "summary_table", "write_report"]

WORKBOOK_NAME = "report.xlsx"


@dataclass
class ReportResult:
    """What a report wrote, and the per-wave summary it showed."""

    out_dir: Path
    run_ids: list[str]
    paths: dict[str, Path]
    summary: pd.DataFrame
    sheets: dict[str, list[SheetPart]] = field(default_factory=dict)
    frames: ReportFrames | None = field(default=None, repr=False)
    mailboxes: MailboxFrames | None = field(default=None, repr=False)
    progress: Progress | None = field(default=None, repr=False)
    #: What report.html shows and ``report --json`` prints (:mod:`.figures`).
    figures: Figures | None = field(default=None, repr=False)

    @property
    def workbook(self) -> Path:
        return self.paths[WORKBOOK_NAME]


def write_report(
    journal: Journal,
    run_ids: list[str],
    out_dir: Path,
    *,
    wave: str | None = None,
    max_rows: int = EXCEL_MAX_ROWS,
    redactor: Redactor = REDACTOR,
    mailboxes: MailboxInput | None = None,
    csv_dialect: str = DEFAULT_DIALECT,
    timezone: str | None = None,
) -> ReportResult:
    """Write ``report.xlsx``, ``hosts.csv``, ``profiles.csv``, ``actions.csv``, ``retry.txt``,
    ``pending.txt``, ``progress.csv``, ``report.html`` and ``summary.png``; after a play with an
    ``audit`` step also its Audit and Still on source sheets, ``audit.csv`` and
    ``still-on-source.csv`` (:mod:`.audit`).

    ``run_ids`` empty means the journal's latest run. An unknown run id, or a journal without a
    run, is an :class:`~cpuu_fleet.errors.InputError`. ``max_rows`` is Excel's row limit, made
    smaller by tests to exercise the continuation sheets. ``mailboxes`` (a batch file and device
    map, :func:`cpuu_fleet.inputs.mailboxes.load_mailboxes`) adds the Mailboxes sheets and
    ``mailboxes.csv`` (:mod:`.mailboxes`). ``csv_dialect`` is a key of
    :data:`.style.DIALECTS`; ``timezone`` an IANA zone for the local-time columns (default: the
    controller's, :mod:`.style`); either one unknown is an :class:`InputError`.

    The journal is read through a second, read-only connection: call this outside
    ``Journal.batch()``, whose writes are not committed (and so not visible) until it ends.
    """
    csv_style = dialect(csv_dialect)
    zone = zone_name(timezone)
    selected = resolve_runs(journal, run_ids)
    frames = load_frames(journal, selected, wave=wave, redactor=redactor)
    tables = mailbox_frames(frames, mailboxes) if mailboxes is not None else None
    progress = progress_frames(frames, mailboxes, tables.links if tables is not None else None)
    with JournalReader(journal) as reader:  # a play's audit step: its latest rows per host
        audited = journal_audit(reader, selected, set(frames.hosts["host"]))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        workbook = write_workbook(
            frames,
            out_dir / WORKBOOK_NAME,
            max_rows=max_rows,
            mailboxes=tables,
            progress=progress,
            extra=audit_tables(audited) if audited else (),
            zone=zone,
        )
        paths = {WORKBOOK_NAME: workbook.path, **write_csvs(frames, out_dir, csv_style, zone)}
        if tables is not None:
            paths.update(write_mailbox_csvs(tables, out_dir, csv_style))
        if audited:
            paths.update(write_audit(audited, out_dir))
        paths.update(write_progress_csv(progress, out_dir, csv_style))
        result = ReportResult(
            out_dir, selected, paths, frames.summary, workbook.sheets, frames, tables, progress
        )
        result.figures = build_figures(result)
        paths.update(write_html(result.figures, out_dir))
    except OSError as exc:
        # A full disk or a folder the operator cannot write: one line, and after a play the
        # run's own summary is still printed (the engine reports this as report_error).
        why = exc.strerror or str(exc)
        raise InputError(
            f"cannot write the report ({why})", where=exc.filename or out_dir
        ) from None
    return result


def default_out_dir(reports_dir: Path, run_ids: list[str], wave: str | None = None) -> Path:
    """``reports/<run id>/`` for one run, ``reports/report-<UTC timestamp>/`` for several.

    A report of some waves only goes one level down, into ``wave-<pattern>/``: it must not replace
    the full report the play wrote into the run's folder.
    """
    if len(run_ids) == 1:
        folder = Path(reports_dir) / run_ids[0]
    else:
        folder = Path(reports_dir) / f"report-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    if wave is not None:
        folder = folder / ("wave-" + re.sub(r"[^A-Za-z0-9._-]+", "_", wave).strip("._"))
    return folder
