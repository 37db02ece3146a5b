"""The ``jobs/*.py`` command lines: each job runs one ``recsys`` command (``jobs/_bootstrap.run``), and every
argument list the DAGs' plans (``recsys.orchestration``) and ``spark_submit_commands`` hand a job parses with that
command's parser, so no task fails at start with "unrecognized arguments". No Spark, no Airflow."""

from __future__ import annotations

import argparse
import ast
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recsys import orchestration as O
from recsys import steps
from recsys.commands import build_parser

JOBS = Path(__file__).resolve().parents[1] / "jobs"
JOB_FILES = sorted(p.name for p in JOBS.glob("*.py") if not p.name.startswith("_"))
PLANNERS = {"recsys_pipeline": O.plan_training, "recsys_retrain": O.plan_retrain,
            "recsys_deletions": O.plan_deletions, "recsys_monitoring": O.plan_monitoring}


def job_command(script: str) -> str:
    """The command ``jobs/<script>`` runs: the argument of its ``_bootstrap.run(...)`` call."""
    calls = [node for node in ast.walk(ast.parse((JOBS / script).read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "run"]
    assert len(calls) == 1, f"jobs/{script} should call _bootstrap.run(<command>) once"
    return calls[0].args[0].value


def parse(script: str, args: list[str]) -> argparse.Namespace:
    """``args`` parsed as ``jobs/<script>`` parses them; a refusal fails the test with the parser's message."""
    parser = build_parser()
    parser.exit_on_error = False
    try:
        return parser.parse_args([job_command(script), *args])
    except (argparse.ArgumentError, SystemExit) as exc:
        pytest.fail(f"jobs/{script} refuses {args}: {exc}")


@pytest.fixture
def plans(tmp_path, monkeypatch) -> dict[str, O.RunPlan]:
    """One plan per DAG, with every param set (categories included, with the spaces a UI list may carry)."""
    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "wh"))
    for param in ("SOURCE", "DROPS"):                       # the path params may name folders under tmp_path
        monkeypatch.setenv(f"RECSYS_ORCHESTRATION__{param}_ROOTS", json.dumps([str(tmp_path)]))
    (tmp_path / "src").mkdir()
    params = {"source": str(tmp_path / "src"), "categories": ["Appliances", " All_Beauty ", ""], "k": 7,
              "split_strategy": "temporal", "drops": str(tmp_path / "drops")}
    now = datetime.now(timezone.utc)
    return {dag_id: planner(params, dag_id=dag_id, dag_run_id="manual__1", run_after=now)
            for dag_id, planner in PLANNERS.items()}


def planned_jobs(plans: dict[str, O.RunPlan]) -> list[tuple[str, str, list[str]]]:
    """``(dag, script, args)`` of every job of every plan, each train job included."""
    out = []
    for dag_id, plan in plans.items():
        out += [(dag_id, O.job_script(task_id), args) for task_id, args in plan.args.items()]
        out += [(dag_id, O.job_script("train"), args) for args in plan.train]
    return out


@pytest.mark.parametrize("script", JOB_FILES)
def test_every_job_runs_the_command_its_step_names(script):
    assert steps.script_of(job_command(script)) == script


def test_every_planned_argument_list_parses_with_its_jobs_parser(plans):
    jobs = planned_jobs(plans)
    assert {script for _, script, _ in jobs} == set(O.JOB_SCRIPTS.values()) == set(JOB_FILES)
    for dag_id, script, args in jobs:
        parse(script, args)


def test_spark_submit_commands_pass_each_job_what_its_parser_takes(plans):
    for label, argv in O.spark_submit_commands(plans["recsys_pipeline"]):
        scripts = [i for i, arg in enumerate(argv) if Path(arg).parent == JOBS]
        assert len(scripts) == 1, label
        parse(Path(argv[scripts[0]]).name, argv[scripts[0] + 1:])


def test_the_dags_categories_reach_ingest(plans):
    args = parse("ingest.py", plans["recsys_pipeline"].args["ingest"])
    assert args.categories == ["Appliances", "All_Beauty"]
    assert parse("ingest.py", ["--source", "d"]).categories is None


def test_a_flag_a_job_does_not_take_fails_the_check():
    with pytest.raises(pytest.fail.Exception, match="refuses"):
        parse("ingest.py", ["--source", "d", "--no-such-flag"])
