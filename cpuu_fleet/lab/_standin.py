"""Temporary stand-in for the model branch's ``plan_fleet``/``WindowsFS`` (deleted once merged).

Only what the protocol layer's tests need: healthy hosts with a sandboxed file system.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cpuu_fleet.lab.contract import TransportFaults


class DiskFullError(OSError):
    pass


class WindowsFS:
    """``C:\\x\\y`` -> ``<root>/C/x/y`` (no case folding, no quota: a stand-in)."""

    _counter = itertools.count(1)

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def resolve(self, path: str) -> Path:
        text = path.replace("/", "\\")
        drive, _, rest = text.partition(":")
        parts = [p for p in rest.split("\\") if p and p != "."]
        if ".." in parts:
            raise ValueError(f"path escapes the sandbox: {path}")
        return self.root.joinpath(drive.upper(), *parts)

    def exists(self, path: str) -> bool:
        return self.resolve(path).exists()

    def is_dir(self, path: str) -> bool:
        return self.resolve(path).is_dir()

    def open_read(self, path: str) -> IO[bytes]:
        return self.resolve(path).open("rb")

    def open_write(self, path: str) -> IO[bytes]:
        target = self.resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("wb")

    def read_bytes(self, path: str) -> bytes:
        return self.resolve(path).read_bytes()

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.open_write(path) as handle:
            handle.write(data)

    def delete(self, path: str) -> None:
        target = self.resolve(path)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def move(self, src: str, dst: str) -> None:
        target = self.resolve(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.resolve(src).replace(target)

    def listdir(self, path: str) -> list[str]:
        return sorted(p.name for p in self.resolve(path).iterdir())

    def mkdir(self, path: str, parents: bool = True) -> None:
        self.resolve(path).mkdir(parents=parents, exist_ok=True)

    def free_bytes(self) -> int:
        return 50 * 1024**3

    def temp_path(self) -> str:
        path = f"C:\\Windows\\Temp\\tmp{next(self._counter):04X}.tmp"
        self.write_bytes(path, b"")
        return path


@dataclass
class Workstation:
    name: str
    fs: WindowsFS
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass
class HostPlan:
    name: str
    scenario: str
    workstation: Workstation
    faults: TransportFaults


def plan_fleet(hosts: int, scenario: str, seed: int, root: Path) -> list[HostPlan]:
    if scenario != "healthy":
        raise ValueError(f"unknown scenario {scenario!r} (the stand-in knows: healthy)")
    plans = []
    for index in range(1, hosts + 1):
        name = f"pc-{index:04d}"
        ws = Workstation(name, WindowsFS(root / name))
        plans.append(HostPlan(name, scenario, ws, TransportFaults()))
    return plans
