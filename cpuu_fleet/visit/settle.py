"""When to ask a detached host again whether its CPUU has ended (the settle half of a run step).

A detached run step starts CPUU's task and releases the host (``run: {attached: false}``); the
runner parks the host (a journal row and a timer) and calls the visit again when this module says
so. A wake-up that is not yet time to ask costs nothing on the network; a question (a *poll*)
costs one short ``run-task -Action Status`` pipeline (two round trips on the session kept from the
start, :mod:`.shelf`; nine with a fresh session, for a host asked too late to keep one), so the
schedule follows CPUU's expected run time instead of a fixed tick:

* with an expectation (the play's ``expected_seconds``, else the median run time of the hosts of
  this play that ended by themselves so far) a host is first asked when CPUU is expected to have
  ended, then at gaps of a fifth of the time it has run (1 s to 30 s): seen at most about 20 %
  late, with a handful of polls;
* with none yet (the first hosts of a wave all start before any ends), one host, the *canary*,
  is asked on that fine schedule, and the others on a coarse one (first after 10 s, then at
  gaps of four times the time run, at most 120 s), but not before they have run one fine step
  longer than the canary will have at its next question, nor while that answer is overdue, so
  that its answer is in; one of them per 120 s is asked all the same, the safeguard should the
  canary hang or be the slow one (one that has ended teaches the run time to all): CPUU
  runs about as long everywhere and the canary was parked first, so while it is at work the
  others most likely are too. They wake without asking just after each of the canary's
  answers, so once it has ended they are asked when the run time it showed has passed. A
  wave of hundreds costs the canary's few polls and about none per other host (without that
  floor: one per host, every host asked at 10 s of a 20 s CPUU);
* never later than just past the host's deadline, where the ``Run`` call kills CPUU on the host
  (which counts the deadline itself, from the marker's ``StartedAt``).

Assumption (the host's clock against ours): the elapsed time is read as our UTC clock minus the
marker's ``StartedAt`` (host clock). WinRM with Kerberos fails beyond 5 minutes of skew; a skew
within that only moves a question earlier or later. The deadline itself is the host's, so a
question asked early at worst waits in the ``Run`` call for the host's own deadline.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

#: The fine schedule: gaps of this share of the time CPUU has run, within these bounds.
GAP_SHARE = 0.2
MIN_GAP_S = 1.0
MAX_GAP_S = 30.0
#: The coarse schedule of hosts other than the canary while nothing is expected yet.
COARSE_SHARE = 4.0
COARSE_MIN_S = 10.0
COARSE_MAX_S = 120.0
#: How long after the host's deadline the question that makes it kill CPUU is asked.
PAST_DEADLINE_S = 1.0
#: How long after the canary's question its answer is expected in (a session and a ``Status``).
HEAR_MARGIN_S = 1.0
#: Task Scheduler's start grace period (``run-task``): a task not come up by then is for ``Run``.
START_GRACE_S = 60.0
#: At most this many observed run times are kept for the median.
_KEPT = 256


def elapsed_since(started_at: str | None, now: datetime | None = None) -> float:
    """Seconds since ``started_at`` (ISO-8601, UTC when no zone; 0 when unknown or unreadable)."""
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


def _gap(elapsed_s: float, share: float, low: float, high: float) -> float:
    return min(high, max(low, share * elapsed_s))


class SettlePacer:
    """The one schedule of questions for the detached hosts of one play (thread-safe); it keeps
    a float per waiting host (when it was last asked) and the run times seen."""

    def __init__(
        self, expected_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.expected_s = expected_s
        self._clock = clock
        self._probed = clock()
        """When another host than the canary was last let through while the canary is at work
        (the safeguard: one such host per :data:`COARSE_MAX_S`, for the whole play)."""
        self._seen: list[float] = []
        self._asked: dict[str, float] = {}
        self._started: dict[str, float] = {}
        """When each parked host's ``Start`` call answered that CPUU runs (on the pacer's clock)."""
        self._canary: str | None = None
        self._canary_ran = 0.0
        """How long the canary had run when it was last seen at work."""
        self._lock = threading.Lock()

    def expected(self) -> float | None:
        """The run time to expect: the play's own, else the median of what was seen."""
        if self.expected_s is not None:
            return self.expected_s
        with self._lock:
            return statistics.median(self._seen) if self._seen else None

    def started(self, host: str, elapsed_s: float) -> None:
        """``host``'s ``Start`` call just answered that CPUU has run ``elapsed_s`` (about 0)."""
        with self._lock:
            self._started[host] = self._clock() - elapsed_s

    def elapsed(self, host: str) -> float | None:
        """How long ``host``'s CPUU has run: what its ``Start`` call's answer said (by the
        marker, as the expected run time is learned), plus our time since; None when this
        controller did not start it (a ``--resume``): the caller then counts from the run
        step's journal row, which began before the ``Start`` call and so asks up to that
        call's time early."""
        with self._lock:
            started = self._started.get(host)
        return None if started is None else self._clock() - started

    def asked(self, host: str, elapsed_s: float) -> None:
        """``host`` was just asked, after its CPUU had run ``elapsed_s``, and still runs."""
        with self._lock:
            self._asked[host] = elapsed_s
            if host == self._canary:
                self._canary_ran = max(self._canary_ran, elapsed_s)

    def settled(self, host: str, run_s: float | None) -> None:
        """``host`` is settled; ``run_s``: its CPUU ended by itself after about that long."""
        with self._lock:
            self._asked.pop(host, None)
            self._started.pop(host, None)
            if self._canary == host:
                self._canary, self._canary_ran = None, 0.0
            if run_s is not None:
                self._seen.append(run_s)
                del self._seen[:-_KEPT]

    def wait(self, host: str, elapsed_s: float, timeout_s: float) -> float:
        """Seconds until ``host`` (CPUU run ``elapsed_s``) is to be asked; 0: ask now. Past its
        deadline, or started and not come up within the grace period, is always now."""
        expected = self.expected()
        with self._lock:
            last = self._asked.get(host, 0.0)
            if expected is not None:
                ask_at = max(expected, last + _gap(last, GAP_SHARE, MIN_GAP_S, MAX_GAP_S))
            else:
                self._canary = self._canary or host
                canary = self._canary == host
                share, low, high = (
                    (GAP_SHARE, MIN_GAP_S, MAX_GAP_S)
                    if canary
                    else (COARSE_SHARE, COARSE_MIN_S, COARSE_MAX_S)
                )
                ask_at = last + _gap(last, share, low, high)
                if not canary:  # not while the canary is at work (up to the safeguard)
                    ask_at = self._held_back(ask_at, elapsed_s)
        ask_at = min(ask_at, timeout_s + PAST_DEADLINE_S)
        if elapsed_s >= ask_at:
            return 0.0
        if expected is None:  # wake to hear of an expectation soon
            return min(ask_at - elapsed_s, self._hear_canary(elapsed_s))
        return ask_at - elapsed_s

    def not_before(self, host: str, elapsed_s: float) -> float:
        """Seconds from now before which ``host`` (CPUU run ``elapsed_s``) will surely not be
        asked, as far as the pacer can tell: with nothing expected yet, a host other than the
        canary waits at least until it has run as long as the canary already has (CPUU runs
        about as long everywhere: the pacer's premise), whatever its next wake. 0 when the
        wait is the question itself (an expectation, or the canary). For :mod:`.shelf`: a
        session is kept only for a question that may come soon."""
        if self.expected() is not None:
            return 0.0
        with self._lock:
            if self._canary is None or self._canary == host:
                return 0.0
            return max(0.0, self._canary_ran - elapsed_s)

    def _hear_canary(self, elapsed_s: float) -> float:
        """Seconds until a host other than the canary wakes while nothing is expected: just
        after the canary's answer to its next question, which teaches the run time once the
        canary has ended (else on the fine schedule: a canary not started by this controller,
        or its answer late). On the fine schedule alone the others heard of the expectation up
        to a fifth of their run time late, and were asked that late."""
        fine = _gap(elapsed_s, GAP_SHARE, MIN_GAP_S, MAX_GAP_S)
        with self._lock:
            answer_at = self._canary_answer_at()
        if answer_at is None:
            return fine
        until = answer_at - self._clock()
        return max(until, HEAR_MARGIN_S / 2) if until > 0 else fine

    def _held_back(self, ask_at: float, elapsed_s: float) -> float:
        """When a host other than the canary is asked while nothing is expected (the lock
        held): not before one fine step past the canary's next question, nor while that answer
        is overdue; but one such host per :data:`COARSE_MAX_S` of the play is let through, the
        safeguard should the canary hang or be the slow one. A let-through host that has ended
        teaches the run time (the others are then asked once, at once); one still at work
        costs one poll for the whole wave. Before, every other host was asked each 120 s of a
        long CPUU: 4 polls per host at 300 s, where the attached visit's receives cost less."""
        answer_at = self._canary_answer_at()
        now = self._clock()
        overdue = answer_at is not None and now > answer_at
        floor = math.inf if overdue else self._canary_floor()
        if elapsed_s < ask_at or elapsed_s >= floor:
            return max(ask_at, floor)
        if now - self._probed >= COARSE_MAX_S:
            self._probed = now
            return ask_at
        return floor

    def _canary_answer_at(self) -> float | None:
        """When (on the pacer's clock) the canary's answer to its next question is due; None for
        no canary, or one this controller did not start. Called with the lock held. Past that
        time and no answer (the forks busy starting hosts, which go first, or a canary that
        hangs), the others are not asked either, up to the safeguard: asked then, every host
        started in the first rounds of a wave cost a poll before its end (0.15 per host at 100
        hosts × 20 s, 4 rounds of starts)."""
        started = self._started.get(self._canary) if self._canary else None
        if started is None:
            return None
        ran = self._canary_ran
        return started + ran + _gap(ran, GAP_SHARE, MIN_GAP_S, MAX_GAP_S) + HEAR_MARGIN_S

    def _canary_floor(self) -> float:
        """The time run before which no other host is asked while the canary is at work: one
        fine step past the canary's next question. Hosts started in the same round as the canary
        reach that question's time a moment after it, before its answer is in (asking them then
        cost a poll each: 3 of 40 hosts at 40 hosts × 20 s); one step later the answer has
        moved this floor (still at work) or given the expectation (ended)."""
        canary_next = self._canary_ran + _gap(self._canary_ran, GAP_SHARE, MIN_GAP_S, MAX_GAP_S)
        return canary_next + _gap(canary_next, GAP_SHARE, MIN_GAP_S, MAX_GAP_S)

    @staticmethod
    def due(elapsed_s: float, timeout_s: float, has_run: bool) -> bool:
        """Must a host whose task still reads at work be settled now? Past its deadline (the
        ``Run`` call kills CPUU), or started and not come up within the start grace period."""
        return elapsed_s >= timeout_s or (not has_run and elapsed_s >= START_GRACE_S)
