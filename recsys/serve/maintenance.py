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
from recsys.serve.snapshot import CURRENT, ChildBuild, NoPublishedVersion, build_snapshot
from recsys.serve.variants import rebuild_pinned

log = logging.getLogger(__name__)


def refresh_snapshots(warehouse: Path | str, serve: ServeSettings, rebuild: bool) -> bool:
    """Rebuild the current snapshot in place (``rebuild``), and the pinned ones with it; delete every other
    snapshot folder, since an older one can still hold an erased user.

    Returns whether a snapshot was rebuilt. Running workers keep their mapped files until ``ops/deletions``
    changes, then map the new ones (``recsys.serve.store``); the deny-list covers the moments in between. Built in
    a child interpreter when ``serve.build_in_subprocess`` (the default), away from the deletion job's driver.
    """
    return SnapshotRefresh(warehouse, serve, rebuild).finish()


class SnapshotRefresh:
    """:func:`refresh_snapshots` started now (in a child interpreter when ``serve.build_in_subprocess``) and
    finished by :meth:`finish`: the deletion run starts it once the published tables are final and goes on with
    the rest of the warehouse meanwhile."""

    def __init__(self, warehouse: Path | str, serve: ServeSettings, rebuild: bool):
        self.warehouse, self.serve, self.rebuild = Path(warehouse), serve, rebuild
        self.folder = serve.resolved(warehouse).snapshot_dir
        assert self.folder is not None
        self._child: ChildBuild | None = None
        self._wanted = self.folder.is_dir()
        if self._wanted and (not (self.folder / CURRENT).is_file() or current_published(self.warehouse) is None):
            for path in self.folder.iterdir():                       # nothing current: no snapshot may survive
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
            self._wanted = False
        if self._wanted and serve.build_in_subprocess:
            self._child = ChildBuild(self.warehouse, self.folder, None, keep=1, force=rebuild)

    def finish(self) -> bool:
        """Wait for the build (or build now, in this process), then the pinned snapshots; whether one was rebuilt."""
        if not self._wanted:
            return False
        try:
            if self._child is not None:
                self._child.wait()
            else:
                build_snapshot(self.warehouse, self.folder, force=self.rebuild, keep=1)
        except NoPublishedVersion:
            return False
        if self.rebuild:
            rebuild_pinned(self.warehouse)
        return self.rebuild

    def cancel(self) -> None:
        if self._child is not None:
            self._child.cancel()


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
