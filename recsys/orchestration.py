"""What the Airflow DAGs need from the library: run plans (spark-submit arguments, conf, environment), and the
small checks between jobs that must not start a JVM (promotion, published pointer, API readiness, drop folders).

No Airflow import here, and nothing heavier than the standard library at import time: DAG files call these
functions from inside tasks, and :func:`ui_defaults` at parse time (it loads the typed settings, ~0.3 s). The
jobs themselves stay the same ``spark-submit jobs/<step>.py`` a user runs by hand; a plan only spells out their
flags and the ``RECSYS_*`` environment that makes every job of one DAG run see the same settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger("recsys.orchestration")

REPO_ROOT = Path(__file__).resolve().parent.parent
JOBS_DIR = REPO_ROOT / "jobs"
LAYERS = ("bronze", "silver", "gold", "published")              # jobs/validate.py --layer
DEFAULT_DROPS_DIR = Path("./data/drops")                        # when conf sets no deletions.drops_dir
INFLIGHT, APPLIED = "_inflight", "_applied"                     # "_" folders: skipped by every folder scan
# Every Spark task writes the warehouse: one slot, so Airflow queues them instead of letting them wait on the
# writer lock (recsys.lock), which still guards against writers from outside Airflow. Create it once per
# Airflow DB (`make airflow` does, and :func:`migrate_local_airflow`): a task in a missing pool is never scheduled.
WRITER_POOL = "recsys_warehouse_writer"

# The job each DAG task runs (``jobs/<script>``); every ``gate_<layer>`` task runs jobs/validate.py.
JOB_SCRIPTS = {
    "ingest": "ingest.py", "silver": "build_silver.py", "features": "build_features.py", "train": "train.py",
    "evaluate": "evaluate.py", "publish_write": "publish.py", "publish_switch": "publish.py",
    "apply_deletions": "apply_deletions.py", "indicators": "indicators.py", "ab_report": "ab_report.py",
}
# The Spark steps of recsys_pipeline / recsys_retrain in order (the DAGs add plan, promotion and API tasks between).
TRAINING_STEPS = ("ingest", "gate_bronze", "silver", "gate_silver", "features", "gate_gold", "train", "evaluate",
                  "publish_write", "gate_published", "publish_switch")


def job_script(task_id: str) -> str:
    """``jobs/`` script of a DAG task: its entry in :data:`JOB_SCRIPTS`, jobs/validate.py for a gate."""
    return "validate.py" if task_id.startswith("gate_") else JOB_SCRIPTS[task_id]


# --- identifiers ------------------------------------------------------------------------------------------------


def run_ids(dag_id: str, dag_run_id: str, run_after: datetime) -> tuple[str, str]:
    """``(run_id, version)`` derived from the Airflow run, so a retried or cleared task gets the same ids and
    rewrites the same model folders and the same published version instead of adding new ones.

    Same shape as :func:`recsys.registry.new_run_id` / :func:`recsys.publish.new_version` (sortable UTC stamp),
    with a digest of the DAG run instead of random bytes.
    """
    stamp = f"{run_after.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"
    tag = hashlib.sha1(f"{dag_id}/{dag_run_id}".encode()).hexdigest()[:6]
    return f"run-{stamp}-{tag}", f"v{stamp}-{tag}"


# --- settings -----------------------------------------------------------------------------------------------------


def load(**overrides: Any) -> Settings:
    from recsys.config import load_settings

    return load_settings(**overrides)


def ui_defaults(settings: Settings | None = None) -> dict[str, Any]:
    """Defaults of the DAGs' UI params, from ``conf/default.yaml`` + ``RECSYS_*`` as the scheduler sees them."""
    from recsys.config import SPLIT_STRATEGIES

    settings = settings or load()
    return {
        "source": str(settings.source.resolve()),
        "categories": [],
        "k": settings.publish.k,
        "models": list(settings.train.models),
        "model_choices": sorted(settings.train.params),
        "split_strategy": settings.features.split.strategy,
        "split_choices": list(SPLIT_STRATEGIES),
        "drops": str(drops_dir(settings)),
    }


def drops_dir(settings: Settings) -> Path:
    """Where catalogue deletion / user erasure drops land: ``deletions.drops_dir``, else ``./data/drops``."""
    configured = settings.deletions.drops_dir
    return Path(configured or DEFAULT_DROPS_DIR).resolve()


def job_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of every spark-submit of a run.

    ``PATH`` starts with this interpreter's ``bin/`` (the venv whose ``spark-submit`` carries the Delta jars and
    whose ``pyspark/conf/spark-defaults.conf`` names this Python); paths are absolute because the scheduler's
    working directory is nobody's contract; Spark's progress bar is off because task logs are files.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    env = {
        "PATH": bin_dir + (os.pathsep + path if path else ""),
        "PYSPARK_PYTHON": sys.executable,
        "RECSYS_WAREHOUSE": str(settings.warehouse.resolve()),
        "RECSYS_SOURCE": str(settings.source.resolve()),
        "RECSYS_REPORTS": str(settings.reports.resolve()),
        "RECSYS_SPARK__CHECKPOINT_DIR": str(_absolute(settings.spark.checkpoint_dir)),
        "RECSYS_SPARK__CONSOLE_PROGRESS": "false",
        "RECSYS_FEATURES__SPLIT__STRATEGY": settings.features.split.strategy,
        "RECSYS_PUBLISH__K": str(settings.publish.k),
    }
    if "RECSYS_CONFIG" in os.environ:
        env["RECSYS_CONFIG"] = str(Path(os.environ["RECSYS_CONFIG"]).resolve())
    env.update(extra or {})
    return env


def submit_conf(settings: Settings) -> dict[str, str]:
    """``spark-submit --conf`` values: only what must be known before the driver JVM starts (its heap), plus the
    user's ``spark.extra``; everything else the job's session builder sets from the same settings."""
    return {"spark.driver.memory": settings.spark.driver_memory, **settings.spark.extra}


def _absolute(path: Path) -> Path:
    return path if path.is_absolute() else Path.cwd() / path


# --- a local Airflow ------------------------------------------------------------------------------------------------

STANDALONE_ENV = REPO_ROOT / "conf" / "airflow" / "standalone.env"


def local_airflow_env(home: Path, spark_master: str = "local[2]",
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a throwaway local Airflow (tests, bench_dag): ``conf/airflow/standalone.env`` (what
    ``make airflow`` exports), ``home`` as AIRFLOW_HOME, the project's DAGs, ``spark_default`` → ``spark_master``."""
    env = dict(os.environ)
    for line in STANDALONE_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": spark_master}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    env.update(extra or {})
    return env


def migrate_local_airflow() -> None:
    """What ``airflow db migrate`` + ``airflow pools set`` do, in this process (``AIRFLOW_HOME`` from the
    environment): a throwaway Airflow DB for tests and benchmarks, with the writer pool the DAGs need."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    Pool.create_or_update_pool(WRITER_POOL, 1, "recsys jobs that write the warehouse, one at a time", False)


# --- run plans ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """Everything the tasks of one DAG run pass between them: ids and job arguments, never data.

    ``args`` maps a task id to the arguments of its job; ``train`` holds one argument list per model (the DAG maps
    over it, ``--model`` first so the UI can label each mapped task by ``application_args[1]``).
    """

    run_id: str
    version: str
    warehouse: str
    env: dict[str, str]
    conf: dict[str, str]
    args: dict[str, list[str]] = field(default_factory=dict)
    train: list[list[str]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    drops: str | None = None

    def xcom(self) -> dict[str, Any]:
        """Flat dict for ``@task(multiple_outputs=True)``: each key becomes one XCom the operators can pull."""
        out = {k: v for k, v in asdict(self).items() if k != "args"}
        out.update(self.args)
        return out


def spark_submit_commands(plan: RunPlan, master: str = "local[*]") -> list[tuple[str, list[str]]]:
    """``(step, argv)`` of every Spark job of a training plan, in DAG order, train jobs one after another: the
    commands the DAG's SparkSubmitOperators run, for running a plan by hand (``plan.env`` as environment) or
    timing the DAG against the bare jobs."""
    def submit(step: str, args: list[str], label: str) -> tuple[str, list[str]]:
        conf = [arg for key, value in plan.conf.items() for arg in ("--conf", f"{key}={value}")]
        return label, ["spark-submit", "--master", master, *conf, "--name", f"recsys-{step}",
                       str(JOBS_DIR / job_script(step)), *args]

    commands = []
    for step in TRAINING_STEPS:
        if step == "train":   # one per model, ``--model`` first (see RunPlan)
            commands += [submit(step, args, f"train[{args[1]}]") for args in plan.train]
        else:
            commands.append(submit(step, plan.args[step], step))
    return commands


def _settings_for(params: Mapping[str, Any], models: Sequence[str] | None = None) -> Settings:
    """Settings of a run: conf + env, then the UI params on top (nested keys deep-merged), validated by the same
    pydantic model the jobs use, so a bad param fails here and not half-way through the run."""
    overrides: dict[str, Any] = {"source": params.get("source") or None}
    if params.get("split_strategy"):
        overrides["features"] = {"split": {"strategy": params["split_strategy"]}}
    if params.get("k"):
        overrides["publish"] = {"k": int(params["k"])}
    chosen = models if models is not None else params.get("models")
    if chosen is not None:
        overrides["train"] = {"models": list(chosen)}
    settings = load(**overrides)
    if not settings.train.models:
        raise ValueError("no model to train: pick at least one")
    unknown = sorted(set(settings.train.models) - set(settings.train.params))
    if unknown:
        choices = ", ".join(sorted(settings.train.params))
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {choices}")
    return settings


def _gate(warehouse: str, layer: str, run_id: str, version: str | None = None) -> list[str]:
    """``jobs/validate.py`` arguments; the run id files the outcomes in ops/quality_results under this run."""
    return (["--warehouse", warehouse, "--layer", layer, "--run-id", run_id]
            + (["--version", version] if version else []))


def _publish_args(warehouse: str, run_id: str, version: str, refit: bool = True) -> dict[str, list[str]]:
    """Write the version's rows, validate them, then switch ``ops/published``: a failed gate leaves the previous
    version serving (``jobs/publish.py --no-switch`` / ``--switch``). ``refit=False``: republish the model as
    last fitted (``--no-refit``); otherwise conf ``publish.refit_on_all`` decides."""
    return {
        "publish_write": ["--warehouse", warehouse, "--version", version, "--no-switch"]
        + ([] if refit else ["--no-refit"]),
        "gate_published": _gate(warehouse, "published", run_id, version),
        "publish_switch": ["--warehouse", warehouse, "--version", version, "--switch"],
    }


def plan_training(params: Mapping[str, Any], *, dag_id: str, dag_run_id: str, run_after: datetime,
                  models: Sequence[str] | None = None) -> RunPlan:
    """Plan of ``recsys_pipeline`` / ``recsys_retrain``: ingest → gates → silver → features → train → evaluate →
    publish. ``models`` overrides the ``models`` param (the retrain DAG trains the production family only).

    Raises ``ValueError`` on bad params (missing source folder, unknown model or strategy) before any JVM starts.
    """
    settings = _settings_for(params, models)
    if not settings.source.is_dir():
        raise ValueError(f"source folder not found: {settings.source}")
    run_id, version = run_ids(dag_id, dag_run_id, run_after)
    wh = str(settings.warehouse.resolve())
    categories = [c.strip() for c in params.get("categories") or [] if c and c.strip()]
    ingest = ["--source", str(settings.source.resolve()), "--warehouse", wh]
    if categories:
        ingest += ["--categories", ",".join(categories)]
    args = {
        "ingest": ingest,
        "gate_bronze": _gate(wh, "bronze", run_id),
        "silver": ["--warehouse", wh],
        "gate_silver": _gate(wh, "silver", run_id),
        "features": ["--warehouse", wh],
        "gate_gold": _gate(wh, "gold", run_id),
        "evaluate": ["--warehouse", wh, "--run-id", run_id],
        **_publish_args(wh, run_id, version),
    }
    train = [["--model", m, "--run-id", run_id, "--warehouse", wh] for m in settings.train.models]
    return RunPlan(run_id=run_id, version=version, warehouse=wh, env=job_env(settings), conf=submit_conf(settings),
                   args=args, train=train, models=list(settings.train.models))


def plan_retrain(params: Mapping[str, Any], *, dag_id: str, dag_run_id: str, run_after: datetime) -> RunPlan:
    """Plan of ``recsys_retrain``: the same steps, training only the production model's family (the configured
    candidates while there is no production model yet)."""
    prod = production_model(load().warehouse.resolve())
    return plan_training(params, dag_id=dag_id, dag_run_id=dag_run_id, run_after=run_after,
                         models=[prod["model"]] if prod else None)


def plan_deletions(params: Mapping[str, Any], *, dag_id: str, dag_run_id: str, run_after: datetime) -> RunPlan:
    """Plan of ``recsys_deletions``: claim the pending drops for this run, apply them, republish (no retraining)."""
    settings = load()
    run_id, version = run_ids(dag_id, dag_run_id, run_after)
    wh = str(settings.warehouse.resolve())
    drops = Path(params.get("drops") or drops_dir(settings)).resolve()
    claimed = claim_drops(drops, run_id)
    args = {"apply_deletions": ["--warehouse", wh, "--drops", str(claimed)],
            "gate_silver": _gate(wh, "silver", run_id), "gate_gold": _gate(wh, "gold", run_id),
            **_publish_args(wh, run_id, version, refit=False)}
    return RunPlan(run_id=run_id, version=version, warehouse=wh, env=job_env(settings), conf=submit_conf(settings),
                   args=args, drops=str(drops))


def plan_monitoring(params: Mapping[str, Any], *, dag_id: str, dag_run_id: str, run_after: datetime) -> RunPlan:
    """Plan of ``recsys_monitoring``: the indicators job, then the A/B readout, over the warehouse (``params``
    unused)."""
    settings = load()
    run_id, version = run_ids(dag_id, dag_run_id, run_after)
    wh = str(settings.warehouse.resolve())
    return RunPlan(run_id=run_id, version=version, warehouse=wh, env=job_env(settings), conf=submit_conf(settings),
                   args={"indicators": ["--warehouse", wh], "ab_report": ["--warehouse", wh]})


# --- registry and published pointer, read with delta-rs (no JVM in the Airflow worker) ------------------------------


def _read_delta(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    if not (path / "_delta_log").is_dir():
        return []
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_table(columns=columns).to_pylist()


def registry_state(warehouse: Path | str) -> list[dict[str, Any]]:
    """Latest ``ops/model_registry`` row per (run_id, model), as :func:`recsys.registry.current_registry` has it."""
    from recsys import constants as C

    rows = _read_delta(Path(warehouse) / C.MODEL_REGISTRY,
                       ["run_id", "model", "stage", "model_path", "metric", "reason", "updated_at"])
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["run_id"], row["model"])
        if key not in latest or row["updated_at"] > latest[key]["updated_at"]:
            latest[key] = row
    return sorted(latest.values(), key=lambda r: r["updated_at"])


def production_model(warehouse: Path | str) -> dict[str, Any] | None:
    """The current production entry (the most recently promoted), or None."""
    prod = [r for r in registry_state(warehouse) if r["stage"] == "production"]
    return prod[-1] if prod else None


def promoted_model(warehouse: Path | str, run_id: str) -> dict[str, Any] | None:
    """The model of ``run_id`` that evaluate promoted to production, or None when it promoted nothing."""
    prod = production_model(warehouse)
    return prod if prod is not None and prod["run_id"] == run_id else None


def describe_no_promotion(warehouse: Path | str, run_id: str) -> str:
    """Why nothing was promoted, in one line: the run's candidates against the production model."""
    state = registry_state(warehouse)
    mine = sorted(r["model"] for r in state if r["run_id"] == run_id)
    prod = production_model(warehouse)
    current = (f"production stays {prod['model']} of {prod['run_id']} (metric {prod['metric']})"
               if prod else "there is no production model")
    if not mine:
        return f"run {run_id} has no registered candidates; {current}"
    return f"run {run_id} promoted none of {', '.join(mine)}; {current} (see evaluate's log and reports/{run_id}/)"


def current_published(warehouse: Path | str) -> dict[str, Any] | None:
    """The row of ``ops/published`` the API follows (greatest ``published_at``), or None."""
    from recsys import constants as C

    rows = [r for r in _read_delta(Path(warehouse) / C.PUBLISHED, ["version", "model", "run_id", "published_at", "k"])
            if r["published_at"] is not None]
    return max(rows, key=lambda r: r["published_at"]) if rows else None


def confirm_published(warehouse: Path | str, version: str) -> dict[str, Any]:
    """Check that ``version`` is the current published version; raises ``RuntimeError`` otherwise."""
    current = current_published(warehouse)
    if current is None or current["version"] != version:
        found = current["version"] if current else "nothing"
        raise RuntimeError(f"ops/published points at {found}, expected {version}")
    return current


def wait_until_served(api_url: str, version: str, *, timeout_s: float = 300.0, interval_s: float = 2.0) -> dict:
    """Poll ``<api_url>/ready`` until it reports ``version``: the API reloads by itself when ops/published changes
    (``serve.reload_interval_s``), so this only confirms that it did. Raises ``TimeoutError`` with the last answer."""
    url = api_url.rstrip("/") + "/ready"
    deadline = time.monotonic() + timeout_s
    last: str = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(10.0, max(1.0, interval_s * 2))) as response:
                body = json.loads(response.read().decode("utf-8"))
            if body.get("version") == version:
                return body
            last = f"serving {body.get('version')!r}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not report version {version} within {timeout_s:.0f} s ({last})")
        time.sleep(interval_s)


# --- deletion drops -------------------------------------------------------------------------------------------------


def pending_drops(drops: Path | str) -> list[str]:
    """Drop files waiting: those at the top of the drops folder, as ``jobs/apply_deletions.py --drops`` reads them,
    then those a failed run left claimed in ``_inflight/<run>/`` (the DAG runs one at a time, so a claim the
    sensor sees belongs to a run that died before archiving it: its users are denied, not yet erased)."""
    from recsys.catalog.drops import find_drops

    folder = Path(drops)
    if not folder.is_dir():
        return []
    return [p.name for p in find_drops(folder)] + [str(p.relative_to(folder)) for p in _claimed(folder)]


def _claimed(folder: Path, except_run: str | None = None) -> list[Path]:
    """Drop files under ``_inflight/<run>/`` of every run but ``except_run``."""
    from recsys.catalog.drops import find_drops

    inflight = folder / INFLIGHT
    runs = sorted(p for p in inflight.iterdir() if p.is_dir() and p.name != except_run) if inflight.is_dir() else []
    return [path for run in runs for path in find_drops(run)]


def claim_drops(drops: Path | str, run_id: str) -> Path:
    """Move the pending drops into ``_inflight/<run_id>/`` and return that folder.

    A run then applies exactly the files it claimed, a retry finds them again (same run id), and a drop that lands
    meanwhile waits for the next run instead of being half-seen. Drops a failed run left claimed are reclaimed
    (renamed ``<old run>-<name>``): applying them again completes their pending requests, and what was already
    applied is skipped.
    """
    from recsys.catalog.drops import find_drops

    folder = Path(drops)
    claim = folder / INFLIGHT / run_id
    claim.mkdir(parents=True, exist_ok=True)
    for path in find_drops(folder):
        os.replace(path, claim / path.name)
    for stranded in _claimed(folder, except_run=run_id):
        os.replace(stranded, claim / f"{stranded.parent.name}-{stranded.name}")
        log.warning("reclaimed drop %s of a failed run into %s", stranded.relative_to(folder), claim.name)
        if not any(stranded.parent.iterdir()):
            stranded.parent.rmdir()
    return claim


def archive_drops(drops: Path | str, run_id: str) -> Path | None:
    """After a successful republish, move the run's claimed drops to ``_applied/<run_id>/`` (audit trail)."""
    folder = Path(drops)
    claim = folder / INFLIGHT / run_id
    if not claim.is_dir():
        return None
    target = folder / APPLIED / run_id
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(claim, target)
    return target


# --- failure reporting ----------------------------------------------------------------------------------------------


def describe_failure(context: Mapping[str, Any]) -> str:
    """One line a person can act on: which task of which run failed, the recsys run id, the error, the log URL."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    task = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        task = f"{task}[{map_index}]"
    recsys_run = None
    try:
        recsys_run = ti.xcom_pull(task_ids="plan", key="run_id") if ti is not None else None
    except Exception:  # noqa: BLE001 - a callback must never raise; the id is a convenience
        recsys_run = None
    error = context.get("exception")
    error_line = str(error).strip().splitlines()[0] if error and str(error).strip() else repr(error)
    airflow_run = getattr(dag_run, "run_id", getattr(ti, "run_id", "?"))
    return (f"recsys task failed: dag={getattr(ti, 'dag_id', '?')} task={task} "
            f"try={getattr(ti, 'try_number', '?')} airflow_run={airflow_run} "
            f"recsys_run={recsys_run or '-'} error={error_line} log={getattr(ti, 'log_url', '-')}")


def log_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback`` of every recsys task: one ERROR line in the task log."""
    try:
        log.error(describe_failure(context))
    except Exception:  # noqa: BLE001
        log.exception("recsys task failed (and describing the failure failed too)")
