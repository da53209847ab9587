"""The vendor's facts as code: codes, flags and result files as an operator would meet them."""

from __future__ import annotations

import pytest

from cpuu_fleet.cpuu import (
    PROFILE_CODES,
    ExitFlags,
    ExitStatus,
    Mode,
    Outcome,
    code_info,
    parse_result_bytes,
    parse_result_file,
)
from cpuu_fleet.errors import InputError
from cpuu_fleet.visit.outcome import judge_exit

ROWS = 'Outlook\t10\t0\r\nJosé «Work» "main"\t6\t\r\nArchive 2019\t2\t10\r\n'


def test_all_23_codes_have_names_and_outcomes():
    assert sorted(PROFILE_CODES) == list(range(23))
    assert PROFILE_CODES[7].name == "PROFILE_HAS_NO_SEREVER"  # the vendor's spelling, kept
    failing = [
        c for c in PROFILE_CODES.values() if c.outcome in (Outcome.FAILED, Outcome.NEEDS_ACTION)
    ]
    assert failing and all(c.hint for c in failing)


@pytest.mark.parametrize(
    ("code", "outcome", "hint_word"),
    [
        (6, Outcome.NEEDS_ACTION, "ProcessOfflineProfiles"),
        (22, Outcome.NEEDS_ACTION, "disk"),
        (20, Outcome.NEEDS_ACTION, "dialog"),
        (10, Outcome.OK, ""),
        (11, Outcome.FAILED, "log"),
    ],
)
def test_outcome_and_hint_of_codes(code, outcome, hint_word):
    info = code_info(code)
    assert info.outcome is outcome
    assert hint_word in info.hint


def test_unknown_code_is_described_not_raised():
    info = code_info(57)
    assert info.outcome is Outcome.UNKNOWN
    assert info.meaning == "unknown code 57"


@pytest.mark.parametrize("value", [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
def test_every_flag_decodes(value):
    status = ExitStatus(value)
    assert status.names() == [ExitFlags(value).name]


def test_zero_is_cannot_start_not_success():
    status = ExitStatus(0)
    assert status.cannot_start and not status.succeeded
    assert status.names() == ["CANNOT_START"]


def test_combined_flags_and_values_above_255_are_kept():
    status = ExitStatus(1 | 4 | 256)
    assert status.names() == ["SUCCESS", "SWITCH_ERR", "FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE"]
    assert not status.succeeded  # SWITCH_ERR spoils it
    assert ExitStatus(1 | 256).succeeded  # a log-share problem does not
    assert ExitStatus(4096 | 1).names()[-1] == "UNKNOWN_0x1000"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0xC000013A, "CONSOLE_CLOSED"),
        (0xC0000005, "ACCESS_VIOLATION"),
        (9009, "CMD_NOT_FOUND"),
        (0x80070002, "FILE_NOT_FOUND"),
        (0xC0000001, "WINDOWS_0xC0000001"),
    ],
)
def test_windows_exit_codes_are_named_never_decoded_as_cpuu_flags(code, name):
    """0xC0000001 has CPUU's SUCCESS bit set: read as a mask, a failed launch would pass."""
    status = ExitStatus(code)
    assert status.names() == [name]
    assert status.flags == 0 and not status.succeeded
    verdict = judge_exit(code, [])
    assert (verdict.state, verdict.error_class) == ("failed", "cpuu")
    assert name in (verdict.error_message or "")


def test_mode_names_include_vendor_rollback():
    assert Mode.parse("Rollback") is Mode.UNDO
    assert Mode.UNDO.batch_file == "CPUU_Rollback.bat"
    with pytest.raises(InputError, match="unknown mode"):
        Mode.parse("explode")


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: t.encode("utf-8"),
        lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
        lambda t: t.encode("utf-16"),  # with BOM, native order
        lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
        lambda t: t.encode("cp1252"),
        lambda t: t.replace("\r\n", "\n").encode("utf-8"),
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "cp1252", "lf"],
)
def test_result_file_in_each_encoding(encode):
    parsed = parse_result_bytes(
        encode("Profile\tCurrent\tPrevious\r\n" + ROWS + "\r\n\r\n"), "r.csv"
    )
    assert [p.profile for p in parsed.profiles] == ["Outlook", 'José «Work» "main"', "Archive 2019"]
    assert [(p.current, p.previous) for p in parsed.profiles] == [(10, 0), (6, None), (2, 10)]
    assert parsed.had_header and not parsed.problems


def test_malformed_lines_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "CPUU_PC1_x.csv"
    path.write_bytes(b"Outlook\t10\t0\nno tabs here\nWork\tten\t0\nX\t1\t2\t3\nLegacy\t99\t0\n")
    parsed = parse_result_file(path)
    assert [p.profile for p in parsed.profiles] == ["Outlook", "Legacy"]
    assert parsed.profiles[1].info.meaning == "unknown code 99"
    assert [(p.line, p.reason.split()[0]) for p in parsed.problems] == [
        (2, "expected"),
        (3, "current"),
        (4, "4"),
    ]


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "CPUU_x.csv"
    path.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(InputError, match="not a text file") as info:
        parse_result_file(path)
    assert str(path) in info.value.render()


def test_input_error_is_always_one_line():
    error = InputError("no such host 'pc\nFAKE: ok'", where="inv\r.yml", line=3)
    rendered = error.render()
    assert "\n" not in rendered and "\r" not in rendered
    assert rendered == "inv\\r.yml:3: no such host 'pc\\nFAKE: ok'"
