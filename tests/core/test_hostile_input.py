"""The pieces that keep a hostile workstation's data bounded and harmless, one at a time.

Secrets masked in a stream of chunks (a secret split anywhere), result files read in flat memory
and within a row bound (``results show`` too), workstation text made safe for a terminal, and the
play's ``limits:`` read like every other playbook key (bad values name the line).
"""

from __future__ import annotations

import base64
import codecs
import json
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpuu_fleet.cli import app
from cpuu_fleet.cpuu import MAX_LINE_CHARS, parse_result_bytes, parse_result_file
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.playbook import load_playbook
from cpuu_fleet.limits import MIB, Limits, parse_size
from cpuu_fleet.redact import FILE_ENCODINGS, MASK, Redactor, printable
from cpuu_fleet.visit.session import ErrorClass, SessionError
from cpuu_fleet.visit.steps import _DownloadSink

SECRET = "Pässwört€-lab-42"


@pytest.mark.parametrize("encoding", FILE_ENCODINGS)
def test_a_secret_split_anywhere_between_chunks_is_masked(encoding):
    redactor = Redactor()
    redactor.add(SECRET)
    needle = SECRET.encode(encoding)
    data = b"head " * 7 + needle + b" middle " + needle + b" tail"
    for cut in range(1, len(needle) + 2):
        scrubber = redactor.byte_scrubber()
        out = b"".join(scrubber.feed(data[i : i + cut]) for i in range(0, len(data), cut))
        out += scrubber.flush()
        assert needle not in out and out.count(MASK.encode(encoding)) == 2, cut
        assert scrubber.found == 2
        assert out == redactor.scrub_bytes(data)


def test_a_scrubber_without_secrets_passes_bytes_through():
    scrubber = Redactor().byte_scrubber()
    assert scrubber.feed(b"abc") == b"abc" and scrubber.flush() == b""


def test_printable_escapes_c0_c1_and_bidi_but_keeps_text():
    assert printable("Zoë Müller, Boîte partagée") == "Zoë Müller, Boîte partagée"
    text = "a\x1b[31mb\x9bc\u202ed\u2066e\nf\tg"
    assert printable(text) == "a\\x1b[31mb\\x9bc\\u202ed\\u2066e\\nf\\tg"
    assert InputError(text).render() == printable(text)  # the one function, also for errors


def _big_result_file(path: Path, lines: int) -> Path:
    with path.open("wb") as out:
        out.write(codecs.BOM_UTF16_LE)
        block = "".join(f"Profile {n}\t10\t0\r\n" for n in range(1000)).encode("utf-16-le")
        for _ in range(lines // 1000):
            out.write(block)
    return path


def test_a_huge_result_file_is_read_in_flat_memory_up_to_the_row_limit(tmp_path):
    path = _big_result_file(tmp_path / "CPUU_huge.csv", 400_000)  # 16 MB of UTF-16
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


def test_results_show_stops_at_max_rows_and_says_so(tmp_path):
    path = _big_result_file(tmp_path / "CPUU_huge.csv", 5000)
    shown = CliRunner().invoke(app, ["results", "show", "--json", "--max-rows", "10", str(path)])
    (data,) = json.loads(shown.stdout)
    assert data["truncated"] and len(data["profiles"]) == 10
    # The CLI's entry point turns this into one line on stderr and exit code 2.
    assert isinstance(shown.exception, InputError)
    assert "more than 10 lines" in str(shown.exception) and "--max-rows" in str(shown.exception)


def _playbook(tmp_path: Path, limits: str) -> Path:
    path = tmp_path / "play.yml"
    path.write_text(
        f"- name: p\n  hosts: all\n  limits: {limits}\n  steps: [preflight]\n", encoding="utf-8"
    )
    return path


def test_a_play_reads_its_limits_with_units(tmp_path):
    play = load_playbook(
        _playbook(tmp_path, "{file_size: 1 MiB, output_size: 512KiB, step_time: 90}")
    ).plays[0]
    assert play.limits == Limits(file_bytes=MIB, output_bytes=512 * 1024, step_seconds=90.0)
    assert load_playbook(_playbook(tmp_path, "{}")).plays[0].limits == Limits()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{file_size: lots}", "'file_size'"),
        ("{result_rows: 0}", "'result_rows' must be a whole number"),
        ("{step_time: -1}", "'step_time' must be a number of seconds"),
        ("{file_sise: 1 MiB}", "unknown key 'file_sise'"),
        ("64 MiB", "'limits' must be a mapping"),
    ],
)
def test_a_bad_limit_is_an_input_error_on_its_line(tmp_path, limits, message):
    with pytest.raises(InputError) as caught:
        load_playbook(_playbook(tmp_path, limits))
    assert message in caught.value.message and caught.value.line == 3


def test_sizes_take_binary_and_decimal_units():
    assert parse_size(65536) == 65536
    assert parse_size("64 MiB") == 64 * MIB and parse_size("1GB") == 10**9
    with pytest.raises(ValueError):
        parse_size("0")


def _sink(folder: Path, done: list, **limits: int) -> _DownloadSink:
    return _DownloadSink(
        folder, "C:\\stage", lambda name: False, lambda *a: done.append(a), Limits(**limits)
    )


def _header(length: object) -> dict:
    return {"Path": "C:\\stage\\CPUU_a.log", "Name": "CPUU_a.log", "Length": length}


def test_a_download_shorter_than_its_header_is_broken_and_set_aside(tmp_path):
    done: list = []
    sink = _sink(tmp_path, done)
    sink(_header(10))
    sink(base64.b64encode(b"12345").decode("ascii"))
    with pytest.raises(SessionError) as caught:
        sink.close()
    assert caught.value.error_class is ErrorClass.PROTOCOL
    assert "5 of the 10 bytes" in caught.value.message
    assert "download broke off after 5 of 10 bytes" in (sink.abandon() or "")
    assert [p.name for p in tmp_path.iterdir()] == ["CPUU_a.log.partial"] and done == []


def test_a_header_over_the_size_limit_is_refused_before_any_file_exists(tmp_path):
    done: list = []
    sink = _sink(tmp_path, done, file_bytes=1024)
    with pytest.raises(SessionError) as caught:
        sink(_header(2 * 1024**3))  # "a 2 GB file"
    assert caught.value.error_class is ErrorClass.LIMIT and "file_size" in caught.value.message
    assert sink.abandon() is None and list(tmp_path.iterdir()) == []
    with pytest.raises(SessionError) as caught:
        _sink(tmp_path, done)(_header("lots"))
    assert caught.value.error_class is ErrorClass.PROTOCOL
