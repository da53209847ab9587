"""Scrub secret values out of any text before it is logged, journalled or reported.

Secrets are masked at the source (``credentials.Secret`` prints as ``********``), but error texts come
from places we do not control: a pypsrp exception that quotes a URL, a workstation's error message, a
rendered INI. A :class:`Redactor` is the last line of defence: every revealed secret is registered with
it, and every free text that leaves the process goes through :meth:`Redactor.scrub`; every file
collected from a workstation goes through a :class:`ByteScrubber` before it is kept.

:func:`printable` is the other half of "text that leaves the process": what a workstation wrote
never reaches a terminal, a log line or a CSV cell with its control characters live.
"""

from __future__ import annotations

import re
import threading

MASK = "********"

#: The encodings a Windows file may hold a secret in: UTF-8, UTF-16 (both byte orders), ANSI.
FILE_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "cp1252")

# The password part of a URL's user info: "http://user:PASSWORD@proxy:3128". Such a URL (Ansible's
# ansible_psrp_proxy) carries a secret under a name that says nothing of it.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^@/\s]+@")


def mask_url_passwords(text: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:********@host``, anywhere in a text."""
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(lambda match: f"{match['head']}{MASK}@", text)


class Redactor:
    """Replaces every registered secret value in a text with ``********``."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        """Register a revealed secret. Very short values are ignored: masking "a" would shred text."""
        if value and len(value) >= 4:
            with self._lock:
                self._secrets.add(value)

    def scrub(self, text: str | None) -> str | None:
        """The text with every registered secret, and every password inside a URL, masked."""
        if not text:
            return text
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return mask_url_passwords(text)

    def needles(self, encodings: tuple[str, ...] = FILE_ENCODINGS) -> list[tuple[bytes, bytes]]:
        """Every registered secret and its mask as bytes, in each encoding; longest first."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        pairs: list[tuple[bytes, bytes]] = []
        for secret in secrets:
            for encoding in encodings:
                try:
                    pair = (secret.encode(encoding), MASK.encode(encoding))
                except UnicodeEncodeError:
                    continue
                if pair not in pairs:
                    pairs.append(pair)
        return pairs

    def scrub_bytes(self, data: bytes, encodings: tuple[str, ...] = FILE_ENCODINGS) -> bytes:
        """Mask secrets in a file's bytes, in each encoding a Windows file may use."""
        for needle, mask in self.needles(encodings):
            data = data.replace(needle, mask)
        return data

    def byte_scrubber(self) -> ByteScrubber:
        """A :class:`ByteScrubber` for one file, with the secrets registered now."""
        return ByteScrubber(self.needles())


class ByteScrubber:
    """Masks secrets in a stream of bytes that arrives in pieces (a download), in flat memory.

    A secret may be split between two pieces, so the last ``longest needle - 1`` bytes are held
    back until the next piece (or :meth:`flush`) shows how they go on: a needle that starts
    before the held-back tail lies wholly inside what was seen, so it was already replaced.
    ``found`` counts the masked occurrences.
    """

    def __init__(self, needles: list[tuple[bytes, bytes]]):
        self.needles = needles
        self.keep = max((len(needle) for needle, _ in needles), default=1) - 1
        self.found = 0
        self._tail = b""

    def feed(self, block: bytes) -> bytes:
        """The bytes of ``block`` (and earlier pieces) that are now safe to write."""
        if not self.needles:
            return block
        data = self._mask(self._tail + block)
        cut = max(0, len(data) - self.keep)
        self._tail = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """The held-back end of the stream (the file is complete, or being set aside)."""
        data, self._tail = self._tail, b""
        return data

    def _mask(self, data: bytes) -> bytes:
        for needle, mask in self.needles:
            count = data.count(needle)
            if count:
                self.found += count
                data = data.replace(needle, mask)
        return data


def printable(text: str) -> str:
    """Workstation text made safe for a terminal, a log line or a CSV cell: the one place.

    Every character that is not printable becomes its escape (``\\x1b``, ``\\x9b``,
    ``\\u202e``, ``\\n``): C0 and C1 control characters (an ESC or CSI would drive the operator's
    terminal), DEL, bidi embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069: they
    turn what follows around on screen), other format characters and line separators. A space
    stays. Printable text comes back unchanged (and fast: the check runs in C).
    """
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


#: The process-wide redactor: the engine registers every secret it reveals here.
REDACTOR = Redactor()
