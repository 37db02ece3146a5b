"""Replace a directory by a freshly written one, as atomically as a POSIX filesystem allows.

A new copy is written beside the target as ``.<name>.swap-new``; then the target is renamed aside
(``.<name>.swap-old``), the new copy renamed in, and the old one deleted. Between the two renames the target is
missing for microseconds; a crash there is repaired by :func:`recover` (run before every deletion job and audit),
which also deletes leftovers — an ``-old`` folder can hold exactly the rows an erasure removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from recsys.durable import fsync_dir

log = logging.getLogger(__name__)

NEW, OLD = ".swap-new", ".swap-old"


def staging(target: Path) -> Path:
    """Where the new copy of ``target`` is written (same parent: the renames stay on one filesystem)."""
    return target.parent / f".{target.name}{NEW}"


def _aside(target: Path) -> Path:
    return target.parent / f".{target.name}{OLD}"


def swap_in(target: Path) -> None:
    """Put the complete :func:`staging` copy in place of ``target`` and delete the previous content."""
    new, old = staging(target), _aside(target)
    if not new.is_dir():
        raise FileNotFoundError(f"nothing staged for {target}")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _leftovers(root: Path) -> Iterator[tuple[Path, Path]]:
    for path in root.rglob(".*"):
        for suffix in (NEW, OLD):
            if path.is_dir() and path.name.endswith(suffix):
                yield path, path.parent / path.name[1:-len(suffix)]


def recover(root: Path | str) -> list[str]:
    """Finish or undo swaps interrupted by a crash under ``root``; returns the targets repaired.

    Only complete copies are ever renamed in, so a missing target takes its ``-new`` copy if there is one, else
    its ``-old`` one back; every remaining ``-new``/``-old`` folder is then deleted.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    repaired = []
    for path, target in sorted(set(_leftovers(root))):
        if not path.exists():
            continue
        if not target.exists():
            source = staging(target) if staging(target).is_dir() else _aside(target)
            os.rename(source, target)
            repaired.append(str(target))
            log.warning("interrupted swap repaired: %s (from %s)", target, source.name)
    for path, _ in sorted(set(_leftovers(root))):
        shutil.rmtree(path, ignore_errors=True)
    return repaired
