"""Watching a run on the console: the live display and the ``--json`` event stream.

Two processors over the same events (see :mod:`cpuu_fleet.engine.events`; the third, the run's
``run.log``, is the engine's own: :mod:`cpuu_fleet.engine.run_log`):

* :class:`LiveProgress`: a rich display for the operator: hosts per state (the vocabulary's
  names and colours) and running, the current batch, and an ETA from the mean duration of
  finished hosts and the forks;
* :class:`JsonLinesPrinter`: one JSON object per event per line, for scripts and dashboards;
* :class:`PlainLines`: where stdout is no terminal (``| tee``, ``nohup``, CI), one plain line per
  event, flushed as it happens: a live display drawn on a pipe shows nothing until the wave ends.

Every text that leaves the process goes through the redactor first: an error message from a
workstation may quote anything.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cpuu_fleet import vocabulary
from cpuu_fleet.engine.events import (
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
from cpuu_fleet.engine.run_log import event_line, summary_line
from cpuu_fleet.inputs.playbook import STEP_ORDER
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
    steps: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Host name → its current step and the monotonic time it started."""
    step_durations: dict[str, list[float]] = field(default_factory=dict)
    """Step name → the durations of its finished attempts (CPUU's run is the long one)."""
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
        elif isinstance(event, StepStarted):
            self.steps[event.host] = (event.step, now)
        elif isinstance(event, StepFinished):
            current = self.steps.pop(event.host, None)
            # From the step's start as seen here: a detached run step ends in a later visit,
            # whose own duration is only the settling call's, not CPUU's.
            seconds = now - current[1] if current and current[0] == event.step else None
            if seconds is None:
                seconds = event.duration_s
            if seconds is not None:
                self.step_durations.setdefault(event.step, []).append(seconds)
        elif isinstance(event, HostFinished):
            self.running.pop(event.host, None)
            self.steps.pop(event.host, None)
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
        """Seconds left (see :meth:`eta`), or None when there is no estimate yet."""
        found = self.eta(now)
        return None if found is None else found[0]

    def eta(self, now: float | None = None) -> tuple[float, bool] | None:
        """Seconds left and whether that is only a lower bound.

        For each batch not yet finished, rounds of ``min(forks, size)`` hosts at the mean host
        duration. A running host counts for what is left of its *current step* by that step's
        mean, plus the means of the steps after it: a host inside a 15-minute CPUU run is not
        "nearly done" because the mean host so far took two seconds. A host inside a step no
        attempt has finished yet, or past that step's mean, makes the estimate a lower bound
        (shown ``≥``), never a number that freezes while CPUU runs.

        None until a host has finished (there is no mean yet). Kept rather than rich.progress's
        ``TimeRemainingColumn``: that one divides the units left by the recent rate of finished
        units, which knows nothing of serial batches, forks or hosts still inside CPUU.
        """
        if not self.durations:
            return None
        now = time.monotonic() if now is None else now
        mean = sum(self.durations) / len(self.durations)
        eta, lower_bound = 0.0, False
        for index, plan in enumerate(self.batches):
            if index < self.batches_done:
                continue
            width = max(1, min(plan.forks, plan.size))
            if index == self.batches_done and self.current is not None:
                in_batch = set(self.current.hosts)
                started = [h for h in self.running if h in in_batch]
                finished_here = self._finished_in_current()
                waiting = max(0, plan.size - finished_here - len(started))
                left = [self._host_left(h, mean, now) for h in started]
                lower_bound = lower_bound or any(bound for _, bound in left)
                eta += max((seconds for seconds, _ in left), default=0.0) if not waiting else 0.0
                eta += math.ceil(waiting / width) * mean
            else:
                eta += math.ceil(plan.size / width) * mean
        return eta, lower_bound

    def _host_left(self, host: str, mean: float, now: float) -> tuple[float, bool]:
        """A running host's seconds left, and whether that is a lower bound."""
        current = self.steps.get(host)
        if current is None:
            return max(0.0, mean - (now - self.running[host])), False
        step, since = current
        in_step = now - since
        step_mean = self._step_mean(step)
        later = STEP_ORDER[STEP_ORDER.index(step) + 1 :] if step in STEP_ORDER else ()
        after = sum(self._step_mean(s) or 0.0 for s in later)
        if step_mean is None or in_step > step_mean:
            return after, True
        return step_mean - in_step + after, False

    def _step_mean(self, step: str) -> float | None:
        durations = self.step_durations.get(step)
        return sum(durations) / len(durations) if durations else None

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


def render_stats(stats: RunStats, now: float | None = None) -> Table:
    """The display's content: a bar, the counts, the batch and the ETA."""
    bar = ProgressBar(total=max(stats.total, 1), completed=stats.finished, width=40)
    counts = Table.grid(padding=(0, 2))
    counts.add_row(*count_cells(stats.counts, len(stats.running)))
    batch = "starting"
    if stats.current is not None:
        c = stats.current
        batch = f"{c.play}: batch {c.batch}/{c.batches} ({len(c.hosts)} hosts)"
    eta = stats.eta(now)
    shown_eta = "--:--" if eta is None else ("≥ " if eta[1] else "") + _duration(eta[0])
    head = Text.assemble(
        (f"{stats.finished}/{stats.total} hosts  ", "bold"),
        f"{batch}  ",
        f"ETA {shown_eta}",
    )
    layout = Table.grid()
    layout.add_row(head)
    layout.add_row(bar)
    layout.add_row(counts)
    running = running_table(stats, now)
    if running is not None:
        layout.add_row(running)
    if stats.message:
        layout.add_row(Text(REDACTOR.scrub(stats.message) or "", style="yellow"))
    return layout


RUNNING_SHOWN = 8
"""Running hosts listed under the counts, longest first (the rest are counted)."""


def running_table(stats: RunStats, now: float | None = None) -> Table | None:
    """The hosts being worked on, longest first: name, step, time in that step and in all.

    Host names come from the operator's inventory, but are made printable all the same."""
    if not stats.running:
        return None
    now = time.monotonic() if now is None else now
    table = Table.grid(padding=(0, 2))
    order = sorted(stats.running.items(), key=lambda item: item[1])
    for host, since in order[:RUNNING_SHOWN]:
        step, step_since = stats.steps.get(host, ("starting", since))
        table.add_row(
            Text(printable(host), style="cyan"),
            Text(step),
            Text(_duration(now - step_since)),
            Text(f"(host {_duration(now - since)})", style="dim"),
        )
    if len(order) > RUNNING_SHOWN:
        table.add_row(Text(f"… and {len(order) - RUNNING_SHOWN} more running", style="dim"))
    return table


# ------------------------------------------------------------------------------ processors


class LiveProgress(BaseProcessor):
    """The operator's live display (rich). Redraws a few times a second from :class:`RunStats`.

    Above the display, lines scroll as things happen, in run.log's words: every host that ends
    needing attention (with its reason) at once, not at the end of the wave; with ``-v`` every
    host's end, with ``-vv`` every step too.
    """

    def __init__(
        self, console: Console | None = None, refresh_per_second: float = 4, verbosity: int = 0
    ):
        self.console = console or Console(stderr=True)
        self.stats = RunStats()
        self.verbosity = verbosity
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
        if self._scrolls(event):
            text = printable(REDACTOR.scrub(event_line(event)) or "")
            self.console.print(Text(text, style=_line_style(event)))

    def _scrolls(self, event: Event) -> bool:
        """Whether an event is printed above the display at this verbosity."""
        if isinstance(event, HostFinished):
            known = vocabulary.BY_KEY.get(event.state)
            return self.verbosity >= 1 or known is None or known.attention
        if isinstance(event, (StepStarted, StepFinished)):
            return self.verbosity >= 2
        return isinstance(event, (BatchFinished, RunInterrupted)) and self.verbosity >= 1

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


def _line_style(event: Event) -> str:
    if isinstance(event, HostFinished):
        known = vocabulary.BY_KEY.get(event.state)
        return known.style if known is not None else "yellow"
    return "dim"


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


class PlainLines(BaseProcessor):
    """One line per event, ``HH:MM:SSZ`` first, as run.log words it, flushed at once.

    For a console that is not a terminal: a log collected by ``tee``, ``nohup`` or a CI job must
    show each host as it happens (a failure with its reason), not a display drawn at the end.
    """

    def __init__(self, stream: IO[str] | None = None, redactor: Redactor = REDACTOR):
        self.stream = stream
        self.redactor = redactor

    def on_event(self, event: Event) -> None:
        stream = self.stream or sys.stdout
        text = printable(self.redactor.scrub(event_line(event)) or "")
        stream.write(f"{time.strftime('%H:%M:%SZ', time.gmtime())} {text}\n")
        stream.flush()
