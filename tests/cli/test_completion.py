"""Shell completion as the shell asks for it: hosts and groups for --limit, runs for --resume."""

from __future__ import annotations

from pathlib import Path

from cpuu_fleet.journal import Journal
from tests.support.commands import REPO, run_subprocess

EXAMPLE = REPO / "inventories" / "example.yml"


def complete(words: str, cwd: Path, **env: str) -> list[str]:
    """What bash's completion function would offer after ``words`` (the last word unfinished)."""
    env = {
        **env,
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


def test_resume_completes_a_postgresql_journals_runs_and_a_tab_press_creates_nothing(
    tmp_path, pg_url
):
    import psycopg

    def tables() -> int:
        with psycopg.connect(pg_url) as conn:
            query = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            return conn.execute(query).fetchone()[0]

    words = f"cpuu-fleet play --journal {pg_url} --resume "
    assert complete(words, tmp_path) == [] and tables() == 0  # an empty database stays empty
    with Journal(pg_url) as journal:
        started = {journal.start_run(kind="play", playbook="update.yml") for _ in range(2)}
        newest_first = [run["run_id"] for run in reversed(journal.runs())]
    assert complete(words, tmp_path) == newest_first and set(newest_first) == started
    settings_only = complete("cpuu-fleet play --resume ", tmp_path, CPUU_FLEET_JOURNAL=pg_url)
    assert settings_only == newest_first
    down = "postgresql://cpuu@127.0.0.1:1/journal"  # nothing listens there: nothing offered
    assert complete(f"cpuu-fleet play --journal {down} --resume ", tmp_path) == []
