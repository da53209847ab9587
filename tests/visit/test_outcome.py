"""How a host is judged: CPUU's exit mask and profile codes, errors and policies, as states."""

from __future__ import annotations

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.visit.outcome import RunResult, judge, judge_exit
from cpuu_fleet.visit.session import SessionError
from cpuu_fleet.vocabulary import ErrorClass


def _profiles(*codes: int) -> list[ProfileResult]:
    return [ProfileResult(f"p{i}", code, 0, i) for i, code in enumerate(codes, 1)]


@pytest.mark.parametrize(
    ("exit_code", "codes", "killed", "state"),
    [
        (1, (10, 10), False, states.SUCCEEDED),
        (1 | 4, (10, 11), False, states.PARTIAL),
        (4, (11,), False, states.FAILED),
        (32, (), False, states.FAILED),
        (1 | 32, (10,), False, states.FAILED),  # a crash is never partial
        (1, (), True, states.FAILED),  # killed: exit 1 is NOT success
        (0, (), False, states.SKIPPED),
        (0, (2, 2), False, states.SUCCEEDED),
        (2, (), False, states.NOT_SWITCHED),  # not switched yet
        (1 | 2, (10,), False, states.PARTIAL),
        (1, (10, 6), False, states.PARTIAL),  # offline profile needs action
        (9009, (), False, states.FAILED),
        (16, (), False, states.FAILED),
    ],
)
def test_outcome_table(exit_code, codes, killed, state):
    verdict = judge_exit(exit_code, _profiles(*codes), killed=killed)
    assert verdict.state == state
    if state in (states.FAILED, states.PARTIAL):
        assert verdict.error_class == "cpuu"


def test_outcome_of_errors_and_policies():
    unreachable = SessionError(ErrorClass.UNREACHABLE, "connection refused")
    assert judge(None, (), unreachable).state == states.UNREACHABLE
    assert judge(None, (), unreachable).transient
    auth = SessionError(ErrorClass.AUTHENTICATION, "401")
    verdict = judge(None, (), auth)
    assert (verdict.state, verdict.error_class, verdict.transient) == (
        states.FAILED,
        "authentication",
        False,
    )
    assert judge(RunResult("t", no_user=True), ()).state == states.SKIPPED
    assert judge(RunResult("t", no_user=True, pending=True), ()).state == states.PENDING
    assert judge(RunResult("t", refused="Undo refused"), ()).error_class == "policy"
    after = judge(
        RunResult("t", ran=True, exit_code=1), _profiles(10), SessionError(ErrorClass.TIMEOUT, "x")
    )
    assert after.state == states.SUCCEEDED and after.transient
