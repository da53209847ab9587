"""Scenarios: each one puts its single problem into the fleet, the same way for the same seed."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from cpuu_fleet.cpuu import ExitFlags
from cpuu_fleet.lab.contract import TransportFaults
from cpuu_fleet.lab.scenarios import (
    HOSTILE_PROFILE,
    HOSTILE_SCENARIOS,
    LATER_SCENARIOS,
    SCENARIOS,
    plan_fleet,
)
from cpuu_fleet.lab.workstation import Workstation

INI = b"Admin CORP\\svc-cpuu\r\nPassword 0xDEAD\r\n"
STAGE = r"C:\ProgramData\cpuu-fleet\abcdef012345"


def _run_update(ws: Workstation, args: str = "", seconds: float = 600) -> int:
    """Stage a minimal payload and run CPUU_Update.bat as the logged-on user, like a wave does."""
    ws.fs.mkdir(STAGE)
    ws.fs.write_bytes(STAGE + r"\ClientProfileUpdatingUtility.exe", b"MZ")
    ws.fs.write_bytes(STAGE + r"\CPUU.ini", INI)
    ws.fs.write_bytes(
        STAGE + r"\CPUU_Update.bat", b'"%~dp0ClientProfileUpdatingUtility.exe" %*\r\n'
    )
    ws.register_task("run", f'"{STAGE}\\CPUU_Update.bat" {args}', STAGE, user=ws.interactive_user)
    ws.start_task("run")
    ws.clock.advance(seconds)
    return ws.task("run").last_result


class _Clock:
    def __init__(self):
        self.now = 1_763_683_200.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _one(scenario: str, tmp_path, seed: int = 7):
    (plan,) = plan_fleet(1, scenario, seed, tmp_path, clock=_Clock())
    return plan


def test_names_users_and_sandboxes(tmp_path):
    plans = plan_fleet(3, "healthy", 1, tmp_path)
    assert [p.name for p in plans] == ["pc-0001", "pc-0002", "pc-0003"]
    for plan in plans:
        assert re.fullmatch(r"CORP\\[a-z]+", plan.user)
        assert plan.workstation.fs.root == tmp_path / plan.name
        assert plan.faults == TransportFaults()
        assert plan.workstation.profiles_of(plan.user)[0].name == "Outlook"


def test_unknown_scenario_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown scenario 'sunny'.*cpuu_hang.*wrong_password"):
        plan_fleet(1, "sunny", 1, tmp_path)


def test_every_scenario_has_a_one_line_description():
    assert all(text and "\n" not in text for text in SCENARIOS.values())


def _fingerprint(plans):
    return [
        (
            p.name,
            p.scenario,
            p.user,
            p.faults,
            p.workstation.os_caption,
            p.workstation.fs.free_bytes,
            [(x.name, x.ost_size, x.online) for x in p.workstation.profiles_of(p.user or "")],
        )
        for p in plans
    ]


def test_same_seed_same_fleet_other_seed_other_fleet(tmp_path):
    first = _fingerprint(plan_fleet(40, "mixed", 5, tmp_path / "a"))
    again = _fingerprint(plan_fleet(40, "mixed", 5, tmp_path / "b"))
    other = _fingerprint(plan_fleet(40, "mixed", 6, tmp_path / "c"))
    assert first == again
    assert first != other


def test_mixed_is_mostly_healthy_with_a_few_of_each_problem(tmp_path):
    plans = plan_fleet(100, "mixed", 3, tmp_path)
    counts = Counter(p.scenario for p in plans)
    assert 60 <= counts["healthy"] <= 80
    problems = set(SCENARIOS) - {"healthy", "mixed"} - HOSTILE_SCENARIOS - LATER_SCENARIOS
    assert set(counts) - {"healthy"} == problems
    assert all(1 <= counts[name] <= 4 for name in problems)


def test_transport_scenarios_only_change_the_faults(tmp_path):
    assert _one("unreachable", tmp_path / "u").faults.listening is False
    wrong = _one("wrong_password", tmp_path / "w").faults
    assert wrong.password and wrong.listening
    assert _one("slow_link", tmp_path / "s").faults.latency_s > 0.1
    drop = _one("drop_mid_transfer", tmp_path / "d").faults
    assert drop.drop_after_send_bytes and drop.drop_after_send_bytes >= 32 * 1024


def test_healthy_update_succeeds(tmp_path):
    assert _run_update(_one("healthy", tmp_path).workstation) == ExitFlags.SUCCESS


def test_disk_full_leaves_less_than_a_payload(tmp_path):
    ws = _one("disk_full", tmp_path).workstation
    assert ws.fs.free_bytes <= 512 * 1024
    with pytest.raises(OSError, match="not enough space"):
        ws.fs.write_bytes(r"C:\Windows\Temp\payload.bin", b"x" * (600 * 1024))


def test_no_user_means_nobody_to_run_as(tmp_path):
    plan = _one("no_user", tmp_path)
    ws = plan.workstation
    assert plan.user is None and ws.interactive_user is None
    # The person who works there still has profiles; logging on brings them back.
    assert ws.usual_user and ws.profiles_of(ws.usual_user)
    ws.logon(ws.usual_user)
    assert _run_update(ws) == ExitFlags.SUCCESS


def test_outlook_running_is_closed_by_cpuu(tmp_path):
    ws = _one("outlook_running", tmp_path).workstation
    assert ws.running("OUTLOOK.EXE")
    assert _run_update(ws) == ExitFlags.SUCCESS
    assert not ws.running("OUTLOOK.EXE")


def test_ost_locked_fails_with_code_18(tmp_path):
    ws = _one("ost_locked", tmp_path).workstation
    assert _run_update(ws) == ExitFlags.SWITCH_ERR
    assert {p.last_code for p in ws.profiles_of(ws.interactive_user)} == {18}


def test_offline_profiles_are_skipped_unless_allowed(tmp_path):
    ws = _one("offline_profiles", tmp_path).workstation
    assert _run_update(ws) == 0
    assert {p.last_code for p in ws.profiles_of(ws.interactive_user)} == {6}
    assert _run_update(ws, "-ProcessOfflineProfiles On") == ExitFlags.SUCCESS


def test_not_switched_reports_no_switch_message(tmp_path):
    assert _run_update(_one("not_switched", tmp_path).workstation) == ExitFlags.NO_SWITCH_MSG


def test_cpuu_crash_sets_the_crash_flag(tmp_path):
    assert _run_update(_one("cpuu_crash", tmp_path).workstation) & ExitFlags.CRASH


def test_cpuu_hang_never_finishes(tmp_path):
    assert _run_update(_one("cpuu_hang", tmp_path).workstation, seconds=86400) == 267009


def test_mixed_results_give_different_codes_and_hold_a_hostile_name(tmp_path):
    ws = _one("mixed_results", tmp_path).workstation
    exit_code = _run_update(ws)
    assert exit_code == ExitFlags.SUCCESS | ExitFlags.NO_SWITCH_MSG | ExitFlags.SWITCH_ERR
    codes = {p.name: p.last_code for p in ws.profiles_of(ws.interactive_user)}
    assert codes["Outlook"] == 10
    assert codes[HOSTILE_PROFILE] == 11
    assert len({c for c in codes.values() if c is not None}) >= 4
