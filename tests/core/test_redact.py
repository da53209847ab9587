"""Workstation text made harmless: a secret masked wherever chunks split it, and text made safe
for a terminal."""

from __future__ import annotations

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.redact import FILE_ENCODINGS, MASK, Redactor, printable

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
