"""What a worker serves right now: one snapshot and one deny-list, swapped as a single reference.

Requests read ``store.state`` once and use that object to the end, so a swap never changes data under a request in
flight and no request waits for a reload. Changes are noticed by :meth:`SnapshotStore.tick`, called on requests and
rate-limited to ``reload_interval_s``: it lists two ``_delta_log`` folders (microseconds), re-reads the small
``ops/deletions`` table inline when it changed (so deletions apply on the next request), and builds a newly
published snapshot in a background thread (the old one keeps serving meanwhile).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from recsys.constants import DELETIONS
from recsys.delta import log_version
from recsys.ops import Published, current_published, published_log_version
from recsys.serve.denylist import DenyList, load_denylist
from recsys.serve.settings import ServeSettings
from recsys.serve.snapshot import META, Snapshot, build_in_subprocess, build_snapshot, folder_name, is_complete

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 5.0      # first retry after a failed build/load; doubles per failure in a row ...
MAX_RETRY_S = 300.0              # ... up to this: a broken publish must not keep both cores busy rebuilding


@dataclass(frozen=True)
class ServingState:
    snapshot: Snapshot | None
    denylist: DenyList


class SnapshotStore:
    """Owns the current :class:`ServingState` of one worker process."""

    def __init__(self, warehouse: Path, settings: ServeSettings):
        self.warehouse = Path(warehouse)
        self.settings = settings
        assert settings.snapshot_dir is not None, "pass settings.resolved(warehouse)"
        self.snapshot_dir: Path = settings.snapshot_dir
        self.state = ServingState(snapshot=None, denylist=DenyList())
        self.reloads = 0
        self.reload_failures = 0
        self._swap_lock = threading.Lock()     # serialises read-modify-write of ``state``
        self._tick_lock = threading.Lock()     # one checker at a time; others go on with the current state
        self._next_check = 0.0
        self._seen_published = -2              # ops/published commit last fully handled (-1 = no table)
        self._builder: threading.Thread | None = None
        self._retry_at = 0.0
        self._failures_in_row = 0

    # --- start-up and polling ----------------------------------------------------------------------------

    def start(self, wait_for_build: bool = True) -> None:
        """Load the deny-list and the current version's snapshot; build it first if missing.

        ``wait_for_build=False`` (gunicorn workers) builds in the background instead, so a worker never blocks in
        start-up past gunicorn's timeout; ``/ready`` answers 503 until the snapshot is loaded. Failures leave the
        store not ready and polling tries again.
        """
        try:
            self._refresh_denylist()
            seen = published_log_version(self.warehouse)
            published = current_published(self.warehouse)
            if published is None:
                self._seen_published = seen
            elif wait_for_build or is_complete(self.snapshot_dir / folder_name(published.version)):
                self._install(self._ensure_built(published), published)
                self._seen_published = seen
            else:
                self._start_builder(published, seen)
        except Exception:  # noqa: BLE001 - a broken table must not stop the process; /ready reports it
            self._failed()
            log.exception("initial snapshot load failed; serving not ready")
        self._next_check = time.monotonic() + self.settings.reload_interval_s

    def tick(self) -> None:
        """Cheap check for new deletions and a new published version; at most once per ``reload_interval_s``."""
        now = time.monotonic()
        if now < self._next_check or not self._tick_lock.acquire(blocking=False):
            return
        try:
            self._next_check = now + self.settings.reload_interval_s
            self._refresh_denylist()
            self._refresh_published(now)
        except Exception:  # noqa: BLE001 - keep serving what we have
            log.exception("reload check failed; keeping the current state")
        finally:
            self._tick_lock.release()

    def wait_for_builder(self, timeout: float | None = None) -> None:
        """Block until a background build (if any) ends; for tests and orderly shutdown."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)

    # --- internals ---------------------------------------------------------------------------------------

    def _refresh_denylist(self) -> None:
        if log_version(self.warehouse / DELETIONS) == self.state.denylist.log_version:
            return
        denylist = load_denylist(self.warehouse)
        with self._swap_lock:
            self.state = replace(self.state, denylist=denylist)
        log.info("deny-list loaded deletions_version=%s items=%d users=%d", denylist.log_version,
                 len(denylist.items), len(denylist.user_hashes))
        self._reload_if_rebuilt()

    def _reload_if_rebuilt(self) -> None:
        """Map the current snapshot again if it was rebuilt in place (same version, new ``built_at``).

        Deletions and erasures rewrite the published rows and rebuild the snapshot before completing their
        ``ops/deletions`` rows, so a deny-list change is the moment to look; the old files stay mapped until then.
        """
        current = self.state.snapshot
        if current is None:
            return
        try:
            built_at = json.loads((current.folder / META).read_text(encoding="utf-8")).get("built_at")
        except (OSError, ValueError):
            return                      # being swapped right now: the next deny-list change looks again
        if built_at == current.meta.get("built_at"):
            return
        try:
            snapshot = Snapshot(current.folder)
        except Exception:  # noqa: BLE001 - keep serving the mapped files; the deny-list already applies
            log.exception("snapshot reload after an in-place rebuild failed version=%s", current.version)
            return
        with self._swap_lock:
            self.state = replace(self.state, snapshot=snapshot)
            self.reloads += 1
        log.info("snapshot reloaded after an in-place rebuild version=%s", snapshot.version)

    def _refresh_published(self, now: float) -> None:
        seen = published_log_version(self.warehouse)
        if seen == self._seen_published:
            return
        if (self._builder is not None and self._builder.is_alive()) or now < self._retry_at:
            return
        published = current_published(self.warehouse)
        current = self.state.snapshot
        if published is None or (current is not None and current.version == published.version):
            self._seen_published = seen
            return
        folder = self.snapshot_dir / folder_name(published.version)
        if is_complete(folder):             # another worker built it: mapping it takes milliseconds
            self._install_or_retry(folder, published, seen)
            return
        self._start_builder(published, seen)

    def _start_builder(self, published: Published, seen: int) -> None:
        self._builder = threading.Thread(target=self._build_and_install, args=(published, seen),
                                         name="snapshot-builder", daemon=True)
        self._builder.start()

    def _build_and_install(self, published: Published, seen: int) -> None:
        try:
            folder = self._ensure_built(published)
        except Exception:  # noqa: BLE001 - the old snapshot keeps serving
            self._failed()
            log.exception("snapshot build failed for version=%s; keeping the current one", published.version)
            return
        self._install_or_retry(folder, published, seen)

    def _install_or_retry(self, folder: Path, published: Published, seen: int) -> None:
        try:
            self._install(folder, published)
            self._seen_published = seen
        except Exception:  # noqa: BLE001 - e.g. the folder was pruned by a newer build meanwhile
            self._failed()
            log.exception("snapshot load failed for version=%s", published.version)

    def _failed(self) -> None:
        self.reload_failures += 1
        self._failures_in_row += 1
        delay = min(MAX_RETRY_S, RETRY_AFTER_FAILURE_S * 2 ** (self._failures_in_row - 1))
        self._retry_at = time.monotonic() + delay

    def _ensure_built(self, published: Published) -> Path:
        folder = self.snapshot_dir / folder_name(published.version)
        if is_complete(folder):
            return folder
        keep = self.settings.keep_snapshots
        if self.settings.build_in_subprocess:
            return build_in_subprocess(self.warehouse, self.snapshot_dir, published.version, keep)
        return build_snapshot(self.warehouse, self.snapshot_dir, published.version, keep)

    def _install(self, folder: Path, published: Published) -> None:
        snapshot = Snapshot(folder)
        if snapshot.version != published.version:
            raise RuntimeError(f"snapshot {folder} holds version {snapshot.version!r}, "
                               f"expected {published.version!r}")
        with self._swap_lock:
            self.state = replace(self.state, snapshot=snapshot)
            self.reloads += 1
        self._failures_in_row = 0
        log.info("snapshot loaded version=%s model=%s users=%d", snapshot.version, snapshot.model,
                 len(snapshot.users))
