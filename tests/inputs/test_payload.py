"""The payload as it is read: a manifest that is stable and versioned, and one clear error
when the folder or the exe is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.payload import load_payload


def _payload(tmp_path: Path) -> Path:
    folder = tmp_path / "payload"
    (folder / "lang").mkdir(parents=True)
    (folder / "ClientProfileUpdatingUtility.exe").write_bytes(b"MZ" + b"x" * 1000)
    (folder / "lang" / "fr.dll").write_bytes(b"dll")
    return folder


def test_payload_manifest_is_stable_and_versioned(tmp_path):
    folder = _payload(tmp_path)
    first = load_payload(folder)
    again = load_payload(folder)
    assert [f.relative for f in first.files] == ["ClientProfileUpdatingUtility.exe", "lang\\fr.dll"]
    assert first.total_bytes == 1002 + 3
    assert first.version == again.version == first.manifest_sha256[:12]
    (folder / "lang" / "fr.dll").write_bytes(b"dll2")
    assert load_payload(folder).version != first.version


def test_payload_without_exe_or_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_payload(tmp_path / "nope")
    folder = _payload(tmp_path)
    (folder / "ClientProfileUpdatingUtility.exe").unlink()
    with pytest.raises(InputError, match=r"ClientProfileUpdatingUtility\.exe is missing"):
        load_payload(folder)
