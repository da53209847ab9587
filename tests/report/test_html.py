"""report.html, summary.png and ``report --json`` (issue 11, point 5): one figures model for both.

The page is read back with the standard library's HTML parser: what a viewer would load (tags,
attributes) and what it would show (the cells' text).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import openpyxl
import pytest

from cpuu_fleet import journal as J
from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import figures as F
from cpuu_fleet.report import write_report
from cpuu_fleet.report.csvs import FORMULA_TRIGGERS
from cpuu_fleet.report.html import HTML_NAME, SUMMARY_PNG
from tests.report.test_progress import mailbox_source

SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://evil.example/x","click me")'
IMG = '<img src="http://evil.example/p.png" onerror="alert(2)">'
MATHTEXT = "$\\frac{1}{$ 中文 wave"  # broken mathtext: drawing it as math would fail
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: What the page may hold, and nothing else: no script, link, frame, form, style sheet or object.
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "body", "h1", "h2", "p", "b", "img", "table", "thead",
    "tbody", "tr", "th", "td",
}  # fmt: skip


class Page(HTMLParser):
    """Every tag with its attributes, and each table's rows as the texts of their cells."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table = str(attributes.get("id", "")).removeprefix("table-")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def hostile_fleet(path: Path) -> tuple[Journal, str]:
    """One wave named like markup, whose host's profiles, user and error are hostile too."""
    journal = Journal(path)
    run = journal.start_run(run_id="r-hostile", operator=SCRIPT)
    journal.add_hosts(run, [HostEntry("pc-1", wave=IMG), HostEntry("pc-2", wave=MATHTEXT)])
    results = [ProfileResult(SCRIPT, 6, 0, 1), ProfileResult(FORMULA, 11, 0, 2)]
    journal.add_profiles(run, "pc-1", "CORP\\<b>bold</b>", results, "r/hosts/pc-1/CPUU_x.csv")
    journal.set_host(
        run, "pc-1", state=J.PARTIAL, exit_code=5, user="CORP\\<b>bold</b>", attempts=1,
        error_message="</table><script>alert(3)</script>",
    )  # fmt: skip
    journal.set_host(run, "pc-2", state=J.FAILED, error_class="remote", error_message=FORMULA)
    journal.finish_run(run, "completed")
    return journal, run


@pytest.fixture
def hostile(tmp_path):
    journal, run = hostile_fleet(tmp_path / "reports" / "journal.sqlite3")
    yield write_report(journal, [run], tmp_path / "out")
    journal.close()


def test_hostile_workstation_text_is_shown_escaped_never_run(hostile):
    text = hostile.paths[HTML_NAME].read_text(encoding="utf-8")
    page = Page(text)
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    for tag, attributes in page.tags:
        assert not [name for name in attributes if name.startswith("on")], (tag, attributes)
        assert "href" not in attributes, (tag, attributes)  # no link at all
        if "src" in attributes:
            assert str(attributes["src"]).startswith("data:image/png;base64,"), attributes
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    shown = "".join(page.text)
    assert SCRIPT in shown and FORMULA in shown and IMG in shown  # shown as written, as text
    actions = page.tables[F.ACTIONS_KEY]
    assert any(SCRIPT in cell for row in actions for cell in row)
    assert any(row[1] == "pc-2" and "'" + FORMULA in row for row in actions)  # never a formula
    assert hostile.paths[SUMMARY_PNG].read_bytes().startswith(PNG_MAGIC)


def test_the_html_and_the_json_show_the_same_figures(fleet, tmp_path, cli):
    out = tmp_path / "out"
    runs = ["--run", fleet.first_run, "--run", fleet.retry_run]
    batch, device_map = mailbox_source(tmp_path)
    mailboxes = ["--mailboxes", str(batch), "--devices", str(device_map)]
    code, stdout, _ = cli(
        "report", *runs, *mailboxes, "--reports", fleet.reports, "--out", out, "--json"
    )
    assert code == 0, stdout
    figures = json.loads(stdout)  # nothing but the JSON on stdout
    assert "\x1b[" not in stdout
    tables = figures["tables"]
    assert tables[F.SUMMARY_KEY]["rows"][-1]["targeted"] == 9
    assert tables[F.SUMMARY_KEY]["rows"][-1]["succeeded"] == 3
    assert tables[F.BATCHES_KEY]["rows"][-1]["mailboxes"] == 7
    actions = {row["host"] for row in tables[F.ACTIONS_KEY]["rows"]}
    assert actions == {"pc-03", "pc-04", "pc-07", "pc-09"}
    # Who must act, and on what: every cause with its owner and next step, and the verdict.
    causes = tables[F.CAUSES_KEY]["rows"]
    assert causes and all(row["owner"] and row["next_step"] for row in causes)
    assert any(line.startswith("Next wave: ") for line in figures["lines"])

    page = Page((out / HTML_NAME).read_text(encoding="utf-8"))
    assert set(page.tables) == set(tables)
    for key, table in tables.items():
        header, *rows = page.tables[key]
        assert header == [column["header"] for column in table["columns"]], key
        assert len(rows) == len(table["rows"]), key
        for shown, row in zip(rows, table["rows"], strict=True):
            for cell, column in zip(shown, table["columns"], strict=True):
                value = row[column["key"]]
                if column["kind"] == "int":
                    assert cell == f"{value:,}", (key, column["key"])
                elif column["kind"] == "text":
                    value = value or ""
                    if value.startswith(FORMULA_TRIGGERS):
                        value = "'" + value  # the HTML's one display rule for text
                    assert cell == value, (key, column["key"])
    shown = " ".join(page.text)
    for line in figures["lines"]:
        assert line in shown
    assert (out / SUMMARY_PNG).read_bytes().startswith(PNG_MAGIC)


def test_a_wave_never_tried_shows_a_dash_not_zero_percent(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r0")
    journal.add_hosts(run, [HostEntry("pc-1", wave="later")])
    journal.set_host(run, "pc-1", state=J.NOT_RUN)
    result = write_report(journal, [run], tmp_path / "out")
    assert result.figures.table(F.SUMMARY_KEY).rows[0]["success_pct"] is None
    page = Page(result.paths[HTML_NAME].read_text(encoding="utf-8"))
    header, first, _total = page.tables[F.SUMMARY_KEY]
    assert first[header.index("Success %")] == "—"


def test_long_lists_are_cut_and_say_how_many_more(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_LISTED", 3)
    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r0")
    journal.add_hosts(run, [HostEntry(f"pc-{i}", wave="w") for i in range(5)])
    for i in range(5):
        journal.set_host(run, f"pc-{i}", state=J.UNREACHABLE, error_class="unreachable")
    result = write_report(journal, [run], tmp_path / "out")
    actions = result.figures.table(F.ACTIONS_KEY)
    assert (len(actions.rows), actions.left_out) == (3, 2)
    page = Page(result.paths[HTML_NAME].read_text(encoding="utf-8"))
    assert len(page.tables[F.ACTIONS_KEY]) == 1 + 3
    assert "… and 2 more in report.xlsx." in " ".join(page.text)


@pytest.mark.slow  # LibreOffice starts in several seconds
@pytest.mark.skipif(
    shutil.which("soffice") is None, reason="LibreOffice (soffice) is not installed"
)
def test_the_page_opened_in_a_spreadsheet_holds_no_formula(hostile, tmp_path):
    """A lead pastes the tables into a sheet: LibreOffice's HTML import computes what looks like
    a formula, so nothing a workstation wrote may look like one there."""
    out = tmp_path / "lo"
    completed = subprocess.run(
        [
            shutil.which("soffice") or "soffice",
            f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}",
            "--headless",
            "--norestore",
            "--infilter=HTML (StarCalc)",
            "--convert-to",
            "xlsx",
            "--outdir",
            str(out),
            str(hostile.paths[HTML_NAME]),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    book = openpyxl.load_workbook(out / "report.xlsx")
    cells = [cell for sheet in book for row in sheet.iter_rows() for cell in row]
    assert [cell.value for cell in cells if cell.data_type == "f"] == []
    texts = [str(cell.value) for cell in cells if cell.value is not None]
    assert any(FORMULA in text for text in texts) and any(SCRIPT in text for text in texts)
