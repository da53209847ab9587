"""Collected files: log paths on the Hosts sheet, and result files the journal never parsed."""

from __future__ import annotations

import hashlib
import zipfile

from cpuu_fleet import journal as J
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.redact import Redactor
from cpuu_fleet.report import write_report


def _collect(journal, reports, run, host, kind, name, data: bytes):
    relative = f"{run}/hosts/{host}/{name}"
    path = reports / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    journal.add_file(
        run,
        host,
        kind=kind,
        remote_path=f"C:\\ProgramData\\cpuu\\{name}",
        local_path=relative,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    return relative


def test_a_result_file_without_profile_rows_is_parsed_and_nothing_is_lost(tmp_path):
    reports = tmp_path / "reports"
    journal = Journal.in_reports(reports)
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1", wave="w1")])
    # The controller died after collect indexed the file and before the profiles were recorded.
    data = "Outlook\t10\t0\r\nBüro Postfach\t11\t0\r\nbroken line without tabs\r\n".encode("utf-16")
    result = _collect(journal, reports, run, "pc-1", "result", "CPUU_PC1_1_2.csv", data)
    log = _collect(journal, reports, run, "pc-1", "log", "CPUU_PC1_1_2.log", b"log text")
    journal.set_host(run, "pc-1", state=J.PARTIAL, user="CORP\\anna", exit_code=5)

    report = write_report(journal, [run], tmp_path / "out")
    profiles = report.frames.profiles
    assert profiles[["profile", "current_code", "result_file", "user"]].values.tolist() == [
        ["Outlook", 10, result, "CORP\\anna"],
        ["Büro Postfach", 11, result, "CORP\\anna"],
    ]
    host = report.frames.hosts.iloc[0]
    assert host["profiles_ok"] == 1 and host["profiles_failed"] == 1
    assert host["log_file"] == log
    assert host["result_dir"] == "r1/hosts/pc-1"  # from the files, the engine recorded none
    notes = report.frames.notes
    assert any(f"{result}:3: expected profile<TAB>current<TAB>previous" in note for note in notes)
    assert any("2 profile(s) read from" in note for note in notes)


def test_an_unreadable_result_file_is_a_note_not_a_crash(tmp_path):
    reports = tmp_path / "reports"
    journal = Journal.in_reports(reports)
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1", wave="w1")])
    relative = _collect(
        journal, reports, run, "pc-1", "result", "CPUU.csv", b"\x00\x01\x02binary\x00"
    )
    journal.set_host(run, "pc-1", state=J.FAILED)
    (reports / relative).unlink()  # and another one that vanished
    report = write_report(journal, [run], tmp_path / "out")
    assert report.frames.profiles.empty
    assert any("pc-1: result file not read:" in note for note in report.frames.notes)


def test_profiles_already_in_the_journal_are_not_read_twice(fleet, tmp_path):
    data = b"Outlook\t10\t0\n"
    _collect(fleet.journal, fleet.reports, fleet.first_run, "pc-01", "result", "CPUU_x.csv", data)
    report = write_report(fleet.journal, [fleet.first_run], tmp_path / "out")
    pc01 = report.frames.profiles[report.frames.profiles["host"] == "pc-01"]
    assert pc01["profile"].tolist() == ["Outlook", "Archive"]
    assert not any("read from" in note for note in report.frames.notes)


def test_a_secret_registered_after_it_was_journalled_never_reaches_the_report(tmp_path):
    """The journal scrubs on the way in; the report scrubs again on the way out."""
    journal = Journal(tmp_path / "j.sqlite3", redactor=Redactor())  # knew no secret yet
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1", wave="w1")])
    step = journal.start_step(run, "pc-1", "connect")
    journal.end_step(step, "failed", error_message="logon as admin:Hunter2-Pass refused")
    journal.set_host(run, "pc-1", state=J.FAILED, error_message="admin:Hunter2-Pass refused")
    journal.finish_run(run, "stopped", stop_reason="Hunter2-Pass leaked here")
    later = Redactor()
    later.add("Hunter2-Pass")
    out = tmp_path / "out"
    write_report(journal, [run], out, redactor=later)
    with zipfile.ZipFile(out / "report.xlsx") as archive:
        xml = b"".join(archive.read(name) for name in archive.namelist())
    assert b"Hunter2-Pass" not in xml and b"********" in xml
    for path in out.iterdir():
        if path.suffix in (".csv", ".txt"):
            assert b"Hunter2-Pass" not in path.read_bytes(), path.name


def test_a_result_path_leading_outside_the_reports_folder_is_not_read(tmp_path):
    reports = tmp_path / "reports"
    journal = Journal.in_reports(reports)
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1", wave="w1")])
    secret = tmp_path / "elsewhere.csv"
    secret.write_text("Stolen\t10\t0\n", encoding="utf-8")
    for local_path in ("../elsewhere.csv", str(secret)):
        journal.add_file(
            run, "pc-1", kind="result", remote_path="C:\\x.csv", local_path=local_path,
            sha256="0" * 64, size=1,
        )  # fmt: skip
    journal.set_host(run, "pc-1", state=J.FAILED)
    report = write_report(journal, [run], tmp_path / "out")
    assert report.frames.profiles.empty
    refused = [note for note in report.frames.notes if "not read: outside" in note]
    assert len(refused) == 2
