"""Which snapshot serves which user under an A/B experiment, inside one API worker.

A variant either follows ``ops/published`` ("current": the worker's :class:`~recsys.serve.store.SnapshotStore`
snapshot, hot-reloaded as usual) or is pinned to one published version. A pinned version gets its own snapshot
folder, ``<serving>/ab/<version>/<version>/`` — its own ``snapshot_dir``, so building it never moves the main
folder's ``current`` pointer nor prunes the current snapshot — built once and memory-mapped by every worker.

The deny-list is the worker's one deny-list whatever the variant, so deletions and erasures apply to pinned
versions at once too. Events are stamped here with the user's variant and the version that variant serves: the
server's assignment, not what a client claims, is what the readout must count.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from recsys.constants import USER_ID
from recsys.serve.denylist import DenyList
from recsys.serve.events import VARIANT, EventLog
from recsys.serve.experiment import CURRENT, ABSettings, assign
from recsys.serve.settings import SERVING_DIR, ServeSettings
from recsys.serve.snapshot import (
    META, NoPublishedVersion, Snapshot, build_in_subprocess, build_snapshot, folder_name, is_complete,
)
from recsys.serve.store import SnapshotStore

log = logging.getLogger(__name__)

AB_DIR = "ab"


def pinned_root(warehouse: Path | str) -> Path:
    """The folder holding one snapshot_dir per pinned version."""
    return Path(warehouse).resolve() / SERVING_DIR / AB_DIR


def pinned_dir(warehouse: Path | str, version: str) -> Path:
    """The snapshot_dir of a pinned version (one per version: a build prunes its siblings)."""
    return pinned_root(warehouse) / folder_name(version)


def build_pinned(warehouse: Path | str, version: str, in_subprocess: bool = False) -> Path:
    """Build (once) the snapshot of a pinned version; returns its folder. Raises if the version was never
    published (``NoPublishedVersion``) — a typo in the experiment config must not serve an empty variant."""
    target = pinned_dir(warehouse, version)
    folder = target / folder_name(version)
    if is_complete(folder):
        return folder
    if in_subprocess:
        return build_in_subprocess(Path(warehouse), target, version, 1)
    return build_snapshot(Path(warehouse), target, version, keep=1)


def rebuild_pinned(warehouse: Path | str) -> list[str]:
    """Rebuild in place every pinned snapshot on disk, so its files lose the rows a deletion removed from the gold
    tables; a pinned version no longer published is deleted. Workers keep serving their mapped copy behind the
    deny-list until they restart. Returns the versions rebuilt."""
    rebuilt = []
    for target in sorted(p for p in pinned_root(warehouse).glob("*") if p.is_dir()):
        versions = {json.loads((f / META).read_text(encoding="utf-8"))["version"]
                    for f in target.iterdir() if f.is_dir() and is_complete(f)}
        for version in versions:
            try:
                build_snapshot(Path(warehouse), target, version, force=True, keep=1)
                rebuilt.append(version)
            except NoPublishedVersion:
                shutil.rmtree(target, ignore_errors=True)
        if not versions:
            shutil.rmtree(target, ignore_errors=True)        # only half-built leftovers
    return rebuilt


class VariantRouter:
    """Assigns users to variants and hands out the snapshot each variant serves."""

    def __init__(self, warehouse: Path | str, settings: ServeSettings, store: SnapshotStore,
                 ab: ABSettings | None):
        self.warehouse = Path(warehouse)
        self.settings = settings
        self.store = store
        self.ab = ab if ab is not None and ab.enabled else None
        self.pinned: dict[str, Snapshot | None] = dict.fromkeys(sorted(self.ab.pinned_versions() if self.ab else ()))
        self._builders: list[threading.Thread] = []

    def start(self, wait_for_build: bool = True) -> None:
        """Map every pinned version, building it first if needed (in the background with ``wait_for_build=False``,
        its users getting 503 until it is ready)."""
        for version in self.pinned:
            if wait_for_build or is_complete(pinned_dir(self.warehouse, version) / folder_name(version)):
                self._load(version, raise_errors=wait_for_build)
            else:
                thread = threading.Thread(target=self._load, args=(version, False), daemon=True,
                                          name=f"ab-builder-{version}")
                thread.start()
                self._builders.append(thread)

    def wait_for_builders(self, timeout: float | None = None) -> None:
        for thread in self._builders:
            thread.join(timeout)

    def _load(self, version: str, raise_errors: bool) -> None:
        try:
            folder = build_pinned(self.warehouse, version, self.settings.build_in_subprocess and not raise_errors)
            self.pinned[version] = Snapshot(folder)
            log.info("A/B pinned snapshot loaded version=%s", version)
        except Exception:
            if raise_errors:
                raise
            log.exception("A/B pinned snapshot of version=%s could not be loaded; its variant answers 503", version)

    def route(self, user_id: str) -> tuple[str | None, Snapshot | None, DenyList]:
        """(variant or None without an experiment, the snapshot serving this user or None if not ready, deny-list)."""
        state = self.store.state
        if self.ab is None:
            return None, state.snapshot, state.denylist
        variant = assign(self.ab, user_id)
        version = self.ab.variants[variant].version
        return variant, state.snapshot if version == CURRENT else self.pinned.get(version), state.denylist


class AssignedEventLog(EventLog):
    """An :class:`EventLog` that stamps every record with its user's variant and that variant's version/model."""

    def __init__(self, folder: Path, router: VariantRouter):
        super().__init__(folder)
        self.router = router

    def append(self, records: list[dict[str, Any]], version: str | None, model: str | None) -> list[str]:
        if self.router.ab is None:
            return super().append(records, version, model)
        groups: dict[tuple[str | None, str | None], list[int]] = {}
        stamped = []
        for i, record in enumerate(records):
            variant, snapshot, _ = self.router.route(record[USER_ID])
            stamped.append({**record, VARIANT: variant})
            key = (snapshot.version, snapshot.model) if snapshot is not None else (None, None)
            groups.setdefault(key, []).append(i)
        ids: list[str] = [""] * len(records)
        for (group_version, group_model), members in groups.items():
            for i, event_id in zip(members, super().append([stamped[i] for i in members], group_version,
                                                            group_model)):
                ids[i] = event_id
        return ids
