"""When to ask a detached host again whether its CPUU has ended (the settle half of a run step).

A detached run step starts CPUU's task and releases the host (``run: {attached: false}``); the
runner parks the host (a journal row and a timer) and calls the visit again when this module says
so. Each question costs a fresh session and one short ``run-task -Action Status`` pipeline, so
the schedule follows CPUU's expected run time instead of a fixed tick:

* the first question comes when CPUU is expected to have ended: the play's
  ``expected_seconds``, else the median run time of the hosts of this play that ended so far;
* with no expectation yet (the first hosts of a wave), or once the expectation has passed, the
  gap grows with the time CPUU has run (a fifth of it, 1 s to 30 s): a host is seen at most about
  20 % after it ended, and a long CPUU costs a handful of polls, not one per second;
* never later than just past the host's deadline, where the ``Run`` call kills CPUU on the host
  (which counts the deadline itself, from the marker's ``StartedAt``).

Assumption (the host's clock against ours): the elapsed time is read as our UTC clock minus the
marker's ``StartedAt`` (host clock). WinRM with Kerberos fails beyond 5 minutes of skew; a skew
within that only moves a question earlier or later. The deadline itself is the host's, so a
question asked early at worst waits in the ``Run`` call for the host's own deadline.
"""

from __future__ import annotations

import statistics
import threading
from datetime import datetime, timezone

#: The shortest and longest gap between two questions to one host, in seconds.
MIN_GAP_S = 1.0
MAX_GAP_S = 30.0
#: The gap as a share of the time CPUU has run so far (see the module's docstring).
GAP_SHARE = 0.2
#: How long after the host's deadline the question that makes it kill CPUU is asked.
PAST_DEADLINE_S = 1.0
#: Task Scheduler's start grace period (``run-task``): a task not come up by then is for ``Run``.
START_GRACE_S = 60.0
#: At most this many observed run times are kept for the median.
_KEPT = 256


def elapsed_since(started_at: str | None, now: datetime | None = None) -> float:
    """Seconds since the host's ``StartedAt`` (0 when unknown or unreadable)."""
    if not started_at:
        return 0.0
    try:
        started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (now - started).total_seconds())


class SettlePacer:
    """The one schedule of questions for the detached hosts of one play (thread-safe)."""

    def __init__(self, expected_s: float | None = None) -> None:
        self.expected_s = expected_s
        self._seen: list[float] = []
        self._lock = threading.Lock()

    def ended(self, run_s: float) -> None:
        """A host's CPUU was found ended after about ``run_s`` seconds."""
        with self._lock:
            self._seen.append(run_s)
            del self._seen[:-_KEPT]

    def expected(self) -> float | None:
        """The run time to expect: the play's own, else the median of what was seen."""
        if self.expected_s is not None:
            return self.expected_s
        with self._lock:
            return statistics.median(self._seen) if self._seen else None

    def next_gap(self, elapsed_s: float, timeout_s: float) -> float:
        """Seconds until the next question to a host whose CPUU has run ``elapsed_s``."""
        expected = self.expected()
        if expected is not None and elapsed_s + MIN_GAP_S <= expected:
            gap = expected - elapsed_s
        else:
            gap = min(MAX_GAP_S, max(MIN_GAP_S, GAP_SHARE * elapsed_s))
        until_deadline = timeout_s - elapsed_s + PAST_DEADLINE_S
        return max(MIN_GAP_S, min(gap, until_deadline)) if until_deadline > 0 else 0.0

    def due(self, elapsed_s: float, timeout_s: float, has_run: bool) -> bool:
        """Must the host be settled now even though its task still reads at work? Past its
        deadline (the ``Run`` call kills CPUU), or started and not come up within the grace."""
        return elapsed_s >= timeout_s or (not has_run and elapsed_s >= START_GRACE_S)
