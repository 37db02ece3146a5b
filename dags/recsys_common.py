"""Wiring shared by the recsys DAGs: retry/timeout policy, the ``@dag`` arguments they share, the task chains
derived from the step tables (``recsys.steps``), the UI params, the failure callback, and the small Python tasks
every DAG ends with. No DAG is defined here.

Cheap at import (Airflow parses DAG files often): ``airflow.sdk``, the Spark provider's operator, the standard
library and the library's standard-library-only modules (``recsys.steps``, ``recsys.constants``,
``recsys.orchestration``). The params' defaults are static; empty means "as conf says", resolved by the ``plan``
task when the run starts, so parsing never loads the settings. Everything else is imported inside running tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, XComArg, dag, task
from airflow.sdk.exceptions import AirflowFailException

from recsys import steps
from recsys.constants import MODELS, SPLIT_STRATEGIES
from recsys.orchestration import WRITER_POOL, job_script

REPO_ROOT = Path(__file__).resolve().parent.parent
JOBS = REPO_ROOT / "jobs"
SPARK_CONN_ID = "spark_default"          # local[*] by default, spark://host:7077 for a standalone master
API_URL_VARIABLE = "recsys_api_url"     # Airflow Variable (env AIRFLOW_VAR_RECSYS_API_URL); unset: no API to poll
START_DATE = datetime(2025, 1, 1, tzinfo=timezone.utc)
TAGS = ["recsys"]

# Upper bounds per step, sized for the full dump on a small cluster; a hung JVM is killed and retried.
TIMEOUTS = {
    "ingest": timedelta(hours=4),
    "silver": timedelta(hours=2),
    "features": timedelta(hours=2),
    "select": timedelta(hours=2),        # the search keeps its own budget (tuning.budget_seconds); this is a backstop
    "train": timedelta(hours=4),
    "evaluate": timedelta(hours=2),
    "publish_write": timedelta(hours=2),
    "publish_switch": timedelta(minutes=30),
    "apply_deletions": timedelta(hours=2),
    "indicators": timedelta(hours=1),
    "ab_report": timedelta(hours=1),
    "gate": timedelta(hours=1),
    "python": timedelta(minutes=10),
}


def describe_failure(context: Mapping[str, Any]) -> str:
    """One line a person can act on: which task of which run failed, the recsys run id, the error, the log URL."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        task_id = f"{task_id}[{map_index}]"
    try:
        recsys_run = ti.xcom_pull(task_ids="plan", key="run_id") if ti is not None else None
    except Exception:  # noqa: BLE001 - a callback must never raise; the id is a convenience
        recsys_run = None
    error = context.get("exception")
    error_line = str(error).strip().splitlines()[0] if error and str(error).strip() else repr(error)
    airflow_run = getattr(dag_run, "run_id", getattr(ti, "run_id", "?"))
    return (f"recsys task failed: dag={getattr(ti, 'dag_id', '?')} task={task_id} "
            f"try={getattr(ti, 'try_number', '?')} airflow_run={airflow_run} "
            f"recsys_run={recsys_run or '-'} error={error_line} log={getattr(ti, 'log_url', '-')}")


def on_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback`` of every recsys task: one ERROR line in the task log."""
    log = logging.getLogger("recsys.orchestration")
    try:
        log.error(describe_failure(context))
    except Exception:  # noqa: BLE001
        log.exception("recsys task failed (and describing the failure failed too)")


# Spark jobs are idempotent (MERGE on keys / overwrite of one version), so a retry is always safe; the backoff
# spaces retries out for transient causes (a busy master, a full disk being cleaned).
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "recsys",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
    "on_failure_callback": on_failure,
}


def recsys_dag(dag_id: str, *, schedule: Any, dagrun_timeout: timedelta, doc_md: str | None,
               params: Mapping[str, Param] | None = None, **kwargs: Any):
    """``@dag`` with what every recsys DAG shares: one run at a time (they all write the same warehouse), plan
    keys rendered as native lists/dicts (see :func:`from_plan`), the retry policy, no catch-up."""
    return dag(dag_id=dag_id, schedule=schedule, start_date=START_DATE, catchup=False, max_active_runs=1,
               render_template_as_native_obj=True, dagrun_timeout=dagrun_timeout, default_args=DEFAULT_ARGS,
               params=dict(params or {}), tags=TAGS, doc_md=doc_md, **kwargs)


def training_params(*, models: bool = True) -> dict[str, Param]:
    """UI params of the training DAGs. Static defaults (parsing reads no config): an empty field means the value
    from conf (``conf/default.yaml`` + ``RECSYS_*``), filled in by the ``plan`` task. ``models=False`` for the
    retrain DAG, which trains the production model's family."""
    params = {
        "source": Param(None, type=["null", "string"], title="Source folder",
                        description="Laid out like the dump: <Category>.jsonl[.gz], meta_<Category>.jsonl[.gz]; "
                                    "under conf's orchestration.source_roots. Empty: conf's source."),
        "categories": Param([], type="array", items={"type": "string"}, title="Categories",
                            description="Only ingest these categories (one per line); empty: every category found."),
        "k": Param(None, type=["null", "integer"], minimum=1, title="K",
                   description="Published list length. Empty: conf's publish.k."),
        "models": Param([], type="array", uniqueItems=True, title="Models",
                        items={"type": "string", "enum": list(MODELS)}, examples=list(MODELS),
                        description="Candidates to train (in parallel). Empty: conf's train.models."),
        "tuning_budget": Param(None, type=["null", "number"], minimum=0, title="Tuning budget (s)",
                               description="Seconds model selection may search on the validation split before "
                                           "train (every model); 0: conf's train.params as they are. "
                                           "Empty: conf's tuning.budget_seconds."),
        "split_strategy": Param(None, type=["null", "string"], enum=[None, *SPLIT_STRATEGIES],
                                title="Split strategy",
                                description="How gold/interactions is labelled train/valid/test. Empty: conf's."),
    }
    if not models:
        del params["models"]
    return params


def drops_params() -> dict[str, Param]:
    """UI param of the deletions DAG."""
    return {"drops": Param(None, type=["null", "string"], title="Drops folder",
                           description="Where deletion / erasure drops land (CSV or JSONL, see docs/deletions.md); "
                                       "under conf's orchestration.drops_roots. "
                                       "Empty: conf's deletions.drops_dir, else ./data/drops.")}


def from_plan(key: str) -> str:
    """Template pulling one key of the ``plan`` task's output. DAGs render templates as native objects, so a list or
    dict comes back as such; a template (unlike an XComArg) adds no graph edge from ``plan`` to every task."""
    return "{{ ti.xcom_pull(task_ids='plan', key='%s') }}" % key


def spark_job(task_id: str, *, timeout: timedelta | None = None, **kwargs: Any) -> SparkSubmitOperator:
    """``spark-submit jobs/<script>`` (``recsys.orchestration.JOB_SCRIPTS``) with this run's arguments (plan key =
    task id), conf and environment."""
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS / job_script(task_id)),
        application_args=from_plan(task_id),
        conf=from_plan("conf"),
        env_vars=from_plan("env"),
        conn_id=SPARK_CONN_ID,
        name=f"recsys-{task_id}",
        execution_timeout=timeout or TIMEOUTS.get(task_id, DEFAULT_ARGS["execution_timeout"]),
        pool=WRITER_POOL,
        **kwargs,
    )


def gate(layer: str) -> SparkSubmitOperator:
    """A Great Expectations gate (``jobs/validate.py``). Not retried: a failed gate is a verdict on the data, and
    rerunning it on the same data gives the same verdict; the run stops and the previous version keeps serving."""
    return spark_job(steps.gate_task(layer), timeout=TIMEOUTS["gate"], retries=0)


@task(retries=0, execution_timeout=TIMEOUTS["python"])
def candidates(train_args: list[list[str]]) -> list[list[str]]:
    """The models this run trains, one ``jobs/train.py`` argument list each: what ``train`` maps over (Airflow maps
    only over a task's return value, not over one key of the plan)."""
    return train_args


def train_jobs(plan: XComArg, max_parallel: int = 2):
    """One mapped ``jobs/train.py`` per candidate model, labelled by model in the UI; at most ``max_parallel`` at
    once (each is a Spark driver plus a Python worker; more than 2 only thrash a 2-core machine), and in practice one
    at a time: training writes the warehouse (models, registry), so it takes the writer pool's slot."""
    from recsys.orchestration import job_script

    return SparkSubmitOperator.partial(
        task_id=steps.TRAIN.name,
        application=str(JOBS / job_script(steps.TRAIN.name)),
        conf=from_plan("conf"),
        env_vars=from_plan("env"),
        conn_id=SPARK_CONN_ID,
        name="recsys-train",
        execution_timeout=TIMEOUTS["train"],
        pool=WRITER_POOL,
        max_active_tis_per_dagrun=max_parallel,
        map_index_template="{{ task.application_args[1] }}",
    ).expand(application_args=candidates(plan["train"]))


def failing_fast(fn, *args: Any, **kwargs: Any) -> Any:
    """Call a planning function; bad params (``ValueError``) fail the task at once instead of being retried."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc


def plan(planner: str) -> XComArg:
    """The first task of every recsys DAG: ``recsys.orchestration.<planner>`` turns the params and this DAG run into
    the run id, version, job arguments and environment, one XCom per key. Bad params fail it at once (no retry)."""

    @task(task_id="plan", multiple_outputs=True, retries=0, execution_timeout=TIMEOUTS["python"])
    def plan_run(params: dict[str, Any] | None = None, dag_run: Any = None) -> dict[str, Any]:
        from recsys import orchestration

        return failing_fast(getattr(orchestration, planner), params or {}, dag_id=dag_run.dag_id,
                            dag_run_id=dag_run.run_id, run_after=dag_run.run_after).xcom()

    return plan_run()


@task(retries=1, execution_timeout=TIMEOUTS["python"])
def signal_api(warehouse: str, version: str) -> dict[str, Any]:
    """The API hot-reloads by polling ops/published; confirm the new version is current there and, when the
    ``recsys_api_url`` Variable names a running API, wait until its /ready reports that version."""
    from airflow.sdk import Variable

    from recsys.orchestration import confirm_published, wait_until_served

    current = confirm_published(warehouse, version)
    url = Variable.get(API_URL_VARIABLE, default=None)
    served = wait_until_served(url, version, timeout_s=300.0) if url else None
    return {"version": version, "model": current.model, "api": url, "served": served is not None}


def step_tasks(p: XComArg, table: tuple[steps.Step, ...], after: Mapping[str, Any] | None = None) -> list[Any]:
    """The tasks of a step table in order (``recsys.steps``): each step's job (mapped over the candidates for a
    per-model step), then its gates; ``after`` puts a DAG's own task right after the named step."""
    tasks: list[Any] = []
    for step in table:
        tasks.append(train_jobs(p) if step.per_model else spark_job(step.name))
        tasks += [gate(layer) for layer in step.gates]
        if after and step.name in after:
            tasks.append(after[step.name])
    return tasks


def training_steps(p: XComArg, promotion: Any) -> list[Any]:
    """The task chain ``recsys_pipeline`` and ``recsys_retrain`` share; ``promotion`` is each DAG's own decision
    between evaluate and publish (fail the run, or skip publishing)."""
    return [p, *step_tasks(p, steps.TRAINING, {steps.EVALUATE.name: promotion}),
            signal_api(from_plan("warehouse"), from_plan("version"))]
