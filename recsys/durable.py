"""Durable renames: a rename is only on disk once its folder is fsync'd (POSIX keeps names in the directory)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries, so a file just created or renamed into it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
