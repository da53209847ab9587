"""Helpers for the lab's protocol tests: a pypsrp client for a lab host and test-only script
handlers (registered under ``labtest-*`` names no real script uses).

Imported as ``tests.support.lab`` (``tests/lab/conftest.py`` imports it, which registers the
handlers).
"""

from __future__ import annotations

from pypsrp.client import Client

from cpuu_fleet.lab import registry
from cpuu_fleet.lab.contract import PipelineHost, ScriptCall, ScriptFailed
from cpuu_fleet.lab.fleet import LabFleet


def client_for(fleet: LabFleet, host: str = "pc-0001", **overrides: object) -> Client:
    kwargs = fleet.client_kwargs(host)
    kwargs.update(overrides)
    return Client(**kwargs)


# -- test-only script handlers (registered under names no real script uses) ---------------------

ECHO_SCRIPT = '# cpuu-fleet: labtest-echo\nparam($Prefix)\nprocess { "$Prefix$_" }\n'
MIXED_SCRIPT = "# cpuu-fleet: labtest-mixed\nWrite-Output 1; Write-Warning w; Write-Error e\n"
FAIL_SCRIPT = "# cpuu-fleet: labtest-fail\nthrow 'disk on fire'\n"
CRASH_SCRIPT = "# cpuu-fleet: labtest-crash\n"
SLOW_SCRIPT = "# cpuu-fleet: labtest-slow\nStart-Sleep -Seconds $Seconds\n"
BIG_SCRIPT = "# cpuu-fleet: labtest-big\n"


@registry.register("labtest-echo")
def _echo(workstation: object, call: ScriptCall, host: PipelineHost) -> None:
    prefix = call.param("Prefix", "")
    for item in call.input:
        host.write_output(f"{prefix}{item}")


@registry.register("labtest-mixed")
def _mixed(workstation: object, call: ScriptCall, host: PipelineHost) -> None:
    host.write_output(1)
    host.write_output({"name": "pc", "ok": True})
    host.write_warning("careful")
    host.write_verbose("chatty")
    host.write_error("soft failure", error_id="Lab.Soft", category="InvalidData")
    host.write_output("after")


@registry.register("labtest-fail")
def _fail(workstation: object, call: ScriptCall, host: PipelineHost) -> None:
    host.write_output("before")
    raise ScriptFailed("disk on fire", error_id="Lab.DiskOnFire", category="ResourceUnavailable")


@registry.register("labtest-crash")
def _crash(workstation: object, call: ScriptCall, host: PipelineHost) -> None:
    raise ZeroDivisionError("handler bug")


@registry.register("labtest-slow")
def _slow(workstation: object, call: ScriptCall, host: PipelineHost) -> None:
    host.write_output("started")
    host.sleep(float(call.param("Seconds", 30)))
    host.write_output("finished")


@registry.register("labtest-big")
def _big(workstation: object, call: ScriptCall, host: PipelineHost) -> None:
    for index in range(int(call.param("Count", 10))):
        host.write_output(f"{index:06d}" + "x" * int(call.param("Size", 1000)))
