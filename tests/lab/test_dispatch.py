"""cpuu-fleet's own remote scripts, sent by pypsrp exactly as the engine sends them, reach the
model's handlers through the lab's dispatch (marker -> registry)."""

from __future__ import annotations

import base64
import hashlib

from pypsrp.powershell import PowerShell, RunspacePool

from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.visit.remote import load_script
from tests.support.lab import client_for


def test_preflight_script_runs_its_handler(ntlm_fleet: LabFleet) -> None:
    with client_for(ntlm_fleet, "pc-0002") as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(load_script("preflight"))
        ps.add_parameter("Directory", "C:\\ProgramData\\cpuu-fleet\\v1")
        ps.add_parameter("StateDirectory", "C:\\ProgramData\\cpuu-fleet\\state")
        output = ps.invoke()
    assert ps.had_errors is False, [str(e) for e in ps.streams.error]
    facts = output[0]
    assert facts["ComputerName"] == "PC-0002"
    assert facts["StagedFiles"] == {}
    assert isinstance(facts["FreeBytes"], int)


def test_upload_script_streams_headers_and_chunks(basic_fleet: LabFleet) -> None:
    data = bytes(range(256)) * 1000
    chunks = [
        base64.b64encode(data[i : i + 100_000]).decode() for i in range(0, len(data), 100_000)
    ]
    header = {
        "Path": "payload\\cpuu.bin",
        "Length": len(data),
        "Sha256": hashlib.sha256(data).hexdigest(),
    }
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(load_script("upload")).add_parameter(
            "Directory", "C:\\ProgramData\\cpuu-fleet\\v1"
        )
        output = ps.invoke(input=[header, *chunks])
    assert ps.had_errors is False, [str(e) for e in ps.streams.error]
    assert output[0]["Sha256"] == header["Sha256"]
    fs = basic_fleet.host("pc-0001").workstation.fs
    assert fs.read_bytes("C:\\ProgramData\\cpuu-fleet\\v1\\payload\\cpuu.bin") == data
