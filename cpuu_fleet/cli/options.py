"""Options several commands share, defined once so they read and behave the same everywhere.

An operator who learns ``-i``, ``-l``, ``-e``, ``-k``, ``--json`` and ``--reports`` on one command
can rely on them meaning the same on every other; ``-e`` in particular must give ``render`` (the
review copy) exactly the variables ``play`` will push.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from cpuu_fleet.cli.complete import limit_names
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import vault
from cpuu_fleet.inputs.datafiles import load_data_file, parse_yaml
from cpuu_fleet.journal import Journal

InventoryOption = Annotated[
    Path,
    typer.Option(
        "-i",
        "--inventory",
        help="Inventory file or folder (Ansible YAML, INI, or ansible-inventory --list JSON).",
    ),
]
LimitOption = Annotated[
    Optional[str],  # noqa: UP045 - typer reads this annotation at run time
    typer.Option(
        "-l",
        "--limit",
        help="Host pattern as in Ansible: names, groups, globs, a:b, !x, &x, @file.",
        autocompletion=limit_names,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModeOption = Annotated[
    Literal["update", "undo", "rollback", "cleanup"],
    typer.Option(
        "--mode",
        "-m",
        case_sensitive=False,
        help="CPUU's mode: update, undo (the vendor's rollback) or cleanup.",
    ),
]
WhenNoUserOption = Annotated[
    Literal["skip", "at_logon"],
    typer.Option(
        "--when-no-user",
        help="With no user logged on: skip the host, or register CPUU for the next logon.",
    ),
]
VerboseOption = Annotated[
    int,
    typer.Option(
        "-v",
        "--verbose",
        count=True,
        show_default=False,
        help="On a terminal, print each host's end as it happens (-v), and each step (-vv);"
        " hosts needing attention are always printed.",
    ),
]
ReportsOption = Annotated[
    Path,
    typer.Option("--reports", metavar="DIR", help="Folder of journal.sqlite3 and the run files."),
]
JournalOption = Annotated[
    str | None,
    typer.Option(
        "--journal",
        metavar="URL",
        help="A shared PostgreSQL journal (postgresql://USER@HOST/DB?sslmode=verify-full; the"
        " password from PGPASSWORD, ~/.pgpass or the keyring, never the URL) instead of"
        " journal.sqlite3 in --reports.",
    ),
]
AskPassOption = Annotated[
    bool,
    typer.Option("--ask-pass", "-k", help="Prompt for secrets that are not set (never echoed)."),
]
ExtraVarsOption = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer reads this annotation at run time
    typer.Option(
        "-e",
        "--extra-vars",
        metavar="KEY=VALUE",
        help="key=value (a value may hold spaces), a YAML/JSON mapping, or @file; highest"
        " precedence in templates.",
    ),
]


def _vault_option(key: str) -> Any:
    """A callback that records one vault option and makes the command's vault passwords the
    process's (:func:`cpuu_fleet.inputs.vault.use`): click runs it for each option, given or
    not, so the environment's password file applies when none is given."""

    def callback(ctx: typer.Context, value: Any) -> Any:
        given = ctx.meta.setdefault("cpuu_fleet.vault", {})
        given[key] = value
        vault.use(vault.secrets_from_options(**given))
        return value

    return callback


VaultPasswordFileOption = Annotated[
    Optional[list[Path]],  # noqa: UP045 - typer reads this annotation at run time
    typer.Option(
        "--vault-password-file",
        "--vault-pass-file",
        metavar="FILE",
        callback=_vault_option("password_files"),
        help="Ansible Vault password: a file (an executable one is run, as in Ansible);"
        " default $ANSIBLE_VAULT_PASSWORD_FILE.",
    ),
]
VaultIdOption = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer reads this annotation at run time
    typer.Option(
        "--vault-id",
        metavar="LABEL@FILE",
        callback=_vault_option("vault_ids"),
        help="A labelled vault password (LABEL@FILE or LABEL@prompt); may be repeated.",
    ),
]
AskVaultPassOption = Annotated[
    bool,
    typer.Option(
        "--ask-vault-pass",
        "-J",
        callback=_vault_option("ask"),
        help="Prompt for the vault password when a vault value is first needed.",
    ),
]

# "a=1 b=2" is two variables, as in Ansible; "cpuu_admin=Domain Admins" or a Windows path with
# spaces stays one value: a split happens only where the next word starts a new "name=".
_NEXT_PAIR = re.compile(r"\s+(?=[A-Za-z_][A-Za-z0-9_]*=)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_extra_vars(values: list[str] | None) -> dict[str, Any]:
    """Ansible's ``-e``: ``key=value`` pairs, a YAML/JSON mapping, or ``@file``; later ones win.

    Values are kept as written (backslashes included: ``SOURCE\\svc-cpuu``), never shell-unquoted.
    """
    result: dict[str, Any] = {}
    for value in values or []:
        if value.startswith("@"):
            data = load_data_file(Path(value[1:]))
            source = value[1:]
            if isinstance(data, dict) and vault.is_vault_file(Path(source)):
                data = vault.seal(data)  # every value of an encrypted file is a secret
        elif value.lstrip().startswith("{"):
            data = parse_yaml(value, "--extra-vars")
            source = "--extra-vars"
        else:
            data = {}
            source = "--extra-vars"
            for pair in _NEXT_PAIR.split(value.strip()):
                key, sep, item = pair.partition("=")
                # The value is never quoted back: it may be a password typed in the wrong place.
                if not sep:
                    raise InputError("expected name=value, got a word without '='", where=source)
                if not _NAME.fullmatch(key):
                    raise InputError(f"{key!r} is not a variable name", where=source)
                data[key] = item
        if not isinstance(data, dict):
            raise InputError("extra vars must be a mapping", where=source)
        result.update(data)
    return result


def existing_journal(reports: Path, url: str | None = None) -> Journal:
    """The journal in ``--reports`` (or at ``--journal URL``), for commands that only read it:
    never created, and opened read-only, so a journal on a read-only share, a copy or an archive
    can be read."""
    if url:
        return Journal(url, read_only=True, reports_dir=reports)
    path = reports / Journal.FILENAME
    if not path.is_file():
        raise InputError(f"no runs in {path}")
    return Journal(path, read_only=True)


# ------------------------------------------------------------------------------ wave commands

EventsJsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON object per event on stdout, then the result.")
]
ForksOption = Annotated[int, typer.Option("--forks", "-f", help="Hosts at once.")]
PayloadOption = Annotated[
    Path | None,
    typer.Option("--payload", help="The vendor's CPUU folder (default playbooks/payload)."),
]
TemplatesOption = Annotated[
    Path | None,
    typer.Option(
        "--templates",
        "-t",
        help="Folder of *.j2 templates and templates.yml (default playbooks/templates).",
    ),
]
