"""A Windows file system for one simulated workstation, kept in a sandbox folder on this machine.

Why: the lab's handlers and the CPUU emulator must see Windows semantics (drive letters,
backslashes, case-insensitive names that keep their case, a disk that can fill up) while every byte
really lands on the local disk, under one folder per host that nothing may escape. All path input
is hostile until proven otherwise: it comes from the wire (upload headers, download paths).

Mapping: ``C:\\Users\\x\\a.txt`` lives at ``<root>/C/Users/x/a.txt``. An existing entry is matched
ignoring case, as NTFS does for Win32 callers; a new entry keeps the case it was given.

Choices made where Windows has several behaviours:

* only absolute drive paths are accepted (``C:\\...`` or ``c:/...``); drive-relative (``C:foo``),
  rooted-without-drive (``\\foo``), relative, UNC (``\\\\server\\share``) and device paths
  (``\\\\?\\``, ``\\\\.\\``) are refused with ``ValueError``, as are NUL and the characters
  ``<>:"|?*`` and control characters inside a name, and the reserved device names (``CON``,
  ``NUL.txt``, ``COM1``...);
* ``..`` that would climb above the drive root is refused (Windows would clamp it at the root; a
  path that tries is an attack here, not a typo);
* trailing dots and spaces of a name are dropped, as Win32 path normalisation does;
* environment variables (``%TEMP%``) are *not* expanded: callers pass literal paths.

Security, simplified (:class:`Acl`): every entry has an owner SID and may carry explicit grants
(who may read, who may write); an entry inherits its parent's grants unless it is *protected*
(``SetAccessRuleProtection``). What is not set anywhere up to the drive root is what a fresh
Windows gives ``C:\\ProgramData``: SYSTEM, Administrators and Users may read and write (Users
"create files / write data" in subfolders). Deny entries, rights finer than read/write and the
owner's implicit rights are not modelled: nothing the scripts do depends on them.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

DISK_FULL_MESSAGE = "There is not enough space on the disk."

_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?$", re.IGNORECASE)
_BAD_CHARS = re.compile(r'[<>:"|?*\x00-\x1f]')
_DRIVE_PATH = re.compile(r"^(?P<drive>[A-Za-z]):[\\/](?P<rest>.*)$", re.DOTALL)


class DiskFullError(OSError):
    """A write would exceed the simulated disk's capacity (Windows' ERROR_DISK_FULL)."""

    def __init__(self, path: str):
        super().__init__(errno.ENOSPC, DISK_FULL_MESSAGE, path)


SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"
USERS_SID = "S-1-5-32-545"
DEFAULT_GRANTS = frozenset({SYSTEM_SID, ADMINISTRATORS_SID, USERS_SID})
"""Who may read and write where nothing is set (ProgramData's inherited ACL on a fresh Windows)."""


@dataclass(frozen=True)
class Acl:
    """One entry's owner and explicit grants (SIDs)."""

    owner: str = ADMINISTRATORS_SID
    """Whoever created the entry: Administrators for what an elevated admin or SYSTEM creates
    (Windows' default owner for members of Administrators), the user's SID for a user."""
    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    protected: bool = False
    """True: the parent's grants do not apply (inheritance removed)."""


@dataclass(frozen=True)
class FileStat:
    """What ``Get-Item`` tells about an entry: enough for list-files and preflight."""

    size: int
    mtime: datetime
    """Last write time, UTC."""
    is_dir: bool


def split_windows_path(path: str) -> tuple[str, list[str]]:
    """Check a Windows path and split it into its drive letter and normalised names.

    Raises ``ValueError`` naming the path for anything this module refuses (see the module doc).
    """
    if not isinstance(path, str) or not path:
        raise ValueError("empty path")
    if "\x00" in path:
        raise ValueError(f"path contains NUL: {path!r}")
    if path[:2] in ("\\\\", "//", "\\/", "/\\"):
        raise ValueError(f"UNC and device paths are not allowed: {path!r}")
    match = _DRIVE_PATH.match(path)
    if not match:
        raise ValueError(f"not an absolute Windows path (expected C:\\...): {path!r}")
    names: list[str] = []
    for raw in re.split(r"[\\/]+", match.group("rest")):
        if raw in ("", "."):
            continue
        if raw == "..":
            if not names:
                raise ValueError(f"path climbs above the drive root: {path!r}")
            names.pop()
            continue
        name = raw.rstrip(". ")
        if not name:
            raise ValueError(f"invalid name {raw!r} in {path!r}")
        if _BAD_CHARS.search(name):
            raise ValueError(f"invalid character in name {raw!r} of {path!r}")
        if _RESERVED.match(name.split(".")[0].rstrip(" ")) or _RESERVED.match(name):
            raise ValueError(f"reserved device name {raw!r} in {path!r}")
        names.append(name)
    return match.group("drive").upper(), names


def join_windows(directory: str, *names: str) -> str:
    """Join names onto a Windows directory with single backslashes."""
    out = directory.rstrip("\\/")
    for name in names:
        out += "\\" + name.strip("\\/")
    return out


def wildcard_match(pattern: str, name: str) -> bool:
    """PowerShell ``-Filter``-style wildcard: ``*`` and ``?`` only, ignoring case.

    Unlike :mod:`fnmatch`, brackets are literal, as they are for Windows' FindFirstFile.
    """
    regex = "".join(
        ".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern.casefold()
    )
    return re.fullmatch(regex, name.casefold(), re.DOTALL) is not None


class _QuotaWriter:
    """A binary file open for writing that charges every byte against the disk's capacity."""

    def __init__(self, fs: WindowsFS, handle: BinaryIO, windows_path: str):
        self._fs = fs
        self._handle = handle
        self.name = windows_path
        self.closed = False

    def write(self, data: bytes) -> int:
        data = bytes(data)
        self._fs._charge(len(data), self.name)
        try:
            return self._handle.write(data)
        except BaseException:
            self._fs._charge(-len(data), self.name)
            raise

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._handle.close()
            self._fs._touch(self.name)

    def __enter__(self) -> _QuotaWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WindowsFS:
    """One workstation's drives, under ``root``, with a capacity shared by all writes."""

    def __init__(
        self,
        root: Path,
        capacity_bytes: int = 256 * 1024**3,
        *,
        reserved_bytes: int = 0,
        drives: tuple[str, ...] = ("C",),
        clock: Callable[[], float] = time.time,
    ):
        """``reserved_bytes`` plays the space Windows and the user's data already take without
        writing them for real: ``free_bytes = capacity - reserved - bytes of files written here``.
        ``clock`` gives the modification time stamped on written files (the workstation's clock)."""
        self.root = Path(root)
        self.capacity_bytes = capacity_bytes
        self.reserved_bytes = reserved_bytes
        self.drives = tuple(d.upper() for d in drives)
        self._clock = clock
        self._lock = threading.RLock()
        self._temp_counter = 0
        self._acls: dict[tuple[str, ...], Acl] = {}
        existed = self.root.exists()
        for drive in self.drives:
            (self.root / drive).mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self.root)
        # A sandbox left by an earlier lab keeps its files, and they take space.
        self._used = (
            sum(
                f.stat().st_size for f in self.root.rglob("*") if f.is_file() and not f.is_symlink()
            )
            if existed
            else 0
        )

    # ---------------------------------------------------------------- mapping

    def resolve(self, path: str) -> Path:
        """The sandbox path of a Windows path; existing entries matched ignoring case."""
        drive, names = split_windows_path(path)
        if drive not in self.drives:
            raise ValueError(f"no drive {drive}: on this workstation: {path!r}")
        current = self.root / drive
        for name in names:
            current = current / self._match_entry(current, name)
        real = os.path.realpath(current)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise ValueError(f"path leaves the workstation's sandbox: {path!r}")
        return current

    @staticmethod
    def _match_entry(parent: Path, name: str) -> str:
        if not parent.is_dir():
            return name
        wanted = name.casefold()
        if (parent / name).exists():
            return name
        for entry in os.listdir(parent):
            if entry.casefold() == wanted:
                return entry
        return name

    def to_windows(self, local: Path) -> str:
        """The Windows path of a sandbox path (the inverse of :meth:`resolve`)."""
        relative = Path(local).relative_to(self.root)
        parts = relative.parts
        if not parts:
            raise ValueError("the sandbox root is not a Windows path")
        return parts[0] + ":\\" + "\\".join(parts[1:])

    # ---------------------------------------------------------------- queries

    def exists(self, path: str) -> bool:
        return self.resolve(path).exists()

    def is_dir(self, path: str) -> bool:
        return self.resolve(path).is_dir()

    def is_file(self, path: str) -> bool:
        return self.resolve(path).is_file()

    def stat(self, path: str) -> FileStat:
        local = self._existing(path)
        info = local.stat()
        return FileStat(
            size=0 if local.is_dir() else info.st_size,
            mtime=datetime.fromtimestamp(info.st_mtime, tz=timezone.utc),
            is_dir=local.is_dir(),
        )

    def listdir(self, path: str) -> list[str]:
        """Entry names (with their stored case), sorted ignoring case as Explorer shows them."""
        local = self._existing(path)
        if not local.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "The directory name is invalid.", path)
        return sorted(os.listdir(local), key=str.casefold)

    def glob(self, directory: str, pattern: str) -> list[str]:
        """Windows paths of the entries of ``directory`` whose name matches the wildcard; none if
        the directory does not exist (as ``Get-ChildItem -ErrorAction SilentlyContinue``)."""
        if not self.is_dir(directory):
            return []
        return [
            join_windows(directory, name)
            for name in self.listdir(directory)
            if wildcard_match(pattern, name)
        ]

    def walk_files(self, directory: str) -> list[str]:
        """Windows paths of every file under ``directory``, recursively (``Get-ChildItem -File
        -Recurse``); none if it does not exist. Symlinks are not followed."""
        if not self.is_dir(directory):
            return []
        local_dir = self.resolve(directory)
        found: list[str] = []
        for name in sorted(os.listdir(local_dir), key=str.casefold):
            local = local_dir / name
            if local.is_symlink():
                continue
            path = join_windows(directory, name)
            if local.is_dir():
                found.extend(self.walk_files(path))
            else:
                found.append(path)
        return found

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self.reserved_bytes + self._used

    @property
    def free_bytes(self) -> int:
        with self._lock:
            return max(0, self.capacity_bytes - self.reserved_bytes - self._used)

    # ---------------------------------------------------------------- security

    def _acl_key(self, path: str) -> tuple[str, ...]:
        drive, names = split_windows_path(path)
        return (drive, *(n.casefold() for n in names))

    def acl(self, path: str) -> Acl:
        """The entry's own owner and explicit grants (``Get-Acl``); an entry nobody set one for
        is owned by Administrators and has none."""
        with self._lock:
            return self._acls.get(self._acl_key(path), Acl())

    def set_acl(self, path: str, acl: Acl) -> None:
        """``Set-Acl``: replace the entry's owner and explicit grants."""
        self._existing(path)
        with self._lock:
            self._acls[self._acl_key(path)] = acl

    def owner(self, path: str) -> str:
        return self.acl(path).owner

    def allowed(self, path: str, sids: frozenset[str], *, write: bool) -> bool:
        """May a principal with these SIDs (its own and its groups') read or write ``path``?
        For a path that does not exist yet: may it create it (its nearest existing parent)."""
        key = self._acl_key(path)
        with self._lock:
            for depth in range(len(key), 0, -1):
                acl = self._acls.get(key[:depth])
                if acl is None:
                    continue
                if sids & (acl.write if write else acl.read):
                    return True
                if acl.protected:
                    return False
        return bool(sids & DEFAULT_GRANTS)

    def _forget_acls(self, path: str) -> None:
        key = self._acl_key(path)
        self._acls = {k: v for k, v in self._acls.items() if k[: len(key)] != key}

    # ---------------------------------------------------------------- reading

    def open_read(self, path: str) -> BinaryIO:
        local = self._existing(path)
        if local.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Access to the path is denied.", path)
        return open(local, "rb")

    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as handle:
            return handle.read()

    # ---------------------------------------------------------------- writing

    def open_write(self, path: str, *, append: bool = False) -> _QuotaWriter:
        """Open a file for writing (truncating unless ``append``); its parent must exist.

        Every ``write`` is charged against the capacity first and raises :class:`DiskFullError`
        when it does not fit; what was written before stays, as on a full NTFS volume.
        """
        with self._lock:
            local = self.resolve(path)
            self._require_parent(local, path)
            if local.is_dir():
                raise IsADirectoryError(errno.EISDIR, "Access to the path is denied.", path)
            if not append and local.exists():
                self._used -= local.stat().st_size
            handle = open(local, "ab" if append else "wb")  # noqa: SIM115 - wrapped and returned
        return _QuotaWriter(self, handle, self.to_windows(local))

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.open_write(path) as handle:
            handle.write(data)

    def write_text(self, path: str, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(path, text.encode(encoding))

    def mkdir(self, path: str, parents: bool = True) -> None:
        """Create a directory; an existing one is fine ([IO.Directory]::CreateDirectory)."""
        with self._lock:
            local = self.resolve(path)
            if local.is_file():
                raise FileExistsError(errno.EEXIST, "A file with that name already exists.", path)
            if not parents:
                self._require_parent(local, path)
            local.mkdir(parents=parents, exist_ok=True)

    def delete(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a directory (non-empty only with ``recursive``)."""
        with self._lock:
            local = self._existing(path)
            self._forget_acls(path)
            if local.is_dir():
                if any(local.iterdir()) and not recursive:
                    raise OSError(errno.ENOTEMPTY, "The directory is not empty.", path)
                freed = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
                shutil.rmtree(local)
                self._used -= freed
            else:
                size = local.stat().st_size
                local.unlink()
                self._used -= size

    def copy_tree(self, source: str, target: str) -> None:
        """``Get-ChildItem source | Copy-Item -Destination target -Recurse``: every file under
        ``source`` into the existing ``target``, each write charged against the disk. No access
        list is copied: a copy takes its new folder's inherited one, as CopyFile does."""
        base = len(source.rstrip("\\/")) + 1
        for path in self.walk_files(source):
            destination = join_windows(target, path[base:])
            self.mkdir(destination.rsplit("\\", 1)[0])
            with self.open_read(path) as reader, self.open_write(destination) as writer:
                shutil.copyfileobj(reader, writer, 1024 * 1024)

    def move(self, source: str, target: str, *, replace: bool = False) -> None:
        """Rename ``source`` to ``target`` (MoveFileEx; ``replace`` = MOVEFILE_REPLACE_EXISTING).

        Changing only the case of a name is a rename, not a clash.
        """
        with self._lock:
            src = self._existing(source)
            dst = self.resolve(target)
            self._require_parent(dst, target)
            same_entry = dst.exists() and os.path.samefile(src, dst)
            if dst.exists() and not same_entry:
                if not replace:
                    raise FileExistsError(
                        errno.EEXIST, "Cannot create a file when that file already exists.", target
                    )
                if dst.is_dir():
                    raise IsADirectoryError(errno.EISDIR, "Access to the path is denied.", target)
                self._used -= dst.stat().st_size
                dst.unlink()
            if same_entry:
                # Case-only rename: ``dst`` resolved onto the existing entry; use the given case.
                dst = dst.parent / split_windows_path(target)[1][-1]
            os.replace(src, dst)
            # A move on one volume keeps the entry's security descriptor (MoveFileEx).
            moved = self._acls.pop(self._acl_key(source), None)
            self._forget_acls(target)
            if moved is not None:
                self._acls[self._acl_key(target)] = moved

    def temp_path(self, directory: str = "C:\\Windows\\Temp", prefix: str = "tmp") -> str:
        """Create an empty, uniquely named file and return its path, like GetTempFileName."""
        with self._lock:
            self.mkdir(directory)
            while True:
                self._temp_counter = (self._temp_counter + 1) & 0xFFFF or 1
                candidate = join_windows(directory, f"{prefix}{self._temp_counter:X}.tmp")
                if not self.exists(candidate):
                    self.write_bytes(candidate, b"")
                    return candidate

    # ---------------------------------------------------------------- internals

    def _existing(self, path: str) -> Path:
        local = self.resolve(path)
        if not local.exists():
            raise FileNotFoundError(
                errno.ENOENT, f"Cannot find path '{path}' because it does not exist.", path
            )
        return local

    @staticmethod
    def _require_parent(local: Path, path: str) -> None:
        if not local.parent.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, f"Could not find a part of the path '{path}'.", path
            )

    def _charge(self, size: int, windows_path: str) -> None:
        with self._lock:
            if size > 0 and self.reserved_bytes + self._used + size > self.capacity_bytes:
                raise DiskFullError(windows_path)
            self._used += size

    def _touch(self, windows_path: str) -> None:
        local = self.resolve(windows_path)
        if local.exists():
            stamp = self._clock()
            os.utime(local, (stamp, stamp))
