"""What every step of a host visit shares: the visit's :class:`HostContext` and where things
live on the host.

The remote paths are defined once, here, for the steps, the lab's checks and the tests: the
versioned staging folder below ``STAGING_ROOT`` (``version_dir``), the state folder (the run
markers, Cleanup's marker), and below ``WORK_ROOT`` one folder per CPUU run (``run_dir``). The
two small readers of what a host sends that more than one step uses (``_text``,
``_protocol_error``) live here too, so no step imports another for them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpuu_fleet.filenames import task_folder_name
from cpuu_fleet.inputs.payload import Payload
from cpuu_fleet.journal import Journal
from cpuu_fleet.visit.session import SessionError
from cpuu_fleet.vocabulary import ErrorClass

if TYPE_CHECKING:  # what preflight found is kept on the context; preflight imports this module
    from cpuu_fleet.visit.steps.preflight import PreflightResult

STAGING_ROOT = "C:\\ProgramData\\cpuu-fleet"
STATE_DIR = STAGING_ROOT + "\\state"
WORK_ROOT = STAGING_ROOT + "\\work"
"""Below it, one folder per CPUU run (``run_dir``): CPUU's working directory, its user's alone."""
LOGON_USER_VAR = "cpuu_user"
"""Inventory variable: whom CPUU is for on a host, one user or a list (SIDs or ``DOMAIN\\user``):
it runs in the first of them found logged on, never as anybody else, and an at-logon task is
for the first of them. Unset: the console's user, else the one RDP user."""


def version_dir(version: str) -> str:
    return f"{STAGING_ROOT}\\{version}"


def run_dir(task_name: str) -> str:
    """The folder CPUU runs in for the run of ``task_name`` (``run-task`` makes it a copy of the
    staging folder that only SYSTEM, Administrators and the task's user may read or change), and
    so where its result files are collected from after that run."""
    return f"{WORK_ROOT}\\{task_folder_name(task_name)}"


@dataclass
class HostContext:
    """Everything the steps need about one host visit (built by ``host_visit.py``)."""

    run_id: str
    host: str
    journal: Journal
    reports_dir: Path
    payload: Payload | None = None
    rendered_files: dict[str, bytes] = field(default_factory=dict)
    """File name → bytes as they go on the wire (the rendered INI and batch files; secrets in)."""
    rendered_masked: dict[str, bytes] = field(default_factory=dict)
    """The same files with secrets masked: what may be kept on the controller."""
    version: str | None = None
    """The payload version (staging folder name); from the payload, or a previous run's."""
    stopping: threading.Event = field(default_factory=threading.Event)
    preflight: PreflightResult | None = None
    user: str | None = None
    cpuu_run_id: str | None = None
    """The run whose CPUU this visit carries on (a ``--resume``'s parent chain); None: its own."""
    cpuu_runs: tuple[str, ...] = ()
    """Every run of that CPUU run (see ``Journal.cpuu_runs``): their collected files count."""
    expected_users: tuple[str, ...] = ()
    """Whom CPUU is for (``cpuu_user``); empty: whoever is logged on (see ``LOGON_USER_VAR``)."""

    @property
    def staging(self) -> str:
        if not self.version:
            # The engine refuses run/collect without a known version before the wave, but a
            # push of rendered files alone (a play without a payload, nothing pushed before)
            # still gets here: a result of this host, not a crash of the wave.
            raise SessionError(
                ErrorClass.POLICY,
                "no payload version known for this host: push a payload first",
                transient=False,
            )
        return version_dir(self.version)

    @property
    def host_dir(self) -> Path:
        """Where this host's collected files go: ``reports/<run-id>/hosts/<host>/``."""
        return self.reports_dir / self.run_id / "hosts" / self.host


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _protocol_error(message: str) -> SessionError:
    return SessionError(ErrorClass.PROTOCOL, message, transient=False)
