"""Start-up and bookkeeping every benchmark shares, so each script keeps only what it measures: ``recsys``
importable from the checkout, the real-data folder setting, the Appliances-size dump flags, a quiet Spark session,
the machine facts saved beside every ratio, a synthetic interaction matrix, results as JSON under
benchmarks/results/.

Import it before ``recsys``: ``from common import ...`` works because Python puts a script's folder first on
``sys.path``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Real public data (Amazon Reviews 2023, MovieLens) lives outside the checkout; one setting says where.
SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", ROOT.parent / "shared" / "data"))
# The Appliances-size synthetic dump the README's scale figures are measured on.
APPLIANCES = {"users": 1_800_000, "items": 94_000, "reviews": 2_100_000}

from recsys.logs import timed as timer  # noqa: E402,F401 - one timer for the library and the benchmarks


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser whose ``--help`` opens with the first paragraph of the benchmark's docstring."""
    return argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()))


def add_dump_size(parser: argparse.ArgumentParser, **defaults: int) -> None:
    """``--users/--items/--reviews`` of the synthetic dump, Appliances size unless ``defaults`` say otherwise."""
    for name, default in (APPLIANCES | defaults).items():
        parser.add_argument(f"--{name}", type=int, default=default)


def quiet_spark(spark_settings, **overrides):
    """The configured Spark settings without the progress bar and INFO logs, which would bury the figures."""
    return spark_settings.model_copy(update={"console_progress": False, "log_level": "ERROR", **overrides})


def spark_session(**overrides):
    """One Spark session from the configuration (``conf/default.yaml`` + ``RECSYS_`` overrides), quiet."""
    from recsys.config import load_settings
    from recsys.spark import get_spark

    return get_spark(quiet_spark(load_settings().spark, **overrides))


def machine() -> dict:
    import pyspark
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})" for i in threadpool_info()
            if i["user_api"] == "blas"]
    return {"cores": os.cpu_count(), "python": platform.python_version(), "spark": pyspark.__version__,
            "numpy": np.__version__, "blas": sorted(set(blas)), "load_avg": os.getloadavg()}


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


def save(name: str, result: dict, merge: bool = False) -> Path:
    """``benchmarks/results/<name>.json`` with the machine facts; ``merge`` keeps the keys this run did not
    measure (the real-data benchmark runs one dataset at a time)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    previous = json.loads(path.read_text()) if merge and path.is_file() else {}
    path.write_text(json.dumps(previous | {"machine": machine(), **result}, indent=2, default=str))
    return path


def print_report(report: dict, as_json: bool) -> bool:
    """The whole report as JSON (``as_json``: returns True), else one ``key: value`` line per figure, the per-run
    details (``runs``) left for the caller's table."""
    if as_json:
        print(json.dumps(report, indent=1))
        return True
    for key, value in report.items():
        if key != "runs":
            print(f"{key}: {value}")
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it; a server started soon after can bind it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def pyplot():
    """matplotlib's pyplot without a display (benchmarks draw the README's plots into files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> None:
    """Write ``fig`` to ``out`` (a PNG the README shows) and free it."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    pyplot().close(fig)
