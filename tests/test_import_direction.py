"""The direction of imports, held by a test: data flows inputs → engine → visit → journal →
report, and the code must not reach back against that flow, nor mix the lab with the product.

Each area of ``cpuu_fleet`` may import only the areas below it (a promise a newcomer can rely on
when adding or moving a module):

* the bottom (vocabulary, errors, vendor facts, Windows text, redaction, limits, file names, the
  journal, the audit's judgement of where profiles point) imports nothing of the project above
  it;
* ``inputs/`` imports only the bottom: an input is plain data by the time it is planned with;
* ``visit/`` imports the bottom and the inputs (the journal is in the bottom);
* ``engine/`` imports the bottom, the inputs, the visit, and the report it writes at the end of
  a run (the report imports nothing of the engine);
* ``report/`` reads the journal and collected files: the bottom and the inputs at most, never the
  wire (``visit``, ``engine``, pypsrp and its transports);
* ``lab/`` leans only on the bottom (it plays Windows; it must not lean on the controller's
  internals, or a bug there would hide itself);
* ``sites/`` (relays) imports the bottom, the inputs, the visit and the engine: it dispatches
  the engine's host visits and runs them on relays; only ``cli/`` imports it;
* only ``cli/`` (the wiring) reaches into the lab, and nothing imports ``cli/``.

Inside ``visit/steps/`` (one module a step), the steps import none of one another but
``context`` (what they all share) and ``push`` (its file list and ``upload``: what preflight
hashes, what collect leaves out, how run places Cleanup's marker); ``push`` imports only
``context``, and ``context`` no step at run time (``STEP_IMPORTS``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cpuu_fleet"
BOTTOM = {
    "vocabulary", "errors", "cpuu", "wintext", "redact", "limits", "filenames", "journal", "audit",
    "journal_schema", "journal_pg", "journal_copy",
}  # fmt: skip
ALLOWED = {
    "bottom": {"bottom"},
    "inputs": {"bottom", "inputs"},
    "visit": {"bottom", "inputs", "visit"},
    "engine": {"bottom", "inputs", "visit", "engine", "report"},
    "report": {"bottom", "inputs", "report"},
    "lab": {"bottom", "lab"},
    "sites": {"bottom", "inputs", "visit", "engine", "sites"},
    "cli": {"bottom", "inputs", "visit", "engine", "report", "lab", "sites", "cli"},
    "main": {"cli"},
}
"""Each area and the areas it may import (itself included)."""
WIRE_LIBRARIES = ("pypsrp", "psrpcore", "spnego", "requests")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the names it imports (at the top, in functions alike)."""
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


def area(name: str) -> str | None:
    """``cpuu_fleet.report.frames`` → ``report``, ``cpuu_fleet.journal`` → ``bottom`` (and so is
    the package's own ``__version__``); None outside the project, ``?`` for a top-level module no
    rule knows."""
    parts = name.split(".")
    if parts[0] != "cpuu_fleet":
        return None
    if len(parts) == 1 or parts[1] in BOTTOM or parts[1] == "__version__":
        return "bottom"
    if parts[1] == "__main__":
        return "main"
    return parts[1] if parts[1] in ALLOWED else "?"


def violations(imports: dict[str, set[str]], of_area: str) -> dict[str, list[str]]:
    """The modules of ``of_area`` that import a project module outside their allowed areas."""
    found = {}
    for module, names in sorted(imports.items()):
        if area(module) != of_area:
            continue
        bad = sorted(n for n in names if area(n) is not None and area(n) not in ALLOWED[of_area])
        if bad:
            found[module] = bad
    return found


STEPS = "cpuu_fleet.visit.steps"
STEP_IMPORTS = {
    "__init__": set(),
    "context": set(),
    "explain": set(),
    "push": {"context"},
    "preflight": {"context", "push"},
    "run": {"context", "push"},
    "collect": {"context", "push"},
}
"""Each module of ``visit/steps/`` and the step modules it may import at run time: a step that
needs another's code gets it moved to ``context`` rather than an import that could turn into a
cycle (``context`` names ``PreflightResult`` for type checking only)."""


def _step_imports() -> dict[str, set[str]]:
    """Each module of ``visit/steps/`` and the step modules it imports, outside ``if
    TYPE_CHECKING:`` blocks (never run, so never a cycle)."""
    found: dict[str, set[str]] = {}
    for path in (PACKAGE / "visit" / "steps").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for inner in ast.walk(node)
        }
        names: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module == STEPS:
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(STEPS + "."):
                names.add(node.module.split(".")[3])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                names.update(
                    a.name.split(".")[3] for a in node.names if a.name.startswith(STEPS + ".")
                )
        found[path.stem] = names
    return found


def step_violations(imports: dict[str, set[str]]) -> dict[str, list[str]]:
    """The step modules that import a step module ``STEP_IMPORTS`` does not allow them (a module
    missing from it is allowed none)."""
    found = {}
    for module, names in sorted(imports.items()):
        bad = sorted(names - STEP_IMPORTS.get(module, set()) - {module})
        if bad:
            found[module] = bad
    return found


def test_the_steps_import_one_another_only_through_context_and_push():
    found = _step_imports()
    assert set(found) == set(STEP_IMPORTS)  # every step module has its rule, and the walk saw them
    assert step_violations(found) == {}


def test_a_step_importing_another_is_found():
    """The steps' rule can fail: run importing collect, push importing preflight, and a new step
    module importing run are each against it."""
    assert step_violations(
        {"run": {"context", "collect"}, "push": {"preflight"}, "audit": {"run"}}
    ) == {"run": ["collect"], "push": ["preflight"], "audit": ["run"]}


@pytest.mark.parametrize("of_area", sorted(ALLOWED))
def test_each_area_imports_only_the_areas_below_it(of_area):
    assert violations(IMPORTS, of_area) == {}


def test_every_module_belongs_to_an_area():
    """A new top-level module is placed in the bottom (BOTTOM) or in a package, not left out."""
    assert sorted(m for m in IMPORTS if area(m) == "?") == []


def test_the_report_never_imports_the_wire_libraries():
    wired = {
        module: sorted(n for n in names if n.split(".")[0] in WIRE_LIBRARIES)
        for module, names in IMPORTS.items()
        if area(module) == "report"
    }
    assert {module: names for module, names in wired.items() if names} == {}


def test_no_module_imports_ansible():
    """ansible-core is GPL and only the tests' oracle (the dev extra): the MIT package reads
    Ansible's formats from their documentation and never imports it."""
    assert (
        sorted(
            m for m, names in IMPORTS.items() if any(n.split(".")[0] == "ansible" for n in names)
        )
        == []
    )


@pytest.mark.parametrize(
    ("module", "imported", "of_area"),
    [
        ("cpuu_fleet.inputs.inventory", "cpuu_fleet.visit.session", "inputs"),
        ("cpuu_fleet.journal", "cpuu_fleet.engine.runner", "bottom"),
        ("cpuu_fleet.report.frames", "cpuu_fleet.engine.wave", "report"),
        ("cpuu_fleet.lab.handlers", "cpuu_fleet.visit.steps.context", "lab"),
        ("cpuu_fleet.engine.runner", "cpuu_fleet.cli.progress", "engine"),
        ("cpuu_fleet.visit.steps.run", "cpuu_fleet.lab.fleet", "visit"),
        ("cpuu_fleet.engine.wave", "cpuu_fleet.sites.dispatch", "engine"),
        ("cpuu_fleet.sites.relay", "cpuu_fleet.cli.relay", "sites"),
    ],
)
def test_an_upward_import_is_found(module, imported, of_area):
    """The check itself can fail: each import here goes against the flow."""
    assert violations({module: {imported}}, of_area) == {module: [imported]}


def test_the_rules_see_the_package():
    """The walk found the modules (a moved package must not make every rule pass vacuously)."""
    assert {
        "cpuu_fleet.cpuu",
        "cpuu_fleet.inputs.inventory",
        "cpuu_fleet.visit.steps.run",
        "cpuu_fleet.engine.runner",
        "cpuu_fleet.report.frames",
        "cpuu_fleet.lab.handlers",
        "cpuu_fleet.cli.play",
        "cpuu_fleet.sites.relay",
    } <= set(IMPORTS)
