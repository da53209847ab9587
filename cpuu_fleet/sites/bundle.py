"""What a relay needs besides its secrets, packed once per version and addressed by content.

The *bundle* is the inventory as it is on disk (vault files still encrypted; the inventory file
with the ``group_vars``/``host_vars`` beside it, or the whole inventory folder), the playbook and
each play's templates. The *payload* is the vendor's CPUU folder. Each is a tar archive made
byte for byte the same from the same files (sorted names, no times, no owners), so its sha256
is its version: stored once in the journal (``Journal.put_blob``), named by hash in each visit
message, fetched once by each relay and kept in its cache folder.

A relay never trusts a name from an archive: it extracts with tarfile's ``data`` filter (no
absolute paths, no ``..``, no links out, no devices) into a folder of its own.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cpuu_fleet.errors import InputError

PLAYBOOK_DIR = "playbook"
INVENTORY_DIR = "inventory"
TEMPLATES_DIR = "templates"
#: The folders Ansible reads beside an inventory file.
BESIDE_INVENTORY = ("group_vars", "host_vars")


def _add_tree(tar: tarfile.TarFile, source: Path, name: str) -> None:
    """``source`` (a file or a folder, links refused) under ``name``, in a stable order."""
    if source.is_symlink():
        raise InputError(f"{source}: a symbolic link is not packed for relays")
    if source.is_file():
        data = source.read_bytes()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
        return
    if source.is_dir():
        for child in sorted(source.iterdir(), key=lambda p: p.name):
            _add_tree(tar, child, f"{name}/{child.name}")


def pack(entries: list[tuple[Path, str]]) -> bytes:
    """A reproducible tar of ``(source, name in the archive)`` entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for source, name in entries:
            _add_tree(tar, source, name)
    return buffer.getvalue()


def bundle_entries(
    playbook: Path, inventory: Path, templates: list[Path | None]
) -> list[tuple[Path, str]]:
    """The bundle's contents: the playbook, each play's templates (by play index), the inventory."""
    entries = [(playbook, f"{PLAYBOOK_DIR}/{playbook.name}")]
    for index, folder in enumerate(templates):
        if folder is not None and folder.is_dir():
            entries.append((folder, f"{TEMPLATES_DIR}/{index}"))
    entries.append((inventory, f"{INVENTORY_DIR}/{inventory.name}"))
    if inventory.is_file():
        for beside in BESIDE_INVENTORY:
            if (inventory.parent / beside).is_dir():
                entries.append((inventory.parent / beside, f"{INVENTORY_DIR}/{beside}"))
    return entries


class Cache:
    """A relay's folder of extracted archives, one sub-folder per hash, each made once."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()

    def folder(self, digest: str, fetch: Callable[[str], bytes | None]) -> Path:
        """The extracted archive ``digest``; ``fetch(digest)`` gives its bytes the first time."""
        if not digest.isalnum():
            raise InputError(f"not a content hash: {digest[:70]!r}")
        target = self.root / digest
        with self._lock:
            if target.is_dir():
                return target
            if not hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
                raise InputError("relays need tarfile's 'data' filter: Python 3.10.12 or later")
            data = fetch(digest)
            if data is None:
                raise InputError(f"archive {digest[:12]} is not in the journal")
            self.root.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=self.root))
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                    tar.extractall(scratch, filter="data")
                os.replace(scratch, target)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            return target
