"""Multi-stage recommendations: retrievers propose candidates (:mod:`~recsys.multistage.retrievers`), a learned
ranker orders them (:mod:`~recsys.multistage.model`) on the features of :mod:`~recsys.multistage.features`.

Kept import-light: ``recsys.config`` reads :mod:`recsys.multistage.params` without Spark or numpy.
"""
