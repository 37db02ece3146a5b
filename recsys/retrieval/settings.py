"""The ``retrieval`` section: when candidates come from an approximate index instead of exact scoring, and the
index's parameters (:mod:`recsys.retrieval.ann`)."""

from __future__ import annotations

from pydantic import Field

from recsys.strict import StrictModel


class RetrievalSettings(StrictModel):
    """Exact scoring (``recsys.models.topk``) below ``ann_min_items`` items, the approximate index above: the
    ``exact_head`` items of largest norm scored exactly, an HNSW graph over inner products for the rest. Defaults
    from ``benchmarks/bench_retrieval.py`` (README, "Retrieval at catalogue scale")."""

    ann_min_items: int = Field(250_000, ge=1)      # a catalogue of at least this many items is searched approximately
    exact_head: int = Field(32_768, ge=0)          # items of largest norm scored exactly
    tail_candidates: int = Field(32, ge=1)         # the graph's best per user, merged with the head's
    hnsw_m: int = Field(16, ge=4)                  # graph neighbours per item (memory: 2·M ints per item)
    ef_construction: int = Field(40, ge=8)         # candidate queue while building: build time vs graph quality
    ef_search: int = Field(64, ge=8)               # candidate queue while searching: time vs recall (≥ width used)
    max_slack: int = Field(1024, ge=0)             # extra graph results asked for to make up for a user's seen items
