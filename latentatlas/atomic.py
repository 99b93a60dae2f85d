"""Atomic, durable file writes: write a temp file beside the target, fsync it, ``os.replace`` it into place, then
fsync the folder (a reader never sees half a file, and a power loss never leaves a renamed but empty one).

In an object store (a remote :class:`upath.UPath`, see :mod:`latentatlas.locations`) a single put is atomic already.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from upath import UPath

from latentatlas.locations import is_remote


def atomic_write_bytes(path: Path | UPath, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically and durably.

    Raises:
        OSError: the write failed (no space, no permission, ...); the target is then untouched and no temp file is
            left behind.
    """
    if is_remote(path):
        path.write_bytes(bytes(payload))  # one put: the object appears only once complete
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; stores are meant to be read by others
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def remove_temp_files(path: Path | UPath) -> list[Path]:
    """Delete the temp files that killed writers of ``path`` (:func:`atomic_write_bytes`, SIGKILLed between the
    temp file and the rename) left beside it: ``.<name>.<random>.tmp``. Returns the files deleted.

    Call it only where no other process writes ``path`` now (under the lock of the stage that owns it): a live
    writer's temp file would go too. Object stores have none (a put is atomic).
    """
    if is_remote(path):
        return []
    path = Path(path)
    leftovers = [leftover for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if leftover.is_file()]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


def fsync_folder(folder: Path) -> None:
    """Make the renames and new entries in ``folder`` durable (POSIX: fsync of the directory)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
