"""The one vocabulary of cpuu-fleet: host states, step and run statuses, and what each state asks of
an operator.

Why one module: the exit code, ``status``, the progress display, the JSON events, the CSVs, the
workbook, ``failed.retry``, ``retry.txt`` and ``pending.txt`` each used to carry their own list
of "hosts that need attention" and their own names for the states, and they disagreed (a
``not_run`` host exited 3 but was missing from the action list; a host whose mailbox was not
switched exited 0 but was in the action list). Every one of them now asks this module, so a state
added or reclassified here changes them all at once, and ``docs/states.md`` is checked against
:func:`markdown_table` by a test.

Two names per state: the **key** (``not_run``) is what the journal stores and what machines read
(JSON events, ``status --json``, the run log); the **label** (``not run``) is what a person reads
(the progress display, the ``status`` table, the CSVs' ``state`` column, the workbook). Keys are
stored in journals and must never change; labels may.

The judgements below are ours, not the vendor's (see :mod:`cpuu_fleet.visit.outcome` for how a host is
put into a state):

* **needs attention**: a person must do something before the host is done. Exactly these hosts
  make ``play`` exit 3, are listed by ``status``, ``actions.csv`` and ``retry.txt``.
* **retried**: ``--retry-failed RUN`` visits the host again; ``failed.retry`` lists these hosts.
* **resumed**: ``--resume RUN`` visits the host again (it never got to, or never finished, it).
* **pending** is not attention: by policy CPUU runs at the next logon; its own list,
  ``pending.txt``, is for a later ``collect``.

What admins meet with several users per host (issue 10), and where each lives:

* **waiting for the expected user** is a host state (``waiting``): CPUU has not run for a user
  the host is for (``cpuu_user``, or a user of ``run: {users: each}``) and nothing will run it by
  itself: the user is not logged on and no at-logon task waits for them. It needs a person (a
  later run), like ``not_switched``. With ``when_no_user: at_logon`` a task for that user *does*
  wait: that host stays ``pending`` and the user's name is the reason in its message.
* **run by an unexpected user** is a reason on ``waiting``, never a state of its own: CPUU ran
  for somebody else (an older cpuu-fleet's at-logon task for ``BUILTIN\\Users``), the journal
  keeps who (the run step's ``user`` and ``unexpected_user``), and the expected user's run is
  still to come, which is exactly ``waiting``.
* **not applicable** is a host state (``not_applicable``): CPUU has nothing to switch for the
  host's users (New Outlook or no profile, from an audit's prediction or from CPUU's exit 0
  without a profile line). It is done: the mailbox view counts it so.
* **predicted to fail** is a host state (``predicted_fail``) of a visit with an audit and no
  run step, the code in its message; a visit that runs CPUU is judged by CPUU's result.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

# ------------------------------------------------------------------------------ error classes


class ErrorClass(str, enum.Enum):
    """Why a host did not get what the wave wanted. Stored in the journal as the value."""

    UNREACHABLE = "unreachable"  # refused, reset, DNS, connect timeout, connection dropped
    AUTHENTICATION = "authentication"  # HTTP 401, a failed NTLM/Kerberos exchange
    CERTIFICATE = "certificate"  # TLS verification failed
    TIMEOUT = "timeout"  # a read timeout, or one of our own deadlines
    REMOTE = "remote"  # the workstation's PowerShell reported an error
    PROTOCOL = "protocol"  # WSMan faults, broken XML/PSRP, unusable connection settings
    POLICY = "policy"  # we refused to act (Undo after Cleanup)
    CPUU = "cpuu"  # CPUU ran and reported failure, or was killed on deadline
    INTERNAL = "internal"  # a bug in cpuu-fleet (the runner's class for host exceptions)
    INTERRUPTED = "interrupted"  # the operator aborted while we waited (second Ctrl-C)
    LOCAL = "local"  # the controller could not store what it received (disk full, permissions)
    LIMIT = "limit"  # the workstation sent more than we accept (file size or length, output, rows)


TRANSIENT_CLASSES = frozenset({ErrorClass.UNREACHABLE, ErrorClass.TIMEOUT})
"""Failures that may well go away by themselves: the runner retries these with backoff."""


# ------------------------------------------------------------------------------ owners and remedies
# Who must act on a cause, as a migration lead assigns work: the desktop team runs cpuu-fleet and
# owns the workstations, the Exchange team owns mailboxes and their switch, the user owns their
# session. The judgements are ours (the vendor names no owners).
OWNER_DESKTOP = "desktop team"
OWNER_EXCHANGE = "Exchange team"
OWNER_USER = "the user"
OWNER_NOBODY = "nobody (settles by itself)"
OWNERS: tuple[str, ...] = (OWNER_DESKTOP, OWNER_EXCHANGE, OWNER_USER, OWNER_NOBODY)


@dataclass(frozen=True)
class Remedy:
    """Who acts on one cause (an error class, a CPUU code, a Windows exit code) and what they do
    next, in plain words. Every output (action list, Summary causes, HTML) reads it from here or
    from :mod:`cpuu_fleet.cpuu`, next to the cause it describes."""

    owner: str
    next_step: str


ERROR_CLASS_REMEDIES: dict[ErrorClass, Remedy] = {
    ErrorClass.UNREACHABLE: Remedy(
        OWNER_DESKTOP,
        "The workstation did not answer: check that it is on, on the network, and that WinRM"
        " listens (winrm quickconfig); then retry.",
    ),
    ErrorClass.AUTHENTICATION: Remedy(
        OWNER_DESKTOP,
        "WinRM refused the credentials: check the account, its password and that it is a local"
        " administrator on the workstation. A Kerberos error message says what to fix (ticket,"
        " clock, name): see docs/kerberos.md.",
    ),
    ErrorClass.CERTIFICATE: Remedy(
        OWNER_DESKTOP,
        "The WinRM HTTPS certificate was not trusted: fix the workstation's certificate or the CA"
        " bundle (do not turn validation off).",
    ),
    ErrorClass.TIMEOUT: Remedy(
        OWNER_DESKTOP,
        "A step ran past its deadline: check the link and the workstation's load, then retry.",
    ),
    ErrorClass.REMOTE: Remedy(
        OWNER_DESKTOP,
        "A remote command failed on the workstation: read the error message and the step's"
        " output in the Attempts sheet.",
    ),
    ErrorClass.PROTOCOL: Remedy(
        OWNER_DESKTOP,
        "The WinRM conversation broke (proxy, size limits, dropped connection): retry; if it"
        " repeats, check MaxEnvelopeSizekb and any proxy in between.",
    ),
    ErrorClass.POLICY: Remedy(
        OWNER_DESKTOP,
        "The play's policy stopped this host (for example nobody logged on): see the error"
        " message; rerun when the condition is met.",
    ),
    ErrorClass.CPUU: Remedy(
        OWNER_DESKTOP, "CPUU did not do its job: read the CPUU log collected from the workstation."
    ),
    ErrorClass.INTERNAL: Remedy(
        OWNER_DESKTOP,
        "A fault in cpuu-fleet stopped this host's visit: the run's run.log has its traceback;"
        " report it, then retry the host.",
    ),
    ErrorClass.LOCAL: Remedy(
        OWNER_DESKTOP,
        "The controller could not store what it received (disk full, no permission on the"
        " reports folder): fix that, then run collect for this host.",
    ),
    ErrorClass.LIMIT: Remedy(
        OWNER_DESKTOP,
        "The workstation sent more than the play's limits allow (a file too big or longer than"
        " announced, endless output, too many result rows): look at the host (a huge CPUU log,"
        " a tampered machine); raise the play's 'limits' only if the data is genuine.",
    ),
    ErrorClass.INTERRUPTED: Remedy(
        OWNER_DESKTOP,
        "The controller stopped while this host was running: run resume to collect what"
        " happened before running it again.",
    ),
}
"""What to do about each error class, and who does it: every class has one (a test holds it)."""

UNKNOWN_REMEDY = Remedy(
    OWNER_DESKTOP,
    "Nobody knows yet why this host failed: read its rows in the Attempts sheet and the run's"
    " run.log, and report it to the cpuu-fleet maintainers.",
)
"""A failure no error class, code or flag explains (an unknown journal state, a missing class)."""

#: Error classes that say nothing about the cause (a bug, a damaged journal): "unknown failures".
UNKNOWN_ERROR_CLASSES = frozenset({ErrorClass.INTERNAL.value, "unknown-state"})


# ------------------------------------------------------------------------------ host states
# Stored in the journal's hosts.state: never change these values.
SUCCEEDED = "succeeded"
PARTIAL = "partial"  # some profiles failed
FAILED = "failed"
UNREACHABLE = "unreachable"
NOT_SWITCHED = "not_switched"  # CPUU found no switch message: the mailbox is not switched yet
WAITING = "waiting"  # a user the host is for is not logged on (or ran by someone else): not done
PREDICTED_FAIL = "predicted_fail"  # an audit (no run) predicts CPUU failing (code 6, 22)
NOT_APPLICABLE = "not_applicable"  # nothing for CPUU to switch: New Outlook, or no profile
SKIPPED = "skipped"  # nobody logged on (policy skip), nothing to do, not applicable
PENDING = "pending"  # at-logon task registered; results not collected yet
NOT_RUN = "not_run"  # stopped by a stop rule (max_fail/max_unreachable_percentage) or Ctrl-C
QUEUED = "queued"  # transient: waiting in its batch
RUNNING = "running"  # transient: being worked on
# Never stored: what a report makes of a host left ``running`` by a run that is no longer going on
# (the controller died or was stopped while it worked on the host).
INTERRUPTED = "interrupted"

# ------------------------------------------------------------------------------ step statuses
# The journal's attempts.status and the ``step_finished`` event's status.
STEP_RUNNING = "running"
STEP_OK = "ok"
STEP_CHANGED = "changed"
STEP_SKIPPED = "skipped"
STEP_FAILED = "failed"
STEP_KILLED = "killed"
# Events only: the operator aborted the step (second Ctrl-C). The journal leaves such an attempt
# "running" on purpose: an unfinished run step is what --resume asks the host about.
STEP_INTERRUPTED = "interrupted"
STEP_STATUSES = (
    STEP_RUNNING, STEP_OK, STEP_CHANGED, STEP_SKIPPED, STEP_FAILED, STEP_KILLED, STEP_INTERRUPTED,
)  # fmt: skip

# ------------------------------------------------------------------------------ run statuses
# The journal's runs.status and the ``run_finished`` event's status.
RUN_RUNNING = "running"
RUN_COMPLETED = "completed"
RUN_STOPPED = "stopped"  # max_fail_percentage or max_unreachable_percentage
RUN_INTERRUPTED = "interrupted"  # Ctrl-C, a signal, or a controller that died
RUN_STATUSES = (RUN_RUNNING, RUN_COMPLETED, RUN_STOPPED, RUN_INTERRUPTED)


@dataclass(frozen=True)
class HostState:
    """One host state and everything every output needs to know about it."""

    key: str
    """What the journal stores and machines read."""
    label: str
    """What a person reads."""
    style: str
    """rich style in the terminal."""
    fill: str
    """Excel cell fill (traffic lights; the chart uses :attr:`chart`)."""
    font: str
    """Excel font colour on :attr:`fill`."""
    chart: str
    """The workbook chart's bar colour (stronger than the fill, so small counts stay visible)."""
    final: bool
    """The host's state for this run is settled (not waiting or being worked on)."""
    attention: bool
    """A person must act: exit code 3, ``status``, ``actions.csv``, ``retry.txt``."""
    retried: bool
    """``--retry-failed RUN`` visits it again; ``failed.retry`` lists it."""
    resumed: bool
    """``--resume RUN`` visits it again."""
    follow_up: str
    """What the operator does next; ``RUN`` stands for the run id."""
    meaning: str
    """One line for the docs."""

    def follow_up_for(self, run_id: str | None, reports: Path | None = None) -> str:
        """The follow-up with the run id filled in (left as ``RUN`` when unknown), and the
        ``--reports`` folder when it is not the default ``reports``."""
        text = self.follow_up
        if reports is not None:
            text = text.replace("reports/RUN", f"{reports.as_posix()}/RUN")
        return text.replace("RUN", run_id) if run_id else text


def _state(
    key: str,
    label: str,
    colours: tuple[str, str, str, str],
    *,
    final: bool,
    attention: bool,
    retried: bool,
    resumed: bool,
    follow_up: str,
    meaning: str,
) -> HostState:
    """A state, with its four colours as one tuple (rich style, Excel fill, font and chart)."""
    style, fill, font, chart = colours
    return HostState(
        key, label, style, fill, font, chart, final, attention, retried, resumed, follow_up, meaning
    )


_NOTHING = "nothing to do"
_RESUME = "cpuu-fleet play --resume RUN"

#: Every host state, in report order: the good news first, then what needs a person, then what
#: did not happen yet, then the transient ones.
STATES: tuple[HostState, ...] = (
    _state(
        SUCCEEDED, "succeeded", ("green", "#C6EFCE", "#006100", "#70AD47"),
        final=True, attention=False, retried=False, resumed=False, follow_up=_NOTHING,
        meaning="CPUU did its job on every profile it had to",
    ),
    _state(
        PARTIAL, "partially succeeded", ("yellow", "#FFEB9C", "#9C5700", "#FFC000"),
        final=True, attention=True, retried=False, resumed=False,
        follow_up="fix the profiles the action list names, then cpuu-fleet play PLAYBOOK --limit @reports/RUN/retry.txt",
        meaning="CPUU ran, some profiles were not done (or it flagged a failure)",
    ),
    _state(
        FAILED, "failed", ("bold red", "#FFC7CE", "#9C0006", "#C00000"),
        final=True, attention=True, retried=True, resumed=False,
        follow_up="fix the cause the action list gives, then cpuu-fleet play --retry-failed RUN",
        meaning="a step or CPUU failed; the error class says which",
    ),
    _state(
        UNREACHABLE, "unreachable", ("red", "#F4B183", "#833C0B", "#ED7D31"),
        final=True, attention=True, retried=True, resumed=False,
        follow_up="bring the host onto the network, then cpuu-fleet play --retry-failed RUN",
        meaning="the workstation did not answer (after the play's retries)",
    ),
    _state(
        NOT_SWITCHED, "not switched", ("magenta", "#E4DFEC", "#5B2C6F", "#8E7CC3"),
        final=True, attention=True, retried=False, resumed=False,
        follow_up="rerun after the mailbox switch: cpuu-fleet play PLAYBOOK --limit @reports/RUN/retry.txt",
        meaning="CPUU found no switch message: the mailboxes are not switched yet",
    ),
    _state(
        WAITING, "waiting for user", ("bright_blue", "#DEEAF6", "#1F3864", "#4472C4"),
        final=True, attention=True, retried=False, resumed=False,
        follow_up="when the user named in the message is logged on: cpuu-fleet play PLAYBOOK --limit @reports/RUN/retry.txt",
        meaning="CPUU has not run for a user the host is for: not logged on (no at-logon task"
        " waits for them), or the run was by another user",
    ),
    _state(
        PREDICTED_FAIL, "predicted to fail", ("yellow", "#FCE4D6", "#833C0B", "#F4B084"),
        final=True, attention=True, retried=False, resumed=False,
        follow_up="fix what audit.csv predicts (free disk, cpuu_process_offline), then cpuu-fleet play PLAYBOOK --limit @reports/RUN/retry.txt",
        meaning="an audit (no run) predicts a CPUU code that is not success; the message names it",
    ),
    _state(
        NOT_APPLICABLE, "not applicable", ("dim green", "#E2EFDA", "#375623", "#A9D08E"),
        final=True, attention=False, retried=False, resumed=False, follow_up=_NOTHING,
        meaning="nothing for CPUU to switch: New Outlook or no Outlook profile (audit or CPUU)",
    ),
    _state(
        SKIPPED, "skipped", ("dim", "#D9D9D9", "#404040", "#A5A5A5"),
        final=True, attention=False, retried=False, resumed=False, follow_up=_NOTHING,
        meaning="nothing to do, or nobody logged on with policy skip",
    ),
    _state(
        PENDING, "pending", ("blue", "#BDD7EE", "#1F4E78", "#5B9BD5"),
        final=True, attention=False, retried=False, resumed=False,
        follow_up="after the next logon: cpuu-fleet collect --limit @reports/RUN/pending.txt",
        meaning="CPUU runs at the next logon (policy at_logon); results not collected yet",
    ),
    _state(
        NOT_RUN, "not run", ("dim", "#EDEDED", "#7F7F7F", "#D0CECE"),
        final=True, attention=True, retried=False, resumed=True, follow_up=_RESUME,
        meaning="the run stopped (a stop rule, Ctrl-C) before the host started",
    ),
    _state(
        INTERRUPTED, "interrupted", ("bold magenta", "#F8CBAD", "#843C0C", "#C55A11"),
        final=True, attention=True, retried=False, resumed=True,
        follow_up=_RESUME + " (asks the host; never starts CPUU twice)",
        meaning="the controller stopped while it worked on the host (reports only)",
    ),
    _state(
        QUEUED, "queued", ("dim", "#EDEDED", "#7F7F7F", "#D0CECE"),
        final=False, attention=False, retried=False, resumed=True,
        follow_up="wait for the run (" + _RESUME + " if its controller stopped)",
        meaning="waiting in its batch (a run going on)",
    ),
    _state(
        RUNNING, "running", ("cyan", "#DDEBF7", "#1F4E78", "#9DC3E6"),
        final=False, attention=False, retried=False, resumed=True,
        follow_up="wait for the run (" + _RESUME + " if its controller stopped)",
        meaning="being worked on (a run going on)",
    ),
)  # fmt: skip

BY_KEY: dict[str, HostState] = {state.key: state for state in STATES}
BY_LABEL: dict[str, HostState] = {state.label: state for state in STATES}

#: What the runner may record as a host's end state (everything final except the report's own).
FINAL_STATES: tuple[str, ...] = tuple(s.key for s in STATES if s.final and s.key != INTERRUPTED)
#: The states a report shows (transient ones are settled first: :func:`settle`).
REPORT_STATES: tuple[str, ...] = tuple(s.key for s in STATES if s.final)
ATTENTION_STATES: tuple[str, ...] = tuple(s.key for s in STATES if s.attention)
#: The attention states a run can end a host in (what makes ``play`` exit 3).
EXIT_3_STATES: tuple[str, ...] = tuple(k for k in ATTENTION_STATES if k in FINAL_STATES)
RETRIED_STATES: tuple[str, ...] = tuple(s.key for s in STATES if s.retried)
RESUMED_STATES: tuple[str, ...] = tuple(s.key for s in STATES if s.resumed)
#: Hosts waiting for a later ``collect``.
PENDING_STATES: tuple[str, ...] = (PENDING,)
#: States in which nothing was attempted on the host: such a row is no news about it.
UNTRIED_STATES: frozenset[str] = frozenset({QUEUED, NOT_RUN})
#: Every state, the worst first: where one of several outcomes must speak for all (the users of
#: one RDS host, the devices of one user), the worst decides, as MECM does for a collection.
#: Worse means further from done: a failure needs a person now; a predicted failure needs one
#: before the wave; not switched waits for the mailbox move; interrupted and not run were never
#: finished; waiting needs the user's own run; pending and skipped did nothing wrong; not
#: applicable and succeeded are done.
WORST_FIRST: tuple[str, ...] = (
    FAILED, UNREACHABLE, PARTIAL, INTERRUPTED, PREDICTED_FAIL, NOT_SWITCHED, NOT_RUN, QUEUED,
    RUNNING, WAITING, PENDING, SKIPPED, NOT_APPLICABLE, SUCCEEDED,
)  # fmt: skip

#: Causes that are the host's state itself (no error class, CPUU code or flag says more).
STATE_REMEDIES: dict[str, Remedy] = {
    PENDING: Remedy(
        OWNER_USER,
        "CPUU waits for the user's next logon: nothing to fix; collect its results afterwards.",
    ),
    SKIPPED: Remedy(
        OWNER_USER,
        "Nobody was logged on, or there was nothing to do: the next run after the user logs on"
        " does it.",
    ),
    NOT_RUN: Remedy(
        OWNER_DESKTOP,
        "The run stopped (a stop rule, Ctrl-C) before this host started: resume the run.",
    ),
    INTERRUPTED: ERROR_CLASS_REMEDIES[ErrorClass.INTERRUPTED],
}

# What a finished (or dead) run's transient states mean: a host still queued never started;
# one left running may have run CPUU, but nothing was collected: --resume asks the host.
_SETTLED = {QUEUED: NOT_RUN, RUNNING: INTERRUPTED}

# ------------------------------------------------------------------------------ mailbox (user) states
# What a migration lead reads per mailbox (report/mailboxes.py): each device's host state falls
# into one of four, and the user's state is their WORST device's, as MECM rolls a user's devices
# up (one device in error makes the user's deployment an error). Worst first: a device a person
# must fix blocks the user and someone must act; a device no run has reached needs a run
# scheduled; a device that waits (pending logon, nobody logged on) settles by itself; a user is
# done only when every device is done.
USER_NEEDS_ACTION = "needs action"
USER_NOT_STARTED = "not started"
USER_WAITING = "waiting"
USER_DONE = "done"
USER_NO_DEVICE = "no known device"
"""A user whose devices nobody knows (no device map row, never seen by a run): listed apart."""
NO_DEVICE_REMEDY = Remedy(
    OWNER_DESKTOP,
    "find the user's device (a device map, or a run that meets them), then put it in a wave",
)
"""What a mailbox with no known device asks for."""
NOT_IN_A_WAVE_REMEDY = Remedy(
    OWNER_DESKTOP,
    "put the device in a wave: cpuu-fleet plan --mailboxes BATCH.csv --batch NAME",
)
"""What a mailbox whose device no selected run targeted (or ran for another user) asks for."""
USER_STATES: tuple[str, ...] = (USER_NEEDS_ACTION, USER_NOT_STARTED, USER_WAITING, USER_DONE)
"""Worst first: a user's state is the first of these that one of their devices is in."""
USER_STATE_OF_HOST: dict[str, str] = {
    SUCCEEDED: USER_DONE,
    PARTIAL: USER_NEEDS_ACTION,
    FAILED: USER_NEEDS_ACTION,
    UNREACHABLE: USER_NEEDS_ACTION,
    NOT_SWITCHED: USER_NEEDS_ACTION,
    INTERRUPTED: USER_NEEDS_ACTION,
    PREDICTED_FAIL: USER_NEEDS_ACTION,  # fix the cause before the wave, or CPUU fails
    SKIPPED: USER_WAITING,  # nobody was logged on: the next run (or logon) does it
    WAITING: USER_WAITING,  # the user's own run is still to come
    PENDING: USER_WAITING,
    NOT_APPLICABLE: USER_DONE,  # CPUU has nothing to switch for them
    NOT_RUN: USER_NOT_STARTED,
    QUEUED: USER_NOT_STARTED,
    RUNNING: USER_WAITING,
}
"""Each host state's mailbox state; a device no run has targeted is ``not started``."""


def state(key: str) -> HostState:
    """The state for a key; an unknown key (a newer or damaged journal) is treated as failed,
    so a person looks at it rather than nobody."""
    return BY_KEY.get(key, BY_KEY[FAILED])


def settle(key: str) -> str:
    """A state as it stands once its run is over: ``queued`` → ``not_run``, ``running`` →
    ``interrupted``; anything else unchanged (an unknown key too: :func:`state` judges it)."""
    return _SETTLED.get(key, key)


def label(key: str) -> str:
    """The human name of a state (an unknown key is shown as it is)."""
    known = BY_KEY.get(key)
    return known.label if known else key


def needs_attention(key: str) -> bool:
    """True when a host in this (settled) state needs a person: exit code 3 and every list."""
    return state(settle(key)).attention


def describe(keys: tuple[str, ...], last: str = "and") -> str:
    """``failed and unreachable``: a set of states in words, for help texts and hints."""
    words = [label(key) for key in keys]
    return ", ".join(words[:-1]) + f" {last} " + words[-1] if len(words) > 1 else "".join(words)


def markdown_table() -> str:
    """The table of ``docs/states.md`` (a test checks that the doc holds exactly this)."""

    def mark(flag: bool) -> str:
        return "yes" if flag else "—"

    lines = [
        "| state (key) | shown as | meaning | final | needs attention | `--retry-failed` |"
        " `--resume` | follow-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in STATES:
        lines.append(
            f"| `{s.key}` | {s.label} | {s.meaning} | {mark(s.final)} | {mark(s.attention)} |"
            f" {mark(s.retried)} | {mark(s.resumed)} | {s.follow_up} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m cpuu_fleet.vocabulary: the table for docs/states.md
    print(markdown_table(), end="")
