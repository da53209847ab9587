"""Local file names for files that come from workstations: never trusted, never overwriting.

A workstation (or whoever controls one) chooses the names of the files we collect. A name is only a
label: it must never choose *where* a file lands on the controller, and it must never replace a file
collected earlier (the journal and the report point at those). So a remote name is reduced to a safe
base name in the host's own folder, and creation is exclusive (``name (2).csv`` beside an existing
``name.csv``).

Rules (Windows' and POSIX' dangers both, since reports are opened on Windows desktops too):
the base name after the last ``\\`` or ``/`` (a drive prefix ``C:`` goes too), so ``..\\..\\evil.csv``
and ``/etc/passwd`` cannot climb out; NUL, control characters (newlines) and ``<>:"|?*`` become
``_``; trailing dots and spaces are dropped (Windows drops them silently); ``.``/``..``/empty become
``unnamed``; reserved device names (``CON``, ``NUL``, ``COM1``, ``LPT1``... with any extension) get a
``_`` prefix; names are capped at 150 characters, keeping the extension.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{stem}{n}" for stem in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")
}
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_MAX_NAME = 150


def safe_basename(remote_name: str) -> str:
    """A file name that is safe to create inside one folder, derived from an untrusted name."""
    name = re.split(r"[\\/]", remote_name)[-1]
    if re.match(r"^[A-Za-z]:", name):
        name = name[2:]
    name = _UNSAFE_CHARS.sub("_", name)
    name = name.rstrip(" .").lstrip(" ")
    if name in ("", ".", ".."):
        name = "unnamed"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _RESERVED:
        name = "_" + name
    if len(name) > _MAX_NAME:
        base, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = base[: _MAX_NAME - len(ext) - 1] + "." + ext
        else:
            name = name[:_MAX_NAME]
    return name


def _numbered(name: str, n: int) -> str:
    base, dot, ext = name.rpartition(".")
    if not dot or not base:
        return f"{name} ({n})"
    return f"{base} ({n}).{ext}"


def create_exclusive(folder: Path, remote_name: str) -> tuple[Path, int]:
    """Create a new, empty file for ``remote_name`` in ``folder``; return its path and an fd.

    Never overwrites: ``name.csv`` exists → ``name (2).csv``, and so on. The final path is checked
    to be directly inside ``folder`` before anything is written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    real_folder = folder.resolve()
    name = safe_basename(remote_name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for n in range(1, 10_000):
        candidate = real_folder / (name if n == 1 else _numbered(name, n))
        if candidate.parent != real_folder:  # defence in depth; safe_basename already ensures it
            raise ValueError(f"refusing a file name that leaves its folder: {remote_name!r}")
        try:
            fd = os.open(candidate, flags, 0o644)
        except FileExistsError:
            continue
        return candidate, fd
    raise FileExistsError(f"too many files named like {name!r} in {folder}")


def task_folder_name(task_name: str) -> str:
    """A scheduled task's name as a file or folder name on the workstation (its run marker, its
    run folder): every character but ``A-Z a-z 0-9 space . _ -`` becomes ``_``, as
    ``run-task.ps1`` does for its markers, and trailing dots and spaces (which Windows drops,
    so ``..`` would name the parent) become ``_``: a name never leaves the folder it is for."""
    name = re.sub(r"[^A-Za-z0-9 ._-]", "_", task_name)
    stripped = name.rstrip(" .")
    return stripped + "_" * (len(name) - len(stripped)) if stripped else "_" * max(len(name), 1)
