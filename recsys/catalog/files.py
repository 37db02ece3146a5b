"""The cascade beyond Delta: model factor files and the API's event logs.

- Model outputs (``models/<model>/<run>/user_*`` and ``item_*`` folders, Parquet keyed by ``id INT``: the factors
  of every model, and the multi-stage model's histories, embeddings, neighbours and item features) lose the rows
  of erased users and deleted items: rewritten beside and swapped in (:mod:`recsys.catalog.swap`).
- Event logs lose every line of an erased user — by the line's ``user_id``, or by whole token for a line without
  one (torn or garbled); the API rewrites its logs (:func:`recsys.serve.maintenance.scrub_events`), as it rebuilds
  its snapshots (:func:`recsys.serve.maintenance.refresh_snapshots`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from recsys.catalog import swap
from recsys.catalog.mentions import Matcher
from recsys.ids import is_valid_id
from recsys.serve.maintenance import scrub_events

MODELS_DIR = "models"
USER_PREFIX, ITEM_PREFIX = "user_", "item_"      # a model's folders keyed by user_idx / item_idx


def model_dirs(warehouse: Path | str) -> list[Path]:
    """Every saved model (a folder holding ``model.json``) under ``<warehouse>/models``."""
    root = Path(warehouse).resolve() / MODELS_DIR
    return sorted(p.parent for p in root.rglob("model.json")) if root.is_dir() else []


def drop_factor_rows(folder: Path, ids: Iterable[int]) -> list[int]:
    """Rewrite a factor folder without the rows whose ``id`` is in ``ids``; returns the ids removed."""
    wanted = pa.array(sorted(set(ids)), type=pa.int32())
    if len(wanted) == 0 or not folder.is_dir():
        return []
    table = pds.dataset(folder, format="parquet").to_table()     # Spark's _SUCCESS and .crc files are ignored
    hit = pc.is_in(table["id"].cast(pa.int32()), value_set=wanted)
    removed = table.filter(hit)["id"].to_pylist()
    if not removed:
        return []
    staged = swap.staging(folder)
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    pq.write_table(table.filter(pc.invert(hit)), staged / "part-00000.parquet")
    swap.swap_in(folder)
    return removed


def drop_model_rows(warehouse: Path | str, user_idx: Iterable[int], item_idx: Iterable[int]) -> dict[str, list[int]]:
    """Remove erased users' and deleted items' factors from every saved model; ids removed per folder."""
    out = {}
    users, items = list(user_idx), list(item_idx)
    root = Path(warehouse).resolve()
    for model in model_dirs(warehouse):
        for folder in sorted(p for p in model.iterdir() if p.is_dir()):
            ids = users if is_user_folder(folder.name) else items if folder.name.startswith(ITEM_PREFIX) else []
            removed = drop_factor_rows(folder, ids)
            if removed:
                out[str(folder.relative_to(root))] = removed
    return out


def is_user_folder(name: str) -> bool:
    """Whether a model's folder is keyed by user (``user_*``) rather than by item (``item_*``)."""
    return Path(name).name.startswith(USER_PREFIX)


def line_owner(line: bytes) -> str | None:
    """The ``user_id`` a JSON line names, when it is one valid id (the twin of ``owner_of_json_line``)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    owner = record.get("user_id") if isinstance(record, dict) else None
    return owner if is_valid_id(owner) else None


def line_labels(line: bytes, owners: Mapping[str, str], matcher: Matcher) -> set[str]:
    """Which erased users a line belongs to: its owner's label, or (no valid owner) every id it names."""
    owner = line_owner(line)
    if owner is not None:
        return {owners[owner]} if owner in owners else set()
    return matcher.find(line)


def scrub_event_logs(folder: Path, users: Mapping[str, str]) -> dict[str, int]:
    """Rewrite each event log without the lines of ``users`` (plain id → label); lines removed per label."""
    out: dict[str, int] = {}
    matcher = Matcher(users, map(len, users))
    if not matcher or not folder.is_dir():
        return out

    def keep(line: bytes) -> bool:
        labels = line_labels(line, users, matcher)
        for label in labels:
            out[label] = out.get(label, 0) + 1
        return not labels

    scrub_events(folder, keep)
    return out
