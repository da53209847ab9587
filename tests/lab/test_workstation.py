"""The workstation model: users, processes and scheduled tasks as the run step meets them."""

from __future__ import annotations

import threading

from cpuu_fleet.cpuu import ExitFlags
from cpuu_fleet.lab.workstation import (
    TASK_BAD_DIRECTORY,
    TASK_HAS_NOT_RUN,
    TASK_RUNNING,
    USERS_GROUP,
    Workstation,
)


def _update_command(bench) -> str:
    return f'"{bench.stage_dir}\\CPUU_Update.bat"'


def test_a_task_runs_for_a_simulated_while_then_reports_cpuu_exit_code(bench):
    bench.add("Outlook")
    ws, clock = bench.ws, bench.clock
    task = ws.register_task("t", _update_command(bench), bench.stage_dir, user=bench.user)
    assert (task.state, task.last_result, task.last_run_time) == ("Ready", TASK_HAS_NOT_RUN, None)
    ws.start_task("t")
    assert ws.task("t").state == "Running"
    assert ws.task("t").last_result == TASK_RUNNING
    assert ws.task("t").last_run_time.timestamp() == clock.now
    assert ws.fs.glob(bench.stage_dir, "CPUU_*.csv") == []  # results appear when the run ends
    clock.advance(ws.cpuu.base_seconds + ws.cpuu.per_profile_seconds + 0.01)
    done = ws.task("t")
    assert done.state == "Ready" and done.last_result == ExitFlags.SUCCESS
    assert len(ws.fs.glob(bench.stage_dir, "CPUU_*.csv")) == 1


def test_a_plain_stop_ends_cmd_but_cpuu_its_child_keeps_running(bench):
    """Stop-ScheduledTask ends the task's process (cmd.exe running the batch file) and reports
    267014; CPUU, its child, survives and goes on to change the profiles."""
    bench.add("Outlook")
    ws, clock = bench.ws, bench.clock
    ws.cpuu.base_seconds = 100
    ws.register_task("t", _update_command(bench), bench.stage_dir, user=bench.user)
    ws.start_task("t")
    engine = ws.task_engine_pid("t")
    assert ws.process(engine).name == "cmd"
    (cpuu,) = ws.descendants(engine)
    assert cpuu.name == "ClientProfileUpdatingUtility"
    ws.stop_task("t")
    task = ws.task("t")
    assert task.state == "Ready" and task.last_result == 267014 and task.killed
    assert [p.pid for p in ws.cpuu_running] == [cpuu.pid]
    clock.advance(200)
    assert ws.cpuu_running == []
    assert ws.profile(bench.user, "Outlook").state.value == "updated"  # the orphan finished


def test_killing_the_tree_stops_cpuu_before_it_changes_anything(bench):
    bench.add("Outlook")
    ws, clock = bench.ws, bench.clock
    ws.cpuu.hang = True
    ws.register_task("t", _update_command(bench), bench.stage_dir, user=bench.user)
    ws.start_task("t")
    clock.advance(10 * 24 * 3600)
    tree = ws.descendants(ws.task_engine_pid("t"))
    ws.stop_task("t")
    assert all(ws.terminate_process(p.pid) for p in tree)
    assert ws.cpuu_running == [] and ws.task("t").last_result == 267014
    assert ws.profile(bench.user, "Outlook").state.value == "source"
    assert ws.fs.glob(bench.stage_dir, "CPUU_*.csv") == []
    assert len(ws.fs.glob(bench.stage_dir, "CPUU_*.log")) == 1  # the log CPUU opened at start


def test_an_interactive_task_does_not_run_when_its_user_is_not_logged_on(bench):
    ws = bench.ws
    ws.logoff()
    ws.register_task("t", _update_command(bench), bench.stage_dir, user=bench.user)
    ws.start_task("t")
    assert ws.task("t").state == "Ready" and ws.task("t").last_result == TASK_HAS_NOT_RUN
    ws.logon("CORP\\someone-else")
    ws.start_task("t")
    assert ws.task("t").last_result == TASK_HAS_NOT_RUN


def test_an_at_logon_task_runs_when_somebody_logs_on(bench):
    bench.add("Outlook")
    ws, clock = bench.ws, bench.clock
    ws.logoff()
    ws.register_task(
        "t", _update_command(bench), bench.stage_dir, user=USERS_GROUP, trigger="AtLogon"
    )
    clock.advance(3600)
    assert ws.task("t").last_result == TASK_HAS_NOT_RUN
    ws.logon(bench.user.upper())  # Windows compares account names ignoring case
    task = ws.task("t")
    assert task.state == "Running" and task.run_as == bench.user.upper()
    clock.advance(60)
    assert ws.task("t").last_result == ExitFlags.SUCCESS
    assert ws.profile(bench.user, "Outlook").state.value == "updated"


def test_logoff_kills_the_users_running_task(bench):
    bench.add("Outlook")
    ws = bench.ws
    ws.cpuu.hang = True
    ws.start_process("OUTLOOK", bench.user)
    ws.register_task("t", _update_command(bench), bench.stage_dir, user=bench.user)
    ws.start_task("t")
    ws.logoff()
    assert ws.task("t").last_result == 1 and ws.task("t").killed
    assert ws.interactive_user is None


def test_unregister_forgets_a_running_task_but_its_processes_live_on(bench):
    ws = bench.ws
    ws.cpuu.hang = True
    bench.add("A")
    ws.register_task("T", _update_command(bench), bench.stage_dir, user=bench.user)
    ws.start_task("t")
    assert ws.unregister_task("t") is True
    assert ws.task("T") is None
    assert ws.unregister_task("t") is False
    assert len(ws.cpuu_running) == 1


def test_a_missing_working_directory_is_the_task_schedulers_error(bench):
    ws = bench.ws
    ws.register_task("t", _update_command(bench), r"C:\nowhere", user=bench.user)
    ws.start_task("t")
    assert ws.task("t").last_result == TASK_BAD_DIRECTORY


def test_processes_by_name_and_stop(tmp_path):
    ws = Workstation("pc-0002", tmp_path / "h")
    ws.start_process("OUTLOOK", "CORP\\a")
    ws.start_process("SearchIndexer", "NT AUTHORITY\\SYSTEM", locks_ost=True)
    assert len(ws.running("outlook.exe")) == 1 and ws.ost_locked
    assert ws.stop_processes(["OUTLOOK.EXE"]) == []
    assert ws.running("Outlook") == []


def test_concurrent_queries_while_a_task_finishes_complete_it_exactly_once(bench):
    bench.add("A")
    ws, clock = bench.ws, bench.clock
    ws.register_task("t", _update_command(bench), bench.stage_dir, user=bench.user)
    ws.start_task("t")
    clock.advance(60)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(ws.task("t").last_result)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [ExitFlags.SUCCESS] * 8
    assert [p.name for p in ws.profiles_of(bench.user)] == ["A", "A_CPUU_Backup"]


def test_a_scheduled_logon_happens_when_its_time_comes_and_starts_at_logon_tasks(bench):
    bench.add("Outlook")
    ws, clock = bench.ws, bench.clock
    ws.logoff()
    assert ws.usual_user == bench.user
    ws.register_task(
        "t", _update_command(bench), bench.stage_dir, user=USERS_GROUP, trigger="AtLogon"
    )
    ws.logon_at(clock.now + 600)
    clock.advance(599)
    assert ws.task("t").last_result == TASK_HAS_NOT_RUN and ws.interactive_user is None
    clock.advance(1)
    assert ws.task("t").state == "Running" and ws.interactive_user == bench.user
    clock.advance(60)
    assert ws.task("t").last_result == ExitFlags.SUCCESS


def test_logon_ignores_the_case_of_the_account_name(bench):
    bench.add("Outlook")
    bench.ws.logoff()
    bench.ws.logon(bench.user.upper())
    assert [p.name for p in bench.ws.profiles_of(bench.user.upper())] == ["Outlook"]
    assert len(bench.ws.profiles) == 1
