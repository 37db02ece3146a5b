"""Every step in order, in one local Spark session: ``recsys pipeline`` (``make demo``) and ``recsys retrain``.

The steps are :data:`recsys.steps.TRAINING`, each the same ``recsys`` command with the same arguments that the
DAG's ``spark-submit jobs/<script>`` tasks run, here in this process and session. A Great Expectations gate
follows bronze, silver, gold and the written (not yet current) published version; a failed gate raises
:class:`~recsys.commands.CommandFailed` before ``ops/published`` moves, so the API keeps serving the previous
version. The ``pipeline`` and ``retrain`` commands are defined here: they are runs of other commands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from recsys import steps
from recsys.commands import command, execute, spark_session
from recsys.config import Settings
from recsys.logs import step as logged_step

Continue = Callable[[dict], bool]   # after a step: False ends the run there (e.g. nothing was promoted)


def run_steps(settings: Settings, table: Sequence[steps.Step], run: Mapping[str, str], models: Sequence[str],
              after: Mapping[str, Continue] | None = None) -> dict[str, Any]:
    """Run the commands of ``table`` in order (a ``per_model`` step once per model), each followed by its gates;
    returns each step's result under its name and each gate's under ``gates``."""
    out: dict[str, Any] = {"run_id": run["run_id"], "version": run["version"], "gates": {}}
    for step in table:
        runs = [{**run, "model": m} for m in models] if step.per_model else [run]
        results = [execute(step.command, step.arguments(r), settings) for r in runs]
        out[step.name] = results if step.per_model else results[0]
        for layer in step.gates:
            out["gates"][layer] = execute("validate", steps.gate_arguments(layer, run), settings)
        if after and step.name in after and not after[step.name](out):
            break
    return out


def _run(settings: Settings, run_id: str | None, models: Sequence[str]) -> dict[str, str]:
    from recsys.publish import new_version
    from recsys.registry import new_run_id

    return {"warehouse": str(settings.warehouse), "source": str(settings.source),
            "run_id": run_id or new_run_id(), "version": new_version(), "models": ",".join(models)}


def run_pipeline(spark, settings: Settings, run_id: str | None = None) -> dict[str, Any]:
    """ingest → silver → features (each gated) → select (search on valid) → train every configured model →
    evaluate/promote → publish (written, gated, switched). ``spark``: the session the commands run in (they take
    the active one)."""
    run = _run(settings, run_id, settings.train.models)
    with logged_step("pipeline", source=run["source"], warehouse=run["warehouse"], run_id=run["run_id"]):
        return run_steps(settings, steps.TRAINING, run, settings.train.models)


def run_retrain(spark, settings: Settings, *, models: Sequence[str] | None = None,
                run_id: str | None = None) -> dict[str, Any]:
    """Incremental retraining, the ``recsys_retrain`` DAG's steps: new or changed raw files only
    (``ops/ingested_files`` skips the rest) → silver MERGE → features rebuilt over everything (so the test split
    holds the newest interactions) → select (its search on valid) → train the production model's family (the
    configured candidates while nothing is in production) → evaluate, whose promotion gate compares the candidate
    with production re-scored on this same split → publish only if promoted. Training restarts from scratch: an ALS fit at this size costs
    seconds, so warm starts would save little and make runs depend on their history."""
    from recsys.ops import production_model

    if models is None:
        prod = production_model(settings.warehouse)
        models = [prod["model"]] if prod else list(settings.train.models)
    run = _run(settings, run_id, models)
    promoted: dict[str, Continue] = {steps.EVALUATE.name: lambda out: bool(out["evaluate"]["decision"]["promoted"])}
    with logged_step("retrain", warehouse=run["warehouse"], run_id=run["run_id"]) as rec:
        out = run_steps(settings, steps.TRAINING, run, models, after=promoted)
        rec.update(models=list(models), promoted=out["evaluate"]["decision"].get("promoted"))
    return out


@command("pipeline", creates=True)
def _pipeline(args, settings: Settings) -> Any:
    return run_pipeline(spark_session(settings), settings)


@command("retrain", creates=True)
def _retrain(args, settings: Settings) -> Any:
    return run_retrain(spark_session(settings), settings, models=args.model)
