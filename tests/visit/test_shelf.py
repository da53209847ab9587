"""The shelf of parked hosts' sessions: kept only for a question soon, bounded, always closed."""

from __future__ import annotations

import threading
import time

from cpuu_fleet.visit.shelf import SessionShelf
from tests.support.clock import ManualClock as Clock


class FakeSession:
    def __init__(self, name: str):
        self.name = name
        self.closed = 0
        self.closed_by: set[str] = set()

    def close(self) -> None:
        self.closed += 1
        self.closed_by.add(threading.current_thread().name)


def test_a_session_for_a_question_soon_is_kept_and_given_back_once():
    clock = Clock()
    shelf = SessionShelf(keep_s=90, capacity=4, clock=clock)
    session = FakeSession("pc-1")
    assert shelf.keep("pc-1", session, wake_in=20)
    clock.now += 20
    assert shelf.take("pc-1") is session and session.closed == 0
    assert shelf.take("pc-1") is None
    assert (shelf.kept_total, shelf.reused_total, len(shelf)) == (1, 1, 0)


def test_a_session_for_a_question_later_than_a_connection_idles_is_closed_at_once():
    shelf = SessionShelf(keep_s=90, capacity=4, clock=Clock())
    session = FakeSession("pc-1")
    assert not shelf.keep("pc-1", session, wake_in=91)
    assert session.closed == 1 and shelf.take("pc-1") is None


def test_a_session_taken_after_it_idled_too_long_is_closed_not_used():
    clock = Clock()
    shelf = SessionShelf(keep_s=90, capacity=4, clock=clock)
    session = FakeSession("pc-1")
    shelf.keep("pc-1", session, wake_in=30)
    clock.now += 91  # the host's question came late (forks busy): its connection may be gone
    assert shelf.take("pc-1") is None and session.closed == 1


def test_a_full_shelf_makes_room_only_from_sessions_that_idled_too_long():
    clock = Clock()
    shelf = SessionShelf(keep_s=90, capacity=2, clock=clock)
    old, fresh = FakeSession("old"), FakeSession("fresh")
    shelf.keep("old", old, wake_in=10)
    clock.now += 60
    shelf.keep("fresh", fresh, wake_in=10)
    third = FakeSession("third")
    assert not shelf.keep("third", third, wake_in=10)  # full, nothing expired: not kept
    assert third.closed == 1 and old.closed == 0
    clock.now += 31  # "old" has idled 91 s
    fourth = FakeSession("fourth")
    assert shelf.keep("fourth", fourth, wake_in=10)
    assert old.closed == 1 and len(shelf) == 2 and shelf.take("fresh") is fresh


def test_a_host_never_has_two_kept_sessions():
    shelf = SessionShelf(keep_s=90, capacity=4, clock=Clock())
    first, second = FakeSession("a"), FakeSession("b")
    shelf.keep("pc-1", first, wake_in=5)
    shelf.keep("pc-1", second, wake_in=5)
    assert first.closed == 1 and shelf.take("pc-1") is second and len(shelf) == 0


def test_a_wake_that_puts_the_question_off_too_long_closes_the_session_while_it_lives():
    clock = Clock()
    shelf = SessionShelf(keep_s=90, capacity=4, clock=clock)
    session = FakeSession("pc-1")
    shelf.keep("pc-1", session, wake_in=10)
    clock.now += 10
    assert shelf.recheck("pc-1", 30)  # asked at 40 s idle: still kept
    clock.now += 50
    assert not shelf.recheck("pc-1", 35)  # would idle 60 + 35 s: closed now, at 60 s
    assert session.closed == 1 and shelf.take("pc-1") is None
    assert not shelf.recheck("pc-9", 1)  # a host with nothing kept


class RoundTripSession(FakeSession):
    """A close that takes a round trip's time (the shell's Delete)."""

    def close(self) -> None:
        time.sleep(0.02)
        super().close()


def test_what_a_play_leaves_on_the_shelf_is_closed_several_at_once():
    shelf = SessionShelf(keep_s=90, capacity=40, clock=Clock())
    sessions = [RoundTripSession(f"pc-{i}") for i in range(20)]
    for session in sessions:
        shelf.keep(session.name, session, wake_in=5)
    assert shelf.close_all() == 20
    assert {s.closed for s in sessions} == {1} and len(shelf) == 0
    assert len(set().union(*(s.closed_by for s in sessions))) > 1  # not one after another
    assert shelf.close_all() == 0


class HangingSession(FakeSession):
    """A host whose link dropped: its Delete waits for a connect timeout."""

    def __init__(self, name: str, release: threading.Event):
        super().__init__(name)
        self.release = release

    def close(self) -> None:
        self.release.wait(30)
        super().close()


def test_an_abort_waits_a_bounded_time_for_hosts_whose_link_dropped():
    shelf = SessionShelf(keep_s=90, capacity=40, clock=Clock())
    release = threading.Event()
    hanging = [HangingSession(f"pc-down-{i}", release) for i in range(20)]
    healthy = [FakeSession(f"pc-up-{i}") for i in range(3)]
    for session in [*hanging, *healthy]:
        shelf.keep(session.name, session, wake_in=5)
    try:
        closed = shelf.close_all(wait_s=0.5)  # 20 hanging, 16 closers: the healthy ones wait
        assert closed < 23 and len(shelf) == 0
        assert {s.closed for s in hanging} == {0}
    finally:
        release.set()
