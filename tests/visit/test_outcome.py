"""How a host is judged: CPUU's exit mask and profile codes, errors and policies, as states."""

from __future__ import annotations

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet import vocabulary as V
from cpuu_fleet.audit import AuditPolicy, AuditRow
from cpuu_fleet.audit import judge as judge_rows
from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.visit.outcome import RunResult, judge, judge_audit, judge_exit
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
        (0, (), False, V.NOT_APPLICABLE),  # CPUU listed no profile: nothing to switch
        (0, (0,), False, states.SKIPPED),  # a profile CPUU did not process: nothing to do
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


# ------------------------------------------------------------------------ issue 10's states


def test_the_expected_user_not_logged_on_leaves_the_host_waiting_never_skipped():
    run = RunResult("t", no_user=True, expected=("CORP\\owner",), other_users=("CORP\\tech",))
    verdict = judge(run)
    assert (verdict.state, verdict.error_class) == (V.WAITING, "policy")
    assert "CORP\\owner" in verdict.error_message and "CORP\\tech" in verdict.error_message
    assert V.needs_attention(verdict.state) and V.USER_STATE_OF_HOST[verdict.state] != V.USER_DONE


def test_a_run_by_an_unexpected_user_is_theirs_and_never_marks_the_expected_user_done():
    run = RunResult("t", ran=True, exit_code=1, user="CORP\\tech", expected=("CORP\\owner",))
    verdict = judge(run, _profiles(10))
    assert verdict.state == V.WAITING
    assert "unexpected user CORP\\tech" in verdict.error_message
    assert run.details()["unexpected_user"] is True
    again = RunResult.from_details(run.details())  # a retry reads the journal: same verdict
    assert judge(again, _profiles(10)).state == V.WAITING
    own = RunResult("t", ran=True, exit_code=1, user="corp\\OWNER", expected=("CORP\\owner",))
    assert judge(own, _profiles(10)).state == states.SUCCEEDED


def _audited(**fields) -> list[AuditRow]:
    row = AuditRow(host="h", user="CORP\\u", sid="S-1-5-21-1", hive_state="Loaded", **fields)
    return judge_rows([row], AuditPolicy(source=("old*",), target=("new*",)))


def test_an_audit_without_a_run_predicts_failure_with_the_code():
    verdict = judge_audit(_audited(profile="P", server="old1", cached_mode=True, ost_bytes=1))
    assert verdict.state == V.PREDICTED_FAIL and "6 PROFILE_IS_OFFLINE" in verdict.error_message
    big = judge_audit(_audited(profile="P", server="old1", ost_bytes=10, free_bytes=5))
    assert big.state == V.PREDICTED_FAIL and "22 " in big.error_message


def test_an_audit_of_new_outlook_or_no_profile_is_not_applicable_and_a_plain_one_succeeds():
    assert judge_audit(_audited(new_outlook=True, profile="P")).state == V.NOT_APPLICABLE
    assert judge_audit(_audited()).state == V.NOT_APPLICABLE  # no profile
    assert judge_audit(_audited(profile="P", server="old1")).state == states.SUCCEEDED
