"""The Mailboxes sheets and mailboxes.csv from the small fleet journal (tests/support/report.py).

Hosts there: pc-01 succeeded, pc-02 failed then succeeded on retry, pc-03 unreachable, pc-04
partial, pc-06 pending, pc-09 failed (all CPUU for CORP\\jdoe); pc-05 skipped (nobody logged on);
pc-07 not run; pc-08 succeeded for CORP\\Zoë Ångström.
"""

from __future__ import annotations

import csv

import openpyxl
import pytest

from cpuu_fleet import vocabulary as V
from cpuu_fleet.inputs.mailboxes import load_mailboxes
from cpuu_fleet.report import write_report
from cpuu_fleet.report.mailboxes import MAILBOX_CSV, RAN_FOR_ANOTHER
from tests.support.commands import run_subprocess
from tests.support.report import ACCENTED_USER

FORMULA = '=HYPERLINK("http://evil.example/x","click me")'
BATCH = (
    "EmailAddress;User;BatchName;SwitchDate\n"
    "jdoe@corp.example;;Finance;2026-12-01\n"
    f"zoe@corp.example;{ACCENTED_USER};Finance;2026-12-01\n"
    "waiter@corp.example;;Finance;2026-12-01\n"
    "newbie@corp.example;;Sales;2026-12-08\n"
    "hotdesk@corp.example;;Sales;2026-12-08\n"
    "ghost@corp.example;;Sales;2026-12-08\n"
    f'"{FORMULA.replace(chr(34), chr(34) * 2)}";CORP\\ev\x1b[2Jil;Sales;=1+1\n'
)
MAP = (
    "ResourceName,UniqueUserName\n"
    "PC-05.corp.example,CORP\\waiter\n"
    "pc-07,CORP\\newbie\n"
    "PC-99.corp.example,CORP\\newbie\n"
    "pc-08,CORP\\hotdesk\n"
)


@pytest.fixture
def report(fleet, tmp_path):
    batch = tmp_path / "batch.csv"
    batch.write_text(BATCH, encoding="utf-8-sig")
    devices = tmp_path / "map.csv"
    devices.write_text(MAP, encoding="utf-16")
    source = load_mailboxes(batch, devices)
    return write_report(fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out",
                        mailboxes=source)  # fmt: skip


def _rows(result):
    return result.mailboxes.mailboxes.set_index("mailbox")


def test_the_worst_device_decides(report):
    rows = _rows(report)
    jdoe = rows.loc["jdoe@corp.example"]
    assert jdoe["status"] == V.USER_NEEDS_ACTION
    # Worst first: the unreachable, partial and failed PCs before the pending and the done ones.
    assert jdoe["device_list"].startswith("pc-03 (unreachable); pc-04 (partially succeeded)")
    assert "pc-02 (succeeded)" in jdoe["device_list"]  # the retry's success replaced the failure
    assert (jdoe["devices"], jdoe["devices_done"]) == (6, 2)
    assert jdoe["follow_up"].startswith("bring the host onto the network")
    assert rows.loc["zoe@corp.example", "status"] == V.USER_DONE
    assert rows.loc["waiter@corp.example", "status"] == V.USER_WAITING
    newbie = rows.loc["newbie@corp.example"]
    assert newbie["status"] == V.USER_NOT_STARTED
    assert "PC-99.corp.example (not targeted)" in newbie["device_list"]
    assert newbie["device_source"] == "device map"
    hotdesk = rows.loc["hotdesk@corp.example"]
    assert (hotdesk["status"], hotdesk["worst_state"]) == (V.USER_NOT_STARTED, RAN_FOR_ANOTHER)
    assert rows.loc["ghost@corp.example", "status"] == V.USER_NO_DEVICE


def test_batch_summary_counts_each_state(report):
    batches = report.mailboxes.batches.set_index("batch")
    finance, sales, total = (batches.loc[name] for name in ("Finance", "Sales", "Total"))
    assert (finance["mailboxes"], finance[V.USER_DONE], finance[V.USER_WAITING]) == (3, 1, 1)
    assert finance["done_pct"] == pytest.approx(1 / 3)
    assert (sales[V.USER_NOT_STARTED], sales[V.USER_NO_DEVICE], sales[V.USER_DONE]) == (2, 2, 0)
    assert sales["done_pct"] == 0 and total["mailboxes"] == 7
    assert finance["switch_date"] == "2026-12-01"


def test_hostile_mailbox_text_is_never_a_formula_nor_a_control(report):
    with report.paths[MAILBOX_CSV].open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    hostile = rows[-1]
    assert hostile["mailbox"] == "'" + FORMULA
    assert hostile["switch_date"] == "'=1+1"
    assert hostile["user"] == "CORP\\ev\\x1b[2Jil"
    sheet = openpyxl.load_workbook(report.workbook)["Mailboxes"]
    cell = sheet.cell(row=8, column=2)
    assert (cell.value, cell.data_type) == (FORMULA, "s")
    assert all(c.data_type != "f" for row in sheet.iter_rows() for c in row)


def test_report_command_shows_batches_and_refuses_a_bad_file(fleet, tmp_path):
    batch = tmp_path / "batch.csv"
    batch.write_text(BATCH, encoding="utf-8")
    proc = run_subprocess(
        "report", "--all", "--reports", fleet.reports, "--out", tmp_path / "out",
        "--mailboxes", batch, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # No map: the waiter, whom no run met, has no known device.
    assert "Finance: 3 mailbox(es): 1 needs action, 1 done, 1 no known device" in proc.stdout
    assert (tmp_path / "out" / MAILBOX_CSV).is_file()
    bad = tmp_path / "bad.csv"
    bad.write_text("Name\nx\n", encoding="utf-8")
    proc = run_subprocess("report", "--reports", fleet.reports, "--mailboxes", bad, cwd=tmp_path)
    assert proc.returncode == 2 and f"{bad}:1: no mailbox column" in proc.stderr


def test_play_refuses_a_bad_batch_file_before_touching_a_host(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("EmailAddress\na@x\na@x\n", encoding="utf-8")
    proc = run_subprocess(
        "play", tmp_path / "nothing.yml", "-i", tmp_path / "nothing.yml",
        "--reports", tmp_path / "reports", "--mailboxes", bad, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and f"{bad}:3: mailbox 'a@x' is listed twice" in proc.stderr
    assert not (tmp_path / "reports").exists()


def test_a_batch_named_total_keeps_its_own_counts(fleet, tmp_path):
    batch = tmp_path / "batch.csv"
    batch.write_text(
        "EmailAddress,Batch\njdoe@corp.example,Total\nghost@x,Other\n", encoding="utf-8"
    )
    result = write_report(fleet.journal, [], tmp_path / "out", mailboxes=load_mailboxes(batch))
    table = result.mailboxes.batches
    assert list(table["batch"]) == ["Total", "Other", "Total"]
    assert list(table["mailboxes"]) == [1, 1, 2]
    assert list(table[V.USER_DONE]) == [1, 0, 1]  # the latest run: pc-02 succeeded
