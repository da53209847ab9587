"""PSRP for the lab: psrpcore's server objects, one worker thread per pipeline, output queues.

A :class:`LabShell` is one WSMan shell = one psrpcore ``ServerRunspacePool``. Each pipeline
(WSMan Command) runs its script handler in its own thread; the handler's input arrives through
``ScriptCall.input`` as the client Sends it, and what the handler writes is fragmented at once
into per-target queues that Receive long-polls drain. psrpcore is not thread-safe, so every touch
of the pool happens under the shell's condition lock.

Windows fidelity kept here: 32 KiB fragments, one fragment per ``rsp:Stream``, no
PipelineState=Running, ``<ToString>`` on warning/verbose records, the two-step open (capability and
private data in the first Receive, RunspacePoolState in the second), a realistic PSVersionTable.

Scope, as Windows does it: a script added without ``UseLocalScope`` (pypsrp's default) is
dot-sourced into the runspace's global scope, so its functions, script-level variables,
``Set-StrictMode`` and preference variables stay there for every later pipeline of the shell;
with ``UseLocalScope`` they die with the pipeline, but for ``$script:`` and ``$global:`` variables
(script text run in a local scope has no script scope of its own). Each shell keeps that global scope
(:attr:`LabShell.global_scope`) and what each pipeline asked for and found
(:attr:`LabShell.scope_log`): the lab cannot run PowerShell, so what a script defines is read from
its text (:func:`script_definitions`).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psrpcore
from psrpcore._payload import create_fragment
from psrpcore.types import (
    DebugRecord,
    ErrorRecord,
    ProgressRecordType,
    PSInvocationState,
    PSRPMessageType,
    VerboseRecord,
    WarningRecord,
)

from cpuu_fleet.lab.contract import PipelineStopped, ScriptFailed
from cpuu_fleet.lab.dispatch import Resolver
from cpuu_fleet.lab.psobjects import error_record, private_data

log = logging.getLogger(__name__)

FRAGMENT_SIZE = 32_768
"""Windows' PSRP fragment size (32,747 payload bytes + the 21-byte header)."""

SETTLE_S = 0.25
"""How long at most a Receive lets a still-running pipeline's output gather before answering
(see LabShell._settle); it answers at once when the pipeline ends or the answer is full."""

_BOUNDARY = object()
"""Queue marker: the next Receive answer starts here (Windows' two-step open)."""
_END_OF_INPUT = object()


_FUNCTION = re.compile(r"^\s*function\s+([A-Za-z_][\w-]*)", re.MULTILINE | re.IGNORECASE)
_ASSIGNMENT = re.compile(
    r"^\s*\$(?:script:|global:)?([A-Za-z_]\w*)\s*(?:\+|-)?=(?!=)", re.MULTILINE
)
_STRICT_MODE = re.compile(r"^\s*Set-StrictMode\b", re.MULTILINE | re.IGNORECASE)
_SCOPED_ASSIGNMENT = re.compile(
    r"\$(?:script|global):([A-Za-z_]\w*)\s*(?:\+|-)?=(?!=)", re.IGNORECASE
)


def global_assignments(text: str) -> frozenset[str]:
    """What a script run WITH ``UseLocalScope`` still leaves in the global scope: every
    ``$global:`` variable, and every ``$script:`` one too, because the new scope PowerShell makes
    for script text (not a script file) is not a script scope (``CommandProcessor``:
    ``NewScope(_fromScriptFile)``), so ``$script:`` names the global scope's script scope, which
    is the global scope itself."""
    return frozenset(f"variable:{name.lower()}" for name in _SCOPED_ASSIGNMENT.findall(text))


def script_definitions(text: str) -> frozenset[str]:
    """What running ``text`` leaves in the scope it runs in: ``function:<name>`` for each function
    it defines, ``variable:<name>`` for each variable it assigns at the start of a line (any
    depth: the lab does not tell a function's locals apart, an over-approximation that only makes
    a leak easier to see), and ``StrictMode`` when it sets strict mode. Names as PowerShell
    compares them, ignoring case."""
    found = {f"function:{name.lower()}" for name in _FUNCTION.findall(text)}
    found |= {f"variable:{name.lower()}" for name in _ASSIGNMENT.findall(text)}
    if _STRICT_MODE.search(text):
        found.add("StrictMode")
    return frozenset(found)


@dataclass(frozen=True)
class ScopeRecord:
    """One pipeline as the runspace's scopes saw it."""

    script: str
    """The script's marker name (``preflight``), as the dispatcher named the call."""
    local_scope: bool
    """The client asked for ``UseLocalScope``: the script ran in a child scope."""
    visible: frozenset[str]
    """What earlier pipelines had left in the global scope when this one started."""


class OperationTimedOut(Exception):
    """No data within OperationTimeout: the WSMan layer answers fault 2150858793."""


class UnknownCommand(Exception):
    """A Receive/Send/Signal named a CommandId this shell does not know."""


@dataclass
class ShellSettings:
    """What the CreateResponse reports about the shell (and who owns it)."""

    owner: str
    client_ip: str
    process_id: int
    idle_timeout_s: float = 7200.0


@dataclass
class ReceiveResult:
    chunks: list[bytes]
    done: bool


@dataclass
class _CachedReceive:
    """The last Receive of one target, kept to answer a repeated MessageID identically."""

    message_id: str
    result: ReceiveResult | None = None
    ready: bool = False


def _psrp_pipeline_id(fragment: bytes) -> uuid.UUID | None:
    """The PID field of the PSRP message starting in this fragment (.NET GUID byte order)."""
    if len(fragment) < 21 + 40 or not fragment[16] & 0x1:
        return None
    return uuid.UUID(bytes_le=bytes(fragment[21 + 24 : 21 + 40]))


class LabPipeline:
    """One WSMan command: a psrpcore ServerPipeline plus the thread running its handler.

    Implements :class:`cpuu_fleet.lab.contract.PipelineHost` for the handler.
    """

    def __init__(self, shell: LabShell, command_id: str, pipeline_id: uuid.UUID):
        self.shell = shell
        self.command_id = command_id
        self.pipe = psrpcore.ServerPipeline(shell.pool, pipeline_id)
        self.stopping = threading.Event()
        self.finished = False
        self.signalled = False
        self._input: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        user = shell.settings.owner.rsplit("\\", 1)[-1] or "Public"
        self.current_location = f"C:\\Users\\{user}\\Documents"
        """Where relative paths resolve: a WinRM logon starts in the user's Documents."""

    # -- lifecycle (called by LabShell under its lock) -----------------------------------

    def launch(self, metadata: Any) -> None:
        if getattr(metadata, "no_input", False):
            self._input.put(_END_OF_INPUT)
        self._thread = threading.Thread(
            target=self._run,
            args=(metadata,),
            name=f"lab-pipeline-{self.command_id[:8]}",
            daemon=True,
        )
        self._thread.start()

    def feed_input(self, item: Any) -> None:
        self._input.put(item)

    def end_input(self) -> None:
        self._input.put(_END_OF_INPUT)

    def _run(self, metadata: Any) -> None:
        shell = self.shell
        with shell.cond:
            shell.pump()
            self.pipe.start()
            # Windows never sends PipelineState=Running: drop the one psrpcore queues.
            shell.pool.data_to_send()
            if shell.first_pipeline:
                # A fresh wsmprovhost loads its modules on the first pipeline and says so.
                shell.first_pipeline = False
                self.pipe.write_progress(
                    "Preparing modules for first use.",
                    0,
                    " ",
                    record_type=ProgressRecordType.Completed,
                )
                shell.pump()
        state: tuple[PSInvocationState, ErrorRecord | None]
        try:
            call, handler = shell.resolve(metadata)
            shell.enter_scope(call.name, call.script, metadata)
            call.input = self._iter_input()
            handler(shell.workstation, call, self)
            if self.stopping.is_set():
                raise PipelineStopped()
            state = (PSInvocationState.Completed, None)
        except ScriptFailed as exc:
            state = (
                PSInvocationState.Failed,
                error_record(
                    exc.message,
                    error_id=exc.error_id,
                    category=exc.category,
                    exception_type=getattr(
                        exc, "exception_type", "System.Management.Automation.RuntimeException"
                    ),
                    target=getattr(exc, "term", None),
                ),
            )
        except PipelineStopped:
            state = (
                PSInvocationState.Stopped,
                error_record(
                    "The pipeline has been stopped.",
                    error_id="PipelineStopped",
                    category="OperationStopped",
                    exception_type="System.Management.Automation.PipelineStoppedException",
                ),
            )
        except Exception as exc:
            log.exception("lab script handler crashed on %s", shell.settings.owner)
            text = str(exc) or type(exc).__name__
            state = (
                PSInvocationState.Failed,
                error_record(text, error_id=type(exc).__name__, category="NotSpecified"),
            )
        with shell.cond:
            if state[0] == PSInvocationState.Completed:
                self.pipe.complete()
            else:
                self.pipe._change_state(state[0], state[1])
            self.finished = True
            shell.pump()
            self.pipe.close()
            if self.signalled:
                shell.forget(self.command_id)
            shell.cond.notify_all()

    # -- PipelineHost --------------------------------------------------------------------

    def _write(self, action: Callable[[], None]) -> None:
        if self.stopping.is_set():
            raise PipelineStopped()
        with self.shell.cond:
            action()
            self.shell.pump()

    def write_output(self, value: Any) -> None:
        self._write(lambda: self.pipe.write_output(value))

    def write_error(
        self, message: str, *, error_id: str = "", category: str = "NotSpecified"
    ) -> None:
        record = error_record(
            message,
            error_id=error_id or "Microsoft.PowerShell.Commands.WriteErrorException",
            category=category,
            exception_type="Microsoft.PowerShell.Commands.WriteErrorException",
        )
        self._write(
            lambda: self.pipe.prepare_message(record, message_type=PSRPMessageType.ErrorRecord)
        )

    def write_warning(self, message: str) -> None:
        record = WarningRecord(Message=message)
        record.PSObject.to_string = message
        self._write(
            lambda: self.pipe.prepare_message(record, message_type=PSRPMessageType.WarningRecord)
        )

    def write_verbose(self, message: str) -> None:
        record = VerboseRecord(Message=message)
        record.PSObject.to_string = message
        self._write(
            lambda: self.pipe.prepare_message(record, message_type=PSRPMessageType.VerboseRecord)
        )

    def write_debug(self, message: str) -> None:
        """Beyond the contract: ``Write-Debug`` with ``$DebugPreference = 'Continue'``."""
        record = DebugRecord(Message=message)
        record.PSObject.to_string = message
        self._write(
            lambda: self.pipe.prepare_message(record, message_type=PSRPMessageType.DebugRecord)
        )

    def write_information(self, message: str, source: str = "Write-Information") -> None:
        """Beyond the contract: ``Write-Information`` (PowerShell 5.1's information stream)."""
        computer = str(getattr(self.shell.workstation, "name", "WORKSTATION")).upper()
        self._write(
            lambda: self.pipe.write_information(
                message, source, user=self.shell.settings.owner, computer=computer
            )
        )

    def sleep(self, seconds: float) -> None:
        if self.stopping.wait(max(0.0, seconds)):
            raise PipelineStopped()

    def _iter_input(self) -> Iterator[Any]:
        while True:
            try:
                item = self._input.get(timeout=0.2)
            except queue.Empty:
                if self.stopping.is_set():
                    raise PipelineStopped() from None
                continue
            if item is _END_OF_INPUT:
                return
            if self.stopping.is_set():
                raise PipelineStopped()
            yield item


@dataclass
class LabShell:
    """One WSMan shell: a PSRP runspace pool, its pipelines and their output queues."""

    shell_id: str
    resource_uri: str
    settings: ShellSettings
    workstation: Any
    resolve: Resolver
    pool: psrpcore.ServerRunspacePool = field(init=False)
    cond: threading.Condition = field(default_factory=threading.Condition)
    pipelines: dict[str, LabPipeline] = field(default_factory=dict)
    queues: dict[str | None, deque[Any]] = field(default_factory=dict)
    closed: bool = False
    first_pipeline: bool = True
    created_at: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    """When a client last touched the shell (for the IdleTimeOut reaper)."""
    receiving: int = 0
    """Receives long-polling right now: a shell being polled is not idle."""
    _receive_cache: dict[str | None, _CachedReceive] = field(default_factory=dict)
    global_scope: set[str] = field(default_factory=set)
    """What scripts run without ``UseLocalScope`` left in the runspace's global scope (see
    :func:`script_definitions`): it lasts as long as the shell, as on Windows."""
    scope_log: list[ScopeRecord] = field(default_factory=list)
    """Every pipeline's scope request and what it found in the global scope, in order."""
    _command_of: dict[uuid.UUID, str] = field(default_factory=dict)
    """PSRP pipeline id -> WSMan CommandId. Windows routes by the CommandId; they are equal
    with pypsrp 0.9.1, but older clients wrote the PSRP ids big-endian."""

    def __post_init__(self) -> None:
        self.pool = psrpcore.ServerRunspacePool(application_private_data=private_data())
        self.queues[None] = deque()

    def enter_scope(self, name: str, script: str, metadata: Any) -> None:
        """A pipeline starts: note what it finds in the global scope, and leave its definitions
        there unless its first command asked for ``UseLocalScope`` (as ``AddScript(text, true)``
        does; PowerShell builds the command processor with ``UseLocalScope ?? false``); with it,
        only its ``$script:`` and ``$global:`` variables (:func:`global_assignments`)."""
        commands = list(getattr(metadata, "commands", ()))
        first = commands[0] if commands else None
        local = bool(getattr(first, "use_local_scope", None))
        with self.cond:
            self.scope_log.append(ScopeRecord(name, local, frozenset(self.global_scope)))
            if first is not None and first.is_script:
                leaked = global_assignments(script) if local else script_definitions(script)
                self.global_scope |= leaked

    def run_time(self) -> str:
        seconds = int(time.monotonic() - self.created_at)
        return f"P0DT{seconds // 3600}H{seconds // 60 % 60}M{seconds % 60}S"

    # -- WSMan operations ----------------------------------------------------------------

    def create(self, creation: bytes) -> None:
        """Create: SessionCapability + InitRunspacePool; answers go out in two Receives."""
        with self.cond:
            self._feed(creation, None)
            pool_queue = self.queues[None]
            if pool_queue:
                # The last queued fragment is RunspacePoolState(Opened): Windows sends it alone.
                last = pool_queue.pop()
                pool_queue.append(_BOUNDARY)
                pool_queue.append(last)
            self.cond.notify_all()

    def command(self, command_id: str, first_fragment: bytes) -> None:
        with self.cond:
            self._check_open()
            if command_id not in self.pipelines:
                pid = _psrp_pipeline_id(first_fragment) or uuid.UUID(command_id)
                self._command_of[pid] = command_id
                self.pipelines[command_id] = LabPipeline(self, command_id, pid)
                self.queues[command_id] = deque()
            self._feed(first_fragment, command_id)

    def send(self, command_id: str | None, data: bytes) -> None:
        with self.cond:
            self._check_open()
            if command_id is not None and command_id not in self.pipelines:
                raise UnknownCommand(command_id)
            self._feed(data, command_id)

    def receive(
        self, command_id: str | None, message_id: str, timeout: float, budget_chars: int
    ) -> ReceiveResult:
        """Long-poll for output of the pool (None) or one pipeline, up to about ``budget_chars``
        of base64 in the answer.

        A repeated MessageID gets the answer the first request got, even while the first is
        still waiting: pypsrp 0.9 re-sends the identical Receive after a read timeout and
        expects the same data again, so nothing may be handed out twice or lost."""
        deadline = time.monotonic() + timeout
        with self.cond:
            self.receiving += 1
            try:
                previous = self._receive_cache.get(command_id)
                if previous is not None and previous.message_id == message_id:
                    while not previous.ready:
                        self.cond.wait()
                    if previous.result is None:
                        raise OperationTimedOut()
                    return previous.result
                entry = _CachedReceive(message_id)
                self._receive_cache[command_id] = entry
                try:
                    entry.result = self._receive_locked(command_id, deadline, budget_chars)
                    return entry.result
                finally:
                    entry.ready = True
                    self.cond.notify_all()
            finally:
                self.receiving -= 1
                self.last_activity = time.monotonic()

    def idle_for(self, now: float) -> float:
        """Seconds since the client last used this shell (0 while a Receive is waiting)."""
        with self.cond:
            return 0.0 if self.receiving else now - self.last_activity

    def _receive_locked(
        self, command_id: str | None, deadline: float, budget_chars: int
    ) -> ReceiveResult:
        """Receive with the lock held (see :meth:`receive`)."""
        while True:
            self._check_open()
            out = self.queues.get(command_id)
            if out is None:
                raise UnknownCommand(command_id or "")
            while out and out[0] is _BOUNDARY and len(out) > 1:
                out.popleft()
            if out and out[0] is not _BOUNDARY:
                self._settle(command_id, out, budget_chars)
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationTimedOut()
            self.cond.wait(remaining)
        chunks: list[bytes] = []
        used = 0
        while out and out[0] is not _BOUNDARY:
            size = (len(out[0]) + 2) // 3 * 4
            if chunks and used + size > budget_chars:
                break
            chunks.append(out.popleft())
            used += size
        done = False
        if command_id is not None:
            pipeline = self.pipelines.get(command_id)
            if pipeline is not None and pipeline.finished and not out:
                done = True
                self.forget(command_id)
        return ReceiveResult(chunks, done)

    def _settle(self, command_id: str | None, out: deque[Any], budget_chars: int) -> None:
        """Let a running pipeline's output gather briefly before answering (lock held), so a
        quick script's output and final state travel in one ReceiveResponse as on Windows."""
        pipeline = self.pipelines.get(command_id) if command_id else None
        waited = 0.0
        while pipeline is not None and not pipeline.finished and waited < SETTLE_S:
            if sum(len(c) for c in out if c is not _BOUNDARY) * 4 // 3 >= budget_chars:
                return
            started = time.monotonic()
            self.cond.wait(SETTLE_S - waited)
            waited += time.monotonic() - started

    def signal(self, command_id: str, *, terminate: bool) -> None:
        """ctrl_c (PowerShell.stop) or Terminate (PowerShell.close): stop the handler; its
        queued output is dropped once it ends (the client no longer reads it)."""
        with self.cond:
            pipeline = self.pipelines.get(command_id)
            if pipeline is None:
                return
            pipeline.signalled = True
            pipeline.stopping.set()
            if pipeline.finished:
                self.forget(command_id)
            self.cond.notify_all()

    def close(self) -> None:
        """Delete: stop every pipeline and refuse further use."""
        with self.cond:
            self.closed = True
            for pipeline in self.pipelines.values():
                pipeline.signalled = True
                pipeline.stopping.set()
            self.cond.notify_all()

    # -- internals (lock held) -----------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise UnknownCommand("shell closed")

    def forget(self, command_id: str) -> None:
        pipeline = self.pipelines.pop(command_id, None)
        if pipeline is not None:
            self._command_of.pop(pipeline.pipe.pipeline_id, None)
        self.queues.pop(command_id, None)

    def _feed(self, data: bytes, command_id: str | None) -> None:
        self.last_activity = time.monotonic()
        # pypsrp writes the call id of Set{Max,Min}Runspaces as <I64 N="CI">; Windows reads it
        # case-insensitively, psrpcore looks for "ci" only. Same length, so fragments stay valid.
        data = data.replace(b'<I64 N="CI">', b'<I64 N="ci">')
        pipeline = self.pipelines.get(command_id) if command_id else None
        pid = pipeline.pipe.pipeline_id if pipeline else None
        self.pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, pid))
        while True:
            event = self.pool.next_event()
            if event is None:
                break
            self._on_event(event)
        self.pump()

    def _on_event(self, event: Any) -> None:
        target = self._command_of.get(event.pipeline_id) if event.pipeline_id else None
        pipeline = self.pipelines.get(target) if target else None
        if isinstance(event, psrpcore.CreatePipelineEvent) and pipeline is not None:
            pipeline.launch(event.pipeline)
        elif isinstance(event, psrpcore.PipelineInputEvent) and pipeline is not None:
            pipeline.feed_input(event.data)
        elif isinstance(event, psrpcore.EndOfPipelineInputEvent) and pipeline is not None:
            pipeline.end_input()
        elif isinstance(event, psrpcore.GetAvailableRunspacesEvent):
            self.pool.runspace_availability_response(event.ci, 1)
        elif isinstance(
            event,
            psrpcore.SetMaxRunspacesEvent
            | psrpcore.SetMinRunspacesEvent
            | psrpcore.ResetRunspaceStateEvent,
        ):
            self.pool.runspace_availability_response(event.ci, True)

    def pump(self) -> None:
        """Move every message psrpcore has queued into the per-target fragment queues.

        Fragments are cut here, from a memoryview, instead of with ``data_to_send``: psrpcore
        re-slices its buffer for every fragment, which is quadratic (a 50 MB fetch would spend
        minutes there holding the shell lock). Relies on psrpcore 0.3's ``_send_buffer`` of
        ``PSRPMessage`` objects (``_data``, ``object_id``, ``pipeline_id``).
        """
        pending = self.pool._send_buffer
        moved = False
        while pending:
            message = pending.pop(0)
            target = self._command_of.get(message.pipeline_id) if message.pipeline_id else None
            if message.pipeline_id is not None and target is None:
                continue  # a pipeline the client already let go of
            out = self.queues.get(target)
            if out is None:
                continue  # a pipeline the client already let go of
            data = memoryview(bytes(message._data))
            step = FRAGMENT_SIZE - 21
            count = max(1, -(-len(data) // step))
            for index in range(count):
                chunk = data[index * step : (index + 1) * step]
                out.append(
                    create_fragment(message.object_id, index, bytes(chunk), index == count - 1)
                )
            moved = True
        if moved:
            self.cond.notify_all()
