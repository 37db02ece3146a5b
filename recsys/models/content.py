"""Content-based: item embeddings from catalog text (TF-IDF + truncated SVD, computed locally — no
model hub), user profiles as the weighted mean of the embeddings of their training items.

Used for item-to-item similarity (labelled ``content`` in the published table), for cold items that
no user has touched, and as a fourth model in the comparison.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.models.factors import FactorModel, numpy_to_factors
from recsys.models.implicit_als import interactions_to_csr
from recsys.models.params import ContentParams


def item_text(silver_items: DataFrame, item_index: DataFrame) -> DataFrame:
    """(item_idx, text): title, features, description and store of each indexed item."""
    joined = item_index.select(C.ITEM_ID, C.ITEM_IDX).join(silver_items, C.ITEM_ID, "left")
    parts = [F.coalesce(F.col("title"), F.lit("")),
             F.coalesce(F.array_join("features", " "), F.lit("")),
             F.coalesce(F.array_join("description", " "), F.lit("")),
             F.coalesce(F.col("store"), F.lit(""))]
    return joined.select(C.ITEM_IDX, F.concat_ws(" ", *parts).alias("text"))


def embed(texts: list[str], params: ContentParams) -> np.ndarray:
    """Rows L2-normalised; an item without text gets a zero vector."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    n = len(texts)
    if n == 0:
        return np.zeros((0, params.dims), dtype=np.float32)
    vectorizer = TfidfVectorizer(max_features=params.max_features, min_df=min(params.min_df, n),
                                 sublinear_tf=True, dtype=np.float32)
    try:
        tfidf = vectorizer.fit_transform(texts)
    except ValueError:          # empty vocabulary: no usable text at all
        return np.zeros((n, params.dims), dtype=np.float32)
    dims = max(1, min(params.dims, tfidf.shape[1] - 1, n - 1))
    dense = TruncatedSVD(n_components=dims, random_state=params.seed).fit_transform(tfidf) if dims >= 1 \
        and tfidf.shape[1] > 1 else tfidf.toarray()
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return (dense / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def with_vectors(ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows that have a (non-zero) vector: an item without text, or a user none of whose items has any, would
    score 0 against everything, i.e. be ranked by index."""
    keep = np.linalg.norm(vectors, axis=1) > 0
    return ids[keep], vectors[keep]


def user_profiles(matrix, item_ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """One profile per row of the user × item ``matrix``: Σ w·e_i / ||·|| over the user's items (CSR × dense, no
    Python loop); ``vectors[j]`` embeds item ``item_ids[j]``. A user without items gets a zero row."""
    lookup = np.zeros((max(matrix.shape[1], int(item_ids.max(initial=-1)) + 1), vectors.shape[1]), dtype=np.float32)
    lookup[item_ids] = vectors
    profiles = np.asarray(matrix @ lookup[: matrix.shape[1]])
    norms = np.linalg.norm(profiles, axis=1, keepdims=True)
    return (profiles / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def fit(interactions: DataFrame, params: ContentParams, items: DataFrame | None = None,
        scratch: Path | None = None) -> FactorModel:
    """``items``: (item_idx, text) for the catalog (see :func:`item_text`). Items without text and users none of
    whose items have any get no vector, hence no score and no list: on a catalogue without text the model proposes
    nothing, instead of ranking every item 0 and so in index order."""
    if items is None:
        raise ValueError("the content model needs item text: pass items=(item_idx, text)")
    spark = interactions.sparkSession
    start = time.perf_counter()
    table = items.select(C.ITEM_IDX, "text").toArrow()
    item_ids = table.column(C.ITEM_IDX).to_numpy().astype(np.int32)
    texts = [t or "" for t in table.column("text").to_pylist()]
    item_ids, vectors = with_vectors(item_ids, embed(texts, params))

    csr = interactions_to_csr(interactions, params.weighting)
    user_ids = np.flatnonzero(np.diff(csr.indptr)).astype(np.int32)
    user_ids, profiles = with_vectors(user_ids, user_profiles(csr, item_ids, vectors)[user_ids])
    seconds = time.perf_counter() - start

    # a folder we make is ours to delete (FactorModel.scratch); a caller's stays the caller's
    owned = None if scratch else Path(tempfile.mkdtemp(prefix="content-factors-"))
    scratch = Path(scratch or owned)
    users = numpy_to_factors(spark, user_ids, profiles, scratch / "user_factors")
    item_f = numpy_to_factors(spark, item_ids, vectors, scratch / "item_factors")
    return FactorModel(name="content", params=params.model_dump(), user_factors=users, item_factors=item_f,
                       seen=interactions.select(C.USER_IDX, C.ITEM_IDX), info={"train_seconds": round(seconds, 3)},
                       scratch=owned)
