"""The host states a report shows, their labels, order and colours: views of the vocabulary.

Why a module of its own: the frames, the workbook, the CSVs and the terminal table need the
states keyed by *label* (the frames hold what an operator reads). Everything here is derived from
:mod:`cpuu_fleet.vocabulary`; nothing is decided here.
"""

from __future__ import annotations

from cpuu_fleet import vocabulary as V

#: The settled states, in report order (the good news first, then what needs a person).
STATE_KEYS: tuple[str, ...] = V.REPORT_STATES

LABELS: dict[str, str] = {key: V.label(key) for key in STATE_KEYS}

#: The state labels in report order (the columns of every per-wave count).
STATE_LABELS: tuple[str, ...] = tuple(LABELS[key] for key in STATE_KEYS)

#: What a run's transient states are reported as (see :func:`cpuu_fleet.vocabulary.settle`).
TRANSIENT_TO_FINAL: dict[str, str] = {
    key: V.settle(key) for key in V.BY_KEY if V.settle(key) != key
}

#: States in which nothing was attempted on the host: a later run that did not reach a host does
#: not hide what an earlier run found out about it.
UNTRIED_KEYS = V.UNTRIED_STATES

#: Hosts in these states need a person (the action list and retry.txt), in the list's order.
ACTION_LABELS: tuple[str, ...] = tuple(V.label(key) for key in V.ATTENTION_STATES)

#: Hosts in these states wait for a later collect (pending.txt).
PENDING_LABELS: tuple[str, ...] = tuple(V.label(key) for key in V.PENDING_STATES)

#: Fill and font colours (traffic lights; the same in the cells and in the chart).
COLOURS: dict[str, tuple[str, str]] = {
    V.label(key): (V.BY_KEY[key].fill, V.BY_KEY[key].font) for key in STATE_KEYS
}

#: Colours for the chart's bars (stronger than the cell fills, so small counts stay visible).
CHART_COLOURS: dict[str, str] = {V.label(key): V.BY_KEY[key].chart for key in STATE_KEYS}

#: rich styles for the terminal summary.
RICH_STYLES: dict[str, str] = {V.label(key): V.BY_KEY[key].style for key in STATE_KEYS}

#: Each state's follow-up, by label (``RUN`` stands for the run id).
FOLLOW_UPS: dict[str, str] = {V.label(key): V.BY_KEY[key].follow_up for key in STATE_KEYS}
