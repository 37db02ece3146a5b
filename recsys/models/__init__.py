"""Models: :func:`fit_model` by name (:mod:`recsys.models.fitting`), each returning a :class:`FactorModel`.

Imported lazily so that ``recsys.config`` reads the typed parameters (:mod:`recsys.models.params`) without
importing Spark or numpy.
"""

from __future__ import annotations

from recsys.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "MODELS": "recsys.models.fitting",
    "fit_model": "recsys.models.fitting",
    "FactorModel": "recsys.models.factors",
})
