"""Wiring shared by the recsys DAGs: retry/timeout policy, the spark-submit task factory, the UI params, and the
small Python tasks every DAG ends with. No DAG is defined here.

Cheap at import (Airflow parses DAG files often): only ``airflow.sdk``, the Spark provider's operator and the
standard library. The library (``recsys.orchestration``) is imported inside functions: at parse time only to read
the params' defaults from conf, otherwise inside running tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, XComArg, task
from airflow.sdk.exceptions import AirflowFailException

from recsys.orchestration import WRITER_POOL     # stdlib-only at import: cheap to parse

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


def on_failure(context: Mapping[str, Any]) -> None:
    """Task failure callback: one clear ERROR line (task, Airflow and recsys run ids, error, log URL)."""
    from recsys.orchestration import log_failure

    log_failure(context)


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


def conf_defaults() -> dict[str, Any]:
    from recsys.orchestration import ui_defaults

    return ui_defaults()


def training_params(defaults: Mapping[str, Any], *, models: bool = True) -> dict[str, Param]:
    """UI params of the training DAGs; defaults from conf (``conf/default.yaml`` + ``RECSYS_*``). ``models=False``
    for the retrain DAG, which trains the production model's family."""
    params = {
        "source": Param(defaults["source"], type="string", minLength=1, title="Source folder",
                        description="Laid out like the dump: <Category>.jsonl[.gz], meta_<Category>.jsonl[.gz]."),
        "categories": Param(defaults["categories"], type="array", items={"type": "string"}, title="Categories",
                            description="Only ingest these categories (one per line); empty: every category found."),
        "k": Param(defaults["k"], type="integer", minimum=1, title="K", description="Published list length."),
        "models": Param(defaults["models"], type="array", minItems=1, uniqueItems=True, title="Models",
                        items={"type": "string", "enum": defaults["model_choices"]},
                        examples=defaults["model_choices"], description="Candidates to train (in parallel)."),
        "split_strategy": Param(defaults["split_strategy"], type="string",
                                enum=defaults["split_choices"], title="Split strategy",
                                description="How gold/interactions is labelled train/valid/test."),
    }
    if not models:
        del params["models"]
    return params


def from_plan(key: str) -> str:
    """Template pulling one key of the ``plan`` task's output. DAGs render templates as native objects, so a list or
    dict comes back as such; a template (unlike an XComArg) adds no graph edge from ``plan`` to every task."""
    return "{{ ti.xcom_pull(task_ids='plan', key='%s') }}" % key


def spark_job(task_id: str, *, timeout: timedelta | None = None, **kwargs: Any) -> SparkSubmitOperator:
    """``spark-submit jobs/<script>`` (``recsys.orchestration.JOB_SCRIPTS``) with this run's arguments (plan key =
    task id), conf and environment."""
    from recsys.orchestration import job_script

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
    return spark_job(f"gate_{layer}", timeout=TIMEOUTS["gate"], retries=0)


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
        task_id="train",
        application=str(JOBS / job_script("train")),
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
    return {"version": version, "model": current["model"], "api": url, "served": served is not None}


def training_steps(p: XComArg, promotion: Any) -> list[Any]:
    """The task chain ``recsys_pipeline`` and ``recsys_retrain`` share; ``promotion`` is each DAG's own decision
    between evaluate and publish (fail the run, or skip publishing)."""
    return [
        p,
        spark_job("ingest"),
        gate("bronze"),
        spark_job("silver"),
        gate("silver"),
        spark_job("features"),
        gate("gold"),
        train_jobs(p),
        spark_job("evaluate"),
        promotion,
        spark_job("publish_write"),
        gate("published"),
        spark_job("publish_switch"),
        signal_api(from_plan("warehouse"), from_plan("version")),
    ]
