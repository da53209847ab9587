"""Step two, push: place the payload and the host's rendered files in the versioned staging
folder, changed files only.

Round trips are the cost that matters on a WAN with thousands of hosts, so push sends every
changed file through ONE ``upload`` pipeline, every WSMan Send filled (a chunk is cut to the
room left, so headers and small files share Sends with content), and skips files whose SHA-256
the host already reports. The list of files a visit pushes (``outgoing_files``) and ``upload``
are also what preflight hashes, what collect leaves out, and how run places Cleanup's marker:
those steps import them from here.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.visit.steps.context import STAGING_ROOT, HostContext, _protocol_error
from cpuu_fleet.vocabulary import ErrorClass

DISK_MARGIN = 1024 * 1024
"""Room left on the system drive after staging (CPUU's own log and result files need some)."""


# What one input object costs inside a WSMan Send, in bytes, as pypsrp 0.9.1 packs it: every PSRP
# message gets a 21-byte fragment header and a 40-byte message header; a string's CLIXML is
# ``<S>...</S>`` (7 bytes, base64 needs no escaping); a file header hashtable is about 320 bytes
# of CLIXML plus its path (counted 8 bytes a character: XML and _xHHHH_ escapes, UTF-8) and
# the digits of its Length. Measured with pypsrp's own Fragmenter (see the engine unit tests).
_PER_MESSAGE = 21 + 40
_STRING_CLIXML = 7
_HEADER_CLIXML = 360
_PRIVATE_CLIXML = 80
"""The ``Private = $true`` entry of a private file's header hashtable."""
_RESERVED = 128
"""Kept free in every Send: the EndOfPipelineInput message rides in whichever Send is last."""
_MIN_CHUNK = 4096
"""A Send with less room than this left is sent as it is rather than topped up with a sliver."""


@dataclass(frozen=True)
class OutgoingFile:
    """One file to place on the host: its relative path there and where its bytes come from."""

    relative: str
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None
    private: bool = False
    """Readable on the host by SYSTEM and Administrators only (the INI, with its secrets);
    the task's user reads ``run-task``'s copy of it in the run's own folder (``run_dir``)."""

    def open(self) -> BinaryIO:
        """A stream of the file's bytes (read piece by piece: big files never sit in memory)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.source is not None
        return self.source.open("rb")


@dataclass(frozen=True)
class PushPlan:
    directory: str
    send: tuple[OutgoingFile, ...]
    skip: tuple[OutgoingFile, ...]

    @property
    def bytes_to_send(self) -> int:
        return sum(f.size for f in self.send)

    def details(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "files_sent": [f.relative for f in self.send],
            "files_skipped": len(self.skip),
            "bytes_sent": self.bytes_to_send,
        }


@dataclass(frozen=True)
class PushResult:
    plan: PushPlan
    written: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.written)

    def details(self) -> dict[str, Any]:
        return self.plan.details()


def outgoing_files(ctx: HostContext) -> list[OutgoingFile]:
    """The payload's files plus this host's rendered INI and batch files."""
    files: list[OutgoingFile] = []
    if ctx.payload is not None:
        files.extend(
            OutgoingFile(f.relative, f.size, f.sha256, source=f.source) for f in ctx.payload.files
        )
    for name, data in ctx.rendered_files.items():
        relative = name.replace("/", "\\")
        sha = hashlib.sha256(data).hexdigest()
        files.append(OutgoingFile(relative, len(data), sha, data=data, private=_is_private(name)))
    return files


def _is_private(name: str) -> bool:
    """A rendered INI carries the play's secrets: only the task's user may read it on the host."""
    return name.lower().endswith(".ini")


def plan_push(ctx: HostContext, staged: dict[str, str] | None = None) -> PushPlan:
    """Which files must travel: those whose SHA-256 the host does not already have in place."""
    staged = staged if staged is not None else (ctx.preflight.staged_files if ctx.preflight else {})
    send: list[OutgoingFile] = []
    skip: list[OutgoingFile] = []
    for item in outgoing_files(ctx):
        (skip if staged.get(item.relative.lower()) == item.sha256 else send).append(item)
    return PushPlan(ctx.staging, tuple(send), tuple(skip))


def _header(item: OutgoingFile) -> dict[str, Any]:
    """Length goes as a string: pypsrp 0.9.1 tags every Python int as a 32-bit ``<I32>``, which
    Windows cannot deserialize for a file of 2 GiB or more; ``upload`` parses it as an int64."""
    header: dict[str, Any] = {
        "Path": item.relative,
        "Length": str(item.size),
        "Sha256": item.sha256,
    }
    if item.private:
        header["Private"] = True
    return header


def _header_cost(item: OutgoingFile) -> int:
    extra = _PRIVATE_CLIXML if item.private else 0
    return _PER_MESSAGE + _HEADER_CLIXML + extra + 8 * len(item.relative) + len(str(item.size))


def _string_cost(chars: int) -> int:
    return _PER_MESSAGE + _STRING_CLIXML + chars


def upload_input(
    files: tuple[OutgoingFile, ...], send_budget: int, *, max_chunk: int | None = None
) -> Iterator[list[Any]]:
    """Pipeline input for ``upload``: per file a header then its content as base64 strings.

    Each yielded list is one WSMan Send (pypsrp fragments each list on its own), filled to
    ``send_budget`` bytes of PSRP data (``HostSession.max_payload_size``): a chunk is cut to the
    room left in the current Send, so a file's header, the start of its content and the small
    files after it share Sends. The fewest Sends the bytes allow: a 2 MB payload with its INI and
    batch files goes in 8 instead of 9 with fixed-size chunks (whose header rode alone).
    ``max_chunk`` caps the raw bytes of one string (tests; the host holds one string at a time).
    """
    budget = send_budget - _RESERVED
    if _string_cost(4) > budget:
        raise ValueError(f"a Send of {send_budget} bytes cannot carry any file content")
    batch: list[Any] = []
    used = 0
    for item in files:
        cost = _header_cost(item)
        if batch and used + cost > budget:
            yield batch
            batch, used = [], 0
        batch.append(_header(item))
        used += cost
        with item.open() as stream:
            while True:
                raw = (budget - used - _string_cost(0)) // 4 * 3
                if max_chunk is not None:
                    raw = min(raw, max_chunk)
                if batch and raw < min(_MIN_CHUNK, max_chunk or _MIN_CHUNK):
                    yield batch
                    batch, used = [], 0
                    continue
                block = stream.read(raw)
                if not block:
                    break
                encoded = base64.b64encode(block).decode("ascii")
                batch.append(encoded)
                used += _string_cost(len(encoded))
    if batch:
        yield batch


def upload(
    session: HostSession,
    directory: str,
    files: tuple[OutgoingFile, ...],
    *,
    during: str = "push",
    deadline: float | None = None,
) -> tuple[str, ...]:
    """Send files into ``directory`` on the host through one ``upload`` pipeline."""
    if not files:
        return ()
    result = session.run(
        "upload",
        {"Directory": directory, "Root": STAGING_ROOT},
        input=upload_input(files, session.max_payload_size),
        deadline=deadline,
        during=during,
    )
    written: list[str] = []
    for entry, item in zip(result.output, files, strict=False):
        if not isinstance(entry, dict) or str(entry.get("Sha256", "")).lower() != item.sha256:
            raise SessionError(
                ErrorClass.REMOTE,
                f"{during}: the host did not confirm {item.relative!r} with the right SHA-256",
                transient=False,
            )
        written.append(item.relative)
    if len(written) != len(files):
        raise _protocol_error(f"{during}: {len(files)} files sent, {len(written)} confirmed")
    return tuple(written)


def push(ctx: HostContext, session: HostSession, plan: PushPlan | None = None) -> PushResult:
    """Place the payload and the rendered files in the versioned staging folder, changed files only.

    When preflight reported less free space than the files need, nothing is sent: the upload
    would fail part-way anyway, after costing the bandwidth.
    """
    plan = plan or plan_push(ctx)
    free = ctx.preflight.free_bytes if ctx.preflight is not None else None
    if free is not None and plan.send and plan.bytes_to_send + DISK_MARGIN > free:
        raise SessionError(
            ErrorClass.REMOTE,
            f"push: There is not enough space on the disk: {plan.bytes_to_send:,} bytes to stage"
            f" (+{DISK_MARGIN:,} margin), {free:,} free",
            transient=False,
            error_id="DiskFull",
        )
    written = upload(session, plan.directory, plan.send)
    return PushResult(plan, written)
