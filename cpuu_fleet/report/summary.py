"""The terminal summary: the Summary sheet's numbers, one column per wave, coloured like the workbook.

Why waves as columns: a play has a handful of waves but eleven figures per wave; eleven columns do
not fit an 80-column terminal, a handful of waves do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from rich import box
from rich.table import Table
from rich.text import Text

from cpuu_fleet.redact import printable
from cpuu_fleet.report import states

if TYPE_CHECKING:
    from cpuu_fleet.report import ReportResult


def plain(text: object) -> Text:
    """Text from the journal as it is: no rich markup, and no control character reaches the
    operator's terminal (shown as its escape instead)."""
    return Text(printable(str(text)))


def summary_table(result: ReportResult) -> Table:
    """Targeted hosts, each state, success %, profiles switched and failed: per wave and in total."""
    ids = result.run_ids
    runs = ", ".join(ids) if len(ids) <= 2 else f"{len(ids)} runs, {ids[0]} … {ids[-1]}"
    return frame_table(result.summary, title=plain(f"Report: {runs}"))


def frame_table(summary: pd.DataFrame, *, title: Text | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAVY)
    table.add_column("")
    last = len(summary) - 1  # the total is the last row (a wave may be called "Total" too)
    for position, wave in enumerate(summary["wave"]):
        table.add_column(plain(wave), justify="right", style="bold" if position == last else None)

    def counts(key: str) -> list[str]:
        return [_count(int(value)) for value in summary[key]]

    table.add_row("targeted", *counts("targeted"), end_section=True)
    for label in states.STATE_LABELS:
        style = states.RICH_STYLES[label]
        table.add_row(f"[{style}]{label}[/]", *counts(label))
    table.add_row(
        "success", *(_percent(value) for value in summary["success_pct"]), end_section=True
    )
    table.add_row("profiles switched", *counts("profiles_switched"))
    table.add_row("profiles failed", *counts("profiles_failed"))
    return table


def _percent(value: float) -> str:
    """A success rate, or a dash for a wave no host of which was tried (never "0.0%")."""
    return "—" if value != value else f"{value:.1%}"  # NaN is the only value unequal to itself


def _count(value: int) -> str:
    return f"{value:,}" if value else "·"
