"""When a detached host is asked again (visit/settle.py): the expected run time first, a canary
while nothing is expected, never past the deadline."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cpuu_fleet.visit.settle import SettlePacer, elapsed_since
from tests.support.clock import ManualClock as Clock

TIMEOUT = 900


def test_with_an_expected_time_the_first_question_comes_then_and_later_ones_follow_the_run():
    pacer = SettlePacer(expected_s=60)
    assert pacer.wait("pc-1", 0, TIMEOUT) == pytest.approx(60)
    assert pacer.wait("pc-1", 59.5, TIMEOUT) == pytest.approx(0.5)
    assert pacer.wait("pc-1", 60, TIMEOUT) == 0  # ask now
    pacer.asked("pc-1", 60)  # still running at 60 s: next after a fifth of that
    assert pacer.wait("pc-1", 60, TIMEOUT) == pytest.approx(12)
    pacer.asked("pc-1", 600)
    assert pacer.wait("pc-1", 600, TIMEOUT) == pytest.approx(30)  # gaps stop growing at 30 s


def test_with_nothing_expected_one_canary_is_asked_often_and_the_others_learn_from_it():
    pacer = SettlePacer()
    assert pacer.wait("canary", 0, TIMEOUT) == pytest.approx(1)
    # Another host is not asked at 1 s; it wakes (without asking) to hear of an expectation.
    assert 0 < pacer.wait("other", 1, TIMEOUT) <= 1
    assert pacer.wait("other", 5, TIMEOUT) > 0
    assert pacer.wait("other", 10, TIMEOUT) == 0  # the coarse safeguard: asked at 10 s
    pacer.asked("other", 10)
    assert pacer.wait("other", 12, TIMEOUT) > 0
    pacer.settled("canary", 20.0)  # the canary ended by itself after 20 s
    assert pacer.expected() == 20.0
    assert pacer.wait("other", 12, TIMEOUT) == pytest.approx(8)
    assert pacer.wait("other", 20, TIMEOUT) == 0
    assert pacer.wait("third", 0, TIMEOUT) == pytest.approx(20)


def test_while_the_canary_is_at_work_the_others_are_not_asked_up_to_the_safeguard():
    """A wave of hosts with the same CPUU: the others wait for what the canary shows instead of
    each costing a question at 10 s; while a canary hangs (or is the slow one), one other host
    per 120 s is asked all the same, not each of them."""
    clock = Clock()
    pacer = SettlePacer(clock=clock)
    assert pacer.wait("canary", 0, TIMEOUT) == pytest.approx(1)
    pacer.asked("canary", 15)  # at work after 15 s: its next question comes at 18 s
    assert pacer.wait("other", 10, TIMEOUT) > 0  # no longer asked at 10 s
    # Not at 18 s either, when the canary's answer to that question may not be in yet: one
    # fine step later (18 s + a fifth), by when it has moved the floor or taught the time.
    assert pacer.wait("other", 18, TIMEOUT) == pytest.approx(3.6)
    assert pacer.wait("other", 21.6, TIMEOUT) == 0
    pacer.asked("canary", 18)  # its answer: still at work, so the others wait for the next one
    assert pacer.wait("other", 21.6, TIMEOUT) > 0
    pacer.asked("canary", 600)  # a canary that hangs
    assert pacer.wait("late", 120, TIMEOUT) > 0
    clock.now += 120  # 120 s of the play: the safeguard lets one other host through
    assert pacer.wait("late", 120, TIMEOUT) == 0
    pacer.asked("late", 120)  # at work too
    assert pacer.wait("other", 240, TIMEOUT) > 0  # one per 120 s, not every host
    assert pacer.wait("late", 240, TIMEOUT) > 0
    clock.now += 120
    assert pacer.wait("other", 240, TIMEOUT) == 0
    pacer.settled("other", 230.0)  # it had ended: the run time, learned for all
    assert pacer.wait("late", 240, TIMEOUT) == 0


def test_a_hosts_cpuu_start_is_kept_while_it_waits_and_forgotten_once_settled():
    """A wake-up counts from the ``Start`` call's answer, by our clock; a resumed host, never
    started by this controller, has no such time."""
    pacer = SettlePacer(expected_s=20)
    assert pacer.elapsed("pc-1") is None
    pacer.started("pc-1", 2.0)  # Start answered: CPUU has run 2 s
    elapsed = pacer.elapsed("pc-1")
    assert elapsed is not None and 2.0 <= elapsed < 60
    pacer.settled("pc-1", 20.0)
    assert pacer.elapsed("pc-1") is None


def test_a_killed_run_teaches_nothing_and_the_deadline_is_never_passed_by_more_than_a_second():
    pacer = SettlePacer()
    pacer.settled("pc-1", None)
    assert pacer.expected() is None
    hung = SettlePacer(expected_s=3600)
    assert hung.wait("pc-2", 0, 30) == pytest.approx(31)
    assert hung.wait("pc-2", 31, 30) == 0
    assert SettlePacer.due(30, 30, has_run=True) and not SettlePacer.due(29, 30, has_run=True)
    assert SettlePacer.due(61, 900, has_run=False)  # never came up: Run reads NotStarted


def test_elapsed_reads_the_hosts_iso_time_and_is_zero_when_unknown():
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)
    started = (now - timedelta(seconds=42)).isoformat()
    assert elapsed_since(started, now) == pytest.approx(42)
    assert elapsed_since("2026-12-06T11:59:00.0000000Z", now) == pytest.approx(60)
    assert elapsed_since(None, now) == 0 and elapsed_since("garbage", now) == 0


def test_the_others_wake_just_after_the_canarys_answer_to_hear_of_the_run_time_at_once():
    """Waking only on the fine schedule, the others heard of the canary's end (and so were
    asked) up to a fifth of their run time late."""
    pacer = SettlePacer()
    pacer.started("canary", 15.0)  # its Start answered now, CPUU had run 15 s
    assert pacer.wait("canary", 15, TIMEOUT) == 0  # the first to wait: the canary, asked now
    pacer.asked("canary", 15)  # at work: its next question at 18 s, the answer in by 19 s
    woken = pacer.wait("other", 5, TIMEOUT)
    assert 3.5 < woken <= 4.0  # 19 s of the canary's, less the 15 s it had run: not 1 s later
    late = SettlePacer()
    late.started("canary", 40.0)
    late.wait("canary", 40, TIMEOUT)
    late.asked("canary", 15)  # its answer to the 18 s question is long overdue
    assert late.wait("other", 5, TIMEOUT) == pytest.approx(1)  # the fine schedule again


def test_while_the_canarys_answer_is_overdue_the_others_wait_for_it_up_to_the_safeguard():
    """The runner starts every host before it wakes a parked one, so in a wave of several rounds
    of starts the canary is asked late; the hosts started before it is were asked at 10 s (the
    coarse safeguard) and, CPUU still at work, cost a poll each."""
    clock = Clock()
    pacer = SettlePacer(clock=clock)
    pacer.started("canary", 30.0)  # parked 30 s ago and never asked since: its answer is late
    assert pacer.wait("canary", 30, TIMEOUT) == 0
    assert pacer.wait("other", 10, TIMEOUT) > 0  # not at the coarse 10 s
    assert pacer.wait("other", 120, TIMEOUT) > 0
    clock.now += 120
    assert pacer.wait("other", 120, TIMEOUT) == 0  # the safeguard, should the canary hang
    pacer.asked("canary", 30)  # its answer: at work after 30 s; the next question at 36 s
    assert pacer.wait("other", 30, TIMEOUT) > 0


def test_a_canary_settled_without_a_run_time_holds_the_others_back_no_longer():
    """A canary whose settling visit failed (unreachable) is forgotten: the others are asked on
    the coarse safeguard again, not only at 120 s, and the next host to wait is the canary."""
    pacer = SettlePacer()
    pacer.started("canary", 30.0)
    assert pacer.wait("canary", 30, TIMEOUT) == 0
    assert pacer.wait("other", 10, TIMEOUT) > 0  # held back while its answer is overdue
    pacer.settled("canary", None)
    assert pacer.wait("other", 10, TIMEOUT) == 0
    assert pacer.expected() is None


def test_a_host_is_surely_not_asked_before_it_has_run_as_long_as_the_canary_already_has():
    """What the session shelf keeps by: while nothing is expected, another host's wakes do
    not ask before it has run as long as the canary was last seen at work."""
    pacer = SettlePacer()
    pacer.started("pc-canary", 0)
    pacer.wait("pc-canary", 0, TIMEOUT)  # the first host asked about is the canary
    pacer.asked("pc-canary", 60)  # at work after 60 s
    assert pacer.not_before("pc-other", 10) == pytest.approx(50)
    assert pacer.not_before("pc-other", 75) == 0
    assert pacer.not_before("pc-canary", 60) == 0  # its wakes are its questions
    pacer.settled("pc-canary", 70)  # ended: 70 s is now expected, and waits are questions
    assert pacer.not_before("pc-other", 10) == 0
