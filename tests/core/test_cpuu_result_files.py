"""CPUU's result files from a hostile workstation: read in flat memory within a row bound, and a
line too long for a profile is one problem, not the end of reading."""

from __future__ import annotations

import tracemalloc

from cpuu_fleet.cpuu import MAX_LINE_CHARS, parse_result_bytes, parse_result_file
from cpuu_fleet.limits import MIB
from tests.support.result_files import big_result_file


def test_a_huge_result_file_is_read_in_flat_memory_up_to_the_row_limit(tmp_path):
    path = big_result_file(tmp_path / "CPUU_huge.csv", 400_000)  # 16 MB of UTF-16
    tracemalloc.start()
    try:
        parsed = parse_result_file(path, max_rows=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.truncated and len(parsed.profiles) == 1000
    assert parsed.encoding == "utf-16-le-bom"
    assert peak < 8 * MIB, peak  # the file itself would be 16 MB, as text 4 times that


def test_a_line_too_long_for_a_profile_is_one_problem_and_reading_goes_on():
    data = ("A\t10\t0\r\n" + "x" * (3 * MAX_LINE_CHARS) + "\r\nB\t2\t0\r\n").encode("utf-8")
    parsed = parse_result_bytes(data, "f.csv")
    assert [p.profile for p in parsed.profiles] == ["A", "B"]
    assert [(p.line, p.reason) for p in parsed.problems] == [
        (2, f"longer than {MAX_LINE_CHARS} characters")
    ]
    assert [p.line for p in parsed.profiles] == [1, 3]
