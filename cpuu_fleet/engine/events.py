"""What happens during a run, as events, and the processors that watch them.

Modelled on Nornir's processors: the runner (and the host work, for steps) announces what it does;
displays, the JSON-lines printer and the run log listen. A processor that breaks must never break
the run: :class:`Fanout` logs its exception and carries on, the way a per-host failure is a result.

Events are plain frozen dataclasses with stable field names, so the ``--json`` stream is a contract:
add fields, never rename them. They carry host names, states and error texts, never a secret (the
printers scrub every text with the process redactor anyway). States and statuses are the keys of
:mod:`cpuu_fleet.vocabulary` (what the journal stores); a ``host_finished`` line also carries the
state's label and whether it needs attention, from the same vocabulary.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from cpuu_fleet import vocabulary
from cpuu_fleet.journal import utcnow
from cpuu_fleet.redact import REDACTOR

#: The run's own log. Host work and the runner log here; only the run log processor writes it out
#: (to ``reports/<run-id>/run.log``), never the console: a traceback does not belong on an
#: operator's progress display. Records carry ``extra={"run_id": ...}`` so concurrent runs in one
#: process (tests) keep their logs apart.
RUN_LOG = logging.getLogger("cpuu_fleet.run")


class _ScrubRecords(logging.Filter):
    """Scrub each record as it is made, so no handler (a file, a test's capture) sees a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACTOR.scrub(record.getMessage()) or ""
        record.args = None
        return True


RUN_LOG.addFilter(_ScrubRecords())
RUN_LOG.addHandler(logging.NullHandler())
RUN_LOG.propagate = False
RUN_LOG.setLevel(logging.DEBUG)


@dataclass(frozen=True)
class Event:
    """Base of every event: which run, and when (ISO-8601 UTC)."""

    kind: ClassVar[str] = "event"
    run_id: str
    at: str = field(default_factory=utcnow, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict whose first key is ``event`` (the kind)."""
        data: dict[str, Any] = {"event": self.kind}
        for item in dataclasses.fields(self):
            data[item.name] = _jsonable(getattr(self, item.name))
        return data


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@dataclass(frozen=True)
class BatchPlan:
    """One batch as planned: used by displays for totals and the ETA."""

    play: str
    batch: int
    size: int
    forks: int


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_kind: str = "play"
    playbook: str | None = None
    total_hosts: int = 0
    batches: tuple[BatchPlan, ...] = ()
    parent_run: str | None = None


@dataclass(frozen=True)
class BatchStarted(Event):
    kind: ClassVar[str] = "batch_started"
    play: str = ""
    batch: int = 0
    batches: int = 0
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostStarted(Event):
    kind: ClassVar[str] = "host_started"
    host: str = ""
    play: str = ""
    batch: int = 0
    wave: str | None = None
    attempt: int = 1


@dataclass(frozen=True)
class StepStarted(Event):
    kind: ClassVar[str] = "step_started"
    host: str = ""
    step: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class StepFinished(Event):
    kind: ClassVar[str] = "step_finished"
    host: str = ""
    step: str = ""
    attempt: int = 1
    status: str = ""
    """One of ``vocabulary.STEP_STATUSES`` (the journal's attempt statuses), not ``running``."""
    error_class: str | None = None
    error_message: str | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class HostFinished(Event):
    """A host's attempt ended. ``retry_in_s`` set: it failed transiently and will be tried again;
    otherwise ``state`` is its final journal state for this run."""

    kind: ClassVar[str] = "host_finished"
    host: str = ""
    play: str = ""
    batch: int = 0
    wave: str | None = None
    state: str = ""
    attempt: int = 1
    error_class: str | None = None
    error_message: str | None = None
    duration_s: float | None = None
    retry_in_s: float | None = None

    @property
    def final(self) -> bool:
        return self.retry_in_s is None

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus the state's ``label`` and ``needs_attention`` (the vocabulary's)."""
        data = super().to_dict()
        data["label"] = vocabulary.label(self.state)
        data["needs_attention"] = self.final and vocabulary.needs_attention(self.state)
        return data


@dataclass(frozen=True)
class BatchFinished(Event):
    kind: ClassVar[str] = "batch_finished"
    play: str = ""
    batch: int = 0
    size: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    unreachable: int = 0
    stop_reason: str | None = None


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    status: str = ""
    """One of ``vocabulary.RUN_STATUSES``: completed | stopped (a stop rule) |
    interrupted (Ctrl-C)."""
    stop_reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    duration_s: float | None = None
    retry_file: str | None = None


@dataclass(frozen=True)
class RunInterrupted(Event):
    """The operator pressed Ctrl-C: level 1 drains (no new hosts), level 2 aborts running ones."""

    kind: ClassVar[str] = "run_interrupted"
    level: int = 1
    message: str = ""


@runtime_checkable
class Processor(Protocol):
    """Something that watches a run. Implement the hooks you need; :class:`BaseProcessor` has
    no-op defaults. Calls are serialised by :class:`Fanout`, so a processor need not lock."""

    def run_started(self, event: RunStarted) -> None: ...
    def batch_started(self, event: BatchStarted) -> None: ...
    def host_started(self, event: HostStarted) -> None: ...
    def step_started(self, event: StepStarted) -> None: ...
    def step_finished(self, event: StepFinished) -> None: ...
    def host_finished(self, event: HostFinished) -> None: ...
    def batch_finished(self, event: BatchFinished) -> None: ...
    def run_finished(self, event: RunFinished) -> None: ...
    def run_interrupted(self, event: RunInterrupted) -> None: ...


class BaseProcessor:
    """No-op hooks, to subclass; :meth:`on_event` sees every event first (handy for printers)."""

    def on_event(self, event: Event) -> None:
        """Called for every event before its specific hook."""

    def run_started(self, event: RunStarted) -> None:
        pass

    def batch_started(self, event: BatchStarted) -> None:
        pass

    def host_started(self, event: HostStarted) -> None:
        pass

    def step_started(self, event: StepStarted) -> None:
        pass

    def step_finished(self, event: StepFinished) -> None:
        pass

    def host_finished(self, event: HostFinished) -> None:
        pass

    def batch_finished(self, event: BatchFinished) -> None:
        pass

    def run_finished(self, event: RunFinished) -> None:
        pass

    def run_interrupted(self, event: RunInterrupted) -> None:
        pass


class Fanout:
    """Delivers each event to every processor, one event at a time, isolating their failures.

    Worker threads emit concurrently; one lock keeps the processors single-threaded and the
    event order per host intact.
    """

    def __init__(self, processors: list[Any] | tuple[Any, ...] = ()):
        self.processors = list(processors)
        self._lock = threading.RLock()

    def emit(self, event: Event) -> None:
        with self._lock:
            for processor in self.processors:
                try:
                    on_event = getattr(processor, "on_event", None)
                    if on_event is not None:
                        on_event(event)
                    hook = getattr(processor, event.kind, None)
                    if hook is not None:
                        hook(event)
                except Exception:
                    RUN_LOG.exception(
                        "processor %s failed on %s",
                        type(processor).__name__,
                        event.kind,
                        extra={"run_id": event.run_id},
                    )
