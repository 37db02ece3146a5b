"""What the deletion cascade asks of the API's files: rebuild the serving snapshots, scrub the event logs.

The cascade (``recsys.catalog``) decides *what* goes (which rows, which lines); this module knows *where* the API
keeps it — which snapshot folders exist, which are pinned by an A/B variant, how one is rebuilt, how a log that
workers are appending to is rewritten — so the catalog never depends on the serving layout.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from recsys.ops import current_published
from recsys.serve.events import event_files, rewrite_event_file
from recsys.serve.settings import ServeSettings
from recsys.serve.snapshot import CURRENT, NoPublishedVersion, build_in_subprocess, build_snapshot
from recsys.serve.variants import rebuild_pinned

log = logging.getLogger(__name__)


def refresh_snapshots(warehouse: Path | str, serve: ServeSettings, rebuild: bool) -> bool:
    """Rebuild the current snapshot in place (``rebuild``), and the pinned ones with it; delete every other
    snapshot folder, since an older one can still hold an erased user.

    Returns whether a snapshot was rebuilt. Running workers keep their mapped files until ``ops/deletions``
    changes, then map the new ones (``recsys.serve.store``); the deny-list covers the moments in between. Built in
    a child interpreter when ``serve.build_in_subprocess`` (the default), away from the deletion job's driver.
    """
    folder = serve.resolved(warehouse).snapshot_dir
    assert folder is not None
    if not folder.is_dir():
        return False
    if not (folder / CURRENT).is_file() or current_published(Path(warehouse)) is None:
        for path in folder.iterdir():                       # nothing current: no snapshot may survive
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        return False
    try:
        if serve.build_in_subprocess:
            build_in_subprocess(Path(warehouse), folder, None, keep=1, force=rebuild)
        else:
            build_snapshot(Path(warehouse), folder, force=rebuild, keep=1)
    except NoPublishedVersion:
        return False
    if rebuild:
        rebuild_pinned(warehouse)
    return rebuild


def scrub_events(events_dir: Path, keep: Callable[[bytes], bool]) -> int:
    """Rewrite every event log under ``events_dir`` without the lines ``keep`` refuses; returns the lines removed.

    Each log is replaced by a rewritten copy (:func:`recsys.serve.events.rewrite_event_file`): crash-safe, and no
    event a worker appends meanwhile is lost.
    """
    removed = 0
    for path in event_files(events_dir):
        dropped = rewrite_event_file(path, keep)
        if dropped:
            log.info("event log scrubbed: %s", path.name)
            removed += dropped
    return removed
