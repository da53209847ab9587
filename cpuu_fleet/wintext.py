"""Windows text: one vocabulary of encoding names and one decoder for what Windows tools write.

CPUU's result files, the wizard's INI and batch files, PowerShell 5's ``Out-File`` and Notepad
write text in whatever their author chose, and none of them documents which. One detector reads
them all, piece by piece (a hostile file costs bounded memory), and names what it found in the
vocabulary ``templates.yml`` uses, so that what was read can be written back byte for byte.

Detection order: a byte order mark decides; else BOM-less UTF-16 is recognised by where its NUL
bytes fall; else strict UTF-8; else cp1252, the ANSI code page of Western European Windows (our
assumption for "ANSI": a file from another code page reads as the wrong characters, never fails).
A file with NUL bytes that is not UTF-16 is not text and is refused.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cpuu_fleet.errors import InputError

ENCODINGS: dict[str, tuple[str, bytes]] = {
    "utf-8": ("utf-8", b""),
    "utf-8-bom": ("utf-8", codecs.BOM_UTF8),
    "utf-16-le-bom": ("utf-16-le", codecs.BOM_UTF16_LE),
    "utf-16-le": ("utf-16-le", b""),
    "utf-16-be-bom": ("utf-16-be", codecs.BOM_UTF16_BE),
    "utf-16-be": ("utf-16-be", b""),
    "cp1252": ("cp1252", b""),
}
"""Encoding name → (Python codec, the byte order mark that starts the file)."""

ALIASES = {
    "utf8": "utf-8",
    "utf-8-sig": "utf-8-bom",
    "utf8-bom": "utf-8-bom",
    "utf-16": "utf-16-le-bom",
    "unicode": "utf-16-le-bom",
    "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be",
    "ansi": "cp1252",
    "windows-1252": "cp1252",
}
"""Other names operators (and Windows' own dialogs) give the same encodings."""

READ_BYTES = 1024 * 1024
"""Bytes read at a time: a file is never held whole to find or decode its encoding."""

_BOMS = tuple((bom, name) for name, (_, bom) in ENCODINGS.items() if bom)


def canonical(name: str) -> str:
    """The vocabulary's name for ``name`` (any case, any alias); InputError if unknown."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in ENCODINGS:
        raise InputError(f"unknown encoding {name!r} (known: {', '.join(ENCODINGS)})")
    return key


def detect(stream: BinaryIO, source: str | Path, *, ansi: bool = True) -> str:
    """The encoding of the text in ``stream``, read in pieces (the stream is left at its start).

    ``ansi=False`` refuses text that is neither UTF-8 nor UTF-16 (where cp1252 would only hide a
    wrong file, e.g. a ``--limit @file``).
    """
    head = stream.read(3)
    stream.seek(0)
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    utf8 = codecs.getincrementaldecoder("utf-8")()
    utf8_ok, has_nul, even_nuls, odd_nuls, total = True, False, 0, 0, 0
    while block := stream.read(READ_BYTES):
        if b"\x00" in block:
            has_nul = True
            first, second = block[0::2].count(0), block[1::2].count(0)
            if total % 2:
                first, second = second, first
            even_nuls, odd_nuls = even_nuls + first, odd_nuls + second
        if utf8_ok:
            try:
                utf8.decode(block)
            except UnicodeDecodeError:
                utf8_ok = False
        total += len(block)
    stream.seek(0)
    if total >= 2 and has_nul:
        half = total // 2
        guess = (
            "utf-16-le"
            if odd_nuls > half * 0.4
            else "utf-16-be"
            if even_nuls > half * 0.4
            else None
        )
        if guess and total % 2 == 0:
            return guess
        raise InputError("not a text file (binary content)", where=source)
    if utf8_ok:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_ok = False
    if utf8_ok:
        return "utf-8"
    if not ansi:
        raise InputError("not UTF-8 or UTF-16 text", where=source)
    return "cp1252"


def decoded(
    stream: BinaryIO, name: str, source: str | Path, *, strict: bool = False
) -> Iterator[str]:
    """The stream's text in ``name``, piece by piece, its byte order mark left out.

    Bytes cp1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) become U+FFFD unless ``strict``;
    any other undecodable byte is an :class:`InputError`.
    """
    codec, bom = ENCODINGS[name]
    if bom and stream.read(len(bom)) != bom:
        stream.seek(0)
    errors = "replace" if codec == "cp1252" and not strict else "strict"
    decoder = codecs.getincrementaldecoder(codec)(errors=errors)
    try:
        while block := stream.read(READ_BYTES):
            yield decoder.decode(block)
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        if codec.startswith("utf-16"):
            raise InputError("not a text file (binary content)", where=source) from None
        raise InputError(f"not a readable {name} file ({exc.reason})", where=source) from None


def decode(
    data: bytes, source: str | Path, *, ansi: bool = True, strict: bool = False
) -> tuple[str, str]:
    """``(text, encoding name)`` of a whole file already in memory."""
    name = detect(io.BytesIO(data), source, ansi=ansi)
    return "".join(decoded(io.BytesIO(data), name, source, strict=strict)), name
