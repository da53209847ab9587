"""The journal becomes one row per host with one state, whatever happened across runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet import journal as J
from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report.frames import TOTAL, load_frames
from cpuu_fleet.report.selection import resolve_runs


def _by_host(frame):
    return {row["host"]: row for row in frame.to_dict("records")}


def test_a_retry_that_succeeded_replaces_the_failure_and_counts_both_attempts(fleet):
    frames = load_frames(fleet.journal, [fleet.first_run, fleet.retry_run])
    hosts = _by_host(frames.hosts)
    assert hosts["pc-02"]["state"] == "succeeded"
    assert hosts["pc-02"]["attempts"] == 2
    assert hosts["pc-02"]["run_id"] == fleet.retry_run
    assert hosts["pc-02"]["profiles_ok"] == 1 and hosts["pc-02"]["profiles_failed"] == 0
    # Its profiles are the retry's, not the failed run's: one Outlook row, switched.
    pc02 = frames.profiles[frames.profiles["host"] == "pc-02"]
    assert pc02[["profile", "current_code", "previous_code"]].values.tolist() == [
        ["Outlook", 10, 11]
    ]


def test_only_the_first_run_shows_the_failure(fleet):
    frames = load_frames(fleet.journal, [fleet.first_run])
    hosts = _by_host(frames.hosts)
    assert hosts["pc-02"]["state"] == "failed"
    assert hosts["pc-02"]["attempts"] == 1
    assert hosts["pc-02"]["exit_flags"] == "SUCCESS|SWITCH_ERR"


def test_every_host_has_exactly_one_of_the_seven_states(fleet):
    frames = load_frames(fleet.journal, [fleet.first_run, fleet.retry_run])
    assert frames.hosts["host"].is_unique
    states = dict(zip(frames.hosts["host"], frames.hosts["state"].astype(str), strict=True))
    assert states == {
        "pc-01": "succeeded",
        "pc-02": "succeeded",
        "pc-03": "unreachable",
        "pc-04": "partially succeeded",
        "pc-05": "skipped",
        "pc-06": "pending",
        "pc-07": "not run",
        "pc-08": "succeeded",
        "pc-09": "failed",
    }


def test_summary_counts_match_the_journal_per_wave(fleet):
    """Cross-check against the journal's own counts for a single run."""
    frames = load_frames(fleet.journal, [fleet.first_run])
    summary = frames.summary.set_index("wave")
    journal_counts = fleet.journal.state_counts(fleet.first_run)
    labels = {"partial": "partially succeeded", "not_run": "not run"}
    for state, count in journal_counts.items():
        assert summary.loc[TOTAL, labels.get(state, state)] == count
    assert summary.loc[TOTAL, "targeted"] == sum(journal_counts.values()) == 9
    assert summary.loc["wave1", "targeted"] == 4 and summary.loc["wave2", "targeted"] == 5
    assert summary.loc["wave1", "failed"] == 1  # pc-02 before its retry
    assert summary.loc["wave1", "success_pct"] == pytest.approx(1 / 4)
    # wave1 profiles: pc-01 Outlook 10 + Archive 2, pc-04 Main 10 -> 3 switched;
    # pc-02 Outlook 11 (failed), pc-04 offline (needs action) and code 99 (unknown) -> 3 failed.
    assert summary.loc["wave1", "profiles_switched"] == 3
    assert summary.loc["wave1", "profiles_failed"] == 3


def test_codes_are_decoded_from_the_vendor_table_and_unknown_codes_survive(fleet):
    frames = load_frames(fleet.journal, [fleet.first_run])
    profiles = frames.profiles.set_index("profile")
    assert profiles.loc["Outlook", "current_name"].tolist() == [
        "PROFILE_MODIFYING_OK",
        "PROFILE_MODIFYING_FAILED",
    ]
    assert profiles.loc["Odd", "current_name"] == "UNKNOWN_99"
    assert profiles.loc["Odd", "outcome"] == "unknown"
    assert profiles.loc["Archive", "previous_name"] == "PROFILE_MODIFYING_OK"
    codes = frames.codes.set_index("code")
    assert codes.loc[10, "count:wave1"] == 2 and codes.loc[10, "count:wave2"] == 2
    assert codes.loc[10, "total"] == 4
    assert codes.loc[99, "name"] == "UNKNOWN_99"


def test_action_list_holds_hosts_that_need_a_person_with_a_hint(fleet):
    frames = load_frames(fleet.journal, [fleet.first_run, fleet.retry_run])
    actions = frames.actions
    # By wave, then state in the vocabulary's order; pc-07 was not run (the wave stopped).
    assert actions["host"].tolist() == ["pc-04", "pc-03", "pc-09", "pc-07"]
    by_host = _by_host(actions)
    assert "WinRM" in by_host["pc-03"]["hint"]
    assert "ProcessOfflineProfiles" in by_host["pc-04"]["hint"]
    assert "PROFILE_IS_OFFLINE" in by_host["pc-04"]["problem_profiles"]
    assert "KILLED_ON_DEADLINE" in by_host["pc-09"]["exit_flags"]


def test_a_killed_cpuu_exit_1_is_never_shown_as_plain_success(fleet):
    frames = load_frames(fleet.journal, [fleet.first_run])
    pc09 = _by_host(frames.hosts)["pc-09"]
    assert pc09["exit_code"] == 1
    assert pc09["exit_flags"].startswith("KILLED_ON_DEADLINE")


def test_transient_states_of_an_interrupted_run_are_reported_as_final_states(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-a", wave="w"), HostEntry("pc-b", wave="w")])
    journal.set_host(run, "pc-b", state=J.RUNNING)
    frames = load_frames(journal, [run])
    hosts = _by_host(frames.hosts)
    assert hosts["pc-a"]["state"] == "not run"  # still queued: never started
    assert hosts["pc-b"]["state"] == "interrupted"  # controller died: --resume asks the host
    assert hosts["pc-b"]["error_class"] == "interrupted"


def test_a_later_run_that_never_reached_a_host_does_not_hide_its_result(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    first = journal.start_run(run_id="r1")
    journal.add_hosts(first, [HostEntry("pc-a", wave="w")])
    journal.set_host(first, "pc-a", state=J.FAILED, attempts=1)
    second = journal.start_run(run_id="r2", kind="retry")
    journal.add_hosts(second, [HostEntry("pc-a", wave="w")], state=J.NOT_RUN)
    frames = load_frames(journal, [first, second])
    assert frames.hosts["state"].astype(str).tolist() == ["failed"]
    assert frames.hosts["attempts"].tolist() == [1]


def test_wave_pattern_filters_every_frame(fleet):
    frames = load_frames(fleet.journal, [fleet.first_run, fleet.retry_run], wave="wave2")
    assert set(frames.hosts["wave"]) == {"wave2"}
    assert set(frames.profiles["wave"]) == {"wave2"}
    assert set(frames.attempts["wave"]) == {"wave2"}
    assert frames.summary["wave"].tolist() == ["wave2", TOTAL]
    excluded = load_frames(fleet.journal, [fleet.first_run], wave="wave*:!wave1")
    assert frames.hosts["host"].tolist() == excluded.hosts["host"].tolist()


def test_a_wave_pattern_matching_nothing_names_the_waves_there_are(fleet):
    with pytest.raises(InputError, match=r"no wave matches 'wave9'.*wave1, wave2"):
        load_frames(fleet.journal, [fleet.first_run], wave="wave9")


def test_run_selection_errors_are_one_clear_line(tmp_path, fleet):
    empty = Journal(tmp_path / "empty.sqlite3")
    with pytest.raises(InputError, match=r"^no runs in .*empty\.sqlite3$"):
        resolve_runs(empty, None)
    with pytest.raises(InputError, match="unknown run id 20990101-000000-ffff"):
        resolve_runs(fleet.journal, ["20990101-000000-ffff", fleet.first_run])
    assert resolve_runs(fleet.journal, None) == [fleet.retry_run]  # the latest
    assert resolve_runs(fleet.journal, None, all_runs=True) == [fleet.first_run, fleet.retry_run]


def test_the_action_list_follows_the_state_and_says_why_from_flags_and_codes(tmp_path):
    """A host is on the action list for its state alone (as for the exit code and ``status``);
    its exit flags and profile codes say why. A state the engine never writes with these codes
    (succeeded with NO_SWITCH_MSG) is not second-guessed by the report."""
    journal = Journal(tmp_path / "j.sqlite3")
    names = ("pc-ok", "pc-noswitch", "pc-partial", "pc-locked", "pc-odd")
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry(h, wave="w") for h in names])
    journal.set_host(run, "pc-ok", state=J.SUCCEEDED, exit_code=1)
    journal.set_host(run, "pc-noswitch", state=J.NOT_SWITCHED, exit_code=2, error_class="cpuu")
    journal.set_host(run, "pc-partial", state=J.PARTIAL, exit_code=3, error_class="cpuu")
    journal.add_profiles(run, "pc-locked", "u", [ProfileResult("Main", 20, 0, 1)])
    journal.set_host(run, "pc-locked", state=J.FAILED, exit_code=1, error_class="cpuu")
    journal.set_host(run, "pc-odd", state=J.SUCCEEDED, exit_code=3)
    actions = _by_host(load_frames(journal, [run]).actions)
    assert set(actions) == {"pc-noswitch", "pc-partial", "pc-locked"}
    assert actions["pc-noswitch"]["reason"] == "state: not switched; exit NO_SWITCH_MSG"
    assert "not switched yet" in actions["pc-noswitch"]["hint"]
    assert "after the mailbox switch" in actions["pc-noswitch"]["follow_up"]
    assert (
        actions["pc-partial"]["reason"] == "state: partially succeeded; exit SUCCESS|NO_SWITCH_MSG"
    )
    assert actions["pc-locked"]["reason"] == "state: failed; profile codes need action"
    assert "properties dialog" in actions["pc-locked"]["hint"]
    assert actions["pc-locked"]["follow_up"].endswith("--retry-failed r1")
    assert actions["pc-locked"]["problem_profiles"] == "Main (20 PROFILE_HAS_CFG_UI_LOCK)"


def test_an_in_memory_journal_is_read_through_its_own_connection(tmp_path):
    journal = Journal(":memory:")
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-a", wave="w")])
    journal.set_host(run, "pc-a", state=J.SUCCEEDED, exit_code=1)
    frames = load_frames(journal, [run])
    assert frames.hosts["state"].astype(str).tolist() == ["succeeded"]
    assert not Path(":memory:").exists()  # no stray file was made for it


def test_the_report_sees_every_committed_write_of_a_journal_still_open(tmp_path):
    """The engine reports at the end of play with its journal open: WAL readers see its writes."""
    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-a", wave="w")])
    journal.set_host(run, "pc-a", state=J.FAILED)
    assert load_frames(journal, [run]).hosts["state"].astype(str).tolist() == ["failed"]
    journal.set_host(run, "pc-a", state=J.SUCCEEDED)
    assert load_frames(journal, [run]).hosts["state"].astype(str).tolist() == ["succeeded"]


def test_waves_named_like_report_columns_do_not_collide(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-a", wave="total"), HostEntry("pc-b", wave="Total")])
    for host in ("pc-a", "pc-b"):
        journal.add_profiles(run, host, "u", [ProfileResult("Main", 10, 0, 1)])
        journal.set_host(run, host, state=J.SUCCEEDED, exit_code=1)
    frames = load_frames(journal, [run])
    codes = frames.codes.set_index("code")
    assert codes.loc[10, "count:total"] == 1 and codes.loc[10, "count:Total"] == 1
    assert codes.loc[10, "total"] == 2
    assert frames.summary["wave"].tolist() == ["total", "Total", TOTAL]
    assert frames.summary["targeted"].tolist() == [1, 1, 2]


def test_a_check_run_never_turns_a_failure_into_a_success(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    real = journal.start_run(mode="update")
    journal.add_hosts(real, [HostEntry("pc-1", wave="wave1"), HostEntry("pc-2", wave="wave1")])
    journal.set_host(real, "pc-1", state=J.FAILED, error_class="cpuu", attempts=1)
    journal.finish_run(real, "completed")
    dry = journal.start_run(mode="update", check_mode=True)
    journal.add_hosts(dry, [HostEntry("pc-1", wave="wave1"), HostEntry("pc-2", wave="wave1")])
    for host in ("pc-1", "pc-2"):
        journal.set_host(
            dry, host, state=J.SUCCEEDED, error_message="check mode: nothing changed", attempts=1
        )
    journal.finish_run(dry, "completed")

    assert resolve_runs(journal, None) == [real]  # the default skips the dry run
    both = _by_host(load_frames(journal, [real, dry]).hosts)
    assert both["pc-1"]["state"] == "failed" and both["pc-1"]["attempts"] == 1
    assert both["pc-2"]["state"] == "not run"
    only_dry = _by_host(load_frames(journal, [dry]).hosts)
    assert only_dry["pc-1"]["state"] == "not run"
    assert only_dry["pc-1"]["error_message"] == "check mode: nothing changed"
    journal.close()


def test_every_error_class_has_a_hint_for_the_action_list():
    from cpuu_fleet.report.hints import ERROR_CLASS_HINTS
    from cpuu_fleet.vocabulary import ErrorClass

    assert set(ERROR_CLASS_HINTS) == {cls.value for cls in ErrorClass}


def test_a_wave_no_host_of_which_was_tried_has_no_success_rate_not_zero(tmp_path):
    """A wave stopped before it started reads "—" (terminal) and an empty cell (workbook), never
    0.0 %, which a lead reads as a disaster."""
    from openpyxl import load_workbook
    from rich.console import Console

    from cpuu_fleet.report import summary_table, write_report

    journal = Journal.in_reports(tmp_path)
    run = journal.start_run(run_id="20261206-100000-cccc", playbook="update.yml", mode="update")
    journal.add_hosts(
        run,
        [
            HostEntry("pc-01", wave="wave1"),
            *(HostEntry(f"pc-1{i}", wave="wave2") for i in range(3)),
        ],
    )
    journal.set_host(run, "pc-01", state=J.SUCCEEDED)
    for i in range(3):
        journal.set_host(run, f"pc-1{i}", state=J.NOT_RUN)
    journal.finish_run(run, "stopped", stop_reason="a stop rule")
    result = write_report(journal, [run], tmp_path / "out")
    rates = result.summary.set_index("wave")["success_pct"]
    assert rates["wave1"] == pytest.approx(1.0) and rates.isna()["wave2"]
    assert rates[TOTAL] == pytest.approx(1 / 4)

    console = Console(record=True, width=120)
    console.print(summary_table(result))
    line = next(x for x in console.export_text().splitlines() if x.strip().startswith("success"))
    assert line.split() == ["success", "100.0%", "—", "25.0%"]

    sheet = load_workbook(result.workbook)["Summary"]
    top = next(row[0].row for row in sheet.iter_rows() if row[0].value == "Wave")  # first table
    header = [cell.value for cell in sheet[top]]
    column = header.index("Success %") + 1
    by_wave = {sheet.cell(r, 1).value: sheet.cell(r, column).value for r in range(top + 1, top + 4)}
    assert by_wave["wave2"] is None and by_wave["wave1"] == pytest.approx(1.0)
