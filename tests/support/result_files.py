"""CPUU result files for the tests, as large as a hostile workstation may send."""

from __future__ import annotations

import codecs
from pathlib import Path


def big_result_file(path: Path, lines: int) -> Path:
    """A CPUU result file of ``lines`` profile lines (UTF-16 with a BOM, as CPUU writes them)."""
    with path.open("wb") as out:
        out.write(codecs.BOM_UTF16_LE)
        block = "".join(f"Profile {n}\t10\t0\r\n" for n in range(1000)).encode("utf-16-le")
        for _ in range(lines // 1000):
            out.write(block)
    return path
