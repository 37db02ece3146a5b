"""
### recsys_retrain — incremental retrain of the production model, published only if it wins

`plan` → ingest (new or changed files only) → gate(bronze) → silver → gate(silver) → features → gate(gold) →
train (the production model's family; the configured candidates while nothing is in production) → evaluate →
promoted? → publish (write) → gate(published) → publish (switch) → signal API.

Not being promoted is a normal outcome here: `promoted?` then skips the publish steps (the run succeeds, the
current version keeps serving). A failed gate fails the run before anything is published.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from airflow.sdk import chain, dag, task

if str(Path(__file__).parent) not in sys.path:   # a DAG bundle's root is on sys.path; a bare DagBag's folder is not
    sys.path.append(str(Path(__file__).parent))
from recsys_common import (DEFAULT_ARGS, START_DATE, TAGS, TIMEOUTS, conf_defaults, from_plan, plan,
                           training_params, training_steps)


@task.short_circuit(task_id="promoted", retries=0, execution_timeout=TIMEOUTS["python"])
def promoted(warehouse: str, recsys_run_id: str) -> bool:
    """Continue to publish only if evaluate promoted this run's model (ops/model_registry, read with delta-rs)."""
    import logging

    from recsys.orchestration import describe_no_promotion, promoted_model

    model = promoted_model(warehouse, recsys_run_id)
    if model is None:
        reason = describe_no_promotion(warehouse, recsys_run_id)
        logging.getLogger("recsys.orchestration").info("%s: skipping publish", reason)
    return model is not None


@dag(
    dag_id="recsys_retrain",
    schedule="@weekly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    dagrun_timeout=timedelta(hours=24),
    default_args=DEFAULT_ARGS,
    params=training_params(conf_defaults(), models=False),
    tags=TAGS,
    doc_md=__doc__,
)
def recsys_retrain() -> None:
    p = plan("plan_retrain")
    chain(*training_steps(p, promoted(from_plan("warehouse"), from_plan("run_id"))))


recsys_retrain()
