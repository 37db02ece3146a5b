"""A real Spark standalone cluster (a master and two workers, started by ``conf/cluster/standalone.sh`` as
``make cluster-up`` does) running the same ``jobs/*.py`` a user spark-submits: ingest, silver, features, a
Spark ALS fit and a GRU4Rec trained on both workers at once (TorchDistributor), on a small synthetic dump.
Each job must succeed on the cluster (the master lists it, both
workers ran executors for it) and its tables must reconcile with what the generator wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import SMALL_JOB_JAVA, SMALL_JOB_SPARK
from netutil import free_port
from recsys import constants as C
from recsys.config import SynthSettings
from recsys.synth import generate

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "conf" / "cluster" / "standalone.sh"
BIN = Path(sys.executable).parent


def _master_state(webui: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    port, webui, worker_ui = free_port(), free_port(), free_port()
    env = {**os.environ, "VENV": str(BIN.parent), "CLUSTER_DIR": str(state), "SPARK_MASTER_PORT": str(port),
           "SPARK_MASTER_WEBUI_PORT": str(webui), "SPARK_WORKER_WEBUI_PORT": str(worker_ui),
           "WORKER_MEMORY": "2g", "SPARK_DAEMON_JAVA_OPTS": SMALL_JOB_JAVA}     # master and workers: idle JVMs
    subprocess.run(["bash", str(SCRIPT), "up", "2"], env=env, check=True, timeout=180, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while len([w for w in _master_state(webui)["workers"] if w["state"] == "ALIVE"]) < 2:
            assert time.monotonic() < deadline, (state / "master.log").read_text()[-3000:]
            time.sleep(1)
        yield {"master": f"spark://127.0.0.1:{port}", "webui": webui, "state": state}
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, check=False, timeout=60, capture_output=True)


def _submit(cluster: dict, job: str, *args: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RECSYS_SPARK__SHUFFLE_PARTITIONS": "2"}
    conf = [arg for key, value in SMALL_JOB_SPARK.items() for arg in ("--conf", f"{key}={value}")]
    done = subprocess.run([str(BIN / "spark-submit"), "--master", cluster["master"], *conf, str(ROOT / "jobs" / job),
                           *args], env=env, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    errors = [line for line in done.stderr.splitlines() if " error: " in line or "Error" in line]
    assert done.returncode == 0, f"{job} failed on the cluster: {errors[-5:]}\n{done.stderr[-3000:]}"


def _rows(table: Path) -> int:
    return DeltaTable(str(table)).to_pyarrow_table().num_rows


def test_jobs_run_on_a_standalone_cluster(cluster, tmp_path):
    source, warehouse = tmp_path / "dump", tmp_path / "wh"
    summary = generate(source, SynthSettings(users=300, items=60, reviews=2000, categories=["Appliances"]),
                       bad_line_rate=0.01, progress=False)
    jobs = [("ingest.py", "--source", str(source)), ("build_silver.py",), ("build_features.py",),
            ("train.py", "--model", "spark_als", "--run-id", "run-cluster", "--params",
             '{"factors": 4, "iterations": 3}'),
            # GRU4Rec data-parallel: TorchDistributor's barrier stage puts one replica on each worker
            ("train.py", "--model", "gru4rec", "--run-id", "run-cluster", "--params",
             '{"layers": [16], "n_sample": 32, "epochs": 2, "processes": 2}')]
    for job, *args in jobs:
        _submit(cluster, job, "--warehouse", str(warehouse), *args)

    apps = _master_state(cluster["webui"])["completedapps"]
    assert sorted(a["name"] for a in apps) == sorted(job for job, *_ in jobs), apps
    for worker in ("work-1", "work-2"):                    # every job had executors on both workers
        assert len(list((cluster["state"] / worker).glob("app-*"))) == len(jobs), worker

    bad = sum(summary.bad_lines.values())
    assert _rows(warehouse / C.BRONZE_REVIEWS) == summary.reviews
    assert _rows(warehouse / C.QUARANTINE_REVIEWS) == bad
    assert _rows(warehouse / C.BRONZE_ITEMS) == summary.items
    assert _rows(warehouse / C.SILVER_ITEMS) == summary.items
    assert 0 < _rows(warehouse / C.INTERACTIONS) <= summary.reviews
    assert _rows(warehouse / C.USER_INDEX) == summary.reviewers
    factors = warehouse / "models" / "spark_als" / "run-cluster" / "user_factors"
    assert sorted(factors.glob("*.parquet")), "the ALS fitted on the cluster saved no factors"
    gru4rec = json.loads((warehouse / "models" / "gru4rec" / "run-cluster" / "model.json").read_text())
    assert gru4rec["info"]["processes"] == 2 and gru4rec["info"]["steps"] > 0, gru4rec
