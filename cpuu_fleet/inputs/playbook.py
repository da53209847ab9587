"""Playbooks: an Ansible-shaped YAML list of plays, read into dataclasses and validated up front.

Why validate so hard: a playbook drives changes on thousands of workstations. A typo such as
``serail: 1`` would, if ignored, run the whole fleet in one batch. So every unknown key, every value
of the wrong type and every duplicate key is an :class:`~cpuu_fleet.errors.InputError` that names the
file, the line and the key, before a single host is touched.

The grammar follows Ansible where Ansible has a word for it (``hosts``, ``serial``,
``max_fail_percentage``, ``forks``, ``vars``) and uses its arithmetic exactly (see
:func:`serial_batches`). What Ansible does with tasks, a play here does with ``steps``: the fixed
pipeline ``preflight → push → run → collect`` (any subset, in that order), with the read-only
``audit`` before it, after it, or both (before and after ``run``: what moved).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.datafiles import LineDict, LineList, parse_yaml
from cpuu_fleet.limits import DEFAULT_LIMITS, BadLimit, Limits, parse_limits

STEP_ORDER = ("preflight", "push", "run", "collect", "audit")
AUDIT_STEP = "audit"
"""Read-only, so it may stand anywhere in a play, at most twice: before and after ``run`` (an
audit of where every user's profiles point, :mod:`cpuu_fleet.visit.audit`). The other steps keep
their order."""
WHEN_NO_USER = ("skip", "at_logon")
DISCONNECTED = ("skip", "run")
"""The run's ``disconnected``: what to do for a user whose session is disconnected (see
:attr:`RunOptions.disconnected`)."""
USERS = ("one", "each")
"""The run's ``users``: ``one`` CPUU run per host, or ``each`` logged-on user's own (RDS)."""
DEFAULT_PER_HOST = 1
"""With ``users: each``, how many users' CPUU may run at once on one host by default: one. CPUU
stops each user's Outlook, rewrites their profiles and, where the OST is recreated, starts its
rebuild (migration field notes 2.3): N runs at once share the server's disk, CPU and network
with every other user still working on it (an RDS or Citrix server), and the vendor says
nothing about runs side by side on one machine. So parallel runs are the operator's choice,
never the default; 1 also keeps the behaviour plays had before the option existed."""

DEFAULT_FORKS = 5  # Ansible's default; the CLI may override per run.
DEFAULT_RETRIES = 2
DEFAULT_RETRY_BACKOFF = 5.0
DEFAULT_RUN_TIMEOUT = 900
DEFAULT_WAVE_GROUPS = "wave*"
DEFAULT_MAX_UNREACHABLE_PERCENTAGE = 25.0
"""A play stops once more than this share of its hosts was unreachable. Desktop fleets have 5 to
10 % of machines off, asleep or off the VPN on any day: a quarter is no longer a laptop or two
but the network, the VPN, DNS or WinRM's firewall rule, and every later host would only be
unreachable too. Unlike failures, an unreachable host changed nothing, so the default is loose."""

_PLAY_KEYS = (
    "name",
    "hosts",
    "serial",
    "max_fail_percentage",
    "max_unreachable_percentage",
    "forks",
    "vars",
    "steps",
    "retries",
    "retry_backoff",
    "payload",
    "templates",
    "wave_groups",
    "limits",
)
_RUN_KEYS = (
    "mode",
    "when_no_user",
    "timeout",
    "batch_file",
    "users",
    "disconnected",
    "attached",
    "expected_seconds",
    "per_host",
)
# Keys people bring from Ansible: say what to write instead of just "unknown".
_ANSIBLE_HINTS = {
    "tasks": "a cpuu-fleet play has 'steps' (preflight, push, run, collect), not 'tasks'",
    "roles": "a cpuu-fleet play has 'steps' (preflight, push, run, collect), not 'roles'",
    "gather_facts": "the 'preflight' step gathers what cpuu-fleet needs",
    "become": "CPUU runs as the logged-on user through a scheduled task; there is no 'become'",
}


# ------------------------------------------------------------------------------ data classes


@dataclass(frozen=True)
class RunOptions:
    """How the ``run`` step starts CPUU on a workstation."""

    mode: Mode
    when_no_user: str = "skip"
    """``skip``: nobody logged on → the host is skipped (run it again later); ``at_logon``: register
    a task that runs CPUU at the next logon → the host is *pending* until a later collect."""
    timeout: int = DEFAULT_RUN_TIMEOUT
    """Seconds CPUU may run before we stop it (and record it as killed, never as success)."""
    batch_file: str | None = None
    """The vendor batch file to start; None → the mode's usual name (:attr:`Mode.batch_file`)."""
    users: str = "one"
    """``one``: one CPUU run per host, for the user ``cpuu_user`` names or the one logged on;
    ``each``: one run per logged-on user (a Remote Desktop Session Host, Citrix), each in its
    own session, at most ``per_host`` at once (the preflight step lists the sessions)."""
    disconnected: str = "skip"
    """A user whose session is disconnected (they closed their RDP client without logging off):
    ``skip`` leaves them *waiting* (never done) for a later run; ``run`` starts CPUU in that
    session all the same. Skip by default: nobody sees that desktop, so CPUU closes an Outlook
    its user left open unseen and any prompt (a target password, CPUU's own questions) waits
    for nobody until the run's deadline kills it (docs/migration field notes 2.1 and 2.11:
    user-context runs need a live session, CPUU stops Outlook, a switch "cannot be fully
    silent"); and Windows does not document that an interactive task starts in a disconnected
    session at all."""
    attached: bool = False
    """True: a fork holds the host's connection while CPUU runs (one ``Run`` pipeline). False
    (detached): the run step starts CPUU and releases the host; the runner settles it later
    (``docs/playbooks.md``). ``users: each`` always runs attached."""
    expected_seconds: int | None = None
    """How long CPUU usually runs on this fleet: a detached host is first asked this long after
    its start. None: learned from the hosts that ended (polls back off until one has)."""
    per_host: int = DEFAULT_PER_HOST
    """With ``users: each``: at most this many users' CPUU run at once on one host (each its
    own task, started with ``run-task -Action Start`` and asked with ``Status`` on the visit's
    one session; the next user is started when one ends). See :data:`DEFAULT_PER_HOST`."""

    @property
    def command(self) -> str:
        return self.batch_file or self.mode.batch_file


@dataclass(frozen=True)
class StepSpec:
    """One step of a play's pipeline; only ``run`` carries options."""

    name: str
    run: RunOptions | None = None
    line: int | None = None


@dataclass(frozen=True)
class Play:
    """One play: which hosts, in which batches, how many at once, and which steps."""

    name: str
    hosts: str
    steps: tuple[StepSpec, ...]
    serial: tuple[int | str, ...] = ()
    """Ansible's serial, normalised to a tuple of ints and ``"N%"`` strings; empty = one batch."""
    max_fail_percentage: float | None = None
    """Per batch: failed hosts over the batch's *reached* hosts must exceed it to stop the play
    (unreachable hosts are counted apart, by ``max_unreachable_percentage``)."""
    max_unreachable_percentage: float = DEFAULT_MAX_UNREACHABLE_PERCENTAGE
    """Per play, cumulative: the play's unreachable hosts so far over all its hosts must exceed it
    to stop the play (see :data:`DEFAULT_MAX_UNREACHABLE_PERCENTAGE`)."""
    forks: int = DEFAULT_FORKS
    vars: dict[str, Any] = field(default_factory=dict)
    retries: int = DEFAULT_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    payload: Path | None = None
    templates: Path | None = None
    wave_groups: str = DEFAULT_WAVE_GROUPS
    limits: Limits = DEFAULT_LIMITS
    """What a workstation may send (``limits:``; see :mod:`cpuu_fleet.limits`)."""
    source: Path | None = None
    """The playbook file, so later errors (a missing payload folder) can still name it."""
    line: int | None = None
    key_lines: dict[str, int] = field(default_factory=dict)

    def step(self, name: str) -> StepSpec | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def run_options(self) -> RunOptions | None:
        spec = self.step("run")
        return spec.run if spec else None

    def error(self, message: str, key: str | None = None) -> InputError:
        """An InputError pointing at this play (or one of its keys) in its file."""
        line = self.key_lines.get(key, self.line) if key else self.line
        return InputError(f"play {self.name!r}: {message}", where=self.source, line=line)

    def require_payload(self) -> Path:
        """The payload folder, or an error naming the playbook line (for plays that push)."""
        if self.payload is None:
            raise self.error("the 'push' step needs 'payload' (the vendor's CPUU folder)")
        if not self.payload.is_dir():
            raise self.error(f"payload folder not found: {self.payload}", key="payload")
        return self.payload

    def wave_of(self, groups: Sequence[str] | set[str] | frozenset[str]) -> str:
        """The host's wave: its first group matching ``wave_groups``, else the play's pattern.

        Assumption: a host belongs to one wave; if an inventory puts it in several, the first in
        the inventory's order (sorted, for an unordered set) wins.
        """
        ordered = sorted(groups) if isinstance(groups, (set, frozenset)) else list(groups)
        for group in ordered:
            if fnmatch.fnmatchcase(group, self.wave_groups):
                return group
        return self.hosts


@dataclass(frozen=True)
class Playbook:
    path: Path
    plays: tuple[Play, ...]

    @property
    def name(self) -> str:
        return self.path.name


# ------------------------------------------------------------------------------ serial arithmetic


def batch_size(value: int | str, total: int) -> int:
    """One ``serial`` item as a host count, exactly like Ansible's ``pct_to_int``.

    A percentage is of *all* the play's hosts (not of those left), truncated, and at least 1;
    an int is taken as is (0 or less means "everything left", as in Ansible).
    """
    if isinstance(value, str) and value.endswith("%"):
        return int(float(value[:-1]) / 100.0 * total) or 1
    return int(value)


def serial_batches(hosts: Sequence[Any], serial: Sequence[int | str]) -> list[list[Any]]:
    """Split hosts into batches the way Ansible does: the last serial value repeats.

    20 hosts with ``"30%"`` → 6, 6, 6, 2; with ``[1, 5, "20%"]`` → 1, 5, 4, 4, 4, 2.
    """
    remaining = list(hosts)
    total = len(remaining)
    plan = list(serial) or [0]
    batches: list[list[Any]] = []
    index = 0
    while remaining:
        size = batch_size(plan[index], total)
        if size <= 0:
            batches.append(remaining)
            break
        batches.append(remaining[:size])
        remaining = remaining[size:]
        index = min(index + 1, len(plan) - 1)
    return batches


def max_fail_exceeded(failed: int, batch: int, max_fail_percentage: float | None) -> bool:
    """Ansible's rule: the batch's failure share must *exceed* the percentage to stop the play.

    Without a percentage, only a batch where every host failed stops (Ansible's default too).
    Integer cross-multiplication avoids float surprises at the boundary (2 of 10 vs 20%).
    The runner passes the batch's reached hosts as ``batch`` (unreachable ones are judged by
    :func:`max_unreachable_exceeded`); a batch nobody was reached in has no failure share.
    """
    if batch <= 0:
        return False
    if max_fail_percentage is None:
        return failed == batch
    return failed * 100 > max_fail_percentage * batch


def max_unreachable_exceeded(unreachable: int, play_hosts: int, percentage: float) -> bool:
    """The play's unreachable hosts so far must *exceed* ``percentage`` of all its hosts.

    Why of all the play's hosts, not of one batch (Ansible counts unreachable hosts in
    ``max_fail_percentage``, per batch): a canary or a 10 % batch is often one host, and one
    laptop that is off would be 100 % of it. Offline machines are a property of the fleet, not of
    the change, so they are judged over the play: with 25 % and 10 hosts the third unreachable
    host stops the play, with 1000 hosts the 251st.
    """
    if play_hosts <= 0:
        return False
    return unreachable * 100 > percentage * play_hosts


def parse_serial_option(text: str) -> tuple[int | str, ...]:
    """``--serial 1,10%,50%``: the playbook's ``serial`` grammar, comma-separated."""
    items = [item.strip() for item in text.split(",")]
    parsed = [_parse_serial_item(item) for item in items]
    if not items or any(item is None for item in parsed):
        raise InputError(
            f"{text!r} is not a list of host counts (e.g. 5) or percentages (e.g. 30%)",
            where="--serial",
        )
    return tuple(item for item in parsed if item is not None)


def parse_percentage_option(text: str, option: str) -> float:
    """``--max-fail-percentage 20`` (or ``20%``): a number from 0 to 100, as in a playbook."""
    value: Any = text.strip()
    if not value.endswith("%"):
        try:
            value = float(value)
        except ValueError:
            value = None
    number = _percentage(value)
    if number is None:
        raise InputError(f"{text!r} is not a number from 0 to 100", where=option)
    return number


# ------------------------------------------------------------------------------ YAML with lines


def _load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("playbook not found", where=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read playbook: {exc}", where=path) from None
    return parse_yaml(text, path)  # the one loader: line numbers, duplicates, alias bombs


# ------------------------------------------------------------------------------ validation


class _Checker:
    """Validation helpers that know the file and turn problems into located InputErrors."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, message: str, line: int | None) -> InputError:
        return InputError(message, where=self.path, line=line)

    def unknown_keys(self, mapping: LineDict, allowed: Sequence[str], context: str) -> None:
        for key in mapping:
            if key in allowed:
                continue
            line = mapping.key_lines.get(key, mapping.line)
            hint = _ANSIBLE_HINTS.get(str(key))
            if hint is None:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            raise self.fail(f"{context}: unknown key {key!r} ({hint})", line)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_playbook(path: str | Path) -> Playbook:
    """Read and validate a playbook; every problem is an InputError naming file, line and key."""
    path = Path(path)
    data = _load_yaml(path)
    check = _Checker(path)
    if not isinstance(data, list):
        raise check.fail(
            "a playbook is a YAML list of plays (each starting with '- name:')",
            getattr(data, "line", 1),
        )
    if not data:
        raise check.fail("the playbook has no plays", 1)
    plays = []
    for index, raw in enumerate(data, start=1):
        line = data.item_lines[index - 1] if isinstance(data, LineList) else None
        plays.append(_parse_play(check, raw, index, line))
    seen: dict[str, Play] = {}
    for play in plays:
        if play.name in seen:
            raise check.fail(
                f"two plays are named {play.name!r} (first on line {seen[play.name].line}):"
                " play names must differ",
                play.line,
            )
        seen[play.name] = play
    return Playbook(path=path, plays=tuple(plays))


def _parse_play(check: _Checker, raw: Any, index: int, line: int | None) -> Play:
    if not isinstance(raw, LineDict):
        raise check.fail(f"play {index}: expected a mapping with 'hosts' and 'steps'", line)
    early_name = raw.get("name")
    early_label = (
        f"play {index} ({early_name!r})" if isinstance(early_name, str) else f"play {index}"
    )
    check.unknown_keys(raw, _PLAY_KEYS, early_label)
    lines: dict[str, int] = {str(k): v for k, v in raw.key_lines.items()}

    def where(key: str) -> int | None:
        return lines.get(key, raw.line)

    hosts = raw.get("hosts")
    if hosts is None:
        raise check.fail(
            f"play {index}: 'hosts' is required (a host pattern, e.g. wave1)", raw.line
        )
    if not isinstance(hosts, str) or not hosts.strip():
        raise check.fail(f"play {index}: 'hosts' must be one host pattern string", where("hosts"))
    name = raw.get("name", hosts)
    if not isinstance(name, str) or not name.strip():
        raise check.fail(f"play {index}: 'name' must be a non-empty string", where("name"))
    label = f"play {index} ({name!r})"

    serial = _parse_serial(check, raw.get("serial"), label, where("serial"))
    max_fail = _parse_percentage(
        check, raw.get("max_fail_percentage"), label, where("max_fail_percentage")
    )
    max_unreachable = _parse_percentage(
        check,
        raw.get("max_unreachable_percentage"),
        label,
        where("max_unreachable_percentage"),
        key="max_unreachable_percentage",
    )
    forks = _int_at_least(check, raw, "forks", DEFAULT_FORKS, 1, label, where("forks"))
    retries = _int_at_least(check, raw, "retries", DEFAULT_RETRIES, 0, label, where("retries"))
    backoff = raw.get("retry_backoff", DEFAULT_RETRY_BACKOFF)
    if not _is_number(backoff) or backoff < 0 or not math.isfinite(backoff):
        raise check.fail(
            f"{label}: 'retry_backoff' must be a number of seconds >= 0", where("retry_backoff")
        )
    variables = raw.get("vars", {})
    if variables is None:
        variables = {}
    if not isinstance(variables, dict) or not all(isinstance(k, str) for k in variables):
        raise check.fail(f"{label}: 'vars' must be a mapping of names to values", where("vars"))
    base = check.path.parent
    payload = _folder(check, raw.get("payload"), base, label, "payload", where("payload"))
    templates = _folder(check, raw.get("templates"), base, label, "templates", where("templates"))
    if templates is None:
        templates = (base / "templates").resolve()
    wave_groups = raw.get("wave_groups", DEFAULT_WAVE_GROUPS)
    if not isinstance(wave_groups, str) or not wave_groups.strip():
        raise check.fail(
            f"{label}: 'wave_groups' must be a glob such as 'wave*'", where("wave_groups")
        )
    if "steps" not in raw:
        raise check.fail(
            f"{label}: 'steps' is required (a list of: {', '.join(STEP_ORDER)})", raw.line
        )
    steps = _parse_steps(check, raw["steps"], label, where("steps"))
    limits = raw.get("limits") or {}
    if not isinstance(limits, dict):
        raise check.fail(f"{label}: 'limits' must be a mapping", where("limits"))
    try:
        parsed_limits = parse_limits(limits)
    except BadLimit as exc:
        line = getattr(limits, "key_lines", {}).get(exc.key) or where("limits")
        raise check.fail(f"{label}: 'limits': {exc}", line) from None
    return Play(
        name=name.strip(),
        hosts=hosts.strip(),
        steps=steps,
        serial=serial,
        max_fail_percentage=max_fail,
        max_unreachable_percentage=(
            DEFAULT_MAX_UNREACHABLE_PERCENTAGE if max_unreachable is None else max_unreachable
        ),
        forks=forks,
        vars=_plain(variables),
        retries=retries,
        retry_backoff=float(backoff),
        payload=payload,
        templates=templates,
        wave_groups=wave_groups.strip(),
        limits=parsed_limits,
        source=check.path,
        line=line if line is not None else raw.line,
        key_lines=lines,
    )


def _plain(value: Any) -> Any:
    """Strip the line-keeping containers so vars are ordinary dicts and lists for jinja2."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _int_at_least(
    check: _Checker,
    raw: dict,
    key: str,
    default: int,
    minimum: int,
    label: str,
    line: int | None,
) -> int:
    value = raw.get(key, default)
    if not _is_int(value) or value < minimum:
        raise check.fail(f"{label}: {key!r} must be a whole number >= {minimum}", line)
    return int(value)


def _parse_serial_item(value: Any) -> int | str | None:
    """One serial value as an int or a normalised "N%"; None when it is not valid."""
    if _is_int(value):
        return int(value) if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                number = float(text[:-1])
            except ValueError:
                return None
            if not (0 < number <= 100):
                return None
            return f"{number:g}%"
        if text.isdigit():
            return int(text)
    return None


def _parse_serial(
    check: _Checker, value: Any, label: str, line: int | None
) -> tuple[int | str, ...]:
    if value is None:
        return ()
    items = list(value) if isinstance(value, list) else [value]
    lines = getattr(value, "item_lines", None)
    result = []
    for position, item in enumerate(items):
        parsed = _parse_serial_item(item)
        if parsed is None:
            item_line = lines[position] if lines else line
            raise check.fail(
                f"{label}: 'serial' value {item!r} is not a host count (e.g. 5) or a percentage"
                ' (e.g. "30%")',
                item_line,
            )
        result.append(parsed)
    return tuple(result)


def _percentage(value: Any) -> float | None:
    """A number, or an ``"N%"`` string, from 0 to 100; None when it is not one."""
    number: float | None = None
    if _is_number(value):
        number = float(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1])
        except ValueError:
            number = None
    if number is None or not (0 <= number <= 100):
        return None
    return number


_PERCENTAGE_MEANING = {
    "max_fail_percentage": "a batch stops the play when its failed share exceeds it",
    "max_unreachable_percentage": "the play stops when its unreachable share exceeds it",
}


def _parse_percentage(
    check: _Checker,
    value: Any,
    label: str,
    line: int | None,
    key: str = "max_fail_percentage",
) -> float | None:
    if value is None:
        return None
    number = _percentage(value)
    if number is None:
        raise check.fail(
            f"{label}: {key!r} must be a number from 0 to 100 ({_PERCENTAGE_MEANING[key]})", line
        )
    return number


def _folder(
    check: _Checker, value: Any, base: Path, label: str, key: str, line: int | None
) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise check.fail(f"{label}: {key!r} must be a folder path (relative to the playbook)", line)
    return (base / value.strip()).resolve()


def _parse_steps(check: _Checker, value: Any, label: str, line: int | None) -> tuple[StepSpec, ...]:
    if not isinstance(value, list) or not value:
        raise check.fail(
            f"{label}: 'steps' must be a non-empty list of: {', '.join(STEP_ORDER)}", line
        )
    lines = getattr(value, "item_lines", [line] * len(value))
    steps: list[StepSpec] = []
    for item, item_line in zip(value, lines, strict=True):
        name, options, options_line = _step_name(check, item, label, item_line)
        if name not in STEP_ORDER:
            close = difflib.get_close_matches(name, STEP_ORDER, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"steps are: {', '.join(STEP_ORDER)}"
            raise check.fail(f"{label}: unknown step {name!r} ({hint})", item_line)
        _check_place(check, steps, name, label, item_line)
        run = None
        if name == "run":
            run = _parse_run(check, options, label, options_line)
            if run.users == "each" and not any(s.name == "preflight" for s in steps):
                raise check.fail(
                    f"{label}: step 'run' with 'users: each' needs the 'preflight' step before it"
                    " (preflight lists the sessions CPUU runs in)",
                    options_line,
                )
        elif options:
            raise check.fail(f"{label}: step {name!r} takes no options", options_line)
        steps.append(StepSpec(name=name, run=run, line=item_line))
    return tuple(steps)


def _check_place(
    check: _Checker, steps: list[StepSpec], name: str, label: str, line: int | None
) -> None:
    """Each step once and in order; ``audit`` anywhere, twice only with ``run`` between."""
    names = [s.name for s in steps]
    if name == AUDIT_STEP:
        if AUDIT_STEP in names and (
            names.count(AUDIT_STEP) > 1 or "run" not in names[names.index(AUDIT_STEP) :]
        ):
            raise check.fail(
                f"{label}: step 'audit' may be listed twice only before and after 'run'", line
            )
        return
    if name in names:
        raise check.fail(f"{label}: step {name!r} is listed twice", line)
    ordered = [n for n in names if n != AUDIT_STEP]
    if ordered and STEP_ORDER.index(name) < STEP_ORDER.index(ordered[-1]):
        shown = " → ".join(n for n in STEP_ORDER if n != AUDIT_STEP)
        raise check.fail(
            f"{label}: step {name!r} must come before {ordered[-1]!r} (the order is {shown};"
            " 'audit' may stand anywhere)",
            line,
        )


def _step_name(
    check: _Checker, item: Any, label: str, line: int | None
) -> tuple[str, Any, int | None]:
    if isinstance(item, str):
        return item.strip(), None, line
    if isinstance(item, LineDict) and len(item) == 1:
        (name,) = item.keys()
        if isinstance(name, str):
            return name.strip(), item[name], item.key_lines.get(name, line)
    raise check.fail(
        f"{label}: a step is a name (e.g. 'push') or one name with options"
        " (e.g. 'run: {mode: update}')",
        line,
    )


def _parse_run(check: _Checker, options: Any, label: str, line: int | None) -> RunOptions:
    if not isinstance(options, LineDict) or "mode" not in options:
        # Assumption (ours): the mode is never implied. A copied playbook must not silently run
        # Update where the operator meant Undo.
        raise check.fail(
            f"{label}: step 'run' needs a mode: write 'run: {{mode: update}}' (update, undo or"
            " cleanup)",
            line,
        )
    check.unknown_keys(options, _RUN_KEYS, f"{label}: step 'run'")

    def where(key: str) -> int | None:
        return options.key_lines.get(key, options.line)

    mode_text = options["mode"]
    if not isinstance(mode_text, str):
        raise check.fail(
            f"{label}: step 'run': 'mode' must be update, undo or cleanup", where("mode")
        )
    try:
        mode = Mode.parse(mode_text)
    except InputError as exc:
        raise check.fail(f"{label}: step 'run': {exc.message}", where("mode")) from None
    when = options.get("when_no_user", "skip")
    if when not in WHEN_NO_USER:
        raise check.fail(
            f"{label}: step 'run': 'when_no_user' must be one of: {', '.join(WHEN_NO_USER)}",
            where("when_no_user"),
        )
    timeout = options.get("timeout", DEFAULT_RUN_TIMEOUT)
    if not _is_int(timeout) or timeout <= 0:
        raise check.fail(
            f"{label}: step 'run': 'timeout' must be a whole number of seconds > 0",
            where("timeout"),
        )
    batch_file = options.get("batch_file")
    if batch_file is not None and (
        not isinstance(batch_file, str)
        or not batch_file.strip()
        or any(c in batch_file for c in '\\/:*?"<>|')
        or batch_file.strip(" .") == ""
    ):
        # It is started from the staging folder: a path would run something we never pushed.
        raise check.fail(
            f"{label}: step 'run': 'batch_file' must be a file name in the staging folder"
            " (no path), e.g. CPUU_Update.bat",
            where("batch_file"),
        )
    users = options.get("users", "one")
    if users not in USERS:
        raise check.fail(
            f"{label}: step 'run': 'users' must be one of: {', '.join(USERS)}", where("users")
        )
    disconnected = options.get("disconnected", "skip")
    if disconnected not in DISCONNECTED:
        raise check.fail(
            f"{label}: step 'run': 'disconnected' must be one of: {', '.join(DISCONNECTED)}",
            where("disconnected"),
        )
    attached = options.get("attached", False)
    if not isinstance(attached, bool):
        raise check.fail(
            f"{label}: step 'run': 'attached' must be true or false", where("attached")
        )
    expected = options.get("expected_seconds")
    if expected is not None and (not _is_int(expected) or expected <= 0):
        raise check.fail(
            f"{label}: step 'run': 'expected_seconds' must be a whole number of seconds > 0",
            where("expected_seconds"),
        )
    per_host = _per_host(check, options, users, label, where("per_host"))
    return RunOptions(
        mode=mode,
        when_no_user=when,
        timeout=int(timeout),
        batch_file=batch_file.strip() if batch_file else None,
        users=users,
        disconnected=disconnected,
        attached=attached,
        expected_seconds=int(expected) if expected is not None else None,
        per_host=per_host,
    )


def _per_host(check: _Checker, options: LineDict, users: str, label: str, line: int | None) -> int:
    """The run's ``per_host``: a whole number >= 1, and only where it means something (one run
    per user); on a ``users: one`` play it would silently do nothing."""
    if "per_host" not in options:
        return DEFAULT_PER_HOST
    value = options["per_host"]
    if not _is_int(value) or value < 1:
        raise check.fail(
            f"{label}: step 'run': 'per_host' must be a whole number >= 1 (users whose CPUU"
            " may run at once on one host)",
            line,
        )
    if users != "each":
        raise check.fail(
            f"{label}: step 'run': 'per_host' caps the runs of 'users: each' (one CPUU run per"
            " user); with 'users: one' a host has one run: add 'users: each' or remove 'per_host'",
            line,
        )
    return int(value)
