"""Dynamic inventory scripts: an executable file run with ``--list``, its JSON read as an inventory.

CMDB, Active Directory and MECM queries are often wrapped in a script that Ansible runs (its
``script`` inventory plugin). cpuu-fleet runs it the documented way: ``SCRIPT --list`` prints the
``ansible-inventory --list`` JSON (read by :mod:`cpuu_fleet.inputs.inventory_list`); when that JSON
has no ``_meta``, ``SCRIPT --host NAME`` prints each host's variables.

Assumptions where Ansible's docs leave room:
- A file is a script when it is executable *and* starts with ``#!``. An INI or YAML file that
  merely has the executable bit (common on files copied from Windows shares) is read as data.
- The script runs in its own folder with no standard input, at most :data:`TIMEOUT` seconds, and
  its output is bounded (:data:`MAX_OUTPUT_BYTES`). Its standard error is not echoed whole (it
  may hold anything, credentials included): only its last line, shortened, when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.redact import printable

TIMEOUT = 300
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
MAX_HOST_CALLS = 5000
_STDERR_CHARS = 300


def is_inventory_script(file: Path) -> bool:
    """True for an executable regular file whose first bytes are a ``#!`` line."""
    try:
        mode = file.stat().st_mode
        if not stat.S_ISREG(mode) or not mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            return False
        with file.open("rb") as handle:
            return handle.read(2) == b"#!"
    except OSError:
        return False


def run_inventory_script(file: Path) -> dict[str, Any]:
    """The inventory a script prints, in the ``--list`` shape with ``_meta.hostvars`` filled."""
    data = _run_json(file, ["--list"])
    if not isinstance(data, dict):
        raise InputError("inventory script: --list must print a JSON object of groups", where=file)
    if "_meta" not in data:
        hosts = sorted(_hosts_named(data))
        if len(hosts) > MAX_HOST_CALLS:
            raise InputError(
                f"inventory script: {len(hosts):,} hosts and no '_meta' in --list; calling "
                f"--host for each is refused above {MAX_HOST_CALLS:,} (add _meta.hostvars)",
                where=file,
            )
        hostvars = {}
        for host in hosts:
            variables = _run_json(file, ["--host", host])
            if not isinstance(variables, dict):
                raise InputError(
                    f"inventory script: --host {host} must print a JSON object", where=file
                )
            hostvars[host] = variables
        data["_meta"] = {"hostvars": hostvars}
    return data


def _hosts_named(data: dict[str, Any]) -> set[str]:
    hosts: set[str] = set()
    for body in data.values():
        listed = body if isinstance(body, list) else (body or {}).get("hosts", [])
        if isinstance(listed, list):
            hosts.update(str(host) for host in listed)
    return hosts


ANSIBLE_READER_ENV = {"ANSIBLE_VARS_ENABLED": "", "ANSIBLE_NOCOLOR": "1"}
"""``ansible-inventory`` as the reader: no vars plugin (so no ``group_vars``/``host_vars`` and no
vault file is read or decrypted by Ansible: cpuu-fleet reads those itself and keeps their values
secret), no colour."""


def find_ansible_inventory() -> str | None:
    """An installed ``ansible-inventory``: on PATH, or beside this Python (a venv or pipx)."""
    beside = Path(sys.executable).parent / "ansible-inventory"
    return shutil.which("ansible-inventory") or (str(beside) if beside.exists() else None)


def run_ansible_inventory(source: Path) -> dict[str, Any]:
    """``ansible-inventory -i SOURCE --list --export``: any source Ansible reads (plugins such as
    aws_ec2 or constructed included), with group variables left on their groups (``--export``)
    so cpuu-fleet applies Ansible's precedence itself."""
    program = find_ansible_inventory()
    if program is None:
        raise InputError(
            "the ansible-inventory reader needs ansible-core installed beside cpuu-fleet"
            " (pip install ansible-core, or pipx inject cpuu-fleet ansible-core)",
            where=source,
        )
    arguments = ["-i", str(source.resolve()), "--list", "--export"]
    data = _run_json(source, arguments, program=program, env=ANSIBLE_READER_ENV)
    if not isinstance(data, dict):
        raise InputError("ansible-inventory did not print a JSON object", where=source)
    return data


def _run_json(
    file: Path,
    arguments: list[str],
    *,
    program: str | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """Run the script (or ``program``) once; its output goes to temporary files, so a huge output
    is measured before it is read and a chatty standard error can never block it."""
    command = [program or str(file.resolve()), *arguments]
    shown = " ".join([Path(program).name if program else file.name, *arguments])
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(
                command,
                cwd=file.resolve().parent,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env={**os.environ, **(env or {})},
            )
        except OSError as exc:
            raise InputError(
                f"inventory script could not start ({exc.strerror})", where=file
            ) from None
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise InputError(f"{shown} timed out after {TIMEOUT} s", where=file) from None
        if process.returncode != 0:
            stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - 4096))
            raise InputError(
                f"{shown} failed (exit code {process.returncode})" + _last_line(stderr.read()),
                where=file,
            )
        if stdout.seek(0, os.SEEK_END) > MAX_OUTPUT_BYTES:
            raise InputError(
                f"{shown} printed more than {MAX_OUTPUT_BYTES // 2**20} MiB",
                where=file,
            )
        stdout.seek(0)
        output = stdout.read()
    try:
        return json.loads(output.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{shown} did not print JSON", where=file) from None


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    return ": " + printable(lines[-1].strip())[:_STDERR_CHARS]
