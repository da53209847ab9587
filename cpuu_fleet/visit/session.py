"""One WinRM conversation with one workstation: a pypsrp WSMan + RunspacePool, reused by every step.

Why one pool per host visit: opening a PSRP runspace pool costs several round trips (and, on real
Windows, a wsmprovhost.exe start). ``pypsrp.client.Client`` opens a new one for every call; we open
it once and run each step as its own ``PowerShell`` pipeline on it. pypsrp objects are not
thread-safe (NTLM sealing state, the requests session): a :class:`HostSession` belongs to the one
worker thread that created it and is never shared.

Why the error classes: the runner retries transient failures and the report tells an operator what
to do next, so every failure is turned into one :class:`SessionError` with a class an operator can
act on (unreachable, authentication, certificate, timeout, remote, protocol; local for our own
disk; limit for a workstation that sent more than :mod:`cpuu_fleet.limits` allows). Every message
goes through the redactor before it is stored: pypsrp and workstations quote things we do not
control.
"""

from __future__ import annotations

import functools
import http.client
import logging
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from pypsrp.exceptions import (
    AuthenticationError,
    FragmentError,
    InvalidPSRPOperation,
    SerializationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
    _InvalidStateError,
)
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from cpuu_fleet.inputs.connection import DEFAULTS, check_timeouts
from cpuu_fleet.inputs.kerberos import kerberos_reason
from cpuu_fleet.limits import DEFAULT_LIMITS, Limits, describe_size
from cpuu_fleet.redact import REDACTOR, Redactor
from cpuu_fleet.vocabulary import TRANSIENT_CLASSES, ErrorClass

_LOG = logging.getLogger("cpuu_fleet.run.session")
"""A child of the run log (``events.RUN_LOG``): its records land in the run's log file."""

#: How often a wait that the operator may abandon (Ctrl-C) looks at the abandon flag. The Receive
#: itself keeps long-polling for the whole OperationTimeout in a helper thread, so a CPUU run of
#: minutes costs one round trip per OperationTimeout instead of one every few seconds.
ABANDON_CHECK_S = 0.5

#: WSMan fault for "the operation timed out": a normal end of a Receive long-poll.
_OPERATION_TIMEOUT_FAULT = 2150858793


class SessionError(Exception):
    """A classified failure talking to one host. Its text is already scrubbed of secrets."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        transient: bool | None = None,
        error_id: str | None = None,
        output: list[Any] | None = None,
    ):
        self.error_class = error_class
        self.message = REDACTOR.scrub(message) or ""
        self.transient = error_class in TRANSIENT_CLASSES if transient is None else transient
        self.error_id = error_id
        self.output = output or []
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"SessionError({self.error_class.value}, {self.message!r})"


class Interrupted(SessionError):
    """The operator aborted (second Ctrl-C) while we waited on the host.

    Nothing on the host is stopped: a CPUU already started finishes on its own (the scheduled
    task does not depend on our connection), and ``--resume`` asks the host what became of it.
    """

    def __init__(self, message: str):
        super().__init__(ErrorClass.INTERRUPTED, message, transient=False)


class _ConsumerFailed(Exception):
    """An ``on_output`` handler raised: carries its exception past the network classifier."""

    def __init__(self, original: Exception):
        super().__init__(original)
        self.original = original


def local_error(during: str, exc: OSError) -> SessionError:
    """A controller-side file error (disk full, permissions) met while working on a host.

    It is a result of the visit like any other: CPUU's verdict, if CPUU already ran, stands
    and this is added to it. Not transient: retrying at once would meet the same full disk.
    """
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    why = exc.strerror or str(exc) or type(exc).__name__
    return SessionError(
        ErrorClass.LOCAL,
        f"{during}: could not write on the controller: {why}{where}",
        transient=False,
    )


def limit_error(message: str) -> SessionError:
    """The workstation sent more than a limit allows: the host fails with class ``limit``.

    Not transient: a host that lies about a file's length or streams without end will do it again.
    """
    return SessionError(ErrorClass.LIMIT, message, transient=False)


def approx_size(value: Any, depth: int = 0) -> int:
    """About how many bytes an output object or stream record holds: its text, recursively.

    A bound, not an accounting: strings and bytes count their length, containers and objects their
    members (to a depth of 8, then their ``str``), everything else 8 bytes.
    """
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    if depth >= 8:
        return len(str(value))
    if isinstance(value, Mapping):
        return 8 + sum(
            approx_size(k, depth + 1) + approx_size(v, depth + 1) for k, v in value.items()
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        return 8 + sum(approx_size(item, depth + 1) for item in value)
    members = getattr(value, "__dict__", None)
    if isinstance(members, dict):
        return 8 + approx_size(members, depth + 1)
    return len(str(value))


_STREAMS = ("error", "warning", "verbose", "debug", "information", "progress")
"""pypsrp's record lists on ``PowerShell.streams``: they grow for the pipeline's whole life."""


class _OutputMeter:
    """Counts what one pipeline keeps in the controller's memory against ``Limits.output_bytes``.

    Kept means: output objects collected into the result (no ``on_output`` consumer) and every
    stream record pypsrp holds. Streamed objects are the consumer's to bound (``file_size``).
    """

    def __init__(self, during: str, limit: int):
        self.during = during
        self.limit = limit
        self.used = 0
        self._seen = dict.fromkeys(_STREAMS, 0)

    def add(self, items: list[Any]) -> None:
        self.used += sum(approx_size(item) for item in items)
        self._check()

    def add_records(self, ps: PowerShell) -> None:
        """The records that arrived since the last look (each counted once)."""
        for name in _STREAMS:
            records = getattr(ps.streams, name, None) or []
            start = self._seen[name]
            if len(records) > start:
                self.used += sum(approx_size(r) for r in records[start:])
                self._seen[name] = len(records)
        self._check()

    def _check(self) -> None:
        if self.used > self.limit:
            raise limit_error(
                f"{self.during}: the workstation sent more than {describe_size(self.limit)} of"
                " output (limits: output_size); stopped"
            )


def _walk_causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException) and id(arg) not in seen:
                yield from _walk_causes(arg)
        current = current.__cause__ or current.__context__


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:500]


def classify(
    exc: BaseException, *, during: str = "", redactor: Redactor = REDACTOR
) -> SessionError:
    """Turn any exception raised while talking to a host into a :class:`SessionError`."""
    if isinstance(exc, SessionError):
        return exc
    prefix = f"{during}: " if during else ""

    def make(cls: ErrorClass, text: str, **kwargs: Any) -> SessionError:
        return SessionError(cls, redactor.scrub(prefix + text) or "", **kwargs)

    chain = list(_walk_causes(exc))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or isinstance(
        exc, requests.exceptions.SSLError
    ):
        return make(ErrorClass.CERTIFICATE, f"TLS certificate verification failed ({_short(exc)})")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return make(ErrorClass.UNREACHABLE, "connect timeout: no answer from the host")
    if isinstance(exc, (requests.exceptions.ReadTimeout, socket.timeout, TimeoutError)):
        return make(ErrorClass.TIMEOUT, f"read timeout: the host stopped answering ({_short(exc)})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in str(exc):
            return make(ErrorClass.UNREACHABLE, "connection refused: WinRM is not listening")
        if any(isinstance(e, socket.gaierror) for e in chain) or "resolve" in str(exc).lower():
            return make(ErrorClass.UNREACHABLE, "name resolution failed (DNS)")
        return make(ErrorClass.UNREACHABLE, f"connection dropped ({_short(exc)})")
    if isinstance(exc, (ConnectionError, http.client.HTTPException)):
        return make(ErrorClass.UNREACHABLE, f"connection dropped ({_short(exc)})")
    if isinstance(exc, AuthenticationError):
        return make(
            ErrorClass.AUTHENTICATION, "authentication failed (HTTP 401): check user and password"
        )
    if type(exc).__module__.startswith(("spnego", "gssapi", "krb5")):
        reason = kerberos_reason(exc)
        text = f"Kerberos: {reason}" if reason else f"authentication failed ({_short(exc)})"
        return make(ErrorClass.AUTHENTICATION, text)
    if isinstance(exc, WSManFaultError):
        reason = exc.reason or exc.message or ""
        return make(ErrorClass.PROTOCOL, f"WSMan fault {exc.code}: {' '.join(str(reason).split())}")
    if isinstance(exc, WinRMTransportError):
        return make(ErrorClass.PROTOCOL, f"HTTP {exc.code} from WinRM")
    if isinstance(
        exc,
        (
            ET.ParseError,
            FragmentError,
            SerializationError,
            InvalidPSRPOperation,
            _InvalidStateError,
            WinRMError,
        ),
    ):
        return make(ErrorClass.PROTOCOL, f"{type(exc).__name__}: {_short(exc)}")
    if isinstance(exc, OSError):
        return make(ErrorClass.UNREACHABLE, f"network error ({_short(exc)})")
    if isinstance(exc, ValueError):
        # pypsrp raises ValueError for unusable settings, e.g. Basic over HTTP without opting out of
        # message encryption: nothing will fix itself, the inventory must change.
        return make(ErrorClass.PROTOCOL, f"unusable connection settings: {_short(exc)}")
    return make(ErrorClass.PROTOCOL, f"{type(exc).__name__}: {_short(exc)}", transient=False)


@dataclass
class ScriptResult:
    """What one pipeline produced: its output objects and any non-fatal warnings."""

    output: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def first(self) -> Any:
        """The first output object (the remote scripts return one hashtable), or None."""
        return self.output[0] if self.output else None


def error_record_text(record: Any) -> str:
    """The message of a pypsrp ErrorRecord, however much of it the server filled in."""
    for candidate in (
        str(record) if record is not None else "",
        getattr(getattr(record, "exception", None), "message", None),
        getattr(record, "details_message", None),
        getattr(record, "message", None),
    ):
        if candidate and candidate != "None":
            return " ".join(str(candidate).split())
    return "unknown remote error"


def _load_script(name: str) -> str:
    from cpuu_fleet.visit.remote import load_script

    return load_script(name)


def _pin_proxy_settings(wsman: WSMan) -> None:
    """Resolve the environment's proxy settings once per host instead of once per request.

    pypsrp builds its ``requests.Session`` with the proxies the environment gives for this
    endpoint (``HTTP_PROXY``/``NO_PROXY``, or its own ``proxy``/``no_proxy``), but leaves
    ``trust_env`` on, so requests re-reads and re-parses the whole environment on every one of
    a visit's ~27 round trips: a fifth of the controller's CPU per host in a 10-host profile.
    ``Session.send`` (all pypsrp uses) consults ``trust_env`` for nothing but that proxy lookup,
    whose answer for a fixed endpoint is the one pypsrp already stored, so switching it off
    changes no behaviour. Building the session early only moves pypsrp's own setup errors
    (e.g. Basic over HTTP) from the first request to here, inside the same ``open``.
    """
    transport = wsman.transport
    if transport.session is None:
        transport.session = transport._build_session()
    transport.session.trust_env = False


class QuickStringSerializer(Serializer):
    """pypsrp's CLIXML serializer with a shortcut for strings that need no escaping.

    pypsrp escapes every string with two regular-expression passes (``_x`` → ``_x005F_x``, and
    control or astral characters → ``_xHHHH_``), even a 380 kB base64 chunk of a push, where
    they find nothing: 2.3 ms of the 4.4 ms it takes to pack one full Send. A string of
    printable ASCII without ``_`` contains nothing either pass could change, so it is returned
    as is; every other string takes pypsrp's own path. The CLIXML is byte for byte the same.


    A long string with line breaks or ``_`` (a remote script: ``run-task`` is 40 kB, hundreds
    of line breaks, each a regular-expression callback) is escaped once per process and then
    looked up: the scripts are the same text in every pipeline of every visit, and a detached
    run step runs ``run-task`` twice or more per host (Start, Status, Remove).
    """

    def _serialize_string(self, value: str | None) -> str | None:
        if type(value) is str and value.isascii() and value.isprintable() and "_" not in value:
            return value
        if type(value) is str and _CACHED_MIN <= len(value) <= _CACHED_MAX:
            return _escaped(value)
        return super()._serialize_string(value)  # type: ignore[no-any-return]


_CACHED_MIN, _CACHED_MAX = 4096, 262144
"""The strings :class:`QuickStringSerializer` escapes once: long enough to be a script, short
enough that the cache stays small (at most ``maxsize`` × 256 kB; the scripts are under 50 kB)."""


@functools.lru_cache(maxsize=16)
def _escaped(value: str) -> str:
    """pypsrp's own escaping of ``value`` (the cache is keyed and compared by the whole text)."""
    return Serializer()._serialize_string(value)  # type: ignore[no-any-return]


def _use_quick_strings(pool: RunspacePool) -> None:
    """Give a not yet opened pool the :class:`QuickStringSerializer` (pypsrp 0.9.1 keeps its
    serializer in ``_serializer`` and hands the same object to its fragmenter)."""
    quick = QuickStringSerializer()
    pool._serializer = quick
    pool._fragmenter.serializer = quick


class HostSession:
    """One host's WSMan connection and RunspacePool, opened once per visit, closed at the end.

    Use as a context manager. :meth:`run` executes one remote script (by its name in
    ``cpuu_fleet/visit/remote/``) as its own pipeline.

    A pipeline that has finished (Completed, Failed or Stopped) is never closed with its own
    Signal Terminate: that is one round trip per pipeline for nothing the host needs. The
    Receive that carried the final PipelineState also ends the WSMan command (CommandState
    Done), its runspace is free for the next pipeline at once (PSRP's max_runspaces=1 counts
    running pipelines only), and the pool's Delete at the end of the visit ends wsmprovhost with
    everything in it. Assumption (Windows' docs are silent on idle completed commands): a visit
    runs a handful of pipelines, far below the PowerShell plugin's MaxConcurrentCommandsPerShell,
    so leaving them to the Delete is safe; pypsrp 0.8 never closed pipelines at all and real
    Windows recordings (``test_client_execute_ps``) show Command, Receive, Delete and nothing
    else. The Ansible fix for wsmprovhost memory growth (ansible#55351) was about pools kept open
    for a whole play, which a visit never does.
    """

    def __init__(
        self,
        host: str,
        server: str,
        wsman_kwargs: Mapping[str, Any],
        *,
        configuration_name: str = DEFAULTS["configuration_name"],
        script_loader: Callable[[str], str] = _load_script,
        limits: Limits = DEFAULT_LIMITS,
    ):
        self.host = host
        self.limits = limits
        """What this host may send (the play's ``limits:``); the engine sets it per play."""
        self._server = server
        kwargs = dict(wsman_kwargs)
        configuration_name = kwargs.pop("configuration_name", None) or configuration_name
        self.operation_timeout = int(kwargs.get("operation_timeout", DEFAULTS["operation_timeout"]))
        read_timeout = float(kwargs.get("read_timeout", DEFAULTS["read_timeout"]))
        check_timeouts(read_timeout, self.operation_timeout, f"host {host}")
        self._kwargs = kwargs
        self._configuration_name = configuration_name
        self._load = script_loader
        self._wsman: WSMan | None = None
        self._pool: RunspacePool | None = None
        self._finished: PowerShell | None = None
        self._broken = False
        self.pipelines_run = 0

    def __repr__(self) -> str:  # never the kwargs: they hold the password
        return f"HostSession({self.host!r}, {self._server!r})"

    # ------------------------------------------------------------------------------ lifecycle

    def open(self) -> HostSession:
        try:
            self._wsman = WSMan(self._server, **self._kwargs)
            _pin_proxy_settings(self._wsman)
            self._pool = RunspacePool(self._wsman, configuration_name=self._configuration_name)
            _use_quick_strings(self._pool)
            self._pool.open()
        except Exception as exc:
            self._broken = True
            self.close()
            raise classify(exc, during="connect") from None
        return self

    def close(self) -> None:
        """Delete the pool (frees every pipeline on the host) and drop the HTTP connection."""
        pool, wsman = self._pool, self._wsman
        self._pool = self._wsman = self._finished = None
        try:
            if pool is not None and not self._broken:
                pool.close()
        except Exception:  # the host is going away either way; nothing to report
            pass
        finally:
            if wsman is not None:
                # The visit's result is already decided: a failure to drop the HTTP connection
                # must not turn a good visit into an internal failure. Logged, and forgotten.
                try:
                    wsman.close()
                except Exception as exc:
                    _LOG.warning(
                        "host %s: closing the WinRM connection failed: %s",
                        self.host,
                        REDACTOR.scrub(_short(exc)),
                    )

    def drop(self) -> None:
        """Close without the shell's Delete: the connection is known to be gone (a kept session
        whose first call failed, :mod:`.shelf`), so a Delete would only log on again to fail.
        The host reaps the shell after its idle timeout."""
        self._broken = True
        self.close()

    def __enter__(self) -> HostSession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def max_payload_size(self) -> int:
        """Bytes of PSRP data one WSMan Send may carry (raised to the 512000 envelope on open)."""
        if self._wsman is None:
            raise RuntimeError("session not open")
        return int(self._wsman.max_payload_size)

    @property
    def chunk_size(self) -> int:
        """Raw bytes per base64 chunk so that one chunk fills one Send (pypsrp's own formula)."""
        return int((self.max_payload_size - 82) / 4 * 3)

    # ------------------------------------------------------------------------------ pipelines

    def _forget_finished(self) -> None:
        """Drop the client's record of the previous, finished pipeline (no round trip: see the
        class docstring); pypsrp would otherwise keep every PowerShell object of the visit."""
        finished, self._finished = self._finished, None
        if finished is not None and self._pool is not None:
            self._pool.pipelines.pop(finished.id, None)

    def run(
        self,
        script: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        input: Iterator[list[Any]] | None = None,
        deadline: float | None = None,
        on_output: Callable[[Any], None] | None = None,
        during: str | None = None,
        abandon: threading.Event | None = None,
    ) -> ScriptResult:
        """Run one remote script as a pipeline and wait for it.

        ``input`` is a generator of lists of input objects (each list goes out in as few WSMan
        Sends as its size allows). ``deadline`` (``time.monotonic()`` value) bounds the whole call:
        past it the pipeline is stopped and a TIMEOUT error raised; without one, the session's
        ``limits.step_seconds`` bounds it (a LIMIT error: a script that never ends). ``on_output``
        receives every output object as it arrives, which keeps downloads memory-flat; without it
        the objects are collected into the result. What the controller keeps (collected objects
        and every stream record) is bounded by ``limits.output_bytes``: past it the pipeline is
        stopped and a LIMIT error raised. Terminating errors *and* non-terminating ``Write-Error``
        records both raise a REMOTE error: ``had_errors`` alone misses the latter. ``abandon``
        set while waiting raises :class:`Interrupted` without stopping the remote pipeline.
        """
        if self._pool is None or self._broken:
            raise SessionError(ErrorClass.PROTOCOL, "session is not open", transient=False)
        during = during or script
        self._forget_finished()
        ps = PowerShell(self._pool)
        # Local scope: without it PowerShell dot-sources the script into the runspace's global
        # scope, and its functions, variables, StrictMode and preferences stay for every later
        # pipeline of the visit and for module code. The scripts therefore give module cmdlets
        # an explicit -ErrorAction Stop: preference variables do not reach module functions.
        ps.add_script(self._load(script), use_local_scope=True)
        for name, value in (parameters or {}).items():
            ps.add_parameter(name, value)
        collected: list[Any] = []
        meter = _OutputMeter(during, self.limits.output_bytes)
        own_deadline = deadline is None
        if deadline is None:
            deadline = time.monotonic() + self.limits.step_seconds
        try:
            ps.begin_invoke(input=input)
            while ps.state == PSInvocationState.RUNNING:
                if abandon is not None and abandon.is_set():
                    # Leave the pool and its pipeline alive on the host (no Delete): the remote
                    # wait keeps enforcing CPUU's deadline after we are gone. Never reused here.
                    self._broken = True
                    raise Interrupted(f"{during}: abandoned by the operator (Ctrl-C)")
                wait = self.operation_timeout
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._stop(ps)
                        raise self._overtime(during, own_deadline)
                    wait = max(1, min(wait, int(remaining) + 1))
                self._poll(ps, wait, abandon, during)
                self._drain(ps, on_output, collected, meter)
            self._drain(ps, on_output, collected, meter)
        except SessionError as error:
            if error.error_class is ErrorClass.LIMIT:
                self._stop(ps)  # the host keeps sending otherwise; the runspace is needed again
            raise
        except _ConsumerFailed as failed:
            # Our own handler failed (e.g. the controller's disk is full, or a file broke a
            # limit): that is not a network error, whatever its type says (OSError), so the
            # caller gets it unclassified. The pipeline would stream on: it is stopped.
            self._stop(ps)
            raise failed.original from None
        except Exception as exc:
            error = classify(exc, during=during)
            if error.error_class in (ErrorClass.TIMEOUT, ErrorClass.UNREACHABLE):
                self._broken = True  # pypsrp issue 21: a pool is unusable after a read timeout
            raise error from None
        self.pipelines_run += 1
        self._finished = ps
        if ps.had_errors or ps.streams.error:
            records = list(ps.streams.error)
            text = "; ".join(error_record_text(r) for r in records) or "the remote script failed"
            error_id = getattr(records[-1], "fq_error", None) if records else None
            if error_id:
                error_id = str(error_id).split(",")[0]
            raise SessionError(
                ErrorClass.REMOTE,
                f"{during}: {text}",
                transient=False,
                error_id=error_id,
                output=collected,
            )
        warnings = [" ".join(str(w).split()) for w in ps.streams.warning]
        return ScriptResult(collected, warnings)

    def _poll(
        self, ps: PowerShell, wait: int, abandon: threading.Event | None, during: str
    ) -> None:
        """One Receive long-poll of up to ``wait`` seconds.

        When the operator may abandon the wait, the Receive runs in a helper thread and this
        thread watches the flag: a Ctrl-C is noticed within :data:`ABANDON_CHECK_S` although the
        long-poll goes on. On abandonment the helper is left to finish its Receive on its own
        (it touches nothing but this session, which is marked broken and never used again).
        """
        if abandon is None:
            ps.poll_invoke(timeout=wait)
            return
        failure: list[BaseException] = []
        done = threading.Event()

        def receive() -> None:
            try:
                ps.poll_invoke(timeout=wait)
            except BaseException as exc:  # handed to the waiting thread below
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=receive, name=f"receive {self.host}", daemon=True).start()
        while not done.wait(ABANDON_CHECK_S):
            if abandon.is_set():
                self._broken = True
                raise Interrupted(f"{during}: abandoned by the operator (Ctrl-C)")
        if failure:
            raise failure[0]

    def _overtime(self, during: str, own_deadline: bool) -> SessionError:
        """The deadline passed: the caller's (TIMEOUT) or the step time limit (LIMIT)."""
        if own_deadline:
            return limit_error(
                f"{during}: still running after {self.limits.step_seconds:g} s, the most one"
                " remote script may take (limits: step_time); stopped"
            )
        return SessionError(ErrorClass.TIMEOUT, f"{during}: no answer before our deadline")

    @staticmethod
    def _drain(
        ps: PowerShell,
        on_output: Callable[[Any], None] | None,
        into: list[Any],
        meter: _OutputMeter,
    ) -> None:
        meter.add_records(ps)
        if not ps.output:
            return
        items, ps.output = ps.output, []
        if on_output is None:
            meter.add(items)
            into.extend(items)
        else:
            for item in items:
                try:
                    on_output(item)
                except Exception as exc:
                    raise _ConsumerFailed(exc) from exc

    def _stop(self, ps: PowerShell) -> None:
        if ps.state != PSInvocationState.RUNNING:
            return
        try:
            ps.stop()
        except Exception:
            self._broken = True
