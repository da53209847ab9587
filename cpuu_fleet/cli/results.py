"""CLI: ``cpuu-fleet results show``, CPUU result files decoded for a person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cpuu_fleet.cpuu import DEFAULT_MAX_ROWS, ResultFile, parse_result_file
from cpuu_fleet.errors import InputError
from cpuu_fleet.redact import printable

results_app = typer.Typer(
    help="Read CPUU result files (tab-separated, any encoding).", no_args_is_help=True
)


def _as_dict(result: ResultFile) -> dict[str, Any]:
    return {
        "file": result.path,
        "encoding": result.encoding,
        "had_header": result.had_header,
        "truncated": result.truncated,
        "profiles": [
            {
                "profile": p.profile,
                "line": p.line,
                "code": p.current,
                "name": p.info.name,
                "meaning": p.info.meaning,
                "outcome": p.info.outcome.value,
                "previous": p.previous,
                "hint": p.info.hint,
            }
            for p in result.profiles
        ],
        "problems": [
            {"line": problem.line, "reason": problem.reason, "text": problem.text}
            for problem in result.problems
        ],
    }


@results_app.command("show")
def show(
    files: Annotated[list[Path], typer.Argument(help="CPUU_*.csv result files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    max_rows: Annotated[
        int,
        typer.Option(
            "--max-rows",
            min=1,
            help="Lines read from one file at the most (a play's limits: result_rows).",
        ),
    ] = DEFAULT_MAX_ROWS,
) -> None:
    """Decode result files: each profile's code, meaning and outcome; unreadable lines with file:line.

    Every readable file is shown even when another one is unreadable; those, files without a
    single profile line, and files longer than ``--max-rows`` lines (read up to it: a hostile
    file costs bounded memory) are reported at the end as one error line (exit code 2).
    """
    parsed: list[ResultFile] = []
    errors: list[InputError] = []
    for path in files:
        try:
            result = parse_result_file(path, max_rows=max_rows)
        except InputError as exc:
            errors.append(exc)
            continue
        parsed.append(result)
        if result.truncated:
            errors.append(
                InputError(
                    f"more than {max_rows:,} lines: only the first {max_rows:,} are shown"
                    " (--max-rows)",
                    where=result.path,
                )
            )
        if result.problems and not result.profiles:
            # Not one profile line: the wrong file, not a result file with a damaged line.
            first = result.problems[0]
            errors.append(
                InputError(
                    f"not a CPUU result file: no profile among its {len(result.problems)}"
                    f" line(s) (the first: {first.reason})",
                    where=result.path,
                    line=first.line,
                )
            )
    if as_json:
        typer.echo(json.dumps([_as_dict(r) for r in parsed], indent=2, ensure_ascii=False))
    else:
        console = Console()
        for result in parsed:
            title = f"{result.path} ({result.encoding}, {len(result.profiles)} profile(s))"
            table = Table(title=escape(printable(title)))
            for column in ("profile", "code", "name", "outcome", "previous", "what to do"):
                table.add_column(column, overflow="fold")
            for p in result.profiles:
                previous = "" if p.previous is None else str(p.previous)
                # Profile names come from the workstation: plain text, never rich markup.
                cells = (p.profile, str(p.current), p.info.name, p.info.outcome.value, previous)
                table.add_row(*(Text(printable(c)) for c in cells), Text(p.info.hint))
            console.print(table)
            for problem in result.problems:
                typer.echo(
                    f"{printable(result.path)}:{problem.line}: {problem.reason}: {problem.text!r}"
                )
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise InputError(
            f"{len(errors)} files could not be read: " + "; ".join(e.render() for e in errors)
        )


def register(app: typer.Typer) -> None:
    """Add ``results show`` to the root app."""
    app.add_typer(results_app, name="results")
