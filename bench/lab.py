"""How fast is the lab on this machine?  A script, not a test: it prints figures, asserts nothing
about speed.

    /work/venv/bin/python bench/lab.py            # 500 hosts, 1 and 50 clients, 20 MB copies
    /work/venv/bin/python bench/lab.py --quick    # a smoke run in a few seconds
    /work/venv/bin/python bench/lab.py --profile /tmp/lab.pstats   # + cProfile of the lab side

What it measures, and why this way:

* **start-up** of a fleet of ``--hosts`` workstations, and **memory per idle host** (RSS growth of
  the lab process divided by hosts): the lab must hold 500 hosts on a 2-core machine.
* **round trips per second** of a small pipeline (Command, Receive, Signal Terminate on an open
  pool: what cpuu-fleet does for every step), with 1 and with ``--clients`` concurrent clients.
  Each client is one thread with its own WSMan + RunspacePool on its own host, as the engine
  runs them.
* **copy throughput** of ``Client.copy`` for a ``--size-mb`` file over Basic/HTTP and over
  NTLM/HTTP with message encryption (the byte-exact arrival is checked in the lab's file system).

The lab runs in a *separate process* (one per auth kind): clients and lab would otherwise share one
GIL and every figure would be half client cost. With ``--profile`` every lab thread runs under
cProfile and the hottest functions are printed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import itertools
import multiprocessing
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the project is not installed; run from anywhere
    sys.path.insert(0, str(REPO))

from cpuu_fleet.lab.registry import register  # noqa: E402

BENCH_SCRIPT = "# cpuu-fleet: bench-echo\nparam($Value) $Value"


@register("bench-echo")
def _echo(workstation: Any, call: Any, host: Any) -> None:
    """The small pipeline: echoes its argument, so the client can check the answer is its own."""
    host.write_output(call.arguments[0] if call.arguments else None)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux only, like the lab's CI)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# --------------------------------------------------------------------------------------------
# The lab side (a child process)
# --------------------------------------------------------------------------------------------


class _ThreadProfiler:
    """CPU-time cProfile for every thread started after :meth:`install` (cProfile sees one
    thread only).

    Python 3.11 has no ``threading.setprofile_all_threads``, so ``Thread.run`` is wrapped: each
    thread profiles itself into its own ``Profile`` and the stats are merged at the end.
    """

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        original_run = threading.Thread.run
        profiler = self

        def profiled_run(thread: threading.Thread) -> None:
            # CPU time of this thread, not wall time: a wall clock would charge every blocking
            # recv, lock wait and GIL wait to whatever call was in progress.
            profile = cProfile.Profile(time.thread_time)
            with profiler._lock:
                profiler.profiles.append(profile)
            profile.enable()
            try:
                original_run(thread)
            finally:
                profile.disable()

        threading.Thread.run = profiled_run  # type: ignore[method-assign]

    def dump(self, path: str) -> None:
        with self._lock:
            for profile in self.profiles:  # threads still running: stop collecting
                profile.disable()
            stats = pstats.Stats(self.profiles[0])
            for profile in self.profiles[1:]:
                stats.add(profile)
        stats.dump_stats(path)


def lab_process(conn: Any, hosts: int, auth: str, profile_path: str | None) -> None:
    """Start a fleet, report its figures and addresses, then serve until told to stop.

    Requests over ``conn``: ``("sha256", host_name, remote_path)`` -> hex digest of that file in
    the host's workstation file system (to check a copy arrived byte-exact); ``("stop",)``.
    """
    import cpuu_fleet.lab.handlers  # noqa: F401  (imported up front: not part of per-host memory)
    from cpuu_fleet.lab.fleet import LabFleet

    profiler = _ThreadProfiler() if profile_path else None
    if profiler:
        profiler.install()
    with tempfile.TemporaryDirectory(prefix="cpuu-bench-") as workdir:
        before = rss_bytes()
        started = time.perf_counter()
        fleet = LabFleet(hosts=hosts, auth=auth, workdir=Path(workdir))
        fleet.__enter__()
        startup_s = time.perf_counter() - started
        grown = rss_bytes() - before
        try:
            conn.send(
                {
                    "startup_s": startup_s,
                    "rss_delta": grown,
                    "username": fleet.username,
                    "password": fleet.password,
                    "hosts": [(host.name, host.address, host.port) for host in fleet.hosts],
                }
            )
            while True:
                request = conn.recv()
                if request[0] == "stop":
                    break
                if request[0] == "cpu":
                    times = os.times()
                    conn.send(times.user + times.system)
                if request[0] == "sha256":
                    _, name, remote = request
                    local = fleet.host(name).workstation.fs.resolve(remote)
                    conn.send(hashlib.sha256(Path(local).read_bytes()).hexdigest())
        finally:
            if profiler:
                profiler.dump(profile_path)
            fleet.__exit__(None, None, None)
    conn.send("stopped")


@dataclass
class Lab:
    """The client's handle on one lab process."""

    process: multiprocessing.process.BaseProcess
    conn: Any
    info: dict[str, Any]

    @classmethod
    def start(cls, hosts: int, auth: str, profile_path: str | None = None) -> Lab:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=lab_process, args=(child, hosts, auth, profile_path), daemon=True
        )
        process.start()
        if not parent.poll(600):
            process.kill()
            raise RuntimeError("the lab did not start within 10 minutes")
        return cls(process, parent, parent.recv())

    def wsman_kwargs(self, index: int, auth: str, **extra: Any) -> dict[str, Any]:
        _, address, port = self.info["hosts"][index % len(self.info["hosts"])]
        kwargs = {
            "server": address,
            "port": port,
            "username": self.info["username"],
            "password": self.info["password"],
            "ssl": False,
            "auth": auth,
            "encryption": "never" if auth == "basic" else "auto",
            "cert_validation": False,
        }
        kwargs.update(extra)
        return kwargs

    def cpu_seconds(self) -> float:
        """User + system CPU time the lab process has used so far."""
        self.conn.send(("cpu",))
        return self.conn.recv()

    def sha256(self, index: int, remote_path: str) -> str:
        self.conn.send(("sha256", self.info["hosts"][index][0], remote_path))
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send(("stop",))
        self.conn.poll(60)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


# --------------------------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------------------------

_requests = itertools.count()


def count_requests() -> None:
    """Count every WSMan request pypsrp sends (observation only; one counter for all threads)."""
    from pypsrp.wsman import _TransportHTTP

    original = _TransportHTTP.send

    def counted(transport: Any, message: bytes, *args: Any, **kwargs: Any) -> bytes:
        next(_requests)
        return original(transport, message, *args, **kwargs)

    _TransportHTTP.send = counted  # type: ignore[method-assign]


def requests_so_far() -> int:
    return next(_requests)  # consumes one: callers subtract the two readings, 1 off is noise


@dataclass
class PipelineFigures:
    clients: int
    open_s: float
    pipelines: int = 0
    requests: int = 0
    seconds: float = 0.0
    lab_cpu: float = 0.0
    """CPU seconds the lab process used in the timed phase (1.0 per second = one core busy)."""
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_pipelines(lab: Lab, clients: int, seconds: float) -> PipelineFigures:
    """``clients`` threads, each with its own pool on its own host, run the small pipeline for
    ``seconds``; all start the timed phase together once every pool is open."""
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    opened = threading.Barrier(clients + 1)
    stop = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def client(index: int) -> None:
        try:
            wsman = WSMan(**lab.wsman_kwargs(index, "basic"))
            pool = RunspacePool(wsman)
            pool.open()
        except Exception as err:
            with lock:
                errors.append(f"open: {type(err).__name__}: {err}")
            opened.wait()
            return
        opened.wait()
        mine: list[float] = []
        try:
            n = 0
            while not stop.is_set():
                n += 1
                began = time.perf_counter()
                ps = PowerShell(pool)
                ps.add_script(BENCH_SCRIPT).add_argument(n)
                output = ps.invoke()
                ps.close()
                mine.append(time.perf_counter() - began)
                if output != [n]:
                    raise AssertionError(f"expected [{n}], got {output!r}")
        except Exception as err:
            with lock:
                errors.append(f"pipeline: {type(err).__name__}: {err}")
        finally:
            with lock:
                latencies.extend(mine)
            try:
                pool.close()
            finally:
                wsman.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    opened.wait()
    open_s = time.perf_counter() - began
    first = requests_so_far()
    lab_cpu, own = lab.cpu_seconds(), os.times()
    timed = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    elapsed = time.perf_counter() - timed
    figures = PipelineFigures(clients, open_s, len(latencies), requests_so_far() - first, elapsed)
    figures.lab_cpu = lab.cpu_seconds() - lab_cpu
    after = os.times()
    figures.client_cpu = after.user + after.system - own.user - own.system
    figures.latencies = latencies
    figures.errors = errors
    return figures


@dataclass
class CopyFigures:
    label: str
    size: int
    seconds: float
    exact: bool


def run_copy(lab: Lab, auth: str, size_mb: float, label: str) -> CopyFigures:
    from pypsrp.client import Client

    data = os.urandom(int(size_mb * 1024 * 1024))
    with tempfile.TemporaryDirectory(prefix="cpuu-bench-") as tmp:
        source = Path(tmp) / "payload.bin"
        source.write_bytes(data)
        with Client(**lab.wsman_kwargs(0, auth)) as client:
            began = time.perf_counter()
            remote = client.copy(str(source), "bench-payload.bin")
            seconds = time.perf_counter() - began
    exact = lab.sha256(0, remote) == hashlib.sha256(data).hexdigest()
    return CopyFigures(label, len(data), seconds, exact)


# --------------------------------------------------------------------------------------------
# Presentation
# --------------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    for row in rows:
        out.append(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    out.append(line)
    return "\n".join(out)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(label: str, action: Callable[[], Any]) -> Any:
    print(f"... {label}", file=sys.stderr, flush=True)
    return action()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=500, help="fleet size (default 500)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--size-mb", type=float, default=20.0, help="copy size in MB (default 20)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed phase per pipeline run")
    parser.add_argument("--quick", action="store_true", help="50 hosts, 10 clients, 2 MB, 2 s")
    parser.add_argument("--profile", metavar="PSTATS", help="cProfile the lab side into this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.clients, args.size_mb, args.seconds = 50, 10, 2.0, 2.0
    if args.clients > args.hosts:
        parser.error("--clients must not exceed --hosts (one host per client)")

    count_requests()
    print(
        f"lab benchmark: {args.hosts} hosts, {args.clients} clients, {args.size_mb:g} MB copies, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.1f} (other processes compete for the same cores)"
    )
    lab = timed(
        f"starting a {args.hosts}-host basic/http lab",
        lambda: Lab.start(args.hosts, "basic", args.profile),
    )
    try:
        runs = [
            timed(f"{n} client(s)", lambda n=n: run_pipelines(lab, n, args.seconds))
            for n in sorted({1, args.clients})
        ]
        basic_copy = timed(
            "copy over basic/http", lambda: run_copy(lab, "basic", args.size_mb, "Basic/HTTP")
        )
    finally:
        lab.stop()
    ntlm = timed("starting a 1-host ntlm/http lab", lambda: Lab.start(1, "ntlm"))
    try:
        ntlm_copy = timed(
            "copy over ntlm/http",
            lambda: run_copy(ntlm, "ntlm", args.size_mb, "NTLM/HTTP, encrypted"),
        )
    finally:
        ntlm.stop()

    info = lab.info
    print()
    print(
        table(
            "Fleet",
            ["figure", "value"],
            [
                [f"start-up, {args.hosts} hosts", f"{info['startup_s']:.2f} s"],
                ["RSS growth", f"{info['rss_delta'] / 2**20:.1f} MiB"],
                ["memory per idle host", f"{info['rss_delta'] / args.hosts / 1024:.1f} KiB"],
            ],
        )
    )
    print()
    rows = []
    for run in runs:
        rate = run.pipelines / run.seconds if run.seconds else 0.0
        rows.append(
            [
                str(run.clients),
                f"{run.open_s:.2f} s",
                str(run.pipelines),
                f"{rate:.1f}",
                f"{run.requests / run.seconds:.1f}",
                f"{percentile(run.latencies, 0.5) * 1000:.0f}",
                f"{percentile(run.latencies, 0.95) * 1000:.0f}",
                f"{run.lab_cpu / run.seconds:.2f}",
                f"{run.client_cpu / run.seconds:.2f}",
                str(len(run.errors)),
            ]
        )
    print(
        table(
            "Small pipeline on an open pool (Command + Receive + Signal), Basic/HTTP",
            [
                "clients",
                "open all",
                "pipelines",
                "pipelines/s",
                "requests/s",
                "p50 ms",
                "p95 ms",
                "lab cores",
                "client cores",
                "errors",
            ],
            rows,
        )
    )
    print()
    print(
        table(
            "Client.copy",
            ["transport", "size", "seconds", "MB/s", "byte-exact"],
            [
                [
                    c.label,
                    f"{c.size / 1e6:.1f} MB",
                    f"{c.seconds:.2f}",
                    f"{c.size / 1e6 / c.seconds:.2f}",
                    "yes" if c.exact else "NO",
                ]
                for c in (basic_copy, ntlm_copy)
            ],
        )
    )
    for run in runs:
        for error in sorted(set(run.errors))[:5]:
            print(f"error with {run.clients} clients: {error}")
    if args.profile:
        print(f"\nlab-side CPU profile (all threads) in {args.profile}; by own time:")
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(20)
        print("lab functions by cumulative time:")
        stats.sort_stats("cumulative").print_stats("cpuu_fleet/lab", 20)
    failed = any(run.errors for run in runs) or not (basic_copy.exact and ntlm_copy.exact)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
