"""The seams inside the lab: what the protocol layer offers to script handlers, and what a host is.

The lab has three layers that are built and tested apart:

* the **protocol layer** (WS-Management over HTTP(S), PSRP through psrpcore) that pypsrp talks to;
* the **workstation model** (file system, users, Outlook profiles, scheduled tasks, the CPUU
  emulator) that plays one Windows workstation;
* **script handlers** that stand in for PowerShell: the lab cannot run PowerShell, so each script
  it knows (by its ``# cpuu-fleet: <name>`` marker, or pypsrp's own copy/fetch scripts) maps to a
  Python function over the workstation model.

This module is the contract between them. It holds no logic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class TransportFaults:
    """How the network and WinRM service of one simulated host misbehave.

    The protocol layer honours these; the workstation model never sees them.
    """

    listening: bool = True
    """False: nothing listens on the host's address (a client sees connection refused)."""

    password: str | None = None
    """The password the host accepts; None means the fleet's shared lab password. A different value
    plays "wrong password": every logon gets a fresh HTTP 401."""

    latency_s: float = 0.0
    """Added before answering each HTTP request (a slow WAN link)."""

    drop_after_send_bytes: int | None = None
    """Close the TCP connection, without answering, once this many bytes of pipeline input (WSMan
    Send) have arrived on this host in total; plays "connection dropped mid transfer". Later
    connections work again, as after a network blip."""


class PipelineStopped(Exception):
    """Raised inside a handler (by :meth:`PipelineHost.sleep` or the input iterator) when the
    client stopped or closed the pipeline. Handlers may let it propagate."""


class ScriptFailed(Exception):
    """A terminating error: the pipeline ends Failed and the client sees ``had_errors``.

    Mirrors a PowerShell ``throw``: ``error_id`` is the FullyQualifiedErrorId and ``category`` the
    ErrorCategory name (e.g. ``ObjectNotFound``, ``InvalidData``, ``ResourceUnavailable``).
    """

    def __init__(self, message: str, *, error_id: str = "", category: str = "NotSpecified"):
        super().__init__(message)
        self.message = message
        self.error_id = error_id or message
        self.category = category


class PipelineHost(Protocol):
    """What a handler may do to the pipeline it runs in (implemented by the protocol layer)."""

    stopping: threading.Event
    """Set when the client sends Stop (ctrl_c) or Terminate, or the shell is deleted."""

    def write_output(self, value: Any) -> None:
        """Emit one object on the output stream (str, int, bool, float, bytes, dict, list, None)."""

    def write_error(
        self, message: str, *, error_id: str = "", category: str = "NotSpecified"
    ) -> None:
        """A non-terminating error (``Write-Error``): lands in ``streams.error``, no had_errors."""

    def write_warning(self, message: str) -> None: ...

    def write_verbose(self, message: str) -> None: ...

    def sleep(self, seconds: float) -> None:
        """Wait, but raise :class:`PipelineStopped` as soon as the client stops the pipeline."""


@dataclass
class ScriptCall:
    """One pipeline invocation as the lab saw it arrive."""

    name: str
    """The script's identity: the marker name (``preflight``), or ``pypsrp:copy``,
    ``pypsrp:fetch``, ``iex`` (Client.execute_ps)."""

    script: str
    """The script text exactly as received."""

    arguments: list[Any] = field(default_factory=list)
    """Positional arguments (``add_argument``), in order."""

    parameters: dict[str, Any] = field(default_factory=dict)
    """Named parameters (``add_parameter``); a switch has the value True. Keys as sent (match
    them case-insensitively, as PowerShell does)."""

    input: Iterator[Any] = field(default_factory=lambda: iter(()))
    """Pipeline input objects, yielded as they arrive from the client; the iterator blocks until
    the next one arrives and ends at EndOfPipelineInput. Raises PipelineStopped if stopped."""

    def param(self, name: str, default: Any = None) -> Any:
        """A named parameter, looked up case-insensitively as PowerShell binds them."""
        wanted = name.lower()
        for key, value in self.parameters.items():
            if key.lower() == wanted:
                return value
        return default


# A handler gets the workstation model of the host it runs on (typed loosely here so that the
# contract does not import the model), the call, and the pipeline. It returns nothing: it writes
# to the pipeline, and raises ScriptFailed for a terminating error.
ScriptHandler = Callable[[Any, ScriptCall, PipelineHost], None]
