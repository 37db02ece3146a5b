"""
### recsys_deletions — apply catalogue deletions / user erasures and republish, without retraining

`wait_for_drops` → `plan` (claims the pending drops: moves them to `<drops>/_inflight/<run_id>/`) →
apply_deletions → gate(silver) → gate(gold) → publish (write) → gate(published) → publish (switch) → signal API →
archive_drops (to `<drops>/_applied/<run_id>/`).

Runs every 30 minutes and does nothing (skipped) while no drop file (`*.csv`, `*.jsonl`) sits at the top of the
drops folder; trigger it by hand to apply a drop at once. A drop that lands during a run waits for the next one.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param, PokeReturnValue, chain, dag, task

if str(Path(__file__).parent) not in sys.path:   # a DAG bundle's root is on sys.path; a bare DagBag's folder is not
    sys.path.append(str(Path(__file__).parent))
from recsys_common import (DEFAULT_ARGS, START_DATE, TAGS, TIMEOUTS, conf_defaults, from_plan, gate, plan,
                           signal_api, spark_job)


@task.sensor(task_id="wait_for_drops", poke_interval=60, timeout=25 * 60, mode="reschedule", soft_fail=True)
def wait_for_drops(params: dict[str, Any] | None = None) -> PokeReturnValue:
    """Done when a drop file is waiting; after the timeout the run is skipped, not failed (nothing to do)."""
    from recsys.orchestration import pending_drops

    files = pending_drops((params or {})["drops"])
    return PokeReturnValue(is_done=bool(files), xcom_value=files)


@task(retries=0, execution_timeout=TIMEOUTS["python"])
def archive_drops(drops: str, recsys_run_id: str) -> str | None:
    """Keep the applied drops as an audit trail, out of the way of the next run."""
    from recsys.orchestration import archive_drops as archive

    target = archive(drops, recsys_run_id)
    return str(target) if target else None


@dag(
    dag_id="recsys_deletions",
    schedule=timedelta(minutes=30),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    dagrun_timeout=timedelta(hours=6),
    default_args=DEFAULT_ARGS,
    params={"drops": Param(conf_defaults()["drops"], type="string", minLength=1, title="Drops folder",
                           description="Where deletion / erasure drops land (CSV or JSONL, as the README's deletions section says).")},
    tags=TAGS,
    doc_md=__doc__,
)
def recsys_deletions() -> None:
    chain(
        wait_for_drops(),
        plan("plan_deletions"),
        spark_job("apply_deletions"),
        gate("silver"),
        gate("gold"),
        spark_job("publish_write"),
        gate("published"),
        spark_job("publish_switch"),
        signal_api(from_plan("warehouse"), from_plan("version")),
        archive_drops(from_plan("drops"), from_plan("run_id")),
    )


recsys_deletions()
