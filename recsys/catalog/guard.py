"""What ingest and silver consult so that deleted items and erased users never come back from raw files.

- Ingest (:func:`flag_erased_lines`): a raw review line of an erased user — by its parsed ``user_id``, or, for a
  line without a valid one, by any whole token naming the user — lands neither in bronze nor in quarantine; the
  file's ``suppressed`` count keeps the reconciliation exact. Catalogue lines (no ``user_id`` column) hold no
  users and are never flagged: an item whose details say ``1 pounds`` is not user ``1``'s.
- Silver (:func:`exclude_deleted`): rows of deleted items (bronze keeps them: it is the raw record, and relisting
  brings them back from there) and of erased users (belt and braces) are left out of the rebuild.

Both cost nothing when ``ops/deletions`` holds no such rows, the usual case.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.catalog import ledger
from recsys.catalog.mentions import ID_HASH, mention_hits, salted_hash

SUPPRESSED = "_suppressed"


def flag_erased_lines(spark: SparkSession, warehouse: Path | str, lines: DataFrame, text: str,
                      keys: Sequence[str], flag: str = SUPPRESSED) -> DataFrame:
    """``lines`` plus a boolean ``flag``: true when the line belongs to an erased user (see the module docstring).

    Pass a persisted DataFrame: it is read twice (the matches, then the rows they flag).
    """
    erased = ledger.erased_users(spark, warehouse) if C.USER_ID in lines.columns else None
    if erased is None or not erased.lengths:
        return lines.withColumn(flag, F.lit(False))
    hits = (mention_hits(lines, [text], keys, erased.hashes, erased.salt, erased.lengths, owner=F.col(C.USER_ID))
            .select(*keys).distinct().withColumn(flag, F.lit(True)))
    return lines.join(hits, list(keys), "left").withColumn(flag, F.coalesce(F.col(flag), F.lit(False)))


def exclude_deleted(spark: SparkSession, warehouse: Path | str, df: DataFrame) -> DataFrame:
    """``df`` without rows of deleted items (by ``parent_asin``) or erased users (by hashed ``user_id``)."""
    if C.ITEM_ID in df.columns:
        items = ledger.deleted_items(spark, warehouse)
        if items is not None:
            df = df.join(F.broadcast(items), C.ITEM_ID, "left_anti")
    if C.USER_ID in df.columns:
        erased = ledger.erased_users(spark, warehouse)
        if erased is not None:
            hashes = F.broadcast(erased.hashes)
            df = df.join(hashes, salted_hash(df[C.USER_ID], erased.salt) == hashes[ID_HASH], "left_anti")
    return df
