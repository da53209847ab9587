"""WS-Management SOAP for the lab: parse pypsrp's requests, dispatch them, answer like Windows.

The element layout, namespace prefixes, fault codes and CreateResponse Shell fields are those of
the real Windows exchanges in ``shared/fixtures/windows-wsman`` (pypsrp's recordings), so a client
that only works against Windows still works here. PSRP itself is handled by :mod:`.psrp`; this
module only moves base64 blobs in and out of SOAP.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from xml.sax.saxutils import escape

from cpuu_fleet.lab.dispatch import Resolver, resolve_pipeline
from cpuu_fleet.lab.psrp import LabShell, OperationTimedOut, ShellSettings, UnknownCommand
from cpuu_fleet.lab.winrs import WinRSShell

log = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "ps": "http://schemas.microsoft.com/powershell",
    "cfg": "http://schemas.microsoft.com/wbem/wsman/1/config",
}
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
SHELL_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CONFIG_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/config"
PS_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
CMD_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SIGNAL_TERMINATE = SHELL + "signal/Terminate"
SIGNAL_PS_CTRL_C = "powershell/signal/ctrl_c"
SIGNAL_CTRL_C = SHELL + "signal/ctrl_c"
COMMAND_DONE = SHELL + "CommandState/Done"

SERVER_MAX_ENVELOPE = 512_000
"""Windows' default MaxEnvelopeSizekb = 500 (see test_wsman_update_envelope_size_500.yml)."""

RECEIVE_BUDGET_CHARS = 176_000
"""Windows answers a Receive with about 175 KB of stream data (4-5 fragments of 32 KiB)."""


@dataclass(frozen=True)
class FaultSpec:
    """One kind of WS-Management fault as Windows words it."""

    code: int
    subcode: str
    reason: str
    sender: bool
    fault_detail: str | None = None
    provider_fault: bool = False


TIMED_OUT = FaultSpec(
    2150858793,
    "w:TimedOut",
    "The WS-Management service cannot complete the operation within the time specified in "
    "OperationTimeout.  ",
    sender=False,
)
INVALID_SELECTORS = FaultSpec(
    2150858843,
    "w:InvalidSelectors",
    "The WS-Management service cannot process the request because the request contained invalid "
    "selectors for the resource. ",
    sender=True,
    fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    provider_fault=True,
)
ACTION_NOT_SUPPORTED = FaultSpec(
    2150858771,
    "a:ActionNotSupported",
    "The action is not supported by the service. ",
    sender=True,
    fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/ActionMismatch",
)
INVALID_MESSAGE = FaultSpec(
    2150858817,
    "w:SchemaValidationError",
    "The SOAP XML in the message does not match the corresponding XML schema definition. Change "
    "the XML and retry. ",
    sender=True,
)
ALREADY_EXISTS = FaultSpec(
    2150858780,
    "w:AlreadyExists",
    "The WS-Management service cannot create the resource because it already exists. ",
    sender=True,
)
INTERNAL_ERROR = FaultSpec(
    2150858753,
    "w:InternalError",
    "The WS-Management service cannot process the request. ",
    sender=False,
)


class WSManFaultError(Exception):
    """Raised inside the dispatcher; becomes an HTTP 500 SOAP fault."""

    def __init__(self, spec: FaultSpec, message: str | None = None):
        super().__init__(message or spec.reason)
        self.spec = spec
        self.message = message or spec.reason


@dataclass
class WSManRequest:
    """The parts of a pypsrp request envelope the lab acts on."""

    action: str
    message_id: str
    resource_uri: str
    to: str
    max_envelope_size: int
    operation_timeout: float
    selectors: dict[str, str]
    options: dict[str, str]
    body: ET.Element

    @property
    def short_action(self) -> str:
        return self.action.rsplit("/", 1)[-1]


_DURATION = re.compile(r"^PT(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?$")


def parse_duration(text: str | None, default: float = 60.0) -> float:
    """``PT20S`` / ``PT1M30.5S`` -> seconds (xs:duration as pypsrp writes it)."""
    if not text:
        return default
    match = _DURATION.match(text.strip())
    if not match:
        return default
    return float(match.group("m") or 0) * 60 + float(match.group("s") or 0)


def parse_request(data: bytes) -> WSManRequest:
    """Parse a SOAP envelope; a malformed one raises :class:`WSManFaultError`."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WSManFaultError(INVALID_MESSAGE) from exc
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise WSManFaultError(INVALID_MESSAGE)

    def text(path: str) -> str:
        element = header.find(path, NS)
        return (element.text or "").strip() if element is not None else ""

    selectors = {
        sel.get("Name", ""): (sel.text or "").strip()
        for sel in header.findall("w:SelectorSet/w:Selector", NS)
    }
    options = {
        opt.get("Name", ""): (opt.text or "").strip()
        for opt in header.findall("w:OptionSet/w:Option", NS)
    }
    try:
        max_envelope = int(text("w:MaxEnvelopeSize") or 153600)
    except ValueError:
        max_envelope = 153600
    return WSManRequest(
        action=text("a:Action"),
        message_id=text("a:MessageID"),
        resource_uri=text("w:ResourceURI"),
        to=text("a:To"),
        max_envelope_size=max_envelope,
        operation_timeout=parse_duration(text("w:OperationTimeout")),
        selectors=selectors,
        options=options,
        body=body,
    )


def _envelope(action: str, relates_to: str, body: str, extra_ns: str = "") -> bytes:
    """A response envelope with Windows' prefixes and header order.

    No ``p:ActivityId``: most recordings (Server 2019 among them) have none."""
    return (
        '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        f"{extra_ns}"
        'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
        'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        f"<s:Header><a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


_NS_X = 'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
_NS_RSP = 'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
_NS_FAULT = (
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing" '
    'xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" '
)


def fault_envelope(error: WSManFaultError, relates_to: str, machine: str) -> bytes:
    """A SOAP fault laid out as Windows lays it out (HTTP 500 carries it)."""
    spec = error.spec
    message = escape(error.message)
    inner = (
        '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        f'Code="{spec.code}" Machine="{escape(machine)}"><f:Message>'
    )
    if spec.provider_fault:
        detail_msg = (
            '<f:ProviderFault provider="Shell provider" path="%systemroot%\\system32\\WsmSvc.dll">'
            f"{inner}{message}</f:Message></f:WSManFault></f:ProviderFault>"
        )
    else:
        detail_msg = message
    detail = ""
    if spec.fault_detail:
        detail += f"<w:FaultDetail>{spec.fault_detail}</w:FaultDetail>"
    detail += f"{inner}{detail_msg}</f:Message></f:WSManFault>"
    body = (
        "<s:Fault><s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{sub}</s:Value>"
        '</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{reason}</s:Text></s:Reason>'
        "<s:Detail>{detail}</s:Detail></s:Fault>"
    ).format(
        code="s:Sender" if spec.sender else "s:Receiver",
        sub=spec.subcode,
        reason=message,
        detail=detail,
    )
    return _envelope(FAULT_ACTION, relates_to, body, _NS_FAULT)


def _shell_xml(shell: LabShell, *, with_usage: bool = False) -> str:
    """The ``rsp:Shell`` element Windows returns from Create and Get."""
    idle = f"PT{shell.settings.idle_timeout_s:.3f}S"
    usage = "<rsp:MemoryUsed>58MB</rsp:MemoryUsed><rsp:ChildProcesses>0</rsp:ChildProcesses>"
    return (
        '<rsp:Shell xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
        f"<rsp:ShellId>{shell.shell_id}</rsp:ShellId>"
        f"<rsp:ResourceUri>{escape(shell.resource_uri)}</rsp:ResourceUri>"
        f"<rsp:Owner>{escape(shell.settings.owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(shell.settings.client_ip)}</rsp:ClientIP>"
        f"<rsp:ProcessId>{shell.settings.process_id}</rsp:ProcessId>"
        f"<rsp:IdleTimeOut>{idle}</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
        "<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut>"
        "<rsp:Locale>en-US</rsp:Locale><rsp:DataLocale>en-US</rsp:DataLocale>"
        "<rsp:CompressionMode>NoCompression</rsp:CompressionMode>"
        "<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding>"
        "<rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Connected</rsp:State>"
        f"<rsp:ShellRunTime>{shell.run_time()}</rsp:ShellRunTime>"
        "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
        f"{usage if with_usage else ''}</rsp:Shell>"
    )


_CONFIG_BODY = (
    resources.files("cpuu_fleet.lab").joinpath("data/wsman-config.xml").read_text("utf-8").strip()
)
"""``winrm get winrm/config`` of a default Windows host (MaxEnvelopeSizekb=500), kept as data."""


@dataclass
class HostIdentity:
    """Who the simulated Windows host is, as the WSMan layer reports it."""

    machine: str
    """The address the fault ``Machine`` attribute names (Windows uses the address it was reached on)."""
    owner: str
    """``rsp:Owner`` in CreateResponse, e.g. ``PC-0001\\labadmin``."""
    process_id: int = 4242


@dataclass
class WSManDispatcher:
    """One simulated host's WS-Management service: its shells and the SOAP actions on them.

    Thread-safe: every HTTP connection of the host calls :meth:`handle` from its own thread;
    long-polling Receives block only their own connection.
    """

    identity: HostIdentity
    workstation: Any
    """The workstation model the host's scripts act on."""
    resolve: Resolver = resolve_pipeline
    """Which handler plays a pipeline (see :func:`cpuu_fleet.lab.dispatch.resolve_pipeline`)."""
    shells: dict[str, LabShell | WinRSShell] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, data: bytes, client_ip: str = "127.0.0.1") -> tuple[int, bytes]:
        """Answer one SOAP request: (HTTP status, response envelope)."""
        relates_to = ""
        try:
            request = parse_request(data)
            relates_to = request.message_id
            body = self._dispatch(request, client_ip)
            return 200, body
        except UnknownCommand:
            fault = WSManFaultError(INVALID_SELECTORS)
            return 500, fault_envelope(fault, relates_to, self.identity.machine)
        except WSManFaultError as exc:
            return 500, fault_envelope(exc, relates_to, self.identity.machine)
        except Exception:
            log.exception("lab WSMan dispatcher failed on %s", self.identity.machine)
            return 500, fault_envelope(
                WSManFaultError(INTERNAL_ERROR), relates_to, self.identity.machine
            )

    def reap_idle(self, now: float | None = None) -> int:
        """Delete shells unused for longer than their IdleTimeOut, as WinRM does for clients
        that vanished without a Delete; returns how many went."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                shell
                for shell in self.shells.values()
                if shell.idle_for(now) > shell.settings.idle_timeout_s
            ]
            for shell in idle:
                self.shells.pop(shell.shell_id, None)
        for shell in idle:
            log.info("%s: shell %s idle too long, deleted", self.identity.machine, shell.shell_id)
            shell.close()
        return len(idle)

    def close_all(self) -> None:
        """Stop every pipeline of every shell (server shutdown)."""
        with self._lock:
            shells = list(self.shells.values())
            self.shells.clear()
        for shell in shells:
            shell.close()

    # -- actions -------------------------------------------------------------------------

    def _dispatch(self, request: WSManRequest, client_ip: str) -> bytes:
        action = request.action
        if action == TRANSFER + "Create":
            return self._create(request, client_ip)
        if action == TRANSFER + "Get":
            return self._get(request)
        if action == TRANSFER + "Delete":
            shell = self._shell(request)
            with self._lock:
                self.shells.pop(shell.shell_id, None)
            shell.close()
            return _envelope(TRANSFER + "DeleteResponse", request.message_id, "")
        if action == SHELL + "Command":
            return self._command(request)
        if action == SHELL + "Send":
            return self._send(request)
        if action == SHELL + "Receive":
            return self._receive(request)
        if action == SHELL + "Signal":
            return self._signal(request)
        raise WSManFaultError(ACTION_NOT_SUPPORTED)

    def _shell(self, request: WSManRequest) -> LabShell | WinRSShell:
        shell_id = request.selectors.get("ShellId", "").upper()
        with self._lock:
            shell = self.shells.get(shell_id)
        if shell is None:
            raise WSManFaultError(INVALID_SELECTORS)
        return shell

    def _create(self, request: WSManRequest, client_ip: str) -> bytes:
        if request.resource_uri == CMD_RESOURCE:
            return self._create_cmd(request, client_ip)
        if not request.resource_uri.startswith(PS_RESOURCE_PREFIX):
            raise WSManFaultError(ACTION_NOT_SUPPORTED)
        shell_el = request.body.find("rsp:Shell", NS)
        creation = shell_el.find("ps:creationXml", NS) if shell_el is not None else None
        if shell_el is None or creation is None or not creation.text:
            raise WSManFaultError(INVALID_MESSAGE)
        shell_id = (shell_el.get("ShellId") or str(uuid.uuid4())).upper()
        settings = self._settings(request, client_ip)
        with self._lock:
            if shell_id in self.shells:
                raise WSManFaultError(ALREADY_EXISTS)
            shell = LabShell(
                shell_id, request.resource_uri, settings, self.workstation, self.resolve
            )
            self.shells[shell_id] = shell
        try:
            shell.create(_b64(creation.text))
        except Exception:
            with self._lock:
                self.shells.pop(shell_id, None)
            raise
        body = (
            f"<x:ResourceCreated><a:Address>{escape(request.to)}</a:Address>"
            f"<a:ReferenceParameters><w:ResourceURI>{escape(request.resource_uri)}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            f"</a:ReferenceParameters></x:ResourceCreated>{_shell_xml(shell)}"
        )
        return _envelope(TRANSFER + "CreateResponse", request.message_id, body, _NS_X + _NS_RSP)

    def _settings(self, request: WSManRequest, client_ip: str) -> ShellSettings:
        shell_el = request.body.find("rsp:Shell", NS)
        idle = shell_el.findtext("rsp:IdleTimeOut", None, NS) if shell_el is not None else None
        return ShellSettings(
            owner=self.identity.owner,
            client_ip=client_ip,
            process_id=self.identity.process_id,
            idle_timeout_s=parse_duration(idle, 7200.0),
        )

    def _create_cmd(self, request: WSManRequest, client_ip: str) -> bytes:
        shell_id = str(uuid.uuid4()).upper()
        shell = WinRSShell(
            shell_id, CMD_RESOURCE, self._settings(request, client_ip), self.workstation
        )
        with self._lock:
            self.shells[shell_id] = shell
        idle = f"PT{shell.settings.idle_timeout_s:.3f}S"
        body = (
            f"<x:ResourceCreated><a:Address>{escape(request.to)}</a:Address>"
            f"<a:ReferenceParameters><w:ResourceURI>{CMD_RESOURCE}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>"
            '<rsp:Shell xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
            f"<rsp:ShellId>{shell_id}</rsp:ShellId><rsp:ResourceUri>{CMD_RESOURCE}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(shell.settings.owner)}</rsp:Owner>"
            f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP><rsp:IdleTimeOut>{idle}</rsp:IdleTimeOut>"
            "<rsp:InputStreams>stdin</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
            "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
        )
        return _envelope(TRANSFER + "CreateResponse", request.message_id, body, _NS_X + _NS_RSP)

    def _get(self, request: WSManRequest) -> bytes:
        if request.resource_uri == CONFIG_RESOURCE:
            return _envelope(TRANSFER + "GetResponse", request.message_id, _CONFIG_BODY, _NS_X)
        shell = self._shell(request)
        body = _shell_xml(shell, with_usage=True)
        return _envelope(TRANSFER + "GetResponse", request.message_id, body, _NS_X)

    def _command(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        line = request.body.find("rsp:CommandLine", NS)
        if line is None:
            raise WSManFaultError(INVALID_MESSAGE)
        if isinstance(shell, WinRSShell):
            command = line.findtext("rsp:Command", "", NS) or ""
            arguments = [a.text or "" for a in line.findall("rsp:Arguments", NS)]
            command_id = shell.command(command, arguments)
        else:
            command_id = (line.get("CommandId") or str(uuid.uuid4())).upper()
            shell.command(command_id, _b64(line.findtext("rsp:Arguments", "", NS)))
        body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
        return _envelope(SHELL + "CommandResponse", request.message_id, body, _NS_X + _NS_RSP)

    def _send(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        if isinstance(shell, WinRSShell):
            # stdin of an already finished process goes nowhere, as on Windows.
            return _envelope(
                SHELL + "SendResponse", request.message_id, "<rsp:SendResponse/>", _NS_X + _NS_RSP
            )
        send = request.body.find("rsp:Send", NS)
        if send is None:
            raise WSManFaultError(INVALID_MESSAGE)
        for stream in send.findall("rsp:Stream", NS):
            command_id = stream.get("CommandId")
            shell.send(command_id.upper() if command_id else None, _b64(stream.text or ""))
        return _envelope(
            SHELL + "SendResponse", request.message_id, "<rsp:SendResponse/>", _NS_X + _NS_RSP
        )

    def _receive(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = desired.get("CommandId") if desired is not None else None
        command_id = command_id.upper() if command_id else None
        if isinstance(shell, WinRSShell):
            return self._receive_cmd(request, shell, command_id or "")
        budget = min(RECEIVE_BUDGET_CHARS, max(request.max_envelope_size - 4096, 8192))
        try:
            result = shell.receive(
                command_id, request.message_id, request.operation_timeout, budget
            )
        except OperationTimedOut as exc:
            raise WSManFaultError(TIMED_OUT) from exc
        attr = f' CommandId="{command_id}"' if command_id else ""
        parts = [
            f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(chunk).decode()}</rsp:Stream>'
            for chunk in result.chunks
        ]
        if result.done and command_id:
            parts.append(
                f'<rsp:CommandState CommandId="{command_id}" State="{COMMAND_DONE}">'
                "<rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"
            )
        body = f"<rsp:ReceiveResponse>{''.join(parts)}</rsp:ReceiveResponse>"
        return _envelope(SHELL + "ReceiveResponse", request.message_id, body, _NS_RSP)

    def _receive_cmd(self, request: WSManRequest, shell: WinRSShell, command_id: str) -> bytes:
        result = shell.receive(command_id)
        attr = f' CommandId="{command_id}"'
        parts = []
        for name, data in (("stdout", result.stdout), ("stderr", result.stderr)):
            if data:
                parts.append(
                    f'<rsp:Stream Name="{name}"{attr}>{base64.b64encode(data).decode()}</rsp:Stream>'
                )
        parts.append(f'<rsp:Stream Name="stdout"{attr} End="true"></rsp:Stream>')
        parts.append(f'<rsp:Stream Name="stderr"{attr} End="true"></rsp:Stream>')
        parts.append(
            f'<rsp:CommandState{attr} State="{COMMAND_DONE}">'
            f"<rsp:ExitCode>{result.exit_code}</rsp:ExitCode></rsp:CommandState>"
        )
        body = f"<rsp:ReceiveResponse>{''.join(parts)}</rsp:ReceiveResponse>"
        return _envelope(SHELL + "ReceiveResponse", request.message_id, body, _NS_RSP)

    def _signal(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        signal = request.body.find("rsp:Signal", NS)
        if signal is None:
            raise WSManFaultError(INVALID_MESSAGE)
        command_id = (signal.get("CommandId") or "").upper()
        code = signal.findtext("rsp:Code", "", NS).strip()
        if isinstance(shell, WinRSShell):
            shell.signal(command_id)
        else:
            shell.signal(command_id, terminate=code == SIGNAL_TERMINATE)
        return _envelope(
            SHELL + "SignalResponse", request.message_id, "<rsp:SignalResponse/>", _NS_X + _NS_RSP
        )


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip())
    except ValueError as exc:
        raise WSManFaultError(INVALID_MESSAGE) from exc
