r"""A static check of PowerShell text against what Windows PowerShell 5.1 documents.

tree-sitter-powershell parses PowerShell 7 (it accepts ``&&``/``||`` as pipeline chains and reads
a script's ``begin {}`` block as a command named ``begin``), so "parses" says little about
Windows PowerShell 5.1. This module walks the tree and checks, against the allow-list generated
from Microsoft's docs (``.ci/ps51_allowlist.py`` → ``tests/data/ps51_allowlist.json``):

* every command is a documented 5.1 cmdlet, a function defined in the same script, or a native
  program on the reviewed list (by file name: ``& "$env:SystemRoot\System32\icacls.exe"`` is
  ``icacls.exe``); aliases (``?``, ``%``, ``gci``) are refused, scripts spell cmdlets; a command
  whose name is computed at run time (``& $command``, ``& { }``) is refused: it cannot be checked;
* every named parameter exists (or is an alias); an abbreviation is resolved as PowerShell does
  (a unique prefix of a name or alias; an ambiguous prefix is refused, as PowerShell refuses it);
* the parameters used together fit one parameter set, and that set's mandatory parameters are
  bound by name, by a positional argument, or (after ``|``) possibly by the pipeline;
* a literal value of a parameter with "Accepted values" is one of them (ignoring case);
* splatting ``@name`` is resolved where ``$name`` is a literal hashtable in the same script, plus
  ``$name['Key'] = ...`` assignments (all keys of all assignments in the script, whatever the
  branch: a conservative union); a splat that cannot be resolved is refused;
* PowerShell 6/7-only syntax is refused: ``&&``, ``||``, ``??``, ``??=``, ``?.``, ``?[``, the
  ternary ``? :``, ``clean {}`` blocks, ``ForEach-Object -Parallel``, the automatic variables
  ``$IsWindows``/``$IsLinux``/``$IsMacOS``/``$IsCoreCLR``/``$PSStyle``; so is any text tree-sitter
  cannot parse.

It also lists every static .NET member use (``[Type]::Member``) and ``New-Object`` type, each
marked with whether ConstrainedLanguage mode allows the type (about_Language_Modes' list, in the
allow-list file). Arrays count as their element type (an assumption: the page is silent).

Positional binding is approximated by counting: positional arguments may not outnumber the
set's positional parameters that are not bound by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import tree_sitter
import tree_sitter_powershell

DATA = Path(__file__).resolve().parents[1] / "data"
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
NAMED_BLOCKS = {"begin", "process", "end", "dynamicparam"}
RISK_PARAMETERS = {"whatif", "confirm"}
PS7_VARIABLES = {"$iswindows", "$islinux", "$ismacos", "$iscoreclr", "$psstyle"}
BLANKED = {"comment", "string_literal", "generic_token", "command_name", "variable"}
PS7_LEXICAL = (
    (re.compile(r"\?\?=?"), "null-coalescing operator ?? / ??= (PowerShell 7)"),
    (re.compile(r"\?(?=\.\w|\[)"), "null-conditional member access ?. / ?[] (PowerShell 7)"),
    (re.compile(r"(?<=\s)\?(?=\s)"), "ternary operator ? : (PowerShell 7)"),
    (re.compile(r"(?i)(?<![\w$-])clean\s*\{"), "clean {} block (PowerShell 7.3)"),
)


@dataclass(frozen=True)
class Finding:
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class DotNetUse:
    """A static .NET member use or a New-Object type, and whether ConstrainedLanguage allows it."""

    line: int
    kind: str  # "static" ([Type]::Member) or "new" (New-Object -TypeName / -ComObject)
    type: str
    member: str
    clm_allowed: bool

    def __str__(self) -> str:
        what = f"[{self.type}]::{self.member}" if self.member else f"New-Object {self.type}"
        allowed = "allowed" if self.clm_allowed else "NOT allowed"
        return f"line {self.line}: {what} (ConstrainedLanguage: {allowed})"

    @property
    def key(self) -> str:
        """Spelling-independent name: ``[Convert]`` and ``[System.Convert]`` are one entry."""
        name = re.sub(r"^system\.", "", self.type.lower())
        return f"{name}::{self.member.lower()}" if self.member else f"new {name}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    dotnet: list[DotNetUse] = field(default_factory=list)
    calls: int = 0


@dataclass(frozen=True)
class Argument:
    """A named parameter as written, with its literal values (None when not a literal)."""

    name: str
    values: tuple[str, ...] | None
    line: int
    has_value: bool = False  # something followed the name
    colon: bool = False  # -Name:value (a switch takes a value only this way)


class Allowlist:
    """The generated JSON, looked up as PowerShell does: ignoring case."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.commands = {name.lower(): (name, entry) for name, entry in data["commands"].items()}
        common = data["common_parameters"]
        self.common = {n: e for n, e in common.items() if n.lower() not in RISK_PARAMETERS}
        self.clm_types = {t.lower() for t in data["constrained_language"]["types"]}
        self.clm_com = {c.lower() for c in data["constrained_language"]["com"]}

    def clm_allows(self, type_name: str) -> bool:
        name = type_name.lower().strip()
        while name.endswith("[]") and name not in self.clm_types:
            name = name[:-2]
        return name in self.clm_types or f"system.{name}" in self.clm_types


@cache
def load_allowlist() -> Allowlist:
    return Allowlist(json.loads((DATA / "ps51_allowlist.json").read_text(encoding="utf-8")))


def _walk(node: tree_sitter.Node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8")


def _line(node: tree_sitter.Node) -> int:
    return node.start_point[0] + 1


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def literal_values(node: tree_sitter.Node) -> tuple[str, ...] | None:
    """The literal strings a value node consists of, or None when it computes anything."""
    if node.type == "generic_token":
        return (_text(node),)
    values: list[str] = []
    for sub in _walk(node):
        if sub.type in {"variable", "sub_expression", "parenthesized_expression", "script_block"}:
            return None
        if sub.type == "string_literal":
            text = _text(sub)
            if text.startswith('"') and "$" in text:
                return None
            values.append(_unquote(text))
        elif sub.type in {"decimal_integer_literal", "generic_token"}:
            values.append(_text(sub))
    return tuple(values) or None


# --- the script's own definitions -------------------------------------------------------------


def _param_names(node: tree_sitter.Node) -> set[str]:
    names = set()
    for sub in _walk(node):
        if sub.type == "script_parameter":
            variable = next(c for c in sub.children if c.type == "variable")
            names.add(_text(variable).lstrip("$").lower())
    return names


def script_functions(root: tree_sitter.Node) -> dict[str, tuple[set[str], bool]]:
    """{function name: (its parameter names, advanced: takes the common parameters)}."""
    functions = {}
    for node in _walk(root):
        if node.type != "function_statement":
            continue
        name = _text(next(c for c in node.children if c.type == "function_name")).lower()
        params = set()
        for child in node.children:
            if child.type == "function_parameter_declaration":
                params |= _param_names(child)
            if child.type == "script_block":
                block = next((c for c in child.children if c.type == "param_block"), None)
                params |= _param_names(block) if block else set()
        advanced = bool(re.search(r"\[(CmdletBinding|Parameter)\b", _text(node), re.I))
        functions[name] = (params, advanced)
    return functions


def splat_tables(root: tree_sitter.Node) -> dict[str, dict[str, tuple[str, ...] | None]]:
    """{variable: {key: literal values}} for ``$v = @{...}`` and ``$v['Key'] = ...`` in the script."""
    tables: dict[str, dict[str, tuple[str, ...] | None]] = {}
    for node in _walk(root):
        if node.type != "assignment_expression" or len(node.children) < 3:
            continue
        left, right = _text(node.children[0]).strip(), node.children[2]
        whole = re.fullmatch(r"\$(\w+)", left)
        if whole:
            hashes = [n for n in _walk(right) if n.type == "hash_literal_expression"]
            if hashes and _text(hashes[0]) == _text(right).strip():
                table = tables.setdefault(whole.group(1).lower(), {})
                table.update(_hash_entries(hashes[0]))
            continue
        element = re.fullmatch(r"\$(\w+)(?:\[\s*['\"](\w+)['\"]\s*\]|\.(\w+))", left)
        if element and element.group(1).lower() in tables:
            key = element.group(2) or element.group(3)
            tables[element.group(1).lower()][key] = literal_values(right)
    return tables


def _hash_entries(node: tree_sitter.Node) -> dict[str, tuple[str, ...] | None]:
    body = next((c for c in node.children if c.type == "hash_literal_body"), None)
    entries = {}
    for entry in body.children if body else []:
        if entry.type != "hash_entry":
            continue
        key = _unquote(_text(entry.children[0]).strip())
        entries[key] = literal_values(entry.children[2])
    return entries


def hashtable_keys(root: tree_sitter.Node) -> set[str]:
    """Every key of a hashtable literal, and of a ``$h['Key'] =`` assignment, in the script."""
    keys = set()
    for node in _walk(root):
        if node.type == "hash_entry":
            keys.add(_unquote(_text(node.children[0]).strip()))
        elif node.type == "element_access":
            match = re.fullmatch(r"\$\w+\[\s*['\"](\w+)['\"]\s*\]", _text(node))
            if match:
                keys.add(match.group(1))
    return keys


def string_literals(root: tree_sitter.Node) -> set[str]:
    return {_unquote(_text(n)) for n in _walk(root) if n.type == "string_literal"}


# --- commands ---------------------------------------------------------------------------------


@dataclass
class Invocation:
    name: str
    line: int
    arguments: list[Argument]
    positional: int
    after_pipe: bool
    unresolved_splats: list[str]


def _invocation(node: tree_sitter.Node, tables: dict) -> Invocation | None:
    head = node.children[0]
    if head.type == "command_name":
        name = _text(head)
        if re.match(r"[\d$(@'\"]", name):
            return None  # tree-sitter reads "1..3 | ..." as a command named 1..3: an expression
    elif head.type == "command_invokation_operator":
        name = _unquote(_text(node.children[1]).strip())
    else:
        return None
    # A program by path ("$env:SystemRoot\System32\icacls.exe") is checked by its file name; a
    # name still computed at run time (& $command) cannot be checked and is refused.
    name = re.split(r"[\\/]", name)[-1]
    elements = next((c for c in node.children if c.type == "command_elements"), None)
    items = [c for c in elements.children if c.type not in {"redirection"}] if elements else []
    previous = node.prev_sibling
    invocation = Invocation(
        name, _line(node), [], 0, previous is not None and _text(previous) == "|", []
    )
    pending: str | None = None
    colon = False
    for item in items:
        if item.type == "command_argument_sep":
            colon = _text(item).strip() == ":"
            continue
        if item.type == "command_parameter":
            if pending is not None:
                invocation.arguments.append(Argument(pending, None, _line(item)))
            pending = _text(item)[1:].rstrip(":")
            continue
        splat = re.fullmatch(r"@(\w+)", _text(item).strip())
        if splat:
            table = tables.get(splat.group(1).lower())
            if table is None:
                invocation.unresolved_splats.append(splat.group(1))
            else:
                for key, values in table.items():
                    invocation.arguments.append(Argument(key, values, _line(item), True, True))
        elif pending is not None:
            invocation.arguments.append(
                Argument(pending, literal_values(item), _line(item), True, colon)
            )
            pending = None
        else:
            invocation.positional += 1
    if pending is not None:
        invocation.arguments.append(Argument(pending, None, invocation.line))
    return invocation


def _resolve(written: str, candidates: dict[str, dict]) -> tuple[str | None, str]:
    """PowerShell's parameter name resolution: exact name or alias, else a unique prefix."""
    low = written.lower()
    for name, entry in candidates.items():
        if low == name.lower() or low in (a.lower() for a in entry.get("aliases", ())):
            return name, ""
    matches = {
        name
        for name, entry in candidates.items()
        if name.lower().startswith(low)
        or any(a.lower().startswith(low) for a in entry.get("aliases", ()))
    }
    if len(matches) == 1:
        return matches.pop(), ""
    if matches:
        return None, f"-{written} is ambiguous ({', '.join(sorted(matches))})"
    return None, f"-{written} is not a parameter"


def _bindings(inv: Invocation, command: str, entry: dict, allow: Allowlist, report: Report) -> None:
    """Parameters, parameter set and accepted values of one cmdlet call."""
    candidates = {**entry["parameters"], **allow.common}
    used: dict[str, Argument] = {}
    positional = inv.positional
    for argument in inv.arguments:
        if command == "ForEach-Object" and "parallel".startswith(argument.name.lower()):
            report.findings.append(
                Finding(argument.line, "ps7", "ForEach-Object -Parallel (PowerShell 7)")
            )
        name, problem = _resolve(argument.name, candidates)
        if name is None:
            report.findings.append(Finding(argument.line, "parameter", f"{command}: {problem}"))
            continue
        if candidates[name].get("switch") and argument.has_value and not argument.colon:
            positional += 1  # "-Recurse foo": foo is a positional argument, not the switch's value
            argument = Argument(argument.name, None, argument.line)
        used[name] = argument
        accepted = candidates[name].get("accepted")
        if accepted and argument.values:
            allowed = {a.lower() for a in accepted}
            for value in argument.values:
                if value.lower() not in allowed:
                    report.findings.append(
                        Finding(
                            argument.line,
                            "value",
                            f"{command} -{name} {value}: not one of {', '.join(accepted)}",
                        )
                    )
    own = [n for n in used if n in entry["parameters"]]
    sets = set(entry["sets"])
    for name in own:
        sets &= set(entry["parameters"][name]["sets"])
    if not sets:
        report.findings.append(
            Finding(
                inv.line,
                "parameter-set",
                f"{command}: no parameter set takes {_listed(own)} together",
            )
        )
        return
    if not any(_satisfiable(entry, s, own, positional, inv.after_pipe) for s in sets):
        report.findings.append(
            Finding(
                inv.line,
                "mandatory",
                f"{command}: every parameter set that fits {_listed(own)} lacks a mandatory parameter",
            )
        )


def _listed(names: list[str]) -> str:
    return " ".join(f"-{n}" for n in names) or "no named parameter"


def _satisfiable(
    entry: dict, set_name: str, own: list[str], positional: int, after_pipe: bool
) -> bool:
    """Whether this set can bind: positional arguments fit, mandatory parameters are given."""
    body = entry["sets"][set_name]
    free_positions = [p for p in body["positional"] if p not in own]
    if positional > len(free_positions):
        return False
    by_position = set(free_positions[:positional])
    for name in body["mandatory"]:
        piped = after_pipe and entry["parameters"].get(name, {}).get("pipeline")
        if name not in own and name not in by_position and not piped:
            return False
    return True


def _check_invocation(
    inv: Invocation, functions: dict, allow: Allowlist, native: set[str], report: Report
) -> None:
    for splat in inv.unresolved_splats:
        report.findings.append(
            Finding(
                inv.line, "splat", f"{inv.name}: @{splat} is not a literal hashtable of this script"
            )
        )
    low = inv.name.lower()
    if re.search(r"[$({]", inv.name):
        report.findings.append(
            Finding(
                inv.line, "command", f"{inv.name}: a command computed at run time cannot be checked"
            )
        )
        return
    if low in functions:
        params, advanced = functions[low]
        candidates = {p: {} for p in params} | (dict(allow.common) if advanced else {})
        for argument in inv.arguments:
            name, problem = _resolve(argument.name, candidates)
            if name is None:
                report.findings.append(
                    Finding(argument.line, "parameter", f"function {inv.name}: {problem}")
                )
        return
    if low in allow.commands and inv.unresolved_splats:
        return  # what the splat binds is unknown: the set and mandatory checks would guess
    if low in allow.commands:
        command, entry = allow.commands[low]
        _bindings(inv, command, entry, allow, report)
        return
    if low in native:
        return
    report.findings.append(
        Finding(
            inv.line,
            "command",
            f"{inv.name}: not a Windows PowerShell 5.1 cmdlet documented in the allow-list, nor a function of this script",
        )
    )


# --- .NET -------------------------------------------------------------------------------------


def dotnet_uses(
    root: tree_sitter.Node, invocations: list[Invocation], allow: Allowlist
) -> list[DotNetUse]:
    uses = []
    for node in _walk(root):
        if (
            node.type != "type_literal"
            or node.next_sibling is None
            or node.next_sibling.type != "::"
        ):
            continue
        member = node.next_sibling.next_sibling
        spec = next(c for c in node.children if c.type == "type_spec")
        type_name = _text(spec)
        uses.append(
            DotNetUse(_line(node), "static", type_name, _text(member), allow.clm_allows(type_name))
        )
    for inv in invocations:
        if inv.name.lower() != "new-object":
            continue
        for argument in inv.arguments:
            resolved, _ = _resolve(argument.name, allow.commands["new-object"][1]["parameters"])
            if resolved in {"TypeName", "ComObject"} and argument.values:
                name = argument.values[0]
                allowed = (
                    name.lower() in allow.clm_com
                    if resolved == "ComObject"
                    else allow.clm_allows(name)
                )
                uses.append(DotNetUse(argument.line, "new", name, "", allowed))
    return sorted(uses, key=lambda u: u.line)


# --- syntax -----------------------------------------------------------------------------------


def _blanked(text: bytes, root: tree_sitter.Node) -> str:
    """The script with comments, strings, bare words, command names and variables blanked."""
    chars = bytearray(text)
    for node in _walk(root):
        if node.type in BLANKED:
            for i in range(node.start_byte, node.end_byte):
                if chars[i] not in b"\r\n":
                    chars[i] = 0x20
    return chars.decode("utf-8", errors="replace")


def syntax_findings(text: bytes, root: tree_sitter.Node) -> list[Finding]:
    findings = []
    for node in _walk(root):
        if node.type == "pipeline_chain_tail":
            findings.append(
                Finding(_line(node), "ps7", f"pipeline chain {_text(node).strip()} (PowerShell 7)")
            )
        elif node.type == "variable" and _text(node).lower() in PS7_VARIABLES:
            findings.append(
                Finding(_line(node), "ps7", f"{_text(node)} exists from PowerShell 6/7")
            )
        elif node.type == "ERROR" or node.is_missing:
            findings.append(Finding(_line(node), "parse", f"does not parse: {_text(node)[:40]!r}"))
    blanked = _blanked(text, root)
    for pattern, message in PS7_LEXICAL:
        for match in pattern.finditer(blanked):
            findings.append(Finding(blanked.count("\n", 0, match.start()) + 1, "ps7", message))
    return findings


def _named_block(node: tree_sitter.Node) -> bool:
    """tree-sitter reads a script's ``begin {}`` as a command named begin: it is a block."""
    return node.children[0].type == "command_name" and _text(
        node.children[0]
    ).lower() in NAMED_BLOCKS | {"clean"}


def _named_block_findings(node: tree_sitter.Node) -> list[Finding]:
    words = [_text(node.children[0])] + [
        _text(c)
        for c in _walk(node)
        if c.type == "generic_token" and c.parent is not None and c.parent.parent is node
    ]
    return [
        Finding(_line(node), "ps7", "clean {} block (PowerShell 7.3)")
        for w in words
        if w.lower() == "clean"
    ]


def check(
    text: str, native: set[str] | frozenset[str] = frozenset(), allow: Allowlist | None = None
) -> Report:
    """Everything this module checks, for one script's text."""
    allow = allow or load_allowlist()
    source = text.encode("utf-8")
    root = PARSER.parse(source).root_node
    report = Report(findings=syntax_findings(source, root))
    functions = script_functions(root)
    tables = splat_tables(root)
    invocations = []
    for node in _walk(root):
        if node.type != "command":
            continue
        if _named_block(node):
            report.findings.extend(_named_block_findings(node))
            continue
        inv = _invocation(node, tables)
        if inv is None:
            continue
        invocations.append(inv)
        _check_invocation(inv, functions, allow, {n.lower() for n in native}, report)
    report.calls = len(invocations)
    report.dotnet = dotnet_uses(root, invocations, allow)
    return report
