"""The A/B readout: per variant indicators, the test against control, offline metrics beside online ones.

Reads ``ops/events`` (the impressions stamped with a variant by the API), so it always agrees with
``ops/indicators``' definitions (:mod:`recsys.monitor.indicators`). For each non-control variant: CTR and
purchase rate with Wilson intervals, the difference to control with its interval, z and two-sided p; a
sample-ratio check of users per variant against the configured shares. Offline metrics come from ``ops/runs``
for the run each served version was published from (``ops/published.run_id``): the evaluation's MAP@K beside the
CTR it turned into. Written to ``reports/ab-<experiment>/readout.{json,html}``.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import ops
from recsys import tables as T
from recsys.monitor.ab import Proportion, balance_test, two_proportion_test, wilson
from recsys.monitor.indicators import VARIANT, aggregate, catalog_size, impression_facts
from recsys.serve.experiment import ABSettings

OUTCOMES = {"ctr": "clicked", "purchase_rate": "purchased"}    # rate → its numerator column (per impression)


def offline_metrics(spark: SparkSession, warehouse: Path, versions: list[str]) -> dict[str, dict]:
    """``version → {model, run_id, metrics}`` from ops/published and the run's latest ops/runs row."""
    out: dict[str, dict] = {}
    latest: dict[str, ops.Published] = {}
    for switch in ops.switches(warehouse):                       # current first: the first of a version is its latest
        if switch.version in versions:
            latest.setdefault(switch.version, switch)
    runs_path = Path(T.table_path(warehouse, C.RUNS))
    runs = spark.read.format("delta").load(str(runs_path)) if latest and T.is_delta_table(runs_path) else None
    for switch in latest.values():
        metrics: dict[str, float] = {}
        if runs is not None and switch.run_id:
            found = (runs.where((F.col("run_id") == switch.run_id) & (F.col(C.MODEL) == switch.model))
                     .orderBy(F.desc("recorded_at")).select("metrics").first())
            metrics = dict(found["metrics"] or {}) if found else {}
        out[switch.version] = {C.MODEL: switch.model, "run_id": switch.run_id or None, "metrics": metrics}
    return out


def ab_readout(spark: SparkSession, warehouse: Path | str, ab: ABSettings, *, confidence: float = 0.95,
               session_gap_s: float = 1800.0, since: datetime | None = None) -> dict:
    """The readout of experiment ``ab`` over the stamped impressions in ``ops/events`` (from ``since`` on)."""
    warehouse = Path(warehouse)
    events = spark.read.format("delta").load(T.ensure_table(spark, warehouse, T.EVENTS))
    events = events.where(F.col(VARIANT).isin(list(ab.variants)))
    if since is not None:
        events = events.where(F.col("ts") >= F.lit(since))
    facts = impression_facts(events, session_gap_s).cache()
    try:
        size = catalog_size(spark, warehouse)
        rows = {r[VARIANT]: r.asDict() for r in aggregate(facts, (VARIANT,), size).collect()}
        versions = {r[VARIANT]: sorted(x for x in r["versions"] if x) for r in
                    facts.groupBy(VARIANT).agg(F.collect_set(C.VERSION).alias("versions")).collect()}
    finally:
        facts.unpersist()
    offline = offline_metrics(spark, warehouse, sorted({v for vs in versions.values() for v in vs}))
    variants = {}
    for name in sorted(ab.variants):
        row = rows.get(name, {"impressions": 0, "clicked": 0, "purchased": 0, "users": 0})
        entry = {k: row.get(k) for k in ("users", "impressions", "clicks", "clicked", "purchases", "purchased",
                                         "ctr", "purchase_rate", "rec_to_rec", "scroll_end_no_click", "coverage")}
        entry["configured_version"] = ab.variants[name].version
        entry["versions"] = versions.get(name, [])
        entry["offline"] = {v: offline[v] for v in entry["versions"] if v in offline}
        for rate, num in OUTCOMES.items():
            entry[f"{rate}_ci"] = wilson(Proportion(int(row.get(num) or 0), int(row["impressions"] or 0)),
                                         confidence)
        variants[name] = entry
    control = variants[ab.control]
    tests = {}
    for name, entry in variants.items():
        if name == ab.control:
            continue
        tests[name] = {rate: two_proportion_test(Proportion(int(entry[num] or 0), int(entry["impressions"] or 0)),
                                                 Proportion(int(control[num] or 0),
                                                            int(control["impressions"] or 0)), confidence)
                       for rate, num in OUTCOMES.items()}
    return {"experiment": ab.experiment, "salt": ab.salt, "control": ab.control, "confidence": confidence,
            "generated_at": datetime.now(timezone.utc).isoformat(), "variants": variants, "tests": tests,
            "balance": balance_test({n: int(v["users"] or 0) for n, v in variants.items()}, ab)}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(x) for x in value) or "–"
    return _fmt(value)


def write_readout(folder: Path | str, readout: dict) -> Path:
    """``readout.json`` and a one-page ``readout.html`` in ``folder``; returns the JSON path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "readout.json"
    path.write_text(json.dumps(readout, indent=2, default=str, allow_nan=True) + "\n")
    cols = ("users", "impressions", "ctr", "ctr_ci", "purchase_rate", "rec_to_rec", "scroll_end_no_click",
            "coverage", "versions")
    head = "".join(f"<th>{c}</th>" for c in ("variant", *cols, "offline map@10"))
    body = ""
    for name, v in readout["variants"].items():
        offline = "; ".join(f"{ver}: {_fmt(o['metrics'].get('map@10'))} ({_fmt(o['model'])})"
                            for ver, o in v["offline"].items())
        cells = "".join(f"<td>{_cell(v[c])}</td>" for c in cols)
        body += f"<tr><td>{html.escape(name)}</td>{cells}<td>{offline or '–'}</td></tr>"
    tests = "".join(f"<li>{html.escape(n)} vs {html.escape(readout['control'])}, {rate}: diff {_fmt(t['diff'])} "
                    f"[{_fmt(t['diff_low'])}, {_fmt(t['diff_high'])}], z {_fmt(t['z'])}, p {_fmt(t['p_value'])}</li>"
                    for n, by_rate in readout["tests"].items() for rate, t in by_rate.items())
    b = readout["balance"]
    (folder / "readout.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>A/B {html.escape(readout['experiment'])}</title>"
        f"<h1>A/B readout: {html.escape(readout['experiment'])}</h1><p>generated {readout['generated_at']}, "
        f"intervals at {readout['confidence']:.0%}</p><table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"
        f"<h2>Tests</h2><ul>{tests}</ul><h2>Sample ratio</h2><p>chi² {_fmt(b['chi2'])} (dof {b['dof']}), "
        f"p {_fmt(b['p_value'])}</p>\n")
    return path


def run_ab_report(spark: SparkSession, settings) -> dict:
    """What ``recsys ab-report``, ``jobs/ab_report.py`` and the monitoring DAG do: fold pending events, then write
    the readout of ``settings.monitor.ab`` to ``reports/ab-<experiment>/``. Without an enabled experiment there is
    nothing to read out: says so and writes nothing. ``settings`` is a :class:`recsys.config.Settings`."""
    from recsys.monitor.indicators import fold_events

    ab = settings.monitor.ab
    if not ab.enabled:
        return {"report": None, "reason": "monitor.ab.enabled is false: no experiment is running"}
    fold_events(spark, settings)    # the readout reads ops/events, not ops/indicators: fold what is pending
    readout = ab_readout(spark, settings.warehouse, ab, confidence=settings.monitor.confidence,
                         session_gap_s=settings.monitor.session_gap_s)
    path = write_readout(Path(settings.reports) / f"ab-{ab.experiment}", readout)
    return {"report": str(path), "tests": readout["tests"], "balance": readout["balance"]}
