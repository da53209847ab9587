"""Benchmark: ``cpuu-fleet audit`` next to ``play --check`` of the same lab hosts.

    python bench/audit.py                       # 500 hosts of audit_mix, 25 at once, no latency
    python bench/audit.py --hosts 50 --latency 50

The lab runs in its own process (``audit_mix``: three users per host, one hive held); the
controller in this one counts every HTTP request it sends (WS-Man calls and NTLM legs alike, as
``bench/wave.py`` does). Printed for each: hosts per minute (wall clock of the whole fleet), round
trips per host, and controller CPU seconds per host. ``play --check`` runs the shipped update
playbook with ``check`` (preflight only, read-only) and a stand-in payload.

Measured once on the 2-CPU development machine, 2026-12-06, shared (load average 3.3-4.6),
``python bench/audit.py --hosts 500`` (no added latency, forks 25, NTLM with message encryption):

    500 hosts of audit_mix, 0 ms latency, forks 25
      audit             1687 hosts/min    9.0 round trips/host  0.028 controller CPU s/host  failed 0
      play --check      1991 hosts/min    9.0 round trips/host  0.021 controller CPU s/host  failed 0

Both are one pipeline on one pool per host (3 NTLM legs, Create + 2 Receives, Command + Receive,
Delete); the audit sends more (three users, several profiles and accounts per host: 2,733
rows for 500 hosts, counted from the lab model), which its lower rate and higher CPU reflect.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wave import RequestCounter, cpu_seconds  # noqa: E402 - after the path is set

FORKS = 25


def serve(hosts: int, latency_ms: float, workdir: Path) -> None:
    """A lab fleet of ``audit_mix`` until stdin closes; prints READY + JSON."""
    from cpuu_fleet.cli.demo_lab import write_lab_inventory
    from cpuu_fleet.lab.fleet import LabFleet

    latency = latency_ms / 1000 if latency_ms else None
    with LabFleet(hosts, scenario="audit_mix", seed=1, workdir=workdir, latency_s=latency) as fleet:
        inventory = write_lab_inventory(fleet, workdir / "inventory.yml", waves=3)
        print("READY " + json.dumps({"inventory": str(inventory), "env": fleet.env}), flush=True)
        sys.stdin.read()


def measure(info: dict[str, Any], workdir: Path, forks: int) -> dict[str, dict[str, float]]:
    os.environ.update(info["env"])
    from cpuu_fleet.audit import AuditPolicy, patterns_of
    from cpuu_fleet.cli.demo_lab import DEMO_SECRETS, find_playbook, make_standin_payload
    from cpuu_fleet.engine import Engine, PlayRequest
    from cpuu_fleet.inputs.inventory import Inventory
    from cpuu_fleet.visit.audit import audit_fleet
    from cpuu_fleet.visit.host_visit import open_session
    from cpuu_fleet.vocabulary import needs_attention

    os.environ.update(DEMO_SECRETS)
    counter = RequestCounter()
    inventory = Inventory.load(info["inventory"])
    targets = []
    for host in inventory.select(None):
        scope = host.scope(reveal=False)
        policy = AuditPolicy(
            patterns_of(scope.value("cpuu_source_servers")),
            patterns_of(scope.value("cpuu_target_servers")),
        )
        targets.append((host.name, host.connection, policy))
    n = len(targets)
    results: dict[str, dict[str, float]] = {}

    cpu0, t0, n0 = cpu_seconds(), time.monotonic(), counter.count
    run = audit_fleet(targets, open_session, forks=forks)
    wall = time.monotonic() - t0
    results["audit"] = {
        "hosts_per_min": n / wall * 60,
        "round_trips_per_host": (counter.count - n0) / n,
        "cpu_per_host_s": (cpu_seconds() - cpu0) / n,
        "failed": len(run.failed),
        "rows": len(run.rows),
    }

    payload = make_standin_payload(workdir / "payload")
    request = PlayRequest(
        playbook=find_playbook("update.yml"),
        inventory=Path(info["inventory"]),
        reports_dir=workdir / "reports",
        check=True,
        forks=forks,
        payload=payload,
        write_report=False,
        handle_sigint=False,
    )
    cpu0, t0, n0 = cpu_seconds(), time.monotonic(), counter.count
    with Engine(request) as engine:
        playbook, loaded, selection = engine.load()
        check = engine.run(playbook, loaded, selection)
    wall = time.monotonic() - t0
    results["play --check"] = {
        "hosts_per_min": n / wall * 60,
        "round_trips_per_host": (counter.count - n0) / n,
        "cpu_per_host_s": (cpu_seconds() - cpu0) / n,
        "failed": sum(v for k, v in check.counts.items() if needs_attention(k)),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.0, help="added ms per round trip")
    parser.add_argument("--forks", type=int, default=FORKS)
    parser.add_argument("mode", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode[:1] == ["serve"]:
        serve(int(args.mode[1]), float(args.mode[2]), Path(args.mode[3]))
        return
    workdir = Path(tempfile.mkdtemp(prefix="cpuu-bench-audit-"))
    lab = subprocess.Popen(
        [sys.executable, __file__, "serve", str(args.hosts), str(args.latency), str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert lab.stdin is not None and lab.stdout is not None
    line = lab.stdout.readline()
    if not line.startswith("READY "):
        raise SystemExit(f"lab did not start: {line!r}")
    try:
        results = measure(json.loads(line[6:]), workdir, args.forks)
    finally:
        lab.stdin.close()
        lab.wait(timeout=60)
    print(f"{args.hosts} hosts of audit_mix, {args.latency:g} ms latency, forks {args.forks}")
    for name, figures in results.items():
        print(
            f"  {name:13s} {figures['hosts_per_min']:8.0f} hosts/min"
            f"  {figures['round_trips_per_host']:5.1f} round trips/host"
            f"  {figures['cpu_per_host_s']:.3f} controller CPU s/host"
            f"  failed {figures['failed']:.0f}"
        )


if __name__ == "__main__":
    main()
