"""
### recsys_deletions — apply catalogue deletions / user erasures and republish, without retraining

`wait_for_drops` → `plan` (claims the pending drops: moves them to `<drops>/_inflight/<run_id>/`) →
apply_deletions → gate(silver) → gate(gold) → publish (write) → gate(published) → publish (switch) → signal API →
archive_drops (to `<drops>/_applied/<run_id>/`).

Runs every 30 minutes and does nothing (skipped) while no drop file (`*.csv`, `*.jsonl`) sits at the top of the
drops folder; trigger it by hand to apply a drop at once. A drop that lands during a run waits for the next one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import PokeReturnValue, chain, task
from recsys_common import TIMEOUTS, drops_params, from_plan, plan, recsys_dag, signal_api, step_tasks

from recsys import steps


@task.sensor(task_id="wait_for_drops", poke_interval=60, timeout=25 * 60, mode="reschedule", soft_fail=True)
def wait_for_drops(params: dict[str, Any] | None = None) -> PokeReturnValue:
    """Done when a drop file is waiting; after the timeout the run is skipped, not failed (nothing to do)."""
    from recsys.orchestration import drops_param, pending_drops

    files = pending_drops(drops_param(params or {}))
    return PokeReturnValue(is_done=bool(files), xcom_value=files)


@task(retries=0, execution_timeout=TIMEOUTS["python"])
def archive_drops(drops: str, recsys_run_id: str) -> str | None:
    """Keep the applied drops as an audit trail, out of the way of the next run."""
    from recsys.orchestration import archive_drops as archive

    target = archive(drops, recsys_run_id)
    return str(target) if target else None


@recsys_dag("recsys_deletions", schedule=timedelta(minutes=30), dagrun_timeout=timedelta(hours=6), doc_md=__doc__,
            params=drops_params())
def recsys_deletions() -> None:
    p = plan("plan_deletions")
    chain(wait_for_drops(), p, *step_tasks(p, steps.DELETIONS),
          signal_api(from_plan("warehouse"), from_plan("version")),
          archive_drops(from_plan("drops"), from_plan("run_id")))


recsys_deletions()
