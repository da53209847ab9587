"""The one Windows text decoder: every encoding Windows tools write is found and named in the
vocabulary templates.yml uses, so what is read can be written back byte for byte."""

from __future__ import annotations

import io

import pytest

from cpuu_fleet import wintext
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.render import OutputFormat

TEXT = "[General]\r\nProfil=Boîte « partagée » €\r\n"


@pytest.mark.parametrize("name", [n for n in wintext.ENCODINGS if n != "utf-8"])
def test_each_encoding_is_found_by_its_own_name_and_round_trips(name):
    data = OutputFormat(encoding=name).encode(TEXT, host="pc", template="t")
    text, found = wintext.decode(data, "f")
    assert (text, found) == (TEXT, name)
    assert OutputFormat(encoding=found).encode(text, host="pc", template="t") == data


def test_plain_utf8_is_utf8_and_a_stray_ansi_byte_is_cp1252():
    assert wintext.decode(TEXT.encode("utf-8"), "f")[1] == "utf-8"
    assert wintext.decode(TEXT.encode("cp1252"), "f") == (TEXT, "cp1252")


def test_a_file_with_nul_bytes_that_is_not_utf16_is_refused():
    with pytest.raises(InputError, match="binary content"):
        wintext.decode(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff", "setup.exe")


def test_ansi_can_be_refused_where_it_would_only_hide_a_wrong_file():
    with pytest.raises(InputError, match="not UTF-8 or UTF-16"):
        wintext.decode("pc-é\n".encode("cp1252"), "retry.txt", ansi=False)
    assert wintext.decode("pc-é\n".encode("utf-16"), "retry.txt", ansi=False)[0] == "pc-é\n"


def test_strict_cp1252_refuses_bytes_windows_leaves_undefined():
    assert "\ufffd" in wintext.decode(b"a\x81b\xe9", "f")[0]
    with pytest.raises(InputError, match="cp1252"):
        wintext.decode(b"a\x81b\xe9", "f", strict=True)


def test_detection_reads_in_pieces_and_leaves_the_stream_at_its_start():
    data = ("x" * 10 + "\n").encode("utf-16-le") * (wintext.READ_BYTES // 11)
    stream = io.BytesIO(data)
    assert wintext.detect(stream, "f") == "utf-16-le"
    assert stream.tell() == 0


def test_aliases_name_the_same_encodings():
    assert wintext.canonical("Unicode") == "utf-16-le-bom"
    assert wintext.canonical("ANSI") == "cp1252"
    with pytest.raises(InputError, match="unknown encoding"):
        wintext.canonical("ebcdic")
