"""Model selection, the ``select`` step of every training run (between features and train): per searched model
(:data:`recsys.selection.spaces.SEARCHED`) an Optuna search on the validation split within ``tuning.budget_seconds``,
the winner then fitted on ``train.fit_splits`` by the train step and scored once on test by evaluate.

- :mod:`~recsys.selection.settings`: the ``tuning`` config section;
- :mod:`~recsys.selection.spaces`: what is searched per model, and how Spark's and implicit's spaces map;
- :mod:`~recsys.selection.data`: the train/valid arrays a search sees (never test) and the trials' MAP@K;
- :mod:`~recsys.selection.portfolio`: the generic points implicit ALS's search starts from;
- :mod:`~recsys.selection.cost`: what a Spark trial will cost, to size Spark's first trials;
- :mod:`~recsys.selection.search`: one model's study, trials, pruning and budget;
- :mod:`~recsys.selection.step`: the step (``recsys select``): every model of a run, trials in ``ops/runs``, the
  winners in ``ops/selection/<run_id>.json`` (:func:`recsys.ops.selection`) for the train step and the report.
"""
