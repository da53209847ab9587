"""``report.html`` and ``summary.png``: the report a lead opens, or pastes into a status e-mail.

Drawn from the figures model (:mod:`.figures`), which ``report --json`` prints, so the page and
the JSON always agree. Choices, and why:

* **One self-contained file**: no script, no external style sheet, font or image; the charts are
  PNGs inside the page (``data:`` URIs). It opens offline, from a share or an attachment, and a
  Content-Security-Policy allows nothing else to load even if a viewer tried.
* **Inline styles on every element and plain tables**: e-mail clients drop ``<style>`` blocks
  and ignore CSS layout; what is pasted keeps its look. Fonts are the ones Windows has.
* **Hostile text**: everything a workstation wrote (profile names, users, waves, errors) is
  data: Jinja2 escapes every value (autoescape), the model already made it printable, and the
  page holds no link at all (an e-mail client may still underline a written address as text).
  A table pasted into a spreadsheet is a formula risk too (LibreOffice computes a pasted
  ``=1+1``, and ignores Excel's ``mso-number-format``), so a text cell that starts like a
  formula is shown with a leading ``'``, by the CSVs' rule (:mod:`.csvs`); the JSON keeps the
  text as it is.
* **Bounded**: lists of hosts or mailboxes stop at :data:`cpuu_fleet.report.figures.MAX_LISTED`
  rows and say how many more the workbook has.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from cpuu_fleet.report import states
from cpuu_fleet.report.charts import progress_chart, summary_chart
from cpuu_fleet.report.csvs import FORMULA_TRIGGERS
from cpuu_fleet.report.figures import PROGRESS_CHART, SUMMARY_CHART, Figures, Table
from cpuu_fleet.report.sheets import DATE, INT, PERCENT

HTML_NAME = "report.html"
SUMMARY_PNG = "summary.png"

#: The chart drawn above each table that has one (by the table's key).
CHARTS = {SUMMARY_CHART: summary_chart, PROGRESS_CHART: progress_chart}
#: Tables whose last row is their total (shown bold).
TOTAL_ROWS = frozenset({"summary", "batches"})
#: Short names kept on one line (a host name broken in two is misread); prose columns wrap.
NO_WRAP = frozenset({"wave", "host", "state", "batch", "run_id", "point", "worst_device"})

_CELL = "padding:3px 8px;border:1px solid #c8ced6;vertical-align:top;text-align:left"
_NUMBER = "padding:3px 8px;border:1px solid #c8ced6;vertical-align:top;text-align:right"
_HEAD = "background:#DDEBF7;color:#1f1f1f;font-weight:bold"

_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" \
content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ figures.title }}</title>
</head>
<body style="margin:0;padding:16px;background:#ffffff;color:#1f1f1f;\
font-family:'Segoe UI',Calibri,Arial,sans-serif;font-size:14px">
<h1 style="font-size:20px;margin:0 0 4px 0">{{ figures.title }}</h1>
<p style="margin:0 0 12px 0;color:#555555">Generated {{ generated }} (UTC).\
 The workbook report.xlsx beside this file has every host, profile and attempt.</p>
{% for line in figures.lines %}\
<p style="margin:4px 0;font-size:15px"><b>{{ line }}</b></p>
{% endfor %}\
{% for table in tables %}
<h2 style="font-size:16px;margin:20px 0 6px 0">{{ table.title }}</h2>
{% if table.chart %}\
<img id="chart-{{ table.key }}" src="{{ table.chart }}" width="{{ table.chart_width }}" \
alt="{{ table.title }} (chart)" style="display:block;border:0;max-width:100%;height:auto;margin:0 0 8px 0">
{% endif %}\
<table id="table-{{ table.key }}" cellspacing="0" cellpadding="0" \
style="border-collapse:collapse;font-size:13px;margin:0 0 4px 0">
<thead><tr>{% for cell in table.header %}<th style="{{ cell.style }}">{{ cell.text }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}\
<tr>{% for cell in row %}<td style="{{ cell.style }}">{{ cell.text }}</td>{% endfor %}</tr>
{% endfor %}\
</tbody>
</table>
{% if table.left_out %}\
<p style="margin:2px 0;color:#555555">… and {{ "{:,}".format(table.left_out) }} more in report.xlsx.</p>
{% endif %}\
{% if table.note %}<p style="margin:2px 0;color:#555555">{{ table.note }}</p>
{% endif %}\
{% endfor %}
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


@dataclass
class Cell:
    text: str
    style: str


def write_html(figures: Figures, out_dir: Path) -> dict[str, Path]:
    """``report.html`` (and ``summary.png``, the chart of the summary) from the figures model."""
    images = {
        table.key: CHARTS[table.key](table) for table in figures.tables if table.key in CHARTS
    }
    paths: dict[str, Path] = {}
    if SUMMARY_CHART in images:
        png = out_dir / SUMMARY_PNG
        png.write_bytes(images[SUMMARY_CHART])
        paths[SUMMARY_PNG] = png
    page = render_html(figures, images)
    html = out_dir / HTML_NAME
    html.write_text(page, encoding="utf-8")
    paths[HTML_NAME] = html
    return paths


def render_html(figures: Figures, images: dict[str, bytes]) -> str:
    """The page as text: every value escaped by Jinja2, each chart a PNG ``data:`` URI."""
    tables = [_view(table, images.get(table.key)) for table in figures.tables]
    generated = (figures.generated_at or "").replace("T", " ").rstrip("Z")
    return _ENV.from_string(_TEMPLATE).render(figures=figures, tables=tables, generated=generated)


def _view(table: Table, png: bytes | None) -> dict[str, Any]:
    """A table ready for the template: header and cells as text with their inline style."""
    header = [Cell(c.header, _CELL + ";" + _header_colour(c.key)) for c in table.columns]
    rows = []
    last = len(table.rows) - 1
    for index, row in enumerate(table.rows):
        bold = ";font-weight:bold" if table.key in TOTAL_ROWS and index == last else ""
        rows.append(
            [
                Cell(_text(row[c.key], c.kind), _cell_style(c.kind, c.key, row[c.key]) + bold)
                for c in table.columns
            ]
        )
    chart = None
    if png is not None:
        chart = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {
        "key": table.key,
        "title": table.title,
        "chart": chart,
        "chart_width": 720,
        "header": header,
        "rows": rows,
        "left_out": table.left_out,
        "note": table.note,
    }


def _header_colour(key: str) -> str:
    """A state's column header in the state's colours (as on the Summary sheet)."""
    if key in states.COLOURS:
        fill, font = states.COLOURS[key]
        return f"background:{fill};color:{font};font-weight:bold"
    return _HEAD


def _cell_style(kind: str, key: str, value: Any) -> str:
    """Numbers to the right; short names on one line; a host's state in its colours."""
    if kind in (INT, PERCENT):
        return _NUMBER
    style = _CELL + (";white-space:nowrap" if key in NO_WRAP else "")
    if key == "state" and value in states.COLOURS:
        fill, font = states.COLOURS[value]
        return f"{style};background:{fill};color:{font}"
    return style


def _text(value: Any, kind: str) -> str:
    """A value as a person reads it: thousands separated, a rate in %, a time without its T,
    text that looks like a formula behind a ``'`` (see the module docstring)."""
    if value is None:
        return "—" if kind == PERCENT else ""
    if kind == INT:
        return f"{value:,}"
    if kind == PERCENT:
        return f"{value:.1%}"
    if kind == DATE:
        return str(value).replace("T", " ").rstrip("Z")
    text = str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text  # never a formula pasted
