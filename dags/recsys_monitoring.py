"""
### recsys_monitoring — daily indicators and A/B readout

`plan` → indicators (`jobs/indicators.py`: folds pending API events into `ops/events`, computes CTR, purchase rate,
rec-to-rec and scroll-end indicators per model version and A/B variant) → ab_report (`jobs/ab_report.py`: the
readout of conf `monitor.ab` — two-proportion tests, intervals, sample-ratio check, offline MAP@10 beside online
CTR — in `reports/ab-<experiment>/`; a no-op when no experiment is enabled).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from airflow.sdk import chain, dag

if str(Path(__file__).parent) not in sys.path:   # a DAG bundle's root is on sys.path; a bare DagBag's folder is not
    sys.path.append(str(Path(__file__).parent))
from recsys_common import DEFAULT_ARGS, START_DATE, TAGS, plan, spark_job


@dag(
    dag_id="recsys_monitoring",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    dagrun_timeout=timedelta(hours=2),
    default_args=DEFAULT_ARGS,
    tags=TAGS,
    doc_md=__doc__,
)
def recsys_monitoring() -> None:
    chain(plan("plan_monitoring"), spark_job("indicators"), spark_job("ab_report"))


recsys_monitoring()
