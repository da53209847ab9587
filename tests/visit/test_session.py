"""The session layer over real pypsrp: error classes, non-terminating errors, our deadlines."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from cpuu_fleet.lab import registry
from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.redact import REDACTOR
from cpuu_fleet.visit.session import (
    HostSession,
    Interrupted,
    SessionError,
)
from cpuu_fleet.visit.steps.push import OutgoingFile, upload
from cpuu_fleet.vocabulary import ErrorClass


def _test_script(name: str) -> str:
    return f"# cpuu-fleet: {name}\n[CmdletBinding()]\nparam()\n"


@registry.register("engine-test-nonterminating")
def _nonterminating(workstation, call, host):
    host.write_output("partial output")
    host.write_error("Access to the path is denied.", error_id="UnauthorizedAccess")


@registry.register("engine-test-slow")
def _slow(workstation, call, host):
    host.sleep(30)


@registry.register("engine-test-quick")
def _quick(workstation, call, host):
    host.write_output("ready")


@registry.register("engine-test-cpuu-like")
def _cpuu_like(workstation, call, host):
    host.sleep(3.5)
    host.write_output("done")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet(1, workdir=tmp_path_factory.mktemp("lab")) as lab:
        yield lab


def _session(fleet, *, real_scripts: bool = False, **overrides) -> HostSession:
    kwargs = fleet.client_kwargs(fleet.hosts[0])
    server = kwargs.pop("server")
    kwargs.update(overrides)
    if real_scripts:
        return HostSession(fleet.hosts[0].name, server, kwargs)
    return HostSession(fleet.hosts[0].name, server, kwargs, script_loader=_test_script)


def test_non_terminating_error_is_a_remote_error(fleet):
    with _session(fleet) as session, pytest.raises(SessionError) as caught:
        session.run("engine-test-nonterminating")
    error = caught.value
    assert error.error_class is ErrorClass.REMOTE and not error.transient
    assert "denied" in error.message and error.output == ["partial output"]


def test_our_deadline_stops_the_pipeline_and_the_pool_stays_usable(fleet):
    with _session(fleet) as session:
        started = time.monotonic()
        with pytest.raises(SessionError) as caught:
            session.run("engine-test-slow", deadline=time.monotonic() + 1)
        assert caught.value.error_class is ErrorClass.TIMEOUT and caught.value.transient
        assert time.monotonic() - started < 15
        with pytest.raises(SessionError, match="denied"):
            session.run("engine-test-nonterminating")  # the same pool still answers


def test_disk_full_on_the_host_is_a_remote_error_with_its_id(fleet):
    workstation = fleet.hosts[0].workstation
    data = os.urandom(400_000)
    item = OutgoingFile("big.bin", len(data), hashlib.sha256(data).hexdigest(), data=data)
    saved = workstation.fs.reserved_bytes
    workstation.fs.reserved_bytes += workstation.fs.free_bytes - 100_000
    try:
        with _session(fleet, real_scripts=True) as session, pytest.raises(SessionError) as caught:
            upload(session, "C:\\ProgramData\\cpuu-fleet\\t", (item,))
    finally:
        workstation.fs.reserved_bytes = saved
    assert caught.value.error_class is ErrorClass.REMOTE
    assert "not enough space" in caught.value.message
    assert caught.value.error_id and "DiskFull" in caught.value.error_id


def test_tls_verification_failure_is_a_certificate_error(tmp_path):
    with LabFleet(1, https=True, workdir=tmp_path) as https_fleet:
        kwargs = https_fleet.client_kwargs(https_fleet.hosts[0])
        server = kwargs.pop("server")
        kwargs["cert_validation"] = True  # the system's CAs do not know the lab's CA
        with pytest.raises(SessionError) as caught:
            HostSession("pc-0001", server, kwargs).open()
    assert caught.value.error_class is ErrorClass.CERTIFICATE and not caught.value.transient


def test_repr_and_errors_never_show_the_password(fleet):
    session = _session(fleet, password="wrong-Secret-123")
    assert "wrong-Secret-123" not in repr(session)
    REDACTOR.add("wrong-Secret-123")
    with pytest.raises(SessionError) as caught:
        session.open()
    assert caught.value.error_class is ErrorClass.AUTHENTICATION
    assert "wrong-Secret-123" not in str(caught.value)


def test_proxy_settings_come_from_the_environment_once(monkeypatch):
    """The per-request environment lookup is switched off, its answer kept: a proxy the
    environment names is still used, and NO_PROXY still bypasses it."""
    from pypsrp.wsman import WSMan

    from cpuu_fleet.visit.session import _pin_proxy_settings

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    wsman = WSMan("127.0.0.5", ssl=False, auth="ntlm", username="u", password="p")
    _pin_proxy_settings(wsman)
    session = wsman.transport.session
    assert session is not None and not session.trust_env
    assert session.proxies.get("http") == "http://proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "127.0.0.5")
    bypassed = WSMan("127.0.0.5", ssl=False, auth="ntlm", username="u", password="p")
    _pin_proxy_settings(bypassed)
    assert not bypassed.transport.session.proxies.get("http")


@pytest.mark.parametrize(
    "value",
    [
        "QUJD+/09" * 1000,
        "C:\\ProgramData\\cpuu-fleet\\abc",
        "snake_case _x0041_ and _X",
        "tab\there, newline\nthere, DEL\x7f, NUL\x00",
        "café ☕ 𝄞",
        "",
        " ",
        "a_x0041_ line\r\n\tof a script 𝄞 $_\n" * 200,  # long: escaped once, then looked up
        "x" * 300_000 + "\n",  # longer than the cache takes
    ],
)
def test_quick_string_serializer_writes_the_same_clixml_as_pypsrp(value):
    from pypsrp.messages import Destination, Message, PipelineInput
    from pypsrp.serializer import Serializer

    from cpuu_fleet.visit.session import QuickStringSerializer

    pool, pipeline = (
        "A" * 8 + "-0000-0000-0000-" + "0" * 12,
        "B" * 8 + "-0000-0000-0000-" + "0" * 12,
    )

    def packed(serializer):
        return Message(Destination.SERVER, pool, pipeline, PipelineInput(data=value), serializer)

    assert packed(QuickStringSerializer()).pack() == packed(Serializer()).pack()
    assert packed(QuickStringSerializer()).pack() == packed(Serializer()).pack()  # cached


def test_every_remote_script_is_sent_as_the_same_clixml_as_pypsrp_writes():
    """The scripts are the long strings the serializer keeps escaped: the text as pypsrp would
    send it, the first time and every time after."""
    from pypsrp.serializer import Serializer

    from cpuu_fleet.visit.remote import load_script
    from cpuu_fleet.visit.session import QuickStringSerializer

    for name in ("run-task", "upload", "download", "preflight"):
        script = load_script(name)
        for _ in range(2):
            quick = QuickStringSerializer()._serialize_string(script)
            assert quick == Serializer()._serialize_string(script), name


def test_an_open_session_packs_with_the_quick_serializer(fleet):
    from cpuu_fleet.visit.session import QuickStringSerializer

    with _session(fleet) as session:
        pool = session._pool
        assert isinstance(pool._serializer, QuickStringSerializer)
        assert pool._fragmenter.serializer is pool._serializer
        with pytest.raises(SessionError, match="denied"):
            session.run("engine-test-nonterminating")  # still talks to the host


def _receives(monkeypatch) -> list[str]:
    from pypsrp.wsman import WSMan

    seen: list[str] = []
    invoke = WSMan.invoke

    def counting(self, action, *args, **kwargs):
        seen.append(action.rsplit("/", 1)[-1])
        return invoke(self, action, *args, **kwargs)

    monkeypatch.setattr(WSMan, "invoke", counting)
    return seen


def test_an_abandonable_wait_still_long_polls_for_the_whole_operation_timeout(fleet, monkeypatch):
    """Waiting for CPUU (abandonable by Ctrl-C) costs one Receive per OperationTimeout, not one
    every few seconds: a 3.5 s pipeline answers in a single Receive."""
    with _session(fleet) as session:
        session.run(
            "engine-test-quick"
        )  # a pool's first pipeline also gets Windows' progress record
        actions = _receives(monkeypatch)
        result = session.run("engine-test-cpuu-like", abandon=threading.Event())
    assert result.output == ["done"]
    assert actions.count("Receive") == 1


def test_abandoning_does_not_wait_for_the_long_poll(fleet):
    abandon = threading.Event()
    timer = threading.Timer(0.3, abandon.set)
    with _session(fleet) as session:
        started = time.monotonic()
        timer.start()
        with pytest.raises(Interrupted):
            session.run("engine-test-slow", abandon=abandon)
        # far sooner than the 20 s OperationTimeout the Receive is long-polling for
        assert time.monotonic() - started < 10
