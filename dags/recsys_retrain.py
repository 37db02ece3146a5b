"""
### recsys_retrain — incremental retrain of the production model, published only if it wins

`plan` → ingest (new or changed files only) → gate(bronze) → silver → gate(silver) → features → gate(gold) →
select (search on valid, within `tuning_budget`) → train (the production model's family; the configured candidates
while nothing is in production) → evaluate → promoted? → publish (write) → gate(published) → publish (switch) →
signal API.

Not being promoted is a normal outcome here: `promoted?` then skips the publish steps (the run succeeds, the
current version keeps serving). A failed gate fails the run before anything is published.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import chain, task
from recsys_common import TIMEOUTS, from_plan, plan, recsys_dag, training_params, training_steps


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


@recsys_dag("recsys_retrain", schedule="@weekly", dagrun_timeout=timedelta(hours=24), doc_md=__doc__,
            params=training_params(models=False))
def recsys_retrain() -> None:
    p = plan("plan_retrain")
    chain(*training_steps(p, promoted(from_plan("warehouse"), from_plan("run_id"))))


recsys_retrain()
