"""The terminal summary: the Summary sheet's per-wave table, coloured like the workbook."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from rich.table import Table

from cpuu_fleet.report import states
from cpuu_fleet.report.frames import TOTAL

if TYPE_CHECKING:
    from cpuu_fleet.report import ReportResult


def summary_table(result: ReportResult) -> Table:
    """Per wave and in total: targeted, each state, success %, profiles switched and failed."""
    return frame_table(result.summary, title=f"Report: {', '.join(result.run_ids)}")


def frame_table(summary: pd.DataFrame, *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("wave")
    table.add_column("targeted", justify="right")
    for label in states.STATE_LABELS:
        table.add_column(label, justify="right", style=states.RICH_STYLES[label])
    table.add_column("success", justify="right")
    table.add_column("profiles switched", justify="right")
    table.add_column("profiles failed", justify="right")
    last_wave = len(summary) - 2  # the row before the Total
    for index, row in enumerate(summary.itertuples(index=False, name=None)):
        record = dict(zip(summary.columns, row, strict=True))
        cells = [
            str(record["wave"]),
            f"{record['targeted']:,}",
            *(_count(record[label]) for label in states.STATE_LABELS),
            f"{record['success_pct']:.1%}",
            f"{record['profiles_switched']:,}",
            f"{record['profiles_failed']:,}",
        ]
        is_total = record["wave"] == TOTAL
        table.add_row(*cells, style="bold" if is_total else None, end_section=index == last_wave)
    return table


def _count(value: int) -> str:
    return f"{value:,}" if value else "·"
