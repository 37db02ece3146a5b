"""Run tracking (``ops/runs``) and the model registry (``ops/model_registry``) on Delta.

A *run* is one training pass over one split: each model trained in it is a *candidate*; evaluation
records its metrics; the promotion rule moves at most one model to ``production`` (the others of that
run stay candidates, the previous production model is ``archived``), or marks the run's best ``rejected``
when it lost to production on the run's own test split (the reason row says by how much). Every change is an
append, so the tables double as the audit trail; the current state of a model is its latest row. Spark writes
here; :mod:`recsys.ops` reads the registry (JVM-free) and owns the stage names and how a model folder is stored.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from recsys import constants as C
from recsys import tables as T
from recsys.config import REPO_ROOT
from recsys.ops import stored_path


def new_run_id() -> str:
    return f"run-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def code_version() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _append(spark: SparkSession, warehouse, spec: T.TableSpec, rows: list[dict[str, Any]]) -> None:
    path = T.ensure_table(spark, warehouse, spec)
    spark.createDataFrame(rows, schema=spec.ddl).write.format("delta").mode("append").save(path)


def record_run(spark: SparkSession, warehouse, *, run_id: str, model: str, stage: str, params: dict,
               metrics: dict[str, float], train_seconds: float | None, split: str, data_versions: dict,
               model_path: str) -> None:
    record_runs(spark, warehouse, [{"run_id": run_id, "model": model, "stage": stage, "params": params,
                                    "metrics": metrics, "train_seconds": train_seconds, "split": split,
                                    "data_versions": data_versions, "model_path": model_path}])


def record_runs(spark: SparkSession, warehouse, runs: list[dict[str, Any]]) -> None:
    """Many ``ops/runs`` rows in one commit (model selection's trials), each with :func:`record_run`'s keys."""
    now = datetime.now(timezone.utc)
    _append(spark, warehouse, T.RUNS, [{
        "run_id": r["run_id"], "model": r["model"], "stage": r["stage"],
        "params": json.dumps(r["params"], sort_keys=True),
        "metrics": {k: float(v) for k, v in r["metrics"].items()}, "train_seconds": r["train_seconds"],
        "split": r["split"], "data_versions": json.dumps(r["data_versions"], sort_keys=True),
        "code_version": code_version(), "model_path": stored_path(warehouse, r["model_path"]), "recorded_at": now}
        for r in runs])


def set_stage(spark: SparkSession, warehouse, *, run_id: str, model: str, stage: str, model_path: str,
              params: dict, metric: float | None, reason: str) -> None:
    _append(spark, warehouse, T.MODEL_REGISTRY, [{
        "run_id": run_id, "model": model, "stage": stage, "model_path": stored_path(warehouse, model_path),
        "params": json.dumps(params, sort_keys=True), "metric": metric, "reason": reason,
        "updated_at": datetime.now(timezone.utc)}])


def list_runs(spark: SparkSession, warehouse) -> list[dict]:
    """Every evaluated run row as the CLI prints it (``recsys runs --json``); a reader: it creates nothing."""
    path = T.table_path(warehouse, T.RUNS.path)
    if not T.is_delta_table(Path(path)):
        return []
    out = []
    for r in spark.read.format("delta").load(path).orderBy("recorded_at").collect():
        out.append({"run_id": r["run_id"], "model": r[C.MODEL], "stage": r["stage"],
                    "params": json.loads(r["params"] or "{}"), "metrics": dict(r["metrics"] or {}),
                    "train_seconds": r["train_seconds"], "split": r["split"], "recorded_at": r["recorded_at"]})
    return out


def best_per_model(runs: list[dict], metric: str) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for run in runs:
        value = run["metrics"].get(metric)
        if value is not None and (run["model"] not in best or value > best[run["model"]]["metrics"][metric]):
            best[run["model"]] = run
    return best
