"""The collected files the journal indexes: log paths for the Hosts sheet, and profiles recovered
from result files the journal never got to parse.

Why recover: collect writes a result file to disk and indexes it *before* its profiles are
recorded. A controller killed in between leaves a file with no profile rows; the report parses
such files itself, so nothing collected is lost. A file that cannot be read or has malformed
lines becomes a note on the Summary (file and line), never an error that stops the report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cpuu_fleet.cpuu import parse_result_file
from cpuu_fleet.errors import InputError

PROFILE_COLUMNS = [
    "id",
    "run_id",
    "host",
    "user",
    "profile",
    "current_code",
    "previous_code",
    "result_file",
    "line",
]


def add_file_columns(hosts: pd.DataFrame, files: pd.DataFrame) -> pd.DataFrame:
    """``log_file``: the latest collected log of the host's run; ``result_dir`` filled from the
    files' folder where the engine did not record one."""
    keys = ["run_id", "host"]
    ordered = files.sort_values("id")
    logs = ordered[ordered["kind"] == "log"].drop_duplicates(keys, keep="last")
    hosts = hosts.merge(
        logs[[*keys, "local_path"]].rename(columns={"local_path": "log_file"}), on=keys, how="left"
    )
    folders = ordered.drop_duplicates(keys, keep="last")[[*keys, "local_path"]]
    # The folder of a relative path, written by a Linux or a Windows controller.
    folders = folders.assign(
        folder=folders["local_path"].str.replace(r"[\\/][^\\/]*$", "", regex=True)
    )
    fallback = hosts[keys].merge(folders[[*keys, "folder"]], on=keys, how="left")["folder"]
    hosts["result_dir"] = hosts["result_dir"].where(
        hosts["result_dir"].notna(), fallback.to_numpy()
    )
    return hosts


def recover_profiles(
    reports_dir: Path, files: pd.DataFrame, hosts: pd.DataFrame, recorded: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    """Profiles parsed from result files of reported (run, host) pairs with no profile rows."""
    keys = ["run_id", "host"]
    results = files[files["kind"] == "result"].merge(hosts[[*keys, "user"]], on=keys)
    if results.empty:
        return pd.DataFrame(columns=PROFILE_COLUMNS), []
    known = recorded[keys].drop_duplicates()
    results = results.merge(known, on=keys, how="left", indicator=True)
    results = results[results["_merge"] == "left_only"].sort_values("id")
    rows: list[tuple] = []
    notes: list[str] = []
    next_id = int(recorded["id"].max()) + 1 if len(recorded) else 1
    root = reports_dir.resolve()
    for record in results.itertuples(index=False):  # only the few files nobody parsed
        path = (reports_dir / record.local_path).resolve()
        if not path.is_relative_to(root):
            notes.append(
                f"{record.host}: result file {record.local_path!r} not read: outside {reports_dir}"
            )
            continue
        try:
            parsed = parse_result_file(path)
        except InputError as error:
            notes.append(f"{record.host}: result file not read: {error.render()}")
            continue
        for problem in parsed.problems:
            notes.append(
                f"{record.host}: {record.local_path}:{problem.line}: {problem.reason} (line skipped)"
            )
        for result in parsed.profiles:
            rows.append(
                (
                    next_id,
                    record.run_id,
                    record.host,
                    record.user,
                    result.profile,
                    result.current,
                    result.previous,
                    record.local_path,
                    result.line,
                )
            )
            next_id += 1
        if parsed.profiles:
            notes.append(
                f"{record.host}: {len(parsed.profiles)} profile(s) read from {record.local_path}"
                " (not yet in the journal)."
            )
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS), notes
