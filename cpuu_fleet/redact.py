"""Scrub secret values out of any text before it is logged, journalled or reported.

Secrets are masked at the source (``credentials.Secret`` prints as ``********``), but error texts come
from places we do not control: a pypsrp exception that quotes a URL, a workstation's error message, a
rendered INI. A :class:`Redactor` is the last line of defence: every revealed secret is registered with
it, and every free text that leaves the process goes through :meth:`Redactor.scrub`.
"""

from __future__ import annotations

import re
import threading

MASK = "********"

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

    def scrub_bytes(
        self, data: bytes, encodings: tuple[str, ...] = ("utf-8", "utf-16-le", "cp1252")
    ) -> bytes:
        """Mask secrets in a file's bytes, in each encoding a Windows file may use."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            for encoding in encodings:
                try:
                    needle = secret.encode(encoding)
                    mask = MASK.encode(encoding)
                except UnicodeEncodeError:
                    continue
                data = data.replace(needle, mask)
        return data


#: The process-wide redactor: the engine registers every secret it reveals here.
REDACTOR = Redactor()
