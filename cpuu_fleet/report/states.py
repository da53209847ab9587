"""The seven host states a report shows, their labels, order and colours.

Why a module of its own: the frames, the workbook, the CSVs and the terminal table must agree on
one vocabulary. The journal's constants are the keys; the labels are what an operator reads.
"""

from __future__ import annotations

from cpuu_fleet import journal

# Report order: the good news first, then what needs a person, then what did not happen yet.
STATE_KEYS: tuple[str, ...] = (
    journal.SUCCEEDED,
    journal.PARTIAL,
    journal.FAILED,
    journal.UNREACHABLE,
    journal.SKIPPED,
    journal.PENDING,
    journal.NOT_RUN,
)

LABELS: dict[str, str] = {
    journal.SUCCEEDED: "succeeded",
    journal.PARTIAL: "partially succeeded",
    journal.FAILED: "failed",
    journal.UNREACHABLE: "unreachable",
    journal.SKIPPED: "skipped",
    journal.PENDING: "pending",
    journal.NOT_RUN: "not run",
}

#: The state labels in report order (the columns of every per-wave count).
STATE_LABELS: tuple[str, ...] = tuple(LABELS[key] for key in STATE_KEYS)

# A run that is still going on, or whose controller died, leaves transient states behind.
# A host still "queued" never started: it was not run. A host left "running" may have run CPUU,
# but its results were never collected: that is exactly "pending" (resume asks the host).
TRANSIENT_TO_FINAL: dict[str, str] = {
    journal.QUEUED: journal.NOT_RUN,
    journal.RUNNING: journal.PENDING,
}

#: States in which nothing was attempted on the host: a later run that did not reach a host does
#: not hide what an earlier run found out about it.
UNTRIED_KEYS = frozenset({journal.QUEUED, journal.NOT_RUN})

#: Hosts in these states need a person (the action list and retry.txt).
ACTION_LABELS: tuple[str, ...] = (
    LABELS[journal.FAILED],
    LABELS[journal.UNREACHABLE],
    LABELS[journal.PARTIAL],
)

# Fill and font colours (traffic lights; the same in the cells and in the chart).
COLOURS: dict[str, tuple[str, str]] = {
    "succeeded": ("#C6EFCE", "#006100"),
    "partially succeeded": ("#FFEB9C", "#9C5700"),
    "failed": ("#FFC7CE", "#9C0006"),
    "unreachable": ("#F4B183", "#833C0B"),
    "skipped": ("#D9D9D9", "#404040"),
    "pending": ("#BDD7EE", "#1F4E78"),
    "not run": ("#EDEDED", "#7F7F7F"),
}

#: Colours for the chart's bars (stronger than the cell fills, so small counts stay visible).
CHART_COLOURS: dict[str, str] = {
    "succeeded": "#70AD47",
    "partially succeeded": "#FFC000",
    "failed": "#C00000",
    "unreachable": "#ED7D31",
    "skipped": "#A5A5A5",
    "pending": "#5B9BD5",
    "not run": "#D0CECE",
}

#: rich styles for the terminal summary.
RICH_STYLES: dict[str, str] = {
    "succeeded": "green",
    "partially succeeded": "yellow",
    "failed": "bold red",
    "unreachable": "red",
    "skipped": "dim",
    "pending": "blue",
    "not run": "dim",
}
