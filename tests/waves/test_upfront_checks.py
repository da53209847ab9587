"""Checked before any host is touched: payload names Windows cannot take, the CA bundle (or
client certificate) a connection needs, and ``--ask-pass`` without a terminal. Each is one line
and exit code 2, never a failure on every host at push or connect. And the commands that only
read the journal (``status``, ``report``) work on a read-only one: an archive, a share, a copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpuu_fleet import journal as J
from cpuu_fleet.cli.demo_lab import find_playbook, make_standin_payload
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.payload import MAX_RELATIVE, load_payload
from cpuu_fleet.journal import HostEntry, Journal

REPO = Path(__file__).resolve().parents[2]
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX mounts and sessions")


def cli(*args: str, cwd: Path, **run) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", *args],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        **run,
    )


def _no_run_in(reports: Path) -> bool:
    path = reports / Journal.FILENAME
    if not path.exists():
        return True
    with Journal(path) as journal:
        return journal.runs() == []


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("CON", "CON is a reserved device name"),
        ("con.txt", "CON is a reserved device name"),
        ("Com1.dll", "COM1 is a reserved device name"),
        ("LPT9.tar.gz", "LPT9 is a reserved device name"),
        ("nul .log", "NUL is a reserved device name"),
        ("a:b.txt", "holds ':'"),
        ('say"hi".txt', "holds '\"'"),
        ("a|b", "holds '|'"),
        ("why?.txt", "holds '?'"),
        ("star*.txt", "holds '*'"),
        ("lt<gt>.txt", "holds '<'"),
        ("bell\x07.txt", "holds '\\x07'"),
        ("tab\t.txt", "holds '\\t'"),
        ("back\\slash.txt", "holds '\\\\'"),
        ("trailing.", "ends with a dot or a space"),
        ("trailing ", "ends with a dot or a space"),
    ],
)
def test_payload_names_windows_cannot_take_are_bad_input(tmp_path, name, said):
    payload = make_standin_payload(tmp_path / "payload")
    (payload / name).write_bytes(b"x")
    with pytest.raises(InputError) as caught:
        load_payload(payload)
    assert said in caught.value.render()
    assert "no workstation could store it" in caught.value.render()


def test_a_folder_name_windows_cannot_take_is_bad_input_too(tmp_path):
    payload = make_standin_payload(tmp_path / "payload")
    (payload / "AUX").mkdir()
    (payload / "AUX" / "fine.dll").write_bytes(b"x")
    with pytest.raises(InputError, match=r"'AUX\\\\fine.dll': the name 'AUX' AUX is a reserved"):
        load_payload(payload)


@pytest.mark.skipif(sys.platform == "win32", reason="names are bytes on POSIX only")
def test_a_name_that_is_not_utf8_is_bad_input(tmp_path):
    payload = make_standin_payload(tmp_path / "payload")
    with open(os.path.join(os.fsencode(payload), b"caf\xe9.txt"), "wb") as stream:
        stream.write(b"latin-1 name")
    with pytest.raises(InputError, match="is not valid UTF-8"):
        load_payload(payload)


def test_a_path_too_long_for_the_staging_folder_is_bad_input(tmp_path):
    payload = make_standin_payload(tmp_path / "payload")
    deep = payload / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    (deep / ("f" * (MAX_RELATIVE - 202))).write_bytes(b"fits exactly")
    assert len(load_payload(payload).files) == 3
    (deep / ("g" * (MAX_RELATIVE - 201))).write_bytes(b"one too many")
    with pytest.raises(InputError, match=f"{MAX_RELATIVE + 1} characters long"):
        load_payload(payload)


def test_names_windows_takes_still_pass(tmp_path):
    payload = make_standin_payload(tmp_path / "payload")
    for name in ("CONFIG.ini", "com10.dll", "console.txt", "LPT.txt", "läuft ok.txt", ".hidden"):
        (payload / name).write_bytes(b"x")
    (payload / "sub.dir").mkdir()
    (payload / "sub.dir" / "NULL.dat").write_bytes(b"x")
    assert len(load_payload(payload).files) == 9


def test_play_check_refuses_a_reserved_payload_name_before_any_host(tmp_path):
    payload = make_standin_payload(tmp_path / "payload")
    (payload / "CON.txt").write_bytes(b"x")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  children:\n    wave1:\n      hosts:\n        pc-0001: {ansible_host: 127.0.9.1}\n",
        encoding="utf-8",
    )
    done = cli(
        "play", str(find_playbook()), "-i", str(inventory), "--check",
        "--payload", str(payload), "--reports", "reports", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("cpuu-fleet: error: ") and "'CON.txt'" in line
    assert _no_run_in(tmp_path / "reports")


def _https_inventory(tmp_path: Path, **extra: str) -> Path:
    """Two hosts on a closed loopback port: a connection attempt would make them unreachable."""
    lines = [
        "all:",
        "  vars:",
        "    ansible_user: admin",
        "    ansible_password: not-used",
        "    ansible_psrp_protocol: https",
        "    ansible_port: 9",
        *(f"    {key}: {value!r}" for key, value in extra.items()),
        "  hosts:",
        "    pc-0001: {ansible_host: 127.0.9.1}",
        "    pc-0002: {ansible_host: 127.0.9.2}",
    ]
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda folder: folder / "missing-ca.pem", "not found on this controller"),
        (
            lambda folder: (
                (folder / "garbage.pem").write_text("not a certificate\n")
                and folder / "garbage.pem"
            ),
            "is not a PEM bundle of CA certificates",
        ),
    ],
    ids=["missing", "not-pem"],
)
def test_an_unusable_ca_file_is_one_error_up_front_not_every_host_unreachable(tmp_path, make, said):
    ca = make(tmp_path)
    inventory = _https_inventory(tmp_path, ansible_psrp_ca_cert=str(ca))
    done = cli("preflight", "-i", str(inventory), "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"cpuu-fleet: error: host pc-0001: ansible_psrp_ca_cert: {ca}: {said}")
    assert _no_run_in(tmp_path / "reports")


def test_a_readable_ca_bundle_passes_and_the_hosts_are_tried(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    inventory = _https_inventory(tmp_path, ansible_psrp_ca_cert=str(ca_file))
    done = cli("preflight", "-i", str(inventory), "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr  # unreachable: nothing listens there
    assert not _no_run_in(tmp_path / "reports")


def test_a_missing_client_certificate_is_one_error_up_front(tmp_path):
    inventory = _https_inventory(
        tmp_path,
        ansible_psrp_auth="certificate",
        ansible_psrp_certificate_pem=str(tmp_path / "client.pem"),
        ansible_psrp_certificate_key_pem=str(tmp_path / "client.key"),
    )
    done = cli("preflight", "-i", str(inventory), "--reports", "reports", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert "ansible_psrp_certificate_pem" in line and "not found on this controller" in line


def _journal_with_a_run(reports: Path) -> str:
    with Journal.in_reports(reports) as journal:
        run = journal.start_run(playbook="/srv/playbooks/update.yml", mode="update")
        journal.add_hosts(run, [HostEntry("pc-1", wave="wave1"), HostEntry("pc-2", wave="wave1")])
        journal.set_host(run, "pc-1", state=J.SUCCEEDED)
        journal.set_host(run, "pc-2", state=J.FAILED, error_class="remote", error_message="nope")
        journal.finish_run(run, "completed")
    return run


@pytest.fixture
def read_only_reports(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A reports folder holding a journal, on a read-only file system (root: a tmpfs remounted
    read-only, which root cannot write either) or without write permission (anyone else)."""
    source = tmp_path / "source"
    run = _journal_with_a_run(source)
    folder = tmp_path / "archive"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(folder)]).returncode != 0:
            pytest.skip("root, but mount is refused: no way to make a folder read-only")
        shutil.copy2(source / Journal.FILENAME, folder / Journal.FILENAME)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        try:
            yield folder, run
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    shutil.copy2(source / Journal.FILENAME, folder / Journal.FILENAME)
    (folder / Journal.FILENAME).chmod(0o444)
    folder.chmod(0o555)
    try:
        yield folder, run
    finally:
        folder.chmod(0o755)


@POSIX_ONLY
def test_status_reads_a_read_only_journal(tmp_path, read_only_reports):
    reports, run = read_only_reports
    with pytest.raises(OSError):  # really read-only, for whoever runs the tests
        (reports / "probe").write_text("x")
    done = cli("status", "--reports", str(reports), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["run"]["run_id"] == run
    assert data["counts"] == {J.SUCCEEDED: 1, J.FAILED: 1}
    assert [h["host"] for h in data["needs_action"]] == ["pc-2"]


@POSIX_ONLY
def test_report_reads_a_read_only_journal_and_writes_elsewhere(tmp_path, read_only_reports):
    reports, _run = read_only_reports
    out = tmp_path / "out"
    done = cli("report", "--reports", str(reports), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "report.xlsx").is_file()
    assert "pc-2" in (out / "hosts.csv").read_text(encoding="utf-8-sig")
    assert sorted(p.name for p in reports.iterdir()) == [Journal.FILENAME]  # nothing added


@POSIX_ONLY
@pytest.mark.parametrize("stdin", [subprocess.DEVNULL, "typed-secret\n"], ids=["none", "piped"])
def test_ask_pass_without_a_terminal_is_one_line_exit_2(tmp_path, stdin):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    pc-0001: {ansible_host: 127.0.9.1, ansible_user: admin}\n",
        encoding="utf-8",
    )
    feed = {"input": stdin} if isinstance(stdin, str) else {"stdin": stdin}
    done = cli(
        "preflight", "-i", str(inventory), "--reports", "reports", "--ask-pass",
        cwd=tmp_path, start_new_session=True, **feed,  # a new session: no controlling terminal
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("cpuu-fleet: error: --ask-pass needs a terminal")
    assert "typed-secret" not in done.stdout + done.stderr


@POSIX_ONLY
@pytest.mark.parametrize("journal", ["kept", "none"])
def test_a_reports_folder_that_cannot_be_written_is_one_line_exit_4(
    tmp_path, read_only_reports, journal
):
    reports, _run = read_only_reports
    target = reports if journal == "kept" else reports / "fresh"  # a journal to create there
    inventory = _https_inventory(tmp_path)
    done = cli("preflight", "-i", str(inventory), "--reports", str(target), cwd=tmp_path)
    assert done.returncode == 4, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("cpuu-fleet: error: ") and "nothing was touched" in line
