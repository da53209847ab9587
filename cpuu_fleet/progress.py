"""Watching a run: the live display, the ``--json`` event stream and ``reports/<run-id>/run.log``.

Three processors over the same events (see :mod:`cpuu_fleet.events`):

* :class:`LiveProgress`: a rich display for the operator: hosts per state (the vocabulary's
  names and colours) and running, the current batch, and an ETA from the mean duration of
  finished hosts and the forks;
* :class:`JsonLinesPrinter`: one JSON object per event per line, for scripts and dashboards;
* :class:`RunLogProcessor`: a plain-text log of the run, plus everything logged to
  :data:`~cpuu_fleet.events.RUN_LOG` (tracebacks of host work that raised).

Every text that leaves the process goes through the redactor first: an error message from a
workstation may quote anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cpuu_fleet import vocabulary
from cpuu_fleet.engine.events import (
    RUN_LOG,
    BaseProcessor,
    BatchFinished,
    BatchPlan,
    BatchStarted,
    Event,
    HostFinished,
    HostStarted,
    RunFinished,
    RunInterrupted,
    RunStarted,
    StepFinished,
    StepStarted,
)
from cpuu_fleet.redact import REDACTOR, Redactor, printable

# ------------------------------------------------------------------------------ statistics


@dataclass
class RunStats:
    """What the display shows, kept from events alone (so it can be tested without a terminal)."""

    total: int = 0
    batches: list[BatchPlan] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    """Host name → monotonic start of its current attempt."""
    durations: list[float] = field(default_factory=list)
    current: BatchStarted | None = None
    batches_done: int = 0
    retrying: int = 0
    message: str | None = None
    status: str | None = None

    def update(self, event: Event, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if isinstance(event, RunStarted):
            self.total = event.total_hosts
            self.batches = list(event.batches)
        elif isinstance(event, BatchStarted):
            self.current = event
        elif isinstance(event, HostStarted):
            self.running[event.host] = now
        elif isinstance(event, HostFinished):
            self.running.pop(event.host, None)
            if event.duration_s is not None:
                self.durations.append(event.duration_s)
            if event.final:
                self.counts[event.state] = self.counts.get(event.state, 0) + 1
        elif isinstance(event, BatchFinished):
            self.batches_done += 1
            if event.stop_reason:
                self.message = event.stop_reason
        elif isinstance(event, RunInterrupted):
            self.message = event.message
        elif isinstance(event, RunFinished):
            self.status = event.status
            if event.stop_reason:
                self.message = event.stop_reason

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left: for each batch not yet finished, rounds of ``min(forks, size)`` hosts
        at the mean host duration; running hosts count for what is left of their mean.

        None until a host has finished (there is no mean yet).
        """
        if not self.durations:
            return None
        now = time.monotonic() if now is None else now
        mean = sum(self.durations) / len(self.durations)
        eta = 0.0
        for index, plan in enumerate(self.batches):
            if index < self.batches_done:
                continue
            width = max(1, min(plan.forks, plan.size))
            if index == self.batches_done and self.current is not None:
                in_batch = set(self.current.hosts)
                started = [h for h in self.running if h in in_batch]
                finished_here = self._finished_in_current()
                waiting = max(0, plan.size - finished_here - len(started))
                left_running = [max(0.0, mean - (now - self.running[h])) for h in started]
                eta += max(left_running, default=0.0) if not waiting else 0.0
                eta += math.ceil(waiting / width) * mean
            else:
                eta += math.ceil(plan.size / width) * mean
        return eta

    def _finished_in_current(self) -> int:
        # Hosts of the current batch that finished: total finished minus earlier batches' sizes.
        earlier = sum(p.size for p in self.batches[: self.batches_done])
        return max(0, self.finished - earlier)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def count_cells(counts: dict[str, int], running: int) -> list[Text]:
    """Each state with hosts in it (succeeded always), in the vocabulary's order, names and
    colours, then the hosts being worked on now."""
    cells = [
        Text(f"{state.label} {counts.get(state.key, 0)}", style=state.style)
        for state in vocabulary.STATES
        if state.final and (counts.get(state.key) or state.key == vocabulary.SUCCEEDED)
    ]
    cells.extend(Text(f"{key} {n}") for key, n in counts.items() if key not in vocabulary.BY_KEY)
    running_state = vocabulary.BY_KEY[vocabulary.RUNNING]
    cells.append(Text(f"{running_state.label} {running}", style=running_state.style))
    return cells


def summary_line(counts: dict[str, int]) -> str:
    """``succeeded 3, failed 1``: counts by the vocabulary's names, in its order."""
    order = {key: rank for rank, key in enumerate(vocabulary.BY_KEY)}
    ordered = sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    return ", ".join(f"{vocabulary.label(key)} {n}" for key, n in ordered)


def render_stats(stats: RunStats, now: float | None = None) -> Table:
    """The display's content: a bar, the counts, the batch and the ETA."""
    bar = ProgressBar(total=max(stats.total, 1), completed=stats.finished, width=40)
    counts = Table.grid(padding=(0, 2))
    counts.add_row(*count_cells(stats.counts, len(stats.running)))
    batch = "starting"
    if stats.current is not None:
        c = stats.current
        batch = f"{c.play}: batch {c.batch}/{c.batches} ({len(c.hosts)} hosts)"
    head = Text.assemble(
        (f"{stats.finished}/{stats.total} hosts  ", "bold"),
        f"{batch}  ",
        f"ETA {_duration(stats.eta_seconds(now))}",
    )
    layout = Table.grid()
    layout.add_row(head)
    layout.add_row(bar)
    layout.add_row(counts)
    if stats.message:
        layout.add_row(Text(REDACTOR.scrub(stats.message) or "", style="yellow"))
    return layout


# ------------------------------------------------------------------------------ processors


class LiveProgress(BaseProcessor):
    """The operator's live display (rich). Redraws a few times a second from :class:`RunStats`."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4):
        self.console = console or Console(stderr=True)
        self.stats = RunStats()
        self._refresh = refresh_per_second
        self._live: Live | None = None
        # rich redraws from its own thread while events arrive from the workers' fan-out.
        self._lock = threading.Lock()

    def __rich__(self) -> Table:
        with self._lock:
            return render_stats(self.stats)

    def on_event(self, event: Event) -> None:
        with self._lock:
            self.stats.update(event)

    def run_started(self, event: RunStarted) -> None:
        self._live = Live(
            self, console=self.console, refresh_per_second=self._refresh, transient=False
        )
        self._live.start()

    def run_finished(self, event: RunFinished) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
            if not self.console.is_terminal:
                self.console.line()  # a redirected display ends without a newline
        summary = summary_line(event.counts)
        self.console.print(
            f"run {event.run_id} {event.status}: {summary or 'no hosts'}", markup=False
        )
        if event.retry_file:
            retried = vocabulary.describe(vocabulary.RETRIED_STATES)
            self.console.print(
                f"{retried} hosts (for --retry-failed): {event.retry_file}",
                markup=False,
                soft_wrap=True,
            )


def scrub_value(value: Any, redactor: Redactor = REDACTOR) -> Any:
    """Every string inside a JSON-ready value, scrubbed."""
    if isinstance(value, str):
        return redactor.scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, redactor) for v in value]
    return value


class JsonLinesPrinter(BaseProcessor):
    """``--json``: one event per line on stdout; keys are stable, the first is ``event``."""

    def __init__(self, stream: IO[str] | None = None, redactor: Redactor = REDACTOR):
        self.stream = stream
        self.redactor = redactor

    def on_event(self, event: Event) -> None:
        stream = self.stream or sys.stdout
        line = json.dumps(scrub_value(event.to_dict(), self.redactor), ensure_ascii=False)
        stream.write(line + "\n")
        stream.flush()


class _RunLogHandler(logging.FileHandler):
    """run.log's writer, which never prints "--- Logging error ---" on the operator's console.

    The standard handler reports a failed write (disk full, a folder made read-only) on stderr,
    traceback and all, once per line logged. Here the first failure closes the file and the log
    goes quiet: the journal is the record, and the runner reports the controller's write fault
    itself, in one line (exit code 4). The file is opened at the first line (``delay``), so that
    even a failed open takes this path.
    """

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)
        self.failed: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = sys.exc_info()[1] or OSError("run.log could not be written")
        with contextlib.suppress(Exception):
            self.close()


class _ScrubbingFormatter(logging.Formatter):
    """UTC timestamps (like the journal) and no secret in any line, traceback included."""

    converter = time.gmtime

    def __init__(self, redactor: Redactor):
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.scrub(super().format(record)) or ""


class _RunFilter(logging.Filter):
    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "run_id", self.run_id) == self.run_id


class RunLogProcessor(BaseProcessor):
    """Writes ``<reports>/<run-id>/run.log``: one line per event, plus the run's log records."""

    FILENAME = "run.log"

    def __init__(self, reports_dir: str | Path, redactor: Redactor = REDACTOR):
        self.reports_dir = Path(reports_dir)
        self.redactor = redactor
        self.path: Path | None = None
        self._handler: logging.Handler | None = None

    def run_started(self, event: RunStarted) -> None:
        self.path = self.reports_dir / event.run_id / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handler = _RunLogHandler(self.path)
        handler.setFormatter(_ScrubbingFormatter(self.redactor))
        handler.addFilter(_RunFilter(event.run_id))
        RUN_LOG.addHandler(handler)
        self._handler = handler
        self._write(
            event,
            f"run {event.run_id} started ({event.run_kind}): {event.total_hosts} hosts in"
            f" {len(event.batches)} batches, playbook {event.playbook}",
        )

    def batch_started(self, event: BatchStarted) -> None:
        self._write(
            event,
            f"play {event.play!r} batch {event.batch}/{event.batches}: {', '.join(event.hosts)}",
        )

    def host_started(self, event: HostStarted) -> None:
        self._write(event, f"{event.host}: started (attempt {event.attempt}, wave {event.wave})")

    def step_started(self, event: StepStarted) -> None:
        self._write(event, f"{event.host}: {event.step} started")

    def step_finished(self, event: StepFinished) -> None:
        error = f" [{event.error_class}] {event.error_message}" if event.error_class else ""
        self._write(event, f"{event.host}: {event.step} {event.status}{error}")

    def host_finished(self, event: HostFinished) -> None:
        error = ""
        if event.error_class or event.error_message:
            error = f" [{event.error_class or '-'}] {event.error_message or ''}"
        retry = f"; retry in {event.retry_in_s:g}s" if event.retry_in_s is not None else ""
        self._write(event, f"{event.host}: {vocabulary.label(event.state)}{error}{retry}")

    def batch_finished(self, event: BatchFinished) -> None:
        counts = summary_line(event.counts)
        stop = f"; STOP: {event.stop_reason}" if event.stop_reason else ""
        self._write(event, f"play {event.play!r} batch {event.batch} finished: {counts}{stop}")

    def run_interrupted(self, event: RunInterrupted) -> None:
        self._write(event, event.message)

    def run_finished(self, event: RunFinished) -> None:
        counts = summary_line(event.counts)
        reason = f" ({event.stop_reason})" if event.stop_reason else ""
        self._write(event, f"run {event.run_id} {event.status}{reason}: {counts}")
        if self._handler is not None:
            RUN_LOG.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def _write(self, event: Event, text: str) -> None:
        # Through the run logger, so event lines and tracebacks share one writer and one order.
        # One line each, whatever a workstation put in a message (ESC, C1, bidi, newlines).
        RUN_LOG.info(
            "%s", printable(self.redactor.scrub(text) or ""), extra={"run_id": event.run_id}
        )
