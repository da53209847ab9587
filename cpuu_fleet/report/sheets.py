"""Write a DataFrame as an Excel table: typed cells, frozen header, autofilter, split at the row limit.

Why not ``DataFrame.to_excel``: it writes column by column, which XlsxWriter's ``constant_memory``
mode cannot accept (rows must arrive in order), and without that mode a 100,000-host report holds
every cell of every sheet in memory until the file is closed. It also picks a cell's type from the
value, while we decide it from the column: text that comes from a workstation (a profile named
``=HYPERLINK(...)``) is always a string, never a formula or a link.

Rows are rendered a column at a time by :mod:`cpuu_fleet.report.rowxml` (fast, and escapes what
XlsxWriter would not); where that is not possible, XlsxWriter's own cell API is used, through
:func:`write_text` for every string.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from xlsxwriter.format import Format
from xlsxwriter.url import Url
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from cpuu_fleet.report import rowxml, states

#: Excel's limit: 1,048,576 rows per sheet, the header row included.
EXCEL_MAX_ROWS = 1_048_576
#: Excel's limit on the characters in one cell.
EXCEL_MAX_CHARS = 32_767
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_DAY = pd.Timedelta(days=1)

TEXT, INT, NUMBER, DATE, DURATION, PERCENT = "text", "int", "number", "date", "duration", "percent"
#: A text column whose cells also link to the file or folder they name (:func:`link_targets`).
LINK = "link"
#: Excel's limit on hyperlinks per worksheet; cells past it keep their text without a link.
EXCEL_MAX_LINKS = 65_530
#: Excel's limit on a link's length.
EXCEL_MAX_URL = 2_079
# A character that makes a path no link of ours: a drive or scheme (":"), an anchor or an escape
# Excel would decode ("#", "%"), wildcards and quotes, control characters.
_UNSAFE_IN_LINK = re.compile(r'[:#%?*"<>|\x00-\x1f\x7f]')


@dataclass(frozen=True)
class Column:
    """One column of a sheet: where its values come from, its header, its type and its width."""

    key: str
    header: str
    kind: str = TEXT
    width: float = 12


@dataclass(frozen=True)
class SheetPart:
    """One worksheet a table was written to (several when it passed the row limit)."""

    name: str
    first_row: int  # 0-based index of its first data row in the frame
    rows: int


@dataclass(frozen=True)
class LinkBase:
    """Where link columns point from: the reports folder they must stay in (``root``, where the
    journal records collected files relative to) and the workbook's folder (``here``)."""

    root: Path
    here: Path


def link_targets(paths: pd.Series, base: LinkBase) -> list[str | None]:
    """Each path (relative to ``base.root``, as the journal records it) as a link relative to the
    workbook, or None where it must not be a link.

    A path comes partly from a workstation (a log's file name): it becomes a link only when it
    stays inside the reports folder by its text alone (no absolute path, no drive, no ``..``)
    and holds no character a link would read otherwise (:data:`_UNSAFE_IN_LINK`); anything else
    keeps its text without a link. Computed once per distinct path, by list arithmetic on the
    path's parts (no ``os.path`` call per path: a fleet has 100,000 of them)."""
    root, here = base.root.resolve(), base.here.resolve()
    if here.is_relative_to(root):
        down = list(here.relative_to(root).parts)  # the workbook's folder below the root
        up: list[str] = []
    else:
        down, up = [], posixpath.relpath(root.as_posix(), here.as_posix()).split("/")
    found: dict[object, str | None] = {}
    out: list[str | None] = []
    for value in paths.astype(object).tolist():
        if value not in found:
            found[value] = _link_target(value, down, up)
        out.append(found[value])
    return out


def _link_target(value: object, down: list[str], up: list[str]) -> str | None:
    """``value``'s parts relative to the workbook's folder (``down`` below the root, or the
    root at ``up`` from it)."""
    if not isinstance(value, str) or not value or _UNSAFE_IN_LINK.search(value):
        return None
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or any(part in ("", ".", "..") for part in parts):
        return None
    shared = 0
    while shared < min(len(down), len(parts) - 1) and parts[shared] == down[shared]:
        shared += 1
    target = "/".join(up + [".."] * (len(down) - shared) + parts[shared:])
    return target if len(target) <= EXCEL_MAX_URL else None


def _url(target: str, text: str) -> Url:
    """The hyperlink XlsxWriter writes for a relative file link shown as ``text``."""
    url = Url("external:" + target)
    url.text = text
    return url


class Formats:
    """The workbook's cell formats, made once (XlsxWriter wants one object per distinct format)."""

    def __init__(self, book: Workbook):
        self.header = book.add_format(
            {"bold": True, "text_wrap": True, "valign": "top", "bg_color": "#DDEBF7", "border": 1}
        )
        self.title = book.add_format({"bold": True, "font_size": 14})
        self.text = book.add_format({"valign": "top"})
        self.date = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss", "valign": "top"})
        # For a date in a wide merged cell: right-aligned, it would sit far from its label.
        self.date_left = book.add_format(
            {"num_format": "yyyy-mm-dd hh:mm:ss", "valign": "top", "align": "left"}
        )
        self.duration = book.add_format({"num_format": "[h]:mm:ss", "valign": "top"})
        self.percent = book.add_format({"num_format": "0.0%", "valign": "top"})
        self.int = book.add_format({"num_format": "0", "valign": "top"})
        self.number = book.add_format({"num_format": "0.###", "valign": "top"})
        self.total = book.add_format({"bold": True, "top": 1})
        self.link = book.add_format({"font_color": "blue", "underline": 1, "valign": "top"})
        self.wrap = book.add_format({"valign": "top", "text_wrap": True})
        self.go = book.add_format({"bold": True, "bg_color": "#C6EFCE", "font_color": "#006100"})
        self.no_go = book.add_format({"bold": True, "bg_color": "#FFC7CE", "font_color": "#9C0006"})
        self.total_percent = book.add_format({"bold": True, "top": 1, "num_format": "0.0%"})
        self.states = {
            label: book.add_format({"bg_color": fill, "font_color": font})
            for label, (fill, font) in states.COLOURS.items()
        }
        self.state_headers = {
            label: book.add_format(
                {
                    "bold": True,
                    "text_wrap": True,
                    "valign": "top",
                    "border": 1,
                    "bg_color": fill,
                    "font_color": font,
                }
            )
            for label, (fill, font) in states.COLOURS.items()
        }

    def for_kind(self, kind: str) -> Format:
        return {
            TEXT: self.text,
            LINK: self.link,
            INT: self.int,
            NUMBER: self.number,
            DATE: self.date,
            DURATION: self.duration,
            PERCENT: self.percent,
        }[kind]


def cell_values(series: pd.Series, kind: str) -> list:
    """A column as Python values ready for XlsxWriter; ``None`` where the cell stays empty."""
    if kind in (TEXT, LINK):
        text = series.astype(object)
        present = text.notna() & (text != "")
        text = text.where(present, None)
        values = text[present].astype(str)
        values = values.where(
            values.str.len() <= EXCEL_MAX_CHARS, values.str.slice(0, EXCEL_MAX_CHARS)
        )
        text[present] = values
        return text.tolist()
    numbers = excel_numbers(series, kind).astype("float64")
    finite = np.isfinite(numbers.to_numpy())
    out = numbers.astype(object)
    out[~finite] = None
    if kind == INT:
        out[finite] = numbers[finite].astype("int64").astype(object)
    return out.tolist()


def excel_numbers(series: pd.Series, kind: str) -> pd.Series:
    """A numeric column as the float64 Excel stores: dates as serial days, durations as days."""
    if kind == DATE:
        return (series - _EXCEL_EPOCH) / _DAY
    if kind == DURATION:
        return pd.to_numeric(series, errors="coerce") / 86_400
    return pd.to_numeric(series, errors="coerce").astype("float64")


def write_text(
    sheet: Worksheet, row: int, col: int, text: str, cell_format: Format | None = None
) -> None:
    """Write a string that is shown literally, whatever it looks like.

    ``strings_to_formulas=False`` already keeps ``=...`` a string. But XlsxWriter passes any
    ``<r>...</r>`` string through unescaped as a pre-built rich string (an XML and formula
    injection); such a string is written as a rich string of three plain fragments instead (the
    fewest XlsxWriter accepts), which it escapes and Excel shows as the same text.
    """
    if text.startswith("<r>") and text.endswith("</r>"):
        fragments = (text[:1], text[1:2], text[2:])
        if cell_format is None:
            sheet.write_rich_string(row, col, *fragments)
        else:
            sheet.write_rich_string(row, col, *fragments, cell_format)
    else:
        sheet.write_string(row, col, text, cell_format)


def sheet_names(base: str, rows: int, max_rows: int) -> list[SheetPart]:
    """How a table of ``rows`` data rows spreads over sheets of ``max_rows`` rows (header included)."""
    per_sheet = max_rows - 1
    if per_sheet < 1:
        raise ValueError("max_rows must leave room for a header and one row")
    parts = []
    for index, first in enumerate(range(0, max(rows, 1), per_sheet)):
        name = base if index == 0 else f"{base} ({index + 1})"
        parts.append(SheetPart(name, first, min(per_sheet, rows - first)))
    return parts


def write_table(
    book: Workbook,
    formats: Formats,
    base_name: str,
    frame: pd.DataFrame,
    columns: Sequence[Column],
    *,
    max_rows: int = EXCEL_MAX_ROWS,
    state_key: str | None = "state",
    fast: bool = True,
    links: LinkBase | None = None,
) -> list[SheetPart]:
    """Write ``frame`` as one table per sheet, continued on ``<name> (2)`` etc. past ``max_rows``.

    ``fast=False`` forces XlsxWriter's cell API (the fallback; tests compare both). ``links``:
    where :data:`LINK` columns point from (without it they are plain text).
    """
    parts = sheet_names(base_name, len(frame), max_rows)
    prepared: list[list] | None = None
    targets = {
        col: link_targets(frame[column.key], links)
        for col, column in enumerate(columns)
        if column.kind == LINK and links is not None
    }
    for part in parts:
        sheet = book.add_worksheet(part.name)
        _layout(sheet, formats, columns, part.rows, state_key)
        rows = frame.iloc[part.first_row : part.first_row + part.rows]
        if fast and rowxml.supported(sheet):
            _write_fast(sheet, formats, rows, columns)
            _add_links(sheet, part, targets, rows, columns)
            continue
        if prepared is None:
            prepared = [cell_values(frame[column.key], column.kind) for column in columns]
        _write_with_api(sheet, formats, columns, prepared, part, targets)
    return parts


def _add_links(
    sheet: Worksheet,
    part: SheetPart,
    targets: dict[int, list[str | None]],
    rows: pd.DataFrame,
    columns: Sequence[Column],
) -> None:
    """Register the links of streamed link cells (their text is written already), row by row
    up to Excel's limit per sheet, as XlsxWriter's ``write_url`` would."""
    texts = {col: cell_values(rows[columns[col].key], TEXT) for col in targets}
    for offset in range(part.rows):
        for col, column_targets in targets.items():
            target = column_targets[part.first_row + offset]
            text = texts[col][offset]
            if target is None or text is None or sheet.hlink_count >= EXCEL_MAX_LINKS:
                continue
            sheet.hlink_count += 1
            sheet.hyperlinks[offset + 1][col] = _url(target, text)


def _write_fast(sheet: Worksheet, formats: Formats, rows: pd.DataFrame, columns) -> None:
    kinds = {TEXT: "text", INT: "int", LINK: "link"}
    rowxml.write_rows(
        sheet,
        [column.header for column in columns],
        formats.header,
        [
            (
                rows[column.key]
                if column.kind in (TEXT, LINK)
                else excel_numbers(rows[column.key], column.kind),
                kinds.get(column.kind, "number"),
                formats.for_kind(column.kind),
            )
            for column in columns
        ],
    )


def _write_with_api(
    sheet: Worksheet,
    formats: Formats,
    columns,
    prepared,
    part: SheetPart,
    targets: dict[int, list[str | None]],
) -> None:
    for col, column in enumerate(columns):
        write_text(sheet, 0, col, column.header, formats.header)
    # Text cells keep the default style, as the streamed rows do (rowxml): same workbook either way.
    cells = [
        (write_text, None if column.kind == TEXT else formats.link)
        if column.kind in (TEXT, LINK)
        else (sheet.write_number, formats.for_kind(column.kind))
        for column in columns
    ]
    chunk = [values[part.first_row : part.first_row + part.rows] for values in prepared]
    for row, row_values in enumerate(zip(*chunk, strict=True), start=1):
        for col, value in enumerate(row_values):
            if value is None:
                continue
            write, cell_format = cells[col]
            target = targets[col][part.first_row + row - 1] if col in targets else None
            if target is not None and sheet.hlink_count < EXCEL_MAX_LINKS:
                sheet.write_url(row, col, _url(target, value), cell_format)
            elif write is write_text:
                write_text(sheet, row, col, value, cell_format)
            else:
                write(row, col, value, cell_format)


def print_wide(sheet: Worksheet, header_rows: int = 1) -> None:
    """Leads print the sheets: landscape, fitted to one page wide (as tall as it takes), on A4
    or Letter alike, with the header row(s) repeated on every page."""
    sheet.set_landscape()
    sheet.fit_to_pages(1, 0)
    sheet.repeat_rows(0, header_rows - 1)


def _layout(
    sheet: Worksheet, formats: Formats, columns: Sequence[Column], rows: int, state_key: str | None
) -> None:
    """Widths, frozen header row, autofilter and state colours (the cells come after)."""
    for col, column in enumerate(columns):
        sheet.set_column(col, col, column.width)
    sheet.freeze_panes(1, 0)
    last_row = max(rows, 1)
    sheet.autofilter(0, 0, last_row, len(columns) - 1)
    print_wide(sheet)
    keys = [column.key for column in columns]
    if state_key in keys and rows:
        col = keys.index(state_key)
        for label, state_format in formats.states.items():
            sheet.conditional_format(
                1,
                col,
                rows,
                col,
                {"type": "cell", "criteria": "==", "value": f'"{label}"', "format": state_format},
            )
