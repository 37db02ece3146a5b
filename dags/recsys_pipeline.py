"""
### recsys_pipeline — from the raw dump to a served version

`plan` → ingest → gate(bronze) → silver → gate(silver) → features → gate(gold) → train (one mapped task per model,
in parallel) → evaluate → promotion gate → publish (write) → gate(published) → publish (switch) → signal API.

Each Spark step is the same `spark-submit jobs/<step>.py …` a user can run by hand, through the `spark_default`
connection (`local[*]`, or a standalone master). `plan` turns the params into one recsys run id and one published
version (both derived from this DAG run, so retries rewrite rather than add) and the jobs' arguments and
`RECSYS_*` environment; tasks pass those ids, never data.

A failed gate, or an evaluation that promotes nothing, stops the run before `ops/published` moves: the API keeps
serving the previous version.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import chain, dag, task
from airflow.sdk.exceptions import AirflowFailException

if str(Path(__file__).parent) not in sys.path:   # a DAG bundle's root is on sys.path; a bare DagBag's folder is not
    sys.path.append(str(Path(__file__).parent))
from recsys_common import (DEFAULT_ARGS, START_DATE, TAGS, TIMEOUTS, conf_defaults, from_plan, plan,
                           training_params, training_steps)


@task(retries=0, execution_timeout=TIMEOUTS["python"])
def promotion_gate(warehouse: str, recsys_run_id: str) -> dict[str, Any]:
    """Fail the run when evaluate promoted none of its candidates (reads ops/model_registry with delta-rs)."""
    from recsys.orchestration import describe_no_promotion, promoted_model

    promoted = promoted_model(warehouse, recsys_run_id)
    if promoted is None:
        raise AirflowFailException(describe_no_promotion(warehouse, recsys_run_id))
    return {"model": promoted["model"], "metric": promoted["metric"], "reason": promoted["reason"]}


@dag(
    dag_id="recsys_pipeline",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,                    # every run writes the same warehouse
    is_paused_upon_creation=False,        # manual only (schedule=None): ready to trigger from the UI
    render_template_as_native_obj=True,   # plan keys come back as lists/dicts (see recsys_common.from_plan)
    dagrun_timeout=timedelta(hours=24),
    default_args=DEFAULT_ARGS,
    params=training_params(conf_defaults()),
    tags=TAGS,
    doc_md=__doc__,
)
def recsys_pipeline() -> None:
    p = plan("plan_training")
    chain(*training_steps(p, promotion_gate(from_plan("warehouse"), from_plan("run_id"))))


recsys_pipeline()
