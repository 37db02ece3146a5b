"""Great Expectations quality gates at every layer (bronze, silver, gold, published).

``validate_layer(spark, warehouse, layer, settings, run_id=None, version=None) -> GateResult``; a failed gate
raises :class:`QualityGateError` from ``GateResult.raise_if_failed()``. Modules: ``settings`` (conf/quality.yaml),
``suites`` (what each table must satisfy), ``expectations`` (our one custom GE expectation), ``runner`` (GE
context, checkpoints, Data Docs), ``gate`` (reading, caching, results). Exports resolve lazily so that
``recsys.config`` can import the settings without pulling in Spark or GE.
"""

from __future__ import annotations

from recsys.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "validate_layer": "recsys.quality.gate",
    "GateResult": "recsys.quality.gate",
    "Outcome": "recsys.quality.gate",
    "QualityGateError": "recsys.quality.gate",
    "QUALITY_RESULTS": "recsys.quality.gate",
    "purge_validation_artifacts": "recsys.quality.gate",
    "published_gate": "recsys.quality.gate",
    "QualitySettings": "recsys.quality.settings",
    "load_quality_settings": "recsys.quality.settings",
})
