"""The lead's view of a report: where each wave (and batch) stands, why, who acts, and whether the
next wave may start; and the terminal summary.

The model is plain functions of the report's frames, so the workbook, the terminal and any other
output (the HTML report) show the same figures:

* :func:`wave_status`: per wave, hosts done / needs action / waiting / not started (the four
  mailbox states of :mod:`cpuu_fleet.vocabulary`, applied to hosts).
* :func:`host_causes`: each host's one cause, with its owner and next step. The owners and steps
  are defined once, next to what they describe: error classes and host states in
  :mod:`cpuu_fleet.vocabulary`, CPUU's profile codes, exit flags and Windows exit codes in
  :mod:`cpuu_fleet.cpuu`.
* :func:`causes`: those causes grouped per wave (and per mailbox batch), each with its count.
* :func:`go_no_go`: the verdict for the next wave, by :data:`GO_RULE`.

Why waves as columns in the terminal: a play has a handful of waves but eleven figures per wave;
eleven columns do not fit an 80-column terminal, a handful of waves do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from rich import box
from rich.table import Table
from rich.text import Text

from cpuu_fleet import vocabulary as V
from cpuu_fleet.cpuu import FLAG_REMEDIES, ExitFlags, ExitStatus, Outcome, code_info, exit_cause
from cpuu_fleet.redact import printable
from cpuu_fleet.report import states
from cpuu_fleet.report.frames import BAD_OUTCOMES, TOTAL, ReportFrames

if TYPE_CHECKING:
    from cpuu_fleet.report import ReportResult
    from cpuu_fleet.report.mailboxes import MailboxFrames

#: The go/no-go threshold: the share of a wave's hosts that may need the desktop team.
GO_MAX_DESKTOP_SHARE = 0.05
GO_RULE = (
    "Next wave GO when the last wave that ran has no failure of unknown cause and at most"
    f" {GO_MAX_DESKTOP_SHARE:.0%} of its hosts need the desktop team; causes owned by the Exchange"
    " team or the users, and hosts still waiting, do not hold the next wave back."
)
"""Why this rule: failures the desktop team owns (WinRM, credentials, CPUU crashes) say the rollout
itself is broken and would repeat in the next wave; an unswitched mailbox or a user who is away
does not. An unknown failure is a NO-GO whatever its count: nobody can tell whether it repeats."""

STATUS_ORDER: tuple[str, ...] = V.USER_STATES
"""needs action / not started / waiting / done: worst first (the vocabulary's order), for causes."""
STATUS_COLUMNS: tuple[str, ...] = (
    V.USER_DONE, V.USER_NEEDS_ACTION, V.USER_WAITING, V.USER_NOT_STARTED,
)  # fmt: skip
"""The order a lead reads a wave's hosts in: the good news first."""
CAUSE_COLUMNS = ("scope", "group", "status", "cause", "count", "owner", "next_step", "known")
NOT_IN_A_WAVE = "device in no wave"


def plain(text: object) -> Text:
    """Text from the journal as it is: no rich markup, and no control character reaches the
    operator's terminal (shown as its escape instead)."""
    return Text(printable(str(text)))


def summary_table(result: ReportResult) -> Table:
    """Targeted hosts, each state, success %, profiles switched and failed: per wave and in total."""
    ids = result.run_ids
    runs = ", ".join(ids) if len(ids) <= 2 else f"{len(ids)} runs, {ids[0]} … {ids[-1]}"
    return frame_table(result.summary, title=plain(f"Report: {runs}"))


def frame_table(summary: pd.DataFrame, *, title: Text | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAVY)
    table.add_column("")
    last = len(summary) - 1  # the total is the last row (a wave may be called "Total" too)
    for position, wave in enumerate(summary["wave"]):
        table.add_column(plain(wave), justify="right", style="bold" if position == last else None)

    def counts(key: str) -> list[str]:
        return [_count(int(value)) for value in summary[key]]

    table.add_row("targeted", *counts("targeted"), end_section=True)
    for label in states.STATE_LABELS:
        style = states.RICH_STYLES[label]
        table.add_row(f"[{style}]{label}[/]", *counts(label))
    table.add_row(
        "success", *(_percent(value) for value in summary["success_pct"]), end_section=True
    )
    table.add_row("profiles switched", *counts("profiles_switched"))
    table.add_row("profiles failed", *counts("profiles_failed"))
    return table


def causes_table(result: ReportResult) -> Table | None:
    """The go/no-go line as the title, then each wave's causes: hosts, status, cause, owner
    (the next steps are in the workbook: they do not fit a terminal). None without frames."""
    frames = result.frames
    if frames is None:
        return None
    _, headline = go_no_go(frames)
    table = Table(title=plain(headline), title_justify="left", box=box.SIMPLE_HEAVY)
    for header, justify in (("wave", "left"), ("hosts", "right"), ("status", "left")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    table.add_column("cause")
    table.add_column("owner")
    for row in causes(frames).to_dict("records"):
        table.add_row(
            plain(row["group"]),
            f"{int(row['count']):,}",
            row["status"],
            plain(row["cause"]),
            row["owner"],
        )
    return table


def _percent(value: float) -> str:
    """A success rate, or a dash for a wave no host of which was tried (never "0.0%")."""
    return "—" if value != value else f"{value:.1%}"  # NaN is the only value unequal to itself


def _count(value: int) -> str:
    return f"{value:,}" if value else "·"


# ------------------------------------------------------------------------------ the lead's model


@dataclass(frozen=True)
class Cause:
    """Why a host is not done: a name to group by, who acts, what they do, and whether it is
    understood (an unknown failure holds the next wave back)."""

    name: str
    remedy: V.Remedy
    known: bool = True


def wave_status(frames: ReportFrames) -> pd.DataFrame:
    """Per wave, then ``Total``: targeted, and hosts done / needs action / waiting / not started."""
    keys = frames.hosts["state"].astype(str).map(lambda label: V.BY_LABEL[label].key)
    status = keys.map(V.USER_STATE_OF_HOST)
    counts = pd.crosstab(frames.hosts["wave"], status)
    counts = counts.reindex(index=frames.waves, columns=list(STATUS_COLUMNS), fill_value=0)
    table = counts.rename_axis(index="wave", columns=None)
    table.insert(0, "targeted", table.sum(axis=1))
    total = table.sum(axis=0).to_frame(TOTAL).T  # appended: a wave may be called "Total"
    return pd.concat([table, total]).astype(int).rename_axis("wave").reset_index()


def host_causes(frames: ReportFrames) -> pd.DataFrame:
    """One row per host of ``frames.hosts`` (same index): ``status``, ``cause``, ``owner``,
    ``next_step`` and ``known``; done hosts have no cause (empty)."""
    hosts = frames.hosts
    profiles = frames.profiles
    bad = profiles[profiles["outcome"].isin(BAD_OUTCOMES)].drop_duplicates("host")
    first_bad = hosts["host"].map(bad.set_index("host")["current_code"])
    keys = pd.Series(
        list(
            zip(
                hosts["state"].astype(str),
                hosts["error_class"].astype(object).where(hosts["error_class"].notna(), None),
                hosts["exit_code"].astype(object).where(hosts["exit_code"].notna(), None),
                hosts["killed"].astype(bool),
                first_bad.astype(object).where(first_bad.notna(), None),
                strict=True,
            )
        ),
        index=hosts.index,
        dtype=object,
    )
    found = {key: _cause(*key) for key in keys.unique()}  # a handful of distinct keys
    cause = keys.map(found)
    state_keys = hosts["state"].astype(str).map(lambda label: V.BY_LABEL[label].key)
    return pd.DataFrame(
        {
            "status": state_keys.map(V.USER_STATE_OF_HOST),
            "cause": cause.map(lambda c: c.name if c else ""),
            "owner": cause.map(lambda c: c.remedy.owner if c else ""),
            "next_step": cause.map(lambda c: c.remedy.next_step if c else ""),
            "known": cause.map(lambda c: c.known if c else True),
        },
        index=hosts.index,
    )


def _cause(
    label: str, error_class: str | None, exit_code: object, killed: bool, profile_code: object
) -> Cause | None:
    """The one cause of a host not done, from what the journal knows (None when it is done)."""
    key = V.BY_LABEL[label].key
    if key == V.SUCCEEDED:
        return None
    if key in V.STATE_REMEDIES:
        return Cause(label, V.STATE_REMEDIES[key])
    code = None if exit_code is None else int(exit_code)  # type: ignore[call-overload]
    if key == V.NOT_SWITCHED:
        flag = ExitFlags.NO_SWITCH_MSG
        return Cause(f"CPUU exit: {flag.name}", FLAG_REMEDIES[flag])
    if key == V.PARTIAL or error_class in (V.ErrorClass.CPUU.value, None):
        found = _cpuu_cause(code, killed, profile_code)
        if found is not None:
            return found
    known = {cls.value: cls for cls in V.ErrorClass}.get(error_class or "")
    if known is None:
        return Cause(f"unknown ({error_class or 'no error class'})", V.UNKNOWN_REMEDY, known=False)
    understood = error_class not in V.UNKNOWN_ERROR_CLASSES  # a bug is no understood cause
    return Cause(f"error: {error_class}", V.ERROR_CLASS_REMEDIES[known], understood)


def _cpuu_cause(code: int | None, killed: bool, profile_code: object) -> Cause | None:
    """What CPUU itself said: a kill or a Windows code first (CPUU never finished), then the
    first failing profile's code (it names the profile's problem), then the exit flags."""
    exit_named = exit_cause(code, killed)
    windows = code is not None and ExitStatus(code).windows is not None
    if exit_named is not None and (killed or windows):
        prefix = "" if killed else "Windows: "
        return Cause(prefix + exit_named.name, exit_named.remedy, exit_named.known)
    if profile_code is not None:
        info = code_info(int(profile_code))  # type: ignore[call-overload]
        return Cause(
            f"profile code {info.code} {info.name}", info.remedy, info.outcome != Outcome.UNKNOWN
        )
    if exit_named is not None:
        return Cause(f"CPUU exit: {exit_named.name}", exit_named.remedy, exit_named.known)
    return None


def causes(frames: ReportFrames, mailboxes: MailboxFrames | None = None) -> pd.DataFrame:
    """The causes grouped, worst status first, the most frequent first within it.

    One row per (scope, group, cause): ``scope`` is ``wave`` (``group`` a wave, ``count`` its
    hosts) or, given a batch file, ``batch`` (``group`` a batch, ``count`` its mailboxes, each
    counted once under its worst device's cause). Columns: :data:`CAUSE_COLUMNS`."""
    per_host = host_causes(frames)
    hosts = per_host.assign(scope="wave", group=frames.hosts["wave"])
    parts = [_grouped(hosts[hosts["cause"] != ""], frames.waves)]
    if mailboxes is not None:
        parts.append(_batch_causes(mailboxes.mailboxes, frames, per_host))
    return pd.concat(parts, ignore_index=True)[list(CAUSE_COLUMNS)]


def _batch_causes(
    mailboxes: pd.DataFrame, frames: ReportFrames, per_host: pd.DataFrame
) -> pd.DataFrame:
    """Each mailbox not done, under its worst device's cause."""
    by_host = per_host.set_index(frames.hosts["host"])
    rows = mailboxes[mailboxes["status"] != V.USER_DONE]
    device = rows["worst_device"].astype(object)
    targeted = device.isin(by_host.index) & rows["worst_state"].isin(states.STATE_LABELS)
    picked = by_host.reindex(device.where(targeted)).set_axis(rows.index)
    no_device = device.isna()
    for mask, name, remedy in (
        (no_device, V.USER_NO_DEVICE, V.NO_DEVICE_REMEDY),
        (~targeted & ~no_device, NOT_IN_A_WAVE, V.NOT_IN_A_WAVE_REMEDY),
    ):
        picked.loc[mask, ["cause", "owner", "next_step", "known"]] = [
            name,
            remedy.owner,
            remedy.next_step,
            True,
        ]
    picked["status"] = rows["status"]
    picked = picked.assign(scope="batch", group=rows["batch"])
    return _grouped(picked, list(dict.fromkeys(mailboxes["batch"])))


def _grouped(rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Count rows per (scope, group, status, cause, owner, next step, known), in report order."""
    keys = ["scope", "group", "status", "cause", "owner", "next_step", "known"]
    if rows.empty:
        return pd.DataFrame(columns=list(CAUSE_COLUMNS))
    counted = rows.groupby(keys, sort=False, dropna=False).size().rename("count").reset_index()
    counted["_group"] = counted["group"].map({g: i for i, g in enumerate(order)})
    counted["_status"] = counted["status"].map({s: i for i, s in enumerate(STATUS_ORDER)})
    counted = counted.sort_values(
        ["_group", "_status", "count", "cause"], ascending=[True, True, False, True], kind="stable"
    )
    return counted.drop(columns=["_group", "_status"]).reset_index(drop=True)


@dataclass(frozen=True)
class Verdict:
    """The go/no-go of one wave (``go`` None: nothing of it ran yet, nothing to judge)."""

    wave: str
    go: bool | None
    reason: str

    @property
    def word(self) -> str:
        return "—" if self.go is None else ("GO" if self.go else "NO-GO")


def go_no_go(frames: ReportFrames) -> tuple[list[Verdict], str]:
    """Each wave's verdict by :data:`GO_RULE`, and the headline for the next wave (judged on the
    last wave any host of which was tried)."""
    per_host = host_causes(frames)
    tried = ~frames.hosts["state"].astype(str).isin([V.label(k) for k in V.UNTRIED_STATES])
    verdicts = []
    for wave in frames.waves:
        in_wave = frames.hosts["wave"] == wave
        verdicts.append(
            _verdict(wave, per_host[in_wave], int(in_wave.sum()), bool(tried[in_wave].any()))
        )
    judged = [v for v in verdicts if v.go is not None]
    if not judged:
        return verdicts, "Next wave: no verdict yet (no host of any wave was tried)."
    last = judged[-1]
    return verdicts, f"Next wave: {last.word} (judged on {last.wave}: {last.reason})"


def _verdict(wave: str, rows: pd.DataFrame, targeted: int, tried: bool) -> Verdict:
    if not tried:
        return Verdict(wave, None, "not started")
    unknown = int((~rows["known"].astype(bool)).sum())
    if unknown:
        return Verdict(wave, False, f"{unknown} host(s) failed for an unknown cause")
    desktop = int(
        ((rows["status"] == V.USER_NEEDS_ACTION) & (rows["owner"] == V.OWNER_DESKTOP)).sum()
    )
    share = desktop / targeted if targeted else 0.0
    words = f"{desktop} of {targeted} host(s) ({share:.0%}) need the desktop team"
    if share > GO_MAX_DESKTOP_SHARE:
        return Verdict(wave, False, f"{words}, above {GO_MAX_DESKTOP_SHARE:.0%}")
    return Verdict(wave, True, words)
