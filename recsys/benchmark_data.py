"""Load public benchmark files straight into the silver layer, so every later step (features, train,
evaluate, publish) runs on them unchanged.

- ``movielens``: a MovieLens folder (``ratings.csv`` userId,movieId,rating,timestamp in **seconds**, and
  ``movies.csv`` for titles/genres), or ml-1m style ``ratings.dat`` (``::``-separated, optionally gzipped).
- ``amazon-csv``: the official Amazon Reviews 2023 benchmark CSV (``user_id,parent_asin,rating,timestamp``
  in ms, e.g. ``benchmark/5core/rating_only/All_Beauty.csv``); the category is the file's stem.

Not the raw dump: these files have no per-line lineage, so they skip bronze; ids are kept as text.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.logs import step

FORMATS = ("movielens", "amazon-csv")


def _movielens(spark: SparkSession, path: Path) -> tuple[DataFrame, DataFrame | None]:
    folder = path if path.is_dir() else path.parent
    csv = folder / "ratings.csv"
    if csv.is_file():
        ratings = spark.read.option("header", True).csv(str(csv), schema="userId string, movieId string, "
                                                                            "rating double, timestamp long")
    else:
        dat = next((p for p in (folder / "ratings.dat", folder / "ratings.dat.gz") if p.is_file()),
                   next(iter(sorted(folder.glob("ratings*.dat*"))), None))
        if dat is None:
            raise FileNotFoundError(f"no ratings.csv or ratings*.dat in {folder}")
        parts = F.split(F.col("value"), "::")
        ratings = spark.read.text(str(dat)).select(parts[0].alias("userId"), parts[1].alias("movieId"),
                                                   parts[2].cast("double").alias("rating"),
                                                   parts[3].cast("long").alias("timestamp"))
    reviews = ratings.select(F.col("userId").alias(C.USER_ID), F.col("movieId").alias(C.ITEM_ID),
                             F.col("movieId").alias(C.ASIN), F.col("rating").alias(C.RATING),
                             (F.col("timestamp") * 1000).alias(C.TIMESTAMP))
    movies = None
    if (folder / "movies.csv").is_file():
        raw = spark.read.option("header", True).option("quote", '"').option("escape", '"').csv(
            str(folder / "movies.csv"))
        movies = raw.select(F.col("movieId").alias(C.ITEM_ID), F.col("title"),
                            F.split(F.col("genres"), r"\|").alias("features"))
    return reviews, movies


def _amazon_csv(spark: SparkSession, path: Path) -> tuple[DataFrame, DataFrame | None]:
    if not path.is_file():
        raise FileNotFoundError(f"benchmark CSV not found: {path}")
    ratings = spark.read.option("header", True).csv(
        str(path), schema="user_id string, parent_asin string, rating double, timestamp long")
    return ratings.withColumn(C.ASIN, F.col(C.ITEM_ID)), None


def load_benchmark(spark: SparkSession, path: Path, warehouse: Path, fmt: str, category: str | None = None) -> dict:
    """Replace silver/reviews and silver/items with the benchmark at ``path``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark data not found: {path}")
    category = category or ("MovieLens" if fmt == "movielens" else path.name.split(".")[0])
    with step("load_benchmark", path=str(path), format=fmt) as rec:
        reviews, meta = (_movielens if fmt == "movielens" else _amazon_csv)(spark, path)
        reviews = (reviews.where(F.col(C.USER_ID).isNotNull() & F.col(C.ITEM_ID).isNotNull())
                   .withColumn(C.CATEGORY, F.lit(category)))
        for name in T.SILVER_REVIEWS.columns:
            if name not in reviews.columns:
                reviews = reviews.withColumn(name, F.lit(None))
        reviews = reviews.select(*[F.col(c).cast(t) for c, t in _types(T.SILVER_REVIEWS)])
        # earliest per (user, item), as for the dump
        reviews = reviews.orderBy(C.TIMESTAMP).dropDuplicates([C.USER_ID, C.ITEM_ID])
        items = reviews.select(C.ITEM_ID).distinct()
        if meta is not None:
            items = items.join(meta, C.ITEM_ID, "left")
        items = items.withColumn(C.CATEGORY, F.lit(category))
        for name in T.SILVER_ITEMS.columns:
            if name not in items.columns:
                items = items.withColumn(name, F.lit(None))
        items = items.select(*[F.col(c).cast(t) for c, t in _types(T.SILVER_ITEMS)])
        reviews.write.format("delta").mode("overwrite").save(T.ensure_table(spark, warehouse, T.SILVER_REVIEWS))
        items.write.format("delta").mode("overwrite").save(T.ensure_table(spark, warehouse, T.SILVER_ITEMS))
        rec.update(reviews=T.describe_table(Path(T.table_path(warehouse, C.SILVER_REVIEWS)))["rows"],
                   items=T.describe_table(Path(T.table_path(warehouse, C.SILVER_ITEMS)))["rows"])
    return {k: rec[k] for k in ("reviews", "items")}


def _types(spec: T.TableSpec) -> list[tuple[str, str]]:
    from pyspark.sql.types import StructType

    return [(f.name, f.dataType.simpleString()) for f in StructType.fromDDL(spec.ddl).fields]
