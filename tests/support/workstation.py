"""The workstation model on a bench: a fake clock and a staged CPUU payload to run a mode on.

The fixtures built on these (``clock``, ``ws``, ``bench``) are in ``tests/lab/conftest.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpuu_fleet.cpuu import ExitStatus, ResultFile, parse_result_bytes
from cpuu_fleet.lab.workstation import OutlookProfile, Workstation
from cpuu_fleet.visit.steps.context import run_dir

STAGE = r"C:\ProgramData\cpuu-fleet\0123456789ab"
USER = "CORP\\jdupont"

DEFAULT_INI = "[General]\r\nAdmin CORP\\svc-cpuu\r\nPassword 0xDEADBEEF\r\n"

BATCHES = {
    "CPUU_Update.bat": '@echo off\r\ncd /d "%~dp0"\r\n"%~dp0ClientProfileUpdatingUtility.exe" %*\r\nexit /b %errorlevel%\r\n',
    "CPUU_Rollback.bat": '@echo off\r\n"%~dp0ClientProfileUpdatingUtility.exe" %*\r\n',
    "CPUU_Cleanup.bat": '@echo off\r\n"%~dp0ClientProfileUpdatingUtility.exe" %*\r\n',
}


class FakeClock:
    """A clock the test moves by hand: simulated durations cost no real time."""

    def __init__(self, start: float = 1_763_683_200.0):  # 2025-11-21 00:00:00 UTC
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Run:
    exit: int
    results: ResultFile | None
    log: str | None
    killed: bool

    @property
    def codes(self) -> dict[str, int]:
        assert self.results is not None, "no result file was written"
        return {p.profile: p.current for p in self.results.profiles}

    @property
    def status(self) -> ExitStatus:
        return ExitStatus(self.exit)


class CpuuBench:
    """A workstation with a staged payload, and a way to run a mode's batch file on it."""

    stage_dir = STAGE
    user = USER

    def __init__(self, ws: Workstation, clock: FakeClock):
        self.ws = ws
        self.clock = clock

    def add(self, name: str, **facts) -> OutlookProfile:
        mailbox = f"{name.split()[0].lower()}@corp.example" if name.split() else "x@corp.example"
        return self.ws.add_profile(USER, OutlookProfile(name=name, mailbox=mailbox, **facts))

    def task_files(self, task_name: str, batch: str = "CPUU_Update.bat") -> dict[str, str]:
        """run-task's ``-Command``, ``-WorkingDirectory`` and ``-SourceDirectory`` as the engine
        passes them: the batch file in the run's own folder, filled from the staging folder."""
        folder = run_dir(task_name)
        return {
            "Command": f"{folder}\\{batch}",
            "WorkingDirectory": folder,
            "SourceDirectory": self.stage_dir,
        }

    def stage(self, ini: bytes | str = DEFAULT_INI, *, exe: bool = True) -> None:
        ws = self.ws
        ws.fs.mkdir(STAGE)
        if exe:
            ws.fs.write_bytes(STAGE + r"\ClientProfileUpdatingUtility.exe", b"MZ\x90\x00lab")
        data = ini.encode("utf-8") if isinstance(ini, str) else ini
        ws.fs.write_bytes(STAGE + r"\CPUU.ini", data)
        for name, text in BATCHES.items():
            ws.fs.write_bytes(STAGE + "\\" + name, text.encode("ascii"))

    def run(self, batch: str = "CPUU_Update.bat", args: str = "") -> Run:
        """Run a batch file as the logged-on user through a scheduled task, as the run step does."""
        ws, clock = self.ws, self.clock

        for old in ws.fs.glob(STAGE, "CPUU_*_*"):
            ws.fs.delete(old)
        command = f'"{STAGE}\\{batch}" {args}'.strip()
        ws.register_task("cpuu-fleet-run", command, STAGE, user=ws.interactive_user or "nobody")
        ws.start_task("cpuu-fleet-run")
        clock.advance(3600)
        task = ws.task("cpuu-fleet-run")
        assert task is not None and not task.running
        csvs = ws.fs.glob(STAGE, "CPUU_*.csv")
        logs = ws.fs.glob(STAGE, "CPUU_*.log")
        results = parse_result_bytes(ws.fs.read_bytes(csvs[0]), csvs[0]) if csvs else None
        log = ws.fs.read_bytes(logs[0]).decode("utf-8-sig") if logs else None
        ws.unregister_task("cpuu-fleet-run")
        clock.advance(1)
        return Run(task.last_result, results, log, task.killed)
