"""The vendor's payload folder, as a manifest: what must be on every workstation before a run.

Why a manifest: a wave touches thousands of hosts, and most of them already hold most of the payload
(a re-run, a retry, a second mode). The manifest gives each file's SHA-256, so the push step compares
it with what the host reports and sends only what differs. The manifest's own SHA-256 names the
payload *version*: its first 12 hex digits are the staging folder on the workstation
(``C:\\ProgramData\\cpuu-fleet\\<version>\\``), so two different payloads never mix on a host and an
unchanged payload lands in the same folder every time.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cpuu_fleet.errors import InputError
from cpuu_fleet.filenames import _RESERVED as WINDOWS_RESERVED_NAMES

#: The one file a payload cannot do without.
CPUU_EXE = "ClientProfileUpdatingUtility.exe"

_READ_BLOCK = 1024 * 1024

# What Windows cannot take in a file or folder name (NTFS through the Win32 API, which the push
# uses): control characters, <>:"|?*, and the backslash, its separator (a legal character in a
# name here, so "a\\b" would land as a file in a folder "a").
_WINDOWS_FORBIDDEN = re.compile(r'[\x00-\x1f<>:"|?*\\]')
#: Longest path inside the payload: the upload writes ``C:\ProgramData\cpuu-fleet\<version>\``
#: (39 characters, context.version_dir) + the path + ``.partial`` (8), and Windows PowerShell 5.1
#: keeps to MAX_PATH (259 characters and the NUL) unless long paths are enabled on the workstation,
#: which we do not assume.
MAX_RELATIVE = 259 - 39 - len(".partial")


@dataclass(frozen=True)
class PayloadFile:
    """One file of the payload: where it is here, where it goes on the host, and its fingerprint."""

    relative: str
    """The path inside the payload folder, with Windows separators (``sub\\file.dll``)."""
    source: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Payload:
    """A payload folder read once: its files in a stable order, their total, and its version."""

    root: Path
    files: tuple[PayloadFile, ...]
    manifest_sha256: str

    @property
    def version(self) -> str:
        """The staging folder name on a workstation: first 12 hex digits of the manifest hash."""
        return self.manifest_sha256[:12]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def manifest(self) -> dict:
        """The manifest as data (what :attr:`manifest_sha256` is the hash of)."""
        return _manifest_data(self.files)


def _manifest_data(files: tuple[PayloadFile, ...]) -> dict:
    return {
        "files": [{"path": f.relative, "size": f.size, "sha256": f.sha256} for f in files],
        "total_bytes": sum(f.size for f in files),
    }


def manifest_bytes(files: tuple[PayloadFile, ...]) -> bytes:
    """Canonical JSON (sorted keys, no spaces): the same folder always gives the same bytes."""
    return json.dumps(_manifest_data(files), sort_keys=True, separators=(",", ":")).encode("utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def windows_name_problem(name: str) -> str | None:
    """Why Windows cannot create a file or folder called ``name``, or None when it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
        return "is not valid UTF-8 (the push sends names as UTF-8)"
    bad = _WINDOWS_FORBIDDEN.search(name)
    if bad:
        return f"holds {bad.group()!r}, which Windows does not allow in a name"
    if name.endswith((".", " ")):
        return "ends with a dot or a space, which Windows drops"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in WINDOWS_RESERVED_NAMES:
        return f"{stem} is a reserved device name on Windows, with any extension"
    return None


def _check_windows_path(parts: tuple[str, ...], root: Path) -> None:
    """Every name of a payload path must be one Windows can create, and the whole path short
    enough: otherwise ``--check`` passed and the push failed on every host with a WSMan fault."""
    relative = "\\".join(parts)
    for part in parts:
        problem = windows_name_problem(part)
        if problem is not None:
            raise InputError(
                f"{relative!r}: the name {part!r} {problem}; no workstation could store it",
                where=root,
            )
    if len(relative) > MAX_RELATIVE:
        raise InputError(
            f"{relative[:60]!r}... is {len(relative)} characters long; in the staging folder on"
            f" a workstation a payload path may have {MAX_RELATIVE} (Windows' MAX_PATH)",
            where=root,
        )


def load_payload(folder: str | Path) -> Payload:
    """Read a payload folder into a :class:`Payload`.

    Every regular file under the folder is part of it (sub-folders too; the vendor ships DLLs beside
    the exe). Symbolic links are refused rather than followed: a link could pull a file from outside
    the folder onto every workstation. Paths are compared case-insensitively, as Windows will.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError("payload folder not found", where=root)
    files: list[PayloadFile] = []
    seen: dict[str, str] = {}
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix().lower()):
        if path.is_symlink():
            raise InputError("symbolic links are not allowed in a payload", where=path)
        if not path.is_file():
            continue
        relative = "\\".join(path.relative_to(root).parts)
        _check_windows_path(path.relative_to(root).parts, root)
        folded = relative.lower()
        if folded in seen:
            raise InputError(
                f"two files differ only by case ({seen[folded]!r} and {relative!r});"
                " Windows would keep only one",
                where=root,
            )
        seen[folded] = relative
        files.append(PayloadFile(relative, path, path.stat().st_size, sha256_file(path)))
    if CPUU_EXE.lower() not in seen:
        raise InputError(f"{CPUU_EXE} is missing from the payload folder", where=root)
    frozen = tuple(files)
    return Payload(root, frozen, hashlib.sha256(manifest_bytes(frozen)).hexdigest())
