"""Issue 10's states as an operator meets them: each played by the lab over real pypsrp, each
read back from every output that names states (``status --json``, ``runs --json``, the terminal
summary, ``hosts.csv``, ``actions.csv`` and the workbook's Hosts sheet), judged by the lab's own
record of CPUU starts where CPUU must not have run for someone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from openpyxl import load_workbook
from typer.testing import CliRunner

from cpuu_fleet import vocabulary as V
from cpuu_fleet.cli import app
from cpuu_fleet.engine.wave import run_single_step
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.mailprofiles import hive_state
from cpuu_fleet.report import summary_table, write_report
from tests.support.users import (
    TECHNICIAN,
    expect_users,
    technician_at_the_console,
    wait_for_cpuu,
)
from tests.support.waves import lab_env, make_playbook


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


def _shown_everywhere(reports: Path, run_id: str, host: str, key: str) -> dict:
    """The host's state as each output shows it; asserts they all agree with ``key``."""
    state = V.BY_KEY[key]
    with Journal.in_reports(reports) as journal:
        row = journal.host(run_id, host)
        result = write_report(journal, [run_id], reports / run_id)
    assert row is not None and row["state"] == key, row
    status = CliRunner().invoke(app, ["status", run_id, "--reports", str(reports), "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert data["counts"].get(key, 0) >= 1
    needing = [h["host"] for h in data["needs_action"]]
    assert (host in needing) is state.attention
    runs = CliRunner().invoke(app, ["runs", "--reports", str(reports), "--json"])
    (listed,) = [r for r in json.loads(runs.stdout) if r["run_id"] == run_id]
    assert listed["counts"].get(key, 0) >= 1
    table = summary_table(result)
    rendered = [str(cell) for cell in table.columns[0]._cells]
    assert any(state.label in cell for cell in rendered), rendered
    (hosts_row,) = [r for r in _csv(reports / run_id / "hosts.csv") if r["host"] == host]
    assert hosts_row["state"] == state.label
    actions = {r["host"] for r in _csv(reports / run_id / "actions.csv")}
    assert (host in actions) is state.attention
    sheet = load_workbook(reports / run_id / "report.xlsx", read_only=True)["Hosts"]
    cells = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert any(host in r and state.label in r for r in cells)
    return row


def test_a_host_whose_expected_user_is_not_logged_on_is_waiting_for_them(wave_factory):
    wave, host, ws, owner = technician_at_the_console(wave_factory)
    expect_users(wave, host, owner)
    result = wave.run(make_playbook(wave.payload, when_no_user="skip", retries=0))
    row = _shown_everywhere(wave.reports, result.run_id, host, V.WAITING)
    assert owner in row["error_message"] and TECHNICIAN in row["error_message"]
    assert ws.cpuu_starts == []  # never run as the technician


def test_a_run_by_an_unexpected_user_is_recorded_as_theirs_and_the_host_still_waits(
    wave_factory,
):
    """An at-logon task registered before the host's cpuu_user was known fired for the
    technician (the last user): the collect names them, and the owner is not done."""
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    owner = ws.last_user
    ws.logon(TECHNICIAN)
    ws.logoff()  # the technician was here last: at_logon without cpuu_user picks them
    first = wave.run(make_playbook(wave.payload, when_no_user="at_logon", retries=0))
    with Journal.in_reports(wave.reports) as journal:
        assert journal.host(first.run_id, host)["state"] == V.PENDING
    ws.logon(TECHNICIAN)
    wait_for_cpuu(ws)
    assert [start.user for start in ws.cpuu_starts] == [TECHNICIAN]
    expect_users(wave, host, owner)
    with lab_env(wave.fleet):
        later = run_single_step(wave.request(), "collect", pattern="all")
    row = _shown_everywhere(wave.reports, later.run_id, host, V.WAITING)
    assert row["user"] == TECHNICIAN
    assert f"unexpected user {TECHNICIAN}" in row["error_message"] and owner in row["error_message"]
    with Journal.in_reports(wave.reports) as journal:
        runs = [a for a in journal.attempts(later.run_id, host) if a["step"] == "run"]
    assert json.loads(runs[-1]["details_json"])["unexpected_user"] is True


def test_a_user_without_an_outlook_profile_is_not_applicable(wave_factory):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    ws.profiles_of(ws.interactive_user).clear()  # a user who never set up Outlook
    result = wave.run(make_playbook(wave.payload, retries=0))
    _shown_everywhere(wave.reports, result.run_id, host, V.NOT_APPLICABLE)
    assert len(ws.cpuu_starts) == 1  # CPUU ran, and listed no profile


def test_an_audit_without_a_run_says_which_hosts_are_predicted_to_fail_and_why(wave_factory):
    """audit_mix gives each host's user a cached profile (6 without cpuu_process_offline), an
    OST larger than the free disk (22), or neither; by the lab's model, not the controller's."""
    wave = wave_factory(4, "audit_mix")
    result = wave.run(
        make_playbook(None, steps=("preflight", "audit"), retries=0, folder=wave.root)
    )
    expected = {}
    for lab_host in wave.fleet.hosts:
        ws = lab_host.workstation
        names = {p.name for p in ws.profiles_of(ws.interactive_user)}
        expected[lab_host.name] = (
            ("6 PROFILE_IS_OFFLINE" if "Cached" in names else "22 PROFILE_NOT_FREESPACE")
            if names & {"Cached", "Archive"}
            else None
        )
    assert any(expected.values()), expected
    for host, code in expected.items():
        if code is None:
            continue
        row = _shown_everywhere(wave.reports, result.run_id, host, V.PREDICTED_FAIL)
        assert code in row["error_message"], row
    with Journal.in_reports(wave.reports) as journal:
        states = {r["host"]: r["state"] for r in journal.hosts(result.run_id)}
    assert {h for h, s in states.items() if s == V.PREDICTED_FAIL} == {
        h for h, code in expected.items() if code
    }
    assert set(wave.fleet.cpuu_start_counts().values()) == {0}  # an audit runs nothing


def test_an_audit_of_a_new_outlook_user_makes_the_host_not_applicable(wave_factory):
    wave = wave_factory(1, "new_outlook")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    for user in list(ws.profiles):  # every user of the host works in New Outlook
        if hive_state(ws, user).value != "Locked":
            ws.mail.hive(user).new_outlook = True
    result = wave.run(
        make_playbook(None, steps=("preflight", "audit"), retries=0, folder=wave.root)
    )
    _shown_everywhere(wave.reports, result.run_id, host, V.NOT_APPLICABLE)
    assert ws.cpuu_starts == []
