"""
### recsys_pipeline — from the raw dump to a served version

`plan` → ingest → gate(bronze) → silver → gate(silver) → features → gate(gold) → select (an Optuna search per
model on the validation split, within the `tuning_budget` param) → train (one mapped task per model, in parallel) →
evaluate → promotion gate → publish (write) → gate(published) → publish (switch) → signal API.

Each Spark step is the same `spark-submit jobs/<step>.py …` a user can run by hand, through the `spark_default`
connection (`local[*]`, or a standalone master). `plan` turns the params into one recsys run id and one published
version (both derived from this DAG run, so retries rewrite rather than add) and the jobs' arguments and
`RECSYS_*` environment; tasks pass those ids, never data.

A failed gate, or an evaluation that promotes nothing, stops the run before `ops/published` moves: the API keeps
serving the previous version.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import chain, task
from airflow.sdk.exceptions import AirflowFailException
from recsys_common import TIMEOUTS, from_plan, plan, recsys_dag, training_params, training_steps


@task(retries=0, execution_timeout=TIMEOUTS["python"])
def promotion_gate(warehouse: str, recsys_run_id: str) -> dict[str, Any]:
    """Fail the run when evaluate promoted none of its candidates (reads ops/model_registry with delta-rs)."""
    from recsys.orchestration import describe_no_promotion, promoted_model

    promoted = promoted_model(warehouse, recsys_run_id)
    if promoted is None:
        raise AirflowFailException(describe_no_promotion(warehouse, recsys_run_id))
    return {"model": promoted["model"], "metric": promoted["metric"], "reason": promoted["reason"]}


@recsys_dag("recsys_pipeline", schedule=None, dagrun_timeout=timedelta(hours=24), doc_md=__doc__,
            params=training_params(),
            is_paused_upon_creation=False)        # manual only (schedule=None): ready to trigger from the UI
def recsys_pipeline() -> None:
    p = plan("plan_training")
    chain(*training_steps(p, promotion_gate(from_plan("warehouse"), from_plan("run_id"))))


recsys_pipeline()
