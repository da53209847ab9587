"""Generate tests/data/ps51_allowlist.json: what Windows PowerShell 5.1 documents, as facts.

The static check of the remote scripts (tests/visit/test_remote_ps51_static.py) needs, without the
network, the cmdlets Windows PowerShell 5.1 ships, their parameter sets (names, mandatory,
switch, position, aliases) and the "Accepted values" of their parameters, plus the types
ConstrainedLanguage mode allows. Microsoft publishes all of this as markdown (platyPS schema 2.0):

* ``MicrosoftDocs/PowerShell-Docs``: ``reference/5.1/<Module>/<Cmdlet>.md`` and
  ``reference/5.1/Microsoft.PowerShell.Core/About/about_{CommonParameters,Language_Modes}.md``;
* ``MicrosoftDocs/windows-powershell-docs``: ``docset/winserver2019-ps/ScheduledTasks/*.md`` (the
  module of Windows 10 1809+ / Server 2019).

This script reads both repositories from local git directories (a clone or a bare mirror; it reads
the committed tree with ``git show``, not a work tree), extracts names and value lists only (facts;
no prose is copied) and writes a compact JSON that records the commit of each repository. Whole
modules are taken, not just what the scripts use today, so a documented cmdlet a script starts to
use passes without regenerating.

Usage::

    python .ci/ps51_allowlist.py --powershell-docs PATH --windows-docs PATH \
        [--out tests/data/ps51_allowlist.json]

Where the docs contradict themselves the script makes these choices:

* A parameter's sets are the union of the SYNTAX blocks and its ``Parameter Sets:`` line (the 5.1
  docs list provider parameters such as ``Get-ChildItem -File`` in one SYNTAX block but ``(All)``
  in the table, and PowerShell offers them in every set).
* Mandatory and positional come from the SYNTAX block of each set (they are per set there); the
  order of the positional parameters is their documented ``Position`` (SYNTAX order is not).
* Sections whose text says the parameter was added in PowerShell 6 or 7 are left out (the 5.1
  about_CommonParameters documents ``-ProgressAction``, "added in PowerShell 7.4"), and the
  ``ActionPreference`` values are those of the enum table of the same page (which has no
  ``Break``, a PowerShell 7 value that the 5.1 page still lists in ``Accepted values``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

PS_DOCS_MODULES = (
    "CimCmdlets",
    "Microsoft.PowerShell.Core",
    "Microsoft.PowerShell.Management",
    "Microsoft.PowerShell.Security",
    "Microsoft.PowerShell.Utility",
)
PS_DOCS_ROOT = "reference/5.1"
ABOUT = f"{PS_DOCS_ROOT}/Microsoft.PowerShell.Core/About"
SCHEDULED_TASKS = "docset/winserver2019-ps/ScheduledTasks"
ALL_SETS = "__AllParameterSets"
NEWER_ONLY = re.compile(
    r"\bparameter\s+was\s+(?:added|introduced)\s+in\s+PowerShell\s+(?:6|7)", re.IGNORECASE
)

# PowerShell's type accelerators for the names about_Language_Modes lists (the page names the
# accelerator; a script may spell the full type). Facts of System.Management.Automation's
# TypeAccelerators table; only names that appear in the page's list are used.
ACCELERATORS = {
    "adsi": "System.DirectoryServices.DirectoryEntry",
    "adsisearcher": "System.DirectoryServices.DirectorySearcher",
    "array": "System.Array",
    "bigint": "System.Numerics.BigInteger",
    "bool": "System.Boolean",
    "byte": "System.Byte",
    "char": "System.Char",
    "cimclass": "Microsoft.Management.Infrastructure.CimClass",
    "cimconverter": "Microsoft.Management.Infrastructure.CimConverter",
    "ciminstance": "Microsoft.Management.Infrastructure.CimInstance",
    "cimsession": "Microsoft.Management.Infrastructure.CimSession",
    "cimtype": "Microsoft.Management.Infrastructure.CimType",
    "cultureinfo": "System.Globalization.CultureInfo",
    "datetime": "System.DateTime",
    "decimal": "System.Decimal",
    "double": "System.Double",
    "float": "System.Single",
    "guid": "System.Guid",
    "hashtable": "System.Collections.Hashtable",
    "int": "System.Int32",
    "int16": "System.Int16",
    "int32": "System.Int32",
    "int64": "System.Int64",
    "ipaddress": "System.Net.IPAddress",
    "ipendpoint": "System.Net.IPEndPoint",
    "long": "System.Int64",
    "mailaddress": "System.Net.Mail.MailAddress",
    "nullstring": "System.Management.Automation.Language.NullString",
    "object[]": "System.Object[]",
    "physicaladdress": "System.Net.NetworkInformation.PhysicalAddress",
    "pscredential": "System.Management.Automation.PSCredential",
    "pscustomobject": "System.Management.Automation.PSObject",
    "psobject": "System.Management.Automation.PSObject",
    "regex": "System.Text.RegularExpressions.Regex",
    "sbyte": "System.SByte",
    "securestring": "System.Security.SecureString",
    "single": "System.Single",
    "string": "System.String",
    "switch": "System.Management.Automation.SwitchParameter",
    "timespan": "System.TimeSpan",
    "uint16": "System.UInt16",
    "uint32": "System.UInt32",
    "uint64": "System.UInt64",
    "uri": "System.Uri",
    "version": "System.Version",
    "void": "System.Void",
    "wildcardpattern": "System.Management.Automation.WildcardPattern",
    "xml": "System.Xml.XmlDocument",
}


class Repo:
    """A git directory read at HEAD."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.git_dir), *args],
            check=True,
            capture_output=True,
            text=True,
            encoding="utf-8",
        ).stdout

    def commit(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def files(self, prefix: str) -> list[str]:
        return self._git("ls-tree", "-r", "--name-only", "HEAD", prefix).split()

    def show(self, path: str) -> str:
        return self._git("show", f"HEAD:{path}")


def _section(text: str, heading: str) -> str:
    """The body of a ``## heading`` section (up to the next ``## ``)."""
    match = re.search(rf"^## {heading}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


def _syntax_sets(text: str) -> dict[str, dict]:
    """Parameter sets from the SYNTAX section: {set: {params: {name: {...}}, default: bool}}."""
    body = _section(text, "SYNTAX")
    sets: dict[str, dict] = {}
    parts = re.split(r"^### (.+?)\s*$", body, flags=re.M)
    chunks = (
        [(ALL_SETS, parts[0])]
        if len(parts) == 1
        else list(zip(parts[1::2], parts[2::2], strict=True))
    )
    for heading, chunk in chunks:
        block = re.search(r"```[a-z]*\n(.*?)```", chunk, re.S)
        if not block:
            continue
        # "Path (Default) - FileSystem provider": one set, Path, whose provider adds parameters.
        default = "(Default)" in heading
        name = re.sub(r"\s+-\s+.*providers?$", "", heading.replace("(Default)", "")).strip()
        params = _syntax_params(block.group(1))
        if name in sets:
            params = _merge(sets[name]["params"], params)
            default = default or sets[name]["default"]
        sets[name] = {"params": params, "default": default}
    return sets


def _merge(one: dict[str, dict], other: dict[str, dict]) -> dict[str, dict]:
    """One set documented once per provider: mandatory only where every provider says so."""
    merged = {}
    for name in [*one, *(k for k in other if k not in one)]:
        a, b = one.get(name), other.get(name)
        if a and b:
            merged[name] = {
                "mandatory": a["mandatory"] and b["mandatory"],
                "positional": a["positional"] or b["positional"],
                "switch": a["switch"] or b["switch"],
            }
        else:
            merged[name] = {**(a or b), "mandatory": False}
    return merged


def _syntax_params(block: str) -> dict[str, dict]:
    """{name: {mandatory, positional, switch}} from one syntax line (brackets = optional)."""
    tokens = re.findall(
        r"<[^>]*>|\[|\]|-[A-Za-z][\w]*", block.split(None, 1)[1] if " " in block else ""
    )
    params: dict[str, dict] = {}
    depth = 0
    for i, token in enumerate(tokens):
        if token == "[":
            depth += 1
        elif token == "]":
            depth -= 1
        elif token.startswith("-"):
            before = tokens[i - 1] if i else ""
            after = tokens[i + 1 : i + 3]
            positional = before == "[" and after[:1] == ["]"] and after[1:2] != ["["]
            positional = positional and len(after) > 1 and after[1].startswith("<")
            value = after[1] if positional else (after[0] if after else "")
            group_depth = depth - 1 if positional else depth
            params[token[1:]] = {
                "mandatory": group_depth == 0,
                "positional": positional,
                "switch": not value.startswith("<"),
            }
    return params


def _yaml_blocks(text: str) -> dict[str, dict]:
    """Per ``### -Name`` section of PARAMETERS: aliases, accepted values, sets, type."""
    body = _section(text, "PARAMETERS")
    result: dict[str, dict] = {}
    for name, chunk in re.findall(r"^### -(\w+)\s*$(.*?)(?=^### |\Z)", body, re.M | re.S):
        if NEWER_ONLY.search(chunk):
            continue
        info = {
            "aliases": set(),
            "accepted": [],
            "sets": set(),
            "type": "",
            "pipeline": False,
            "position": {},
        }
        for yaml in re.findall(r"```yaml\n(.*?)```", chunk, re.S):
            fields = dict(re.findall(r"^([A-Za-z ]+):[ \t]*(.*)$", yaml, re.M))
            info["type"] = fields.get("Type", info["type"]).strip()
            info["aliases"] |= {
                a.strip() for a in fields.get("Aliases", "").split(",") if a.strip()
            }
            sets = fields.get("Parameter Sets", "(All)").strip()
            block_sets = {s.strip() for s in sets.split(",") if s.strip()}
            info["sets"] |= block_sets
            position = fields.get("Position", "").strip()
            if position.isdigit():
                info["position"].update(dict.fromkeys(block_sets, int(position)))
            accepted = [
                v.strip() for v in fields.get("Accepted values", "").split(",") if v.strip()
            ]
            info["accepted"] = info["accepted"] or accepted
            info["pipeline"] |= fields.get("Accept pipeline input", "").strip().startswith("True")
        result[name] = info
    return result


def parse_cmdlet(text: str, module: str) -> tuple[str, dict] | None:
    """One cmdlet page → (name, entry), or None for a page that documents no cmdlet."""
    title = re.search(r"^title:\s*(\S+)\s*$", text, re.M) or re.search(r"^# (\S+)\s*$", text, re.M)
    sets = _syntax_sets(text)
    if not title or not sets:
        return None
    yaml = _yaml_blocks(text)
    # Names ignore case, as PowerShell does; the PARAMETERS heading's spelling wins (Get-Verb's
    # SYNTAX writes -verb, its PARAMETERS section -Verb).
    spelling = {n.lower(): n for n in yaml}
    for body in sets.values():
        body["params"] = {spelling.get(k.lower(), k): v for k, v in body["params"].items()}
    names = {p for s in sets.values() for p in s["params"]}
    parameters: dict[str, dict] = {}
    for name in sorted(names | set(yaml), key=lambda n: (n.lower(), n)):
        info = yaml.get(
            name,
            {"aliases": set(), "accepted": [], "sets": {"(All)"}, "type": "", "pipeline": False},
        )
        in_sets = {s for s, body in sets.items() if name in body["params"]}
        listed = info["sets"]
        in_sets |= set(sets) if "(All)" in listed else (listed & set(sets))
        if not in_sets:
            in_sets = set(sets)  # a documented parameter whose set name matches no SYNTAX block
        switch = any(
            sets[s]["params"][name]["switch"] for s in in_sets if name in sets[s]["params"]
        ) or info["type"].endswith("SwitchParameter")
        entry: dict = {"sets": sorted(in_sets)}
        if switch:
            entry["switch"] = True
        if info["aliases"]:
            entry["aliases"] = sorted(info["aliases"], key=str.lower)
        if info["accepted"]:
            entry["accepted"] = info["accepted"]
        if info["pipeline"]:
            entry["pipeline"] = True
        parameters[name] = entry
    out_sets = {}
    for set_name, body in sets.items():
        mandatory = sorted(p for p, v in body["params"].items() if v["mandatory"])
        positional = sorted(
            (p for p, v in body["params"].items() if v["positional"]),
            key=lambda p: _position(yaml.get(p), set_name),
        )
        out_sets[set_name] = {"mandatory": mandatory, "positional": positional}
    default = next((s for s, b in sets.items() if b["default"]), next(iter(sets)))
    return title.group(1), {
        "module": module,
        "default_set": default,
        "sets": out_sets,
        "parameters": parameters,
    }


def _position(info: dict | None, set_name: str) -> int:
    """The documented Position of a parameter in a set (SYNTAX order is not position order)."""
    positions = info["position"] if info else {}
    return positions.get(set_name, positions.get("(All)", 1000))


def common_parameters(text: str) -> dict[str, dict]:
    """Common and risk-mitigation parameters from about_CommonParameters (5.1 values only)."""
    enum = re.findall(r"^\|\s*`(\w+)`\s*\|\s*\d+\s*\|", text, re.M)
    result = {}
    for name, chunk in re.findall(r"^### -(\w+)\s*$(.*?)(?=^##+ |\Z)", text, re.M | re.S):
        if NEWER_ONLY.search(chunk):
            continue
        yaml = "\n".join(re.findall(r"```yaml\n(.*?)```", chunk, re.S))
        fields = dict(re.findall(r"^([A-Za-z ]+):[ \t]*(.*)$", yaml, re.M))
        entry: dict = {
            "aliases": [a.strip() for a in fields.get("Aliases", "").split(",") if a.strip()]
        }
        if fields.get("Type", "").strip().endswith("SwitchParameter"):
            entry["switch"] = True
        if fields.get("Type", "").strip() == "ActionPreference":
            entry["accepted"] = enum
        result[name] = entry
    return result


def constrained_language_types(text: str) -> dict[str, list[str]]:
    """The types and COM ProgIDs about_Language_Modes allows in ConstrainedLanguage mode."""
    section = re.search(r"^Allowed types:\s*$(.*?)^Special cases:", text, re.M | re.S)
    body = section.group(1) if section else ""
    types_part, _, com_part = body.partition("COM object types")
    names = re.findall(r"^- `\[([^\]`]+(?:\[\])?)\]`", types_part, re.M)
    full = sorted({ACCELERATORS.get(n.lower(), n) for n in names} | set(names), key=str.lower)
    return {"types": full, "com": re.findall(r"^- `([\w.]+)`", com_part, re.M)}


def build(ps_docs: Repo, win_docs: Repo) -> dict:
    commands: dict[str, dict] = {}
    sources = [(ps_docs, f"{PS_DOCS_ROOT}/{m}", m) for m in PS_DOCS_MODULES]
    sources.append((win_docs, SCHEDULED_TASKS, "ScheduledTasks"))
    for repo, prefix, module in sources:
        for path in repo.files(prefix):
            if "/About/" in path or not path.endswith(".md"):
                continue
            parsed = parse_cmdlet(repo.show(path), module)
            if parsed:
                commands[parsed[0]] = parsed[1]
    return {
        "generated_by": ".ci/ps51_allowlist.py",
        "sources": {
            "MicrosoftDocs/PowerShell-Docs": {
                "commit": ps_docs.commit(),
                "paths": [f"{PS_DOCS_ROOT}/{m}/*.md" for m in PS_DOCS_MODULES]
                + [f"{ABOUT}/about_CommonParameters.md", f"{ABOUT}/about_Language_Modes.md"],
            },
            "MicrosoftDocs/windows-powershell-docs": {
                "commit": win_docs.commit(),
                "paths": [f"{SCHEDULED_TASKS}/*.md"],
            },
        },
        "common_parameters": common_parameters(ps_docs.show(f"{ABOUT}/about_CommonParameters.md")),
        "constrained_language": constrained_language_types(
            ps_docs.show(f"{ABOUT}/about_Language_Modes.md")
        ),
        "commands": dict(sorted(commands.items(), key=lambda kv: kv[0].lower())),
    }


def _dump(data: dict) -> str:
    """JSON with one command per line: small diffs when the docs change, still one file."""
    lines = ["{"]
    items = list(data.items())
    for index, (key, value) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        if key == "commands":
            lines.append(f"{json.dumps(key)}: {{")
            entries = list(value.items())
            for i, (name, entry) in enumerate(entries):
                tail = "," if i < len(entries) - 1 else ""
                lines.append(
                    f" {json.dumps(name)}: {json.dumps(entry, separators=(',', ':'))}{tail}"
                )
            lines.append(f"}}{comma}")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, indent=1)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--powershell-docs", type=Path, required=True, help="git dir of PowerShell-Docs"
    )
    parser.add_argument(
        "--windows-docs", type=Path, required=True, help="git dir of windows-powershell-docs"
    )
    parser.add_argument("--out", type=Path, default=Path("tests/data/ps51_allowlist.json"))
    args = parser.parse_args()
    data = build(Repo(args.powershell_docs), Repo(args.windows_docs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dump(data), encoding="utf-8")
    print(f"{len(data['commands'])} commands written to {args.out}")


if __name__ == "__main__":
    main()
