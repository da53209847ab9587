"""``cpuu-fleet init DIR``: a ready project folder, made from the shipped files.

The folder holds what an operator edits and keeps under version control: the settings
(``cpuu-fleet.toml``), an inventory skeleton with the wave groups and the WinRM variables
commented out, the CPUU variables of the example inventory, the shipped playbooks and templates,
and an empty ``reports/``. Nothing that exists is ever overwritten: when any file would be, the
command names them and writes nothing, so running it twice, or over a project, is harmless.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.shipped import INVENTORIES, PLAYBOOKS, PROJECT, shipped

#: Folders of the project made empty (the run files go to reports/, the vendor's CPUU to payload/).
EMPTY_FOLDERS = (PurePosixPath("reports"), PurePosixPath("playbooks/payload"))
_SHOWN = 5


def project_files() -> dict[PurePosixPath, Path]:
    """Each file of a new project (relative path) and the shipped file it is copied from."""
    files: dict[PurePosixPath, Path] = {}
    playbooks = shipped(PLAYBOOKS)
    for source in sorted(playbooks.rglob("*")):
        if source.is_file() and "payload" not in source.relative_to(playbooks).parts:
            files[PurePosixPath(PLAYBOOKS, *source.relative_to(playbooks).parts)] = source
    # The CPUU settings of the example (the passwords as environment lookups) suit any fleet.
    all_vars = PurePosixPath(INVENTORIES, "group_vars", "all.yml")
    files[all_vars] = shipped(INVENTORIES).joinpath(*all_vars.parts[1:])
    skeleton = shipped(PROJECT)
    for source in sorted(skeleton.rglob("*")):
        if source.is_file():
            files[PurePosixPath(*source.relative_to(skeleton).parts)] = source
    return files


def create_project(folder: Path) -> list[PurePosixPath]:
    """Write a new project into ``folder`` (made if missing); the files written, in order.

    Refuses, writing nothing, when ``folder`` is a file or any of the project's files exists.
    """
    if folder.exists() and not folder.is_dir():
        raise InputError("exists and is not a folder", where=folder)
    files = project_files()
    existing = [str(rel) for rel in files if (folder / rel).exists() or (folder / rel).is_symlink()]
    if existing:
        shown = ", ".join(existing[:_SHOWN])
        more = f" and {len(existing) - _SHOWN} more" if len(existing) > _SHOWN else ""
        raise InputError(
            f"would overwrite {len(existing)} existing file(s): {shown}{more}; nothing was written",
            where=folder,
        )
    try:
        for rel, source in files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as out:  # exclusive: never replaces a file made meanwhile
                out.write(source.read_bytes())
        for rel in EMPTY_FOLDERS:
            (folder / rel).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise InputError(
            f"cannot write the project ({why})", where=exc.filename or folder
        ) from None
    return list(files)
