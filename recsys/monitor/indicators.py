"""Online indicators per day, model version and A/B variant, from ``ops/events`` into ``ops/indicators``.

The unit is one *impression* (a list shown, identified by the API's ``request_id``). An event counts for a
recommendation only if it can be attributed to one: a click or purchase with the impression's ``request_id`` on
an item of its list. Attribution by ``request_id`` rather than by user and time keeps organic behaviour (a
purchase of something never recommended) out of the rates. Definitions:

- ``ctr`` = impressions with ≥ 1 attributed click / impressions (a proportion: what the A/B readout tests);
  ``clicks`` counts the attributed click events themselves.
- ``purchase_rate`` = impressions with ≥ 1 attributed purchase / impressions; ``purchases`` counts them.
- ``rec_to_rec`` = attributed clicks followed by another impression of the same user within
  ``session_gap_s``: the user went on browsing recommendations (e.g. the clicked item's similar list).
- ``scroll_end_no_click`` = impressions with a ``scroll_end`` and no attributed click: the user saw the whole list
  and found nothing (a bad sign).
- ``coverage`` = distinct items shown / live catalogue size (``gold/item_index`` without deleted items).

Every figure is recomputed from the events (never averaged from daily ratios), so the per-version totals the CLI
prints are exact. The daily rows are MERGEd on (day, version, variant) — a null variant (no experiment) matches
null — so a rerun over the same events rewrites the same rows.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.logs import step

DAY = "day"
VARIANT = "variant"
REQUEST_ID = "request_id"
TS = "ts"
KEYS = (DAY, C.VERSION, VARIANT)
RATES = ("ctr", "purchase_rate", "rec_to_rec", "scroll_end_no_click", "coverage")
COUNTS = ("users", "impressions", "clicks", "clicked", "purchases", "purchased")


def impression_facts(events: DataFrame, session_gap_s: float) -> DataFrame:
    """One row per impression: its keys, list, and what followed it (click/purchase counts, scroll-end, rec→rec).

    A request id logged twice counts once (its earliest impression event).
    """
    imps = (events.where(F.col("event_type") == "impression")
            .select(REQUEST_ID, C.USER_ID, "items", TS, C.VERSION, VARIANT, C.MODEL, "event_id")
            .withColumn("_rn", F.row_number().over(Window.partitionBy(REQUEST_ID).orderBy(TS, "event_id")))
            .where("_rn = 1").drop("_rn", "event_id"))

    def attributed(kind: str) -> DataFrame:
        acts = events.where(F.col("event_type") == kind).select(REQUEST_ID, C.ITEM_ID, F.col(TS).alias("_at"))
        return (acts.join(imps.select(REQUEST_ID, "items", C.USER_ID), REQUEST_ID)
                .where(F.array_contains("items", F.col(C.ITEM_ID))).select(REQUEST_ID, C.USER_ID, "_at"))

    clicks = attributed("click")
    # rec → rec: a later impression of the same user within the gap (the window is in seconds of event time).
    later = imps.select(F.col(C.USER_ID).alias("_u"), F.col(TS).alias("_next"))
    followed = (clicks.join(later, (clicks[C.USER_ID] == later["_u"]) & (later["_next"] > clicks["_at"])
                            & (later["_next"] <= clicks["_at"] + F.expr(f"INTERVAL {float(session_gap_s)} SECONDS")))
                .select(REQUEST_ID, "_at").distinct().groupBy(REQUEST_ID).agg(F.count("*").alias("_r2r")))
    click_n = clicks.groupBy(REQUEST_ID).agg(F.count("*").alias("_clicks"))
    purchase_n = attributed("purchase").groupBy(REQUEST_ID).agg(F.count("*").alias("_purchases"))
    scrolled = (events.where(F.col("event_type") == "scroll_end").select(REQUEST_ID).distinct()
                .withColumn("_scrolled", F.lit(True)))
    return (imps.join(click_n, REQUEST_ID, "left").join(purchase_n, REQUEST_ID, "left")
            .join(followed, REQUEST_ID, "left").join(scrolled, REQUEST_ID, "left")
            .fillna({"_clicks": 0, "_purchases": 0, "_r2r": 0, "_scrolled": False})
            .withColumn(DAY, F.to_date(TS)))


def aggregate(facts: DataFrame, keys: tuple[str, ...], catalog_size: int | None) -> DataFrame:
    """Counts and rates of :func:`impression_facts` rows grouped by ``keys``."""
    def ratio(num: str, den: str):
        return F.when(F.col(den) > 0, F.col(num) / F.col(den))

    grouped = facts.groupBy(*keys).agg(
        F.first(C.MODEL, ignorenulls=True).alias(C.MODEL),
        F.countDistinct(C.USER_ID).alias("users"),
        F.count("*").alias("impressions"),
        F.sum("_clicks").alias("clicks"),
        F.sum((F.col("_clicks") > 0).cast("long")).alias("clicked"),
        F.sum("_purchases").alias("purchases"),
        F.sum((F.col("_purchases") > 0).cast("long")).alias("purchased"),
        F.sum((F.col("_scrolled") & (F.col("_clicks") == 0)).cast("long")).alias("scroll_end_no_click_n"),
        F.sum("_r2r").alias("rec_to_rec_n"),
        F.size(F.array_distinct(F.flatten(F.collect_list("items")))).cast("long").alias("items_shown"),
    )
    coverage = F.col("items_shown") / F.lit(catalog_size) if catalog_size else F.lit(None).cast("double")
    return (grouped
            .withColumn("ctr", ratio("clicked", "impressions"))
            .withColumn("purchase_rate", ratio("purchased", "impressions"))
            .withColumn("rec_to_rec", ratio("rec_to_rec_n", "clicks"))
            .withColumn("scroll_end_no_click", ratio("scroll_end_no_click_n", "impressions"))
            .withColumn("coverage", coverage.cast("double")))


def catalog_size(spark: SparkSession, warehouse: Path) -> int | None:
    path = Path(T.table_path(warehouse, C.ITEM_INDEX))
    if not T.is_delta_table(path):
        return None
    return spark.read.format("delta").load(str(path)).where(~F.col("deleted")).count() or None


def compute_indicators(spark: SparkSession, warehouse: Path | str, session_gap_s: float = 1800.0) -> list[dict]:
    """Recompute the daily rows of ``ops/indicators`` from ``ops/events``; return the per-(version, variant)
    totals over all days (what ``recsys indicators --json`` prints)."""
    from delta.tables import DeltaTable

    warehouse = Path(warehouse)
    events_path = T.ensure_table(spark, warehouse, T.EVENTS)
    target = T.ensure_table(spark, warehouse, T.INDICATORS)
    with step("indicators") as rec:
        events = spark.read.format("delta").load(events_path)
        facts = impression_facts(events, session_gap_s).cache()
        try:
            size = catalog_size(spark, warehouse)
            daily = (aggregate(facts, KEYS, size)
                     .withColumn("computed_at", F.lit(datetime.now(timezone.utc)).cast("timestamp"))
                     .select(*T.INDICATORS.columns))
            on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in KEYS)
            (DeltaTable.forPath(spark, target).alias("t").merge(daily.alias("s"), on)
             .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
            totals = aggregate(facts, (C.VERSION, VARIANT), size).orderBy(C.VERSION, VARIANT).collect()
        finally:
            facts.unpersist()
        out = [{k: r[k] for k in (C.VERSION, VARIANT, C.MODEL, *COUNTS, *RATES)} for r in totals]
        rec.update(groups=len(out), impressions=sum(r["impressions"] for r in out))
    return out


def fold_events(spark: SparkSession, settings) -> dict:
    """Fold the API's pending event logs into ``ops/events`` (``settings``: a :class:`recsys.config.Settings`)."""
    from recsys.monitor.events_compaction import compact_events

    events_dir = settings.serve.resolved(settings.warehouse).events_dir
    return compact_events(spark, settings.warehouse, events_dir, settings.monitor.closed_after_s)


def run_indicators(spark: SparkSession, settings) -> dict:
    """What ``recsys indicators`` and ``jobs/indicators.py`` do: :func:`fold_events`, then recompute
    ``ops/indicators``. ``settings`` is a :class:`recsys.config.Settings`."""
    return {"compaction": fold_events(spark, settings),
            "indicators": compute_indicators(spark, settings.warehouse, settings.monitor.session_gap_s)}
