"""The Airflow DAG vs the same jobs run directly, side by side on the same small synthetic dump (goal ≤ 1.3×).

1. direct: the ``spark-submit`` commands of a ``recsys_pipeline`` plan (``recsys.orchestration.
   spark_submit_commands``), one after another, into warehouse A;
2. DAG: ``dag.test()`` of ``recsys_pipeline`` with the same params, in a child process with a throwaway
   AIRFLOW_HOME and SQLite DB (migrated beforehand, not timed), into warehouse B.

Both use ``local[2]``; ``dag.test()`` runs one task at a time, so both sides train the models one after another.
The DAG's extra cost is per task: a task process, DAG parsing, XCom and the plan / promotion / API tasks.

    .venv/bin/python benchmarks/bench_dag.py [--models popularity implicit_als spark_als content]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import ROOT, arguments, save

sys.path.insert(0, str(ROOT / "dags"))    # dags/local_airflow.py: the throwaway Airflow's environment and DB

_MARK = "@@bench_dag@@"


def _child_dag_test(conf: str) -> None:
    """In the child (Airflow env): run the DAG once, print total and per-task seconds."""
    from airflow.dag_processing.dagbag import BundleDagBag

    start = time.perf_counter()
    dag = BundleDagBag(dag_folder=str(ROOT / "dags"), bundle_path=ROOT / "dags").get_dag("recsys_pipeline")
    run = dag.test(run_conf=json.loads(conf))
    seconds = time.perf_counter() - start
    tasks: dict[str, float] = {}
    for ti in run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"
        tasks[key] = round(ti.duration or 0.0, 2)
    print(_MARK + json.dumps({"state": str(run.state), "seconds": seconds, "tasks": tasks}), flush=True)


def _child_migrate() -> None:
    from local_airflow import migrate

    migrate()


def _child(name: str, *args: str, env: dict[str, str], cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", name, *args], env=env, cwd=cwd,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0:
        sys.exit(f"child {name} failed (exit {proc.returncode}):\n" + "\n".join(proc.stderr.splitlines()[-40:]))
    return json.loads(lines[-1][len(_MARK):]) if lines else {}


def _recsys_env(root: Path, warehouse: Path, source: Path) -> dict[str, str]:
    return {"RECSYS_WAREHOUSE": str(warehouse), "RECSYS_SOURCE": str(source), "RECSYS_REPORTS": str(root / "reports"),
            "RECSYS_SPARK__CHECKPOINT_DIR": str(root / "checkpoints"), "RECSYS_SPARK__LOG_LEVEL": "ERROR"}


def run_direct(root: Path, source: Path, params: dict) -> dict:
    """Every job of the plan, one after another, as a user would type them."""
    from recsys.orchestration import plan_training, spark_submit_commands

    os.environ.update(_recsys_env(root, root / "warehouse_direct", source))
    plan = plan_training(params, dag_id="bench", dag_run_id="direct", run_after=datetime.now(timezone.utc))
    env = {**os.environ, **plan.env}
    steps: dict[str, float] = {}
    start = time.perf_counter()
    for label, argv in spark_submit_commands(plan, master="local[2]"):
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in (done.stdout + done.stderr).splitlines() if " INFO " not in line]
            sys.exit(f"{label} failed: {' '.join(argv)}\n" + "\n".join(lines[-30:]))
        steps[label] = round(time.perf_counter() - t0, 2)
        print(f"  direct {label:<20} {steps[label]:>7.1f} s", flush=True)
    return {"seconds": time.perf_counter() - start, "tasks": steps}


def run_dag(root: Path, source: Path, params: dict) -> dict:
    from local_airflow import local_airflow_env

    home = root / "airflow_home"
    home.mkdir()
    env = local_airflow_env(home, "local[2]", _recsys_env(root, root / "warehouse_dag", source))
    _child("migrate", env=env, cwd=root)
    start = time.perf_counter()
    result = _child("dag_test", json.dumps(params), env=env, cwd=root)
    result["wall_seconds"] = time.perf_counter() - start
    if result.get("state") != "success":
        sys.exit(f"DAG run ended {result.get('state')}: {result.get('tasks')}")
    return result


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--models", nargs="+", default=["spark_als", "implicit_als", "popularity", "content"])
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        {"dag_test": _child_dag_test, "migrate": _child_migrate}[args.child[0]](*args.child[1:])
        return

    from recsys.config import SynthSettings
    from recsys.synth import generate

    root = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    source = root / "dump"
    generate(source, SynthSettings(bad_line_rate=0.002), progress=False)   # make demo's default dump
    params = {"source": str(source), "models": args.models, "k": args.k}
    direct = run_direct(root, source, params)
    dag = run_dag(root, source, params)
    ratio = dag["wall_seconds"] / direct["seconds"]
    print(f"recsys_pipeline on the default synthetic dump, models {', '.join(args.models)}, K={args.k}")
    print(f"  direct (spark-submit × {len(direct['tasks'])})  {direct['seconds']:>7.1f} s")
    print(f"  DAG (dag.test, {len(dag['tasks'])} tasks)       {dag['wall_seconds']:>7.1f} s")
    print(f"  DAG / direct                {ratio:.2f}×   (goal ≤ 1.3×)")
    print("  per task, DAG vs direct:")
    for task, seconds in dag["tasks"].items():
        print(f"    {task:<22} {seconds:>7.1f} s   {direct['tasks'].get(task, float('nan')):>7.1f} s")
    print("results:", save("dag", {"args": {k: v for k, v in vars(args).items() if k != "child"},
                                   "seconds": {"direct": direct["seconds"], "dag": dag["wall_seconds"]},
                                   "tasks": {"direct": direct["tasks"], "dag": dag["tasks"]},
                                   "ratios": {"dag_vs_direct": ratio}}))


if __name__ == "__main__":
    main()
