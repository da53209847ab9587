"""Driving one lab handler directly: a recording pipeline and the calls the handler tests share.

The recording ``PipelineHost`` double stands in for the protocol layer (tested on its own); the
waves' tests run the same scripts end to end over real pypsrp.
"""

from __future__ import annotations

import base64
import hashlib
import threading

import pytest

import cpuu_fleet.lab.handlers  # noqa: F401 - registers the handlers
from cpuu_fleet.lab.contract import PipelineStopped, ScriptCall, ScriptFailed
from cpuu_fleet.lab.registry import lookup
from cpuu_fleet.visit.remote import SCRIPT_NAMES, load_script

ROOT = r"C:\ProgramData\cpuu-fleet"
STAGE = ROOT + r"\0123456789ab"


class RecordingHost:
    """A pipeline that records what a handler writes; ``sleep`` moves the fake clock."""

    def __init__(self, clock=None, stop_after_sleeps: int | None = None, keep=True):
        self.stopping = threading.Event()
        self.output: list = []
        self.errors: list = []
        self.clock = clock
        self.sleeps = 0
        self.stop_after_sleeps = stop_after_sleeps
        self.keep = keep
        self.count = 0
        self.largest = 0

    def write_output(self, value):
        self.count += 1
        if isinstance(value, str):
            self.largest = max(self.largest, len(value))
        if self.keep:
            self.output.append(value)

    def write_error(self, message, *, error_id="", category="NotSpecified"):
        self.errors.append((message, error_id, category))

    def write_warning(self, message):
        pass

    def write_verbose(self, message):
        pass

    def sleep(self, seconds):
        self.sleeps += 1
        if self.stop_after_sleeps is not None and self.sleeps > self.stop_after_sleeps:
            self.stopping.set()
        if self.stopping.is_set():
            raise PipelineStopped()
        if self.clock is not None:
            self.clock.advance(seconds)


def invoke(ws, name, host=None, input_objects=(), **parameters):
    assert name in SCRIPT_NAMES
    call = ScriptCall(
        name=name, script=load_script(name), parameters=parameters, input=iter(input_objects)
    )
    host = host or RecordingHost()
    lookup(name)(ws, call, host)
    return host.output


def failure(ws, name, input_objects=(), **parameters) -> ScriptFailed:
    with pytest.raises(ScriptFailed) as caught:
        invoke(ws, name, input_objects=input_objects, **parameters)
    return caught.value


def file_items(relative: str, data: bytes, chunk: int = 4, sha: str | None = None):
    yield {"Path": relative, "Length": len(data), "Sha256": sha or hashlib.sha256(data).hexdigest()}
    for start in range(0, len(data), chunk):
        yield base64.b64encode(data[start : start + chunk]).decode()
