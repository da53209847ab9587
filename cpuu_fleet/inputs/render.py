"""Render what each workstation receives: CPUU.ini and the mode's batch file, per host.

Templates live in one folder (``playbooks/templates/`` by default): ``CPUU.ini.j2``, one batch file
template per mode (``CPUU_Update.bat.j2``, ``CPUU_Rollback.bat.j2``, ``CPUU_Cleanup.bat.j2``), and any
other ``*.j2`` file, which is rendered for every mode. Jinja runs with ``StrictUndefined``: a
variable the host does not have is an error naming the variable, the host and ``template:line``,
never an empty value in an INI.

Windows tools are picky about bytes, so each output file has a format: an encoding (UTF-8, UTF-8
with BOM, UTF-16 LE with BOM as Windows' "Unicode", cp1252 as Western "ANSI") and line endings
(CRLF unless said otherwise). The formats live in ``templates.yml`` beside the templates, which
``cpuu-fleet template import`` writes so that an imported wizard file renders back byte for byte.

Each file is rendered twice: once with secrets revealed (the bytes for the wire) and once with
every secret replaced by ``********`` (the copy that may be written to disk for review).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.credentials import MASK
from cpuu_fleet.inputs.datafiles import LineDict, load_data_file
from cpuu_fleet.inputs.hostvars import (
    JinjaView,
    UndefinedVariable,
    make_environment,
    undefined_name,
)
from cpuu_fleet.redact import REDACTOR
from cpuu_fleet.wintext import ENCODINGS, canonical

INI_TEMPLATE = "CPUU.ini.j2"
FORMATS_FILE = "templates.yml"
TEMPLATE_SUFFIX = ".j2"

NEWLINES = {"crlf": "\r\n", "lf": "\n", "cr": "\r"}


@dataclass(frozen=True)
class OutputFormat:
    """How one rendered file is written: encoding name (see ENCODINGS) and line endings."""

    encoding: str = "utf-8"
    newline: str = "crlf"

    def encode(self, text: str, *, host: str, template: str) -> bytes:
        codec, bom = ENCODINGS[self.encoding]
        text = re.sub(r"\r\n?|\n", "\n", text).replace("\n", NEWLINES[self.newline])
        try:
            return bom + text.encode(codec)
        except UnicodeEncodeError as exc:
            char = exc.object[exc.start]
            line = exc.object[: exc.start].count(NEWLINES[self.newline]) + 1
            raise InputError(
                f"host {host}: character {char!r} (U+{ord(char):04X}) cannot be written in "
                f"{self.encoding}; choose another encoding in {FORMATS_FILE}",
                where=template,
                line=line,
            ) from None


def parse_encoding(name: str) -> str:
    """A ``templates.yml`` encoding, in the one vocabulary of :mod:`cpuu_fleet.wintext`."""
    return canonical(str(name))


@dataclass
class TemplateFormats:
    """The ``templates.yml`` of a templates folder: a default format and one per template."""

    default: OutputFormat = field(default_factory=OutputFormat)
    files: dict[str, OutputFormat] = field(default_factory=dict)

    def for_template(self, name: str) -> OutputFormat:
        return self.files.get(name, self.default)

    @classmethod
    def load(cls, folder: Path) -> TemplateFormats:
        path = folder / FORMATS_FILE
        if not path.exists():
            return cls()
        data = load_data_file(path)
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InputError("expected a mapping with 'defaults' and 'files'", where=path, line=1)
        unknown = set(data) - {"defaults", "files"}
        if unknown:
            key = sorted(unknown, key=str)[0]
            raise InputError(
                f"unexpected key {key!r} (expected defaults, files)",
                where=path,
                line=_line(data, key),
            )
        default = _parse_format(data.get("defaults"), OutputFormat(), path, _line(data, "defaults"))
        files: dict[str, OutputFormat] = {}
        entries = data.get("files") or {}
        if not isinstance(entries, dict):
            raise InputError("'files' must be a mapping", where=path, line=_line(data, "files"))
        for name, spec in entries.items():
            files[str(name)] = _parse_format(spec, default, path, _line(entries, name))
        return cls(default, files)

    def dump(self) -> str:
        """YAML text for ``templates.yml`` (written by the importer; comments say what is allowed)."""
        lines = [
            "# How cpuu-fleet writes each rendered file. encoding: "
            + " | ".join(ENCODINGS)
            + "; newline: crlf | lf | cr",
            "defaults:",
            f"  encoding: {self.default.encoding}",
            f"  newline: {self.default.newline}",
            "files:" if self.files else "files: {}",
        ]
        for name in sorted(self.files):
            spec = self.files[name]
            lines.append(f"  {name}:")
            lines.append(f"    encoding: {spec.encoding}")
            lines.append(f"    newline: {spec.newline}")
        return "\n".join(lines) + "\n"


def _line(mapping: Any, key: Any) -> int | None:
    return mapping.line_of(key) if isinstance(mapping, LineDict) else None


def _parse_format(spec: Any, base: OutputFormat, path: Path, line: int | None) -> OutputFormat:
    if spec is None:
        return base
    if not isinstance(spec, dict):
        raise InputError(
            "a format must be a mapping with encoding and newline", where=path, line=line
        )
    unknown = set(spec) - {"encoding", "newline"}
    if unknown:
        key = sorted(unknown, key=str)[0]
        raise InputError(
            f"unexpected key {key!r} (expected encoding, newline)",
            where=path,
            line=_line(spec, key),
        )
    encoding = base.encoding
    if "encoding" in spec:
        try:
            encoding = parse_encoding(spec["encoding"])
        except InputError as exc:
            raise InputError(exc.message, where=path, line=_line(spec, "encoding")) from None
    newline = str(spec.get("newline", base.newline)).strip().lower()
    if newline not in NEWLINES:
        raise InputError(
            f"unknown newline {spec.get('newline')!r} (expected crlf, lf or cr)",
            where=path,
            line=_line(spec, "newline"),
        )
    return OutputFormat(encoding, newline)


@dataclass
class RenderedFiles:
    """One host's files: ``files`` for the wire (secrets revealed), ``masked`` safe to keep."""

    host: str
    mode: Mode
    files: dict[str, bytes]
    masked: dict[str, bytes]
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"RenderedFiles({self.host!r}, {self.mode.value}, files={sorted(self.files)})"


_ASK_CREDENTIALS = re.compile(
    r"^[ \t]*-?[ \t]*AskCredentials(?![A-Za-z0-9_])[ \t]*[=:]?[ \t]*\"?(?P<value>[^\s\";]*)",
    re.IGNORECASE | re.MULTILINE,
)


def asks_credentials(ini_text: str) -> int | None:
    """Line number where an INI enables ``AskCredentials`` (no value, or 1/yes/true/on), else None.

    The INI syntax is unknown, so this accepts ``AskCredentials``, ``AskCredentials 1``,
    ``-AskCredentials=yes``; a commented line (``;`` or ``#``) does not count.
    """
    for match in _ASK_CREDENTIALS.finditer(ini_text):
        value = match.group("value").lower()
        if value in ("", "1", "yes", "true", "on"):
            return ini_text.count("\n", 0, match.start()) + 1
    return None


def is_template_name(name: str) -> bool:
    return name.endswith(TEMPLATE_SUFFIX) and not name.startswith(".")


class Renderer:
    """Renders the templates of one folder for any host and mode."""

    def __init__(self, templates_dir: str | Path):
        self.templates_dir = Path(templates_dir)
        if not self.templates_dir.is_dir():
            raise InputError("templates folder not found", where=self.templates_dir)
        self.formats = TemplateFormats.load(self.templates_dir)
        self.environment = make_environment(
            jinja2.FileSystemLoader(str(self.templates_dir), encoding="utf-8")
        )

    def template_names(self, mode: Mode) -> list[str]:
        """The INI template, every mode-independent template, and this mode's batch template."""
        names = sorted(p.name for p in self.templates_dir.iterdir() if is_template_name(p.name))
        batch_templates = {m.batch_file + TEMPLATE_SUFFIX for m in Mode}
        wanted = mode.batch_file + TEMPLATE_SUFFIX
        for required in (INI_TEMPLATE, wanted):
            if required not in names:
                raise InputError(f"missing template {required}", where=self.templates_dir)
        common = [n for n in names if n not in batch_templates and n != INI_TEMPLATE]
        return [INI_TEMPLATE, *common, wanted]

    def render_host(
        self, host: Any, mode: Mode | str, extra_vars: Mapping[str, Any] | None = None
    ) -> RenderedFiles:
        """Render every file ``host`` receives in ``mode``.

        Template variables: the host's vars, ``extra_vars`` on top (like Ansible's ``-e``), the
        magic names (``inventory_hostname``, ``group_names``, ``groups``) and ``mode`` (update,
        undo or cleanup) and ``extra_vars`` itself.
        """
        mode = mode if isinstance(mode, Mode) else Mode.parse(mode)
        extra = dict(extra_vars or {})
        magic = {"mode": mode.value, "extra_vars": extra}
        reveal_scope = host.scope(reveal=True, extra=extra, magic=magic)
        masked_scope = host.scope(reveal=False, extra=extra, magic=magic)
        files: dict[str, bytes] = {}
        masked: dict[str, bytes] = {}
        warnings: list[str] = []
        for name in self.template_names(mode):
            output = name[: -len(TEMPLATE_SUFFIX)]
            text = self._render(name, reveal_scope, host.name)
            safe = self._render(name, masked_scope, host.name)
            # Safety net: a revealed secret must not survive in the masked copy in any form.
            # (Very short values are skipped: masking "a" would shred the text, as in redact.py.)
            for secret in sorted(reveal_scope.revealed, key=len, reverse=True):
                if len(secret) >= 4:
                    safe = safe.replace(secret, MASK)
            safe = REDACTOR.scrub(safe) or safe
            fmt = self.formats.for_template(name)
            files[output] = fmt.encode(text, host=host.name, template=self._path(name))
            masked[output] = fmt.encode(safe, host=host.name, template=self._path(name))
            if name == INI_TEMPLATE:
                line = asks_credentials(text)
                if line is not None:
                    warnings.append(
                        f"{self._path(name)}:{line}: host {host.name}: the INI enables "
                        "AskCredentials, so CPUU will prompt the user: unsuitable for an "
                        "unattended wave"
                    )
        return RenderedFiles(host.name, mode, files, masked, warnings)

    def _path(self, name: str) -> str:
        return str(self.templates_dir / name)

    def _render(self, name: str, scope: Any, host: str) -> str:
        try:
            template = self.environment.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise InputError(
                f"template syntax error: {exc.message}", where=self._path(name), line=exc.lineno
            ) from None
        except UnicodeDecodeError:
            raise InputError("template is not UTF-8 text", where=self._path(name)) from None
        try:
            try:
                context = template.new_context(JinjaView(scope), shared=True)
                return self.environment.concat(template.root_render_func(context))  # type: ignore[attr-defined]
            except Exception:
                self.environment.handle_exception()
        except jinja2.UndefinedError as exc:
            line = _template_line(exc, template.filename)
            raise UndefinedVariable(
                undefined_name(exc),
                host=host,
                where=self._path(name),
                line=line,
                note=getattr(scope, "missing_note", None),
            ) from None
        except UndefinedVariable as exc:
            line = _template_line(exc, template.filename)
            raise UndefinedVariable(
                exc.name,
                host=host,
                inside=exc.inside,
                where=self._path(name),
                line=line,
                note=getattr(scope, "missing_note", None),
            ) from None
        except InputError as exc:
            # A missing secret or a bad value met while rendering: say where the template used it.
            line = _template_line(exc, template.filename)
            place = f"{exc.where}: " if exc.where else ""
            raise InputError(f"{place}{exc.message}", where=self._path(name), line=line) from None
        except jinja2.TemplateError as exc:
            line = _template_line(exc, template.filename)
            raise InputError(
                f"host {host}: template error: {exc.message or exc}",
                where=self._path(name),
                line=line,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line where ``exc`` was raised, from Jinja's rewritten traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
