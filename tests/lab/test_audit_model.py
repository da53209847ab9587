"""The audit's handler over the one profile model: it sees exactly what the CPUU emulator did."""

from __future__ import annotations

import threading

import cpuu_fleet.lab.handlers  # noqa: F401 - registers the handlers
from cpuu_fleet.lab.contract import ScriptCall
from cpuu_fleet.lab.mailprofiles import SOURCE_SERVER, TARGET_SERVER
from cpuu_fleet.lab.registry import lookup
from cpuu_fleet.lab.workstation import OutlookProfile
from cpuu_fleet.visit.remote import load_script

AWAY = "CORP\\away"
HELD = "CORP\\held"


class Rows:
    """The pipeline a handler writes to, keeping its output."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.output: list[dict] = []

    def write_output(self, value) -> None:
        self.output.append(value)

    def sleep(self, seconds: float) -> None:
        pass


def audit(ws, **parameters) -> list[dict]:
    rows = Rows()
    call = ScriptCall(
        name="audit", script=load_script("audit"), parameters=parameters, input=iter(())
    )
    lookup("audit")(ws, call, rows)
    return rows.output


def where(rows: list[dict], user: str) -> dict[tuple[str, str], str]:
    return {(r["Profile"], r["Mailbox"]): r["Server"] for r in rows if r["User"] == user}


def test_update_moves_the_users_profiles_to_the_target_and_undo_brings_them_back(bench):
    ws, user = bench.ws, bench.user
    bench.add("Work", extra_mailboxes=("team@corp.example",))
    bench.add("Stuck", mailbox_switched=False)
    ws.add_profile(AWAY, OutlookProfile("Outlook", "away@corp.example"))

    assert set(where(audit(ws), user).values()) == {SOURCE_SERVER}
    assert bench.run("CPUU_Update.bat").exit & 1  # SUCCESS flag
    after = where(audit(ws), user)
    assert after[("Work", "work@corp.example")] == TARGET_SERVER
    assert after[("Work", "team@corp.example")] == TARGET_SERVER  # accounts move with the profile
    assert after[("Stuck", "stuck@corp.example")] == SOURCE_SERVER
    assert after[("Work_CPUU_Backup", "work@corp.example")] == SOURCE_SERVER  # CPUU's backup copy
    assert set(where(audit(ws), AWAY).values()) == {SOURCE_SERVER}  # CPUU ran as the user only

    bench.run("CPUU_Rollback.bat", "-Undo")
    back = where(audit(ws), user)
    assert back == {
        ("Work", "work@corp.example"): SOURCE_SERVER,
        ("Work", "team@corp.example"): SOURCE_SERVER,
        ("Stuck", "stuck@corp.example"): SOURCE_SERVER,
    }


def test_a_held_hive_is_a_locked_row_and_rows_are_bounded(ws):
    ws.add_profile(HELD, OutlookProfile("Outlook", "held@corp.example"))
    ws.mail.hive(HELD).held_by = "BackupAgent"
    for n in range(5):
        ws.add_profile(AWAY, OutlookProfile(f"P{n}", "away@corp.example", ost_size=10))
    rows = audit(ws)
    held = [r for r in rows if r["User"] == HELD]
    assert [(r["HiveState"], r["Profile"]) for r in held] == [("Locked", None)]
    assert {r["HiveState"] for r in rows if r["User"] == AWAY} == {"Copied"}

    cut = audit(ws, MaxRows=3)
    assert len(cut) == 3 and cut[-1]["Truncated"] is True
    assert not any(r["Truncated"] for r in rows)
