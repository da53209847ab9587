"""Benchmark: a 2-site wave through relays next to the same wave from one controller.

    python bench/sites.py                     # 2 sites x 10 lab hosts, 1 relay per site
    python bench/sites.py --hosts 50 --relays 2 --concurrency 10

Both runs are ``cpuu-fleet play`` as a child process over fresh lab fleets (one per site, in
this process) with the same playbook (preflight, push, run, collect; forks 25): first alone,
then with ``--broker`` (a private RabbitMQ node, ``tests/support/rabbitmq.py``) and
``--relays`` ``cpuu-fleet relay`` processes per site. Printed side by side: wall time of the
controller process, and its CPU seconds per host (its own rusage: Python's start and imports
included, the same in both; the relays' CPU is theirs, not the controller's).

Measured on the 2-CPU development machine, 2026-12-06, shared with three other engineers' work
(load average about 3, so wall times are noisy), ``python bench/sites.py --hosts 25
--concurrency 10``:

    2 sites x 25 lab hosts, forks 25, no added latency
      one controller               wall    7.2 s   controller CPU 0.096 s/host   exit 0
      relays (1/site x 10)         wall    8.3 s   controller CPU 0.055 s/host   exit 0

(``--hosts 10``, 4 visits at once per relay: 4.6 s, 0.182 s/host alone; 4.8 s, 0.107 s/host
through relays.) docs/sites.md says what the figures include.

Issue 14's goal, ``python bench/sites.py --hosts 100 --relays 2 --concurrency 10``, 2026-12-06
19:24 UTC (load average 6.1 rising to 9.2 on the 2 CPUs: noisy walls):

    2 sites x 100 lab hosts, forks 25, no added latency
      one controller               wall   40.9 s   controller CPU 0.088 s/host   exit 0
      relays (2/site x 10)         wall   31.3 s   controller CPU 0.018 s/host   exit 0

Again at 19:35 UTC, quieter (load average 0.3 rising to 2.6): 33.5 s and 0.106 s/host alone,
36.7 s and 0.025 s/host through relays. Wall 0.77 x and 1.10 x (goal <= 1.3 x), controller CPU
per host 0.20 x and 0.24 x (goal <= 1/3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.rabbitmq import Broker, missing  # noqa: E402 - after the path is set
from tests.support.sites import relays, start_controller, two_sites  # noqa: E402
from tests.support.waves import make_playbook  # noqa: E402


def controller_run(sites, broker_url: str | None) -> tuple[float, float, int]:
    """One ``play`` of every host: (wall seconds, controller CPU seconds, exit code)."""
    playbook = make_playbook(sites.payload, timeout=120, attached=True)
    args = ("play", str(playbook.path), "-i", str(sites.inventory_path))
    began = time.monotonic()
    process = start_controller(sites, broker_url or "", *args)  # "": no broker, no relays
    process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - began, usage.ru_utime + usage.ru_stime, process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=10, help="lab hosts per site")
    parser.add_argument("--relays", type=int, default=1, help="relay processes per site")
    parser.add_argument("--concurrency", type=int, default=4, help="visits at once per relay")
    options = parser.parse_args()
    why = missing()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    hosts = 2 * options.hosts
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sites-") as tmp:
        root = Path(tmp)
        with two_sites(root / "alone", options.hosts) as sites:
            rows.append(("one controller", *controller_run(sites, None)))
        broker = Broker(root / "broker")
        broker.start()
        try:
            with (
                two_sites(root / "relayed", options.hosts) as sites,
                relays(sites, broker.url, options.relays, options.concurrency),
            ):
                label = f"relays ({options.relays}/site x {options.concurrency})"
                rows.append((label, *controller_run(sites, broker.url)))
        finally:
            broker.stop()
    print(f"2 sites x {options.hosts} lab hosts, forks 25, no added latency")
    for label, wall, cpu, code in rows:
        print(
            f"  {label:<28} wall {wall:6.1f} s   controller CPU {cpu / hosts:.3f} s/host"
            f"   exit {code}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
