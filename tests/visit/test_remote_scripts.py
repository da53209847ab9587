"""The PowerShell scripts themselves: they parse, and their param() blocks match the handlers."""

from __future__ import annotations

import re

import pytest
import tree_sitter
import tree_sitter_powershell

from cpuu_fleet.lab.handlers import PARAMETERS
from cpuu_fleet.visit.remote import SCRIPT_NAMES, load_script

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _problems(text: str) -> list[str]:
    tree = PARSER.parse(text.encode("utf-8"))
    return [
        f"{n.type}{' (missing)' if n.is_missing else ''} at line {n.start_point[0] + 1}"
        for n in _walk(tree.root_node)
        if n.type == "ERROR" or n.is_missing
    ]


def test_the_parser_does_catch_broken_powershell():
    assert _problems("function f {\n  if ($a -eq {\n")
    assert _problems("$x = @{ a = 1\n")


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_parses_without_error_or_missing_nodes(name):
    assert _problems(load_script(name)) == []


def _script_parameters(text: str) -> tuple[list[str], list[str]]:
    """(all, mandatory) parameter names of the script's top-level param() block."""
    tree = PARSER.parse(text.encode("utf-8"))
    block = next(n for n in tree.root_node.children if n.type == "param_block")
    names, mandatory = [], []
    for node in _walk(block):
        if node.type != "script_parameter":
            continue
        variable = next(c for c in node.children if c.type == "variable")
        name = variable.text.decode().lstrip("$")
        names.append(name)
        if re.search(r"Mandatory\s*=\s*\$true", node.text.decode(), re.IGNORECASE):
            mandatory.append(name)
    return names, mandatory


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_handler_binds_exactly_the_scripts_parameters(name):
    names, mandatory = _script_parameters(load_script(name))
    allowed, required = PARAMETERS[name]
    assert names == list(allowed)
    assert mandatory == list(required)


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_scripts_are_strict_and_stop_on_errors(name):
    text = load_script(name)
    assert "[CmdletBinding()]" in text
    assert "Set-StrictMode -Version 2.0" in text
    assert "$ErrorActionPreference = 'Stop'" in text
    assert text.isascii()  # Windows PowerShell 5.1 reads BOM-less files as ANSI


def test_error_ids_of_the_contract_are_thrown_by_the_scripts():
    assert "'HashMismatch'" in load_script("upload")
    assert "'DiskFull'" in load_script("upload")
    assert "'InvalidPath'" in load_script("upload")
    assert "'FileNotFound'" in load_script("download")


def test_run_task_registers_one_user_by_sid_never_the_users_group():
    """AzureAD\\Name cannot be mapped by Task Scheduler, and a group principal with a logon trigger
    without user runs CPUU at every logon of everybody: one SID, for the principal and the trigger."""
    text = load_script("run-task")
    assert "New-ScheduledTaskPrincipal -UserId $Sid -LogonType Interactive" in text
    assert "New-ScheduledTaskTrigger -AtLogOn -User $Sid" in text
    assert "$logon.EndBoundary" in text
    assert "-GroupId" not in text and "S-1-5-32-545" not in text
    assert "GetOwnerSid" in text


def test_run_task_kills_the_tree_and_stops_before_unregistering():
    text = load_script("run-task")
    assert "EnginePID" in text and "ParentProcessId" in text
    assert "-MethodName Terminate" in text
    assert "-Priority $taskPriority" in text and "$taskPriority = 5" in text
    # every Stop/Unregister goes through the tree kill
    assert text.count("= Stop-ScheduledTask ") == 1
    remove = text[text.index("'Remove' {") :]
    assert remove.index("= Stop-FleetTaskTree") < remove.index("= Unregister-ScheduledTask")


def _function(text: str, name: str) -> str:
    """The text of ``function <name> { ... }`` in a script (up to its closing brace at column 0)."""
    found = re.search(rf"^function {re.escape(name)} \{{\n.*?^\}}\n", text, re.M | re.S)
    assert found, name
    return found.group(0)


def test_preflight_and_run_task_read_disconnected_sessions_with_the_same_function():
    """Each script is sent as one self-contained text (no include), so quser's reading stands in
    both; they must never drift apart (one assumption, docs/remote-scripts.md)."""
    name = "Get-DisconnectedSessionIds"
    assert _function(load_script("preflight"), name) == _function(load_script("run-task"), name)
