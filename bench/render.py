"""Figures for the foundation: load a 5,000-host inventory, select with --limit, render every host;
then one group of 10,000 and of 40,000 hosts, loaded and selected with a retry file naming a
quarter of them (the times should grow about 4x from one to the other, not 16x).

Run from the repository: ``python bench/render.py``. Prints timings; asserts nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpuu_fleet.inputs.inventory import Inventory  # noqa: E402
from cpuu_fleet.inputs.render import Renderer  # noqa: E402


def build(folder: Path) -> Path:
    """5 waves x 10 sites x 100 hosts, group_vars from the example inventory."""
    lines = ["all:", "  children:"]
    for wave in range(1, 6):
        lines += [f"    wave{wave}:", "      children:"]
        for site in range(10):
            lines += [f"        w{wave}_site{site}:", "          hosts:"]
            lines += [f"            pc-{wave}{site}[000:099].corp.example:"]
    (folder / "inv.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "group_vars").mkdir()
    example = REPO / "inventories" / "group_vars"
    text = (example / "all.yml").read_text() + (example / "windows.yml").read_text()
    (folder / "group_vars" / "all.yml").write_text(text, encoding="utf-8")
    return folder / "inv.yml"


def one_big_group(folder: Path, count: int) -> tuple[float, float]:
    """Seconds to load an inventory of ``count`` hosts in one group, and to select a quarter of
    them from a retry file (one host name a line)."""
    names = [f"pc-{i:06d}" for i in range(count)]
    lines = ["all:", "  children:", "    wave1:", "      hosts:", *(f"        {n}:" for n in names)]
    path = folder / f"group{count}.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    retry = folder / f"retry{count}.txt"
    retry.write_text("\n".join(names[::4]) + "\n", encoding="utf-8")
    start = time.perf_counter()
    inventory = Inventory.load(path)
    loaded = time.perf_counter()
    inventory.select(f"@{retry}")
    return loaded - start, time.perf_counter() - loaded


def main() -> None:
    os.environ.setdefault("CPUU_FLEET_CPUU_PASSWORD", "A" * 40)
    os.environ.setdefault("CPUU_FLEET_CPUU_PASSWORD_TRG", "B" * 40)
    os.environ.setdefault("CPUU_FLEET_WINRM_PASSWORD", "C" * 12)
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp))
        start = time.perf_counter()
        inventory = Inventory.load(path)
        loaded = time.perf_counter()
        selected = inventory.select("wave2:wave3:!w3_site4:&pc-*")
        chosen = time.perf_counter()
        renderer = Renderer(REPO / "playbooks" / "templates")
        for host in inventory.hosts:
            renderer.render_host(host, "update")
            host.connection.pypsrp_kwargs()
        rendered = time.perf_counter()
    count = len(inventory.hosts)
    print(f"hosts: {count}")
    print(f"load inventory: {loaded - start:.2f} s")
    print(f"select 'wave2:wave3:!w3_site4:&pc-*': {chosen - loaded:.3f} s ({len(selected)} hosts)")
    per_host = (rendered - chosen) / count * 1000
    print(
        f"render + connection settings, all hosts: {rendered - chosen:.2f} s ({per_host:.2f} ms/host)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for count in (10_000, 40_000):
            load, select = one_big_group(Path(tmp), count)
            print(
                f"one group of {count:,} hosts: load {load:.2f} s, "
                f"select @retry ({count // 4:,} names) {select:.3f} s"
            )


if __name__ == "__main__":
    main()
