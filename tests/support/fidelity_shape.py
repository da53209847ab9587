"""The *shape* of a WS-Management/PSRP exchange, and the differences between two shapes.

Why shapes and not bytes: the lab can never reproduce Windows byte for byte (MessageIDs, ShellIds,
ActivityIds, process ids and machine names all differ, and Windows answers with its own idea of how
to split data across Receives). What a client like pypsrp depends on is the *shape*: which action
answers which request, which elements a body carries, and which PSRP messages travel in which order.
This module reduces an exchange (a list of request/response SOAP pairs, from a recording of a real
Windows host or from pypsrp talking to the lab) to that shape, and lists the differences between
two shapes as short stable strings, so a test can hold the lab to Windows with an explicit
allow-list of the differences that are understood.

It decodes PSRP fragments and messages itself (MS-PSRP 2.2.4 and 2.2.1): the header layout is tiny
and decoding it here keeps the comparison independent of the psrpcore code the lab is built on.
"""

from __future__ import annotations

import base64
import difflib
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from psrpcore.types import PSRPMessageType

# Canonical prefixes, so that pypsrp's ``wsman``/``wsmv`` and Windows' ``w``/``p`` compare equal.
PREFIXES = {
    "http://www.w3.org/2003/05/soap-envelope": "s",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing": "a",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer": "x",
    "http://schemas.xmlsoap.org/ws/2004/09/enumeration": "n",
    "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd": "w",
    "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd": "p",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell": "rsp",
    "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault": "f",
    "http://schemas.microsoft.com/wbem/wsman/1/config": "cfg",
    "http://schemas.microsoft.com/powershell": "pwsh",
    "http://www.w3.org/XML/1998/namespace": "xml",
    "http://www.w3.org/2001/XMLSchema-instance": "xsi",
}
NS = {prefix: uri for uri, prefix in PREFIXES.items()}

FAULT_ACTION_SUFFIXES = ("/fault", "/Fault")

# MS-PSRP 2.2.3.4 / 2.2.3.5: the state numbers inside PipelineState and RunspacePoolState.
PIPELINE_STATES = {
    0: "NotStarted",
    1: "Running",
    2: "Stopping",
    3: "Stopped",
    4: "Completed",
    5: "Failed",
    6: "Disconnected",
}
POOL_STATES = {
    0: "BeforeOpen",
    1: "Opening",
    2: "Opened",
    3: "Closed",
    4: "Closing",
    5: "Broken",
    6: "NegotiationSent",
    7: "NegotiationSucceeded",
    8: "Connecting",
    9: "Disconnected",
}

# Elements whose text is base64 PSRP fragments (MS-PSRP 3.1.5.1: transport of PSRP over WSMan).
FRAGMENT_CARRIERS = {"pwsh:creationXml", "rsp:Arguments", "rsp:Stream", "pwsh:connectXml"}


def _qname(tag: str) -> str:
    """``{uri}local`` -> ``prefix:local`` with the canonical prefix (the uri itself if unknown)."""
    if tag.startswith("{"):
        uri, local = tag[1:].split("}", 1)
        return f"{PREFIXES.get(uri, uri)}:{local}"
    return tag


# --------------------------------------------------------------------------------------------
# PSRP fragments and messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PsrpMessage:
    """One decoded PSRP message: who it is for, its type, and a detail that matters for shape."""

    direction: str
    """``C>S`` (destination server) or ``S>C`` (destination client)."""

    type_name: str
    """The MS-PSRP message type name, e.g. ``PipelineOutput``; ``0x...`` if unknown."""

    detail: str = ""
    """For state messages, the state name (``Opened``, ``Completed``, ``Failed``)."""

    @property
    def label(self) -> str:
        return f"{self.type_name}({self.detail})" if self.detail else self.type_name


class PsrpDecodeError(ValueError):
    """The fragment stream is not valid PSRP (a broken lab or a corrupt recording)."""


@dataclass
class Defragmenter:
    """Rebuilds PSRP messages from fragments that may be spread over several SOAP messages.

    Windows splits one big object (``Client.fetch`` of a file) across many Receives, so the
    buffer per object id must outlive one SOAP message. One instance per direction and exchange.
    """

    _partial: dict[int, list[bytes]] = field(default_factory=dict)

    def feed(self, blob: bytes) -> list[PsrpMessage]:
        """Consume whole fragments, return the messages whose last fragment was in ``blob``."""
        messages: list[PsrpMessage] = []
        offset = 0
        while offset < len(blob):
            if len(blob) - offset < 21:
                raise PsrpDecodeError(f"truncated PSRP fragment header at byte {offset}")
            object_id, fragment_id, flags, length = struct.unpack_from(">QQBI", blob, offset)
            offset += 21
            data = blob[offset : offset + length]
            if len(data) != length:
                raise PsrpDecodeError(f"PSRP fragment {object_id}/{fragment_id} is truncated")
            offset += length
            start, end = bool(flags & 0x1), bool(flags & 0x2)
            if start:
                if fragment_id != 0:
                    raise PsrpDecodeError(f"start fragment of {object_id} has id {fragment_id}")
                self._partial[object_id] = [data]
            else:
                if object_id not in self._partial:
                    raise PsrpDecodeError(f"fragment {fragment_id} of {object_id} without a start")
                self._partial[object_id].append(data)
            if end:
                messages.append(decode_message(b"".join(self._partial.pop(object_id))))
        return messages

    @property
    def pending(self) -> list[int]:
        """Object ids still waiting for their end fragment (should be empty after an exchange)."""
        return sorted(self._partial)


_STATE_FIELDS = {
    "PipelineState": (re.compile(rb'<I32 N="PipelineState">(\d+)</I32>'), PIPELINE_STATES),
    "RunspacePoolState": (re.compile(rb'<I32 N="RunspaceState">(\d+)</I32>'), POOL_STATES),
}


def decode_message(raw: bytes) -> PsrpMessage:
    """One reassembled PSRP message (MS-PSRP 2.2.1) -> its shape."""
    if len(raw) < 40:
        raise PsrpDecodeError(f"PSRP message of {len(raw)} bytes is shorter than its header")
    destination, message_type = struct.unpack_from("<II", raw, 0)
    data = raw[40:]
    try:
        type_name = PSRPMessageType(message_type).name
    except ValueError:
        type_name = f"0x{message_type:08X}"
    detail = ""
    if type_name in _STATE_FIELDS:
        pattern, names = _STATE_FIELDS[type_name]
        match = pattern.search(data)
        detail = names.get(int(match.group(1)), match.group(1).decode()) if match else "?"
    direction = {1: "S>C", 2: "C>S"}.get(destination, f"dest{destination}")
    return PsrpMessage(direction, type_name, detail)


# --------------------------------------------------------------------------------------------
# SOAP messages and exchanges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoapShape:
    """The shape of one SOAP envelope."""

    action: str
    """The last segment of ``wsa:Action`` (``Create``, ``ReceiveResponse``), or ``Fault(<subcode>
    <WSManFault code>)`` for a fault."""

    resource: str
    """What the request addresses: ``pwsh`` (a PowerShell configuration), ``shell``, ``config``,
    ``cmd`` or the URI; empty for responses."""

    target: str
    """``pool`` or ``pipeline``: whether the body names a CommandId."""

    body_paths: frozenset[str]
    """Every element path under ``s:Body`` plus ``path/@attr`` for each attribute name."""

    psrp: tuple[PsrpMessage, ...]

    header_paths: frozenset[str] = frozenset()
    """The same for ``s:Header`` (pypsrp needs only RelatesTo; Windows sends more)."""


@dataclass(frozen=True)
class Step:
    """One request and the answer to it."""

    request: SoapShape
    response: SoapShape

    @property
    def signature(self) -> str:
        """What the alignment of two exchanges keys on."""
        req = self.request
        return f"{req.action}[{req.resource}/{req.target}] -> {self.response.action}"


def _element_paths(body: ET.Element | None) -> frozenset[str]:
    paths: set[str] = set()

    def walk(element: ET.Element, prefix: str) -> None:
        for child in element:
            path = f"{prefix}/{_qname(child.tag)}" if prefix else _qname(child.tag)
            paths.add(path)
            paths.update(f"{path}/@{_qname(attr)}" for attr in child.attrib)
            walk(child, path)

    if body is not None:
        walk(body, "")
    return frozenset(paths)


def _fragment_blobs(body: ET.Element | None) -> list[bytes]:
    if body is None:
        return []
    return [
        base64.b64decode(element.text or "")
        for element in body.iter()
        if _qname(element.tag) in FRAGMENT_CARRIERS and (element.text or "").strip()
    ]


def _resource_kind(uri: str) -> str:
    if uri.startswith("http://schemas.microsoft.com/powershell/"):
        return "pwsh"
    tail = uri.rsplit("/1/", 1)[-1] if "/wsman/1/" in uri else uri
    return {"windows/shell": "shell", "windows/shell/cmd": "cmd", "config": "config"}.get(tail, uri)


def _action_name(root: ET.Element) -> str:
    action = root.findtext("s:Header/a:Action", default="", namespaces=NS).strip()
    if action.endswith(FAULT_ACTION_SUFFIXES) or root.find("s:Body/s:Fault", NS) is not None:
        subcode = root.findtext("s:Body/s:Fault/s:Code/s:Subcode/s:Value", "", NS).strip()
        fault = root.find("s:Body/s:Fault/s:Detail/f:WSManFault", NS)
        code = fault.get("Code", "") if fault is not None else ""
        return f"Fault({subcode} {code})".replace("( ", "(").replace(" )", ")")
    return action.rsplit("/", 1)[-1]


def soap_shape(
    xml: str | bytes, defragmenter: Defragmenter | None, *, is_request: bool
) -> SoapShape:
    """Reduce one envelope to its shape, feeding its PSRP fragments to ``defragmenter``.

    ``defragmenter`` is None for WinRS (``cmd``) traffic, whose streams are plain text."""
    root = ET.fromstring(xml)
    body = root.find("s:Body", NS)
    uri = root.findtext("s:Header/w:ResourceURI", default="", namespaces=NS).strip()
    command_ids = [
        element
        for element in (body.iter() if body is not None else [])
        if "CommandId" in element.attrib
    ]
    psrp: list[PsrpMessage] = []
    if defragmenter is not None and (not is_request or _resource_kind(uri) == "pwsh"):
        for blob in _fragment_blobs(body):
            psrp.extend(defragmenter.feed(blob))
    return SoapShape(
        action=_action_name(root),
        resource=_resource_kind(uri) if is_request else "",
        target="pipeline" if command_ids else "pool",
        body_paths=_element_paths(body),
        psrp=tuple(psrp),
        header_paths=_element_paths(root.find("s:Header", NS)),
    )


@dataclass
class Exchange:
    """A whole exchange reduced to steps, plus the PSRP messages in each direction."""

    steps: list[Step]
    unfinished_psrp: list[int]
    """Object ids whose fragments never completed (a lab or recording that breaks PSRP)."""

    def psrp(self, direction: str) -> list[str]:
        labels = []
        for step in self.steps:
            for message in (*step.request.psrp, *step.response.psrp):
                if message.direction == direction:
                    labels.append(message.label)
        return labels

    def signatures(self) -> list[str]:
        return [step.signature for step in self.steps]


def exchange_shape(pairs: Iterable[tuple[str | bytes, str | bytes]]) -> Exchange:
    """``[(request_xml, response_xml), ...]`` in the order they happened -> an :class:`Exchange`.

    A response that is not XML (an HTTP error with no SOAP body) gets the action ``<no xml>``.
    """
    to_server, to_client = Defragmenter(), Defragmenter()
    steps = []
    for request, response in pairs:
        req = soap_shape(request, to_server, is_request=True)
        psrp_answer = to_client if req.resource == "pwsh" else None
        if not response or not response.strip():
            resp = SoapShape("<no response>", "", "pool", frozenset(), ())
        else:
            try:
                resp = soap_shape(response, psrp_answer, is_request=False)
            except ET.ParseError:
                resp = SoapShape("<no xml>", "", "pool", frozenset(), ())
        steps.append(Step(req, resp))
    return Exchange(steps, to_server.pending + to_client.pending)


def load_recording(path: Path) -> list[tuple[str, str]]:
    """The ``(request, response)`` pairs of one pypsrp test recording (see the fixtures README)."""
    with path.open("rb") as handle:
        document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return [(entry["request"], entry.get("response")) for entry in document["messages"]]


# --------------------------------------------------------------------------------------------
# Differences
# --------------------------------------------------------------------------------------------


def _sequence_diff(kind: str, recorded: Sequence[str], lab: Sequence[str]) -> list[str]:
    """Missing/extra items of ``lab`` against ``recorded``, order-aware (difflib alignment)."""
    differences = []
    matcher = difflib.SequenceMatcher(a=list(recorded), b=list(lab), autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag in ("delete", "replace"):
            differences.extend(f"{kind} missing: {item}" for item in recorded[a0:a1])
        if tag in ("insert", "replace"):
            differences.extend(f"{kind} extra: {item}" for item in lab[b0:b1])
    return differences


def _paths_by_signature(exchange: Exchange, side: str, part: str) -> dict[str, set[str]]:
    union: dict[str, set[str]] = {}
    for step in exchange.steps:
        shape = step.request if side == "request" else step.response
        paths = shape.body_paths if part == "body" else shape.header_paths
        union.setdefault(step.signature, set()).update(paths)
    return union


def differences(recorded: Exchange, lab: Exchange) -> list[str]:
    """Every way ``lab`` differs from ``recorded``, as sorted, de-duplicated short strings.

    * ``step missing|extra: <signature>``: the aligned sequence of request/response actions;
    * ``<side> body|header of <signature> lacks|adds <path>``: element paths, compared as the
      union over all steps with the same signature (a Receive split differently carries different
      subsets per message, but the same elements overall). Request headers are pypsrp's own and
      not compared; response headers are;
    * ``psrp C>S|S>C missing|extra: <type>(<state>)``: the aligned PSRP message sequences;
    * ``psrp unfinished fragments``: a message whose end fragment never came.
    """
    found = _sequence_diff("step", recorded.signatures(), lab.signatures())
    for side, part in (("request", "body"), ("response", "body"), ("response", "header")):
        want = _paths_by_signature(recorded, side, part)
        got = _paths_by_signature(lab, side, part)
        for signature in sorted(set(want) & set(got)):
            prefix = f"{side} {part} of {signature}"
            found.extend(f"{prefix} lacks {path}" for path in want[signature] - got[signature])
            found.extend(f"{prefix} adds {path}" for path in got[signature] - want[signature])
    for direction in ("C>S", "S>C"):
        found.extend(
            _sequence_diff(f"psrp {direction}", recorded.psrp(direction), lab.psrp(direction))
        )
    if lab.unfinished_psrp:
        found.append("psrp unfinished fragments")
    return sorted(set(found))


@dataclass(frozen=True)
class Allowed:
    """A difference from Windows that is understood, with the reason it is acceptable."""

    pattern: str
    """A regular expression, matched with ``re.fullmatch`` against a difference string."""

    reason: str


def unexplained(
    found: Iterable[str], allowed: Iterable[Allowed]
) -> tuple[list[str], list[Allowed]]:
    """Split ``found`` into the differences no allow-list entry explains, and the entries that
    explain nothing any more (the lab was fixed: the entry should go)."""
    allowed = list(allowed)
    used: set[int] = set()
    left = []
    for difference in found:
        hits = [i for i, entry in enumerate(allowed) if re.fullmatch(entry.pattern, difference)]
        used.update(hits)
        if not hits:
            left.append(difference)
    stale = [entry for i, entry in enumerate(allowed) if i not in used]
    return left, stale
