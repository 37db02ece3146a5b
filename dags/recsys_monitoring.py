"""
### recsys_monitoring — daily indicators and A/B readout

`plan` → indicators (`jobs/indicators.py`: folds pending API events into `ops/events`, computes CTR, purchase rate,
rec-to-rec and scroll-end indicators per model version and A/B variant) → ab_report (`jobs/ab_report.py`: the
readout of conf `monitor.ab` — two-proportion tests, intervals, sample-ratio check, offline MAP@10 beside online
CTR — in `reports/ab-<experiment>/`; a no-op when no experiment is enabled).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import chain
from recsys_common import plan, recsys_dag, step_tasks

from recsys import steps


@recsys_dag("recsys_monitoring", schedule="@daily", dagrun_timeout=timedelta(hours=2), doc_md=__doc__)
def recsys_monitoring() -> None:
    p = plan("plan_monitoring")
    chain(p, *step_tasks(p, steps.MONITORING))


recsys_monitoring()
