"""WindowsFS: Windows path semantics over a sandbox folder, as a handler or the emulator sees them."""

from __future__ import annotations

import os

import pytest

from cpuu_fleet.lab.winfs import (
    ADMINISTRATORS_SID,
    SYSTEM_SID,
    USERS_SID,
    Acl,
    DiskFullError,
    WindowsFS,
    wildcard_match,
)


@pytest.fixture
def fs(tmp_path):
    return WindowsFS(tmp_path / "pc-0001", capacity_bytes=10_000, clock=lambda: 1_700_000_000.0)


def test_paths_map_under_the_sandbox_with_either_slash(fs, tmp_path):
    fs.mkdir(r"C:\Users\jdupont")
    fs.write_bytes("c:/Users/jdupont/a.txt", b"hello")
    assert (
        fs.resolve(r"C:\Users\jdupont\a.txt")
        == tmp_path / "pc-0001" / "C" / "Users" / "jdupont" / "a.txt"
    )
    assert fs.read_bytes(r"C:\Users\jdupont\a.txt") == b"hello"


def test_existing_entries_match_ignoring_case_new_ones_keep_their_case(fs):
    fs.mkdir(r"C:\ProgramData\CPUU-Fleet")
    fs.write_bytes(r"c:\programdata\cpuu-fleet\Payload.INI", b"x")
    assert fs.listdir(r"C:\PROGRAMDATA") == ["CPUU-Fleet"]
    assert fs.listdir(r"C:\ProgramData\cpuu-fleet") == ["Payload.INI"]
    assert fs.exists(r"C:\PROGRAMDATA\CPUU-FLEET\payload.ini")
    fs.write_bytes(r"C:\ProgramData\CPUU-FLEET\PAYLOAD.ini", b"yy")  # same file, overwritten
    assert fs.listdir(r"C:\ProgramData\cpuu-fleet") == ["Payload.INI"]
    assert fs.read_bytes(r"C:\ProgramData\cpuu-fleet\payload.ini") == b"yy"


@pytest.mark.parametrize(
    "bad",
    [
        r"C:\..\..\etc\passwd",
        r"C:\Users\..\..\x",
        r"\\server\share\x",
        r"\\?\C:\x",
        r"\\.\PhysicalDrive0",
        r"//server/share",
        "relative\\x.txt",
        r"\Windows\x",
        "C:foo",
        "C:\\a\x00b",
        r"C:\Users\NUL",
        r"C:\Users\con.txt",
        r"C:\Users\LPT1",
        r"C:\a\b:stream",
        r"C:\a\b?c",
        r"D:\data",
        "",
    ],
)
def test_escape_attempts_and_invalid_paths_are_refused(fs, bad):
    with pytest.raises(ValueError):
        fs.resolve(bad)


def test_dotdot_inside_the_drive_is_fine(fs):
    fs.mkdir(r"C:\a\b")
    fs.write_bytes(r"C:\a\b\..\x.txt", b"1")
    assert fs.listdir(r"C:\a") == ["b", "x.txt"]


def test_symlink_out_of_the_sandbox_is_refused(fs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, fs.resolve("C:\\link"))
    with pytest.raises(ValueError):
        fs.write_bytes(r"C:\link\x.txt", b"1")
    assert not (outside / "x.txt").exists()


def test_trailing_dots_and_spaces_are_dropped_as_win32_does(fs):
    fs.write_bytes("C:\\note.txt. ", b"1")
    assert fs.listdir("C:\\") == ["note.txt"]


def test_free_bytes_track_writes_overwrites_deletes(tmp_path):
    fs = WindowsFS(tmp_path / "h", capacity_bytes=1000, reserved_bytes=100)
    assert fs.free_bytes == 900
    fs.write_bytes(r"C:\a.bin", b"x" * 300)
    assert fs.free_bytes == 600
    fs.write_bytes(r"C:\a.bin", b"x" * 100)
    assert fs.free_bytes == 800
    fs.mkdir(r"C:\d")
    fs.write_bytes(r"C:\d\b.bin", b"x" * 50)
    fs.delete(r"C:\d", recursive=True)
    fs.delete(r"C:\A.BIN")
    assert fs.free_bytes == 900


def test_disk_full_is_an_oserror_with_the_windows_message(tmp_path):
    fs = WindowsFS(tmp_path / "h", capacity_bytes=1000)
    with fs.open_write(r"C:\big.bin") as out:
        out.write(b"x" * 600)
        with pytest.raises(DiskFullError) as caught:
            out.write(b"x" * 600)
    assert isinstance(caught.value, OSError)
    assert "not enough space on the disk" in str(caught.value)
    assert fs.stat(r"C:\big.bin").size == 600  # what fitted stays, as on a full volume
    assert fs.free_bytes == 400


def test_writing_needs_an_existing_parent(fs):
    with pytest.raises(FileNotFoundError, match="Could not find a part of the path"):
        fs.write_bytes(r"C:\missing\x.txt", b"")


def test_delete_refuses_a_non_empty_directory_without_recursive(fs):
    fs.mkdir(r"C:\d")
    fs.write_bytes(r"C:\d\x", b"1")
    with pytest.raises(OSError, match="not empty"):
        fs.delete(r"C:\d")
    with pytest.raises(FileNotFoundError):
        fs.delete(r"C:\nothing")


def test_move_replaces_only_when_asked_and_renames_case(fs):
    fs.write_bytes(r"C:\f.partial", b"new")
    fs.write_bytes(r"C:\f", b"old!")
    with pytest.raises(FileExistsError):
        fs.move(r"C:\f.partial", r"C:\f")
    fs.move(r"C:\F.PARTIAL", r"C:\f", replace=True)
    assert fs.read_bytes(r"C:\f") == b"new"
    assert fs.listdir("C:\\") == ["f"]
    assert fs.free_bytes == 10_000 - 3
    fs.move(r"C:\f", r"C:\F")
    assert fs.listdir("C:\\") == ["F"]


def test_glob_is_case_insensitive_and_brackets_are_literal(fs):
    fs.mkdir(r"C:\w")
    for name in ("CPUU_pc_1.csv", "cpuu_pc_1.log", "other.txt", "CPUU_[x].csv"):
        fs.write_bytes("C:\\w\\" + name, b"")
    assert fs.glob(r"C:\w", "CPUU_*") == [
        r"C:\w\CPUU_[x].csv",
        r"C:\w\CPUU_pc_1.csv",
        r"C:\w\cpuu_pc_1.log",
    ]
    assert fs.glob(r"C:\w", "CPUU_[x].csv") == [r"C:\w\CPUU_[x].csv"]
    assert fs.glob(r"C:\nowhere", "*") == []
    assert wildcard_match("cpuu_?.CSV", "CPUU_1.csv")


def test_temp_path_creates_unique_empty_files_in_windows_temp(fs):
    first, second = fs.temp_path(), fs.temp_path()
    assert first != second
    assert first.lower().startswith("c:\\windows\\temp\\tmp") and first.endswith(".tmp")
    assert fs.stat(first).size == 0


def test_stat_reports_size_and_the_workstation_clock(fs):
    fs.write_bytes(r"C:\x", b"12345")
    info = fs.stat(r"c:\X")
    assert info.size == 5 and not info.is_dir
    assert info.mtime.timestamp() == 1_700_000_000.0
    assert fs.to_windows(fs.resolve(r"c:\X")) == r"C:\x"


def test_a_reopened_sandbox_counts_the_files_already_there(tmp_path):
    first = WindowsFS(tmp_path / "h", capacity_bytes=1000)
    first.write_bytes(r"C:\kept.bin", b"x" * 300)
    again = WindowsFS(tmp_path / "h", capacity_bytes=1000)
    assert again.free_bytes == 700
    assert again.read_bytes(r"C:\KEPT.bin") == b"x" * 300


def test_walk_files_lists_every_file_below_a_folder(fs):
    fs.mkdir(r"C:\p\sub\deeper")
    fs.write_bytes(r"C:\p\b.txt", b"")
    fs.write_bytes(r"C:\p\sub\deeper\a.txt", b"")
    assert fs.walk_files(r"C:\p") == [r"C:\p\b.txt", r"C:\p\sub\deeper\a.txt"]
    assert fs.walk_files(r"C:\missing") == []


# ------------------------------------------------------------------------------- owners and ACLs

USER_SIDS = frozenset({"S-1-5-21-1-2-3-1001", USERS_SID})


def test_programdata_lets_users_read_and_create_until_a_protected_acl_says_otherwise(fs):
    fs.mkdir(r"C:\ProgramData\cpuu-fleet\v1")
    fs.write_bytes(r"C:\ProgramData\cpuu-fleet\v1\CPUU.ini", b"secret")
    ini = r"C:\ProgramData\cpuu-fleet\v1\CPUU.ini"
    assert fs.allowed(ini, USER_SIDS, write=False) and fs.allowed(ini, USER_SIDS, write=True)
    users_read = frozenset({SYSTEM_SID, ADMINISTRATORS_SID, USERS_SID})
    fs.set_acl(
        r"C:\ProgramData\cpuu-fleet",
        Acl(read=users_read, write=frozenset({SYSTEM_SID, ADMINISTRATORS_SID}), protected=True),
    )
    assert fs.allowed(ini, USER_SIDS, write=False)  # inherited down to the file
    assert not fs.allowed(ini, USER_SIDS, write=True)
    assert not fs.allowed(r"C:\ProgramData\cpuu-fleet\v1\new.dll", USER_SIDS, write=True)
    fs.set_acl(ini, Acl(read=frozenset({ADMINISTRATORS_SID}), protected=True))
    assert not fs.allowed(ini, USER_SIDS, write=False)
    assert fs.allowed(ini, frozenset({ADMINISTRATORS_SID}), write=False)


def test_an_acl_moves_with_its_file_and_goes_with_a_deleted_folder(fs):
    fs.mkdir(r"C:\d")
    fs.write_bytes(r"C:\d\a.partial", b"x")
    private = Acl(read=frozenset({SYSTEM_SID}), protected=True)
    fs.set_acl(r"C:\d\a.partial", private)
    fs.move(r"C:\d\a.partial", r"C:\d\a")
    assert fs.acl(r"C:\d\a") == private and fs.acl(r"C:\d\a.partial") == Acl()
    fs.set_acl(r"C:\d", Acl(owner="S-1-5-21-9"))
    fs.delete(r"C:\d", recursive=True)
    fs.mkdir(r"C:\d")
    fs.write_bytes(r"C:\d\a", b"y")
    assert fs.owner(r"C:\d") == ADMINISTRATORS_SID and fs.acl(r"C:\d\a") == Acl()
