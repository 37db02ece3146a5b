"""Shared bits of the benchmarks: machine facts printed beside every ratio, a synthetic interaction
matrix, and results written as JSON under benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict:
    import pyspark
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})" for i in threadpool_info()
            if i["user_api"] == "blas"]
    return {"cores": os.cpu_count(), "python": platform.python_version(), "spark": pyspark.__version__,
            "numpy": np.__version__, "blas": sorted(set(blas)), "load_avg": os.getloadavg()}


from recsys.logs import timed as timer  # noqa: E402,F401 - one timer for the library and the benchmarks


def power_law_interactions(users: int, items: int, nnz: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) pairs with Zipf-like item popularity and user activity, duplicates removed."""
    rng = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, items + 1) ** 0.9
    user_p = 1.0 / np.arange(1, users + 1) ** 0.6
    u = rng.choice(users, size=int(nnz * 1.1), p=user_p / user_p.sum())
    i = rng.choice(items, size=int(nnz * 1.1), p=item_p / item_p.sum())
    pairs = np.unique(np.stack([u, i], axis=1), axis=0)[:nnz]
    rng.shuffle(pairs)
    return pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32)


def spark_session():
    from recsys.config import load_settings
    from recsys.spark import get_spark

    settings = load_settings()
    return get_spark(settings.spark.model_copy(update={"console_progress": False, "log_level": "ERROR"}))


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2, default=str))
    return path
