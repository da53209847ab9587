"""Which runs and which waves a report covers, with one clear line when the operator asks for
something the journal does not have."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import Journal


def resolve_runs(
    journal: Journal, run_ids: Sequence[str] | None, *, all_runs: bool = False
) -> list[str]:
    """The run ids to report on, oldest first.

    No ids (and not ``all_runs``) means the latest run that changed something (not a ``--check``
    dry run): that is what an operator wants right after a play. An id the journal does not know
    is an error that names it, never silently dropped.
    """
    runs = journal.runs()
    if not runs:
        raise InputError(f"no runs in {journal.path}")
    known = [run["run_id"] for run in runs]  # already ordered by start time
    if all_runs:
        return known
    if not run_ids:
        real = [run["run_id"] for run in runs if not run.get("check_mode")]
        return [(real or known)[-1]]
    unknown = [run_id for run_id in dict.fromkeys(run_ids) if run_id not in set(known)]
    if unknown:
        names = ", ".join(unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise InputError(f"unknown run id{plural} {names} (see the runs in {journal.path})")
    wanted = set(run_ids)
    return [run_id for run_id in known if run_id in wanted]


def wave_matcher(pattern: str) -> WavePattern:
    """Parse ``--wave``: globs separated by ``,`` or ``:``; a leading ``!`` excludes.

    The same shape as an inventory ``--limit`` (``wave1,wave2``, ``wave*:!wave9``), applied to
    the wave names the journal recorded. Case-sensitive, like Ansible group names.
    """
    parts = [part.strip() for part in re.split(r"[,:]", pattern) if part.strip()]
    if not parts:
        raise InputError(f"empty wave pattern {pattern!r}")
    include = [part for part in parts if not part.startswith("!")]
    exclude = [part[1:] for part in parts if part.startswith("!")]
    return WavePattern(pattern, tuple(include) or ("*",), tuple(exclude))


class WavePattern:
    """A parsed ``--wave`` pattern."""

    def __init__(self, text: str, include: tuple[str, ...], exclude: tuple[str, ...]):
        self.text = text
        self.include = include
        self.exclude = exclude

    def matches(self, wave: str) -> bool:
        return any(fnmatchcase(wave, glob) for glob in self.include) and not any(
            fnmatchcase(wave, glob) for glob in self.exclude
        )

    def select(self, waves: Iterable[str]) -> list[str]:
        """The matching waves; none at all is an error listing what there is."""
        waves = list(waves)
        chosen = [wave for wave in waves if self.matches(wave)]
        if not chosen:
            available = ", ".join(waves) or "none"
            raise InputError(f"no wave matches {self.text!r} (waves in these runs: {available})")
        return chosen
