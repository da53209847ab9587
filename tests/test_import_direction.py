"""The direction of imports, held by a test: data flows inputs → plan → visit → journal → report,
and the code must not reach back against that flow, nor mix the lab with the product.

Rules (each a promise a newcomer can rely on when moving a module):
* the bottom (vendor facts, errors, the vocabulary, Windows text, secret masking) imports nothing
  of the project above it;
* the lab imports only the bottom of the product (it plays Windows; it must not lean on the
  controller's internals, or a bug there would hide itself);
* only the wiring (``cli``, ``demo``) reaches into the lab;
* the report reads the journal and collected files: it never imports the wire (sessions, steps,
  the runner, the engine) nor pypsrp;
* nothing below the command line imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cpuu_fleet"
BOTTOM = {"cpuu", "errors", "vocabulary", "wintext", "redact"}
WIRING = {"cli", "demo", "__main__"}
WIRE = {"session", "steps", "hostwork", "runner", "engine", "lease", "connection", "lab"}
WIRE_LIBRARIES = ("pypsrp", "psrpcore", "spnego", "requests")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[_module(path)] = names
    return found


IMPORTS = _imports()


def _top(name: str) -> str | None:
    """``cpuu_fleet.report.frames`` → ``report``; None outside the project."""
    parts = name.split(".")
    return parts[1] if parts[0] == "cpuu_fleet" and len(parts) > 1 else None


def _project(module: str) -> set[str]:
    return {top for name in IMPORTS[module] if (top := _top(name)) is not None}


def _areas(prefix: str) -> list[str]:
    return sorted(m for m in IMPORTS if _top(m) == prefix)


@pytest.mark.parametrize("module", sorted(m for m in IMPORTS if _top(m) in BOTTOM))
def test_the_bottom_imports_nothing_above_it(module):
    assert _project(module) <= BOTTOM


@pytest.mark.parametrize("module", _areas("lab"))
def test_the_lab_leans_only_on_the_bottom_of_the_product(module):
    assert _project(module) <= BOTTOM | {"lab", "remote"}


@pytest.mark.parametrize("module", sorted(m for m in IMPORTS if _top(m) not in WIRING | {"lab"}))
def test_only_the_wiring_reaches_into_the_lab(module):
    assert "lab" not in _project(module)


@pytest.mark.parametrize("module", _areas("report"))
def test_the_report_never_imports_the_wire(module):
    assert not _project(module) & WIRE
    assert not {n for n in IMPORTS[module] if n.split(".")[0] in WIRE_LIBRARIES}


@pytest.mark.parametrize("module", sorted(m for m in IMPORTS if _top(m) not in WIRING))
def test_nothing_below_the_command_line_imports_it(module):
    assert "cli" not in _project(module)


def test_the_rules_see_the_package():
    """The walk found the modules (a moved package must not make every rule pass vacuously)."""
    assert {"cpuu_fleet.cpuu", "cpuu_fleet.report.frames", "cpuu_fleet.lab.handlers"} <= set(
        IMPORTS
    )
