"""A monotonic clock that moves only when a test says so (pacers and shelves count time)."""

from __future__ import annotations


class ManualClock:
    """Call it for the time; set or add to ``now`` to move it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
