"""Re-ranking of finished candidate lists: the DPP diversity re-rank (:mod:`recsys.rerank.dpp`) and its Spark entry
(:mod:`recsys.rerank.lists`). Imported lazily: the kernels need numba, the Spark entry a JVM."""

from __future__ import annotations

from recsys.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "greedy_map": "recsys.rerank.dpp",
    "rerank": "recsys.rerank.dpp",
    "rerank_batch": "recsys.rerank.dpp",
    "intra_list_diversity": "recsys.rerank.dpp",
    "rerank_lists": "recsys.rerank.lists",
})
