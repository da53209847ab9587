"""Mailbox inputs: a migration batch file and an optional user-to-device map (both CSV).

Migration leads plan in mailboxes, not machines: a batch is a list of mailboxes switched on a
date. This module reads the two files a lead already has, as the consoles export them, so the
report can answer "which of this batch's users are done, on every device":

* the **batch file**: one row per mailbox, with the mailbox (or UPN), optionally the user, the
  batch and the planned switch date. Recognised column names (any case, spaces, ``_`` and ``-``
  ignored): Exchange's migration batch CSV (``EmailAddress``), ``Get-MigrationUser``
  (``Identity``/``MailboxEmailAddress``, ``BatchId``), Microsoft 365 exports
  (``UserPrincipalName``, ``PrimarySmtpAddress``), and plain names (``Mailbox``, ``User``,
  ``Batch``, ``SwitchDate``); any of them can be named instead (:data:`BATCH_ROLES`).
* the **device map**: one row per user and device, as MECM's user-device affinity
  (``UniqueUserName``/``ResourceName``) or Intune's primary users
  (``userPrincipalName``/``deviceName``) export it.

Both are operator input: a bad file is an :class:`~cpuu_fleet.errors.InputError` naming the file
and line; a file is bounded in bytes (:data:`MAX_BYTES`), rows (:data:`MAX_ROWS`) and cell length
(:data:`MAX_CELL`) before anything is parsed; text is kept as text (the report neutralises
formulas when it writes it back). Encodings: UTF-8 with or without BOM, UTF-16 (what Excel's
"Unicode text" and PowerShell 5's ``Export-Csv`` write) and, failing those, cp1252
(:mod:`cpuu_fleet.wintext`). The delimiter is sniffed from the header line: ``,``, ``;`` (a
French or German Excel's "CSV") or TAB.

How a row meets what cpuu-fleet saw (assumptions; Microsoft documents no join between them):

* a user is known by a **user key**: lower-case, without its ``DOMAIN\\`` prefix or its
  ``@domain`` suffix. ``CORP\\jdupont``, ``jdupont@corp.example`` and ``JDupont`` are one user:
  we assume the sAMAccountName equals the UPN's and the mailbox address's local part, which holds
  where UPNs are built from account names (the common case); where it does not, give a ``User``
  column in the batch file or a device map keyed by the account.
* a device is known by a **host key**: lower-case, its first DNS label (``PC-01.corp.example``
  and ``pc-01`` are one device), an IP address as a whole.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cpuu_fleet.errors import InputError
from cpuu_fleet.limits import describe_size
from cpuu_fleet.wintext import decode

MAX_BYTES = 64 * 1024 * 1024
"""A batch file or device map larger than this is refused before it is read (a 200,000-mailbox
batch with long names is about 30 MB)."""
MAX_ROWS = 500_000
"""Rows a file may hold (a tenant's whole migration fits; a runaway export does not)."""
MAX_CELL = 1024
"""Characters a cell may hold: no mailbox, account, device or date comes near it."""

MAILBOX, USER, BATCH, SWITCH_DATE, DEVICE = "mailbox", "user", "batch", "switch_date", "device"

BATCH_ROLES: dict[str, tuple[str, ...]] = {
    MAILBOX: (
        "emailaddress", "mailboxemailaddress", "primarysmtpaddress", "mailbox", "mail",
        "smtpaddress", "userprincipalname", "upn", "identity",
    ),
    USER: ("user", "username", "samaccountname", "account", "uniqueusername", "logonname"),
    BATCH: ("batch", "batchname", "batchid", "migrationbatch", "wave"),
    SWITCH_DATE: (
        "switchdate", "plannedswitchdate", "plannedswitch", "completeafter", "cutover",
        "cutoverdate", "date",
    ),
}  # fmt: skip
"""Each column of a batch file and the header names recognised for it, in order of preference
(normalised: lower-case, without spaces, ``_``, ``-`` or ``.``). Only the mailbox is required:
without a user, the mailbox's local part is the user key; without a batch, the file's name."""

DEVICE_ROLES: dict[str, tuple[str, ...]] = {
    USER: (
        "uniqueusername", "userprincipalname", "primaryuser", "primaryuserupn", "user",
        "username", "upn", "emailaddress", "mail",
    ),
    DEVICE: (
        "resourcename", "devicename", "device", "computername", "computer", "machinename",
        "hostname", "host", "name",
    ),
}  # fmt: skip
"""The columns of a device map (MECM user-device affinity, Intune primary users) and their names."""

_DELIMITERS = (",", ";", "\t")
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$|:")
_NORMALISE = re.compile(r"[\s_.\-]+")


@dataclass(frozen=True)
class Mailbox:
    """One row of a batch file."""

    mailbox: str
    user: str
    batch: str
    switch_date: str
    line: int
    key: str
    """The user key that joins it to devices and to what cpuu-fleet saw (see the module)."""


@dataclass(frozen=True)
class DeviceLink:
    """One row of a device map: this user works on this device."""

    user: str
    device: str
    line: int
    key: str
    host_key: str


@dataclass
class MailboxInput:
    """A batch file and its optional device map, read and checked."""

    batch_path: Path
    mailboxes: list[Mailbox]
    devices_path: Path | None = None
    devices: list[DeviceLink] = field(default_factory=list)


def user_key(name: str) -> str:
    """``CORP\\JDupont``, ``jdupont@corp.example`` → ``jdupont`` (see the module's assumption)."""
    text = name.strip().lower()
    text = text.rsplit("\\", 1)[-1]
    return text.split("@", 1)[0].strip()


def host_key(name: str) -> str:
    """``PC-01.corp.example`` → ``pc-01``; an IP address is kept whole."""
    text = name.strip().lower()
    return text if _IP.search(text) else text.split(".", 1)[0]


def parse_columns(pairs: list[str] | None) -> dict[str, str]:
    """``["mailbox=Courriel", "batch=Lot"]`` → ``{"mailbox": "Courriel", ...}`` (``--mailbox-column``)."""
    known = (*BATCH_ROLES, DEVICE)
    columns: dict[str, str] = {}
    for pair in pairs or []:
        role, sep, name = pair.partition("=")
        role = role.strip().lower().replace("-", "_")
        if not sep or not name.strip() or role not in known:
            raise InputError(
                f"--mailbox-column takes ROLE=HEADER with ROLE one of {', '.join(known)},"
                f" not {pair!r}"
            )
        columns[role] = name.strip()
    return columns


def load_mailboxes(
    batch_path: Path,
    devices_path: Path | None = None,
    *,
    columns: Mapping[str, str] | None = None,
) -> MailboxInput:
    """Read a batch file and, if given, a device map; :class:`InputError` on anything wrong."""
    mailboxes = read_batch(batch_path, columns=columns)
    devices = read_devices(devices_path, columns=columns) if devices_path is not None else []
    return MailboxInput(Path(batch_path), mailboxes, devices_path, devices)


def read_batch(path: Path, *, columns: Mapping[str, str] | None = None) -> list[Mailbox]:
    """The batch file's rows, in file order; a mailbox listed twice is an error (which batch?)."""
    path = Path(path)
    header, header_line, rows = _read_table(path)
    found = _find_columns(
        header, BATCH_ROLES, columns or {}, (path, header_line), required=(MAILBOX,)
    )
    default_batch = path.stem
    mailboxes: list[Mailbox] = []
    seen: dict[str, int] = {}
    for line, cells in rows:
        mailbox = _cell(cells, found, MAILBOX, path, line)
        if not mailbox:
            if any(c.strip() for c in cells):
                raise InputError("no mailbox on this row", where=path, line=line)
            continue
        user = _cell(cells, found, USER, path, line)
        key = user_key(user or mailbox)
        if not key:
            raise InputError(f"no user name in {user or mailbox!r}", where=path, line=line)
        folded = mailbox.lower()
        if folded in seen:
            raise InputError(
                f"mailbox {mailbox!r} is listed twice (first on line {seen[folded]})",
                where=path,
                line=line,
            )
        seen[folded] = line
        batch = _cell(cells, found, BATCH, path, line) or default_batch
        mailboxes.append(
            Mailbox(mailbox, user, batch, _cell(cells, found, SWITCH_DATE, path, line), line, key)
        )
    if not mailboxes:
        raise InputError("the batch file lists no mailbox", where=path)
    return mailboxes


def read_devices(path: Path, *, columns: Mapping[str, str] | None = None) -> list[DeviceLink]:
    """The device map's user/device pairs (a pair listed twice is kept once)."""
    path = Path(path)
    header, header_line, rows = _read_table(path)
    role_names = {role: name for role, name in (columns or {}).items() if role == DEVICE}
    found = _find_columns(
        header, DEVICE_ROLES, role_names, (path, header_line), required=(USER, DEVICE)
    )
    links: dict[tuple[str, str], DeviceLink] = {}
    for line, cells in rows:
        user, device = (
            _cell(cells, found, USER, path, line),
            _cell(cells, found, DEVICE, path, line),
        )
        if not user and not device:
            continue
        if not user or not device:
            missing = "user" if not user else "device"
            raise InputError(f"no {missing} on this row", where=path, line=line)
        link = DeviceLink(user, device, line, user_key(user), host_key(device))
        links.setdefault((link.key, link.host_key), link)
    return list(links.values())


def _read_table(path: Path) -> tuple[list[str], int, list[tuple[int, list[str]]]]:
    """The header, its line number and the rows (with theirs) of a bounded CSV file.

    Windows PowerShell 5's ``Export-Csv`` starts with a ``#TYPE ...`` line unless told
    ``-NoTypeInformation``: such a line is passed over.
    """
    text = _read_text(path)
    skip = 1 if text.startswith("#TYPE") else 0
    lines = _bounded_lines(text, path)
    for _ in range(skip):
        next(lines)
    first_line = text.split("\n", skip + 1)[skip]
    delimiter = max(_DELIMITERS, key=first_line.count)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise InputError("the file is empty (no header row)", where=path)
        rows = []
        for cells in reader:
            line = reader.line_num + skip
            if len(rows) >= MAX_ROWS:
                raise InputError(f"more than {MAX_ROWS:,} rows", where=path, line=line)
            if len(cells) > len(header):
                raise InputError(
                    f"{len(cells)} cells, the header has {len(header)}"
                    f" (is {delimiter!r} the delimiter?)",
                    where=path,
                    line=line,
                )
            rows.append((line, cells))
    except csv.Error as exc:
        raise InputError(
            f"not a readable CSV ({exc})", where=path, line=reader.line_num + skip
        ) from None
    return header, 1 + skip, rows


def _read_text(path: Path) -> str:
    """The file's text, refused unread when larger than :data:`MAX_BYTES`."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(
                f"the file is {describe_size(size)}; at most {describe_size(MAX_BYTES)}",
                where=path,
            )
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror})", where=path) from None
    if len(data) > MAX_BYTES:  # grew while we looked, or not a regular file
        raise InputError(f"the file is larger than {describe_size(MAX_BYTES)}", where=path)
    text, _encoding = decode(data, path)
    return text


def _bounded_lines(text: str, path: Path) -> Iterator[str]:
    """The text's lines, each refused past a cell's bound times the columns a row may have."""
    limit = MAX_CELL * 64
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if len(line) > limit:
            raise InputError(f"a line of {len(line):,} characters", where=path, line=number)
        yield line


def _normalise(name: str) -> str:
    return _NORMALISE.sub("", name.strip().lstrip("\ufeff").lower())


def _find_columns(
    header: list[str],
    roles: Mapping[str, tuple[str, ...]],
    named: Mapping[str, str],
    place: tuple[Path, int],
    *,
    required: tuple[str, ...],
) -> dict[str, int]:
    """Each role's column index: the name the operator gave, else the first recognised name."""
    path, line = place
    index = {}
    for position, name in enumerate(header):
        index.setdefault(_normalise(name), position)
    found: dict[str, int] = {}
    for role, names in roles.items():
        if role in named:
            wanted = _normalise(named[role])
            if wanted not in index:
                raise InputError(f"no column {named[role]!r} for the {role}", where=path, line=line)
            found[role] = index[wanted]
            continue
        for name in names:
            if name in index and index[name] not in found.values():
                found[role] = index[name]
                break
    for role in required:
        if role not in found:
            raise InputError(
                f"no {role} column (recognised: {', '.join(roles[role])};"
                " or name it with --mailbox-column)",
                where=path,
                line=line,
            )
    return found


def _cell(cells: list[str], found: Mapping[str, int], role: str, path: Path, line: int) -> str:
    """A cell's text, stripped; "" where the column is absent or the row short."""
    position = found.get(role)
    if position is None or position >= len(cells):
        return ""
    value = cells[position].strip()
    if len(value) > MAX_CELL:
        raise InputError(
            f"a {role} of {len(value):,} characters (at most {MAX_CELL})", where=path, line=line
        )
    return value
