"""``cpuu-fleet audit`` against the lab, judged by the lab's own model and records.

The audit must list every user's profiles (logged on, away with a loadable hive, away with a held
hive), change nothing on a host (no CPUU start, no task, no file), and, before and after a wave,
name exactly the profiles the lab still has on the source.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import openpyxl

from cpuu_fleet.cli.demo_lab import DEMO_SECRETS
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.mailprofiles import hive_state
from cpuu_fleet.lab.scenarios import HELD_PREFIX
from cpuu_fleet.lab.workstation import OutlookProfile, ProfileState
from tests.support.waves import make_playbook

REPO = Path(__file__).resolve().parents[2]


def _audit(wave, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, **wave.fleet.env, **DEMO_SECRETS, "PYTHONPATH": str(REPO)}
    reports = wave.root / "audits"
    before = set(reports.glob("audit-*")) if reports.exists() else set()
    command = [sys.executable, "-m", "cpuu_fleet", "audit", "-i", str(wave.inventory_path)]
    done = subprocess.run(
        [*command, "--reports", str(reports), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    made = set(reports.glob("audit-*")) - before
    assert len(made) == 1, done.stdout + done.stderr
    return done, made.pop()


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _disk(root: Path) -> dict[str, str]:
    """Every folder and file of the lab hosts' disks, with each file's content hash."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        )
        for path in sorted(root.rglob("*"))
    }


def _on_source_in_the_lab(wave) -> tuple[set[tuple[str, str, str, str]], set[tuple[str, str]]]:
    """From the lab's model, not the controller: (host, user, profile, mailbox) of every account
    on the source that an audit can read, and the (host, user) whose hive another process holds."""
    source, held = set(), set()
    for lab_host in wave.fleet.hosts:
        ws = lab_host.workstation
        for user, profiles in ws.profiles.items():
            if hive_state(ws, user).value == "Locked":
                held.add((lab_host.name, user))
                continue
            for profile in profiles:
                if profile.state in (ProfileState.UPDATED, ProfileState.CLEANED):
                    continue
                for mailbox in (profile.mailbox, *profile.extra_mailboxes):
                    source.add((lab_host.name, user, profile.name, mailbox))
    return source, held


def _listed(rows: list[dict[str, str]]) -> set[tuple[str, str, str, str]]:
    return {(r["host"], r["user"], r["profile"], r["mailbox"]) for r in rows}


def _mixed_audit_fleet(wave_factory):
    """Five audit_mix hosts, mixed-ish: one user's mailbox is not switched yet (CPUU leaves the
    profile: code 0), one host has nobody logged on (the wave skips it), and the away users'
    profiles never move."""
    wave = wave_factory(5, "audit_mix")
    hosts = wave.fleet.hosts
    ws = hosts[0].workstation
    ws.profiles_of(ws.interactive_user)[0].mailbox_switched = False
    hosts[3].workstation.logoff()
    return wave


def test_audit_sees_every_user_and_changes_nothing_on_the_hosts(wave_factory):
    wave = wave_factory(3, "audit_mix")
    disks = wave.fleet.workdir / "hosts"
    before = _disk(disks)

    done, folder = _audit(wave)

    assert done.returncode == 0, done.stderr
    assert "hosts: 3 audited, 0 failed; users: 9 (3 with a locked hive)" in done.stdout
    rows = _csv(folder / "audit.csv")
    states = {(r["host"], r["user"]): r["hive_state"] for r in rows}
    for lab_host in wave.fleet.hosts:
        ws = lab_host.workstation
        for user in ws.profiles:
            expected = "Loaded" if user == ws.interactive_user else "Copied"
            if user.split("\\")[1].startswith(HELD_PREFIX):
                expected = "Locked"
            assert states[(lab_host.name, user)] == expected
    # Read-only, by the lab's own record: no CPUU start, no task, not one byte changed on a disk.
    assert set(wave.fleet.cpuu_start_counts().values()) == {0}
    assert all(not h.workstation.tasks for h in wave.fleet.hosts)
    assert _disk(disks) == before
    source, _ = _on_source_in_the_lab(wave)
    assert _listed(_csv(folder / "still-on-source.csv")) == source


def test_an_audit_before_and_after_a_wave_lists_exactly_the_profiles_still_on_the_source(
    wave_factory,
):
    wave = _mixed_audit_fleet(wave_factory)

    _, first = _audit(wave)
    source_before, held = _on_source_in_the_lab(wave)
    assert _listed(_csv(first / "still-on-source.csv")) == source_before

    result = wave.run(make_playbook(wave.payload))
    done, second = _audit(wave, "--compare", str(first / "audit.csv"))

    # The predictions recorded before the wave are what CPUU then said, for 6 and 22.
    with Journal.in_reports(wave.reports) as journal:
        said = {
            (p["host"], p["profile"]): p["current_code"] for p in journal.profiles(result.run_id)
        }
    predicted = {
        (r["host"], r["profile"]): int(r["predicted_code"])
        for r in _csv(first / "audit.csv")
        if r["hive_state"] == "Loaded" and r["predicted_code"] in ("6", "22")
    }
    assert set(predicted.values()) == {6, 22} and {k: said[k] for k in predicted} == predicted
    assert {k for k, code in said.items() if code in (6, 22)} == set(predicted)

    source_after, held_after = _on_source_in_the_lab(wave)
    assert held_after == held
    assert source_after and source_after != source_before  # the wave moved some, not all
    assert _listed(_csv(second / "still-on-source.csv")) == source_after
    locked = {
        (r["host"], r["user"]) for r in _csv(second / "audit.csv") if r["hive_state"] == "Locked"
    }
    assert locked == held  # what the audit could not read is named, not silently left out
    moved = _csv(second / "moved.csv")
    moved_now = {
        (r["host"], r["user"], r["profile"], r["mailbox"]) for r in moved if r["change"] == "moved"
    }
    assert moved_now == source_before - source_after
    assert f"{len(moved_now)} account(s) moved to the target" in done.stdout
    assert openpyxl.load_workbook(second / "audit.xlsx").sheetnames == [
        "Audit",
        "Still on source",
        "Moved",
    ]


def test_new_outlook_users_are_not_applicable_and_a_constrained_host_is_a_failed_row(
    wave_factory,
):
    wave = wave_factory(1, "new_outlook")
    done, folder = _audit(wave)
    assert done.returncode == 0, done.stderr
    rows = _csv(folder / "audit.csv")
    assert rows and all(r["new_outlook"] == "True" for r in rows)
    assert {r["prediction"] for r in rows} == {"not_applicable_new_outlook"}

    locked_down = wave_factory(2, "constrained_language")
    done, folder = _audit(locked_down)
    assert done.returncode == 3
    rows = _csv(folder / "audit.csv")
    assert [r["host"] for r in rows] == ["pc-0001", "pc-0002"]
    assert all(r["error_class"] and "FullLanguage" in r["error_message"] for r in rows)
    assert "not audited: pc-0001 (" in done.stdout and "not audited: pc-0002 (" in done.stdout


def test_hostile_user_and_profile_names_reach_no_file_or_terminal_live(wave_factory):
    wave = wave_factory(1, "hostile_text")
    ws = wave.workstation("pc-0001")
    ws.add_profile(ws.interactive_user, OutlookProfile('=HYPERLINK("http://x")', "x@corp.example"))
    done, folder = _audit(wave)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    for name in ("audit.csv", "still-on-source.csv"):
        text = (folder / name).read_text(encoding="utf-8-sig")
        assert "\x1b" not in text and "\x9b" not in text and "\u202e" not in text
        assert "\\x1b" in text  # shown as its escape, not dropped
        profiles = {row["profile"] for row in _csv(folder / name)}
        assert '\'=HYPERLINK("http://x")' in profiles  # a text cell, never a formula
        assert not any(p.startswith(("=", "+", "-", "@")) for p in profiles)


def test_a_playbook_that_audits_before_and_after_its_run_reports_what_is_still_on_the_source(
    wave_factory,
):
    """audit → run → audit in one play: report.xlsx's Still on source sheet (and the run's
    still-on-source.csv) list exactly the lab's profiles still on the source after the run, the
    rows of both audits are journalled, and CPUU started once per host (the lab's count)."""
    wave = _mixed_audit_fleet(wave_factory)
    hosts = wave.fleet.hosts
    source_before, _ = _on_source_in_the_lab(wave)
    steps = ("preflight", "audit", "push", "run", "collect", "audit")
    result = wave.run(make_playbook(wave.payload, steps=steps))

    source_after, held = _on_source_in_the_lab(wave)
    assert source_after and source_after != source_before  # the run moved some, not all
    run_dir = wave.reports / result.run_id
    book = openpyxl.load_workbook(run_dir / "report.xlsx", read_only=True)
    assert {"Audit", "Still on source"} <= set(book.sheetnames)
    rows = list(book["Still on source"].iter_rows(values_only=True))
    header = list(rows[0])
    at = [header.index(name) for name in ("Host", "User", "Profile", "Mailbox")]
    assert {tuple(row[i] for i in at) for row in rows[1:]} == source_after
    assert _listed(_csv(run_dir / "still-on-source.csv")) == source_after
    locked = {
        (r["host"], r["user"]) for r in _csv(run_dir / "audit.csv") if r["hive_state"] == "Locked"
    }
    assert locked == held
    with Journal.in_reports(wave.reports) as journal:
        audits = [a for a in journal.attempts(result.run_id) if a["step"] == "audit"]
        stored = (
            journal.connection()
            .execute(
                "SELECT COUNT(DISTINCT attempt_id) FROM audit_rows WHERE run_id = ?",
                (result.run_id,),
            )
            .fetchone()[0]
        )
    assert len(audits) == 2 * len(hosts) == stored
    assert all(count <= 1 for count in wave.fleet.cpuu_start_counts().values())
