"""Real lab sessions whose link drops once, at a chosen remote call: what a retry or a resume
must survive without starting CPUU twice."""

from __future__ import annotations

from typing import Any

from cpuu_fleet.visit.host_visit import open_session
from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.vocabulary import ErrorClass


class DropsOnce:
    """A session factory (``session_factory=``) whose sessions are real, except that the link
    drops as the ``nth`` ``run-task -Action <action>`` of the wave is sent (before the host gets
    it), as after any connection reset. ``calls`` counts those calls."""

    def __init__(self, action: str, nth: int):
        self.action = action
        self.nth = nth
        self.calls = 0

    def __call__(self, name: str, connection: Any) -> HostSession:
        session = open_session(name, connection)
        session.__class__ = _DroppingSession
        session.drops = self  # type: ignore[attr-defined]
        return session

    def drop_now(self, script: str, parameters: dict[str, Any] | None) -> bool:
        if script != "run-task" or (parameters or {}).get("Action") != self.action:
            return False
        self.calls += 1
        return self.calls == self.nth


class _DroppingSession(HostSession):
    drops: DropsOnce

    def run(self, script, parameters=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.drops.drop_now(script, parameters):
            self._broken = True
            raise SessionError(
                ErrorClass.UNREACHABLE, f"{self.drops.action.lower()}: connection reset (test)"
            )
        return super().run(script, parameters, **kwargs)
