"""What the ``ops/*`` tables say is current, read once for every caller: the API, the Airflow worker and the Spark
jobs all decide here (delta-rs and pyarrow, no JVM), so publish, pruning, the gates, the DAGs and the API never
disagree.

- ``ops/published``: the current version is the row with the greatest ``published_at``; a same-second republish
  goes to the greater version string; a row without ``published_at`` (written, not switched) never counts.
- ``ops/model_registry``: a model's present stage is its latest row per (run_id, model); production is the most
  recently promoted production entry. Model folders are kept relative to the warehouse (a copied or moved
  warehouse loads its own models) and come back absolute; an absolute path in an old row is used as it is.
- ``ops/_unswitched.json``: versions whose rows are written and not switched yet (:mod:`recsys.publish`).
- ``ops/selection/<run_id>.json``: what a run's model selection chose (:mod:`recsys.selection`), read by its train
  step and its report.

Spark-written timestamps read back as ``timestamp[us]``, with or without a zone: they are UTC either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from recsys.constants import MODEL, MODEL_REGISTRY, PUBLISHED, VERSION
from recsys.delta import log_version, read_table

CANDIDATE, PRODUCTION, ARCHIVED, REJECTED = "candidate", "production", "archived", "rejected"   # registry stages
RUN_ID, PUBLISHED_AT, K, UPDATED_AT, MODEL_PATH = "run_id", "published_at", "k", "updated_at", "model_path"
REGISTRY_COLUMNS = [RUN_ID, MODEL, "stage", MODEL_PATH, "params", "metric", "reason", UPDATED_AT]
UNSWITCHED = "ops/_unswitched.json"   # version -> when its rows were written, until it is switched
MODELS_DIR = "models"                 # <warehouse>/models/<model>/<run_id>/: every saved model folder
REFIT_SUFFIX = "-all"                 # publish's refit of the production model on every split: <run_id>-all
SELECTIONS = "ops/selection"          # <run_id>.json per run that searched; studies.db (Optuna)


@dataclass(frozen=True)
class Published:
    """One switch of ``ops/published``: ``version`` became current at ``published_at`` (UTC)."""

    version: str
    model: str
    run_id: str
    published_at: datetime
    k: int


def _utc(stamp: datetime) -> datetime:
    return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp


# --- ops/published ------------------------------------------------------------------------------------------------


def published_log_version(warehouse: Path | str) -> int:
    """The latest commit of ``ops/published`` (-1: none): cheap enough to poll for a switch."""
    return log_version(Path(warehouse) / PUBLISHED)


def switches(warehouse: Path | str) -> list[Published]:
    """Every switch of ``ops/published``, current first: ``published_at`` descending, ties to the greater version;
    rows without ``published_at`` are left out."""
    if published_log_version(warehouse) < 0:
        return []
    table = read_table(Path(warehouse) / PUBLISHED, [VERSION, MODEL, RUN_ID, PUBLISHED_AT, K])
    table = table.filter(pc.is_valid(table[PUBLISHED_AT]))
    table = table.take(pc.sort_indices(table, [(PUBLISHED_AT, "descending"), (VERSION, "descending")]))
    return [Published(version=r[VERSION], model=r[MODEL] or "", run_id=r[RUN_ID] or "",
                      published_at=_utc(r[PUBLISHED_AT]), k=int(r[K] or 0)) for r in table.to_pylist()]


def current_published(warehouse: Path | str, version: str | None = None) -> Published | None:
    """The switch the API follows, or (``version``) that version's latest switch; None when there is none."""
    return next((s for s in switches(warehouse) if version is None or s.version == version), None)


def current_version(warehouse: Path | str) -> str | None:
    current = current_published(warehouse)
    return current.version if current else None


def published_versions(warehouse: Path | str) -> list[str]:
    """Each published version once, by its latest switch, current first (the order pruning keeps them in)."""
    return list(dict.fromkeys(s.version for s in switches(warehouse)))


def unswitched(warehouse: Path | str) -> dict[str, datetime]:
    """Versions written and not switched yet, with when they were written."""
    try:
        raw = json.loads((Path(warehouse) / UNSWITCHED).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return {v: datetime.fromisoformat(t) for v, t in raw.items()}


# --- ops/selection -------------------------------------------------------------------------------------------------


def selection_path(warehouse: Path | str, run_id: str) -> Path:
    return Path(warehouse) / SELECTIONS / f"{run_id}.json"


def selection(warehouse: Path | str, run_id: str) -> dict[str, Any]:
    """The run's model selection (model → search summary with the ``best`` params); empty when it searched
    nothing."""
    path = selection_path(warehouse, run_id)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def kept_versions(warehouse: Path | str, keep: int, *, pinned: Iterable[str] = (), grace_hours: float = 48.0,
                  now: datetime | None = None) -> set[str]:
    """The versions pruning must leave: the ``keep`` most recently published (the current one first), ``pinned``
    ones, and those written less than ``grace_hours`` before ``now`` and not switched yet (their switch may come)."""
    horizon = (now or datetime.now(timezone.utc)) - timedelta(hours=grace_hours)
    recent = {v for v, written in unswitched(warehouse).items() if written > horizon}
    return set(published_versions(warehouse)[:keep]) | set(pinned) | recent


# --- ops/model_registry -------------------------------------------------------------------------------------------


def model_dir(warehouse: Path | str, model: str, run_id: str) -> Path:
    return Path(warehouse).resolve() / MODELS_DIR / model / run_id


def refit_dir(warehouse: Path | str, model: str, run_id: str) -> Path:
    """Where publish refits ``run_id``'s production ``model`` on every split (absent until a refit ran)."""
    return model_dir(warehouse, model, run_id + REFIT_SUFFIX)


def last_fitted(warehouse: Path | str, model: str, run_id: str, model_path: str) -> Path:
    """The model folder as last fitted: publish's refit when one ran, else the registered candidate
    (``model_path``)."""
    refit = refit_dir(warehouse, model, run_id)
    return refit if refit.is_dir() else Path(model_path)


def stored_path(warehouse: Path | str, model_path: str) -> str:
    """A model folder as the registry keeps it: relative to the warehouse when inside it."""
    if not model_path:
        return model_path
    try:
        return str(Path(model_path).resolve().relative_to(Path(warehouse).resolve()))
    except ValueError:
        return model_path


def resolved_path(warehouse: Path | str, model_path: str | None) -> str | None:
    """The absolute folder of a registry ``model_path`` (relative ones are under the warehouse)."""
    if not model_path or Path(model_path).is_absolute():
        return model_path
    return str(Path(warehouse).resolve() / model_path)


def registry_state(warehouse: Path | str) -> list[dict[str, Any]]:
    """The latest ``ops/model_registry`` row of every (run_id, model), oldest change first, ``model_path``
    absolute."""
    path = Path(warehouse) / MODEL_REGISTRY
    if log_version(path) < 0:
        return []
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in read_table(path, REGISTRY_COLUMNS).to_pylist():
        row[UPDATED_AT] = _utc(row[UPDATED_AT])
        key = (row[RUN_ID], row[MODEL])
        if key not in latest or row[UPDATED_AT] >= latest[key][UPDATED_AT]:   # equal stamps: the later commit
            latest[key] = row
    for row in latest.values():
        row[MODEL_PATH] = resolved_path(warehouse, row[MODEL_PATH])
    return sorted(latest.values(), key=lambda r: r[UPDATED_AT])


def production_model(warehouse: Path | str) -> dict[str, Any] | None:
    """The production entry (the most recently promoted), or None."""
    return next((r for r in reversed(registry_state(warehouse)) if r["stage"] == PRODUCTION), None)


def run_models(warehouse: Path | str, run_id: str) -> list[dict[str, Any]]:
    """Every model registered by ``run_id``, whatever its stage, by model name."""
    return sorted((r for r in registry_state(warehouse) if r[RUN_ID] == run_id), key=lambda r: r[MODEL])
