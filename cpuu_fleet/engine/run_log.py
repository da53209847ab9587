"""``reports/<run-id>/run.log``: the run's plain-text log, written by the engine whoever runs it.

:class:`RunLogProcessor` turns each event into one line and takes everything logged to
:data:`~cpuu_fleet.engine.events.RUN_LOG` (tracebacks of host work that raised). The runner puts
it ahead of its caller's processors, so ``run_play()`` from Python leaves a run.log just as the
command line does. Every line goes through the redactor and is made printable first: an error
message from a workstation may quote anything.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

from cpuu_fleet import vocabulary
from cpuu_fleet.engine.events import (
    RUN_LOG,
    BaseProcessor,
    BatchFinished,
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


def summary_line(counts: dict[str, int]) -> str:
    """``succeeded 3, failed 1``: counts by the vocabulary's names, in its order."""
    order = {key: rank for rank, key in enumerate(vocabulary.BY_KEY)}
    ordered = sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    return ", ".join(f"{vocabulary.label(key)} {n}" for key, n in ordered)


def event_line(event: Event) -> str:
    """The one line an event gives, in run.log and on a plain console (``play | tee``).

    Not yet scrubbed nor made printable: each writer does that, since a message from a
    workstation may quote anything.
    """
    if isinstance(event, RunStarted):
        return (
            f"run {event.run_id} started ({event.run_kind}): {event.total_hosts} hosts in"
            f" {len(event.batches)} batches, playbook {event.playbook}"
        )
    if isinstance(event, BatchStarted):
        return f"play {event.play!r} batch {event.batch}/{event.batches}: {', '.join(event.hosts)}"
    if isinstance(event, HostStarted):
        return f"{event.host}: started (attempt {event.attempt}, wave {event.wave})"
    if isinstance(event, StepStarted):
        return f"{event.host}: {event.step} started"
    if isinstance(event, StepFinished):
        error = f" [{event.error_class}] {event.error_message}" if event.error_class else ""
        return f"{event.host}: {event.step} {event.status}{error}"
    if isinstance(event, HostFinished):
        error = ""
        if event.error_class or event.error_message:
            error = f" [{event.error_class or '-'}] {event.error_message or ''}"
        retry = f"; retry in {event.retry_in_s:g}s" if event.retry_in_s is not None else ""
        return f"{event.host}: {vocabulary.label(event.state)}{error}{retry}"
    if isinstance(event, BatchFinished):
        stop = f"; STOP: {event.stop_reason}" if event.stop_reason else ""
        return (
            f"play {event.play!r} batch {event.batch} finished: {summary_line(event.counts)}{stop}"
        )
    if isinstance(event, RunInterrupted):
        return event.message
    if isinstance(event, RunFinished):
        reason = f" ({event.stop_reason})" if event.stop_reason else ""
        return f"run {event.run_id} {event.status}{reason}: {summary_line(event.counts)}"
    return event.kind


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
        self._write(event, event_line(event))

    def on_event(self, event: Event) -> None:
        if not isinstance(event, (RunStarted, RunFinished)):  # their hooks open and close
            self._write(event, event_line(event))

    def run_finished(self, event: RunFinished) -> None:
        self._write(event, event_line(event))
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
