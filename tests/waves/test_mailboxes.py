"""Per-mailbox status after a real lab wave, judged by the lab's own record (issue 11, 1-2).

The batch file and the device map are built from the lab's users, as a migration lead would
export them (Exchange's migration batch CSV, MECM's user-device affinity). What the report says
of each user is checked against what the simulated workstations themselves hold after the wave:
a user is done exactly when every one of their Outlook profiles, on every workstation, was
switched, whatever the controller believed.
"""

from __future__ import annotations

import csv

import openpyxl
import pytest

from cpuu_fleet import vocabulary as V
from cpuu_fleet.inputs.mailboxes import load_mailboxes
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.workstation import OutlookProfile, ProfileState
from cpuu_fleet.report import write_report
from cpuu_fleet.report.mailboxes import RAN_FOR_ANOTHER
from tests.support.commands import run_subprocess

SWITCHED = (ProfileState.UPDATED, ProfileState.CLEANED)
GHOST = "ghost.user@corp.example"


def _sam(user: str) -> str:
    return user.split("\\")[-1]


def _lab_record(wave) -> dict[str, dict[str, bool]]:
    """user → {host: every profile of theirs there switched}, from the workstations."""
    record: dict[str, dict[str, bool]] = {}
    for lab_host in wave.fleet.hosts:
        ws = wave.workstation(lab_host.name)
        for user, profiles in ws.profiles.items():
            own = [p for p in profiles if p.state is not ProfileState.BACKUP]
            if own:
                switched = all(p.state in SWITCHED for p in own)
                record.setdefault(user, {})[lab_host.name] = switched
    return record


@pytest.fixture(scope="module")
def waved(tmp_path_factory):
    """A mixed lab wave, with one user who also has profiles on a colleague's PC."""
    from tests.support.waves import started_wave

    tmp = tmp_path_factory.mktemp("mailboxes")
    with started_wave(tmp, 16, "mixed", seed=3) as wave:
        healthy = wave.scenario_hosts("healthy")
        own, colleague = healthy[0], healthy[1]
        roaming = wave.workstation(own).interactive_user
        wave.workstation(colleague).add_profile(
            roaming, OutlookProfile("Outlook (hot desk)", _sam(roaming) + "@corp.example")
        )
        result = wave.run()
        yield wave, result, _lab_record(wave), roaming, colleague


def _write_inputs(tmp_path, record):
    """The batch file (Exchange's columns, UTF-8 with BOM) and the map (MECM's, UTF-16, ';')."""
    users = sorted(record)
    batch = tmp_path / "batch.csv"
    with batch.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["EmailAddress", "BatchName", "CompleteAfter"])
        for number, user in enumerate(users):
            writer.writerow([f"{_sam(user)}@corp.example", f"B{number % 2}", "2026-12-12"])
        writer.writerow([GHOST, "B1", "2026-12-12"])
    devices = tmp_path / "affinity.csv"
    with devices.open("w", encoding="utf-16", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["ResourceName", "UniqueUserName", "IsActive"])
        for user in users:
            for host in sorted(record[user]):
                writer.writerow([host.upper() + ".corp.example", user, "1"])
    return batch, devices, users


def test_each_users_state_matches_what_the_workstations_hold(waved, tmp_path):
    wave, result, record, roaming, colleague = waved
    batch, devices, users = _write_inputs(tmp_path, record)
    with Journal.in_reports(wave.reports) as journal:
        report = write_report(
            journal, [result.run_id], tmp_path / "out", mailboxes=load_mailboxes(batch, devices)
        )
    table = report.mailboxes.mailboxes.set_index("mailbox")
    done_in_lab = {user for user, hosts in record.items() if all(hosts.values())}
    assert done_in_lab and set(users) - done_in_lab  # the wave left both kinds
    for user in users:
        row = table.loc[f"{_sam(user)}@corp.example"]
        assert (row["status"] == V.USER_DONE) == (user in done_in_lab), (user, row.to_dict())
        assert row["devices"] == len(record[user])
        assert row["devices_done"] == sum(record[user].values()), user
    assert table.loc[GHOST, "status"] == V.USER_NO_DEVICE

    # The hot-desk PC succeeded, but for its own user: the roaming user is not done there.
    roaming_row = table.loc[f"{_sam(roaming)}@corp.example"]
    assert f"{colleague} ({RAN_FOR_ANOTHER})" in roaming_row["device_list"]
    assert roaming_row["status"] != V.USER_DONE and not record[roaming][colleague]

    batches = report.mailboxes.batches.set_index("batch")
    assert batches.loc["Total", "mailboxes"] == len(users) + 1
    assert batches.loc["Total", V.USER_DONE] == len(done_in_lab)
    for name in ("B0", "B1"):
        mine = [u for n, u in enumerate(users) if f"B{n % 2}" == name]
        assert batches.loc[name, V.USER_DONE] == len([u for u in mine if u in done_in_lab])

    sheet = openpyxl.load_workbook(report.workbook, read_only=True)["Mailboxes"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:5] == ("Batch", "Mailbox", "User", "Planned switch", "Status")
    assert len(rows) == len(users) + 2


def test_plan_writes_the_batchs_devices_as_a_limit_file(waved, tmp_path):
    """``plan --batch B1``: exactly the lab hosts where B1's users have profiles."""
    wave, _result, record, _roaming, _colleague = waved
    batch, devices, users = _write_inputs(tmp_path, record)
    out = tmp_path / "b1.txt"
    proc = run_subprocess(
        "plan", "--mailboxes", batch, "--devices", devices, "--batch", "B1", "--out", out,
        "--reports", wave.reports, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = {host for n, u in enumerate(users) if n % 2 == 1 for host in record[u]}
    assert set(out.read_text(encoding="utf-8").split()) == expected
    assert "1 mailbox(es) have no known device" in proc.stderr


def test_without_a_map_the_users_the_run_met_fill_it(waved, tmp_path):
    """No device map: every user CPUU ran for still has their PC, from the journal."""
    wave, result, record, _roaming, _colleague = waved
    batch, _devices, _users = _write_inputs(tmp_path, record)
    with Journal.in_reports(wave.reports) as journal:
        report = write_report(
            journal, [result.run_id], tmp_path / "out", mailboxes=load_mailboxes(batch)
        )
        ran_for = {
            row["user"]: row["host"]
            for row in journal.connection().execute(
                "SELECT host, user FROM hosts WHERE run_id = ? AND user IS NOT NULL",
                (result.run_id,),
            )
        }
    table = report.mailboxes.mailboxes.set_index("mailbox")
    assert ran_for
    for user, host in ran_for.items():
        row = table.loc[f"{_sam(user)}@corp.example"]
        assert host in row["device_list"] and "run" in row["device_source"]


def test_play_with_mailboxes_writes_them_into_its_report(wave_factory, tmp_path):
    """``play --mailboxes``: the report the engine writes at the end has the batch's sheets."""
    wave = wave_factory(2)
    users = [wave.workstation(h.name).interactive_user for h in wave.fleet.hosts]
    batch = tmp_path / "batch.csv"
    batch.write_text(
        "UserPrincipalName\n" + "".join(f"{_sam(u)}@corp.example\n" for u in users),
        encoding="utf-8",
    )
    result = wave.run(mailboxes=load_mailboxes(batch))
    assert result.report is not None, result.report_error
    rows = result.report.mailboxes.mailboxes
    assert list(rows["status"]) == [V.USER_DONE] * len(users)
    assert (result.run_dir / "mailboxes.csv").is_file()
    assert "Mailboxes" in openpyxl.load_workbook(result.report.workbook, read_only=True).sheetnames
