"""Step four, collect: download the CPUU result and log files that are new, parse the results,
journal everything.

Collect lists AND downloads the new result files through ONE ``download -Directory`` pipeline,
drained as it arrives so memory stays flat (``Client.fetch`` would rebuild each file with
quadratic work). Everything the host sends is hostile: each file is bounded, kept inside the
host's folder, masked of the run's secrets, and set aside unread when it is broken or too big.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuu_fleet.cpuu import ProfileResult, ResultFile, parse_result_stream
from cpuu_fleet.errors import InputError
from cpuu_fleet.filenames import create_exclusive
from cpuu_fleet.limits import DEFAULT_LIMITS, Limits, describe_size
from cpuu_fleet.redact import REDACTOR
from cpuu_fleet.visit.session import HostSession, limit_error
from cpuu_fleet.visit.steps.context import HostContext, _protocol_error
from cpuu_fleet.visit.steps.push import outgoing_files

RESULT_FILTER = "CPUU_*"


@dataclass(frozen=True)
class CollectedFile:
    remote_path: str
    local_path: Path
    size: int
    sha256: str
    kind: str


@dataclass
class CollectResult:
    files: list[CollectedFile] = field(default_factory=list)
    skipped_known: int = 0
    profiles: list[ProfileResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {
            "files": [f.local_path.name for f in self.files],
            "already_collected": self.skipped_known,
            "profiles": len(self.profiles),
            "problems": self.problems[:20],
        }


def _kind(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return "result"
    if lowered.endswith(".log"):
        return "log"
    return "other"


#: ``on_file(header, local path, size, sha256)``: a downloaded file is complete on disk.
FileDone = Callable[[dict[str, Any], Path, int, str], None]


class _DownloadSink:
    """Writes the ``download`` pipeline's output objects to local files as they arrive.

    Only headers of files directly in ``directory`` are accepted, and none the engine asked to
    leave out (``excluded``): the host decides which files exist, never where they land here
    (``create_exclusive`` keeps hostile names inside the host folder). Each file is handed to
    ``on_file`` the moment it is complete, so a download that fails later loses none of the
    files before it. A header with ``Locked`` (another process holds the file exclusively) is
    noted in ``locked`` and brings no content.

    Everything the host sends is bounded (``limits``): a header must announce a ``Length`` within
    ``file_bytes``, and exactly that many bytes must follow. More is hostile (a LIMIT error at the
    first byte too many, which is never written); fewer, before the next header or the end, is a
    broken download. Either way the file is set aside as ``<name>.partial`` (:meth:`abandon`) and
    never journalled. Every registered secret is masked on the way to disk (a
    :class:`~cpuu_fleet.redact.ByteScrubber`, so a secret split between two chunks is caught too);
    the size and SHA-256 handed to ``on_file`` are those of the bytes the host sent, which its
    header's ``Sha256`` and a later collect's ``KnownSha256`` speak of."""

    def __init__(
        self,
        folder: Path,
        directory: str,
        excluded: Callable[[str], bool],
        on_file: FileDone,
        limits: Limits = DEFAULT_LIMITS,
    ):
        self.folder = folder
        self.directory = directory.rstrip("\\").lower()
        self.excluded = excluded
        self.on_file = on_file
        self.limits = limits
        self.skipped = 0
        self.scrubbed: list[str] = []
        """Names of files in which a secret was masked (the host's copy still holds it)."""
        self.locked: list[str] = []
        """Names of files another process held open exclusively: not sent, never journalled,
        so the next collect asks for them again."""
        self._fd: int | None = None
        self._path: Path | None = None
        self._entry: dict[str, Any] | None = None
        self._digest = hashlib.sha256()
        self._scrubber = REDACTOR.byte_scrubber()
        self._size = 0
        self._length = 0
        self._spoiled = False

    def __call__(self, item: Any) -> None:
        if isinstance(item, dict):
            self._finish()
            self._open(item)
            return
        if self._fd is None:
            raise _protocol_error("collect: file content arrived before its header")
        self._write(str(item))

    def _open(self, item: dict[str, Any]) -> None:
        remote = str(item.get("Path", ""))
        name = str(item.get("Name") or remote.rsplit("\\", 1)[-1])
        parent = remote.rsplit("\\", 1)[0].lower() if "\\" in remote else ""
        if parent != self.directory or self.excluded(name):
            raise _protocol_error(f"collect: the host sent a file we did not ask for: {remote!r}")
        if item.get("Locked") is True:
            self.locked.append(name)  # held exclusively on the host: header only, next time
            return
        if item.get("Skipped"):
            self.skipped += 1  # already collected (by SHA-256): header only
            return
        length = item.get("Length")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise _protocol_error(f"collect: {name!r}: the header's Length is {length!r}")
        if length > self.limits.file_bytes:
            raise limit_error(
                f"collect: {name!r} is {length:,} bytes, over the"
                f" {describe_size(self.limits.file_bytes)} a collected file may have"
                " (limits: file_size); not downloaded"
            )
        self._entry = item
        self._length = length
        self._path, self._fd = create_exclusive(self.folder, name)
        self._digest = hashlib.sha256()
        self._scrubber = REDACTOR.byte_scrubber()
        self._size = 0
        self._spoiled = False

    def _write(self, text: str) -> None:
        """One base64 chunk: checked against the announced length before it is decoded."""
        room = self._length - self._size
        if len(text) // 4 * 3 - 2 > room:  # base64 of more bytes than may still come
            self._overrun()
        block = base64.b64decode(text)
        if len(block) > room:
            self._overrun()
        self._digest.update(block)
        self._size += len(block)
        self._put(self._scrubber.feed(block))

    def _put(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _overrun(self) -> None:
        self._spoiled = True
        assert self._entry is not None and self._path is not None
        raise limit_error(
            f"collect: {self._entry.get('Name') or self._path.name!r}: the host sent more than"
            f" the {self._length:,} bytes its header announced; stopped"
        )

    def _finish(self) -> None:
        """The open file is complete (the next header came, or the pipeline ended well)."""
        if self._fd is None:
            return
        assert self._entry is not None and self._path is not None
        if self._size != self._length:
            raise _protocol_error(
                f"collect: {self._entry.get('Name') or self._path.name!r}: the host sent"
                f" {self._size:,} of the {self._length:,} bytes its header announced"
            )
        self._put(self._scrubber.flush())
        os.close(self._fd)
        self._fd = None
        if self._scrubber.found:
            self.scrubbed.append(self._path.name)
        self.on_file(self._entry, self._path, self._size, self._digest.hexdigest())

    def close(self) -> None:
        self._finish()

    def abandon(self) -> str | None:
        """The download failed: keep the open file only if all its bytes arrived.

        A partial file is renamed ``<name>.partial`` and never journalled, so the report does not
        parse half a result file, nothing received is deleted, and the next collect fetches the
        whole file under its own name (not ``name (2)``). A file whose host sent more than it
        announced is set aside the same way, however many bytes it has. Returns a problem line
        for the report.
        """
        if self._fd is None:
            return None
        assert self._entry is not None and self._path is not None
        if self._size == self._length and not self._spoiled:
            self._finish()  # every byte arrived; the failure came after it
            return None
        self._put(self._scrubber.flush())
        os.close(self._fd)
        self._fd = None
        if self._spoiled:
            what = f"the host sent more than the {self._length:,} bytes it announced"
        else:
            what = f"download broke off after {self._size:,} of {self._length:,} bytes"
        return set_aside(self._path, what)


def set_aside(path: Path, what: str) -> str:
    """Rename a collected file that must not be journalled to ``<name>.partial``; the report line.

    Never journalled means never read by the report, and the next collect fetches it again.
    """
    partial, fd = create_exclusive(path.parent, path.name + ".partial")
    os.close(fd)
    os.replace(path, partial)
    return f"{path.name}: {what}; kept as {partial.name}, fetched again next time"


def _save_ini(ctx: HostContext, result: CollectResult) -> None:
    """Keep the INI this host received, with every secret masked (twice: renderer and redactor)."""
    for name, data in ctx.rendered_masked.items():
        if not name.lower().endswith(".ini"):
            continue
        safe = REDACTOR.scrub_bytes(data)
        sha = hashlib.sha256(safe).hexdigest()
        if any(f["sha256"] == sha for f in ctx.journal.files(ctx.run_id, ctx.host)):
            continue
        path, fd = create_exclusive(ctx.host_dir, name)
        with os.fdopen(fd, "wb") as stream:
            stream.write(safe)
        _record(ctx, result, name, path, len(safe), sha, "ini")


def _record(
    ctx: HostContext, result: CollectResult, remote: str, path: Path, size: int, sha: str, kind: str
) -> None:
    relative = path.relative_to(ctx.reports_dir.resolve()).as_posix()
    ctx.journal.add_file(
        ctx.run_id,
        ctx.host,
        kind=kind,
        remote_path=remote,
        local_path=relative,
        sha256=sha,
        size=size,
    )
    result.files.append(CollectedFile(remote, path, size, sha, kind))


#: Names never collected: what we push ourselves (CPUU_*.bat matches the result filter too).
_NOT_RESULTS = ("*.bat", "*.cmd", "*.ini", "*.exe")


def collect(
    ctx: HostContext,
    session: HostSession,
    *,
    exclude: set[str] | None = None,
    on_profiles: Callable[[list[ProfileResult]], None] | None = None,
    into: CollectResult | None = None,
    since: str | None = None,
    directory: str | None = None,
) -> CollectResult:
    """Download the CPUU result and log files that are new, parse the results, journal everything.

    After a run step (``since``: when CPUU started, by the host's clock), new means written since
    then and not already collected by this same CPUU run: each run is judged on the files its
    own CPUU wrote, even when they are byte for byte those of an earlier run (CPUU's result file
    holds no time stamp: a host that fails the same way twice writes the same bytes). Without a
    run (an ad-hoc collect), new means not collected from this host by any run yet. Files we
    pushed ourselves (the batch files match ``CPUU_*`` too) are never collected. One ``download``
    pipeline both finds the files (``-Directory``/``-Filter``) and streams the new ones: the
    host is told which names to leave out and which SHA-256s we have, so a listing never costs
    its own pipeline (two round trips and a CreatePipeline per host).

    ``directory`` is where to look: the run's own folder (``run_dir``) after a run step, else the
    staging folder (results of a CPUU that ran from it: the vendor's logon script, a hand run).

    Each file is journalled as soon as it is complete; ``into`` (the caller's result) therefore
    holds what was collected even when the download fails part-way and this raises.
    """
    result = into if into is not None else CollectResult()
    ctx.host_dir.mkdir(parents=True, exist_ok=True)
    _save_ini(ctx, result)
    pushed = {name.lower() for name in (exclude or set())}
    pushed |= {f.relative.lower() for f in outgoing_files(ctx)}
    if since is None:
        earlier = ctx.journal.files(host=ctx.host)
    else:
        runs = ctx.cpuu_runs or (ctx.run_id,)
        earlier = [f for run_id in runs for f in ctx.journal.files(run_id, ctx.host)]
        if directory:  # each CPUU run its own folder: another user's identical file is not this one
            inside = directory.rstrip("\\").lower() + "\\"
            earlier = [f for f in earlier if str(f["remote_path"]).lower().startswith(inside)]
    known = sorted({str(f["sha256"]).lower() for f in earlier})

    def excluded(name: str) -> bool:
        lowered = name.lower()
        return lowered in pushed or lowered.endswith(tuple(x[1:] for x in _NOT_RESULTS))

    def finished(entry: dict[str, Any], path: Path, size: int, sha: str) -> None:
        expected = str(entry.get("Sha256") or "").lower()
        name = str(entry.get("Name") or path.name)
        if expected and expected != sha:
            result.problems.append(f"{name}: SHA-256 differs from the host's header (kept as is)")
        kind = _kind(name)
        # Read before it is journalled: a file over the row limit is set aside, never indexed.
        parsed = _read_results(ctx, result, path, session.limits) if kind == "result" else None
        _record(ctx, result, str(entry["Path"]), path, size, sha, kind)
        if parsed is not None:
            _add_results(ctx, result, parsed)

    directory = directory or ctx.staging
    sink = _DownloadSink(ctx.host_dir, directory, excluded, finished, session.limits)
    parameters: dict[str, Any] = {
        "Directory": directory,
        "Filter": RESULT_FILTER,
        "ExcludeName": sorted(pushed) + list(_NOT_RESULTS),
        "KnownSha256": known,
        "ChunkSize": session.chunk_size,
    }
    if since:
        parameters["NewerThan"] = since
    try:
        session.run(
            "download",
            parameters,
            on_output=sink,
            during="collect (download)",
        )
        sink.close()  # the last file: its length is checked, so a short one is set aside too
    except BaseException:
        try:
            problem = sink.abandon()
        except OSError as exc:  # the original failure matters more; say what is left behind
            problem = f"collect: a partly downloaded file could not be set aside: {exc}"
        if problem:
            result.problems.append(problem)
        raise
    finally:
        result.skipped_known = sink.skipped
        result.problems.extend(
            f"{name}: held a secret of this run, masked in the stored copy (the workstation's"
            " file still holds it)"
            for name in sink.scrubbed
        )
        result.problems.extend(
            f"{name}: locked on the host (another process holds it open exclusively); not"
            " collected, fetched again next time"
            for name in sink.locked
        )
    if on_profiles is not None:
        on_profiles(result.profiles)
    return result


def _read_results(
    ctx: HostContext, result: CollectResult, path: Path, limits: Limits
) -> ResultFile | None:
    """Parse a downloaded result file within ``limits.result_rows`` (None: not a text file).

    A file with more lines is hostile or broken: it is set aside as ``<name>.partial`` (never
    journalled, never read by the report) and the host fails with class ``limit``.
    """
    relative = path.relative_to(ctx.reports_dir.resolve()).as_posix()
    try:
        with path.open("rb") as stream:
            parsed = parse_result_stream(stream, relative, max_rows=limits.result_rows)
    except InputError as exc:
        result.problems.append(exc.render())
        return None
    if parsed.truncated:
        what = f"more than {limits.result_rows:,} lines (limits: result_rows)"
        result.problems.append(set_aside(path, what))
        raise limit_error(f"collect: {path.name!r} has {what}; not read")
    return parsed


def _add_results(ctx: HostContext, result: CollectResult, parsed: ResultFile) -> None:
    for problem in parsed.problems:
        result.problems.append(f"{parsed.path}:{problem.line}: {problem.reason}")
    if parsed.profiles:
        ctx.journal.add_profiles(ctx.run_id, ctx.host, ctx.user, parsed.profiles, parsed.path)
        result.profiles.extend(parsed.profiles)
