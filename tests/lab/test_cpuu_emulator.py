"""The CPUU emulator as a migration lead would meet it: codes, exit masks, result files, logs."""

from __future__ import annotations

import codecs

import pytest

from cpuu_fleet.cpuu import ExitFlags, Mode
from cpuu_fleet.lab.cpuu_emulator import parse_arguments, read_ini, split_command_line
from cpuu_fleet.lab.winfs import ADMINISTRATORS_SID, SYSTEM_SID, USERS_SID, Acl
from cpuu_fleet.lab.workstation import ProfileState

GIB = 1024**3


def test_update_switches_keeps_a_backup_and_a_rerun_has_nothing_to_do(bench):
    bench.add("Outlook")
    first = bench.run()
    assert first.codes == {"Outlook": 10}
    assert first.exit == ExitFlags.SUCCESS
    names = [p.name for p in bench.ws.profiles_of(bench.user)]
    assert names == ["Outlook", "Outlook_CPUU_Backup"]
    second = bench.run()
    assert second.codes == {"Outlook": 2, "Outlook_CPUU_Backup": 1}
    assert second.exit == 0 and second.status.cannot_start
    assert [p.previous for p in second.results.profiles] == [10, 0]


def test_undo_restores_then_has_nothing_to_undo(bench):
    bench.add("Outlook")
    bench.run()
    undo = bench.run("CPUU_Rollback.bat")
    assert undo.codes == {"Outlook": 12, "Outlook_CPUU_Backup": 1}
    assert undo.exit == ExitFlags.SUCCESS
    assert [p.name for p in bench.ws.profiles_of(bench.user)] == ["Outlook"]
    assert bench.ws.profile(bench.user, "Outlook").state is ProfileState.SOURCE
    again = bench.run("CPUU_Rollback.bat")
    assert again.codes == {"Outlook": 0} and again.exit == 0


def test_undo_after_cleanup_is_impossible(bench):
    bench.add("Outlook")
    bench.run()
    cleanup = bench.run("CPUU_Cleanup.bat")
    assert cleanup.codes == {"Outlook": 14} and cleanup.exit == ExitFlags.SUCCESS
    assert bench.ws.profile(bench.user, "Outlook").state is ProfileState.CLEANED
    undo = bench.run("CPUU_Rollback.bat")
    assert undo.codes == {"Outlook": 3}
    assert undo.exit == ExitFlags.SWITCH_ERR
    assert bench.run("CPUU_Cleanup.bat").exit == 0  # nothing left to clean


def test_ost_backup_space_is_taken_by_update_and_freed_by_cleanup(bench):
    bench.add("Cached", ost_size=5 * GIB)
    free = bench.ws.fs.free_bytes
    bench.run()
    assert bench.ws.fs.free_bytes <= free - 5 * GIB
    bench.run("CPUU_Cleanup.bat")
    assert bench.ws.fs.free_bytes > free - 5 * GIB


def test_profiles_argument_limits_the_run_to_named_profiles(bench):
    bench.add("Outlook")
    bench.add('José «Work» "main"')
    run = bench.run(args='-Profiles "José «Work» \\"main\\""')
    assert run.codes == {"Outlook": 0, 'José «Work» "main"': 10}
    assert bench.ws.profile(bench.user, "Outlook").state is ProfileState.SOURCE


def test_critical_skips_a_profile_whose_feature_cannot_be_updated(bench):
    bench.add("Outlook", failing_features=frozenset({"Rules"}))
    bench.add("Other", failing_features=frozenset({"Delegates"}))
    run = bench.run(args="-Critical Rules SRS")
    assert run.codes == {"Outlook": 11, "Other": 10}
    assert run.exit == ExitFlags.SUCCESS | ExitFlags.SWITCH_ERR
    assert "feature Delegates of 'Other' was not migrated" in run.log


def test_offline_profiles_need_process_offline_on(bench):
    bench.add("Laptop", online=False)
    off = bench.run(args="-ProcessOfflineProfiles Off")
    assert off.codes == {"Laptop": 6} and off.exit == 0
    on = bench.run(args="-ProcessOfflineProfiles On")
    assert on.codes == {"Laptop": 10} and on.exit == ExitFlags.SUCCESS


def _setup_code(bench, code: int) -> tuple[str, str]:
    """Arrange the model so that profile 'P' gets ``code``; return (batch, args)."""
    update, undo, cleanup = "CPUU_Update.bat", "CPUU_Rollback.bat", "CPUU_Cleanup.bat"
    facts = {
        4: {"resolvable": False},
        5: {"exchange_service_complete": False},
        6: {"online": False},
        7: {"has_exchange_service": False},
        8: {"unexpected_services": ("Skype Address Book",)},
        9: {"backup_fails": True},
        11: {"update_fails": True},
        17: {"default_store_opens": False},
        19: {"auth_type": "Anonymous"},
        20: {"properties_dialog_open": True},
        21: {"unexpected_error": True},
        22: {"ost_size": 500 * GIB},
    }
    if code in facts:
        bench.add("P", **facts[code])
        return update, ""
    if code == 0:
        bench.add("P")
        bench.add("Q")
        return update, "-Profiles Q"
    if code == 1:
        bench.add("Q")
        bench.run()
        bench.ws.profile(bench.user, "Q_CPUU_Backup").name = "P"
        return update, ""
    if code in (2, 10):
        bench.add("P")
        if code == 2:
            bench.run()
        return update, ""
    if code == 18:
        bench.add("P", ost_size=2 * GIB)
        bench.ws.start_process("SearchIndexer", "NT AUTHORITY\\SYSTEM", locks_ost=True)
        return update, ""
    if code in (3, 12, 13):
        bench.add("P", restore_fails=code == 13)
        bench.run()
        if code == 3:
            bench.run(cleanup)
        return undo, ""
    if code in (14, 15, 16):
        bench.add("P", cleanup_fails=code == 15, user_cancels_cleanup=code == 16)
        bench.run()
        return cleanup, ""
    raise AssertionError(code)


@pytest.mark.parametrize("code", range(23))
def test_every_documented_profile_code_is_reachable(bench, code):
    batch, args = _setup_code(bench, code)
    run = bench.run(batch, args)
    assert run.codes["P"] == code


@pytest.mark.parametrize(
    ("code", "flags"),
    [
        (10, ExitFlags.SUCCESS),
        (6, 0),
        (4, 0),
        (11, ExitFlags.SWITCH_ERR),
        (22, ExitFlags.SWITCH_ERR),
        (12, ExitFlags.SUCCESS),
        (13, ExitFlags.SWITCH_ERR),
        (3, ExitFlags.SWITCH_ERR),
        (14, ExitFlags.SUCCESS),
        (15, ExitFlags.GLOBAL_ERR),
        (16, ExitFlags.USER_ABORT),
    ],
)
def test_exit_mask_follows_the_profile_outcomes(bench, code, flags):
    batch, args = _setup_code(bench, code)
    assert bench.run(batch, args).exit == flags


def test_flags_combine_in_one_run(bench):
    bench.add("Done")
    bench.add("Waiting", mailbox_switched=False)
    bench.add("Broken", update_fails=True)
    run = bench.run()
    assert run.codes == {"Done": 10, "Waiting": 0, "Broken": 11}
    assert run.exit == 7  # SUCCESS | NO_SWITCH_MSG | SWITCH_ERR


def test_invalid_switch_message_sets_512(bench):
    bench.add("P", switch_message_valid=False)
    assert bench.run().exit == ExitFlags.INVALID_SWITCH_MSG


@pytest.mark.parametrize(
    ("fact", "expected"),
    [
        ("global_error", ExitFlags.GLOBAL_ERR),
        ("tmp_dir_fails", ExitFlags.FAILED_TO_CREATE_TMP_DIR),
        ("log_write_fails", ExitFlags.SUCCESS | ExitFlags.FAILED_TO_WRITE_LOG),
        ("log_share_fails", ExitFlags.SUCCESS | ExitFlags.FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE),
    ],
)
def test_run_level_faults_set_their_flag(bench, fact, expected):
    bench.add("P")
    setattr(bench.ws.cpuu, fact, True)
    run = bench.run()
    assert run.exit == expected
    assert run.exit > 255 or fact != "log_share_fails"  # kept whole, never truncated to 8 bits


def test_crash_leaves_no_result_file_and_sets_crash(bench):
    bench.add("A")
    bench.add("B")
    bench.ws.cpuu.crash_after_profiles = 1
    run = bench.run()
    assert run.exit == ExitFlags.CRASH | ExitFlags.SUCCESS
    assert run.results is None
    assert "crashed" in run.log


def test_user_abort_leaves_the_rest_unprocessed(bench):
    bench.add("A")
    bench.add("B")
    bench.ws.cpuu.user_aborts_after_profiles = 1
    run = bench.run()
    assert run.codes == {"A": 10, "B": 0}
    assert run.exit == ExitFlags.SUCCESS | ExitFlags.USER_ABORT


def test_ask_credentials_unattended_is_a_user_abort(bench):
    bench.add("A")
    bench.stage("AskCredentials 1\r\n")
    run = bench.run()
    assert run.exit == ExitFlags.USER_ABORT and run.results is None


def test_missing_ini_or_admin_is_a_global_error_without_result_file(bench):
    bench.add("A")
    bench.stage("; nothing useful\r\n")
    run = bench.run()
    assert run.exit == ExitFlags.GLOBAL_ERR and run.results is None
    assert "no Admin account" in run.log
    bench.ws.fs.delete(bench.stage_dir + r"\CPUU.ini")
    assert bench.run().exit == ExitFlags.GLOBAL_ERR


def test_missing_exe_is_cmd_not_recognized(bench):
    bench.add("A")
    bench.ws.fs.delete(bench.stage_dir + r"\ClientProfileUpdatingUtility.exe")
    run = bench.run()
    assert run.exit == 9009 and run.log is None


def test_missing_batch_file_is_the_task_schedulers_file_not_found(bench):
    run = bench.run("CPUU_Nope.bat")
    assert run.exit == 0x80070002


def test_result_file_is_utf16_with_bom_tab_separated_and_keeps_hostile_names(bench):
    hostile = "'; Remove-Item C:\\ -Recurse -Force; $(calc) #"
    bench.add(hostile)
    bench.add("Boîte « partagée »")
    run = bench.run()
    csv = bench.ws.fs.glob(bench.stage_dir, "CPUU_pc-0001_*.csv")
    assert len(csv) == 1
    data = bench.ws.fs.read_bytes(csv[0])
    assert data.startswith(codecs.BOM_UTF16_LE)
    assert data.decode("utf-16").splitlines()[0] == f"{hostile}\t10\t0"
    assert run.codes == {hostile: 10, "Boîte « partagée »": 10}
    assert run.results.encoding == "utf-16-le-bom"  # the one vocabulary (wintext)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-bom", "cp1252"])
def test_result_file_encoding_is_a_knob(bench, encoding):
    bench.add("Boîte")
    bench.ws.cpuu.csv_encoding = encoding
    assert bench.run().codes == {"Boîte": 10}


def test_the_log_never_holds_the_password(bench):
    bench.add("A")
    bench.stage("Admin CORP\\svc\r\nPassword S3cr3t-Encrypted==\r\nPasswordTrg Other==\r\n")
    run = bench.run(args="-Bogus 1")
    assert "S3cr3t" not in run.log and "Other==" not in run.log
    assert "Unknown parameter ignored: -Bogus 1" in run.log


def test_cpuu_stops_outlook_before_working(bench):
    bench.add("A", ost_size=GIB)
    bench.ws.start_process("OUTLOOK", bench.user)
    run = bench.run()
    assert run.codes == {"A": 10}
    assert bench.ws.running("outlook.exe") == []


def test_an_outlook_that_refuses_to_close_keeps_the_ost_locked(bench):
    bench.add("A", ost_size=GIB)
    bench.ws.start_process("OUTLOOK", bench.user, stoppable=False)
    assert bench.run().codes == {"A": 18}


INI_VARIANTS = (
    '[General]\r\nAdmin CORP\\svc\r\nAllowAdditionalServices "Skype AB" MSPST MS\r\n',
    '-Admin CORP\\svc\n-AllowAdditionalServices="Skype AB"\n',
    '; wizard output\nAdmin = "CORP\\svc"  ; the admin\nAllowAdditionalServices = All\n',
    "Admin\tCORP\\svc\n  AllowAdditionalServices   'Skype AB','Other'\n# comment\n",
)
ENCODINGS = {
    "utf-8": lambda t: t.encode("utf-8"),
    "utf-8-bom": lambda t: codecs.BOM_UTF8 + t.encode("utf-8"),
    "utf-16-bom": lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),
    "utf-16-nobom": lambda t: t.encode("utf-16-le"),
    "ansi": lambda t: t.encode("cp1252"),
}


@pytest.mark.parametrize("variant", INI_VARIANTS)
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_ini_is_read_leniently_in_every_encoding(variant, encoding):
    ini = read_ini(ENCODINGS[encoding](variant))
    assert ini.get("admin") == "CORP\\svc"
    services = ini.get_list("AllowAdditionalServices")
    assert "Skype AB" in services or services == ["All"]


def test_allow_additional_services_in_a_utf16_ini_lets_the_profile_through(bench):
    bench.add("P", unexpected_services=("Skype AB",))
    bench.stage(ENCODINGS["utf-16-bom"](INI_VARIANTS[0]))
    assert bench.run().codes == {"P": 10}


def test_ini_with_non_ascii_in_ansi_and_inline_comments():
    ini = read_ini("Admin CORP\\Jérôme ; who\r\nPassword ab;cd\r\n".encode("cp1252"))
    assert ini.get("Admin") == "CORP\\Jérôme"
    assert ini.get("Password") == "ab;cd"


def test_command_line_splitting_and_mode_choice():
    assert split_command_line(r'"C:\a b\x.exe" -Profiles "My Profile" Two') == [
        r"C:\a b\x.exe",
        "-Profiles",
        "My Profile",
        "Two",
    ]
    args = parse_arguments(["-Profiles", "A", "B C", "-ProcessOfflineProfiles", "On"], "x.bat")
    assert args.profiles == ["A", "B C"] and args.process_offline and args.mode is Mode.UPDATE
    assert parse_arguments([], "CPUU_Rollback.bat").mode is Mode.UNDO
    assert parse_arguments([], "CPUU_Cleanup.bat").mode is Mode.CLEANUP
    assert parse_arguments(["-Mode", "Rollback"], "CPUU_Update.bat").mode is Mode.UNDO
    assert parse_arguments(["-Cleanup"], "run.bat").mode is Mode.CLEANUP


def test_mode_argument_in_a_direct_command_line(bench):
    bench.add("P")
    bench.run()
    exe = bench.stage_dir + r"\ClientProfileUpdatingUtility.exe"
    ws = bench.ws
    ws.register_task("direct", f'"{exe}" -Mode Cleanup', bench.stage_dir, user=bench.user)
    ws.start_task("direct")
    bench.clock.advance(60)
    assert ws.task("direct").last_result == ExitFlags.SUCCESS
    assert ws.profile(bench.user, "P").state is ProfileState.CLEANED


def test_a_full_disk_leaves_empty_log_and_result_files(bench):
    bench.add("Online")  # no OST: nothing to back up, so the profile itself can be updated
    fs = bench.ws.fs
    fs.reserved_bytes = fs.capacity_bytes - fs.used_bytes + fs.reserved_bytes
    assert fs.free_bytes == 0
    run = bench.run()
    assert run.exit == ExitFlags.SUCCESS | ExitFlags.FAILED_TO_WRITE_LOG
    # NTFS still creates the files (a directory entry costs no cluster), then writes fail.
    assert run.results.profiles == () and run.log == ""


def test_the_ini_never_shows_its_passwords_in_a_repr():
    ini = read_ini(b"Admin CORP\\svc\r\nPassword S3cr3t==\r\n")
    assert ini.get("Password") == "S3cr3t=="
    assert "S3cr3t" not in repr(ini) and "S3cr3t" not in str(ini)
    assert "password" in repr(ini)


def test_batch_percent_signs_expand_as_cmd_does():
    """``%%`` in a batch file is one ``%`` (a profile named "50% Sales" survives), and an argument
    that holds ``%1`` is not expanded a second time."""
    from cpuu_fleet.lab.cpuu_emulator import find_cpuu_call

    batch = (
        '@echo off\r\ncd /d "%~dp0"\r\n'
        'ClientProfileUpdatingUtility.exe -Profiles "50%% Sales" %1\r\n'
    )
    call = find_cpuu_call(batch, "C:\\Stage\\CPUU_Update.bat", '"%2-literal"', "C:\\Stage")
    assert call is not None
    assert call.args == ["-Profiles", "50% Sales", "%2-literal"]


def test_cpuu_runs_as_its_user_under_the_folders_acls(bench):
    """A hardened staging folder: CPUU (a standard user) may not write beside its exe, nor read
    an INI only SYSTEM and Administrators may read; a grant for its SID lets it do both."""
    bench.add("Online")
    ws, fs = bench.ws, bench.ws.fs
    admins = frozenset({SYSTEM_SID, ADMINISTRATORS_SID})
    fs.set_acl(bench.stage_dir, Acl(read=admins | {USERS_SID}, write=admins, protected=True))
    run = bench.run()
    assert run.exit & ExitFlags.FAILED_TO_WRITE_LOG and run.results is None and run.log is None

    sid = ws.sid_of(bench.user)
    fs.set_acl(
        bench.stage_dir, Acl(read=admins | {USERS_SID}, write=admins | {sid}, protected=True)
    )
    fs.set_acl(bench.stage_dir + r"\CPUU.ini", Acl(read=admins, protected=True))
    run = bench.run()
    assert "Access to the path is denied" in run.log and run.exit != ExitFlags.SUCCESS

    fs.set_acl(bench.stage_dir + r"\CPUU.ini", Acl(read=admins | {sid}, protected=True))
    run = bench.run()
    assert run.results is not None and "denied" not in run.log, run.log
    assert not run.exit & ExitFlags.FAILED_TO_WRITE_LOG
