"""Multi-stage recommendations: retrievers propose candidates (:mod:`~recsys.multistage.retrievers`), a learned
ranker orders them (:mod:`~recsys.multistage.model`) on the features of :mod:`~recsys.multistage.features`.

Its parameters are :class:`recsys.models.params.MultiStageParams` (``train.params.multistage``).
"""
