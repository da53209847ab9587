"""Shell completion as the shell asks for it: hosts and groups for --limit, runs for --resume."""

from __future__ import annotations

from pathlib import Path

from cpuu_fleet.journal import Journal
from tests.support.commands import REPO, run_subprocess

EXAMPLE = REPO / "inventories" / "example.yml"


def complete(words: str, cwd: Path) -> list[str]:
    """What bash's completion function would offer after ``words`` (the last word unfinished)."""
    env = {
        "_CPUU_FLEET_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    done = run_subprocess(cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.split()


def test_limit_completes_hosts_and_groups_after_the_last_operator(tmp_path):
    words = f"cpuu-fleet play pb.yml -i {EXAMPLE} -l wave1:!par-pc-010"
    offered = complete(words, tmp_path)
    assert offered == [f"wave1:!par-pc-010{n}.corp.example" for n in range(1, 7)]
    assert "wave3" in complete(f"cpuu-fleet preflight -i {EXAMPLE} -l wave", tmp_path)


def test_limit_uses_the_settings_inventory_and_a_broken_one_offers_nothing(tmp_path):
    (tmp_path / "cpuu-fleet.toml").write_text(f'inventory = "{EXAMPLE}"\n')
    assert complete("cpuu-fleet collect -l lyo-lt", tmp_path) == ["lyo-lt-0302.corp.example"]
    (tmp_path / "bad.yml").write_text("all: [unclosed\n")
    assert complete("cpuu-fleet play pb.yml -i bad.yml -l wa", tmp_path) == []


def test_resume_completes_the_journals_runs_newest_first(tmp_path):
    with Journal.in_reports(tmp_path / "reports") as journal:
        started = {journal.start_run(kind="play", playbook="update.yml") for _ in range(2)}
        newest_first = [run["run_id"] for run in reversed(journal.runs())]
    offered = complete("cpuu-fleet play --resume ", tmp_path)
    assert offered == newest_first and set(offered) == started
    assert complete("cpuu-fleet play --retry-failed nothing", tmp_path) == []
