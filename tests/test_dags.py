"""The Airflow side: DAG integrity (every file loads, expected tasks and edges, cheap imports), the orchestration
helpers the DAGs call, and end-to-end ``dag.test()`` runs of ``recsys_pipeline`` on a small synthetic dump.

Airflow reads its configuration once, at first import, and installs its own logging; so everything that imports
Airflow runs in a child process (this file run as a script: see ``_PROBES``) with a throwaway ``AIRFLOW_HOME`` and
SQLite DB, and the pytest process itself never imports Airflow.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
_MARK = "@@probe@@"

PIPELINE_CHAIN = ["plan", "ingest", "gate_bronze", "silver", "gate_silver", "features", "gate_gold", "select",
                  "train", "evaluate", "promotion_gate", "publish_write", "gate_published", "publish_switch",
                  "signal_api"]
RETRAIN_CHAIN = [t if t != "promotion_gate" else "promoted" for t in PIPELINE_CHAIN]
DELETIONS_CHAIN = ["wait_for_drops", "plan", "apply_deletions", "gate_silver", "gate_gold", "publish_write",
                   "gate_published", "publish_switch", "signal_api", "archive_drops"]
MONITORING_CHAIN = ["plan", "indicators", "ab_report"]


# --- child-process probes (import Airflow) -----------------------------------------------------------------------


def _spark_info(task: Any) -> dict[str, str] | None:
    """Connection and script of a SparkSubmitOperator task, mapped (``partial_kwargs``) or not; else None."""
    cls = getattr(task, "operator_class", type(task))
    if getattr(cls, "__name__", "") != "SparkSubmitOperator":
        return None
    kwargs = getattr(task, "partial_kwargs", None)
    if kwargs is not None:
        return {"conn_id": kwargs["conn_id"], "application": kwargs["application"]}
    return {"conn_id": task._conn_id, "application": task.application}


def _dagbag():
    """The DAG folder parsed as Airflow's processor and task runner parse a bundle (its root on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)


def _probe_dagbag() -> dict[str, Any]:
    import time

    start = time.perf_counter()
    bag = _dagbag()
    seconds = time.perf_counter() - start
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "tasks": sorted(dag.task_ids),
            "edges": sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
            "params": sorted(dag.params),
            "schedule": str(dag.schedule) if dag.schedule is not None else None,
            "max_active_runs": dag.max_active_runs,
            "spark": {t.task_id: info for t in dag.tasks if (info := _spark_info(t))},
            "retries": {t.task_id: t.retries for t in dag.tasks},
            "callbacks": sorted(t.task_id for t in dag.tasks if t.on_failure_callback),
            "timeouts": sorted(t.task_id for t in dag.tasks if t.execution_timeout),
            "pools": {t.task_id: t.pool for t in dag.tasks},
        }
    return {"import_errors": bag.import_errors, "dags": dags, "seconds": seconds,
            "heavy_modules": sorted(m for m in ("pyspark", "delta", "deltalake", "great_expectations", "implicit",
                                                "recsys.spark", "recsys.models") if m in sys.modules)}


def _probe_migrate() -> dict[str, Any]:
    from airflow.models.pool import Pool
    from local_airflow import migrate

    from recsys.orchestration import WRITER_POOL

    migrate()          # `airflow db migrate` + the writer pool
    return {"ok": True, "pool_slots": Pool.get_pool(WRITER_POOL).slots}


def _probe_failure_line() -> dict[str, Any]:
    from recsys_common import describe_failure

    class TI:
        dag_id, task_id, map_index, try_number, run_id = "recsys_pipeline", "train", 2, 3, "manual__x"
        log_url = "http://127.0.0.1:8080/dags/recsys_pipeline/runs/manual__x/tasks/train/mapped/2?try_number=3"

        def xcom_pull(self, task_ids: str, key: str) -> str:
            return "run-20260301T000000Z-abc123"

    line = describe_failure({"ti": TI(), "exception": RuntimeError("Cannot execute: spark-submit …\nmore")})
    return {"line": line, "log_url": TI.log_url}


def _probe_dag_test(dag_id: str, conf: str) -> dict[str, Any]:
    dag = _dagbag().get_dag(dag_id)
    run = dag.test(run_conf=json.loads(conf))
    tis, seconds = {}, {}
    for ti in run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"
        tis[key] = str(ti.state)
        seconds[key] = round(ti.duration or 0.0, 1)
    return {"state": str(run.state), "run_id": run.run_id, "run_after": run.run_after.isoformat(), "tis": tis,
            "seconds": seconds}


_PROBES = {"dagbag": _probe_dagbag, "migrate": _probe_migrate, "dag_test": _probe_dag_test,
           "failure_line": _probe_failure_line}


def _airflow_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """``dags/local_airflow.py``'s environment (loaded from its file: the pytest process keeps dags/ off sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("local_airflow", DAGS / "local_airflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.local_airflow_env(home, "local[2]", extra)


def _probe(name: str, *args: str, env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, name, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        raise AssertionError(f"probe {name} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len(_MARK):])


# --- DAG integrity ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow_parse")
    return _probe("dagbag", env=_airflow_env(home), cwd=home, timeout=180)


def _chain_edges(chain: list[str]) -> set[tuple[str, str]]:
    return set(zip(chain, chain[1:]))


def test_every_dag_file_loads_without_import_errors(dagbag):
    assert dagbag["import_errors"] == {}
    assert set(dagbag["dags"]) == {"recsys_pipeline", "recsys_retrain", "recsys_deletions", "recsys_monitoring"}


def test_parsing_imports_no_spark_and_is_fast(dagbag):
    assert dagbag["heavy_modules"] == []
    assert dagbag["seconds"] < 30           # Airflow's dagbag_import_timeout: parsing past it fails the DAG file


@pytest.mark.parametrize("dag_id, chain, extra", [
    ("recsys_pipeline", PIPELINE_CHAIN, {("plan", "candidates"), ("candidates", "train")}),
    ("recsys_retrain", RETRAIN_CHAIN, {("plan", "candidates"), ("candidates", "train")}),
    ("recsys_deletions", DELETIONS_CHAIN, set()),
    ("recsys_monitoring", MONITORING_CHAIN, set()),
])
def test_each_dag_has_the_expected_tasks_and_edges(dagbag, dag_id, chain, extra):
    dag = dagbag["dags"][dag_id]
    expected = _chain_edges(chain) | extra
    assert {tuple(e) for e in dag["edges"]} == expected
    assert set(dag["tasks"]) == {t for edge in expected for t in edge}
    assert dag["max_active_runs"] == 1


def test_spark_steps_are_the_user_facing_jobs_through_spark_default(dagbag):
    pipeline = dagbag["dags"]["recsys_pipeline"]["spark"]
    assert set(pipeline) == {"ingest", "gate_bronze", "silver", "gate_silver", "features", "gate_gold", "select",
                             "train", "evaluate", "publish_write", "gate_published", "publish_switch"}
    for dag in dagbag["dags"].values():
        for task_id, spark in dag["spark"].items():
            assert spark["conn_id"] == "spark_default", task_id
            assert Path(spark["application"]).parent == REPO / "jobs", task_id
    existing = {p.name for p in (REPO / "jobs").glob("*.py")}
    assert {Path(s["application"]).name for s in pipeline.values()} - existing <= {"validate.py"}


def test_params_retries_timeouts_and_failure_callbacks(dagbag):
    pipeline = dagbag["dags"]["recsys_pipeline"]
    assert pipeline["params"] == ["categories", "k", "models", "source", "split_strategy", "tuning_budget"]
    assert "models" not in dagbag["dags"]["recsys_retrain"]["params"]
    for dag in dagbag["dags"].values():
        assert sorted(dag["callbacks"]) == sorted(dag["tasks"])
        assert sorted(dag["timeouts"]) == sorted(dag["tasks"])
        for task_id, retries in dag["retries"].items():
            if task_id.startswith("gate_") or task_id in ("plan", "promotion_gate", "promoted"):
                assert retries == 0, task_id          # a verdict on the data or the params: retrying changes nothing
            elif task_id in dag["spark"]:
                assert retries >= 1, task_id


def test_dag_files_import_only_airflow_and_cheap_modules_at_top_level():
    allowed = {"__future__", "logging", "pathlib", "datetime", "typing", "collections.abc", "airflow.sdk",
               "airflow.sdk.exceptions", "airflow.providers.apache.spark.operators.spark_submit", "recsys_common",
               "recsys", "recsys.constants", "recsys.orchestration"}  # stdlib-only (see the probe's heavy_modules)
    dag_files = [p for p in DAGS.glob("*.py") if p.name != "local_airflow.py"]     # not a DAG file: .airflowignore
    for path in dag_files:
        assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path (a bundle's root is on it already)"
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {node.module or ""}
            else:
                continue
            assert names <= allowed, f"{path.name} imports {names - allowed} at top level"


# --- orchestration helpers (no Airflow) -------------------------------------------------------------------------------


@pytest.fixture
def tmp_roots(tmp_path, monkeypatch) -> Path:
    """Conf lets the DAGs' path params name folders under this test's ``tmp_path`` (and nowhere else)."""
    for param in ("SOURCE", "DROPS"):
        monkeypatch.setenv(f"RECSYS_ORCHESTRATION__{param}_ROOTS", json.dumps([str(tmp_path)]))
    return tmp_path


def test_run_ids_are_stable_per_dag_run_and_distinct_across_runs():
    from recsys.orchestration import run_ids

    after = datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone.utc)
    run_id, version = run_ids("recsys_pipeline", "manual__2026-03-01T12:30:05", after)
    assert run_ids("recsys_pipeline", "manual__2026-03-01T12:30:05", after) == (run_id, version)
    assert run_id.startswith("run-20260301T123005Z-") and version.startswith("v20260301T123005Z-")
    assert run_ids("recsys_pipeline", "manual__other", after)[0] != run_id
    assert run_ids("recsys_retrain", "manual__2026-03-01T12:30:05", after)[0] != run_id


@pytest.mark.usefixtures("tmp_roots")
def test_training_plan_carries_params_into_args_and_env(tmp_path, monkeypatch):
    from recsys.orchestration import plan_training

    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    after = datetime(2026, 3, 1, tzinfo=timezone.utc)
    params = {"source": str(tmp_path), "categories": ["Appliances", " "], "k": 7, "models": ["popularity", "content"],
              "split_strategy": "random"}
    plan = plan_training(params, dag_id="d", dag_run_id="r", run_after=after).xcom()
    wh = str((tmp_path / "wh").resolve())
    assert plan["ingest"] == ["--source", str(tmp_path.resolve()), "--warehouse", wh, "--bronze-only",
                              "--categories", "Appliances"]
    assert [a[1] for a in plan["train"]] == ["popularity", "content"]
    assert all(a[a.index("--run-id") + 1] == plan["run_id"] for a in plan["train"])
    assert plan["publish_write"][-3:] == ["--version", plan["version"], "--no-switch"]
    assert plan["gate_bronze"] == ["--warehouse", wh, "--layer", "bronze", "--run-id", plan["run_id"]]
    assert plan["gate_published"][-2:] == ["--version", plan["version"]]
    assert plan["publish_switch"][-3:] == ["--version", plan["version"], "--switch"]
    env = plan["env"]
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert (Path(env["PATH"].split(os.pathsep)[0]) / "spark-submit").exists()
    assert env["RECSYS_PUBLISH__K"] == "7" and env["RECSYS_FEATURES__SPLIT__STRATEGY"] == "random"
    assert env["RECSYS_WAREHOUSE"] == wh and all(Path(env[k]).is_absolute() for k in env if k.endswith("DIR"))
    no_filter = plan_training({**params, "categories": []}, dag_id="d", dag_run_id="r", run_after=after).xcom()
    assert "--categories" not in no_filter["ingest"]


def test_every_warehouse_writer_takes_the_one_slot_writer_pool(dagbag):
    from recsys.orchestration import WRITER_POOL

    for dag_id, dag in dagbag["dags"].items():
        writers = {task_id for task_id, pool in dag["pools"].items() if pool == WRITER_POOL}
        assert writers == set(dag["spark"]), dag_id     # every Spark job writes; Python tasks do not


@pytest.mark.usefixtures("tmp_roots")
def test_the_deletions_dag_republishes_without_refitting(tmp_path, monkeypatch):
    from recsys import orchestration as O

    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    now = datetime.now(timezone.utc)
    deletions = O.plan_deletions({"drops": str(tmp_path / "drops")}, dag_id="recsys_deletions", dag_run_id="r",
                                 run_after=now).xcom()
    training = O.plan_training({"source": str(tmp_path)}, dag_id="recsys_pipeline", dag_run_id="r",
                               run_after=now).xcom()
    assert "--no-refit" in deletions["publish_write"] and "--no-refit" not in training["publish_write"]
    assert "--refit" not in training["publish_write"]      # the pipeline follows conf publish.refit_on_all


@pytest.mark.usefixtures("tmp_roots")
def test_every_spark_task_finds_its_arguments_in_its_dags_plan(dagbag, tmp_path, monkeypatch):
    from recsys import orchestration as O

    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    planners = {"recsys_pipeline": O.plan_training, "recsys_retrain": O.plan_retrain,
                "recsys_deletions": O.plan_deletions, "recsys_monitoring": O.plan_monitoring}
    params = {"source": str(tmp_path), "drops": str(tmp_path / "drops")}
    for dag_id, planner in planners.items():
        plan = planner(params, dag_id=dag_id, dag_run_id="r", run_after=datetime.now(timezone.utc)).xcom()
        for task_id in dagbag["dags"][dag_id]["spark"]:
            args = plan["train"][0] if task_id == "train" else plan[task_id]
            assert args[args.index("--warehouse") + 1] == str((tmp_path / "wh").resolve()), (dag_id, task_id)


@pytest.mark.usefixtures("tmp_roots")
def test_plan_commands_are_the_pipeline_dags_spark_tasks_in_order(dagbag, tmp_path, monkeypatch):
    """``spark_submit_commands`` (run a plan by hand, bench_dag) submits what the DAG's tasks submit, in its order."""
    from recsys import steps
    from recsys.orchestration import plan_training, spark_submit_commands

    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    spark_tasks = dagbag["dags"]["recsys_pipeline"]["spark"]
    assert [t for t in PIPELINE_CHAIN if t in spark_tasks] == list(steps.task_ids(steps.TRAINING))
    plan = plan_training({"source": str(tmp_path), "models": ["popularity", "content"]}, dag_id="d",
                         dag_run_id="r", run_after=datetime.now(timezone.utc))
    commands = spark_submit_commands(plan, master="local[2]")
    assert [label for label, _ in commands] == [
        "ingest", "gate_bronze", "silver", "gate_silver", "features", "gate_gold", "select", "train[popularity]",
        "train[content]", "evaluate", "publish_write", "gate_published", "publish_switch"]
    for label, argv in commands:
        step = label.split("[")[0]
        script = spark_tasks[step]["application"]
        assert argv[:3] == ["spark-submit", "--master", "local[2]"] and script in argv, label
        args = argv[argv.index(script) + 1:]
        assert args == (plan.train[[m[1] for m in plan.train].index(label[6:-1])] if step == "train"
                        else plan.args[step]), label


@pytest.mark.parametrize("bad, message", [
    ({"models": ["bogus"]}, "unknown model"),
    ({"split_strategy": "sideways"}, "strategy"),
    ({"source": "missing"}, "source folder not found"),
])
@pytest.mark.usefixtures("tmp_roots")
def test_training_plan_refuses_bad_params_before_any_job(tmp_path, bad, message):
    from recsys.orchestration import plan_training

    params = {"source": str(tmp_path), "models": ["popularity"], **bad}
    if "source" in bad:
        params["source"] = str(tmp_path / bad["source"])
    with pytest.raises(ValueError, match=message):
        plan_training(params, dag_id="d", dag_run_id="r", run_after=datetime.now(timezone.utc))


def test_empty_form_fields_take_conf_values_when_the_run_starts(tmp_path, monkeypatch):
    """The params' defaults are static (parsing reads no config): empty fields are filled from conf by ``plan``."""
    from recsys.config import load_settings
    from recsys.orchestration import plan_training

    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    monkeypatch.setenv("RECSYS_SOURCE", str(tmp_path))
    monkeypatch.setenv("RECSYS_PUBLISH__K", "13")
    empty = {"source": None, "categories": [], "k": None, "models": [], "split_strategy": None}
    plan = plan_training(empty, dag_id="d", dag_run_id="r", run_after=datetime.now(timezone.utc))
    conf = load_settings()
    assert plan.models == list(conf.train.models) and plan.env["RECSYS_PUBLISH__K"] == "13"
    assert plan.args["ingest"][:2] == ["--source", str(tmp_path.resolve())]
    assert plan.env["RECSYS_FEATURES__SPLIT__STRATEGY"] == conf.features.split.strategy


# --- path params confined to conf's roots -------------------------------------------------------------------------


@pytest.fixture
def raw_root(tmp_path, monkeypatch) -> Path:
    """``<tmp>/data/raw`` is the one root both path params may name (each holding a drop file), beside a sibling
    ``raw2`` and a folder ``elsewhere`` that also hold one, and a symlink ``raw/link`` to ``elsewhere``."""
    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    root = tmp_path / "data" / "raw"
    for folder in (root / "dump", tmp_path / "data" / "raw2", tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
        (folder / "users-1.jsonl").write_text('{"user_id": "U1"}\n')
    (root / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for param in ("SOURCE", "DROPS"):
        monkeypatch.setenv(f"RECSYS_ORCHESTRATION__{param}_ROOTS", json.dumps([str(root)]))
    return root


ESCAPES = {"dotdot": "data/raw/../raw2", "symlink": "data/raw/link", "elsewhere": "elsewhere", "sibling": "data/raw2"}


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_a_path_param_outside_its_roots_fails_the_plan_and_moves_nothing(raw_root, escape):
    from recsys.orchestration import drops_param, plan_deletions, plan_training

    tmp = raw_root.parent.parent
    param = str(tmp / ESCAPES[escape])
    now = datetime.now(timezone.utc)
    with pytest.raises(ValueError, match="source param .* is outside the folders it may name"):
        plan_training({"source": param, "models": ["popularity"]}, dag_id="d", dag_run_id="r", run_after=now)
    with pytest.raises(ValueError, match="drops param .* is outside the folders it may name"):
        drops_param({"drops": param})
    with pytest.raises(ValueError, match="orchestration.drops_roots"):
        plan_deletions({"drops": param}, dag_id="d", dag_run_id="r", run_after=now)
    assert (Path(param) / "users-1.jsonl").is_file() and not (Path(param) / "_inflight").exists()   # not claimed


def test_a_path_param_under_its_roots_is_taken_resolved(raw_root):
    from recsys.orchestration import drops_param, plan_deletions, plan_training

    now = datetime.now(timezone.utc)
    for param in (raw_root, raw_root / "dump", raw_root / "dump" / ".." / "dump"):
        plan = plan_training({"source": str(param), "models": ["popularity"]}, dag_id="d", dag_run_id="r",
                             run_after=now)
        assert plan.args["ingest"][:2] == ["--source", str(param.resolve())]
        assert drops_param({"drops": str(param)}) == param.resolve()
    plan = plan_deletions({"drops": str(raw_root / "dump")}, dag_id="d", dag_run_id="r", run_after=now)
    assert Path(plan.drops) == raw_root / "dump" and (raw_root / "dump" / "_inflight" / plan.run_id).is_dir()


def test_without_configured_roots_a_path_param_may_name_only_confs_own_folder(tmp_path, monkeypatch):
    from recsys.orchestration import drops_param, plan_training

    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    monkeypatch.setenv("RECSYS_SOURCE", str(tmp_path / "dump"))
    monkeypatch.setenv("RECSYS_DELETIONS__DROPS_DIR", str(tmp_path / "drops"))
    for folder in ("dump", "dump2", "drops", "drops2"):
        (tmp_path / folder).mkdir()
    now = datetime.now(timezone.utc)
    plan = plan_training({"source": str(tmp_path / "dump")}, dag_id="d", dag_run_id="r", run_after=now)
    assert plan.args["ingest"][:2] == ["--source", str((tmp_path / "dump").resolve())]
    assert drops_param({"drops": str(tmp_path / "drops")}) == (tmp_path / "drops").resolve()
    with pytest.raises(ValueError, match="outside"):
        plan_training({"source": str(tmp_path / "dump2")}, dag_id="d", dag_run_id="r", run_after=now)
    with pytest.raises(ValueError, match="outside"):
        drops_param({"drops": str(tmp_path / "drops2")})


def _write_registry(warehouse: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    schema = pa.schema([("run_id", pa.string()), ("model", pa.string()), ("stage", pa.string()),
                        ("model_path", pa.string()), ("params", pa.string()), ("metric", pa.float64()),
                        ("reason", pa.string()), ("updated_at", pa.timestamp("us", tz="UTC"))])
    full = [{"model_path": "/m", "params": "{}", "metric": None, "reason": "", **r} for r in rows]
    write_deltalake(str(warehouse / "ops" / "model_registry"), pa.Table.from_pylist(full, schema=schema), mode="append")


def test_promotion_is_read_from_the_registry_without_a_jvm(tmp_path):
    from recsys.ops import production_model
    from recsys.orchestration import describe_no_promotion, promoted_model

    t = lambda minute: datetime(2026, 3, 1, 12, minute, tzinfo=timezone.utc)  # noqa: E731
    assert promoted_model(tmp_path, "run-a") is None and production_model(tmp_path) is None
    _write_registry(tmp_path, [
        {"run_id": "run-a", "model": "popularity", "stage": "candidate", "updated_at": t(1)},
        {"run_id": "run-a", "model": "spark_als", "stage": "candidate", "updated_at": t(1)},
        {"run_id": "run-a", "model": "spark_als", "stage": "production", "metric": 0.3, "updated_at": t(2)},
        {"run_id": "run-b", "model": "implicit_als", "stage": "candidate", "updated_at": t(3)},
    ])
    assert promoted_model(tmp_path, "run-a")["model"] == "spark_als"
    assert promoted_model(tmp_path, "run-b") is None
    assert "promoted none of implicit_als" in describe_no_promotion(tmp_path, "run-b")
    _write_registry(tmp_path, [
        {"run_id": "run-a", "model": "spark_als", "stage": "archived", "updated_at": t(4)},
        {"run_id": "run-b", "model": "implicit_als", "stage": "production", "metric": 0.4, "updated_at": t(4)},
    ])
    assert promoted_model(tmp_path, "run-a") is None
    assert promoted_model(tmp_path, "run-b")["model"] == "implicit_als"
    assert production_model(tmp_path)["run_id"] == "run-b"


class _Ready(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ready_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_signal_waits_until_the_api_serves_the_new_version(ready_server):
    from recsys.orchestration import wait_until_served

    _Ready.answers = [(503, {"error": "not_ready"}), (200, {"version": "v1"}), (200, {"version": "v2"})]
    url = f"http://127.0.0.1:{ready_server.server_address[1]}"
    assert wait_until_served(url, "v2", timeout_s=10, interval_s=0.05)["version"] == "v2"
    _Ready.answers = [(200, {"version": "v1"})]
    with pytest.raises(TimeoutError, match="serving 'v1'"):
        wait_until_served(url, "v3", timeout_s=0.3, interval_s=0.05)


def test_drops_are_claimed_once_and_archived_after_the_run(tmp_path):
    from recsys.orchestration import archive_drops, claim_drops, pending_drops

    (tmp_path / "items-1.csv").write_text("parent_asin,reason,requested_at\n")
    (tmp_path / "users-1.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("not a drop")
    assert pending_drops(tmp_path) == ["items-1.csv", "users-1.jsonl"]
    claim = claim_drops(tmp_path, "run-a")
    assert sorted(p.name for p in claim.iterdir()) == ["items-1.csv", "users-1.jsonl"]
    # Still listed: the sensor of the next run (one run at a time) sees them only if run-a died (reclaimed then).
    assert pending_drops(tmp_path) == ["_inflight/run-a/items-1.csv", "_inflight/run-a/users-1.jsonl"]
    (tmp_path / "items-2.csv").write_text("parent_asin,reason,requested_at\n")   # lands during the run
    assert claim_drops(tmp_path, "run-a") == claim                              # a retry finds its claim again
    assert archive_drops(tmp_path, "run-a") == tmp_path / "_applied" / "run-a"
    assert not claim.exists() and pending_drops(tmp_path) == []


def test_failure_line_names_task_runs_error_and_log_url(tmp_path):
    got = _probe("failure_line", env=_airflow_env(tmp_path), cwd=tmp_path, timeout=180)
    for part in ("dag=recsys_pipeline", "task=train[2]", "try=3", "airflow_run=manual__x",
                 "recsys_run=run-20260301T000000Z-abc123", "error=Cannot execute: spark-submit …", got["log_url"]):
        assert part in got["line"]


# --- end to end: dag.test() on a synthetic dump -----------------------------------------------------------------


def _run_env(root: Path, warehouse: Path, source: Path) -> dict[str, str]:
    """The Airflow (``root/airflow_home``) and recsys environment of the end-to-end runs, on ``warehouse``."""
    from conftest import SMALL_JOB_SPARK

    return _airflow_env(root / "airflow_home", {
        "RECSYS_WAREHOUSE": str(warehouse), "RECSYS_SOURCE": str(source), "RECSYS_REPORTS": str(root / "reports"),
        "RECSYS_SPARK__DRIVER_MEMORY": "1g", "RECSYS_SPARK__SHUFFLE_PARTITIONS": "1",
        "RECSYS_SPARK__EXTRA": json.dumps(SMALL_JOB_SPARK),     # each task is a short spark-submit
        "RECSYS_SPARK__LOG_LEVEL": "ERROR", "RECSYS_SPARK__CHECKPOINT_DIR": str(root / "checkpoints"),
    })


@pytest.fixture(scope="module")
def airflow_run(tmp_path_factory) -> dict[str, Any]:
    """A migrated SQLite DB in a fresh AIRFLOW_HOME, a small synthetic dump, and one full successful
    ``recsys_pipeline`` run (two models, K=5) into a fresh warehouse. The dump has two categories but the source
    folder starts with Appliances only: All_Beauty is the "new raw files" a retrain later picks up. The dump is as
    small as still gives every task rows to work on (Spark's fixed costs dominate these runs, not the data)."""
    import shutil

    from recsys.config import SynthSettings
    from recsys.synth import generate, meta_file, reviews_file

    root = tmp_path_factory.mktemp("airflow_e2e")
    dump, source, warehouse = root / "full_dump", root / "dump", root / "warehouse"
    generate(dump, SynthSettings(users=200, items=50, reviews=1500, clusters=4,
                                 categories=["Appliances", "All_Beauty"]), progress=False)
    source.mkdir()
    for name in (reviews_file("Appliances"), meta_file("Appliances")):
        shutil.copy(dump / name, source / name)
    env = _run_env(root, warehouse, source)
    (root / "airflow_home").mkdir()
    _probe("migrate", env=env, cwd=root, timeout=300)
    conf = {"source": str(source), "models": ["popularity", "implicit_als"], "k": 5}
    result = _probe("dag_test", "recsys_pipeline", json.dumps(conf), env=env, cwd=root, timeout=3600)
    return {"root": root, "source": source, "dump": dump, "warehouse": warehouse, "env": env, "conf": conf,
            "result": result}


@pytest.mark.slow
def test_pipeline_dag_runs_end_to_end_and_the_api_serves_its_version(airflow_run):
    from recsys.ops import current_published
    from recsys.orchestration import run_ids
    from recsys.serve import create_app

    result, warehouse = airflow_run["result"], airflow_run["warehouse"]
    assert result["state"] == "success", result["tis"]
    assert set(result["tis"].values()) == {"success"}
    assert {"train[popularity]", "train[implicit_als]"} <= set(result["tis"])
    _, version = run_ids("recsys_pipeline", result["run_id"], datetime.fromisoformat(result["run_after"]))
    published = current_published(warehouse)
    assert published.version == version and published.k == 5        # the run's version, with the K param

    from deltalake import DeltaTable

    topk = DeltaTable(str(warehouse / "gold" / "recs_user_topk")).to_pyarrow_table(
        columns=["version", "user_id"], filters=[("version", "=", version)])
    user = topk.column("user_id")[0].as_py()
    client = create_app(warehouse).test_client()
    assert client.get("/ready").get_json()["version"] == version
    body = client.get(f"/v1/users/{user}/recommendations?k=5").get_json()
    assert body["version"] == version and body["source"] == "personalized" and len(body["items"]) == 5


@pytest.mark.slow
def test_retrain_dag_ingests_the_new_files_and_publishes_only_what_the_gate_promotes(airflow_run):
    """``recsys_retrain`` after the pipeline run: new raw files land, only they are ingested, the production
    model's family is retrained and evaluated on the newest split against production re-scored on it, and the
    publish steps run exactly when the gate promoted (the decision is in ops/model_registry either way)."""
    import shutil

    from recsys.ops import current_published, production_model, registry_state
    from recsys.orchestration import run_ids
    from recsys.synth import meta_file, reviews_file

    warehouse, source = airflow_run["warehouse"], airflow_run["source"]
    before, family = current_published(warehouse), production_model(warehouse)["model"]
    for name in (reviews_file("All_Beauty"), meta_file("All_Beauty")):
        shutil.copy(airflow_run["dump"] / name, source / name)
    conf = {"source": str(source), "k": 5}
    result = _probe("dag_test", "recsys_retrain", json.dumps(conf), env=airflow_run["env"],
                    cwd=airflow_run["root"], timeout=3600)
    tis = result["tis"]
    assert result["state"] == "success", tis
    assert set(tis) >= {"ingest", "evaluate", "promoted", f"train[{family}]"} and len(
        [t for t in tis if t.startswith("train[")]) == 1                       # the production family only
    run_id, version = run_ids("recsys_retrain", result["run_id"], datetime.fromisoformat(result["run_after"]))
    from deltalake import DeltaTable

    files = DeltaTable(str(warehouse / "ops" / "ingested_files")).to_pyarrow_table(columns=["path"]).to_pylist()
    assert sum("All_Beauty" in r["path"] for r in files) == 2                  # the new files, once each
    decision = {r["stage"] for r in registry_state(warehouse) if r["run_id"] == run_id}
    assert decision in ({"production"}, {"rejected"})
    publish_steps = ("publish_write", "gate_published", "publish_switch", "signal_api")
    if decision == {"production"}:
        assert all(tis[t] == "success" for t in publish_steps)
        assert current_published(warehouse).version == version
    else:
        assert all(tis[t] == "skipped" for t in publish_steps)
        assert current_published(warehouse) == before


@pytest.mark.slow
def test_a_failed_gate_stops_the_run_before_anything_is_published(airflow_run, tmp_path):
    """On a copy of the end-to-end warehouse and source (whatever ran before): nothing to rebuild, and the broken
    file lands in no other test's source folder."""
    import shutil

    from recsys.ops import current_published
    from recsys.serve import create_app

    root = airflow_run["root"]
    warehouse, source = tmp_path / "warehouse", tmp_path / "dump"
    shutil.copytree(airflow_run["warehouse"], warehouse, symlinks=True)
    shutil.copytree(airflow_run["source"], source)
    env = _run_env(root, warehouse, source)
    before = current_published(warehouse)
    # A new raw file lands whose every line is broken: bronze's quarantine share is far above the limit.
    lines = ['{"user_id": "u1", "parent_asin": "B000", "rating": 9, "timestamp": 1700000000000}', "{not json"] * 200
    with gzip.open(source / "Broken_Category.jsonl.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    conf = {**airflow_run["conf"], "source": str(source), "models": ["popularity"]}
    result = _probe("dag_test", "recsys_pipeline", json.dumps(conf), env=env, cwd=root, timeout=1800)
    tis = result["tis"]
    assert result["state"] == "failed"
    assert tis["ingest"] == "success" and tis["gate_bronze"] == "failed"
    for task_id in ("silver", "features", "evaluate", "publish_write", "gate_published", "publish_switch",
                    "signal_api"):
        assert tis[task_id] == "upstream_failed", task_id
    assert current_published(warehouse) == before
    assert create_app(warehouse).test_client().get("/ready").get_json()["version"] == before.version


if __name__ == "__main__":           # child process: python tests/test_dags.py <probe> [args…]
    print(_MARK + json.dumps(_PROBES[sys.argv[1]](*sys.argv[2:]), default=str), flush=True)
