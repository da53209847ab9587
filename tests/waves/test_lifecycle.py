"""A host's life across waves: re-push, Cleanup then Undo, nobody logged on, stopped waves,
check mode and hostile file names; each against small lab fleets over real pypsrp."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from cpuu_fleet import journal as states
from cpuu_fleet.cpuu import Mode
from cpuu_fleet.engine.wave import ExitCode, run_single_step
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab import registry
from tests.support.waves import lab_env, make_playbook


def _push_attempts(journal: Journal, run_id: str) -> list[dict]:
    return [a for a in journal.attempts(run_id) if a["step"] == "push"]


def test_second_push_of_an_unchanged_payload_sends_nothing(wave_factory):
    wave = wave_factory(2)
    first = wave.run(make_playbook(wave.payload, steps=("preflight", "push")))
    again = wave.run(make_playbook(wave.payload, steps=("preflight", "push")))
    with Journal.in_reports(wave.reports) as journal:
        assert [a["status"] for a in _push_attempts(journal, first.run_id)] == ["changed"] * 2
        assert [a["status"] for a in _push_attempts(journal, again.run_id)] == ["ok"] * 2
    for host, details in again.details.items():
        assert details["push"]["files_sent"] == [] and details["push"]["bytes_sent"] == 0
        assert details["push"]["files_skipped"] == len(first.details[host]["push"]["files_sent"])
    assert again.exit_code == ExitCode.OK


def test_undo_is_refused_after_cleanup_by_journal_and_by_host(wave_factory, tmp_path):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    update = wave.run(make_playbook(wave.payload, mode=Mode.UPDATE))
    cleanup = wave.run(make_playbook(wave.payload, mode=Mode.CLEANUP))
    with Journal.in_reports(wave.reports) as journal:
        assert journal.host(update.run_id, host)["state"] == states.SUCCEEDED
        assert journal.host(cleanup.run_id, host)["state"] == states.SUCCEEDED
    marker = wave.workstation(host).fs.read_bytes(
        "C:\\ProgramData\\cpuu-fleet\\state\\cleanup-done.json"
    )
    assert cleanup.run_id.encode() in marker

    undo = wave.run(make_playbook(wave.payload, mode=Mode.UNDO))
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(undo.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "policy")
    assert "journal" in row["error_message"] and cleanup.run_id in row["error_message"]

    # Another controller, another journal: the host's own marker still refuses Undo.
    elsewhere = wave.run(make_playbook(wave.payload, mode=Mode.UNDO), reports_dir=tmp_path / "r2")
    with Journal.in_reports(tmp_path / "r2") as journal:
        row = journal.host(elsewhere.run_id, host)
    assert (row["state"], row["error_class"]) == (states.FAILED, "policy")
    assert "marker" in row["error_message"]
    assert not any("undo" in name for name in wave.workstation(host).tasks)


def test_nobody_logged_on_with_policy_skip(wave_factory):
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    result = wave.run(make_playbook(wave.payload, when_no_user="skip"))
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.SKIPPED, "policy")
    assert wave.workstation(host).tasks == {}
    assert result.exit_code == ExitCode.OK


def test_at_logon_run_is_picked_up_by_a_later_collect(wave_factory):
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    first = wave.run(make_playbook(wave.payload, when_no_user="at_logon"))
    with Journal.in_reports(wave.reports) as journal:
        assert journal.host(first.run_id, host)["state"] == states.PENDING
    workstation = wave.workstation(host)
    user = next(iter(workstation.profiles))
    workstation.logon(user)  # the at-logon task starts CPUU as this user

    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        workstation.refresh()
        task = next(iter(workstation.tasks.values()))
        if not task.running and task.last_run_time:
            break
        time.sleep(0.1)
    with lab_env(wave.fleet):
        later = run_single_step(wave.request(), "collect", pattern="all")
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(later.run_id, host)
        profiles = journal.profiles(later.run_id, host)
    assert (row["state"], row["exit_code"]) == (states.SUCCEEDED, 1), row
    assert profiles and all(p["current_code"] == 10 for p in profiles)
    assert workstation.tasks == {}  # the one-shot at-logon task is removed once picked up


def test_an_at_logon_run_is_for_the_inventorys_cpuu_user_only(wave_factory):
    """The inventory names whose session the run is for (``cpuu_user``): a technician's logon,
    or the host's last user's, never consumes it; the named user's logon runs CPUU once."""
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    workstation = wave.workstation(host)
    owner = "CORP\\mailbox-owner"
    document = yaml.safe_load(wave.inventory_path.read_text(encoding="utf-8"))
    document["all"]["children"]["lab"]["hosts"][host]["cpuu_user"] = owner
    wave.inventory_path.write_text(yaml.safe_dump(document), encoding="utf-8")
    first = wave.run(make_playbook(wave.payload, when_no_user="at_logon"))
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(first.run_id, host)
    assert row["state"] == states.PENDING
    task = workstation.task(row["task_name"])
    assert task.user == workstation.sid_of(owner)
    workstation.logon(workstation.last_user)  # the host's usual user: not the one named
    workstation.logoff()
    workstation.logon("CORP\\helpdesk")
    workstation.logoff()
    assert workstation.cpuu_starts == []
    workstation.logon(owner)
    assert [s.user for s in workstation.cpuu_starts] == [owner]


def test_max_fail_percentage_stops_later_batches(wave_factory):
    wave = wave_factory(6, "wrong_password")
    playbook = make_playbook(wave.payload, serial=[2], max_fail_percentage=20)
    result = wave.run(playbook)
    with Journal.in_reports(wave.reports) as journal:
        rows = journal.hosts(result.run_id)
        run = journal.run(result.run_id)
    assert [r["state"] for r in rows] == [states.FAILED] * 2 + [states.NOT_RUN] * 4
    assert run["status"] == "stopped" and "max_fail_percentage" in run["stop_reason"]
    assert result.exit_code == ExitCode.HOSTS_NEED_ATTENTION


def test_check_mode_changes_nothing_and_says_what_would_happen(wave_factory):
    wave = wave_factory(2)
    result = wave.run(make_playbook(wave.payload), check=True)
    for host in (h.name for h in wave.fleet.hosts):
        assert not wave.workstation(host).fs.exists("C:\\ProgramData\\cpuu-fleet")
        would = result.details[host]["would_push"]
        assert "ClientProfileUpdatingUtility.exe" in would["files"]
        assert would["bytes"] > 300_000
        assert result.details[host]["would_run"] == "update"
        assert wave.workstation(host).tasks == {}


HOSTILE = {
    "CPUU_one.csv": "..\\..\\evil.csv",
    "CPUU_two.csv": "/etc/passwd",
    "CPUU_three.csv": "C:\\x\\CON.csv",
    "CPUU_four.csv": "CPUU_a\nb.csv",
}


def test_hostile_file_names_stay_inside_the_host_folder(wave_factory, monkeypatch):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    first = wave.run(make_playbook(wave.payload, steps=("preflight", "push")))
    staging = first.details[host]["push"]["directory"]
    workstation = wave.workstation(host)
    for name in HOSTILE:
        workstation.fs.write_bytes(f"{staging}\\{name}", b"Profile\t10\t0\r\n")
    original = registry.lookup("download")

    def hostile_download(ws, call, pipeline):
        class Renaming:
            def __getattr__(self, attr):
                return getattr(pipeline, attr)

            def write_output(self, value):
                if isinstance(value, dict) and value.get("Name") in HOSTILE:
                    value = {**value, "Name": HOSTILE[value["Name"]]}
                pipeline.write_output(value)

        original(ws, call, Renaming())

    monkeypatch.setitem(registry._HANDLERS, "download", hostile_download)
    result = wave.run(make_playbook(wave.payload, steps=("preflight", "collect")))
    folder = (wave.reports / result.run_id / "hosts" / host).resolve()
    names = sorted(p.name for p in folder.iterdir())
    assert {"evil.csv", "passwd", "_CON.csv", "CPUU_a_b.csv"} <= set(names)
    for path in Path(wave.reports).rglob("*"):
        if path.name in ("evil.csv", "passwd", "_CON.csv", "CPUU_a_b.csv"):
            assert path.resolve().parent == folder
    assert not (wave.reports.parent / "evil.csv").exists()
    with Journal.in_reports(wave.reports) as journal:
        remote = {f["remote_path"] for f in journal.files(result.run_id, host)}
    assert any(r.endswith("CPUU_one.csv") for r in remote)


def test_a_malformed_result_file_is_kept_and_reported(wave_factory):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    first = wave.run(make_playbook(wave.payload, steps=("preflight", "push")))
    staging = first.details[host]["push"]["directory"]
    wave.workstation(host).fs.write_bytes(f"{staging}\\CPUU_broken.csv", b"\x00\xff\x00binary")
    wave.workstation(host).fs.write_bytes(
        f"{staging}\\CPUU_half.csv", b"Good\t10\t0\r\nBad line\r\n"
    )
    result = wave.run(make_playbook(wave.payload, steps=("preflight", "collect")))
    folder = wave.reports / result.run_id / "hosts" / host
    assert (folder / "CPUU_broken.csv").read_bytes() == b"\x00\xff\x00binary"
    problems = result.details[host]["collect"]["problems"]
    assert any("CPUU_broken.csv" in p and "not a text file" in p for p in problems)
    assert any("CPUU_half.csv:2" in p for p in problems)
    with Journal.in_reports(wave.reports) as journal:
        assert [p["profile"] for p in journal.profiles(result.run_id, host)] == ["Good"]
        assert "result-file problem" in journal.host(result.run_id, host)["error_message"]


def test_a_pending_at_logon_task_is_replaced_or_adopted_never_doubled(wave_factory):
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    workstation = wave.workstation(host)
    launches = []
    original = workstation._launcher

    def counting(ws, task, user):
        launches.append(task.name)
        return original(ws, task, user)

    workstation._launcher = counting
    at_logon = make_playbook(wave.payload, when_no_user="at_logon")
    first = wave.run(at_logon)
    second = wave.run(at_logon)
    with Journal.in_reports(wave.reports) as journal:
        assert journal.host(first.run_id, host)["state"] == states.PENDING
        assert journal.host(second.run_id, host)["state"] == states.PENDING
        task_name = journal.host(second.run_id, host)["task_name"]
    assert [t.name for t in workstation.tasks.values()] == [task_name]  # the first was removed

    workstation.logon(next(iter(workstation.profiles)))
    for _ in range(100):
        if not workstation.task(task_name).running:
            break
        time.sleep(0.05)
    third = wave.run(at_logon)  # the user is there now, but CPUU already ran at logon
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(third.run_id, host)
        assert (row["state"], row["exit_code"]) == (states.SUCCEEDED, 1)
        assert journal.profiles(third.run_id, host)
    assert launches == [task_name] and workstation.tasks == {}
