"""Parked hosts' sessions kept open until their settling visit, when that visit comes soon.

Why: a detached run step starts CPUU and parks its host; the settling visit then asked the host
on a fresh session. A fresh session is NTLM's three legs, the shell's Create, two Receives to
open the pool and a Delete at the end: about 12 ms of the controller's CPU (pure-Python NTLM and
PSRP) and 7 of the poll's 9 round trips, which an attached run does not pay. With CPUU runs of
under a minute or two, that second session cost more than the attached run's Receives
(``bench/wave.py --cpuu-seconds 20``). A session kept on this shelf is taken by the settling
visit, whose question is then its pipeline's Command and Receive, nothing else.

Why only soon, and only so many: a waiting host must cost a journal row and a timer, not a
socket (issue 13). A kept session holds a TCP connection, a shell on the host (``wsmprovhost``)
and about 100 KiB here, so a session is kept only for a host to be asked within
:data:`KEEP_S`, and at most :data:`CAPACITY` at once; any other parked host's session is closed
as before. With minutes-long CPUU runs nothing is kept, and 1,000 waiting hosts cost what they
did.

Why :data:`KEEP_S` is 90 s: Windows' HTTP.sys closes a keep-alive connection idle for 120 s
(``IdleConnectionTimeout``, modelled by the lab), and an NTLM or Negotiate logon and its sealing
keys belong to that TCP connection. A session whose connection was closed fails at its first call:
the client reconnects, logs on afresh and sends a body sealed with the old keys, which the server
cannot read (HTTP 400 in the lab). Assumption, as Microsoft's docs are silent: Windows also
refuses such a message before running anything. A middlebox may close idle connections sooner;
so the settling visit that fails on a kept session drops it and asks again on a fresh one
(``host_visit._Visit._status``), which costs what the fresh session always cost.

Sessions move between worker threads here, one holder at a time (a session is only ever on the
shelf or in one visit): pypsrp's rule is one client per thread *at a time* (docs/winrm-notes).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

KEEP_S = 90.0
"""The longest a session is kept idle (below HTTP.sys's 120 s idle connection timeout)."""

CAPACITY = 256
"""The most sessions kept at once (about 25 MiB here, one shell per kept host)."""

CLOSE_THREADS = 16
"""Sessions closed at once when the play ends with some still kept (an abort)."""

CLOSE_WAIT_S = 10.0
"""The longest the end of a play waits for those closes."""


class Closable(Protocol):
    """What the shelf needs of a session (a :class:`~cpuu_fleet.visit.session.HostSession`)."""

    def close(self) -> None: ...


Session = TypeVar("Session", bound=Closable)


class SessionShelf(Generic[Session]):
    """Host name → its parked session, with the time it was parked. Thread-safe."""

    def __init__(
        self,
        keep_s: float | None = None,
        capacity: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.keep_s = KEEP_S if keep_s is None else keep_s
        self.capacity = CAPACITY if capacity is None else capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[Session, float]] = {}
        self.kept_total = 0
        """Sessions kept so far (with :attr:`reused_total`: what the shelf saved, for diagnostics)."""
        self.reused_total = 0
        """Sessions a settling visit took back."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def keep(self, host: str, session: Session, wake_in: float) -> bool:
        """Keep ``session`` for the host's next visit, due in ``wake_in`` seconds; or close it
        (not soon enough, or the shelf is full even without the sessions kept too long)."""
        now = self._clock()
        expired: list[Session] = []
        kept = False
        with self._lock:
            if 0 <= wake_in <= self.keep_s:
                if len(self._kept) >= self.capacity:
                    expired = self._take_expired(now)
                if len(self._kept) < self.capacity:
                    previous = self._kept.pop(host, None)
                    if previous is not None:  # never two sessions for one host
                        expired.append(previous[0])
                    self._kept[host] = (session, now)
                    self.kept_total += 1
                    kept = True
        if not kept:
            expired.append(session)
        for stale in expired:
            stale.close()
        return kept

    def take(self, host: str) -> Session | None:
        """The host's kept session, if it was parked less than :data:`KEEP_S` ago; a session
        kept longer is closed (its connection may be gone) and None returned."""
        with self._lock:
            entry = self._kept.pop(host, None)
        if entry is None:
            return None
        session, parked_at = entry
        if self._clock() - parked_at > self.keep_s:
            session.close()
            return None
        with self._lock:
            self.reused_total += 1
        return session

    def recheck(self, host: str, wait: float) -> bool:
        """The host woke and is to be asked in ``wait`` seconds: close its kept session now if
        by then it would have idled longer than :data:`KEEP_S` (while its connection is still
        open, so the shell's Delete goes through). A parked host wakes after each of the
        canary's answers; so a session kept for a host whose question the pacer then puts off
        (the run time not known yet, CPUU longer than expected) is gone within about
        :data:`KEEP_S`, and a waiting host is back to a journal row and a timer. True: kept."""
        now = self._clock()
        with self._lock:
            entry = self._kept.get(host)
            if entry is None:
                return False
            if now - entry[1] + wait <= self.keep_s:
                return True
            del self._kept[host]
        entry[0].close()
        return False

    def close_all(self, wait_s: float | None = None) -> int:
        """Close every session still kept (the play ended or was aborted with hosts parked), a
        few at once, as each close is a round trip (the shell's Delete). Waits at most
        ``wait_s`` (:data:`CLOSE_WAIT_S`): a site whose link dropped would otherwise hold an
        operator's abort for a connect timeout per session; what is not closed by then is left
        to the closing threads (daemons: they end with the process, and the host reaps the
        shell after its idle timeout). Returns how many were closed in time."""
        with self._lock:
            sessions = [session for session, _ in self._kept.values()]
            self._kept.clear()
        if not sessions:
            return 0
        todo: queue.SimpleQueue[Session] = queue.SimpleQueue()
        for session in sessions:
            todo.put(session)
        closed = threading.Semaphore(0)

        def closer() -> None:
            while True:
                try:
                    session = todo.get_nowait()
                except queue.Empty:
                    return
                session.close()
                closed.release()

        for number in range(min(CLOSE_THREADS, len(sessions))):
            threading.Thread(target=closer, name=f"shelf-close-{number}", daemon=True).start()
        deadline = time.monotonic() + (CLOSE_WAIT_S if wait_s is None else wait_s)
        done = 0
        while done < len(sessions) and closed.acquire(
            timeout=max(0.0, deadline - time.monotonic())
        ):
            done += 1
        return done

    def _take_expired(self, now: float) -> list[Session]:
        """Remove and return the sessions kept too long to be used (called under the lock)."""
        old = [host for host, (_, at) in self._kept.items() if now - at > self.keep_s]
        return [self._kept.pop(host)[0] for host in old]
