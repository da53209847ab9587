"""Choosing the journal: ``--journal URL``, the ``journal`` setting and ``CPUU_FLEET_JOURNAL``;
the SQLite file in --reports when none is given; never a password in a URL."""

from __future__ import annotations

import json

from cpuu_fleet.journal import HostEntry, Journal


def _one_run(location) -> str:
    with Journal(location) as journal:
        run = journal.start_run(run_id="20261206-120000-abcd", playbook="update.yml")
        journal.add_hosts(run, [HostEntry("pc-1", wave="wave1")])
        journal.set_host(run, "pc-1", state="succeeded", exit_code=1)
        journal.finish_run(run, "completed")
    return run


def test_runs_and_status_read_the_journal_named_by_option_setting_or_environment(
    cli, pg_url, tmp_path, monkeypatch
):
    run = _one_run(pg_url)
    reports = tmp_path / "reports"
    code, out, err = cli("runs", "--json", "--reports", reports, "--journal", pg_url)
    assert code == 0, err
    assert [row["run_id"] for row in json.loads(out)] == [run]
    assert not reports.exists()  # nothing made in --reports: the journal is the database

    monkeypatch.setenv("CPUU_FLEET_JOURNAL", pg_url)
    code, out, err = cli("status", "--json", "--reports", reports)
    assert code == 0, err
    assert json.loads(out)["run"]["run_id"] == run

    monkeypatch.delenv("CPUU_FLEET_JOURNAL")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpuu-fleet.toml").write_text(f'journal = "{pg_url}"\n')
    code, out, err = cli("runs", "--json")
    assert code == 0, err
    assert [row["run_id"] for row in json.loads(out)] == [run]


def test_without_a_journal_setting_the_sqlite_file_in_reports_is_used(cli, tmp_path):
    reports = tmp_path / "reports"
    run = _one_run(reports / Journal.FILENAME)
    code, out, err = cli("runs", "--json", "--reports", reports)
    assert code == 0, err
    assert [row["run_id"] for row in json.loads(out)] == [run]


def test_a_password_in_the_journal_url_is_one_line_that_never_shows_it(cli, pg_url, tmp_path):
    secret_url = pg_url.replace("cpuu@", "cpuu:Tr0ub4dor-x@")
    code, out, err = cli("runs", "--reports", tmp_path, "--journal", secret_url)
    assert code == 2
    assert "Tr0ub4dor-x" not in out + err
    assert err.count("\n") == 1 and "PGPASSWORD" in err


def test_a_journal_setting_that_is_no_database_url_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpuu-fleet.toml").write_text('journal = "reports/journal.sqlite3"\n')
    code, _, err = cli("runs")
    assert code == 2 and "journal must be a postgresql:// URL" in err
