"""Durable file writes: what checkpoints, adapters and the robot's spool share."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename, a new file) survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old file or the new one, never a mix:
    write a temp file, fsync it, rename it over ``path``, fsync the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)
