"""A small fleet journal (the ``fleet`` fixture of ``tests/conftest.py``) with every state, a retry, hostile text and accented names.

Built through the Journal API exactly as the engine writes it, so the report is tested against
the real schema and the real SQLite file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpuu_fleet import journal as J
from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import write_report
from cpuu_fleet.report.figures import build_figures

HYPERLINK = '=HYPERLINK("http://evil.example/x","click me")'
DDE = "+cmd|' /C calc'!A0"
ACCENTED_USER = "CORP\\Zoë Ångström"
RICH_INJECTION = (
    '<r><t>x</t></r></is></c><c r="Z1"><f>HYPERLINK("http://evil.example","click")</f></c>'
    '<c r="Z2" t="inlineStr"><is><r><t>y</t></r>'
)
HOSTILE = [
    RICH_INJECTION,
    '=HYPERLINK("http://evil.example","x")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "bell\x07 and nul\x00 inside",
    "literal _x0041_ escape",
    "a & b <c> \"d\" 'e'",
    "  leading and trailing spaces  ",
    "line one\nline two",
    "Zoë Ångström \u4e2d\u6587 \U0001f600",
    "private \ue000 use",
]


def hostile_journal(path: Path) -> tuple[Journal, str]:
    """One host whose every free text is hostile: profile names, wave, operator, error."""
    journal = Journal(path)
    run = journal.start_run(run_id="r1", operator=RICH_INJECTION)
    journal.add_hosts(run, [HostEntry("pc-1", wave="<r>w</r>")])
    results = [ProfileResult(name, 10, 0, line) for line, name in enumerate(HOSTILE, 1)]
    results.append(ProfileResult("L" * 40_000, 10, 0, 99))
    journal.add_profiles(run, "pc-1", "CORP\\x", results)
    journal.set_host(run, "pc-1", state=J.SUCCEEDED, exit_code=1, error_message=RICH_INJECTION)
    return journal, run


@dataclass
class Fleet:
    """The journal and the facts the tests check the report against."""

    journal: Journal
    reports: Path
    first_run: str
    retry_run: str


def _host(
    journal,
    run,
    host,
    *,
    state,
    steps,
    exit_code=None,
    user="CORP\\jdoe",
    profiles=(),
    error_class=None,
    error_message=None,
    killed=False,
    attempt=1,
):
    """Record one host's pass through a run, the way the runner does: steps first, then the row."""
    for step, status in steps:
        step_id = journal.start_step(run, host, step, attempt)
        journal.end_step(
            step_id,
            status,
            error_class=error_class if status == "failed" else None,
            error_message=error_message if status == "failed" else None,
        )
    if profiles:
        results = [
            ProfileResult(name, cur, prev, i) for i, (name, cur, prev) in enumerate(profiles, 1)
        ]
        journal.add_profiles(run, host, user, results, f"{run}/hosts/{host}/CPUU_x.csv")
    journal.set_host(
        run,
        host,
        state=state,
        user=user,
        exit_code=exit_code,
        killed=int(killed),
        error_class=error_class,
        error_message=error_message,
        started_at="2026-11-21T10:00:00.000+00:00",
        ended_at="2026-11-21T10:02:30.500+00:00",
        attempts=attempt,
        result_dir=f"{run}/hosts/{host}",
    )


OK_STEPS = [
    ("connect", "ok"),
    ("preflight", "ok"),
    ("push", "changed"),
    ("run", "changed"),
    ("collect", "ok"),
]


def build_fleet(reports: Path, url: str | None = None) -> Fleet:
    """The fleet in ``reports``' journal, or in the PostgreSQL journal at ``url``."""
    journal = Journal.in_reports(reports, url)
    run1 = journal.start_run(
        run_id="20261121-100000-aaaa",
        playbook="update.yml",
        inventory="inventories/prod.yml",
        mode="update",
        operator="alice",
        payload_sha256="ab" * 32,
        tool_version="0.1.0",
    )
    wave1 = [HostEntry(f"pc-0{i}", wave="wave1", batch=1) for i in range(1, 5)]
    wave2 = [HostEntry(f"pc-0{i}", wave="wave2", batch=2) for i in range(5, 10)]
    journal.add_hosts(run1, wave1 + wave2)
    _host(
        journal,
        run1,
        "pc-01",
        state=J.SUCCEEDED,
        steps=OK_STEPS,
        exit_code=1,
        profiles=[("Outlook", 10, 0), ("Archive", 2, 10)],
    )
    _host(
        journal,
        run1,
        "pc-02",
        state=J.FAILED,
        steps=[*OK_STEPS[:3], ("run", "failed")],
        exit_code=5,
        profiles=[("Outlook", 11, 0)],
        error_class="cpuu",
        error_message="CPUU exit 5",
    )
    _host(
        journal,
        run1,
        "pc-03",
        state=J.UNREACHABLE,
        steps=[("connect", "failed")],
        error_class="unreachable",
        error_message="connection refused by 127.0.0.3:5985",
    )
    _host(
        journal,
        run1,
        "pc-04",
        state=J.PARTIAL,
        steps=OK_STEPS,
        exit_code=5,
        profiles=[("Main", 10, 0), (HYPERLINK, 6, 0), ("Odd", 99, None)],
    )
    _host(
        journal,
        run1,
        "pc-05",
        state=J.SKIPPED,
        steps=[("connect", "ok"), ("preflight", "skipped")],
        exit_code=None,
        user=None,
        error_class="policy",
        error_message="nobody logged on",
    )
    _host(journal, run1, "pc-06", state=J.PENDING, steps=OK_STEPS[:4], exit_code=None)
    _host(
        journal,
        run1,
        "pc-08",
        state=J.SUCCEEDED,
        steps=OK_STEPS,
        exit_code=1,
        user=ACCENTED_USER,
        profiles=[(DDE, 10, 0), ("Büro", 10, 0)],
    )
    _host(
        journal,
        run1,
        "pc-09",
        state=J.FAILED,
        steps=[*OK_STEPS[:3], ("run", "killed")],
        exit_code=1,
        killed=True,
        error_class="timeout",
        error_message="=1+2 CPUU ran past 600 s",
    )
    journal.set_host(run1, "pc-07", state=J.NOT_RUN)
    journal.finish_run(run1, "stopped", stop_reason="max_fail_percentage 20% exceeded")

    run2 = journal.start_run(
        run_id="20261121-120000-bbbb",
        kind="retry",
        parent_run=run1,
        playbook="update.yml",
        inventory="inventories/prod.yml",
        mode="update",
        operator="bob",
        payload_sha256="ab" * 32,
        tool_version="0.1.0",
    )
    journal.add_hosts(
        run2, [HostEntry("pc-02", wave="wave1", batch=1), HostEntry("pc-07", wave="wave2")]
    )
    _host(
        journal,
        run2,
        "pc-02",
        state=J.SUCCEEDED,
        steps=OK_STEPS,
        exit_code=1,
        profiles=[("Outlook", 10, 11)],
        attempt=1,
    )
    journal.set_host(run2, "pc-07", state=J.NOT_RUN)
    journal.finish_run(run2, "completed")
    return Fleet(journal, reports, run1, run2)


def report_figures(journal: Journal, run_id: str, out: Path) -> dict[str, Any]:
    """The run's report written to ``out``, and its figures (what ``report --json`` prints)."""
    return build_figures(write_report(journal, [run_id], out)).to_dict()


_WHEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def timeless(value: Any) -> Any:
    """The figures without their clock times (two fleets built a second apart)."""
    if isinstance(value, dict):
        return {key: timeless(item) for key, item in value.items()}
    if isinstance(value, list):
        return [timeless(item) for item in value]
    if isinstance(value, str):
        return _WHEN.sub("<time>", value)
    return value


def assert_same_report(one: Journal, other: Journal, run_id: str, tmp: Path) -> None:
    """The run's report reads the same from both journals (SQLite and PostgreSQL): its figures,
    and profiles.csv and hosts.csv in every column, the users' names among them."""
    out_a, out_b = tmp / f"out-a-{run_id}", tmp / f"out-b-{run_id}"
    assert timeless(report_figures(one, run_id, out_a)) == timeless(
        report_figures(other, run_id, out_b)
    )
    for name in ("profiles.csv", "hosts.csv"):
        text_a = (out_a / name).read_text(encoding="utf-8-sig")
        text_b = (out_b / name).read_text(encoding="utf-8-sig")
        assert timeless(text_a) == timeless(text_b), name
