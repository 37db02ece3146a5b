"""What the Airflow DAGs need from the library: run plans (spark-submit arguments, conf, environment), and the
small checks between jobs that must not start a JVM (promotion, published pointer, API readiness, drop folders).

No Airflow import here, and nothing heavier than the standard library at import time: DAG files call these
functions from inside tasks only. The steps and their arguments come from :mod:`recsys.steps`; the jobs stay the
same ``spark-submit jobs/<script>`` (= ``recsys <command>``) a user runs by hand, and a plan only fills in their
arguments and the ``RECSYS_*`` environment that makes every job of one DAG run see the same settings.
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

from recsys import steps

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.ops import Published

log = logging.getLogger("recsys.orchestration")

REPO_ROOT = Path(__file__).resolve().parent.parent
JOBS_DIR = REPO_ROOT / "jobs"
DEFAULT_DROPS_DIR = Path("./data/drops")                        # when conf sets no deletions.drops_dir
INFLIGHT, APPLIED = "_inflight", "_applied"                     # "_" folders: skipped by every folder scan
# Every Spark task writes the warehouse: one slot, so Airflow queues them instead of letting them wait on the
# writer lock (recsys.lock), which still guards against writers from outside Airflow. Create it once per
# Airflow DB (`make airflow` does): a task in a missing pool is never scheduled.
WRITER_POOL = "recsys_warehouse_writer"
JOB_SCRIPTS = steps.job_scripts()                               # task id -> jobs/<script>


def job_script(task_id: str) -> str:
    """``jobs/`` script of a DAG task (a step of :mod:`recsys.steps` or one of its gates)."""
    return JOB_SCRIPTS[task_id]


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


def drops_dir(settings: Settings) -> Path:
    """Where catalogue deletion / user erasure drops land: ``deletions.drops_dir``, else ``./data/drops``."""
    configured = settings.deletions.drops_dir
    return Path(configured or DEFAULT_DROPS_DIR).resolve()


def drops_param(params: Mapping[str, Any]) -> Path:
    """The deletions DAG's ``drops`` param, confined to ``orchestration.drops_roots``, or conf's folder when the form
    leaves it empty."""
    settings = load()
    given = params.get("drops")
    return confined(given, drops_roots(settings), "drops") if given else drops_dir(settings)


# --- path params --------------------------------------------------------------------------------------------------


def confined(path: Path | str, roots: Sequence[Path], param: str) -> Path:
    """``path`` resolved (symlinks and ``..`` followed), when it is one of ``roots`` (resolved too) or lies under
    one; else ``ValueError`` naming the param. A DAG param is typed by whoever may trigger a run: without this, any
    folder the worker can read becomes a dump to ingest, any it can write a place to move files out of."""
    resolved = Path(path).expanduser().resolve()
    allowed = [Path(root).expanduser().resolve() for root in roots]
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise ValueError(f"{param} param {path} (resolved: {resolved}) is outside the folders it may name "
                         f"({', '.join(map(str, allowed))}): set orchestration.{param}_roots to allow more")
    return resolved


def source_roots(settings: Settings) -> list[Path]:
    """Where the ``source`` param may point: ``orchestration.source_roots``, else conf's ``source``."""
    return list(settings.orchestration.source_roots) or [settings.source]


def drops_roots(settings: Settings) -> list[Path]:
    """Where the ``drops`` param may point: ``orchestration.drops_roots``, else conf's drops folder."""
    return list(settings.orchestration.drops_roots) or [drops_dir(settings)]


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
        "RECSYS_TUNING__BUDGET_SECONDS": str(settings.tuning.budget_seconds),
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
    def submit(task_id: str, args: list[str], label: str) -> tuple[str, list[str]]:
        conf = [arg for key, value in plan.conf.items() for arg in ("--conf", f"{key}={value}")]
        return label, ["spark-submit", "--master", master, *conf, "--name", f"recsys-{task_id}",
                       str(JOBS_DIR / job_script(task_id)), *args]

    commands = []
    for task_id in steps.task_ids(steps.TRAINING):
        if task_id == steps.TRAIN.name:   # one per model, ``--model`` first (see RunPlan)
            commands += [submit(task_id, args, f"train[{args[1]}]") for args in plan.train]
        else:
            commands.append(submit(task_id, plan.args[task_id], task_id))
    return commands


def _settings_for(params: Mapping[str, Any], models: Sequence[str] | None = None) -> Settings:
    """Settings of a run: conf + env, then the UI params on top (nested keys deep-merged), validated by the same
    pydantic model the jobs use, so a bad param fails here and not half-way through the run. The ``source`` param
    must lie under conf's ``orchestration.source_roots`` (:func:`confined`)."""
    source = params.get("source")
    overrides: dict[str, Any] = {"source": confined(source, source_roots(load()), "source") if source else None}
    if params.get("split_strategy"):
        overrides["features"] = {"split": {"strategy": params["split_strategy"]}}
    if params.get("k"):
        overrides["publish"] = {"k": int(params["k"])}
    if params.get("tuning_budget") is not None:
        overrides["tuning"] = {"budget_seconds": float(params["tuning_budget"])}
    chosen = models if models is not None else (params.get("models") or None)   # empty: conf's
    if chosen is not None:
        overrides["train"] = {"models": list(chosen)}
    settings = load(**overrides)
    if not settings.train.models:
        raise ValueError("no model to train: pick at least one")
    return settings


def step_arguments(table: Sequence[steps.Step], run: Mapping[str, str],
                   extra: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Arguments of every once-per-run step of ``table`` and of the gates after each, keyed by task id;
    ``extra`` appends arguments to a step's (e.g. the ingest categories)."""
    args: dict[str, list[str]] = {}
    for step in table:
        if not step.per_model:
            args[step.name] = step.arguments(run, (extra or {}).get(step.name, ()))
        for layer in step.gates:
            args[steps.gate_task(layer)] = steps.gate_arguments(layer, run)
    return args


def model_arguments(models: Sequence[str], run: Mapping[str, str]) -> list[list[str]]:
    """One argument list per candidate model for the ``per_model`` step (train), ``--model`` first."""
    return [steps.TRAIN.arguments({**run, "model": model}) for model in models]


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
    run = {"warehouse": str(settings.warehouse.resolve()), "source": str(settings.source.resolve()),
           "run_id": run_id, "version": version, "models": ",".join(settings.train.models)}
    categories = [c.strip() for c in params.get("categories") or [] if c and c.strip()]
    extra = {steps.INGEST.name: ["--categories", ",".join(categories)] if categories else []}
    return RunPlan(run_id=run_id, version=version, warehouse=run["warehouse"], env=job_env(settings),
                   conf=submit_conf(settings), args=step_arguments(steps.TRAINING, run, extra),
                   train=model_arguments(settings.train.models, run), models=list(settings.train.models))


def plan_retrain(params: Mapping[str, Any], *, dag_id: str, dag_run_id: str, run_after: datetime) -> RunPlan:
    """Plan of ``recsys_retrain``: the same steps, training only the production model's family (the configured
    candidates while there is no production model yet)."""
    from recsys.ops import production_model

    prod = production_model(load().warehouse.resolve())
    return plan_training(params, dag_id=dag_id, dag_run_id=dag_run_id, run_after=run_after,
                         models=[prod["model"]] if prod else None)


def plan_deletions(params: Mapping[str, Any], *, dag_id: str, dag_run_id: str, run_after: datetime) -> RunPlan:
    """Plan of ``recsys_deletions``: claim the pending drops for this run, apply them, republish (no retraining)."""
    settings = load()
    run_id, version = run_ids(dag_id, dag_run_id, run_after)
    drops = drops_param(params)
    run = {"warehouse": str(settings.warehouse.resolve()), "run_id": run_id, "version": version,
           "drops": str(claim_drops(drops, run_id))}
    return RunPlan(run_id=run_id, version=version, warehouse=run["warehouse"], env=job_env(settings),
                   conf=submit_conf(settings), args=step_arguments(steps.DELETIONS, run), drops=str(drops))


def plan_monitoring(params: Mapping[str, Any], *, dag_id: str, dag_run_id: str, run_after: datetime) -> RunPlan:
    """Plan of ``recsys_monitoring``: the indicators job, then the A/B readout, over the warehouse (``params``
    unused)."""
    settings = load()
    run_id, version = run_ids(dag_id, dag_run_id, run_after)
    run = {"warehouse": str(settings.warehouse.resolve()), "run_id": run_id, "version": version}
    return RunPlan(run_id=run_id, version=version, warehouse=run["warehouse"], env=job_env(settings),
                   conf=submit_conf(settings), args=step_arguments(steps.MONITORING, run))


# --- registry and published pointer, read by recsys.ops (delta-rs: no JVM in the Airflow worker) ------------------


def promoted_model(warehouse: Path | str, run_id: str) -> dict[str, Any] | None:
    """The model of ``run_id`` that evaluate promoted to production, or None when it promoted nothing."""
    from recsys.ops import production_model

    prod = production_model(warehouse)
    return prod if prod is not None and prod["run_id"] == run_id else None


def describe_no_promotion(warehouse: Path | str, run_id: str) -> str:
    """Why nothing was promoted, in one line: the run's candidates against the production model."""
    from recsys.ops import production_model, run_models

    mine = [r["model"] for r in run_models(warehouse, run_id)]
    prod = production_model(warehouse)
    current = (f"production stays {prod['model']} of {prod['run_id']} (metric {prod['metric']})"
               if prod else "there is no production model")
    if not mine:
        return f"run {run_id} has no registered candidates; {current}"
    return f"run {run_id} promoted none of {', '.join(mine)}; {current} (see evaluate's log and reports/{run_id}/)"


def confirm_published(warehouse: Path | str, version: str) -> Published:
    """Check that ``version`` is the current published version; raises ``RuntimeError`` otherwise."""
    from recsys.ops import current_published

    current = current_published(warehouse)
    if current is None or current.version != version:
        found = current.version if current else "nothing"
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
