"""The engine: a playbook and an inventory become a plan, and the plan a wave, batch by batch.

``planning`` turns plays into batches of hosts (``--resume``, ``--retry-failed``), ``runner``
runs them (forks, serial batches, ``max_fail_percentage``, retries, signals) and writes the
run's own files (``run_log`` writes ``run.log``), ``wave`` holds the up-front checks and the entry points, ``events`` is what the
run tells its watchers, ``lease`` keeps one live controller per run and per host.

The entry points are importable from here (``from cpuu_fleet.engine import run_play``). They are
loaded on first use, so that importing a light part (``lease`` for ``status``, ``events`` for the
console) does not pull in the wire (pypsrp) with ``wave``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpuu_fleet.engine.wave import (
        Engine,
        ExitCode,
        PlayRequest,
        PlayResult,
        run_play,
        run_single_step,
    )

__all__ = ["Engine", "ExitCode", "PlayRequest", "PlayResult", "run_play", "run_single_step"]


def __getattr__(name: str) -> Any:
    """The entry points of :mod:`cpuu_fleet.engine.wave`, imported when first asked for."""
    if name in __all__:
        return getattr(importlib.import_module("cpuu_fleet.engine.wave"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
