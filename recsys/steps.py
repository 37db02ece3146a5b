"""The steps of every run, written once: which ``recsys`` command each step is, its arguments, the quality gates
after it. The DAGs' task chains and run plans (:mod:`recsys.orchestration`), the ``spark-submit jobs/<script>``
entry points and the local ``recsys pipeline`` / ``recsys retrain`` (:mod:`recsys.pipeline`) are all derived from
these tables, so adding a step is one entry here (and a command in :mod:`recsys.commands` if it is a new one).

Standard library only: DAG files read these tables while Airflow parses them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from recsys.constants import LAYERS

# The commands whose jobs/ script is not named after them: build_features.py is kept for the users who spark-submit
# it by hand; a jobs/select.py would shadow the standard library's `select` (jobs/ is first on a script's path).
_SCRIPTS = {"features": "build_features.py", "select": "select_models.py"}


@dataclass(frozen=True)
class Step:
    """One step of a run.

    ``name`` is the DAG task id and the plan key; ``command`` the ``recsys <command>`` it runs (``spark-submit
    jobs/<script>`` runs the same command); ``args`` its arguments, with ``{warehouse}``, ``{source}``,
    ``{run_id}``, ``{version}``, ``{drops}``, ``{models}`` (the run's candidates, comma-separated) and (for a
    ``per_model`` step, run once per candidate) ``{model}`` filled from the run; ``gates`` the layers validated right after it (a failed gate stops the run)."""

    name: str
    command: str
    args: tuple[str, ...]
    gates: tuple[str, ...] = ()
    per_model: bool = False

    @property
    def script(self) -> str:
        return script_of(self.command)

    def arguments(self, run: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
        return [arg.format_map(run) for arg in self.args] + list(extra)


def script_of(command: str) -> str:
    """``jobs/`` script running ``recsys <command>``."""
    return _SCRIPTS.get(command, command.replace("-", "_") + ".py")


def gate_task(layer: str) -> str:
    return f"gate_{layer}"


def gate_arguments(layer: str, run: Mapping[str, str]) -> list[str]:
    """``recsys validate`` of one layer, filed in ops/quality_results under the run; the published layer
    validates the run's version (written, not yet current)."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(LAYERS)}")
    args = ["--warehouse", run["warehouse"], "--layer", layer, "--run-id", run["run_id"]]
    return args + (["--version", run["version"]] if layer == "published" else [])


_WAREHOUSE = ("--warehouse", "{warehouse}")

INGEST = Step("ingest", "ingest", ("--source", "{source}", *_WAREHOUSE, "--bronze-only"), gates=("bronze",))
SILVER = Step("silver", "build-silver", _WAREHOUSE, gates=("silver",))
FEATURES = Step("features", "features", _WAREHOUSE, gates=("gold",))
SELECT = Step("select", "select", (*_WAREHOUSE, "--run-id", "{run_id}", "--models", "{models}"))   # on valid
TRAIN = Step("train", "train", ("--model", "{model}", "--run-id", "{run_id}", *_WAREHOUSE), per_model=True)
EVALUATE = Step("evaluate", "evaluate", (*_WAREHOUSE, "--run-id", "{run_id}"))   # promotes the run's best
PUBLISH_WRITE = Step("publish_write", "publish", (*_WAREHOUSE, "--version", "{version}", "--no-switch"),
                     gates=("published",))
PUBLISH_SWITCH = Step("publish_switch", "publish", (*_WAREHOUSE, "--version", "{version}", "--switch"))
# Deletions republish the model as last fitted: the point is to drop rows, not to learn anything new.
REPUBLISH_WRITE = Step("publish_write", "publish", (*PUBLISH_WRITE.args, "--no-refit"), gates=("published",))
APPLY_DELETIONS = Step("apply_deletions", "apply-deletions", (*_WAREHOUSE, "--drops", "{drops}"),
                       gates=("silver", "gold"))

# recsys_pipeline / recsys_retrain / `recsys pipeline` / `recsys retrain` (the DAGs add a promotion check after
# EVALUATE); recsys_deletions; recsys_monitoring.
TRAINING = (INGEST, SILVER, FEATURES, SELECT, TRAIN, EVALUATE, PUBLISH_WRITE, PUBLISH_SWITCH)
DELETIONS = (APPLY_DELETIONS, REPUBLISH_WRITE, PUBLISH_SWITCH)
MONITORING = (Step("indicators", "indicators", _WAREHOUSE), Step("ab_report", "ab-report", _WAREHOUSE))


def task_ids(steps: Sequence[Step]) -> Iterator[str]:
    """Task ids in order, each step followed by its gates."""
    for step in steps:
        yield step.name
        yield from (gate_task(layer) for layer in step.gates)


def job_scripts() -> dict[str, str]:
    """Task id → ``jobs/`` script, for every step and gate of every table."""
    scripts = {gate_task(layer): script_of("validate") for layer in LAYERS}
    scripts.update({step.name: step.script for steps in (TRAINING, DELETIONS, MONITORING) for step in steps})
    return scripts
