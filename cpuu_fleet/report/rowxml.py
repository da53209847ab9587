"""Sheet rows rendered as SpreadsheetML text, a whole column at a time.

Why this exists (both measured; see bench/report.py and tests/report/test_workbook.py):

* **Speed.** XlsxWriter spends about 5 µs per cell in Python. A 100,000-host report has some 13
  million cells: over a minute on the workbook alone. Rendering the ``<c>`` elements of a whole
  column with pandas string operations costs well under a microsecond per cell.
* **Safety.** XlsxWriter writes any string of the form ``<r>...</r>`` *unescaped*, as a pre-built
  rich string. A workstation's profile named ``<r>...</r></is></c><c><f>HYPERLINK(...)</f></c>...``
  would inject a live formula, whatever ``strings_to_formulas`` says. Here every text is escaped,
  always.

How it plugs in: in ``constant_memory`` mode XlsxWriter streams a worksheet's rows to a temporary
file (``Worksheet.row_data_fh``) and copies that file into ``<sheetData>`` when the workbook
closes. We append our rows to that file and declare the used range with
``Worksheet._check_dimensions``; cell styles come from ``Format._get_xf_index``. Those three are
XlsxWriter internals (stable since its first releases): :func:`supported` checks them, and the
caller falls back to XlsxWriter's own cell API when they are missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from xlsxwriter.format import Format
from xlsxwriter.utility import xl_col_to_name
from xlsxwriter.worksheet import Worksheet

#: Excel's limit on the characters in one cell.
EXCEL_MAX_CHARS = 32_767

#: Rows rendered per string join: bounds the memory of the rendered XML.
CHUNK_ROWS = 50_000

_ESCAPED_ESCAPE = re.compile(r"(_x[0-9A-Fa-f]{4}_)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\ufffe\uffff]")
# Joins a column's texts so escaping runs once over one long string, in C. A private-use
# character: escaping never produces it, and a text holding it is escaped on its own.
_SEPARATOR = "\ue000"


def supported(sheet: Worksheet) -> bool:
    """Can rows be streamed into this worksheet's ``constant_memory`` temporary file?"""
    return (
        bool(getattr(sheet, "constant_memory", False))
        and getattr(sheet, "row_data_fh", None) is not None
        and hasattr(sheet, "_check_dimensions")
        and hasattr(Format, "_get_xf_index")
    )


def escape(text: str) -> str:
    """XML-escape one text so Excel reads it back literally.

    ``&``, ``<``, ``>`` become entities; control characters (illegal in XML) become Excel's
    ``_xHHHH_`` escapes, and a literal ``_xHHHH_`` is protected as ``_x005F_xHHHH_`` so Excel does
    not decode it.
    """
    if "_x" in text:
        text = _ESCAPED_ESCAPE.sub(r"_x005F\1", text)
    if _CONTROL.search(text):
        text = _CONTROL.sub(lambda match: f"_x{ord(match.group(0)):04X}_", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_all(texts: list[str]) -> list[str]:
    """:func:`escape` for many texts at once (one pass over their join)."""
    if not texts:
        return []
    joined = _SEPARATOR.join(texts)
    if joined.count(_SEPARATOR) != len(texts) - 1:
        return [escape(text) for text in texts]
    return escape(joined).split(_SEPARATOR)


def _rich_lookalike(text: str) -> bool:
    """XlsxWriter copies such a string into the shared-string table unescaped: keep it inline."""
    return text.startswith("<r>") and text.endswith("</r>")


def _inline(text: str) -> str:
    """The inside of an inline-string cell: ``<is><t>`` with whitespace kept where it matters."""
    space = ' xml:space="preserve"' if text[:1].isspace() or text[-1:].isspace() else ""
    return f"<is><t{space}>{text}</t></is></c>"


def _text_cells(
    sheet: Worksheet, values: pd.Series, letter: str, first: int, style: int | None = None
) -> list[str]:
    """String cells; an empty string where the value is missing or empty.

    A column that repeats itself (states, waves, code names, hints) goes through the workbook's
    shared-string table, so each distinct text is written once; other texts are written inline.
    The default cell style is used (text needs no number format) unless ``style`` is given (the
    hyperlink style of a link column).
    """
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    count = len(codes)
    cells = [""] * count
    if not len(uniques):
        return cells
    texts = [str(text)[:EXCEL_MAX_CHARS] for text in uniques.tolist()]
    head = f'<c r="{letter}'
    styled = "" if style is None else f' s="{style}"'
    present = codes >= 0
    shared = len(texts) <= count // 2 and sheet.str_table is not None
    if shared:
        table = sheet.str_table
        index = [
            -1 if not text or _rich_lookalike(text) else table._get_shared_string_index(text)
            for text in texts
        ]
        table.count += int(present.sum()) - sum(1 for i in index if i >= 0)
        mapped = np.asarray(index)[np.where(present, codes, 0)]
        for row in np.flatnonzero(present & (mapped >= 0)).tolist():
            cells[row] = f'{head}{first + row}"{styled} t="s"><v>{mapped[row]}</v></c>'
        inline = present & (mapped < 0)
    else:
        inline = present
    escaped = escape_all(texts)
    for row in np.flatnonzero(inline).tolist():
        text = escaped[codes[row]]
        if text:
            cells[row] = f'{head}{first + row}"{styled} t="inlineStr">{_inline(text)}'
    return cells


def _number_cells(
    values: pd.Series, letter: str, first: int, style: int, integer: bool
) -> list[str]:
    """``<c><v>`` elements (no cell for NaN); integers without a decimal point."""
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    present = np.isfinite(numbers)
    index = np.flatnonzero(present).tolist()
    chosen = numbers[present]
    texts = (
        [str(v) for v in chosen.astype("int64").tolist()]
        if integer
        else [repr(v) for v in chosen.tolist()]
    )
    cells = [""] * len(numbers)
    head = f'<c r="{letter}'
    tail = f'" s="{style}"><v>'
    for i, text in zip(index, texts, strict=True):
        cells[i] = f"{head}{first + i}{tail}{text}</v></c>"
    return cells


def write_rows(
    sheet: Worksheet,
    header: Sequence[str],
    header_style: Format,
    columns: Sequence[tuple[pd.Series, str, Format]],
) -> None:
    """Stream a header row and data rows into ``sheet``.

    ``columns`` holds, per column: its values (already Excel numbers for dates and durations),
    ``"text"`` / ``"link"`` (text in its cell format) / ``"int"`` / ``"number"``, and its cell
    format.
    """
    handle = sheet.row_data_fh
    letters = [xl_col_to_name(col) for col in range(len(header))]
    head_style = header_style._get_xf_index()
    head = "".join(
        f'<c r="{letter}1" s="{head_style}" t="inlineStr">{_inline(escape(title))}'
        for letter, title in zip(letters, header, strict=True)
    )
    handle.write(f'<row r="1">{head}</row>')
    rows = len(columns[0][0]) if columns else 0
    styles = [cell_format._get_xf_index() for _, _, cell_format in columns]
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows)
        first = start + 2  # Excel rows count from 1, and row 1 is the header
        cells = []
        for letter, (values, kind, _), style in zip(letters, columns, styles, strict=True):
            chunk = values.iloc[start:stop]
            if kind == "text":
                cells.append(_text_cells(sheet, chunk, letter, first))
            elif kind == "link":
                cells.append(_text_cells(sheet, chunk, letter, first, style))
            else:
                cells.append(_number_cells(chunk, letter, first, style, kind == "int"))
        handle.write(
            "".join(
                f'<row r="{number}">{"".join(row)}</row>'
                for number, row in enumerate(zip(*cells, strict=True), start=first)
            )
        )
    sheet._check_dimensions(0, 0)
    sheet._check_dimensions(rows, len(header) - 1)
