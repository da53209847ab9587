"""The journal as DataFrames: hosts, profiles, attempts, per-wave summary, codes, action list.

Why this shape: every output (workbook, CSVs, terminal table) is a view of the same frames, so
they can never disagree. The journal is read with one query per table (``pandas.read_sql``), and
everything after that is column arithmetic: per-row Python loops do not survive 100,000 hosts.
Anything that depends on a code (its name, outcome, hint, decoded flags) is computed once per
*distinct* code and mapped onto the rows.

Rules the report applies (the vendor is silent on them; they are ours):

* A host's row is its **latest tried** row across the selected runs: a retry that succeeded
  replaces the failure before it. A later run that never reached the host ("not run", "queued")
  does not hide what an earlier run found out.
* Its **attempts** add up over the selected runs (a row with no recorded attempt count that was
  tried counts as one).
* A **check-mode** run (``play --check``) changed nothing: its rows count as *not run* (with what
  it saw as the message), so a dry run after a real one never turns a failure into a success.
* Transient states left by an unfinished run are settled by the vocabulary
  (:func:`cpuu_fleet.vocabulary.settle`): ``queued`` is reported as *not run*; ``running`` (the
  controller stopped mid-host) as *interrupted*, error class ``interrupted``: ``--resume`` asks
  the host. An unknown state is reported as *failed* (error class ``unknown-state``), so a person
  looks at it.
* The **action list** is exactly the hosts whose state needs attention in the vocabulary (the
  same hosts make ``play`` exit 3 and ``status`` list them); its reason and hint say why.
* A profile counts as **switched** when its code's outcome is ``ok`` (where the mode wanted it)
  and as **failed** when it is ``failed``, ``needs-action`` or an unknown code.
* **Success %** is succeeded hosts / targeted hosts (MECM's NumSuccess / NumTotal).
* Times are UTC, without a zone in the frames (Excel has none); CSVs write them as ISO-8601 ``Z``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cpuu_fleet import journal as J
from cpuu_fleet import vocabulary as V
from cpuu_fleet.cpuu import Outcome, code_info
from cpuu_fleet.journal import Journal
from cpuu_fleet.redact import REDACTOR, Redactor
from cpuu_fleet.report import collected, hints, preflight, states
from cpuu_fleet.report.reader import JournalReader
from cpuu_fleet.report.selection import wave_matcher

NO_WAVE = "(no wave)"
TOTAL = "Total"
#: The columns of :attr:`ReportFrames.rows`.
HISTORY_COLUMNS = (
    "run_id", "run_rank", "seq", "host", "wave", "state", "user", "error_class", "started_at",
    "ended_at",
)  # fmt: skip
BAD_OUTCOMES = (Outcome.FAILED.value, Outcome.NEEDS_ACTION.value, Outcome.UNKNOWN.value)


@dataclass
class ReportFrames:
    """Everything a report shows, as DataFrames (see the module docstring for the rules)."""

    runs: pd.DataFrame
    hosts: pd.DataFrame
    profiles: pd.DataFrame
    attempts: pd.DataFrame
    summary: pd.DataFrame
    codes: pd.DataFrame
    actions: pd.DataFrame
    waves: list[str]
    journal_path: str
    notes: list[str] = field(default_factory=list)
    #: The folder collected files are recorded relative to (a PostgreSQL journal has none).
    reports_dir: Path | None = None
    #: Every host row of the selected runs and waves (check-mode rows settled as not run), in
    #: run order: the history :mod:`.progress` replays.
    rows: pd.DataFrame | None = field(default=None, repr=False)


def _utc(series: pd.Series) -> pd.Series:
    """ISO-8601 text from the journal to naive UTC datetimes (NaT where missing or unreadable).

    Always in microseconds: pandas infers the unit from the text (seconds when no value has a
    fraction), and columns of two units cannot fill one another."""
    parsed = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
    return parsed.dt.tz_convert(None).astype("datetime64[us]")


def _map_distinct(series: pd.Series, function: Callable[[Any], Any]) -> pd.Series:
    """Apply ``function`` once per distinct value (codes repeat: 100,000 rows, 20 values)."""
    distinct = series.dropna().unique()
    return series.map({value: function(value) for value in distinct}).astype(object)


def _scrub(series: pd.Series, redactor: Redactor) -> pd.Series:
    """Mask registered secrets in a text column (once per distinct text)."""
    if series.isna().all():
        return series
    return _map_distinct(series.astype(object), redactor.scrub)


def _code_table(codes: pd.Series) -> pd.DataFrame:
    """name / meaning / outcome / hint for each distinct per-profile code, from cpuu.code_info."""
    rows = []
    for code in sorted({int(c) for c in codes.dropna().unique()}):
        info = code_info(code)
        rows.append((code, info.name, info.meaning, info.outcome.value, info.hint))
    return pd.DataFrame(rows, columns=["code", "name", "meaning", "outcome", "hint"]).set_index(
        "code"
    )


def load_frames(
    journal: Journal,
    run_ids: Sequence[str],
    *,
    wave: str | None = None,
    redactor: Redactor = REDACTOR,
) -> ReportFrames:
    """Read the selected runs from the journal and shape every frame the report needs.

    Free text is scrubbed again on the way out (the journal scrubbed it on the way in): a secret
    revealed after an error was recorded must still not reach a report.
    """
    run_ids = list(run_ids)
    with JournalReader(journal) as reader:
        return _shape(reader, run_ids, wave, redactor)


def _shape(
    reader: JournalReader, run_ids: list[str], wave: str | None, redactor: Redactor
) -> ReportFrames:
    journal = reader.journal
    runs = reader.table("runs", "*", run_ids)
    runs["stop_reason"] = _scrub(runs["stop_reason"], redactor)
    runs["started_at"] = _utc(runs["started_at"])
    runs["ended_at"] = _utc(runs["ended_at"])
    runs = runs.sort_values(["started_at", "run_id"], kind="stable").reset_index(drop=True)
    run_rank = {run_id: rank for rank, run_id in enumerate(runs["run_id"])}

    every_row = reader.table("hosts", "rowid AS seq, *", run_ids)
    every_row["error_message"] = _scrub(every_row["error_message"], redactor)
    dry_runs = runs.loc[runs["check_mode"].fillna(0).astype(bool), "run_id"]
    dry = every_row["run_id"].isin(dry_runs)
    every_row.loc[dry, "state"] = J.NOT_RUN
    every_row.loc[dry, "attempts"] = 0
    every_row["wave"] = every_row["wave"].fillna(NO_WAVE).astype(str)
    every_row["run_rank"] = every_row["run_id"].map(run_rank)
    every_row = every_row.sort_values(["run_rank", "seq"], kind="stable")
    waves = list(dict.fromkeys(every_row["wave"]))  # order of first appearance
    notes: list[str] = []
    if wave is not None:
        waves = wave_matcher(wave).select(waves)
        every_row = every_row[every_row["wave"].isin(waves)]

    hosts = _latest_per_host(every_row, waves)
    files = reader.table("files", "id, run_id, host, kind, local_path", run_ids)
    hosts = collected.add_file_columns(hosts, files)
    profiles = _profiles(reader, run_ids, hosts, files, notes)
    hosts = _add_profile_counts(hosts, profiles)
    attempts = _attempts(reader, run_ids, every_row)
    for column in ("error_message", "details_json"):
        attempts[column] = _scrub(attempts[column], redactor)
    hosts = preflight.add_preflight_columns(hosts, attempts)
    summary = _summary(hosts, profiles, waves)
    codes = _codes(profiles, waves)
    actions = _actions(hosts, profiles, waves)
    return ReportFrames(
        runs=runs,
        hosts=hosts,
        profiles=profiles,
        attempts=attempts,
        summary=summary,
        codes=codes,
        actions=actions,
        waves=waves,
        journal_path=str(journal.path),
        notes=notes,
        reports_dir=journal.reports_dir,
        rows=every_row[list(HISTORY_COLUMNS)],
    )


def _latest_per_host(every_row: pd.DataFrame, waves: list[str]) -> pd.DataFrame:
    """One row per host: its latest tried row, with attempts summed over the selected runs.

    Hosts keep the order in which the runs first targeted them, wave by wave.
    """
    raw_state = every_row["state"]
    tried = ~raw_state.isin(states.UNTRIED_KEYS)
    recorded = every_row["attempts"].fillna(0).astype(int)
    every_row = every_row.assign(
        _tried=tried, _tries=np.where(recorded > 0, recorded, tried.astype(int))
    )
    every_row["_order"] = np.arange(len(every_row))
    totals = every_row.groupby("host", sort=False).agg(
        attempts_total=("_tries", "sum"), runs=("run_id", "nunique"), first_seen=("_order", "min")
    )
    ordered = every_row.sort_values(["host", "_tried", "run_rank", "seq"], kind="stable")
    hosts = ordered.drop_duplicates("host", keep="last").copy()
    hosts = hosts.join(totals, on="host")
    hosts["attempts"] = hosts.pop("attempts_total").astype(int)

    state = hosts["state"].replace(states.TRANSIENT_TO_FINAL)
    interrupted = hosts["state"] == J.RUNNING
    unknown = ~state.isin(states.STATE_KEYS)
    hosts.loc[interrupted & hosts["error_class"].isna(), "error_class"] = "interrupted"
    hosts.loc[unknown, "error_class"] = hosts.loc[unknown, "error_class"].fillna("unknown-state")
    hosts.loc[unknown, "error_message"] = (
        "journal state " + hosts.loc[unknown, "state"].astype(str) + " is not a known state"
    )
    state = state.where(~unknown, J.FAILED)
    hosts["state"] = pd.Categorical(state.map(states.LABELS), categories=states.STATE_LABELS)

    hosts["killed"] = hosts["killed"].fillna(0).astype(bool)
    hosts["exit_code"] = hosts["exit_code"].astype("Int64")
    hosts["batch"] = hosts["batch"].astype("Int64")
    flag_keys = pd.Series(
        list(zip(hosts["exit_code"].astype(object), hosts["killed"], strict=True)),
        index=hosts.index,
    )
    hosts["exit_flags"] = _map_distinct(
        flag_keys, lambda key: hints.exit_flag_names(None if pd.isna(key[0]) else key[0], key[1])
    )
    hosts["started_at"] = _utc(hosts["started_at"])
    hosts["ended_at"] = _utc(hosts["ended_at"])
    hosts["duration_s"] = (hosts["ended_at"] - hosts["started_at"]).dt.total_seconds()
    hosts["wave_rank"] = hosts["wave"].map({wave: rank for rank, wave in enumerate(waves)})
    hosts = hosts.sort_values(["wave_rank", "first_seen"], kind="stable").reset_index(drop=True)
    return hosts.drop(
        columns=["_tried", "_tries", "_order", "first_seen", "groups_json", "task_name"]
    )


def _profiles(
    reader: JournalReader,
    run_ids: Sequence[str],
    hosts: pd.DataFrame,
    files: pd.DataFrame,
    notes: list[str],
) -> pd.DataFrame:
    """One row per host x user x profile, from the run each host's reported row comes from."""
    every_profile = reader.table("profiles", ", ".join(collected.PROFILE_COLUMNS), run_ids)
    recovered, recovery_notes = collected.recover_profiles(
        reader.journal.reports_dir, files, hosts, every_profile
    )
    notes.extend(recovery_notes)
    if len(recovered):
        every_profile = pd.concat([every_profile, recovered], ignore_index=True)
    hosts_order = hosts[["run_id", "host", "wave", "wave_rank"]].assign(host_rank=hosts.index)
    profiles = every_profile.merge(hosts_order, on=["run_id", "host"])
    # Two collects of the same host in one run: the later result file wins.
    profiles["user"] = profiles["user"].fillna("")
    profiles = profiles.sort_values("id").drop_duplicates(["host", "user", "profile"], keep="last")
    profiles["previous_code"] = profiles["previous_code"].astype("Int64")
    table = _code_table(pd.concat([profiles["current_code"], profiles["previous_code"]]))
    current = table.reindex(profiles["current_code"].to_numpy())
    profiles["current_name"] = current["name"].to_numpy()
    profiles["meaning"] = current["meaning"].to_numpy()
    profiles["outcome"] = current["outcome"].to_numpy()
    profiles["hint"] = current["hint"].to_numpy()
    profiles["previous_name"] = profiles["previous_code"].map(table["name"])
    profiles = profiles.sort_values(["host_rank", "id"], kind="stable")
    return profiles.drop(columns=["host_rank"]).reset_index(drop=True)


def _add_profile_counts(hosts: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    ok = profiles["outcome"] == Outcome.OK.value
    bad = profiles["outcome"].isin(BAD_OUTCOMES)
    counts = (
        pd.DataFrame({"host": profiles["host"], "profiles_ok": ok, "profiles_failed": bad})
        .groupby("host", sort=False)
        .sum()
    )
    hosts = hosts.join(counts, on="host")
    hosts["profiles_ok"] = hosts["profiles_ok"].fillna(0).astype(int)
    hosts["profiles_failed"] = hosts["profiles_failed"].fillna(0).astype(int)
    return hosts


def _attempts(
    reader: JournalReader, run_ids: Sequence[str], every_row: pd.DataFrame
) -> pd.DataFrame:
    """Every step attempt of the selected runs and waves: the audit trail."""
    columns = (
        "id, run_id, host, step, attempt, status, error_class, error_message, started_at,"
        " ended_at, duration_s, details_json"
    )
    attempts = reader.table("attempts", columns, run_ids)
    attempts = attempts.merge(every_row[["run_id", "host", "wave"]], on=["run_id", "host"])
    attempts["started_at"] = _utc(attempts["started_at"])
    attempts["ended_at"] = _utc(attempts["ended_at"])
    return attempts.sort_values("id").reset_index(drop=True)


def _summary(hosts: pd.DataFrame, profiles: pd.DataFrame, waves: list[str]) -> pd.DataFrame:
    """Per wave and in total: targeted, each state's count, success %, profiles switched/failed."""
    counts = pd.crosstab(hosts["wave"], hosts["state"], dropna=False)
    counts = counts.reindex(index=waves, columns=list(states.STATE_LABELS), fill_value=0)
    by_wave = (
        pd.DataFrame(
            {
                "wave": profiles["wave"],
                "profiles_switched": profiles["outcome"] == Outcome.OK.value,
                "profiles_failed": profiles["outcome"].isin(BAD_OUTCOMES),
            }
        )
        .groupby("wave")[["profiles_switched", "profiles_failed"]]
        .sum()
    )
    by_wave = by_wave.reindex(waves, fill_value=0)
    summary = pd.DataFrame(index=pd.Index(waves, name="wave"))
    summary["targeted"] = counts.sum(axis=1)
    for label in states.STATE_LABELS:
        summary[label] = counts[label]
    summary["profiles_switched"] = by_wave["profiles_switched"]
    summary["profiles_failed"] = by_wave["profiles_failed"]
    # Appended, not assigned by label: a wave may itself be called "Total". The last row is the total.
    total = summary.sum(axis=0).to_frame(TOTAL).T
    summary = pd.concat([summary, total]).astype(int)
    summary.index.name = "wave"
    untried = [V.label(key) for key in states.UNTRIED_KEYS if V.label(key) in summary.columns]
    tried = summary["targeted"] - summary[untried].sum(axis=1)
    # Never a percentage of nothing: a wave no host of which was tried (not started yet, or
    # stopped before it) has no success rate, and shows none rather than a disastrous 0 %.
    summary.insert(
        len(states.STATE_LABELS) + 1,
        "success_pct",
        (summary["succeeded"] / summary["targeted"]).where(tried > 0),
    )
    return summary.reset_index()


def wave_count_key(wave: str) -> str:
    """The Return codes frame's column for a wave's count (prefixed: a wave may be named "total")."""
    return f"count:{wave}"


def _codes(profiles: pd.DataFrame, waves: list[str]) -> pd.DataFrame:
    """Per-profile code x wave counts, with each code's name, outcome, meaning and hint."""
    counts = profiles.groupby(["current_code", "wave"]).size().unstack("wave", fill_value=0)
    counts = counts.reindex(columns=waves, fill_value=0)
    counts.columns = [wave_count_key(wave) for wave in waves]
    table = _code_table(pd.Series(counts.index, dtype="int64"))
    frame = table.join(counts).reset_index()
    keys = list(counts.columns)
    frame["total"] = frame[keys].sum(axis=1) if keys else 0
    ordered = ["code", "name", "outcome", "meaning", *keys, "total", "hint"]
    return frame[ordered].sort_values("code").reset_index(drop=True)


def _join_parts(parts: list[pd.Series], separator: str) -> pd.Series:
    """Join the non-empty parts of each row (parts are aligned Series; NaN or "" is left out)."""
    frame = pd.concat([part.astype(object) for part in parts], axis=1)
    frame = frame.where(frame.notna() & (frame != ""))
    joined = frame.stack().dropna().groupby(level=0).agg(separator.join)
    return joined.reindex(frame.index).astype(object).fillna("")


#: States whose error class says what went wrong (for partial and not-switched hosts, CPUU's
#: exit flags and profile codes say it better).
_ERROR_HINTED = tuple(
    label
    for label in states.ACTION_LABELS
    if label not in (V.label(V.PARTIAL), V.label(V.NOT_SWITCHED))
)


def _follow_ups(actions: pd.DataFrame) -> pd.Series:
    """Each row's follow-up from the vocabulary, with its run id filled in."""
    keys = pd.Series(
        list(zip(actions["state"].astype(str), actions["run_id"], strict=True)),
        index=actions.index,
        dtype=object,
    )
    return _map_distinct(keys, lambda key: V.BY_LABEL[key[0]].follow_up_for(key[1]))


def _actions(hosts: pd.DataFrame, profiles: pd.DataFrame, waves: list[str]) -> pd.DataFrame:
    """Every host that needs a person, with why and what to do, sorted by wave and state."""
    needs_action = profiles.loc[profiles["outcome"] == Outcome.NEEDS_ACTION.value, "host"].unique()
    flags_attention = hosts["exit_code"].fillna(0).astype(int) & ~1 != 0
    actions = hosts.loc[hosts["state"].isin(states.ACTION_LABELS)].copy()

    needs = actions["host"].isin(needs_action)
    odd_exit = flags_attention.loc[actions.index] | actions["killed"]
    actions["reason"] = _join_parts(
        [
            "state: " + actions["state"].astype(str),
            pd.Series("profile codes need action", index=actions.index).where(needs),
            ("exit " + actions["exit_flags"].fillna("")).where(odd_exit),
        ],
        "; ",
    )

    bad = profiles[profiles["outcome"].isin(BAD_OUTCOMES) & profiles["host"].isin(actions["host"])]
    labels = (
        bad["profile"] + " (" + bad["current_code"].astype(str) + " " + bad["current_name"] + ")"
    )
    by_host = pd.DataFrame({"host": bad["host"], "label": labels, "hint": bad["hint"]})
    grouped = by_host.groupby("host", sort=False)
    problem_profiles = grouped["label"].agg("; ".join)
    profile_hints = grouped["hint"].agg(lambda h: " ".join(dict.fromkeys(x for x in h if x)))
    actions["problem_profiles"] = actions["host"].map(problem_profiles).astype(object).fillna("")

    error_hint = actions["error_class"].map(hints.ERROR_CLASS_HINTS).fillna("")
    error_hint = error_hint.where(actions["state"].isin(_ERROR_HINTED), "")
    exit_keys = pd.Series(
        list(zip(actions["exit_code"].astype(object), actions["killed"], strict=True)),
        index=actions.index,
    )
    exit_hint = _map_distinct(
        exit_keys, lambda key: hints.exit_code_hint(None if pd.isna(key[0]) else key[0], key[1])
    ).fillna("")
    profile_hint = actions["host"].map(profile_hints).astype(object).fillna("")
    actions["hint"] = _join_parts([error_hint, exit_hint, profile_hint], " ")
    actions["follow_up"] = _follow_ups(actions)

    state_rank = actions["state"].map({label: i for i, label in enumerate(states.ACTION_LABELS)})
    actions["state_rank"] = state_rank.astype(float).fillna(len(states.ACTION_LABELS))
    wave_rank = {w: i for i, w in enumerate(waves)}
    actions["wave_rank"] = actions["wave"].map(wave_rank)
    actions = actions.sort_values(["wave_rank", "state_rank", "host"], kind="stable")
    return actions.drop(columns=["state_rank"]).reset_index(drop=True)
