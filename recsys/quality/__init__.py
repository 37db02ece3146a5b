"""Great Expectations quality gates at every layer (bronze, silver, gold, published).

``validate_layer(spark, warehouse, layer, settings, run_id=None, version=None) -> GateResult``; a failed gate
raises :class:`QualityGateError` from ``GateResult.raise_if_failed()``. Modules: ``settings`` (conf/quality.yaml),
``suites`` (what each table must satisfy), ``expectations`` (our one custom GE expectation), ``runner`` (GE
context, checkpoints, Data Docs), ``gate`` (reading, caching, results). Exports resolve lazily so that
``recsys.config`` can import the settings without pulling in Spark or GE.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "validate_layer": "recsys.quality.gate",
    "GateResult": "recsys.quality.gate",
    "Outcome": "recsys.quality.gate",
    "QualityGateError": "recsys.quality.gate",
    "QUALITY_RESULTS": "recsys.quality.gate",
    "purge_validation_artifacts": "recsys.quality.gate",
    "published_gate": "recsys.quality.gate",
    "QualitySettings": "recsys.quality.settings",
    "load_quality_settings": "recsys.quality.settings",
    "LAYERS": "recsys.quality.settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recsys.quality' has no attribute {name!r}")
