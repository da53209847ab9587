"""Unmodified pypsrp 0.9.1 against the lab, over Basic/HTTP, NTLM/HTTP (encrypted) and HTTPS+CBT."""

from __future__ import annotations

import time

import pytest
from pypsrp.exceptions import WinRMError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool

from cpuu_fleet.lab.fleet import LabFleet
from tests.support.lab import (
    CRASH_SCRIPT,
    ECHO_SCRIPT,
    FAIL_SCRIPT,
    MIXED_SCRIPT,
    SLOW_SCRIPT,
    client_for,
)


def test_execute_ps_returns_output_and_non_terminating_errors(any_fleet: LabFleet) -> None:
    with client_for(any_fleet) as client:
        output, streams, had_errors = client.execute_ps(
            "'hello'; Write-Output 42; Write-Error 'oops'; $env:COMPUTERNAME"
        )
    assert output.splitlines() == ["hello", "42", "PC-0001"]
    assert [str(e) for e in streams.error] == ["oops"]
    assert had_errors is False


def test_execute_ps_environment_reaches_the_script(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client:
        output, _, had_errors = client.execute_ps("$env:WAVE", environment={"WAVE": "wave 2"})
    assert (output, had_errors) == ("wave 2", False)


def test_execute_ps_unknown_command_is_command_not_found(any_fleet: LabFleet) -> None:
    with client_for(any_fleet) as client:
        output, streams, had_errors = client.execute_ps("Get-ServiceTypo")
    assert had_errors is True
    assert output == ""
    error = streams.error[-1]
    assert str(error).startswith(
        "The term 'Get-ServiceTypo' is not recognized as the name of a cmdlet"
    )
    assert (
        error.fq_error
        == "CommandNotFoundException,Microsoft.PowerShell.Commands.InvokeExpressionCommand"
    )
    assert error.reason == "CommandNotFoundException"


def test_pipeline_streams_input_to_handler_and_output_back(any_fleet: LabFleet) -> None:
    with client_for(any_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(ECHO_SCRIPT).add_parameter("Prefix", "got:")
        output = ps.invoke(input=["a", "b", 3])
        assert output == ["got:a", "got:b", "got:3"]
        assert ps.state == PSInvocationState.COMPLETED
        assert ps.had_errors is False


def test_pipeline_streams_objects_warnings_and_errors(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(MIXED_SCRIPT)
        output = ps.invoke()
        assert output[0] == 1
        assert output[1] == {"name": "pc", "ok": True}
        assert output[2] == "after"
        assert [str(w) for w in ps.streams.warning] == ["careful"]
        assert [str(v) for v in ps.streams.verbose] == ["chatty"]
        assert [e.fq_error for e in ps.streams.error] == ["Lab.Soft"]
        assert str(ps.streams.error[0]) == "soft failure"
        assert ps.streams.error[0].message.startswith("InvalidData")
        assert ps.had_errors is False


def test_terminating_error_fails_the_pipeline(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(FAIL_SCRIPT)
        output = ps.invoke()
        assert output == ["before"]
        assert ps.had_errors is True
        assert ps.state == PSInvocationState.FAILED
        error = ps.streams.error[-1]
        assert str(error) == "disk on fire"
        assert error.fq_error == "Lab.DiskOnFire"
        assert error.category == 21  # ResourceUnavailable (MS-PSRP 2.2.3.9)


def test_handler_crash_fails_the_pipeline_instead_of_hanging(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(CRASH_SCRIPT)
        ps.invoke()
        assert ps.had_errors is True
        assert "handler bug" in str(ps.streams.error[-1])
        # the pool still works after a crashed handler
        ps2 = PowerShell(pool)
        ps2.add_script(ECHO_SCRIPT)
        assert ps2.invoke(input=["x"]) == ["x"]


def test_begin_poll_stop_and_reuse_of_the_pool(basic_fleet: LabFleet) -> None:
    client = client_for(basic_fleet, operation_timeout=1, read_timeout=10)
    with client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(SLOW_SCRIPT).add_parameter("Seconds", 60)
        ps.begin_invoke()
        deadline = time.monotonic() + 10
        while not ps.output and time.monotonic() < deadline:
            ps.poll_invoke(timeout=1)  # swallows the OperationTimeout fault while it runs
        assert ps.output == ["started"]
        assert ps.state == PSInvocationState.RUNNING
        ps.stop()
        assert ps.state == PSInvocationState.STOPPED
        ps2 = PowerShell(pool)
        ps2.add_script(ECHO_SCRIPT)
        assert ps2.invoke(input=["still usable"]) == ["still usable"]
        assert pool.is_alive() is True


def test_receive_long_poll_times_out_with_windows_fault(basic_fleet: LabFleet) -> None:
    client = client_for(basic_fleet, operation_timeout=1, read_timeout=10)
    with client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(SLOW_SCRIPT).add_parameter("Seconds", 1.5)
        started = time.monotonic()
        output = ps.invoke()
        assert output == ["started", "finished"]
        assert time.monotonic() - started >= 1.5


def test_stop_and_close_free_the_server_pipeline(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(SLOW_SCRIPT).add_parameter("Seconds", 60)
        ps.begin_invoke()
        ps.stop()
        ps.close()
        shell = basic_fleet.host("pc-0001").endpoint.dispatcher.shells[pool.id.upper()]
        deadline = time.monotonic() + 5
        while shell.pipelines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert shell.pipelines == {}


def test_is_alive_false_after_close(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client:
        pool = RunspacePool(client.wsman)
        pool.open()
        assert pool.is_alive() is True
        dispatcher = basic_fleet.host("pc-0001").endpoint.dispatcher
        dispatcher.shells.pop(pool.id.upper()).close()  # the host forgot the shell
        assert pool.is_alive() is False


@pytest.mark.parametrize("size", [0, 26, 5 * 1024 * 1024])
def test_copy_then_fetch_round_trip_is_byte_exact(
    any_fleet: LabFleet, local_file, tmp_path, size: int
) -> None:
    src = local_file(size)
    with client_for(any_fleet) as client:
        remote = client.copy(str(src), "C:\\Windows\\Temp\\payload.bin")
        assert remote == "C:\\Windows\\Temp\\payload.bin"
        workstation = any_fleet.host("pc-0001").workstation
        assert workstation.fs.read_bytes(remote) == src.read_bytes()
        if size == 0:
            # fetch.ps1 throws on an empty file (TransformFinalBlock($null...)): so does the lab
            with pytest.raises(WinRMError, match="TransformFinalBlock"):
                client.fetch(remote, str(tmp_path / "back.bin"))
            return
        client.fetch(remote, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_copy_relative_path_lands_in_users_documents(basic_fleet: LabFleet, local_file) -> None:
    with client_for(basic_fleet) as client:
        remote = client.copy(str(local_file(10)), "notes.txt")
    assert remote == "C:\\Users\\labadmin\\Documents\\notes.txt"


def test_fetch_missing_file_fails_like_windows(basic_fleet: LabFleet, tmp_path) -> None:
    with client_for(basic_fleet) as client, pytest.raises(WinRMError) as info:
        client.fetch("C:\\nope.txt", str(tmp_path / "x"))
    assert "The path at 'C:\\nope.txt' does not exist" in str(info.value)


def test_copy_into_a_missing_folder_fails_like_file_move(basic_fleet: LabFleet, local_file) -> None:
    with client_for(basic_fleet) as client, pytest.raises(WinRMError) as info:
        client.copy(str(local_file(10)), "C:\\No\\Such\\Folder\\x.bin")
    assert (
        'Exception calling "Move" with "2" argument(s): "Could not find a part of the path."'
        in str(info.value)
    )


def test_execute_cmd_runs_the_tiny_cmd_shell(basic_fleet: LabFleet, local_file) -> None:
    with client_for(basic_fleet) as client:
        client.copy(str(local_file(26)), "C:\\Windows\\Temp\\letters.txt")
        stdout, stderr, rc = client.execute_cmd(
            "powershell.exe Get-Content C:\\Windows\\Temp\\letters.txt"
        )
        assert rc == 0
        assert stdout.endswith("\r\n") and stderr == ""
        assert client.execute_cmd("hostname") == ("PC-0001\r\n", "", 0)
        stdout, stderr, rc = client.execute_cmd("robocopy", environment=None)
    assert rc == 1
    assert stdout == ""
    assert stderr.startswith("'robocopy' is not recognized as an internal or external command")


def test_idle_shell_is_deleted_after_its_idle_timeout(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client:
        pool = RunspacePool(client.wsman, idle_timeout=1)
        pool.open()
        dispatcher = basic_fleet.host("pc-0001").endpoint.dispatcher
        assert pool.id.upper() in dispatcher.shells
        deadline = time.monotonic() + 10
        while pool.id.upper() in dispatcher.shells and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.is_alive() is False


def test_exchange_keys_completes_the_session_key(ntlm_fleet: LabFleet) -> None:
    with client_for(ntlm_fleet) as client, RunspacePool(client.wsman) as pool:
        pool.exchange_keys()
        assert pool._key_exchanged is True  # pypsrp can now serialise SecureStrings


def test_runspace_limits_can_be_changed(basic_fleet: LabFleet) -> None:
    with client_for(basic_fleet) as client, RunspacePool(client.wsman) as pool:
        pool.max_runspaces = 3
        pool.min_runspaces = 2
        assert (pool.min_runspaces, pool.max_runspaces) == (2, 3)
