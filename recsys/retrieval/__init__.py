"""Candidate retrieval for catalogues too large to score exactly: an approximate inner-product index
(:mod:`recsys.retrieval.ann`), searched in Spark tasks (:mod:`recsys.retrieval.spark`). Imported lazily: faiss and
a JVM are only needed by the code that searches."""

from __future__ import annotations

from recsys.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "AnnIndex": "recsys.retrieval.ann",
    "use_ann": "recsys.retrieval.ann",
    "ann_candidates": "recsys.retrieval.spark",
})
