"""Turn the vendor wizard's own CPUU.ini and batch files into cpuu-fleet templates.

The line syntax of CPUU.ini is not documented, so cpuu-fleet never writes one from scratch: it
starts from the file the vendor's Configuration wizard produced. Importing keeps every byte of it:

* the original encoding and line endings are recorded in ``templates.yml``, so that rendering
  reproduces the same bytes (a pure-ASCII file is recorded as cp1252, the "ANSI" a Windows tool
  writes; its bytes are the same in UTF-8);
* Jinja syntax already in the files (``{{``, ``{%``, ``{#``) is escaped so it comes out literally;
* the wizard-encrypted ``Password`` / ``PasswordTrg`` values are replaced by the secret variables
  ``cpuu_password`` / ``cpuu_password_trg`` (never printed: the operator supplies them through an
  env or keyring lookup).

The operator then replaces per-host parts by variables. A render for a host whose variables hold
the original values gives back the wizard's files exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.render import (
    FORMATS_FILE,
    INI_TEMPLATE,
    TEMPLATE_SUFFIX,
    OutputFormat,
    TemplateFormats,
    asks_credentials,
)
from cpuu_fleet.wintext import decode

SECRET_KEYS = {"password": "cpuu_password", "passwordtrg": "cpuu_password_trg"}
_SECRET_LINE = re.compile(
    r"^(?P<lead>[ \t]*-?[ \t]*)(?P<key>PasswordTrg|Password)(?P<sep>[ \t]*[=:][ \t]*|[ \t]+)"
    r"(?P<value>.*?)(?P<trail>[ \t]*)$",
    re.IGNORECASE,
)
_JINJA_OPEN = re.compile(r"\{[{%#]")
_SAFE_NAME = re.compile(r"^[\w][\w .()\-]*$")
_BATCH_SUFFIXES = (".bat", ".cmd")


@dataclass
class ImportedFile:
    """One wizard file and the template made from it."""

    source: Path
    template: Path
    format: OutputFormat
    secrets: list[tuple[int, str]] = field(default_factory=list)  # (line, variable)


@dataclass
class ImportResult:
    out_dir: Path
    files: list[ImportedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def detect_encoding(data: bytes, source: Path) -> tuple[str, str]:
    """Decode a wizard file; return its text and the encoding name used in ``templates.yml``.

    The one Windows text decoder does the work, strictly (a file must render back byte for
    byte); a pure-ASCII file is recorded as cp1252, the "ANSI" a Windows tool most likely meant.
    """
    text, encoding = decode(data, source, strict=True)
    if encoding == "utf-8" and text.isascii():
        return text, "cp1252"
    return text, encoding


def detect_newline(text: str) -> tuple[str, bool]:
    """The dominant line ending (``crlf``, ``lf`` or ``cr``) and whether several kinds are mixed."""
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    counts = {"crlf": crlf, "lf": lf, "cr": cr}
    used = [kind for kind, count in counts.items() if count]
    if not used:
        return "crlf", False
    return max(used, key=lambda kind: counts[kind]), len(used) > 1


def escape_jinja(text: str) -> str:
    """Make ``{{``, ``{%`` and ``{#`` literal, so the wizard's text renders unchanged."""
    return _JINJA_OPEN.sub(lambda m: "{{ '" + m.group(0) + "' }}", text)


def templatise(text: str, *, is_ini: bool) -> tuple[str, list[tuple[int, str]]]:
    """Escape Jinja syntax; in the INI, turn Password/PasswordTrg values into secret variables."""
    lines = text.split("\n")
    secrets: list[tuple[int, str]] = []
    values: dict[str, str] = {}
    result: list[str] = []
    for number, line in enumerate(lines, start=1):
        match = _SECRET_LINE.match(line) if is_ini else None
        if match and match.group("value"):
            value = match.group("value")
            quote = ""
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                quote, value = value[0], value[1:-1]
            base = SECRET_KEYS[match.group("key").lower()]
            variable = base
            suffix = 2
            while variable in values and values[variable] != value:
                variable = f"{base}_{suffix}"
                suffix += 1
            values[variable] = value
            secrets.append((number, variable))
            result.append(
                escape_jinja(match.group("lead") + match.group("key") + match.group("sep"))
                + quote
                + "{{ "
                + variable
                + " }}"
                + quote
                + escape_jinja(match.group("trail"))
            )
        else:
            result.append(escape_jinja(line))
    return "\n".join(result), secrets


def _canonical_name(name: str) -> str:
    """The name cpuu-fleet runs for each mode; other batch files keep their names."""
    lowered = name.lower()
    if lowered == "cpuu.ini":
        return "CPUU.ini"
    if lowered.endswith(_BATCH_SUFFIXES):
        if "rollback" in lowered or "undo" in lowered:
            return Mode.UNDO.batch_file
        if "clean" in lowered:
            return Mode.CLEANUP.batch_file
        if "update" in lowered:
            return Mode.UPDATE.batch_file
    return name


def import_wizard(
    wizard_dir: str | Path, out_dir: str | Path, *, force: bool = False
) -> ImportResult:
    """Import ``CPUU.ini`` and the batch files of a wizard folder into ``out_dir``."""
    wizard_dir, out_dir = Path(wizard_dir), Path(out_dir)
    if not wizard_dir.is_dir():
        raise InputError("wizard folder not found", where=wizard_dir)
    result = ImportResult(out_dir)
    chosen: dict[str, Path] = {}
    for entry in sorted(wizard_dir.iterdir(), key=lambda p: p.name.lower()):
        if not entry.is_file():
            continue
        lowered = entry.name.lower()
        if lowered != "cpuu.ini" and not lowered.endswith(_BATCH_SUFFIXES):
            result.skipped.append(entry.name)
            continue
        if not _SAFE_NAME.match(entry.name):
            result.warnings.append(f"{entry!r}: skipped, the file name has unusual characters")
            continue
        target = _canonical_name(entry.name)
        if target in chosen:
            raise InputError(
                f"both {chosen[target].name} and {entry.name} would become {target}{TEMPLATE_SUFFIX}",
                where=wizard_dir,
            )
        chosen[target] = entry
    if "CPUU.ini" not in chosen:
        raise InputError("no CPUU.ini in the wizard folder", where=wizard_dir)

    for mode in Mode:
        if mode.batch_file not in chosen:
            kept = out_dir / (mode.batch_file + TEMPLATE_SUFFIX)
            state = f"the existing {kept} is kept" if kept.exists() else f"write {kept} yourself"
            result.warnings.append(
                f"{wizard_dir}: no batch file for {mode.value} ({mode.batch_file}); {state}"
            )
    planned = [
        (target, source, out_dir / (target + TEMPLATE_SUFFIX)) for target, source in chosen.items()
    ]
    if not force:
        existing = [str(path) for _, _, path in planned if path.exists()]
        if existing:
            raise InputError(
                f"template already exists (use --force to replace): {existing[0]}", where=out_dir
            )
    formats = TemplateFormats.load(out_dir) if out_dir.is_dir() else TemplateFormats()
    prepared: list[tuple[ImportedFile, str]] = []
    for target, source, path in planned:
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read ({exc.strerror})", where=source) from None
        text, encoding = detect_encoding(data, source)
        newline, mixed = detect_newline(text)
        if mixed:
            result.warnings.append(
                f"{source}: mixed line endings; rendered files will use {newline.upper()} everywhere"
            )
        normalised = re.sub(r"\r\n?", "\n", text)
        is_ini = target == "CPUU.ini"
        template_text, secrets = templatise(normalised, is_ini=is_ini)
        if is_ini:
            line = asks_credentials(normalised)
            if line is not None:
                result.warnings.append(
                    f"{source}:{line}: AskCredentials is enabled: CPUU will prompt the user, "
                    "unsuitable for an unattended wave"
                )
        fmt = OutputFormat(encoding, newline)
        formats.files[path.name] = fmt
        prepared.append((ImportedFile(source, path, fmt, secrets), template_text))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for imported, template_text in prepared:
            imported.template.write_text(template_text, encoding="utf-8", newline="\n")
            result.files.append(imported)
        (out_dir / FORMATS_FILE).write_text(formats.dump(), encoding="utf-8", newline="\n")
    except OSError as exc:
        raise InputError(f"cannot write templates ({exc.strerror})", where=out_dir) from None
    assert any(f.template.name == INI_TEMPLATE for f in result.files)
    return result
