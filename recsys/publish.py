"""Publish: precomputed top-K tables for the production model, as a new version of ``gold/recs_*``.

Atomicity: rows of the new version are written first (each table replaces only that version's rows,
so a rerun of the same version is idempotent), then the publish gate runs, and only then is the
version appended to ``ops/published`` — the pointer the API follows. A crash or a failed gate before
that append leaves the previous version serving. Older versions beyond ``keep_versions`` are removed
afterwards.

Per user: K + ``spare`` items (the spares let the API and deletions backfill lists to K), seen and
deleted items excluded, ties broken by item index (see :mod:`recsys.models.factors`). Right before the rows are
written, the deletion ledger (``ops/deletions``, pending requests included) is applied once more, so a request
that landed after the model was read, or whose cascade failed, never reaches a published table.

Pruning never removes a version an A/B variant pins, nor one written and not switched yet (the DAG writes,
validates, then switches in separate tasks): those are listed in ``ops/_unswitched.json`` until they are switched
or older than ``publish.unswitched_grace_hours`` (a version whose gate failed is abandoned).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import ops
from recsys import tables as T
from recsys.config import Settings
from recsys.logs import step, timed
from recsys.loading import load_model
from recsys.models import FactorModel
from recsys.models.popularity import popular_by_category
from recsys.train import fit_and_save

log = logging.getLogger(__name__)

ALS_MODELS = ("spark_als", "implicit_als")
Gate = Callable[[str], None]          # called with the new version; raises to stop the publish


def new_version() -> str:
    return f"v{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"


def _production_model(spark: SparkSession, settings: Settings, seen: DataFrame,
                      refit: bool) -> tuple[dict, FactorModel]:
    """The production model, refit on every split (``refit``), or as last fitted: the refit a previous publish
    saved (``<run_id>-all``, scrubbed by deletions like every model folder), else the registered candidate."""
    prod = ops.production_model(settings.warehouse)
    if prod is None:
        raise LookupError("no production model in ops/model_registry: run train and evaluate first")
    path = ops.refit_dir(settings.warehouse, prod[C.MODEL], prod["run_id"])
    if not refit:
        saved = ops.last_fitted(settings.warehouse, prod[C.MODEL], prod["run_id"], prod["model_path"])
        return prod, _published(load_model(spark, str(saved), seen=seen), settings)
    with step("refit", model=prod[C.MODEL], run_id=prod["run_id"]):
        model = fit_and_save(spark, settings.warehouse, prod[C.MODEL], json.loads(prod["params"] or "{}"), None, path,
                             refit_of=Path(prod["model_path"]))
    model.seen = seen
    return prod, _published(model, settings)


def _published(model, settings: Settings):
    """``model`` with the publish settings that apply to it (the multi-stage model's diversity strength)."""
    if settings.publish.diversity is not None and hasattr(model, "diversity"):
        model.diversity = settings.publish.diversity
    return model


def _als_for_similar(spark: SparkSession, settings: Settings, prod: dict, model: FactorModel) -> FactorModel | None:
    """Item-to-item neighbours from ALS factors: the production model if it is an ALS, else the run's ALS."""
    if prod[C.MODEL] in ALS_MODELS:
        return model
    for cand in ops.run_models(settings.warehouse, prod["run_id"]):
        if cand[C.MODEL] in ALS_MODELS:
            return FactorModel.load(spark, cand["model_path"])
    return None


def _content_for_similar(spark: SparkSession, settings: Settings, prod: dict, model: FactorModel) -> FactorModel | None:
    if prod[C.MODEL] == "content":
        return model
    for cand in ops.run_models(settings.warehouse, prod["run_id"]):
        if cand[C.MODEL] == "content":
            return FactorModel.load(spark, cand["model_path"])
    return None


def _write_version(df: DataFrame, path: str, version: str, sort_by: tuple[str, ...] | None = None) -> None:
    """Replace the rows of ``version`` in the table at ``path``; with ``sort_by`` each key's rows are written
    together and in rank order (the serving snapshot then builds in one linear pass); without, ``df`` comes so
    (:func:`_user_rows`)."""
    from recsys.ingest import sql_literal

    if sort_by:
        df = (df.repartition(max(1, df.sparkSession.sparkContext.defaultParallelism), sort_by[0])
              .sortWithinPartitions(*sort_by))
    (df.write.format("delta").mode("overwrite").option("replaceWhere", f"version = {sql_literal(version)}")
     .save(path))


def publish(spark: SparkSession, settings: Settings, *, version: str | None = None, gate: Gate | None = None,
            write: bool = True, switch: bool = True, refit: bool | None = None) -> dict:
    """Publish the production model's lists as ``version`` (default: a new timestamped version).

    ``write=False`` only switches ``ops/published`` to an already written version; ``switch=False`` only
    writes the rows (the DAG validates them in between, then switches). ``refit`` (default
    ``publish.refit_on_all``): refit the production model on every split first; the deletions DAG republishes
    with ``refit=False``.
    """
    version = version or new_version()
    out = {"version": version}
    if write:
        out.update(write_version(spark, settings, version, refit=refit))
    if gate is not None:
        gate(version)          # raises on failure: ops/published is not touched, the old version serves
    if switch:
        out.update(switch_version(spark, settings, version))
    return out


def write_version(spark: SparkSession, settings: Settings, version: str, *, refit: bool | None = None) -> dict:
    """Write every gold/recs_* row of ``version`` (idempotent: each table replaces that version's rows)."""
    warehouse = settings.warehouse
    conf = settings.publish
    refit = conf.refit_on_all if refit is None else refit
    with step("publish_write", version=version, refit=refit) as rec:
        interactions = T.read_table(spark, warehouse, C.INTERACTIONS)
        seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        item_index = T.read_table(spark, warehouse, C.ITEM_INDEX)
        users = T.read_table(spark, warehouse, C.USER_INDEX)
        deleted = [r[C.ITEM_IDX] for r in item_index.where(F.col("deleted")).select(C.ITEM_IDX).collect()]
        seconds: dict[str, float] = {}
        rec.update(part_seconds=seconds)
        with timed(seconds, "model"):       # the refit, when there is one
            prod, model = _production_model(spark, settings, seen, refit)
        asin = item_index.select(C.ITEM_IDX, C.ITEM_ID)
        rec.update(model=prod[C.MODEL], run_id=prod["run_id"], deleted_items=len(deleted))
        ledger = Ledger.read(spark, warehouse)
        _mark_unswitched(warehouse, version)

        with timed(seconds, "user_lists"):
            recs = _user_rows(model, version, prod[C.MODEL], users, asin, conf.k + conf.spare, deleted, ledger)
            _write_version(recs, T.ensure_table(spark, warehouse, T.RECS_USER_TOPK), version)

        with timed(seconds, "similar_items"):
            rec.update(similar_methods=_write_similar(spark, settings, prod, model, version, deleted, asin, ledger))

        with timed(seconds, "popular"):
            popular = (popular_by_category(interactions, item_index, conf.popular_k).join(asin, C.ITEM_IDX)
                       .select(F.lit(version).alias(C.VERSION), C.CATEGORY, C.RANK, C.ITEM_ID,
                               F.col(C.SCORE).cast("double").alias(C.SCORE)))
            popular = ledger.without_items(popular, C.ITEM_ID)
            _write_version(popular, T.ensure_table(spark, warehouse, T.RECS_POPULAR), version, (C.CATEGORY, C.RANK))
    return {"model": prod[C.MODEL], "run_id": prod["run_id"], "refit": refit}


def _write_similar(spark: SparkSession, settings: Settings, prod: dict, model: FactorModel, version: str,
                   deleted: list[int], asin: DataFrame, ledger: Ledger) -> list[str]:
    """Write ``version``'s similar items of each method (ALS, content) there is a model for; → the methods."""
    conf, warehouse = settings.publish, settings.warehouse
    similar_frames = []
    for method, source in (("als", _als_for_similar(spark, settings, prod, model)),
                           ("content", _content_for_similar(spark, settings, prod, model))):
        if source is None:
            continue
        sim = source.similar_items(k=conf.similar_k, exclude_items=deleted)
        similar_frames.append((method,
            sim.join(asin, C.ITEM_IDX)
            .join(asin.select(F.col(C.ITEM_IDX).alias("similar_idx"), F.col(C.ITEM_ID).alias("similar_asin")),
                  "similar_idx")
            .select(F.lit(version).alias(C.VERSION), C.ITEM_ID, C.RANK, "similar_asin",
                    F.col(C.SCORE).cast("double").alias(C.SCORE), F.lit(method).alias("method"))))
    similar_path = T.ensure_table(spark, warehouse, T.RECS_SIMILAR_ITEMS)   # exists even with no method
    if similar_frames:
        similar = similar_frames[0][1]
        for _, frame in similar_frames[1:]:
            similar = similar.unionByName(frame)
        similar = ledger.without_items(ledger.without_items(similar, C.ITEM_ID), "similar_asin")
        _write_version(similar, similar_path, version, (C.ITEM_ID, "method", C.RANK))
    else:
        log.warning("no ALS or content model in run %s: version %s has no similar items", prod["run_id"], version)
    return [m for m, _ in similar_frames]


def _user_rows(model: FactorModel, version: str, model_name: str, users: DataFrame, asin: DataFrame, k: int,
               deleted: list[int], ledger: Ledger, only: DataFrame | None = None) -> DataFrame:
    """Rows of ``gold/recs_user_topk`` for ``version``: each user's top ``k`` (``only``: those ``user_idx``).

    Users are named while each is still one row (a list): at Appliances size that join shuffles 1.8M lists, not
    54M entries, and exploding afterwards leaves each user's rows together and in rank order, as the serving
    snapshot reads them fastest, with no sort of the entries (while the item names join by broadcast, as a
    catalogue of 10^5 items does; a larger one still loads, the snapshot then sorts)."""
    lists = ledger.without_users(
        model.recommend_lists(users=only, k=k, exclude_items=deleted, with_scores=True).join(users, C.USER_IDX),
        C.USER_ID)
    entry = F.posexplode(F.arrays_zip(F.col(C.ITEMS).alias(C.ITEM_IDX), F.col("scores").alias(C.SCORE)))
    recs = (lists.select(C.USER_ID, entry.alias("pos", "entry"))
            .select(C.USER_ID, (F.col("pos") + 1).alias(C.RANK), F.col(f"entry.{C.ITEM_IDX}").alias(C.ITEM_IDX),
                    F.col(f"entry.{C.SCORE}").alias(C.SCORE))
            .join(asin, C.ITEM_IDX)
            .select(F.lit(version).alias(C.VERSION), C.USER_ID, C.RANK, C.ITEM_ID,
                    F.col(C.SCORE).cast("double").alias(C.SCORE), F.lit(model_name).alias(C.MODEL)))
    return ledger.without_items(recs, C.ITEM_ID)


# --- lists that item deletions cut below K -----------------------------------------------------------------------


def refill_short_lists(spark: SparkSession, settings: Settings) -> dict:
    """Re-score every user whose list in the current version fell below K (item deletions ran out of spares)
    from the production model as last fitted, deleted and seen items excluded: every list keeps K items.

    Only the lists of the current version are refilled, and only when the production model is the one that
    version was published from (``ops/published.run_id``): lists of an older or pinned version, or of a model
    replaced since, shrink instead of mixing two models. When more than ``publish.rewrite_share`` of the
    version's lists are short, the version's user lists are rewritten whole (``replaceWhere``) rather than
    MERGEd into nearly every file.
    """
    warehouse = settings.warehouse
    conf = settings.publish
    current = ops.current_published(warehouse)
    version = current.version if current else None
    out: dict = {"version": version, "short_lists": 0, "refilled": 0, "how": None}
    prod = ops.production_model(warehouse)
    if current is None or prod is None:
        return out
    if prod["run_id"] != current.run_id:
        log.warning("refill skipped: version %s was published from run %s, production is run %s", version,
                    current.run_id, prod["run_id"])
        out["how"] = "skipped: production model changed since the version was published"
        return out
    path = T.table_path(warehouse, C.RECS_USER_TOPK)
    lists = spark.read.format("delta").load(path).where(F.col(C.VERSION) == version)
    # Ranks run 1..n in every list, so the lists holding K items are those with a row at rank K: a filter on one
    # int column (the user ids of the other rows are never decoded), not a count per user over every row.
    full = lists.where(F.col(C.RANK) == conf.k).select(C.USER_ID)
    users = T.read_table(spark, warehouse, C.USER_INDEX)            # erased users are gone from it
    short = users.join(full, C.USER_ID, "left_anti").select(C.USER_IDX)
    interactions = T.read_table(spark, warehouse, C.INTERACTIONS)
    _, model = _production_model(spark, settings, interactions.select(C.USER_IDX, C.ITEM_IDX), refit=False)
    short = short.join(model.user_factors.select(F.col("id").alias(C.USER_IDX)), C.USER_IDX, "left_semi")
    short_users = short.count()                 # users the model can score (others never had a list)
    out["short_lists"] = short_users
    if short_users == 0:
        return out
    item_index = T.read_table(spark, warehouse, C.ITEM_INDEX)
    deleted = [r[C.ITEM_IDX] for r in item_index.where(F.col("deleted")).select(C.ITEM_IDX).collect()]
    asin = item_index.select(C.ITEM_IDX, C.ITEM_ID)
    ledger = Ledger.read(spark, warehouse)
    k = conf.k + conf.spare
    if short_users > conf.rewrite_share * max(1, lists.where(F.col(C.RANK) == 1).count()):   # one row per list
        fresh = _user_rows(model, version, prod[C.MODEL], users, asin, k, deleted, ledger)
        _write_version(fresh, path, version)
        out.update(refilled=short_users, how="rewrite")
        return out
    fresh = _user_rows(model, version, prod[C.MODEL], users, asin, k, deleted, ledger, only=short)
    _replace_lists(spark, path, lists, fresh)
    out.update(refilled=short_users, how="merge")
    return out


def _replace_lists(spark: SparkSession, path: str, lists: DataFrame, fresh: DataFrame) -> None:
    """One MERGE: the users of ``fresh`` get exactly its rows (ranks it lacks are deleted)."""
    from delta.tables import DeltaTable

    keys = [C.VERSION, C.USER_ID, C.RANK]
    stale = (lists.join(fresh.select(C.USER_ID).distinct(), C.USER_ID, "left_semi").select(*keys)
             .join(fresh.select(*keys), keys, "left_anti"))
    source = (fresh.withColumn("_delete", F.lit(False))
              .unionByName(stale.withColumn("_delete", F.lit(True)), allowMissingColumns=True))
    values = {c: f"s.`{c}`" for c in fresh.columns}
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(source.alias("s"), " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys))
     .whenMatchedDelete(condition="s._delete")
     .whenMatchedUpdate(condition="NOT s._delete", set={c: v for c, v in values.items() if c not in keys})
     .whenNotMatchedInsert(condition="NOT s._delete", values=values)
     .execute())


class Ledger:
    """The deletion ledger as Spark filters: denied items by id, erased users by salted hash (the only form the
    ledger keeps). Read with delta-rs, the same reader the API's deny-list uses, so both honour the same rows."""

    def __init__(self, spark: SparkSession, items: Iterable[str], user_hashes: Iterable[str], salt: str | None):
        self.items = spark.createDataFrame([(i,) for i in sorted(items)], "denied STRING")
        self.hashes = spark.createDataFrame([(h,) for h in sorted(user_hashes)], "denied_hash STRING")
        self.salt = salt
        self.any_users = bool(self.salt) and not self.hashes.isEmpty()

    @classmethod
    def read(cls, spark: SparkSession, warehouse: Path) -> Ledger:
        from recsys.serve.denylist import load_denylist

        deny = load_denylist(warehouse)
        return cls(spark, deny.items, deny.user_hashes, deny.salt)

    def without_items(self, df: DataFrame, column: str) -> DataFrame:
        return df.join(F.broadcast(self.items), F.col(column) == F.col("denied"), "left_anti")

    def without_users(self, df: DataFrame, column: str) -> DataFrame:
        if not self.any_users:
            return df
        digest = F.sha2(F.concat(F.lit(self.salt), F.col(column)), 256)
        return df.join(F.broadcast(self.hashes), digest == F.col("denied_hash"), "left_anti")


# --- versions written but not switched yet ---------------------------------------------------------------------


def _save_unswitched(warehouse: Path, versions: dict[str, datetime]) -> None:
    """Replace the file atomically (the writer lock keeps other writers out; readers see old or new)."""
    path = Path(warehouse) / ops.UNSWITCHED
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({v: t.isoformat() for v, t in sorted(versions.items())}), encoding="utf-8")
    os.replace(tmp, path)


def _mark_unswitched(warehouse: Path, version: str) -> None:
    versions = ops.unswitched(warehouse)
    versions[version] = datetime.now(timezone.utc)
    _save_unswitched(warehouse, versions)


def _clear_unswitched(warehouse: Path, versions: Iterable[str]) -> None:
    current = ops.unswitched(warehouse)
    remaining = {v: t for v, t in current.items() if v not in set(versions)}
    if remaining != current:
        _save_unswitched(warehouse, remaining)


def switch_version(spark: SparkSession, settings: Settings, version: str) -> dict:
    """Make ``version`` current (append to ops/published), then prune versions beyond ``keep_versions``."""
    warehouse = settings.warehouse
    with step("publish_switch", version=version) as rec:
        topk = T.read_table(spark, warehouse, C.RECS_USER_TOPK).where(F.col(C.VERSION) == version)
        first = topk.select(C.MODEL).limit(1).collect()
        if not first:
            raise LookupError(f"version {version} has no rows in {C.RECS_USER_TOPK}: write it before switching")
        prod = ops.production_model(warehouse) or {}
        published_path = T.ensure_table(spark, warehouse, T.PUBLISHED)
        spark.createDataFrame([{"version": version, "model": first[0][C.MODEL], "run_id": prod.get("run_id"),
                                "published_at": datetime.now(timezone.utc), "k": settings.publish.k}],
                              schema=T.PUBLISHED.ddl).write.format("delta").mode("append").save(published_path)
        _clear_unswitched(warehouse, [version])
        rec["removed_versions"] = prune_versions(spark, warehouse, settings.publish.keep_versions,
                                                 pinned=settings.monitor.ab.pinned_versions(),
                                                 grace_hours=settings.publish.unswitched_grace_hours)
    return {"current": version}


def prune_versions(spark: SparkSession, warehouse: Path, keep: int, *, pinned: Iterable[str] = (),
                   grace_hours: float = 48.0) -> list[str]:
    """Delete the rows of every version :func:`recsys.ops.kept_versions` does not keep (the ``keep`` most recently
    published, ``pinned`` ones, and those written less than ``grace_hours`` ago and never switched)."""
    from delta.tables import DeltaTable

    kept = ops.kept_versions(warehouse, keep, pinned=pinned, grace_hours=grace_hours)
    removed: set[str] = set()
    for spec in (T.RECS_USER_TOPK, T.RECS_SIMILAR_ITEMS, T.RECS_POPULAR):
        path = T.table_path(warehouse, spec.path)
        if not T.is_delta_table(Path(path)):
            continue
        stale = [r[0] for r in spark.read.format("delta").load(path).select(C.VERSION).distinct().collect()
                 if r[0] not in kept]
        if stale:
            DeltaTable.forPath(spark, path).delete(F.col(C.VERSION).isin(stale))
            removed.update(stale)
    _clear_unswitched(warehouse, [v for v in ops.unswitched(warehouse) if v not in kept])
    return sorted(removed)
