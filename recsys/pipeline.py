"""Every step in order, in one local Spark session (`recsys pipeline`); the DAG runs the same steps
as separate spark-submit jobs."""

from __future__ import annotations

from recsys.config import Settings
from recsys.ingest import ingest
from recsys.logs import step
from recsys.silver import build_silver


def run_pipeline(spark, settings: Settings) -> dict:
    """Run the pipeline's steps that exist so far; returns a summary per step."""
    out: dict[str, object] = {}
    with step("pipeline", source=str(settings.source), warehouse=str(settings.warehouse)):
        report = ingest(spark, settings.source, settings.warehouse, settings.ingest)
        out["ingest"] = report.to_dict()
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} raw file(s) failed to ingest: "
                               + ", ".join(f["path"] for f in report.failed))
        out["silver"] = build_silver(spark, settings.warehouse)
    return out
