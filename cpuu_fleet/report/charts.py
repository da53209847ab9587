"""The report's charts as PNG images, drawn from the figures model (:mod:`.figures`).

Why PNG and matplotlib: a PNG is what survives being pasted into an e-mail (Outlook shows no
inline SVG) and attached as ``summary.png``; matplotlib draws it without a browser or a display
(its Agg canvas, no pyplot state) and ships its own font. It is imported when a chart is drawn:
other commands that import the report package do not pay for it.

Every label is workstation text: matplotlib's mathtext is off (a wave named ``$x$`` is shown as
written, and a stray ``$`` cannot make drawing fail), labels are cut to a readable length, and a
glyph the font lacks is drawn as a box, never an error.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from cpuu_fleet.report import states
from cpuu_fleet.report.figures import Table

#: Pixels of a chart (at 100 dpi): as wide as a laptop's e-mail pane shows without scrolling.
WIDTH, HEIGHT, DPI = 7.2, 3.6, 100
#: A category label longer than this is cut (with an ellipsis).
MAX_LABEL = 24


def summary_chart(summary: Table) -> bytes:
    """Stacked columns: one bar per wave (the total row left out), one colour per state."""
    waves = summary.rows[:-1]  # the last row is the total
    series = [
        (label, [row[label] or 0 for row in waves], states.CHART_COLOURS[label])
        for label in states.STATE_LABELS
    ]
    return _stacked(
        [str(row["wave"]) for row in waves], series, "Hosts per state, by wave", "Hosts"
    )


def progress_chart(progress: Table) -> bytes:
    """Stacked columns: one bar per run, one colour per wave (the bar's height: hosts done)."""
    groups = [column for column in progress.columns if column.kind == "int"][:-1]  # not Total
    series = [
        (column.header, [row[column.key] or 0 for row in progress.rows], None) for column in groups
    ]
    labels = [str(row["at"] or row["point"])[:16].replace("T", " ") for row in progress.rows]
    return _stacked(labels, series, progress.title + ", by wave", "Hosts done")


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _stacked(
    categories: list[str],
    series: list[tuple[str, list[Any], str | None]],
    title: str,
    y_label: str,
) -> bytes:
    """A stacked column chart as PNG bytes."""
    # Imported here: matplotlib takes a moment to load (see the module docstring).
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    with matplotlib.rc_context({"text.parse_math": False, "font.size": 9}):
        figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        positions = list(range(len(categories)))
        bottom = [0.0] * len(categories)
        for name, values, colour in series:
            heights = [float(value) for value in values]
            axes.bar(positions, heights, 0.6, bottom=bottom, label=_label(name), color=colour)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        axes.set_xticks(positions, [_label(c) for c in categories])
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(y_label)
        axes.set_title(title)
        axes.grid(axis="y", alpha=0.3)
        axes.set_axisbelow(True)
        if series:
            axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, frameon=False)
        if len(categories) > 6:
            axes.tick_params(axis="x", labelrotation=30)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Glyph ... missing from font": drawn as a box
            figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
